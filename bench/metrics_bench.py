"""Cost of one `ctx.log_metrics` record (metrics.jsonl alone, and with the TensorBoard writer), and of reading the
file back with `results.load_metrics`; one run, side by side.

    uv run python -m bench.metrics_bench --records 2000
"""

import argparse
import tempfile
import time
from pathlib import Path

from nfjobs.context import Context
from nfjobs.results import load_metrics


def time_records(root: Path, key: str, n: int, trackers: str) -> float:
    ctx = Context(key=key, kind="bench", runs_root=root, trackers=trackers)
    ctx.log_metrics(0, {"loss": 1.0, "lr": 1e-3, "psnr": 20.0})  # opens the file and the writers
    start = time.perf_counter()
    for step in range(1, n + 1):
        ctx.log_metrics(step, {"loss": 1.0 / step, "lr": 1e-3, "psnr": 20.0 + step * 1e-3}, phase="step")
    elapsed = time.perf_counter() - start
    ctx.close()
    return elapsed / n


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--records", type=int, default=2000)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        jsonl = time_records(root, "jsonl", a.records, "")
        tb = time_records(root, "tb", a.records, "tensorboard")
        start = time.perf_counter()
        frame = load_metrics(root, "jsonl")
        load_s = time.perf_counter() - start
        assert frame.height == a.records + 1
    print(f"| what | per record (µs) | vs jsonl |\n|---|---|---|\n"
          f"| log_metrics, metrics.jsonl | {jsonl * 1e6:.1f} | 1.00x |\n"
          f"| log_metrics, jsonl + TensorBoard | {tb * 1e6:.1f} | {tb / jsonl:.2f}x |\n"
          f"| load_metrics ({a.records + 1} records) | {load_s / (a.records + 1) * 1e6:.1f} | "
          f"{load_s / (a.records + 1) / jsonl:.2f}x |")


if __name__ == "__main__":
    main()
