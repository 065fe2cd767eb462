"""Run one config of a job kind from the command line (tyro), in this process: `train.py`, `probe.py`."""

import sys
from dataclasses import dataclass
from pathlib import Path

import tyro

from nfjobs.kinds import load_kind


@dataclass(frozen=True)
class Where:
    """Where results go (flags shared by train.py and probe.py)."""

    runs_root: str = "runs"
    """Folder of run directories; this run's is <runs_root>/<cell key>."""
    sweep: str = "cli"
    """Sweep name recorded in the result rows."""
    force: bool = False
    """Run again even if this exact config already has an `ok` result."""


def _split_where(argv: list[str]) -> tuple[Where, list[str]]:
    """Take `--runs-root X`, `--sweep X` and `--force` out of argv; the rest is the job config's."""
    values: dict = {}
    rest, i = [], 0
    while i < len(argv):
        name, eq, text = argv[i].partition("=")
        field = name[2:].replace("-", "_") if name.startswith("--") else ""
        if field == "force":
            values["force"] = True
        elif field in ("runs_root", "sweep"):
            if not eq:
                i += 1
                text = argv[i] if i < len(argv) else ""
            values[field] = text
        else:
            rest.append(argv[i])
        i += 1
    return Where(**values), rest


def run_single(kind: str, argv: list[str] | None = None, description: str | None = None) -> int:
    """Parse `kind`'s Config from `argv`, run it as one cell and print its result rows."""
    from nfjobs import results
    from nfjobs.runner import RESERVED_COLUMNS, CellSpec, config_columns, git_provenance, run_cell
    from nfjobs.sweep import cell_key, validate_config

    module = load_kind(kind)
    where, rest = _split_where(sys.argv[1:] if argv is None else argv)
    epilog = "Also: --runs-root DIR (default runs), --sweep NAME (default cli), --force (run again)."
    cfg = tyro.cli(module.Config, args=rest, description=(description or module.__doc__ or "") + "\n\n" + epilog)
    problems = validate_config(kind, cfg, where.runs_root)
    if problems:  # the checks a sweep cell gets: references, dataset roots, options of the model family
        print("error: the config is not valid; nothing was run.\n" + "\n".join(problems), file=sys.stderr)
        return 2
    key = cell_key(kind, cfg)
    if not where.force and results.cell_status(where.runs_root, key) == "ok":
        print(f"{key} already has a result ({results.result_path(where.runs_root, key)}); --force runs it again")
        return 0
    if where.force:
        (Path(where.runs_root) / key / "checkpoint.pt").unlink(missing_ok=True)
    spec = CellSpec(kind, cfg, key, where.sweep, "cli", where.runs_root, git_provenance())
    rows = run_cell(spec)
    import polars as pl

    with pl.Config(tbl_rows=40, tbl_cols=12):
        hidden = RESERVED_COLUMNS.union(config_columns(cfg)) - {"status"}
        metric_cols = [c for c in rows[0] if c not in hidden and not c.startswith("run.")]
        print(pl.DataFrame(rows, strict=False).select(metric_cols))
    print(f"result: {results.result_path(where.runs_root, key)}")
    return 0
