"""`launch.py status`: counts of cells per state, then the failures, or the cells you ask for."""

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Args:
    """Counts of cells per state (ok, failed, blocked, cancelled, pruned, running, pending, requeued, not run), from
    the result files and the scheduler; a search's rounds and trials; then the failed cells with their error line
    and log, or what you ask for."""

    sweep: str
    """Sweep file or sweep name."""
    runs_root: str = "runs"
    """Folder of run directories and sweep manifests."""
    log_root: str = "logs"
    """Where the launch put its logs (only for manifests that do not record log paths)."""
    failed: bool = False
    """List only the failed, blocked and cancelled cells (error line and log path)."""
    running: bool = False
    """List only the running, pending and requeued cells."""
    cell: tuple[str, ...] = ()
    """List only these cells (keys or unique key prefixes)."""
    all: bool = False
    """List every cell."""
    json: bool = False
    """Print the listed cells as JSON lines (every cell without a filter flag) instead of text."""


def main(args: Args) -> int:
    import polars as pl
    from nfjobs import results
    from nfjobs.store import states

    found = results.cell_states(args.sweep, args.runs_root, args.log_root)
    counts = found.group_by("state").len()
    order = {s: i for i, s in enumerate(states.STATES)}
    counts = sorted(zip(counts["state"], counts["len"]), key=lambda sn: order.get(sn[0], 99))
    listed = found
    if args.failed:
        listed = listed.filter(pl.col("state").is_in(states.UNSUCCESSFUL))
    if args.running:
        listed = listed.filter(pl.col("state").is_in(states.LIVE))
    if args.cell:
        listed = listed.filter(pl.any_horizontal(pl.col("key").str.starts_with(k) for k in args.cell))
    filtered = args.failed or args.running or args.cell or args.all
    if args.json:
        for row in listed.iter_rows(named=True):
            print(json.dumps(row))
        return 0
    print(f"{results.sweep_name(args.sweep)}: {found.height} cells | " + ", ".join(f"{s} {n}" for s, n in counts))
    from nfjobs.reports import search

    if (trials := search.trials_or_note(args.sweep, args.runs_root)) is not None:
        print(trials if isinstance(trials, str) else
              "\n".join([search.headline(trials), *search.rounds(trials), search.best_line(trials)]))
    limit = 200 if filtered else 10
    if not filtered:  # counts first; the failures are what needs reading
        listed = listed.filter(pl.col("state").is_in([states.FAILED, states.BLOCKED]))
        if listed.height:
            print("failed cells (all of them: --failed; also --running, --cell KEY, --all, --json):")
    for row in listed.head(limit).iter_rows(named=True):
        job = f"  job {row['job_id']}" if row["job_id"] else ""
        print(f"  {row['key']}  {row['group']:<12} {row['state']:<9}{job}")
        if row["error"]:
            print(f"      {row['error']}")
        if row["log"] and row["state"] != states.OK:
            print(f"      log: {row['log']}")
    if listed.height > limit:
        print(f"  ... and {listed.height - limit} more (--json lists them all)")
    return 0
