from __future__ import annotations

import pytest

from voxserve.errors import RateLimitError
from voxserve.service.limits import KeyLimiter, LimitOptions, format_duration
from voxserve.storage.keys import KeyLimits

MIDDAY = 20_000 * 86_400.0 + 43_200.0


class Clock:
    def __init__(self) -> None:
        self.now = MIDDAY

    def __call__(self) -> float:
        return self.now


def test_requests_count_down_then_429_until_the_window_moves_on() -> None:
    clock = Clock()
    limiter = KeyLimiter(LimitOptions(requests_per_minute=3), clock)
    remaining = []
    for _ in range(3):
        lease = limiter.admit("a", KeyLimits())
        remaining.append(lease.headers["x-ratelimit-remaining-requests"])
        lease.release()
        clock.now += 10
    assert remaining == ["2", "1", "0"]
    with pytest.raises(RateLimitError) as refused:
        limiter.admit("a", KeyLimits())
    assert refused.value.headers()["Retry-After"] == "30"  # the first request leaves the window 60 s after it
    assert refused.value.headers()["x-ratelimit-remaining-requests"] == "0"
    assert limiter.admit("b", KeyLimits()).headers["x-ratelimit-remaining-requests"] == "2"  # other keys unaffected
    clock.now += 30
    assert limiter.admit("a", KeyLimits()).headers["x-ratelimit-remaining-requests"] == "0"


def test_a_refused_request_is_not_counted() -> None:
    clock = Clock()
    limiter = KeyLimiter(LimitOptions(requests_per_minute=1), clock)
    limiter.admit("a", KeyLimits())
    for _ in range(5):
        with pytest.raises(RateLimitError):
            limiter.admit("a", KeyLimits())
    clock.now += 60
    limiter.admit("a", KeyLimits())


def test_concurrent_streams_are_held_until_released() -> None:
    limiter = KeyLimiter(LimitOptions(max_streams=2), Clock())
    first, second = limiter.admit("a", KeyLimits()), limiter.admit("a", KeyLimits())
    with pytest.raises(RateLimitError, match="concurrent"):
        limiter.admit("a", KeyLimits())
    first.release()
    first.release()  # twice is once
    third = limiter.admit("a", KeyLimits())
    with pytest.raises(RateLimitError):
        limiter.admit("a", KeyLimits())
    second.release()
    third.release()


def test_characters_per_day_reset_at_midnight_utc() -> None:
    clock = Clock()
    limiter = KeyLimiter(LimitOptions(chars_per_day=100), clock)
    lease = limiter.admit("a", KeyLimits())
    lease.charge(60)
    assert lease.headers["x-ratelimit-remaining-tokens"] == "40"
    assert lease.headers["x-ratelimit-reset-tokens"] == "12h0m0s"
    with pytest.raises(RateLimitError, match="characters") as refused:
        limiter.admit("a", KeyLimits()).charge(41)
    assert refused.value.retry_after_s == 43_200
    limiter.admit("a", KeyLimits()).charge(40)
    clock.now += 43_200
    assert limiter.admit("a", KeyLimits()).headers["x-ratelimit-remaining-tokens"] == "100"


def test_a_keys_own_limits_override_the_defaults_and_zero_means_none() -> None:
    limiter = KeyLimiter(LimitOptions(requests_per_minute=1, max_streams=1), Clock())
    for _ in range(5):
        lease = limiter.admit("a", KeyLimits(requests_per_minute=0, max_streams=0))
        assert "x-ratelimit-limit-requests" not in lease.headers
    limiter.admit("b", KeyLimits(requests_per_minute=2))
    limiter.admit("b", KeyLimits(requests_per_minute=2, max_streams=2))


@pytest.mark.parametrize(
    ("seconds", "shown"), [(0.25, "250ms"), (1.0, "1s"), (17.2, "18s"), (360, "6m0s"), (7384, "2h3m4s")]
)
def test_reset_durations_read_like_openais(seconds: float, shown: str) -> None:
    assert format_duration(seconds) == shown
