"""Launch sweeps, and watch and summarise them.

    uv run launch.py --sweep configs/sweeps/quickstart.toml --debug          # in this process
    uv run launch.py --sweep configs/sweeps/x.toml                           # local subprocesses
    uv run launch.py --sweep configs/sweeps/x.toml --slurm-acct ACCT         # Slurm job arrays
    uv run launch.py --sweep configs/sweeps/x.toml --dry-run --optim.lr 3e-4 # typed config flags win
    uv run launch.py status --sweep configs/sweeps/x.toml
    uv run launch.py report --sweep configs/sweeps/x.toml --by model --metric psnr

Any `--dotted.key value` that is not a launcher flag sets that config field in every cell whose job kind has
it, over the sweep file. See docs/sweeps.md.
"""

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro


SLURM_FLAGS = {  # launcher flag -> SlurmConfig field
    "slurm_acct": "account", "slurm_partition": "partition", "n_hours": "n_hours",
    "gpus_per_node": "gpus_per_node", "cpus_per_task": "cpus_per_task", "mem_gb": "mem_gb", "qos": "qos",
    "constraint": "constraint", "sbatch": "extra", "max_parallel": "max_parallel",
    "signal_delay_s": "signal_delay_s", "max_requeues": "max_requeues", "cells_per_gpu": "cells_per_gpu",
}


@dataclass(frozen=True)
class Launch:
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
    slurm_acct: str | None = None
    """Slurm account. Empty or absent: run locally in subprocesses instead."""
    slurm_partition: str | None = None
    """Slurm partition (default: the cluster's default)."""
    n_hours: float | None = None
    """Time limit per job, hours (default 1)."""
    gpus_per_node: int | None = None
    """GPUs per job (default 0)."""
    cpus_per_task: int | None = None
    """CPUs per job (default 4)."""
    mem_gb: int | None = None
    """Memory per job in GB (default: cluster default)."""
    qos: str | None = None
    """Slurm QOS."""
    constraint: str | None = None
    """Slurm node constraint, e.g. 'h100|a100'."""
    sbatch: tuple[str, ...] | None = None
    """Extra sbatch parameters as key=value (e.g. reservation=abc exclude=node1)."""
    max_parallel: int | None = None
    """Most cells running at once (array %N on Slurm; default 2 locally)."""
    signal_delay_s: int | None = None
    """Seconds before the time limit at which a job checkpoints and requeues (default 120)."""
    max_requeues: int | None = None
    """Most time-limit requeues per cell (default 3)."""
    cells_per_gpu: int | None = None
    """Local runs: cells that may share one GPU (default 1: each GPU cell has its GPUs to itself)."""
    max_cells: int = 200_000
    """Most cells one launch may have; counted before any cell is built."""


@dataclass(frozen=True)
class Status:
    """Show done / queued / running / failed per cell, from result files and Slurm."""

    sweep: str
    """Sweep file or sweep name."""
    runs_root: str = "runs"
    """Folder of run directories and sweep manifests."""
    all: bool = False
    """List every cell, not only the counts and unfinished cells."""


@dataclass(frozen=True)
class Report:
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


def split_overrides(argv: list[str], flags: set[str]) -> tuple[list[str], list["Override"]]:
    """Separate config overrides (`--a.b v`, `--a.b=v`) from launcher flags."""
    from nfjobs.sweep import Override

    rest, overrides = [], []
    i = 0
    while i < len(argv):
        tok = argv[i]
        name = tok[2:].split("=", 1)[0] if tok.startswith("--") else ""
        if name and name.replace("-", "_") not in flags and name not in ("help",):
            if "=" in tok:
                overrides.append(Override(name.replace("-", "_"), tok.split("=", 1)[1]))
                i += 1
            elif i + 1 < len(argv):
                overrides.append(Override(name.replace("-", "_"), argv[i + 1]))
                i += 2
            else:
                raise SystemExit(f"error: {tok} needs a value")
            continue
        rest.append(tok)
        i += 1
    return rest, overrides


