"""What to look at after a launch: where the rows and pictures are, and `report` commands its rows can answer."""

import dataclasses
from pathlib import Path

import polars as pl

from nfjobs import results, typed
from nfjobs.reports import tables
from nfjobs.store import states
from nfjobs.store.layout import run_dir

KNOWN_METRICS = ("psnr", "accuracy", "map")


def next_steps(cells: list, sweep: str, runs_root: str) -> None:
    """Where the rows and pictures of a finished launch are, and the commands to look at them."""
    files = [run_dir(runs_root, c.key).result for c in cells]
    files = [f for f in files if f.exists()]
    pictures = sorted(p for f in files for p in f.parent.glob("*.png"))
    found = pl.concat([pl.read_parquet(f) for f in files[:50]], how="diagonal_relaxed") if files else pl.DataFrame()
    name = results.sweep_name(sweep)
    hints = report_hints(cells, found, results.axes(name, runs_root) if files else {})
    root = f" --runs-root {runs_root}" if runs_root != "runs" else ""
    python_root = f", runs_root={runs_root!r}" if runs_root != "runs" else ""
    print(f"\nrows: {len(files)} result file(s), <key>/result.parquet under {runs_root}/ "
          f"(in Python: from nfjobs import results; results.load({name!r}{python_root}).collect())")
    if pictures:
        print("pictures: " + "\n          ".join(str(p) for p in pictures[:6])
              + (f"\n          ... and {len(pictures) - 6} more" if len(pictures) > 6 else ""))
    if hints:
        page = Path(runs_root) / "reports" / name
        print(f"report page: uv run launch.py report --sweep {sweep}{root} --metric {hints[-1][0]} --html {page}")
    for i, (_, flags) in enumerate(hints):
        print(f"{'next: ' if i == 0 else '      '}uv run launch.py report --sweep {sweep}{root} {flags}")
    print(f"{'      ' if hints else 'next: '}uv run launch.py status --sweep {sweep}{root}\n")


def report_hints(cells: list, rows: pl.DataFrame, axes_of: dict | None = None) -> list[tuple[str, str]]:
    """(metric, `report` flags) per kind whose ok rows carry a known metric (else the last kind with a float result
    column): grouped by what the sweep varied, on validation rows where the kind has them; `--by` only where
    `report` would not group by those columns anyway (the sweep's axes, `axes_of`: `results.axes`). Every column
    and value named is in these rows, so the command prints a table."""
    kinds = list(dict.fromkeys(c.kind for c in cells))
    found, fallback = [], []
    for kind in kinds if {"kind", "status"} <= set(rows.columns) else []:
        own = rows.filter((pl.col("kind") == kind) & (pl.col("status") == states.OK))
        own = own.select(c for c in own.columns if own[c].null_count() < own.height)
        config = set(typed.flatten(dataclasses.asdict(next(c.config for c in cells if c.kind == kind))))
        floats = [c for c, t in own.schema.items() if t.is_float() and c not in config and not c.startswith("run.")]
        metric = next((m for m in KNOWN_METRICS if m in own.columns), None)
        if metric:
            found.append((kind, metric, own))
        elif floats:
            fallback = [(kind, floats[0], own)]
    hints = []
    for kind, metric, own in found or fallback:
        by = [a for a in axes([c for c in cells if c.kind == kind])
              if a in own.columns and not own.schema[a].is_nested()]
        by += ["eval_context_frac"] if "eval_context_frac" in own.columns and "eval_context_frac" not in by else []
        where = [f"kind={kind}"] if len(kinds) > 1 else []
        if "split" in own.columns and (own.filter(pl.col(metric).is_not_null())["split"] == "val").any():
            where.append("split=val")
        chosen = own.filter(pl.col("split") == "val") if "split=val" in where else own
        default = tables.by_axes(tables.final_rows(chosen, metric, ["split"])[0], axes_of or {}, metric)
        grouping = "" if by and set(by) <= set(default) else f"--by {' '.join(by) or 'group'} "
        hints.append((metric, f"{grouping}--metric {metric}" + "".join(f" --where {w}" for w in where)))
    return hints


def axes(cells: list) -> list[str]:
    """Config fields (dotted) whose value differs between cells of one kind: what the sweep varied."""
    flats = [typed.flatten(dataclasses.asdict(c.config)) for c in cells if c.kind == cells[0].kind]
    return [k for k in flats[0] if k != "seed" and len({repr(f.get(k)) for f in flats}) > 1] if flats else []
