"""`launch.py report`: a metric's mean, spread and interval per group of result rows; optionally a page."""

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

from nfjobs.commands.errors import fail


@dataclass(frozen=True)
class Args:
    """Group result rows and summarise a metric: mean, std, count and a bootstrap CI."""

    sweep: str
    """Sweep file, sweep name or a folder of result files."""
    metric: str
    """Metric column to summarise, e.g. psnr or accuracy."""
    by: tuple[str, ...] = ()
    """Columns to group by, e.g. model optim.lr."""
    where: Annotated[tuple[str, ...], tyro.conf.UseAppendAction] = ()
    """A filter column=value, e.g. --where split=val; repeat the flag for several (all must hold)."""
    runs_root: str = "runs"
    """Folder of run directories and sweep manifests."""
    format: Literal["table", "markdown", "csv"] = "table"
    """Output format."""
    out: str = ""
    """Write the table to this file instead of printing it."""
    level: float = 0.95
    """Confidence level of the bootstrap interval."""
    html: str = ""
    """Also write a static HTML page of the sweep (status, failures, tables, figures, cells) to this folder."""


def main(args: Args) -> int:
    import polars as pl
    from nfjobs import results
    from nfjobs.reports import tables as reporting

    lf = results.load(args.sweep, args.runs_root)
    schema = lf.collect_schema()
    if not schema:
        fail(f"sweep {results.sweep_name(args.sweep)!r} has no result rows yet (launch.py status shows why)")
    for cond in args.where:
        col, _, text = cond.partition("=")
        if col not in schema:
            fail(f"--where {cond}: no column {col!r}")
        keep = pl.col(col).cast(pl.String) == text
        if "status" in schema:  # a cell that ended without rows of its own (failed) has no value here: keep it
            keep = keep | (pl.col(col).is_null() & (pl.col("status") != "ok"))  # so it is counted as excluded
        lf = lf.filter(keep)
    try:
        table = reporting.report(lf, args.by, args.metric, level=args.level)
    except KeyError as err:
        fail(err.args[0])
    excluded = reporting.exclusions(lf, args.metric)
    text = {"markdown": reporting.to_markdown, "csv": lambda t: t.write_csv()}.get(args.format, str)(table)
    if args.format == "table":
        with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_hide_dataframe_shape=True):
            text = str(table)
    if excluded:  # said on stderr, so --format csv / markdown output stays a clean table
        print("excluded: " + ", ".join(f"{n} cell(s) {why}" for why, n in excluded.items()), file=sys.stderr)
    if args.out:
        Path(args.out).write_text(text + "\n")
        print(f"wrote {args.out}")
    else:
        print(text)
    if args.html:
        from nfjobs.reports import html as html_report

        if Path(args.sweep).is_dir():
            fail(f"--html: no launched sweep named {args.sweep!r}: a folder of result files has no sweep manifest "
                 "to draw the page from")
        try:
            print(f"wrote {html_report.write(args.sweep, args.runs_root, args.html)}")
        except FileNotFoundError as err:
            fail(f"--html: {err}")
    return 0