def fail(msg: str, code: int = 2) -> "NoReturn":  # noqa: F821
    print(msg, file=sys.stderr)
    raise SystemExit(code)


def launch(argv: list[str]) -> int:
    from nfjobs import local, plan, slurm, sweep
    from nfjobs.config import SlurmConfig, SlurmParameterError

    flags = {f.name for f in dataclasses.fields(Launch)}
    rest, overrides = split_overrides(argv, flags)
    args = tyro.cli(Launch, args=rest, description=__doc__)
    try:
        cells = sweep.expand(list(args.sweep), overrides, sweep_name=args.name, runs_root=args.runs_root,
                             max_cells=args.max_cells)
    except sweep.SweepError as err:
        fail(f"error: the sweep is not valid; nothing was submitted.\n{err}")

    typed_slurm = {SLURM_FLAGS[k]: v for k, v in dataclasses.asdict(args).items() if k in SLURM_FLAGS and v is not None}
    try:
        SlurmConfig(**typed_slurm)
    except SlurmParameterError as err:
        flag = {v: k for k, v in SLURM_FLAGS.items()}[err.field.split("[")[0]].replace("_", "-")
        fail(f"error: --{flag}: {err.message}; nothing was submitted")
    from nfjobs.models.mamba_install import slow_path_warning

    if warning := slow_path_warning(cells, typed_slurm):
        print(warning, file=sys.stderr)
    if args.cells_per_job < 1:
        fail(f"error: --cells-per-job {args.cells_per_job}: expected a whole number >= 1")
    runs_root = Path(args.runs_root)
    try:
        p = plan.plan(cells, runs_root, force=args.force, in_flight=plan.live_jobs(cells, runs_root))
    except plan.DependencyError as err:
        fail(f"error: nothing was submitted.\n{err}")
    mode = "debug" if args.debug else "slurm" if typed_slurm.get("account") else "local"
    sweeps = sorted({c.sweep for c in cells})
    print(f"{len(cells)} cells in {', '.join(sweeps)} ({mode}):\n{p.summary()}")
    if args.dry_run:
        for c in p.to_run[:20]:
            print(f"  {c.key}  {c.group}")
        if len(p.to_run) > 20:
            print(f"  ... and {len(p.to_run) - 20} more")
        return 0
    plan.record(cells, runs_root)
    if not p.to_run:
        print("nothing to do: every cell has a result or is still queued or running (--force reruns finished cells)")
        return 0
    if args.force:
        for c in p.to_run:
            plan.forget(c, runs_root)
    log_dir = Path(args.log_root) / "+".join(sweeps)
    if mode == "debug":
        local.run_debug(p.to_run, runs_root)
        return 0
    from nfjobs import snapshot

    code_dir, code_hash = snapshot.freeze(runs_root)  # what every job imports, whatever the tree becomes
    if mode == "local":
        local.run_local(p.to_run, runs_root, log_dir, typed_slurm, args.cells_per_job, code_dir, code_hash)
        return _summarise(p.to_run, runs_root, log_dir)
    try:
        jobs = slurm.submit_slurm(p.to_run, runs_root, log_dir, typed_slurm, args.cells_per_job, code_dir, code_hash)
    except slurm.SubmissionError as err:
        fail(f"error: {err}")
    plan.record(p.to_run, runs_root, {k: j.job_id for k, j in jobs.items()},
                {k: slurm.job_logs(j) for k, j in jobs.items()})
    arrays = sorted({j.job_id.split("_")[0] for j in jobs.values()})
    print(f"submitted {len(jobs)} cells as job array(s) {', '.join(arrays)}; logs in {log_dir}")
    status_cmd = f"uv run launch.py status --sweep {args.sweep[0]}" + (f" --runs-root {args.runs_root}" if args.runs_root != "runs" else "")
    if not args.wait:
        print(f"watch with: {status_cmd}   (or: squeue --me)")
        return 0
    slurm.wait(jobs, runs_root)
    return _summarise(p.to_run, runs_root, log_dir)


