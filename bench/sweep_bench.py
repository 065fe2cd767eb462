"""How long a 10,000-cell sweep takes to expand, validate and dry-run, and whether torch was imported.

    uv run python bench/sweep_bench.py [--cells-per-axis 10]

Times the whole CLI (`launch.py --dry-run` in a fresh interpreter, startup included) and, in this process,
the parts: expansion + validation, and the done-check over run directories. Prints a table.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def sweep_text(n: int) -> str:
    values = lambda scale: ", ".join(repr(scale * (i + 1)) for i in range(n))  # noqa: E731
    return (f'kind = "train"\nepochs = [{", ".join(str(i + 1) for i in range(n))}]\n'
            f"context_frac = [{values(0.05)}]\n[optim]\nlr = [{values(1e-4)}]\nweight_decay = [{values(0.01)}]\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cells-per-axis", type=int, default=10, help="4 axes: cells = this ** 4")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from nfjobs import sweep
    from nfjobs.orchestration import plan

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.toml"
        path.write_text(sweep_text(args.cells_per_axis))
        runs = Path(tmp) / "runs"
        t0 = time.perf_counter()
        cells = sweep.expand([path])
        t_expand = time.perf_counter() - t0
        t0 = time.perf_counter()
        plan.plan(cells, runs)
        t_plan = time.perf_counter() - t0
        cli = []
        code = ("import sys; from nfjobs.commands import main; rc = main(sys.argv[1:]); "
                "print('TORCH_IMPORTED' if 'torch' in sys.modules else 'NO_TORCH'); sys.exit(rc)")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", code, "--sweep", str(path), "--dry-run", "--runs-root",
                                  str(runs)], cwd=ROOT, capture_output=True, text=True, check=True).stdout
            cli.append(time.perf_counter() - t0)
    torch_state = "imported" if "TORCH_IMPORTED" in out else "not imported"
    print(f"| cells | expand + validate (s) | done-check (s) | CLI dry run, median of {args.repeats} (s) | torch |")
    print("|---:|---:|---:|---:|---|")
    print(f"| {len(cells)} | {t_expand:.2f} | {t_plan:.2f} | {statistics.median(cli):.2f} | {torch_state} |")


if __name__ == "__main__":
    main()
