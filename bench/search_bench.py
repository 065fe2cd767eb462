"""TPE vs random sampling in `[search]` sweeps, side by side in one run: the best metric after N trials, per seed.

    uv run python bench/search_bench.py [--trials 30] [--per-round 5] [--seeds 0 1 2 3 4 5 6 7]

Each search runs through the launcher (`launch.py run --debug`, one study per sampler and seed) over the tests'
`toy` kind, whose `objective` = (x - 0.3)^2 + (log10 optim.lr + 3)^2 is known: least (0) at x = 0.3, lr = 1e-3,
searched over x uniform in [-2, 2] and lr log-uniform in [1e-6, 1]."""

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def best_after(sampler: str, seed: int, trials: int, per_round: int, root: Path, checkpoints: list[int]) -> list[float]:
    """Run one search; the best objective after each number of trials in `checkpoints`."""
    from nfjobs import results
    from nfjobs.commands import main
    from tests.kinds.toy import SEARCH

    name = f"{sampler}-{seed}"
    path = root / f"{name}.toml"
    path.write_text(SEARCH.format(name=name, seed=seed, trials=trials, per_round=per_round, sampler=sampler,
                                  pruner="none", extra=""))
    runs = root / "runs"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        rc = main(["--sweep", str(path), "--debug", "--runs-root", str(runs), "--log-root", str(root / "logs")])
    assert rc == 0, f"{name}: exit {rc}"
    values = results.search_trials(name, runs).trials.sort("trial")["value"].to_list()
    return [min(values[:n]) for n in checkpoints]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--per-round", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from nfjobs import kinds

    kinds.register("toy", "tests.kinds.toy")
    checkpoints = sorted({10, 20, args.trials} & set(range(1, args.trials + 1)))
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            tpe = best_after("tpe", seed, args.trials, args.per_round, Path(tmp), checkpoints)
            rnd = best_after("random", seed, args.trials, args.per_round, Path(tmp), checkpoints)
            rows.append((seed, tpe, rnd))
    wall = time.perf_counter() - t0
    head = " | ".join(f"TPE @{n} | random @{n}" for n in checkpoints)
    print(f"| seed | {head} |\n|---:|" + "---:|" * (2 * len(checkpoints)))
    for seed, tpe, rnd in rows:
        print(f"| {seed} | " + " | ".join(f"{t:.4f} | {r:.4f}" for t, r in zip(tpe, rnd)) + " |")
    means = [(statistics.median(r[1][i] for r in rows), statistics.median(r[2][i] for r in rows))
             for i in range(len(checkpoints))]
    print("| median | " + " | ".join(f"{t:.4f} | {r:.4f}" for t, r in means) + " |")
    wins = sum(t[-1] < r[-1] for _, t, r in rows)
    print(f"\nTPE better than random after {args.trials} trials for {wins} of {len(rows)} seeds; "
          f"{2 * len(rows)} searches of {args.trials} trials in {wall:.1f} s")


if __name__ == "__main__":
    main()
