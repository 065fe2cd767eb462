"""`launch.py run` for a sweep with a `[search]` table: Optuna's rounds instead of one grid, and what it found."""

from pathlib import Path
from typing import Any

from nfjobs.commands.errors import fail


def describe(search: Any) -> str:
    """One line: what is searched, how, for what."""
    space = ", ".join(f"{k} ({d.kind})" for k, d in search.space.items())
    return (f"search {search.sweep}: {search.direction} {search.metric} over {space}; {search.trials} trials in "
            f"rounds of {search.per_round} ({search.sampler} sampler, pruner {search.pruner})")


def run_search(args: Any, overrides: list, search: Any, flags: dict[str, Any], mode: str) -> int:
    """Validate, then run the search to its end (or print its state with --dry-run); exit 1 if no trial completed."""
    from nfjobs import results, sweep
    from nfjobs.orchestration import search as searching
    from nfjobs.store import study
    from nfjobs.store.layout import RunsRoot

    if args.force:
        fail(f"--force: a search keeps its trials in {RunsRoot(args.runs_root).study(search.sweep)}; to start it "
             "over, launch it under another [sweep] name (or delete that file); nothing was submitted")
    print(describe(search))
    study.optuna()  # one line saying how to install it, before anything is written
    if args.dry_run:
        found = results.search_trials(search.sweep, args.runs_root)
        ended = 0 if found is None else found.trials.filter(found.trials["state"] != "running").height
        print(f"  {ended} of {search.trials} trials ended so far; nothing was submitted (--dry-run)")
        return 0

    def build(points: list[dict[str, Any]]) -> list:
        return sweep.expand(list(args.sweep), overrides, sweep_name=args.name, runs_root=args.runs_root,
                            max_cells=args.max_cells, points=points)

    runs_root = Path(args.runs_root)
    done = searching.run(search, build, runs_root, Path(args.log_root), flags, mode, cells_per_job=args.cells_per_job)
    found = results.search_trials(search.sweep, runs_root)
    counts = found.trials["state"].value_counts(sort=True).rows()
    print(f"search {search.sweep}: {done.rounds} round(s) launched now, {len(done.cells)} cells run; trials: "
          + ", ".join(f"{n} {state}" for state, n in counts) + (f"; logs in {done.log_dir}" if done.cells else ""))
    best = found.best()
    if best is None:
        print("no trial completed: launch.py status --sweep ... --failed shows why")
        return 1
    params = ", ".join(f"{k}={best[k]:.4g}" if isinstance(best[k], float) else f"{k}={best[k]!r}" for k in found.space)
    print(f"best: trial {best['trial']}, {found.metric} = {best['value']:.6g} ({params}); cell {best['key']}")
    root = f" --runs-root {args.runs_root}" if args.runs_root != "runs" else ""
    print(f"next: uv run launch.py report --sweep {args.sweep[0]}{root}   (status: trials by round)")
    return 0
