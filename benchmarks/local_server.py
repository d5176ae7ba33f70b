"""Start `voxserve serve` on a free 127.0.0.1 port for a benchmark script, and wait until it is ready."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [str(Path(sys.executable).with_name("voxserve")), "serve", "--port", str(port)]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})}
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not become ready")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def temporary_server(prefix: str, env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A server with its own data directory (removed after), stopped however the benchmark ends."""
    with tempfile.TemporaryDirectory(prefix=prefix) as data_dir:
        process, url = start_server({**(env or {}), "VOXSERVE_DATA_DIR": data_dir})
        try:
            yield process, url
        finally:
            stop_server(process)


PEER_VENVS = Path(__file__).resolve().parents[1] / ".bench-venvs"


def peer_venv(name: str, requirement: str) -> Path:
    """The `bin` directory of a peer server's own virtual environment (`.bench-venvs/NAME`), with `requirement`
    installed into it on first use: a peer's pins never touch voxserve's environment."""
    venv = PEER_VENVS / name
    if not (venv / "bin" / "python").exists():
        print(f"installing {requirement} into {venv}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", requirement], check=True)
    return venv / "bin"
