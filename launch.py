"""Launch sweeps, and watch, cancel and summarise them. `run` is the default command.

    uv run launch.py --sweep configs/sweeps/quickstart.toml --debug          # in this process
    uv run launch.py --sweep configs/sweeps/x.toml                           # local subprocesses
    uv run launch.py --sweep configs/sweeps/x.toml --slurm-acct ACCT         # Slurm job arrays
    uv run launch.py --sweep configs/sweeps/x.toml --dry-run --optim.lr 3e-4 # typed config flags win
    uv run launch.py status --sweep configs/sweeps/x.toml [--failed | --running | --cell KEY | --json]
    uv run launch.py logs KEY [-f]                                           # a cell's stdout + stderr
    uv run launch.py cancel --sweep configs/sweeps/x.toml [--failed-only] [--cell KEY ...]
    uv run launch.py report --sweep configs/sweeps/x.toml --by model --metric psnr
    uv run launch.py kinds                                                   # the job kinds a sweep may name

Any `--dotted.key value` that `run` does not know sets that config field in every cell whose job kind has it,
over the sweep file, written as train.py / probe.py take it: lists space-separated (`--optim.betas 0.9 0.95`),
booleans as `--x.flag` / `--x.no-flag`. See docs/sweeps.md. `launch.py run --help` lists run's own flags.
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
    """Counts of cells per state (ok, failed, blocked, cancelled, running, pending, requeued, not run), from the
    result files and the scheduler; then the failed cells with their error line and log, or what you ask for."""

    sweep: str
    """Sweep file or sweep name."""
    runs_root: str = "runs"
    """Folder of run directories and sweep manifests."""
    log_root: str = "logs"
    """Where the launch put its logs (only for manifests that do not record log paths)."""
    failed: bool = False
    """List only the failed, blocked and cancelled cells (error line and log path)."""
    running: bool = False
    """List only the running, pending and requeued cells."""
    cell: tuple[str, ...] = ()
    """List only these cells (keys or unique key prefixes)."""
    all: bool = False
    """List every cell."""
    json: bool = False
    """Print the listed cells as JSON lines (every cell without a filter flag) instead of text."""


@dataclass(frozen=True)
class Logs:
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


@dataclass(frozen=True)
class Cancel:
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


@dataclass(frozen=True)
class Kinds:
    """List the job kinds a sweep may name, with their modules."""


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
    """Separate config overrides from launcher flags, reading them as tyro reads train.py's flags: `--a.b v`,
    `--a.b=v`, `--a.b v1 v2` (a list: every value up to the next flag), `--a.flag` / `--a.no-flag` (booleans)."""
    from nfjobs.sweep import Override

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


def fail(msg: str, code: int = 2) -> "NoReturn":  # noqa: F821
    print(msg, file=sys.stderr)
    raise SystemExit(code)


def launch(args: Launch, overrides: list) -> int:
    from nfjobs import local, plan, slurm, sweep
    from nfjobs.config import SlurmConfig, SlurmParameterError

    for flag, value in (("--cells-per-job", args.cells_per_job), ("--max-cells", args.max_cells)):
        if value < 1:
            fail(f"error: {flag} {value}: expected a whole number >= 1; nothing was submitted")
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
        local.run_debug(p.to_run, runs_root, typed_slurm)
        _next_steps(cells, args)
        return 0
    from nfjobs import snapshot

    code_dir, code_hash = snapshot.freeze(runs_root)  # what every job imports, whatever the tree becomes
    if mode == "local":
        local.run_local(p.to_run, runs_root, log_dir, typed_slurm, args.cells_per_job, code_dir, code_hash)
        rc = _summarise(p.to_run, runs_root, log_dir)
        _next_steps(cells, args)
        return rc
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
    rc = _summarise(p.to_run, runs_root, log_dir)
    _next_steps(cells, args)
    return rc


def _next_steps(cells: list, args: Launch) -> None:
    """Where the rows and pictures of a finished launch are, and the commands to look at them."""
    import polars as pl

    from nfjobs import results

    runs_root = Path(args.runs_root)
    files = [results.result_path(runs_root, c.key) for c in cells]
    files = [f for f in files if f.exists()]
    pictures = sorted(p for f in files for p in f.parent.glob("*.png"))
    rows = pl.concat([pl.read_parquet(f) for f in files[:50]], how="diagonal_relaxed") if files else pl.DataFrame()
    hints = _report_hints(cells, rows)
    sweep = args.sweep[0]
    root = f" --runs-root {args.runs_root}" if args.runs_root != "runs" else ""
    print(f"\nrows: {len(files)} result file(s), runs/<key>/result.parquet under {runs_root}/ "
          f"(in Python: from nfjobs import results; results.load({results.sweep_name(sweep)!r}).collect())")
    if pictures:
        print("pictures: " + "\n          ".join(str(p) for p in pictures[:6])
              + (f"\n          ... and {len(pictures) - 6} more" if len(pictures) > 6 else ""))
    if hints:
        print(f"report page: uv run launch.py report --sweep {sweep}{root} --metric {hints[-1][0]} --html reports/")
    for i, (_, flags) in enumerate(hints):
        print(f"{'next: ' if i == 0 else '      '}uv run launch.py report --sweep {sweep}{root} {flags}")
    print(f"{'      ' if hints else 'next: '}uv run launch.py status --sweep {sweep}{root}\n")


KNOWN_METRICS = ("psnr", "accuracy", "map")


def _report_hints(cells: list, rows: "pl.DataFrame") -> list[tuple[str, str]]:  # noqa: F821
    """(metric, `report` flags) per kind whose ok rows carry a known metric (else the last kind with a float result
    column): grouped by what the sweep varied, on validation rows where the kind has them. Every column and value
    named is in these rows, so the command prints a table."""
    import polars as pl

    from nfjobs import typed

    kinds = list(dict.fromkeys(c.kind for c in cells))
    found, fallback = [], []
    for kind in kinds if {"kind", "status"} <= set(rows.columns) else []:
        own = rows.filter((pl.col("kind") == kind) & (pl.col("status") == "ok"))
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
        by = [a for a in _axes([c for c in cells if c.kind == kind])
              if a in own.columns and not own.schema[a].is_nested()]
        by += ["eval_context_frac"] if "eval_context_frac" in own.columns and "eval_context_frac" not in by else []
        where = [f"kind={kind}"] if len(kinds) > 1 else []
        if "split" in own.columns and (own.filter(pl.col(metric).is_not_null())["split"] == "val").any():
            where.append("split=val")
        hints.append((metric, f"--by {' '.join(by) or 'group'} --metric {metric}"
                      + "".join(f" --where {w}" for w in where)))
    return hints


def _axes(cells: list) -> list[str]:
    """Config fields (dotted) whose value differs between cells of one kind: what the sweep varied."""
    from nfjobs import typed

    flats = [typed.flatten(dataclasses.asdict(c.config)) for c in cells if c.kind == cells[0].kind]
    return [k for k in flats[0] if k != "seed" and len({repr(f.get(k)) for f in flats}) > 1] if flats else []


def _summarise(cells: list, runs_root: Path, log_dir: Path) -> int:
    """Count outcomes from the result files (the truth, whatever the scheduler said); non-zero if any failed."""
    from nfjobs import results

    states = [results.describe(results.cell_outcome(runs_root, c.key)) for c in cells]
    bad = [(c, s) for c, s in zip(cells, states) if s != "ok"]
    print(f"{len(cells) - len(bad)} ok, {len(bad)} not ok; logs in {log_dir}")
    for c, s in bad[:20]:
        print(f"  {c.key} ({c.group}): {s}")
    return 1 if bad else 0


def status(args: Status) -> int:
    import json

    import polars as pl

    from nfjobs import results

    try:
        states = results.cell_states(args.sweep, args.runs_root, args.log_root)
    except FileNotFoundError as err:
        fail(f"error: {err}")
    counts = states.group_by("state").len()
    order = {s: i for i, s in enumerate(results.CELL_STATES)}
    counts = sorted(zip(counts["state"], counts["len"]), key=lambda sn: order.get(sn[0], 99))
    name = results.sweep_name(args.sweep)
    listed = states
    if args.failed:
        listed = listed.filter(pl.col("state").is_in(["failed", "blocked", "cancelled"]))
    if args.running:
        listed = listed.filter(pl.col("state").is_in(["running", "pending", "requeued"]))
    if args.cell:
        listed = listed.filter(pl.any_horizontal(pl.col("key").str.starts_with(k) for k in args.cell))
    filtered = args.failed or args.running or args.cell or args.all
    if args.json:
        for row in listed.iter_rows(named=True):
            print(json.dumps(row))
        return 0
    print(f"{name}: {states.height} cells | " + ", ".join(f"{s} {n}" for s, n in counts))
    limit = 200 if filtered else 10
    if not filtered:  # counts first; the failures are what needs reading
        listed = listed.filter(pl.col("state").is_in(["failed", "blocked"]))
        if listed.height:
            print("failed cells (all of them: --failed; also --running, --cell KEY, --all, --json):")
    for row in listed.head(limit).iter_rows(named=True):
        job = f"  job {row['job_id']}" if row["job_id"] else ""
        print(f"  {row['key']}  {row['group']:<12} {row['state']:<9}{job}")
        if row["error"]:
            print(f"      {row['error']}")
        if row["log"] and row["state"] != "ok":
            print(f"      log: {row['log']}")
    if listed.height > limit:
        print(f"  ... and {listed.height - limit} more (--json lists them all)")
    return 0


def logs(args: Logs) -> int:
    from nfjobs import control, results

    try:
        files = control.log_files(args.key, args.runs_root, args.sweep, args.log_root)
        sweep, key = control.find_cell(args.key, args.runs_root, args.sweep)
    except control.NotFound as err:
        fail(f"error: {err}")
    if not files:
        fail(f"error: cell {key} has no job and no log (never launched outside --debug?); "
             f"its run directory is {Path(args.runs_root) / key}")
    offsets = control.print_logs(files)
    if args.follow:
        def still_live() -> bool:
            states = results.cell_states(sweep, args.runs_root, args.log_root)
            row = states.filter(states["key"] == key)
            return row.height == 1 and row["state"][0] in control.LIVE

        try:
            control.follow(files, offsets, still_live)
        except KeyboardInterrupt:
            pass
    return 0


def cancel(args: Cancel) -> int:
    from nfjobs import control, results

    try:
        states = results.cell_states(args.sweep, args.runs_root)
        keys = [control.find_cell(k, args.runs_root, args.sweep)[1] for k in args.cell]
    except (FileNotFoundError, control.NotFound) as err:
        fail(f"error: {err}")
    done = control.cancel(states, args.runs_root, results.sweep_name(args.sweep), keys, args.failed_only)
    print(f"cancelled {done.height} cell(s)" + (": " + ", ".join(done["key"].to_list()[:10]) if done.height else
                                                 " (none was queued or running)"))
    return 0


def kinds(args: Kinds) -> int:
    from nfjobs.kinds import UnknownKind, describe_kinds

    try:
        print(describe_kinds())
    except UnknownKind as err:
        fail(f"error: {err}")
    return 0


def report(args: Report) -> int:
    import polars as pl

    from nfjobs import results

    try:
        lf = results.load(args.sweep, args.runs_root)
    except FileNotFoundError as err:
        fail(f"error: {err}")
    schema = lf.collect_schema()
    if not schema:
        fail(f"error: sweep {results.sweep_name(args.sweep)!r} has no result rows yet (launch.py status shows why)")
    for cond in args.where:
        col, _, text = cond.partition("=")
        if col not in schema:
            fail(f"error: --where {cond}: no column {col!r}")
        keep = pl.col(col).cast(pl.String) == text
        if "status" in schema:  # a cell that ended without rows of its own (failed) has no value here: keep it
            keep = keep | (pl.col(col).is_null() & (pl.col("status") != "ok"))  # so it is counted as excluded
        lf = lf.filter(keep)
    try:
        table = results.report(lf, args.by, args.metric, level=args.level)
    except KeyError as err:
        fail(f"error: {err.args[0]}")
    excluded = results.exclusions(lf, args.metric)
    text = {"markdown": results.to_markdown, "csv": lambda t: t.write_csv()}.get(args.format, str)(table)
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
        from nfjobs import html_report

        try:
            print(f"wrote {html_report.write(args.sweep, args.runs_root, args.html)}")
        except FileNotFoundError as err:
            fail(f"error: --html: {err}")
    return 0


COMMANDS = {"run": Launch, "status": Status, "report": Report, "logs": Logs, "cancel": Cancel, "kinds": Kinds}
HANDLERS = {Status: status, Report: report, Logs: logs, Cancel: cancel, Kinds: kinds}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["run", *argv]  # `launch.py --sweep x.toml` is `launch.py run --sweep x.toml`
    overrides = []
    if argv[0] == "run":
        rest, overrides = split_overrides(argv[1:], {f.name for f in dataclasses.fields(Launch)})
        argv = ["run", *rest]
    args = tyro.extras.subcommand_cli_from_dict(COMMANDS, args=argv, prog="launch.py", description=__doc__)
    if isinstance(args, Launch):
        return launch(args, overrides)
    return HANDLERS[type(args)](args)


if __name__ == "__main__":
    sys.exit(main())
