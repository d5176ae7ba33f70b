from __future__ import annotations

import pytest

from voxserve.api.guard import exposure_problem, guard_options

UPLOADS = frozenset({"/upload"})


def hosts(host: str, allowed: list[str]) -> frozenset[str] | None:
    return guard_options(host, allowed, [], 1024, 4096, UPLOADS).allowed_hosts


def test_a_loopback_bind_answers_to_loopback_names_only_by_default() -> None:
    assert hosts("127.0.0.1", []) == {"localhost", "127.0.0.1", "::1"}


def test_configured_hosts_are_added_without_ports_or_brackets() -> None:
    assert hosts("127.0.0.1", ["Speech.Example.com:443", "[2001:db8::1]:8000"]) >= {"speech.example.com", "2001:db8::1"}


def test_a_wildcard_bind_without_a_list_or_a_star_allows_any_host() -> None:
    assert hosts("0.0.0.0", []) is None
    assert hosts("127.0.0.1", ["*"]) is None
    assert hosts("0.0.0.0", ["tts.internal"]) == {"localhost", "127.0.0.1", "::1", "tts.internal", "0.0.0.0"}


def test_upload_routes_get_the_upload_limit_plus_multipart_overhead() -> None:
    options = guard_options("127.0.0.1", [], ["https://App.example.com/"], 1024, 4096, UPLOADS)
    assert options.max_json_body_bytes == 1024
    assert options.max_upload_bytes > 4096
    assert options.allowed_origins == {"https://app.example.com"}


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"])
def test_loopback_binds_need_no_keys(host: str) -> None:
    assert exposure_problem(host, keys_exist=False, insecure_no_auth=False) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "tts.example.com"])
def test_other_binds_need_keys_or_the_insecure_flag(host: str) -> None:
    problem = exposure_problem(host, keys_exist=False, insecure_no_auth=False)
    assert problem is not None
    assert "voxserve keys create" in problem
    assert "--insecure-no-auth" in problem
    assert exposure_problem(host, keys_exist=True, insecure_no_auth=False) is None
    assert exposure_problem(host, keys_exist=False, insecure_no_auth=True) is None
