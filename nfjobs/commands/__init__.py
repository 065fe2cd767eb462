"""The command line of `launch.py`: one module per verb, each a tyro dataclass and a `main(args) -> exit code`.

    uv run launch.py --sweep configs/sweeps/quickstart.toml --debug          # in this process
    uv run launch.py --sweep configs/sweeps/x.toml                           # local subprocesses
    uv run launch.py --sweep configs/sweeps/x.toml --slurm-acct ACCT         # Slurm job arrays
    uv run launch.py --sweep configs/sweeps/x.toml --dry-run --optim.lr 3e-4 # typed config flags win
    uv run launch.py status --sweep configs/sweeps/x.toml [--failed | --running | --cell KEY | --json]
    uv run launch.py logs KEY [-f]                                           # a cell's stdout + stderr
    uv run launch.py cancel --sweep configs/sweeps/x.toml [--failed-only] [--cell KEY ...]
    uv run launch.py report --sweep configs/sweeps/x.toml --by model --metric psnr
    uv run launch.py tables --sweep configs/sweeps/x.toml --out DIR          # the seeds' tables and charts
    uv run launch.py kinds                                                   # the job kinds a sweep may name

Any `--dotted.key value` that `run` does not know sets that config field in every cell whose job kind has it,
over the sweep file, written as train.py / probe.py take it: lists space-separated (`--optim.betas 0.9 0.95`),
booleans as `--x.flag` / `--x.no-flag`. See docs/sweeps.md. `launch.py run --help` lists run's own flags.
"""

import dataclasses
import sys

from nfjobs.commands import cancel, kinds, logs, report, run, status, tables
from nfjobs.commands.errors import guarded

VERBS = {"run": run, "status": status, "report": report, "tables": tables, "logs": logs, "cancel": cancel, "kinds": kinds}


@guarded
def main(argv: list[str] | None = None) -> int:
    import tyro

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in VERBS and argv[0] not in ("-h", "--help")):
        argv = ["run", *argv]  # `launch.py --sweep x.toml` is `launch.py run --sweep x.toml`
    overrides = []
    if argv[0] == "run":
        rest, overrides = run.split_overrides(argv[1:], {f.name for f in dataclasses.fields(run.Launch)})
        argv = ["run", *rest]
    commands = {name: module.Args for name, module in VERBS.items()}
    args = tyro.extras.subcommand_cli_from_dict(commands, args=argv, prog="launch.py", description=__doc__)
    module = next(m for m in VERBS.values() if isinstance(args, m.Args))
    return module.main(args, overrides) if module is run else module.main(args)
