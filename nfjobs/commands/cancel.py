"""`launch.py cancel`: stop a sweep's queued and running cells."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Args:
    """Cancel a sweep's queued and running cells (scancel on Slurm, a signal locally); each cancelled cell
    without a result gets a `cancelled` result row, and a later launch runs it again."""

    sweep: str
    """Sweep file or sweep name."""
    cell: tuple[str, ...] = ()
    """Only these cells (keys or unique key prefixes)."""
    failed_only: bool = False
    """Only cells whose result already says failed or blocked but whose job is still queued or running (retries
    that will fail again)."""
    runs_root: str = "runs"
    """Folder of run directories and sweep manifests."""


def main(args: Args) -> int:
    from nfjobs import results
    from nfjobs.orchestration import control
    from nfjobs.store import states

    found = results.cell_states(args.sweep, args.runs_root)
    keys = [control.find_cell(k, args.runs_root, args.sweep)[1] for k in args.cell]
    acted = control.cancel(found, args.runs_root, results.sweep_name(args.sweep), keys, args.failed_only)
    done = acted.filter(acted["ended"] == states.CANCELLED)
    finished = acted.filter(acted["ended"] == states.OK)
    print(f"cancelled {done.height} cell(s)" + (": " + ", ".join(done["key"].to_list()[:10]) if done.height else
                                                 " (none was queued or running)" if not finished.height else ""))
    if finished.height:
        print(f"{finished.height} cell(s) finished ok before they could be stopped (kept, not cancelled): "
              + ", ".join(finished["key"].to_list()[:10]))
    return 0
