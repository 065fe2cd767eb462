"""`launch.py report`: per group of a sweep, its axes and each cell's final metrics; with `--metric`, the
metric's mean, spread and interval per value of the axes (pooled over seeds only); optionally a page."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import tyro

from nfjobs.commands.errors import fail

if TYPE_CHECKING:
    import polars as pl


@dataclass(frozen=True)
class Args:
    """Without --metric: the sweep's overview (cells per state; a search's best trial and every trial's metric and
    values; then per group its axes and each cell's final metrics). With --metric: its mean, std, count and a bootstrap CI per value of the sweep's axes."""

    sweep: str
    """Sweep file, sweep name or a folder of result files."""
    metric: str = ""
    """Metric column to summarise, e.g. psnr or accuracy; empty: the overview."""
    by: tuple[str, ...] = ()
    """Columns to group by, e.g. model optim.lr; default: the axes of the groups whose rows carry the metric."""
    pool: tuple[str, ...] = ()
    """Axes to average over (never done unless named here), e.g. --pool optim.lr."""
    where: Annotated[tuple[str, ...], tyro.conf.UseAppendAction] = ()
    """A filter column=value, e.g. --where split=val; repeat the flag for several (all must hold)."""
    runs_root: str = "runs"
    """Folder of run directories and sweep manifests."""
    format: Literal["table", "markdown", "csv"] = "table"
    """Output format."""
    out: str = ""
    """Write the table to this file instead of printing it."""
    level: float = 0.95
    """Confidence level of the bootstrap interval, in (0, 1)."""
    html: str = ""
    """Also write a static HTML page of the sweep to this folder (empty, or one an earlier report wrote)."""


def _check(args: Args) -> None:
    """Flags that cannot work, refused in one line before anything is read or written."""
    if not (0 < args.level < 1) or math.isnan(args.level):
        fail(f"--level {args.level}: expected a confidence level between 0 and 1, e.g. 0.95")
    for cond in args.where:
        if "=" not in cond:
            fail(f"--where {cond}: expected column=value, e.g. --where split=val")
    if args.out and Path(args.out).is_dir():
        fail(f"--out {args.out}: is a folder; name the file to write the table to")
    if args.html and Path(args.html).exists() and not Path(args.html).is_dir():
        fail(f"--html {args.html}: is a file; name a folder for the page (index.html is written in it)")


def _filtered(lf: pl.LazyFrame, schema, where) -> pl.LazyFrame:
    import polars as pl

    for cond in where:
        col, _, text = cond.partition("=")
        if col not in schema:
            fail(f"--where {cond}: no column {col!r}")
        keep = pl.col(col).cast(pl.String) == text
        if "status" in schema:  # a cell that ended without rows of its own (failed) has no value here: keep it
            keep = keep | (pl.col(col).is_null() & (pl.col("status") != "ok"))  # so it is counted as excluded
        lf = lf.filter(keep)
    return lf


def _show(table: pl.DataFrame, fmt: str) -> str:
    import polars as pl
    from nfjobs.reports import tables as reporting

    if fmt == "markdown":
        return reporting.to_markdown(table)
    if fmt == "csv":
        return table.write_csv()
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_hide_dataframe_shape=True, fmt_str_lengths=60, tbl_width_chars=200):
        return str(table)


def _metric_columns(schema) -> list[str]:
    from nfjobs.reports import tables as reporting

    return sorted(c for c, t in schema.items() if t.is_numeric() and c not in reporting.NOT_METRICS
                  and not c.startswith("run."))


def overview(args: Args) -> str:
    """Cells per state, then per group its axes and a table of its cells' swept values, state and final metrics."""
    import polars as pl
    from nfjobs import results
    from nfjobs.reports import tables as reporting

    name = results.sweep_name(args.sweep)
    cells = results.cell_states(name, args.runs_root)
    counts = cells.group_by("state").len().sort("state")
    lines = [f"sweep {name}: {cells.height} cells: " + ", ".join(f"{n} {s}" for s, n in counts.rows())]
    from nfjobs.reports import search

    if isinstance(trials := search.trials_or_note(name, args.runs_root), str):
        lines.append(trials)
    elif trials is not None:
        lines += [search.headline(trials), search.best_line(trials), _show(search.table(trials), args.format)]
    axes = results.axes(name, args.runs_root)
    swept = results.swept(name, args.runs_root)
    rows = reporting.with_axes(results.load(name, args.runs_root, warn=False).collect(), swept)
    cells = cells.select("key", "state").join(swept, on="key", how="left")
    for group in cells["group"].unique(maintain_order=True).to_list():
        info = axes.get(group)
        names = list(info.axes) if info else []
        seeds = ", pooled over seeds" if info and info.seeded else ""
        lines.append(f"\ngroup {group} ({info.kind if info else '?'}): "
                     + (f"axes {', '.join(names)}{seeds}" if names else f"no axes{seeds}"))
        lines.append(_show(reporting.cell_table(rows, cells.filter(pl.col("group") == group), names), args.format))
    return "\n".join(lines)


