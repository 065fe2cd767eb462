"""`launch.py logs KEY [-f]`: a cell's stdout and stderr, followed while it runs."""

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro

from nfjobs.commands.errors import fail


@dataclass(frozen=True)
class Args:
    """Print a cell's log (stdout, then stderr); -f follows it while the cell runs."""

    key: tyro.conf.Positional[str]
    """Cell key (or a unique prefix of one)."""
    follow: Annotated[bool, tyro.conf.arg(aliases=("-f",))] = False
    """Keep printing what the cell writes until it ends."""
    sweep: str | None = None
    """Sweep file or name to look in (default: every sweep under --runs-root)."""
    runs_root: str = "runs"
    """Folder of run directories and sweep manifests."""
    log_root: str = "logs"
    """Where the launch put its logs (only for manifests that do not record log paths)."""


def main(args: Args) -> int:
    from nfjobs import results
    from nfjobs.orchestration import control
    from nfjobs.store import states

    files = control.log_files(args.key, args.runs_root, args.sweep, args.log_root)
    sweep, key = control.find_cell(args.key, args.runs_root, args.sweep)
    if not files:
        fail(f"cell {key} has no job and no log (never launched outside --debug?); "
             f"its run directory is {Path(args.runs_root) / key}")
    offsets = control.print_logs(files)
    if args.follow:
        def still_live() -> bool:
            found = results.cell_states(sweep, args.runs_root, args.log_root)
            row = found.filter(found["key"] == key)
            return row.height == 1 and row["state"][0] in states.LIVE

        try:
            control.follow(files, offsets, still_live)
        except KeyboardInterrupt:
            pass
    return 0