def _summarise(cells: list, runs_root: Path, log_dir: Path) -> int:
    """Count outcomes from the result files (the truth, whatever the scheduler said); non-zero if any failed."""
    from nfjobs import results

    states = [results.describe(results.cell_outcome(runs_root, c.key)) for c in cells]
    bad = [(c, s) for c, s in zip(cells, states) if s != "ok"]
    print(f"{len(cells) - len(bad)} ok, {len(bad)} not ok; logs in {log_dir}")
    for c, s in bad[:20]:
        print(f"  {c.key} ({c.group}): {s}")
    return 1 if bad else 0


def status(argv: list[str]) -> int:
    from nfjobs import results, slurm

    args = tyro.cli(Status, args=argv)
    name = _sweep_name(args.sweep)
    manifest = results.read_manifest(args.runs_root, name)
    if not manifest["cells"]:
        fail(f"error: no launched sweep named {name!r} under {args.runs_root}")
    live = slurm.slurm_states(list(manifest["jobs"].values()))
    rows = []
    for key, info in manifest["cells"].items():
        state = results.cell_status(args.runs_root, key)
        job = manifest["jobs"].get(key, "")
        slurm_state = live.get(job, "")
        if state is None or (state == "failed" and slurm_state in slurm.LIVE_STATES):  # requeued after a failed try
            state = (slurm_state or "not run").lower() if job else "not run"
        rows.append((key, info["group"], state, job))
    counts: dict[str, int] = {}
    for _, _, s, _ in rows:
        counts[s] = counts.get(s, 0) + 1
    print(f"{name}: {len(rows)} cells | " + ", ".join(f"{s} {n}" for s, n in sorted(counts.items())))
    for key, group, state, job in rows:
        if args.all or state != "ok":
            print(f"  {key}  {group:<12} {state:<12} {job}")
    return 0


def report(argv: list[str]) -> int:
    import polars as pl

    from nfjobs import results

    args = tyro.cli(Report, args=argv)
    lf = results.load(args.sweep, args.runs_root)
    schema = lf.collect_schema()
    for cond in args.where:
        col, _, text = cond.partition("=")
        if col not in schema:
            fail(f"error: --where {cond}: no column {col!r}")
        lf = lf.filter(pl.col(col).cast(pl.String) == text)
    try:
        table = results.report(lf, args.by, args.metric, level=args.level)
    except KeyError as err:
        fail(f"error: {err.args[0]}")
    text = {"markdown": results.to_markdown, "csv": lambda t: t.write_csv()}.get(args.format, str)(table)
    if args.format == "table":
        with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_hide_dataframe_shape=True):
            text = str(table)
    if args.out:
        Path(args.out).write_text(text + "\n")
        print(f"wrote {args.out}")
    else:
        print(text)
    if args.html:
        from nfjobs import html_report

        try:
            print(f"wrote {html_report.write(args.sweep, args.runs_root, args.html)}")
        except FileNotFoundError as err:
            fail(f"error: --html: {err}")
    return 0


def _sweep_name(target: str) -> str:
    path = Path(target)
    if path.suffix == ".toml" and path.exists():
        import tomllib

        return tomllib.loads(path.read_text()).get("sweep", {}).get("name", path.stem)
    return path.stem if path.suffix == ".toml" else target


def kinds(argv: list[str]) -> int:
    """List the job kinds a sweep may name: built-in, entry points, [tool.nfjobs.kinds] of pyproject.toml."""
    from nfjobs.jobs import UnknownKind, describe_kinds

    try:
        print(describe_kinds())
    except UnknownKind as err:
        fail(f"error: {err}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"status": status, "report": report, "kinds": kinds}
    if argv and argv[0] in commands:
        return commands[argv[0]](argv[1:])
    return launch(argv)


if __name__ == "__main__":
    sys.exit(main())