def main(args: Args) -> int:
    from nfjobs import results

    _check(args)
    if args.metric and Path(args.sweep).is_dir():
        lf, axes, swept = results.load(args.sweep, args.runs_root), {}, None
    else:
        name = results.sweep_name(args.sweep)
        lf = results.load(name, args.runs_root)
        axes, swept = results.axes(name, args.runs_root), results.swept(name, args.runs_root)
    schema = lf.collect_schema()
    if not schema and args.metric:
        fail(f"sweep {results.sweep_name(args.sweep)!r} has no result rows yet (launch.py status shows why)")
    if not args.metric:
        text = overview(args)
    else:
        text = _metric_table(args, lf, schema, axes, swept)
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
        except (FileNotFoundError, html_report.OutputRefused) as err:
            fail(f"--html: {err}")
    return 0


def _metric_table(args: Args, lf: pl.LazyFrame, schema, axes, swept) -> str:
    import polars as pl
    from nfjobs.reports import tables as reporting

    metrics = _metric_columns(schema)
    if args.metric not in schema:
        near = [m for m in metrics if args.metric.lower() in m.lower()] or metrics
        fail(f"--metric {args.metric}: no such column; metrics here: {', '.join(near[:20])}"
             + (f" ... ({len(near) - 20} more)" if len(near) > 20 else ""))
    if not schema[args.metric].is_numeric() or schema[args.metric] == pl.Boolean:
        fail(f"--metric {args.metric}: a {schema[args.metric]} column, not a number to average; "
             f"metrics here: {', '.join(metrics[:20])}")
    lf = _filtered(lf, schema, args.where)
    df = lf.collect()
    df = reporting.with_axes(df, swept) if swept is not None else reporting._as_text(df)
    excluded = reporting.exclusions(df, args.metric)
    rows, notes = reporting.final_rows(df, args.metric, [w.partition("=")[0] for w in args.where])
    by = list(args.by) or reporting.by_axes(rows, axes, args.metric, args.pool)
    missing = [c for c in by if c not in rows.columns]
    if missing:
        fail(f"--by: no column {', '.join(map(repr, missing))}")
    pooled = reporting.varied_but_pooled(rows, axes, by)
    try:
        table = reporting.report(rows, by, args.metric, level=args.level)
    except KeyError as err:
        fail(err.args[0])
    if excluded:  # said on stderr, so --format csv / markdown output stays a clean table
        print("excluded: " + ", ".join(f"{n} cell(s) {why}" for why, n in excluded.items()), file=sys.stderr)
    for note in notes:
        print(f"rows: {note}", file=sys.stderr)
    seeded = [g for g, a in axes.items() if a.seeded and "group" in rows.columns and g in set(rows["group"])]
    print(f"grouped by {', '.join(by) or 'nothing'}; n = cells pooled over seeds"
          + (f" (groups {', '.join(seeded)} repeat seeds)" if seeded else " (no group repeats seeds: n is 1)"),
          file=sys.stderr)
    if pooled:
        print(f"averaged over varied axes: {', '.join(pooled)}", file=sys.stderr)
    return _show(table, args.format)
