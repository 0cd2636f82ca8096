"""The running sidecar's footprint against litellm's own, measured in the same run.

- memory: the idle RSS of `gepa-sidecar run` (litellm loaded by its judge worker, no traffic)
  divided by the RSS of a bare `python -c "import litellm"`; goal <= 1.4. The ingest writer
  process is reported too (`tree_*`): it never imports litellm.
- start: seconds from spawning `gepa-sidecar run` to `/readyz` answering 200; goal <= 2 s,
  possible only because litellm loads off the critical path (in the judge worker's thread,
  started last). Also given as a ratio to the bare `import litellm` time of the same run.

    .venv/bin/python bench/footprint.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from sidecar.runtime.broker import EmbeddedBroker, free_port

ROOT = Path(__file__).resolve().parent.parent
BARE = (
    "import os, time; os.environ['LITELLM_LOCAL_MODEL_COST_MAP'] = 'True'; "
    "started = time.perf_counter(); import litellm; took = time.perf_counter() - started; "
    "rss = [l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1]; "
    "print(rss, took)"
)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def bare_litellm() -> tuple[int, float]:
    """RSS (kB) of a process that only imported litellm, and how long the import took."""
    result = subprocess.run(
        [sys.executable, "-c", BARE], capture_output=True, text=True, check=True, cwd=ROOT
    )
    rss, took = result.stdout.strip().splitlines()[-1].split()
    return int(rss), float(took)


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def settled_rss(pid: int, timeout: float = 60.0) -> int:
    """RSS once it stops growing (litellm finishes loading in the background)."""
    deadline = time.monotonic() + timeout
    history: list[int] = []
    while time.monotonic() < deadline:
        history.append(rss_kb(pid))
        if len(history) >= 8 and max(history[-8:]) - min(history[-8:]) < 1024:
            return history[-1]
        time.sleep(0.5)
    return history[-1]


def one_sidecar(servers: str, directory: Path) -> tuple[float, int, int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    env.update(
        SIDECAR_KAFKA_BOOTSTRAP_SERVERS=servers,
        SIDECAR_DATABASE_URL=f"sqlite:///{directory / 'sidecar.db'}",
        SIDECAR_HTTP_PORT=str(port),
        SIDECAR_HTTP_HOST="127.0.0.1",
        SIDECAR_CONFIG_FILE=str(ROOT / "examples/customer_care/config.yaml"),
        SIDECAR_CONSUMER_GROUP=f"footprint-{port}",
        SIDECAR_KAFKA_SESSION_TIMEOUT_MS="6000",
        SIDECAR_KAFKA_HEARTBEAT_INTERVAL_MS="1000",
    )
    started = time.perf_counter()
    process = subprocess.Popen(
        [str(ROOT / ".venv/bin/gepa-sidecar"), "run"],
        env=env,
        cwd=directory,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/readyz"
        while not ready(url):
            if process.poll() is not None or time.perf_counter() - started > 60:
                raise SystemExit("the sidecar did not become ready")
            time.sleep(0.01)
        to_ready = time.perf_counter() - started
        main_kb = settled_rss(process.pid)
        tree_kb = main_kb + sum(rss_kb(child) for child in children(process.pid))
        return to_ready, main_kb, tree_kb
    finally:
        process.terminate()
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    bare_runs = [bare_litellm() for _ in range(args.rounds)]
    bare = [rss for rss, _ in bare_runs]
    import_s = statistics.median(took for _, took in bare_runs)
    starts, mains, trees = [], [], []
    with EmbeddedBroker(port=free_port()) as broker:
        for _ in range(args.rounds):
            with tempfile.TemporaryDirectory() as directory:
                start, main_kb, tree_kb = one_sidecar(broker.bootstrap_servers, Path(directory))
            starts.append(start)
            mains.append(main_kb)
            trees.append(tree_kb)
    baseline = statistics.median(bare)
    print(
        json.dumps(
            {
                "bench": "footprint",
                "rounds": args.rounds,
                "bare_litellm_rss_mb": round(baseline / 1024, 1),
                "sidecar_rss_mb": round(statistics.median(mains) / 1024, 1),
                "rss_ratio": round(statistics.median(mains) / baseline, 3),
                "tree_rss_mb": round(statistics.median(trees) / 1024, 1),
                "tree_rss_ratio": round(statistics.median(trees) / baseline, 3),
                "start_to_ready_s": round(statistics.median(starts), 3),
                "start_to_ready_max_s": round(max(starts), 3),
                "bare_litellm_import_s": round(import_s, 3),
                "start_to_ready_vs_litellm_import": round(statistics.median(starts) / import_s, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
