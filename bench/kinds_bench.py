"""The kind registry read once per process vs read on every lookup (as before), side by side in one run.

    uv run python bench/kinds_bench.py [--calls 1000]

A launch looks up every cell's kind (`plan.specs`, the sweep's checks): with 200,000 cells a registry that
reads entry points and pyproject.toml on every call costs minutes."""

import argparse
import time

from nfjobs import kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()
    kinds.load_kind("train")  # the import itself is not what is measured

    def timed(clear: bool) -> float:
        t0 = time.perf_counter()
        for _ in range(args.calls):
            if clear:
                kinds._installed.cache_clear()  # what every call did before: entry points + pyproject read again
            kinds.load_kind("train")
        return time.perf_counter() - t0

    uncached, cached = timed(True), timed(False)
    print(f"| load_kind calls | read every call (s) | read once (s) | ratio |\n|---:|---:|---:|---:|\n"
          f"| {args.calls} | {uncached:.2f} | {cached:.3f} | {uncached / cached:.0f}x |")


if __name__ == "__main__":
    main()
