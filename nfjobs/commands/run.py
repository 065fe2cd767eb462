"""`launch.py run` (the default verb): expand sweep files into cells and run every cell not finished yet."""

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from nfjobs import typed
from nfjobs.commands.errors import fail
from nfjobs.config import SlurmConfig, SlurmParameterError, slurm_flags
from nfjobs.sweep import Override


@dataclass(frozen=True)
class _Launch:
    """Expand sweep files into cells and run every cell not finished yet."""

    sweep: tuple[str, ...]
    """Sweep file(s) (TOML). Several files are launched together."""
    name: str | None = None
    """Sweep name for results and logs (default: [sweep] name, else the file's stem)."""
    debug: bool = False
    """Run cells in this process, one after another; the first error stops with its full traceback."""
    dry_run: bool = False
    """Validate and list the cells (per job kind, how many are done and will be skipped); submit nothing."""
    wait: bool = False
    """Slurm: block until every job has ended, with a live status line."""
    force: bool = False
    """Run cells again from scratch even if they already have an `ok` result: their run directories (shards,
    checkpoints, models) are deleted and shared state they trained (scorers) is rebuilt."""
    cells_per_job: int = 1
    """Run this many cells (same resources, same upstream cells) one after another in one Slurm array task or
    local worker: small cells then pay the scheduling and the torch import once."""
    runs_root: str = "runs"
    """Folder of run directories (one per cell key) and sweep manifests."""
    log_root: str = "logs"
    """submitit logs go to <log_root>/<sweep>/<job id>/."""
    max_cells: int = 200_000
    """Most cells one launch may have; counted before any cell is built."""


def _slurm_fields() -> list[tuple[str, Any, Any]]:
    """One flag per SlurmConfig field (named by `config.slurm_flags`), unset by default: the sweep's [slurm]
    table applies unless the flag is given."""
    import tyro

    types, docs = typed.field_types(SlurmConfig), typed.attribute_docs(SlurmConfig)
    return [(flag, Annotated[types[name] | None, tyro.conf.arg(help=docs.get(name, ""))], dataclasses.field(default=None))
            for flag, name in slurm_flags().items()]


Args = dataclasses.make_dataclass("Args", _slurm_fields(), bases=(_Launch,), frozen=True)
Args.__doc__ = _Launch.__doc__
Launch = Args


def split_overrides(argv: list[str], flags: set[str]) -> tuple[list[str], list[Override]]:
    """Separate config overrides from launcher flags, reading them as tyro reads train.py's flags: `--a.b v`,
    `--a.b=v`, `--a.b v1 v2` (a list: every value up to the next flag), `--a.flag` / `--a.no-flag` (booleans)."""
    rest, overrides = [], []
    i = 0
    while i < len(argv):
        tok = argv[i]
        name = tok[2:].split("=", 1)[0] if tok.startswith("--") else ""
        if name and name.replace("-", "_") not in flags and name not in ("help",):
            key = name.replace("-", "_")
            if "=" in tok:
                overrides.append(Override(key, (tok.split("=", 1)[1],)))
                i += 1
                continue
            j = i + 1
            while j < len(argv) and not argv[j].startswith("--"):
                j += 1
            values = tuple(argv[i + 1:j])
            head, _, last = key.rpartition(".")
            if not values and last.startswith("no_"):  # `--a.no-flag`: tyro's way to say false
                overrides.append(Override(f"{head}.{last[3:]}" if head else last[3:], ("false",)))
            else:
                overrides.append(Override(key, values))
            i = j
            continue
        rest.append(tok)
        i += 1
    return rest, overrides


def typed_slurm(args: Args) -> dict[str, Any]:
    """The Slurm settings the flags give (SlurmConfig field -> value), checked by SlurmConfig itself."""
    flags = slurm_flags()
    given = {flags[k]: v for k, v in dataclasses.asdict(args).items() if k in flags and v is not None}
    try:
        SlurmConfig(**given)
    except SlurmParameterError as err:
        flag = {v: k for k, v in flags.items()}[err.field.split("[")[0]].replace("_", "-")
        fail(f"--{flag}: {err.message}; nothing was submitted")
    return given


