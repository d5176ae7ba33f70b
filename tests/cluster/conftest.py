"""The Ray Serve tests. Ray's processes listen on every interface, so the tests under `inside/` run only within
a loopback-only network namespace that `test_namespace.py` makes for them (`unshare`), never on the host."""

from __future__ import annotations

import os

IN_NAMESPACE = os.environ.get("VOXSERVE_RAY_NAMESPACE") == "1"
collect_ignore_glob = [] if IN_NAMESPACE else ["inside/*"]
