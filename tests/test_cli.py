"""The command line: launch.py's subcommands and their help, one override syntax for launch / train / probe,
a fast start, and the package importable from anywhere."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tyro

from nfjobs import commands as launch
from nfjobs import sweep
from nfjobs.kinds import load_kind

ROOT = Path(__file__).parent.parent


def launch_config(kind: str, flags: list[str], sweep_file) -> object:
    """The config launch.py builds for a one-cell sweep of `kind` with these override flags."""
    data = '[data]\nname = "builtin"\n' if kind == "train" else ""
    path = sweep_file(f'kind = "{kind}"\n{data}[sweep]\nseeds = "fixed"\n')  # seeds as typed, not per cell
    rest, overrides = launch.run.split_overrides(["--sweep", str(path), *flags], {"sweep"})
    assert rest == ["--sweep", str(path)]
    (cell,) = sweep.expand([path], overrides)
    return cell.config


@pytest.mark.parametrize(("kind", "flags"), [
    ("toy", ["--optim.betas", "0.8", "0.95"]),
    ("toy", ["--head.dims", "3", "4", "5"]),
    ("toy", ["--head.dims"]),
    ("toy", ["--fail", "--head.act", "gelu", "--optim.lr=0.01", "--seed", "-3"]),
    ("toy", ["--optim.schedule", "constant", "--head.width", "16"]),
    ("train", ["--no-compile", "--jitter", "--optim.betas", "0.5", "0.6", "--context-frac", "0.2"]),
])
def test_launch_overrides_parse_exactly_as_the_single_config_clis_do(kind, flags, sweep_file):
    module = load_kind(kind)
    base = {"train": ["--data.name", "builtin"]}.get(kind, [])
    assert launch_config(kind, flags, sweep_file) == tyro.cli(module.Config, args=[*base, *flags])


@pytest.mark.parametrize("flags", [["--optim.betas", "0.8,0.95"], ["--optim.betas", "0.8"], ["--head.width", "1", "2"]])
def test_a_value_the_single_config_cli_refuses_is_refused_by_launch_too(flags, sweep_file):
    with pytest.raises(SystemExit):
        tyro.cli(load_kind("toy").Config, args=flags, console_outputs=False)
    with pytest.raises(sweep.SweepError, match=f"--{flags[0][2:]}"):
        launch_config("toy", flags, sweep_file)


def test_a_bad_override_exits_2_with_one_line_naming_the_flag(sweep_file, tmp_path):
    path = sweep_file('kind = "toy"\n')
    proc = subprocess.run([sys.executable, "launch.py", "--sweep", str(path), "--dry-run", "--optim.betas", "0.9,0.95",
                           "--runs-root", str(tmp_path / "runs")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--optim.betas" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(("command", "own", "not_own"), [
    ("status", "--failed", "--slurm-acct"),
    ("report", "--metric", "--slurm-acct"),
    ("logs", "--follow", "--metric"),
    ("cancel", "--failed-only", "--metric"),
    ("kinds", "--help", "--sweep"),
    ("run", "--slurm-acct", "--failed-only"),
])
def test_each_subcommand_has_its_own_help(command, own, not_own):
    proc = subprocess.run([sys.executable, "launch.py", command, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: launch.py {command}")
    assert own in proc.stdout and not_own not in proc.stdout


def test_the_top_level_help_lists_every_subcommand():
    proc = subprocess.run([sys.executable, "launch.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    assert all(c in proc.stdout for c in launch.VERBS)


def test_kinds_lists_the_registered_job_kinds(capsys):
    assert launch.main(["kinds"]) == 0
    out = capsys.readouterr().out
    assert all(k in out for k in ("train", "cache", "probe", "score", "smoke"))


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["status", "--help"], ["kinds"],
                                  ["status", "--sweep", "nope"]])
def test_the_cli_starts_without_importing_torch(argv):
    code = ("import sys, launch\ntry:\n    launch.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.stderr.strip().endswith("NO-TORCH"), proc.stderr


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["kinds"]])
def test_help_and_kinds_import_no_numerics(argv):
    # numpy alone costs ~0.2 s; a sweep module drawing samples imported it at the CLI's start once
    code = ("import sys, launch\ntry:\n    launch.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('numpy', 'polars', 'torch', 'optuna') if m in sys.modules), "
            "file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.stderr.strip().endswith("HEAVY []"), proc.stderr


def test_the_package_imports_from_a_script_outside_the_checkout(tmp_path):
    script = tmp_path / "elsewhere" / "analysis.py"
    script.parent.mkdir()
    script.write_text("from nfjobs import results\nimport nfjobs\nprint(results.CELL_STATES[0], nfjobs.__file__)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # no help from the test's own path
    proc = subprocess.run([sys.executable, str(script)], cwd=script.parent, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok ") and str(ROOT / "nfjobs") in proc.stdout