def main(args: Args, overrides: list[Override]) -> int:
    from nfjobs.commands.hints import next_steps

    from nfjobs import sweep
    from nfjobs.models.mamba_install import slow_path_warning
    from nfjobs.backends import slurm
    from nfjobs.orchestration import launching

    for flag, value in (("--cells-per-job", args.cells_per_job), ("--max-cells", args.max_cells)):
        if value < 1:
            fail(f"{flag} {value}: expected a whole number >= 1; nothing was submitted")
    try:
        search = sweep.search_of(list(args.sweep), overrides, sweep_name=args.name, runs_root=args.runs_root,
                                 max_cells=args.max_cells)
        cells = sweep.expand(list(args.sweep), overrides, sweep_name=args.name, runs_root=args.runs_root,
                             max_cells=args.max_cells)
    except sweep.SweepError as err:
        fail(f"the sweep is not valid; nothing was submitted.\n{err}")
    flags = typed_slurm(args)
    for cell in cells:  # a [slurm] table and the flags may break together a rule neither breaks alone
        try:
            SlurmConfig(**{**cell.slurm, **flags})
        except SlurmParameterError as err:
            fail(f"{cell.source}: slurm.{err.field} with the command line's Slurm flags: {err.message}; "
                 "nothing was submitted")
    if search is not None:
        from nfjobs.commands.searching import run_search

        return run_search(args, overrides, search, flags, launching.mode_of(flags, args.debug))
    if warning := slow_path_warning(cells, flags):
        print(warning, file=sys.stderr)
    runs_root = Path(args.runs_root)
    mode = launching.mode_of(flags, args.debug)
    sweeps = sorted({c.sweep for c in cells})

    def announce(plan) -> None:
        print(f"{len(cells)} cells in {', '.join(sweeps)} ({mode}):\n{plan.summary()}")

    if args.dry_run:
        plan = launching.dry_run(cells, runs_root, args.force)
        announce(plan)
        for c in plan.to_run[:20]:
            print(f"  {c.key}  {c.group}")
        if len(plan.to_run) > 20:
            print(f"  ... and {len(plan.to_run) - 20} more")
        return 0
    done = launching.launch(cells, runs_root, Path(args.log_root), flags, mode, force=args.force,
                            cells_per_job=args.cells_per_job, announce=announce)
    if not done.plan.to_run:
        print("nothing to do: every cell has a result or is still queued or running (--force reruns finished cells)")
        return 0
    if mode == "slurm":
        arrays = sorted({j.job_id.split("_")[0] for j in done.jobs.values()})
        print(f"submitted {len(done.jobs)} cells as job array(s) {', '.join(arrays)}; logs in {done.log_dir}")
        root = f" --runs-root {args.runs_root}" if args.runs_root != "runs" else ""
        if not args.wait:
            print(f"watch with: uv run launch.py status --sweep {args.sweep[0]}{root}   (or: squeue --me)")
            return 0
        slurm.wait(done.jobs, runs_root)
    rc = summarise(done.plan.to_run, runs_root, done.log_dir)
    next_steps(cells, args.sweep[0], args.runs_root)
    return rc


def summarise(cells: list, runs_root: Path, log_dir: Path) -> int:
    """Count outcomes from the result files (the truth, whatever the scheduler said); non-zero if any failed."""
    from nfjobs.store import rows

    found = [rows.describe(rows.outcome(runs_root, c.key)) for c in cells]
    bad = [(c, s) for c, s in zip(cells, found) if s != "ok"]
    print(f"{len(cells) - len(bad)} ok, {len(bad)} not ok; logs in {log_dir}")
    for c, s in bad[:20]:
        print(f"  {c.key} ({c.group}): {s}")
    return 1 if bad else 0
