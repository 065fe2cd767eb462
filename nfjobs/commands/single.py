"""`train.py` / `probe.py`: run one config of a job kind from the command line (tyro), in this process."""

import sys
from dataclasses import dataclass

import tyro

from nfjobs.commands.errors import fail, guarded
from nfjobs.kinds import load_kind
from nfjobs.store.layout import is_safe_name


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


@guarded
def run_single(kind: str, argv: list[str] | None = None, description: str | None = None) -> int:
    """Parse `kind`'s Config from `argv`, run it as one cell and print its result rows."""
    from nfjobs.identity import cell_key
    from nfjobs.orchestration.plan import git_provenance
    from nfjobs.store import rows as stored
    from nfjobs.store.layout import run_dir
    from nfjobs.sweep import validate_config
    from nfjobs.worker import CellSpec, run_cell

    module = load_kind(kind)
    where, rest = _split_where(sys.argv[1:] if argv is None else argv)
    epilog = "Also: --runs-root DIR (default runs), --sweep NAME (default cli), --force (run again)."
    cfg = tyro.cli(module.Config, args=rest, description=(description or module.__doc__ or "") + "\n\n" + epilog)
    if not is_safe_name(where.sweep):
        fail(f"--sweep {where.sweep!r}: expected a sweep name (letters, digits, '_', '-', '.'); nothing was run")
    problems = validate_config(kind, cfg, where.runs_root)
    if problems:  # the checks a sweep cell gets: references, dataset roots, options of the model family
        fail("the config is not valid; nothing was run.\n" + "\n".join(problems))
    key = cell_key(kind, cfg)
    if not where.force and stored.is_ok(where.runs_root, key):
        print(f"{key} already has a result ({run_dir(where.runs_root, key).result}); --force runs it again")
        return 0
    if where.force:
        stored.forget(where.runs_root, key)
    spec = CellSpec(kind, cfg, key, where.sweep, "cli", where.runs_root, git_provenance())
    rows = run_cell(spec)
    import polars as pl

    with pl.Config(tbl_rows=40, tbl_cols=12):
        hidden = stored.RESERVED_COLUMNS.union(stored.config_columns(cfg)) - {"status"}
        metric_cols = [c for c in rows[0] if c not in hidden and not c.startswith("run.")]
        print(pl.DataFrame(rows, strict=False).select(metric_cols))
    print(f"result: {run_dir(where.runs_root, key).result}")
    return 0
