"""Runs `inside/` (the Ray Serve tests) in a new network and PID namespace with only a loopback interface, and
watches the host meanwhile: none of Ray's processes may listen on the host's interfaces."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

INSIDE = Path(__file__).resolve().parent / "inside"
ROOT = Path(__file__).resolve().parents[2]
INNER_TIMEOUT_S = 600  # about 180 s on a quiet machine; room for one whose cores are all busy
MIN_INNER_TESTS = 13  # what inside/ holds: none may go missing unnoticed

pytestmark = [pytest.mark.ray, pytest.mark.timeout(INNER_TIMEOUT_S + 60)]


def _why_not() -> str | None:
    if importlib.util.find_spec("ray") is None:
        return "Ray is not installed (pip install 'voxserve[ray]')"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare and ip (util-linux, iproute2) are needed to isolate Ray's network"
    if os.geteuid() != 0:
        return "a network namespace needs root (CI runs as root)"
    return None


def _host_listeners(pids: set[int]) -> list[str]:
    """Listening sockets in the host's network namespace that belong to `pids`."""
    return [
        f"pid {connection.pid} on {connection.laddr}"
        for connection in psutil.net_connections("inet")
        if connection.status == psutil.CONN_LISTEN and connection.pid in pids
    ]


def test_the_ray_suite_passes_in_a_loopback_only_namespace(tmp_path: Path) -> None:
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    home = tmp_path / "home"
    home.mkdir()
    # Ray's Unix sockets live under RAY_TMPDIR, and a socket path may not pass 107 bytes: a short directory.
    ray_dir = tempfile.mkdtemp(prefix="vxray-")
    env = {
        **os.environ, "VOXSERVE_RAY_NAMESPACE": "1", "RAY_USAGE_STATS_ENABLED": "0", "HOME": str(home),
        "RAY_TMPDIR": ray_dir, "PYTHONUNBUFFERED": "1",
    }  # fmt: skip
    inner = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "--durations=5",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:randomly",
        str(INSIDE),
    ]
    command = [
        "unshare", "--net", "--pid", "--fork", "--mount-proc", "--",
        "bash", "-c", 'ip link set lo up && exec "$@"', "inner", *inner,
    ]  # fmt: skip
    log = tmp_path / "inner.log"
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
        exposed: list[str] = []
        deadline = time.monotonic() + INNER_TIMEOUT_S
        while process.poll() is None and time.monotonic() < deadline:
            try:
                tree = {process.pid} | {child.pid for child in psutil.Process(process.pid).children(recursive=True)}
            except psutil.NoSuchProcess:
                break
            exposed += _host_listeners(tree)
            time.sleep(1.0)
        if process.poll() is None:
            process.kill()
        process.wait(timeout=60)
    shutil.rmtree(ray_dir, ignore_errors=True)
    report = log.read_text(errors="replace")
    assert not exposed, f"Ray listened on the host: {exposed}"
    assert process.returncode == 0, report[-8000:]
    passed = re.search(r"(\d+) passed", report)
    assert passed is not None, report[-8000:]
    assert int(passed.group(1)) >= MIN_INNER_TESTS
    assert "skipped" not in report
