"""What Ray Serve costs on one machine: `voxserve serve` (2 workers x 1 thread) against `voxserve cluster serve`
(2 model replicas x 1 CPU, the ingress beside them), the same requests at concurrency 1 and 8, alternating round
by round so both see the same machine: throughput, TTFA p50/p95, the TTFA the Ray path adds at c=1, and peak
memory over all of Ray's processes against the single server's. A third peer, `voxserve serve` with
`decode_windows = false`, separates what Ray itself adds to the first audio from what the cluster's lack of
windowed first segments costs (a window's continuation cannot cross to another process).

Ray's processes listen on every interface, so the benchmark runs itself in a loopback-only network and PID
namespace (root; `unshare`), like the test suite does.

    .venv/bin/python benchmarks/cluster_overhead.py [--rounds 3] [--c1-requests 16] [--c8-requests 48] \
        -o docs/bench/cluster_overhead.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil
from fair_share import CORPUS, report_header, spread
from local_server import free_port, start_server, stop_server

from voxserve.bench.corpus import load_corpus

IN_NAMESPACE = "VOXSERVE_BENCH_NAMESPACE"
PCM_BYTES_PER_S = 2 * 24_000


def reexec_in_namespace() -> None:
    """The same command again, inside a new network and PID namespace with only a loopback interface."""
    home = tempfile.mkdtemp(prefix="vxbench-home-")
    env = {**os.environ, IN_NAMESPACE: "1", "RAY_USAGE_STATS_ENABLED": "0", "HOME": home,
           "RAY_TMPDIR": tempfile.mkdtemp(prefix="vxray-")}  # fmt: skip
    command = ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--", "bash", "-c",
               'ip link set lo up && exec "$@"', "bench", sys.executable, *sys.orig_argv[1:]]  # fmt: skip
    raise SystemExit(subprocess.call(command, env=env))


def one_request(client: httpx.Client, text: str) -> dict[str, float]:
    """A streamed `pcm` request: when its first audio byte came, when it ended, how much audio it held."""
    body = {"input": text, "voice": "alloy", "response_format": "pcm"}
    started = time.perf_counter()
    first = None
    received = 0
    with client.stream("POST", "/v1/audio/speech", json=body, headers={"Cache-Control": "no-store"}) as response:
        response.raise_for_status()
        for piece in response.iter_raw():
            if piece and first is None:
                first = time.perf_counter() - started
            received += len(piece)
    return {"ttfa_s": first or 0.0, "total_s": time.perf_counter() - started, "audio_s": received / PCM_BYTES_PER_S}


def level(url: str, texts: list[str], concurrency: int) -> dict[str, float]:
    with httpx.Client(base_url=url, timeout=300) as client, ThreadPoolExecutor(concurrency) as pool:
        started = time.perf_counter()
        records = list(pool.map(lambda text: one_request(client, text), texts))
        wall = time.perf_counter() - started
    ttfa = np.array([record["ttfa_s"] for record in records])
    return {
        "audio_s_per_s": sum(record["audio_s"] for record in records) / wall,
        "ttfa_p50_s": float(np.percentile(ttfa, 50)),
        "ttfa_p95_s": float(np.percentile(ttfa, 95)),
        "latency_p50_s": float(np.percentile([record["total_s"] for record in records], 50)),
    }


class PeakRss:
    """The largest summed RSS of a set of processes, sampled every 200 ms while active."""

    def __init__(self, processes: Callable[[], list[psutil.Process]]) -> None:
        self._processes = processes
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            total = 0
            for process in self._processes():
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    continue
            self.peak = max(self.peak, total)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def start_cluster(data_dir: str) -> str:
    import ray
    from ray import serve

    from voxserve.cluster.app import APP_NAME, build_application
    from voxserve.settings import Settings

    port = free_port()
    settings = Settings(
        port=port, data_dir=data_dir, audio_cache_bytes=0, cluster_replicas=2, cluster_replica_cpus=1,
        cluster_replica_workers=1, cluster_ingress_cpus=0, intra_op_threads=1, solo_intra_op_threads=1,
    )  # fmt: skip
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_application(settings), name=APP_NAME, route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the cluster did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--c1-requests", type=int, default=16)
    parser.add_argument("--c8-requests", type=int, default=48)
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()
    if os.environ.get(IN_NAMESPACE) != "1":
        reexec_in_namespace()
    lines = load_corpus(CORPUS)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="vxbench-") as single_dir, tempfile.TemporaryDirectory() as cluster_dir:
        single_env = {
            "VOXSERVE_DATA_DIR": single_dir, "VOXSERVE_WORKERS": "2", "VOXSERVE_INTRA_OP_THREADS": "1",
            "VOXSERVE_SOLO_INTRA_OP_THREADS": "1", "VOXSERVE_AUDIO_CACHE_BYTES": "0",
        }  # fmt: skip
        single, single_url = start_server(single_env)
        unwindowed, unwindowed_url = start_server({**single_env, "VOXSERVE_DECODE_WINDOWS": "false"})
        trees = {
            name: {process.pid} | {child.pid for child in psutil.Process(process.pid).children(recursive=True)}
            for name, process in (("single", single), ("single_no_windows", unwindowed))
        }
        cluster_url = start_cluster(cluster_dir)

        def processes_of(name: str) -> Callable[[], list[psutil.Process]]:
            if name == "cluster":
                servers = trees["single"] | trees["single_no_windows"]
                return lambda: [process for process in psutil.process_iter() if process.pid not in servers]
            return lambda: [psutil.Process(pid) for pid in trees[name]]

        urls = {"single": single_url, "single_no_windows": unwindowed_url, "cluster": cluster_url}
        results: dict[str, dict[str, list[dict[str, float]]]] = {name: {"c1": [], "c8": []} for name in urls}
        peaks = dict.fromkeys(urls, 0)
        try:
            for url in urls.values():
                level(url, lines[:8], 8)  # warm-up: arenas, caches, every replica
            for round_index in range(args.rounds):
                order = list(urls) if round_index % 2 == 0 else list(reversed(urls))
                for name in order:
                    watch = PeakRss(processes_of(name))
                    c1 = [lines[(round_index * args.c1_requests + i) % len(lines)] for i in range(args.c1_requests)]
                    c8 = [lines[(round_index * args.c8_requests + i) % len(lines)] for i in range(args.c8_requests)]
                    results[name]["c1"].append(level(urls[name], c1, 1))
                    results[name]["c8"].append(level(urls[name], c8, 8))
                    peaks[name] = max(peaks[name], watch.stop())
                    print(f"round {round_index + 1} {name}: c1 {results[name]['c1'][-1]} c8 {results[name]['c8'][-1]}")
        finally:
            stop_server(single)
            stop_server(unwindowed)
    summary = summarize(results, peaks)
    print(json.dumps(summary, indent=2))
    if args.output:
        report = {
            **report_header("cluster_overhead", lines, (load_start, os.getloadavg())),
            "setup": {
                "single": "voxserve serve, workers 2, intra_op_threads 1", "format": "pcm (streamed)",
                "single_no_windows": "the same with decode_windows = false",
                "cluster": "voxserve cluster serve on one machine: 2 model replicas x 1 CPU x 1 worker, ingress "
                           "reserving 0 CPU; Ray 2.60 in a loopback-only namespace",
                "rounds": args.rounds, "c1_requests": args.c1_requests, "c8_requests": args.c8_requests,
                "audio_cache": "off",
            },
            **summary,
        }  # fmt: skip
        args.output.write_text(json.dumps(report, indent=2) + "\n")


def summarize(results: dict[str, dict[str, list[dict[str, float]]]], peaks: dict[str, int]) -> dict[str, object]:
    """Medians over rounds of each round's cluster / single ratio (and the TTFA the Ray path adds at c=1)."""
    single, cluster, unwindowed = results["single"], results["cluster"], results["single_no_windows"]
    rounds = range(len(single["c1"]))

    def ratio(level_name: str, metric: str) -> dict[str, object]:
        return spread([cluster[level_name][i][metric] / single[level_name][i][metric] for i in rounds])

    added_ms = [1000 * (cluster["c1"][i]["ttfa_p50_s"] - single["c1"][i]["ttfa_p50_s"]) for i in rounds]
    ray_ms = [1000 * (cluster["c1"][i]["ttfa_p50_s"] - unwindowed["c1"][i]["ttfa_p50_s"]) for i in rounds]
    return {
        "cluster_vs_single": {
            "throughput_c1": ratio("c1", "audio_s_per_s"), "throughput_c8": ratio("c8", "audio_s_per_s"),
            "ttfa_p50_c1": ratio("c1", "ttfa_p50_s"), "ttfa_p95_c8": ratio("c8", "ttfa_p95_s"),
            "latency_p50_c8": ratio("c8", "latency_p50_s"),
        },
        "ttfa_added_p50_c1_ms": spread(added_ms),
        "ttfa_added_p50_c1_vs_no_windows_ms": spread(ray_ms),
        "peak_rss_bytes": peaks,
        "peak_rss_cluster_vs_single": round(peaks["cluster"] / peaks["single"], 2),
        "medians": {
            name: {level_name: {metric: round(statistics.median(r[metric] for r in runs), 4)
                                for metric in runs[0]} for level_name, runs in levels.items()}
            for name, levels in results.items()
        },
        "rounds": results,
    }  # fmt: skip


if __name__ == "__main__":
    main()
