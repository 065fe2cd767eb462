"""`launch.py tables`: the seeds' tables and charts from a sweep's rows, each a view of the one results model
(grouped by the sweep's axes, pooled over seeds only): seed 000's representation comparison, seeds 002/003's
Mamba-GINR and NF+JEPA tables, seed 004's mAP table; whichever the sweep's rows hold."""

from dataclasses import dataclass
from pathlib import Path

from nfjobs.commands.errors import fail


@dataclass(frozen=True)
class Args:
    """Write the seed tables (markdown) and charts (PNG) a sweep's rows hold into a folder."""

    sweep: str
    """Sweep file or sweep name."""
    out: str
    """Folder for the files (made if missing; files of the same names are replaced)."""
    runs_root: str = "runs"
    """Folder of run directories and sweep manifests."""


def main(args: Args) -> int:
    from nfjobs.reports import fields, probes, traits, views

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        fail(f"--out {args.out}: is a file; name a folder for the tables")
    sweep = views.load(args.sweep, args.runs_root)
    if sweep.rows.is_empty():
        fail(f"sweep {sweep.name!r} has no result rows yet (launch.py status shows why)")
    out.mkdir(parents=True, exist_ok=True)
    written = [*probes.write(sweep, out), *fields.write(sweep, out), *traits.write(sweep, out)]
    if not written:
        fail(f"sweep {sweep.name!r}: no probe, GINR / JEPA train or score summary rows to tabulate; nothing written")
    for path in written:
        print(f"wrote {path}")
    return 0
