"""The web playground and dashboard: one page at `/` and its static assets under `/ui/`, all served from the
package (no CDN: it works offline). The page holds no data; its API calls carry the key the user types in."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from voxserve.errors import NotFoundError

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
ASSET_SUFFIXES = frozenset({".js", ".css", ".svg"})
# Nothing but this server's own scripts, styles and connections; audio from blobs the page makes itself.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)
_assets = {path.name: path for path in UI_DIR.iterdir() if path.suffix in ASSET_SUFFIXES}


@router.api_route("/", methods=["GET", "HEAD"])
async def page() -> FileResponse:
    return FileResponse(UI_DIR / "index.html", media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


@router.api_route("/ui/{name}", methods=["GET", "HEAD"])
async def asset(name: str) -> FileResponse:
    """Only the files shipped in the package, by exact name: no path reaches outside it."""
    path = _assets.get(name)
    if path is None:
        raise NotFoundError(f"no such file: {name}")
    return FileResponse(path, headers=PAGE_HEADERS)
