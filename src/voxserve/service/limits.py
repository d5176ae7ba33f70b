"""`KeyLimiter`: each API key's requests per minute, concurrent streams and input characters per day.

Counts live in this process (a restart forgets them). Past a limit a request gets 429 with `Retry-After` and
OpenAI's `x-ratelimit-*` headers; a request within its limits carries the same headers, counting down."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from voxserve.errors import RateLimitError
from voxserve.storage.keys import KeyLimits

WINDOW_S = 60.0
DAY_S = 86_400.0


@dataclass(slots=True)
class _Usage:
    requests: deque[float] = field(default_factory=deque)
    streams: int = 0
    day: int = -1
    chars: int = 0


@dataclass(frozen=True, slots=True)
class LimitOptions:
    """The limits of a key that sets none of its own; 0 = no limit."""

    requests_per_minute: int = 0
    max_streams: int = 0
    chars_per_day: int = 0


class Lease:
    """One admitted request: its rate-limit headers, and its stream slot until `release`."""

    def __init__(self, limiter: KeyLimiter, key: str, limits: KeyLimits, headers: dict[str, str]) -> None:
        self.headers = headers
        self._limiter = limiter
        self._key = key
        self._limits = limits
        self._released = False

    def charge(self, chars: int) -> None:
        """Count `chars` input characters against the key's day; raises `RateLimitError` past it."""
        self.headers.update(self._limiter.charge(self._key, self._limits, chars))

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._limiter.release(self._key)


class KeyLimiter:
    """Safe from any thread. `clock` is wall time (a day is a UTC calendar day)."""

    def __init__(self, options: LimitOptions, clock: Callable[[], float] = time.time) -> None:
        self._options = options
        self._clock = clock
        self._usage: dict[str, _Usage] = {}
        self._lock = threading.Lock()

    def admit(self, key: str, limits: KeyLimits) -> Lease:
        """Count one request and take a stream slot, or raise `RateLimitError` (nothing counted)."""
        rpm, streams = self._resolve(limits)
        now = self._clock()
        with self._lock:
            usage = self._usage.setdefault(key, _Usage())
            while usage.requests and usage.requests[0] <= now - WINDOW_S:
                usage.requests.popleft()
            headers = self._chars_headers(usage, self._resolve_chars(limits), now)
            if rpm and len(usage.requests) >= rpm:
                reset_s = usage.requests[0] + WINDOW_S - now
                headers |= _request_headers(rpm, 0, reset_s)
                raise RateLimitError(f"rate limit of {rpm} requests per minute reached", _ceil(reset_s), headers)
            if streams and usage.streams >= streams:
                raise RateLimitError(f"limit of {streams} concurrent requests reached", 1, headers)
            usage.requests.append(now)
            usage.streams += 1
            if rpm:
                headers |= _request_headers(rpm, rpm - len(usage.requests), usage.requests[0] + WINDOW_S - now)
        return Lease(self, key, limits, headers)

    def charge(self, key: str, limits: KeyLimits, chars: int) -> dict[str, str]:
        per_day = self._resolve_chars(limits)
        now = self._clock()
        with self._lock:
            usage = self._usage.setdefault(key, _Usage())
            headers = self._chars_headers(usage, per_day, now)
            if per_day and usage.chars + chars > per_day:
                reset_s = _until_next_day(now)
                message = f"this request's {chars} characters would pass the limit of {per_day} characters per day"
                raise RateLimitError(message, _ceil(reset_s), headers)
            usage.chars += chars
            return self._chars_headers(usage, per_day, now)

    def release(self, key: str) -> None:
        with self._lock:
            usage = self._usage.get(key)
            if usage is not None:
                usage.streams -= 1

    def _chars_headers(self, usage: _Usage, per_day: int, now: float) -> dict[str, str]:
        """The `-tokens` headers (characters stand in for tokens); also rolls the count over at midnight UTC."""
        day = int(now // DAY_S)
        if usage.day != day:
            usage.day, usage.chars = day, 0
        if not per_day:
            return {}
        return {
            "x-ratelimit-limit-tokens": str(per_day),
            "x-ratelimit-remaining-tokens": str(max(per_day - usage.chars, 0)),
            "x-ratelimit-reset-tokens": format_duration(_until_next_day(now)),
        }

    def _resolve(self, limits: KeyLimits) -> tuple[int, int]:
        rpm = self._options.requests_per_minute if limits.requests_per_minute is None else limits.requests_per_minute
        streams = self._options.max_streams if limits.max_streams is None else limits.max_streams
        return rpm, streams

    def _resolve_chars(self, limits: KeyLimits) -> int:
        return self._options.chars_per_day if limits.chars_per_day is None else limits.chars_per_day


def _request_headers(limit: int, remaining: int, reset_s: float) -> dict[str, str]:
    return {
        "x-ratelimit-limit-requests": str(limit),
        "x-ratelimit-remaining-requests": str(max(remaining, 0)),
        "x-ratelimit-reset-requests": format_duration(reset_s),
    }


def format_duration(seconds: float) -> str:
    """OpenAI's reset format: `250ms`, `17s`, `6m0s`, `2h3m4s`."""
    if seconds < 1:
        return f"{max(math.ceil(seconds * 1000), 0)}ms"
    whole = _ceil(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def _until_next_day(now: float) -> float:
    return DAY_S - now % DAY_S


def _ceil(seconds: float) -> int:
    return max(1, math.ceil(seconds))
