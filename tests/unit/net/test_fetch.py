"""The URL fetcher refuses non-public addresses and non-HTTP schemes before connecting anywhere."""

from __future__ import annotations

import asyncio

import pytest

from voxserve.errors import InvalidRequestError
from voxserve.net.fetch import FetchOptions, UrlFetcher, _is_public


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.100.100.200", "0.0.0.0",
     "::1", "fe80::1", "fd00:ec2::254", "::ffff:127.0.0.1"],
)  # fmt: skip
def test_internal_addresses_are_not_public(address: str) -> None:
    assert not _is_public(address)


def test_global_addresses_are_public() -> None:
    assert _is_public("93.184.215.14")
    assert _is_public("2606:2800:21f:cb07:6820:80da:af6b:8b2c")


@pytest.mark.parametrize(
    ("url", "code"),
    [("ftp://example.com/a.wav", "invalid_url"), ("file:///etc/passwd", "invalid_url"),
     ("http://[::1]:8080/a.wav", "url_not_allowed"), ("http://169.254.169.254/", "url_not_allowed")],
)  # fmt: skip
def test_refused_urls_name_the_parameter(url: str, code: str) -> None:
    async def fetch() -> None:
        fetcher = UrlFetcher(FetchOptions(max_bytes=1024, timeout_s=5))
        try:
            await fetcher.fetch(url, "source_url")
        finally:
            await fetcher.aclose()

    with pytest.raises(InvalidRequestError) as refused:
        asyncio.run(fetch())
    assert (refused.value.code, refused.value.param) == (code, "source_url")
