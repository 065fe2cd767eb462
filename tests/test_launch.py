"""launch.py end to end without Slurm: dry runs, debug and local dispatch, skipping, --force, failures, exit codes."""

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from waiting import open_gate_when

from nfjobs import commands as launch
from nfjobs import results
from nfjobs.sweep import expand
from nfjobs.store import rows as stored
from nfjobs.store import manifest as manifests

ROOT = Path(__file__).parent.parent
FIXTURES = Path(__file__).parent / "sweeps"


def test_dry_run_counts_cells_per_kind_and_writes_nothing(sweep_file, tmp_path, capsys, run_launch):
    path = sweep_file('[[group]]\nkind = "smoke"\nsteps = [1, 2, 3]\n[[group]]\nkind = "toy"\n')
    assert run_launch("--sweep", str(path), "--dry-run", runs=tmp_path / "runs") == 0
    out = capsys.readouterr().out
    assert "4 cells" in out
    assert "smoke" in out and "3 to run" in out and "toy" in out
    assert not (tmp_path / "runs").exists()


def test_debug_runs_cells_then_a_relaunch_skips_them_and_force_reruns(sweep_file, tmp_path, capsys, run_launch):
    runs = tmp_path / "runs"
    path = sweep_file('kind = "toy"\nhead.width = [4, 8]\n')
    assert run_launch("--sweep", str(path), "--debug", runs=runs) == 0
    df = results.load(path, runs).collect()
    assert df.height == 4  # 2 cells x 2 rows
    assert set(df["status"]) == {"ok"} and set(df["sweep"]) == {"s"}
    assert {"optim.lr", "head.width", "metric", "run.git_commit", "run.host", "run.start"} <= set(df.columns)
    first_end = df["run.end"].max()

    capsys.readouterr()
    assert run_launch("--sweep", str(path), "--dry-run", runs=runs) == 0
    assert "0 to run       2 done (skipped)" in capsys.readouterr().out
    assert run_launch("--sweep", str(path), "--debug", runs=runs) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert results.load(path, runs).collect()["run.end"].max() == first_end

    assert run_launch("--sweep", str(path), "--debug", "--force", runs=runs) == 0
    assert results.load(path, runs).collect()["run.end"].max() > first_end


def test_debug_raises_at_once_and_records_a_failed_row(sweep_file, tmp_path, run_launch):
    runs = tmp_path / "runs"
    path = sweep_file('kind = "toy"\nfail = true\n')
    with pytest.raises(ValueError, match="toy job asked to fail"):
        run_launch("--sweep", str(path), "--debug", runs=runs)
    df = results.load(path, runs).collect()
    assert df["status"].to_list() == ["failed"]
    assert "ValueError: toy job asked to fail" in df["error"][0] and "Traceback" in df["error"][0]


def test_a_metric_clashing_with_a_config_column_fails_the_cell_but_keeps_the_numbers(sweep_file, tmp_path, run_launch):
    runs = tmp_path / "runs"
    path = sweep_file('kind = "toy"\nclash = true\n')
    with pytest.raises(ValueError, match="clash with result columns"):
        run_launch("--sweep", str(path), "--debug", runs=runs)
    df = results.load(path, runs).collect()
    assert df["status"].to_list() == ["failed"] and df["head.width"].to_list() == [8]
    assert "['head.width']" in df["error"][0] and "'metric':" in df["error"][0]


def test_typed_override_reaches_the_result_rows(sweep_file, tmp_path, run_launch):
    runs = tmp_path / "runs"
    path = sweep_file('kind = "toy"\n[optim]\nlr = 0.5\n')
    assert run_launch("--sweep", str(path), "--debug", "--optim.lr", "0.001", runs=runs) == 0
    assert results.load(path, runs).collect()["optim.lr"].unique().to_list() == [0.001]


def test_local_mode_runs_cells_in_subprocesses_and_reports_failures(sweep_file, tmp_path, capsys, run_launch):
    runs = tmp_path / "runs"
    path = sweep_file('kind = "toy"\nfail = [false, true]\nhead.width = [4, 8]\n')
    assert run_launch("--sweep", str(path), "--max-parallel", "2", runs=runs) == 1
    df = results.load(path, runs).collect()
    per_cell = df.group_by("key").agg(pl.col("status").first(), pl.col("fail").first())
    assert sorted(zip(per_cell["fail"], per_cell["status"])) == [(False, "ok")] * 2 + [(True, "failed")] * 2
    assert "2 ok, 2 not ok" in capsys.readouterr().out
    assert list((tmp_path / "logs" / "s").glob("*/*_log.err"))  # submitit logs under logs/<sweep>/


def test_local_mode_starts_a_cell_when_its_upstream_ends_not_when_its_stage_does(sweep_file, tmp_path, run_launch):
    runs, gate = tmp_path / "runs", tmp_path / "gate"
    path = sweep_file(f'[[group]]\nname = "slow"\nkind = "toy"\ngate = "{gate}"\n'
                      '[[group]]\nname = "up"\nkind = "toy"\nhead.width = 4\n'
                      '[[group]]\nname = "down"\nkind = "toy"\nupstream = "@up"\n')
    (down,) = [c.key for c in expand([path]) if c.group == "down"]
    # `slow` ends only once `down` has a result (not after a fixed time, which a loaded machine can outlast)
    open_gate_when(gate, lambda: stored.status(runs, down) is not None)
    assert run_launch("--sweep", str(path), "--max-parallel", "3", runs=runs) == 0
    df = results.load(path, runs).collect().group_by("group").agg(pl.col("run.start").min(), pl.col("run.end").max())
    t = {g: (s, e) for g, s, e in df.iter_rows()}
    assert t["down"][0] >= t["up"][1]  # waits for what it reads ...
    assert t["down"][1] < t["slow"][1]  # ... but not for the rest of the first stage


def test_local_mode_reports_results_blocks_dependants_and_records_pids_logs_and_configs(sweep_file, tmp_path, capsys,
                                                                                        run_launch):
    runs = tmp_path / "runs"
    path = sweep_file('[[group]]\nname = "up"\nkind = "toy"\nfail = true\n'
                      '[[group]]\nname = "down"\nkind = "toy"\nupstream = "@up"\n'
                      '[[group]]\nname = "other"\nkind = "smoke"\nlabel = ["a", "b", "c"]\n')
    assert run_launch("--sweep", str(path), "--cells-per-job", "4", runs=runs) == 1
    err = capsys.readouterr().err
    df = results.load(path, runs).collect().group_by("group").agg(pl.col("status").first(), pl.col("error").first(),
                                                                  pl.col("key").first())
    row = {g: (s, e, k) for g, s, e, k in df.iter_rows()}
    assert row["up"][0] == "failed" and row["other"][0] == "ok"
    assert row["down"][:2] == ("blocked", f"upstream {row['up'][2]} failed")
    assert f"{row['up'][2]} (up): failed: ValueError: toy job asked to fail" in err  # the result, not FINISHED
    assert f"{row['down'][2]} (down): blocked: upstream {row['up'][2]} failed" in err and "FINISHED" not in err
    manifest = manifests.read(runs, "s")
    first_stage = [k for k, c in manifest["cells"].items() if c["group"] != "down"]
    assert len({manifest["jobs"][k] for k in first_stage}) == 1  # four cells of one stage packed in one worker
    assert manifest["jobs"][row["up"][2]].startswith("local:") and row["down"][2] not in manifest["jobs"]
    assert Path(manifest["logs"][row["up"][2]]["stderr"]).read_text().count("toy job asked to fail") >= 1
    assert all((runs / k / "config.json").exists() for k in manifest["cells"])


THREADS_SWEEP = ('[[group]]\nname = "one"\nkind = "toy"\nhead.width = 1\nreport_threads = true\n'
                 '[group.slurm]\ncpus_per_task = 1\n'
                 '[[group]]\nname = "many"\nkind = "toy"\nreport_threads = true\n'
                 '[group.slurm]\ncpus_per_task = 64\n')
"""Two toy cells that report their thread counts: one asks for 1 CPU, one for 64."""


@pytest.mark.slow
def test_local_mode_runs_torch_on_the_cells_cpus_at_most_its_share_of_the_cores(sweep_file, tmp_path, monkeypatch,
                                                                                  run_launch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    runs = tmp_path / "runs"
    path = sweep_file(THREADS_SWEEP)
    assert run_launch("--sweep", str(path), "--max-parallel", "1", runs=runs) == 0
    rows = {r["group"]: r for r in results.load(path, runs).collect().iter_rows(named=True)}
    share = max(1, os.cpu_count() or 1)  # one cell at a time: all of this machine's cores
    assert (rows["one"]["omp_threads"], rows["one"]["torch_threads"]) == ("1", 1)
    assert (rows["many"]["omp_threads"], rows["many"]["torch_threads"]) == (str(min(64, share)), min(64, share))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the launcher's own setting wins
    assert run_launch("--sweep", str(path), "--max-parallel", "1", "--force", runs=runs) == 0
    assert set(results.load(path, runs).collect()["omp_threads"]) == {"1"}


def test_debug_runs_each_cell_on_its_cpus_threads_and_gives_the_launcher_its_own_back(sweep_file, tmp_path,
                                                                                        monkeypatch, run_launch):
    import torch

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    runs = tmp_path / "runs"
    path = sweep_file(THREADS_SWEEP)
    before = torch.get_num_threads()
    assert run_launch("--sweep", str(path), "--debug", runs=runs) == 0
    rows = {r["group"]: r for r in results.load(path, runs).collect().iter_rows(named=True)}
    cores = os.cpu_count() or 1  # one cell at a time, as local mode with --max-parallel 1
    assert (rows["one"]["omp_threads"], rows["one"]["torch_threads"]) == ("1", 1)
    assert (rows["many"]["omp_threads"], rows["many"]["torch_threads"]) == (str(min(64, cores)), min(64, cores))
    assert torch.get_num_threads() == before and "OMP_NUM_THREADS" not in os.environ
    assert run_launch("--sweep", str(path), "--debug", "--force", "--cpus-per-task", "1", runs=runs) == 0
    assert set(results.load(path, runs).collect()["torch_threads"]) == {1}  # the flag overrides [slurm], as there
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the launcher's own setting wins
    assert run_launch("--sweep", str(path), "--debug", "--force", runs=runs) == 0
    assert set(results.load(path, runs).collect()["omp_threads"]) == {"1"}


def test_local_mode_gives_each_gpu_cell_its_own_gpus_and_the_rest_none(sweep_file, tmp_path, monkeypatch, run_launch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    runs, gate = tmp_path / "runs", tmp_path / "gate"
    path = sweep_file(f'[[group]]\nname = "gpu"\nkind = "toy"\ngate = "{gate}"\nhead.width = [1, 2, 3]\n'
                      '[group.slurm]\ngpus_per_node = 1\n'
                      '[[group]]\nname = "cpu"\nkind = "toy"\n')
    (cpu_key,) = [c.key for c in expand([path]) if c.group == "cpu"]
    open_gate_when(gate, lambda: stored.status(runs, cpu_key) is not None)  # GPU cells end after the CPU one
    assert run_launch("--sweep", str(path), "--max-parallel", "4", runs=runs) == 0
    df = results.load(path, runs).collect().unique("key")
    cpu, gpu = df.filter(pl.col("group") == "cpu"), df.filter(pl.col("group") == "gpu").sort("run.start")
    assert cpu["gpus"].to_list() == [""]
    assert sorted(gpu["gpus"].to_list()[:2]) == ["5", "7"]  # the first two GPU cells ran side by side ...
    third = gpu.row(2, named=True)  # ... and the third waited for a GPU to come free
    previous = gpu.filter(pl.col("gpus") == third["gpus"]).row(0, named=True)
    assert third["run.start"] >= previous["run.end"]
    assert cpu["run.start"][0] < gpu["run.end"].min()  # a CPU cell does not wait for a GPU


def test_local_mode_shares_a_gpu_between_cells_only_when_asked(sweep_file, tmp_path, monkeypatch, run_launch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    runs, gate = tmp_path / "runs", tmp_path / "gate"
    path = sweep_file(f'kind = "toy"\ngate = "{gate}"\nhead.width = [1, 2]\n[slurm]\ngpus_per_node = 1\n')
    keys = [c.key for c in expand([path])]
    # each cell ends only once both have started (config.json): they overlap exactly when they share the GPU
    open_gate_when(gate, lambda: all((runs / k / "config.json").exists() for k in keys))
    assert run_launch("--sweep", str(path), "--max-parallel", "2", "--cells-per-gpu", "2", runs=runs) == 0
    df = results.load(path, runs).collect().unique("key").sort("run.start")
    assert df["gpus"].to_list() == ["3", "3"] and df["run.start"][1] < df["run.end"][0]


def test_a_reference_to_a_cell_outside_the_launch_with_no_result_is_refused(sweep_file, tmp_path, capsys, run_launch):
    path = sweep_file('kind = "toy"\nupstream = "toy-000000000000"\n')
    # references are resolved at validation: nothing runs
    with pytest.raises(SystemExit) as info:
        run_launch("--sweep", str(path), "--debug", runs=tmp_path / "runs")
    assert info.value.code == 2 and "upstream: 'toy-000000000000': no cell of this launch" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_two_stage_sweep_runs_upstream_first(sweep_file, tmp_path, run_launch):
    runs = tmp_path / "runs"
    path = sweep_file('[[group]]\nname = "up"\nkind = "toy"\n'
                      '[[group]]\nkind = "toy"\nupstream = "@up"\nhead.width = [1, 2]\n')
    assert run_launch("--sweep", str(path), "--debug", runs=runs) == 0
    df = results.load(path, runs).collect().filter(pl.col("upstream") != "")
    assert df["upstream_ok"].to_list() == ["true"] * 4 or df["upstream_ok"].cast(pl.String).to_list() == ["true"] * 4


@pytest.mark.parametrize("fixture", sorted(p.name for p in FIXTURES.glob("*.toml")))
def test_bad_sweeps_exit_non_zero_with_one_clear_message_and_submit_nothing(fixture, tmp_path):
    runs = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "launch.py", "--sweep", str(FIXTURES / fixture), "--runs-root", str(runs)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "nothing was submitted" in proc.stderr and str(FIXTURES / fixture) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not runs.exists()


def test_the_cli_validates_a_dry_run_without_importing_torch(tmp_path):
    code = ("import sys, launch; rc = launch.main(['--sweep', 'tests/sweeps/../../configs/sweeps/quickstart.toml',"
            f" '--dry-run', '--runs-root', {str(tmp_path)!r}]); "
            "assert rc == 0; assert 'torch' not in sys.modules, 'torch was imported'; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("ok")


def test_status_and_report_commands(sweep_file, tmp_path, capsys, run_launch):
    runs = tmp_path / "runs"
    path = sweep_file('kind = "toy"\nhead.width = [4, 8]\nseed = [0, 1]\n')
    assert run_launch("--sweep", str(path), "--debug", runs=runs) == 0
    capsys.readouterr()
    assert launch.main(["status", "--sweep", str(path), "--runs-root", str(runs)]) == 0
    assert "4 cells | ok 4" in capsys.readouterr().out
    out_file = tmp_path / "table.md"
    assert launch.main(["report", "--sweep", str(path), "--runs-root", str(runs), "--by", "head.width",
                        "--metric", "metric", "--where", "split=val", "--format", "markdown",
                        "--out", str(out_file)]) == 0
    table = out_file.read_text()
    assert table.startswith("| head.width | mean | std | n | ci95_low | ci95_high |")
    assert len(table.strip().splitlines()) == 4
    assert launch.main(["report", "--sweep", str(path), "--runs-root", str(runs), "--by", "head.width",
                        "--metric", "metric", "--where", "split=val", "--where", "head.width=8", "--format", "csv",
                        "--out", str(out_file)]) == 0
    rows = out_file.read_text().strip().splitlines()
    assert rows[0].startswith("head.width,mean") and len(rows) == 2 and rows[1].startswith("8,")


@pytest.mark.parametrize(("script", "flag"), [("train.py", "--optim.lr"), ("probe.py", "--activations")])
def test_single_config_clis_show_readable_help(script, flag):
    proc = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert flag in proc.stdout and "--runs-root" in proc.stdout


def test_run_single_runs_one_config_and_then_skips_it(tmp_path, capsys):
    from nfjobs.commands.single import run_single

    argv = ["--steps", "2", "--label", "cli", "--runs-root", str(tmp_path)]
    assert run_single("smoke", argv) == 0
    assert "steps_done" in capsys.readouterr().out
    df = results.load(tmp_path).collect()
    assert df["steps_done"].to_list() == [2] and df["sweep"].to_list() == ["cli"]
    assert run_single("smoke", argv) == 0
    assert "already has a result" in capsys.readouterr().out


def test_no_job_kind_imports_torch_at_import_time():
    code = ("import sys; from nfjobs.kinds import KINDS, load_kind; [load_kind(k) for k in KINDS]; "
            "import launch, nfjobs.sweep, nfjobs.orchestration.launching, nfjobs.commands, nfjobs.results; "
            "print(sorted(m for m in ('torch', 'torchvision', 'sklearn', 'numba') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_report_says_what_it_excluded_and_fails_cleanly_on_bad_input(sweep_file, tmp_path, capsys, run_launch):
    runs = tmp_path / "runs"
    path = sweep_file('kind = "toy"\nhead.width = [4, 8]\nseed = [0, 1]\n')
    assert run_launch("--sweep", str(path), "--debug", runs=runs) == 0
    failing = sweep_file('kind = "toy"\nhead.width = 8\nseed = 2\nfail = true\n[sweep]\nname = "s"\n', "s2.toml")
    with pytest.raises(ValueError):
        run_launch("--sweep", str(failing), "--debug", runs=runs)  # same sweep name: one more cell, failed
    capsys.readouterr()
    base = ["report", "--sweep", str(path), "--runs-root", str(runs)]
    assert launch.main([*base, "--by", "head.width", "seed", "--metric", "metric", "--where", "split=val",
                        "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert "excluded: 1 cell(s) failed" in err
    rows = out.strip().splitlines()[1:]
    assert len(rows) == 4 and all(r.endswith(",,") for r in rows)  # one value per group: no std, no interval
    for bad, says in [(["--metric", "nope"], "nope"), (["--metric", "metric", "--by", "nocol"], "nocol"),
                      (["--metric", "metric", "--where", "nocol=1"], "nocol")]:
        with pytest.raises(SystemExit) as exc:
            launch.main([*base, *bad])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and says in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exc:
        launch.main(["report", "--sweep", "unknown", "--runs-root", str(runs), "--metric", "m"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "no launched sweep named 'unknown'" in err and len(err.strip().splitlines()) == 1


def test_a_finished_launch_says_where_its_results_are_and_what_to_run_next(sweep_file, tmp_path, capsys, run_launch):
    runs = tmp_path / "runs"
    path = sweep_file('kind = "toy"\nhead.width = [4, 8]\n')
    assert run_launch("--sweep", str(path), "--debug", runs=runs) == 0
    out = capsys.readouterr().out
    assert f"rows: 2 result file(s), <key>/result.parquet under {runs}/" in out
    assert f"results.load('s', runs_root={str(runs)!r})" in out  # the Python hint finds them too
    # report groups by the sweep's axis (head.width) unasked: the hint names no --by
    assert f"next: uv run launch.py report --sweep {path} --runs-root {runs} --metric " in out and "--by" not in out
    assert f"uv run launch.py status --sweep {path} --runs-root {runs}" in out


def _hinted_reports(out: str) -> list[list[str]]:
    """The `report` commands a launch printed as next steps, as launch.py arguments."""
    import shlex

    return [shlex.split(line.split("uv run launch.py ", 1)[1]) for line in out.splitlines()
            if "uv run launch.py report" in line and "--html" not in line]


TINY_FIELD = """data = { name = "builtin", builtin_n = 48, val_frac = 0.25 }
perceiver = { fourier_size = 4, latent_dims = [8], num_latents = 4, cross_heads = 1, cross_dim_head = 4, self_heads = 1, self_dim_head = 4, ff_mult = 1, processor_depth = 1 }
epochs = 1
batch_size = 16
curve_images = 0
compile = false
"""
SCORE_ON_CACHE = """[[group]]
name = "cache"
kind = "cache"
data = { name = "builtin", builtin_n = 48, val_frac = 0.25 }
shard_size = 16
[[group]]
name = "score"
kind = "score"
activations = "@cache"
scorer = ["random", "kmeans"]
n_prototypes = 4
train_patches = 200
kmeans_iters = 2
device = "cpu"
"""


@pytest.mark.parametrize("text, metrics", [
    ('kind = "train"\ncontext_frac = [1.0, 0.5]\n' + TINY_FIELD, ["psnr"]),
    (SCORE_ON_CACHE, ["map"]),  # cache rows have a `split` config column, score rows none: no split=val here
    ('[[group]]\nname = "field"\nkind = "train"\n' + TINY_FIELD + SCORE_ON_CACHE, ["psnr", "map"]),
], ids=["train", "cache+score", "train+cache+score"])
def test_the_hinted_report_commands_print_a_table_of_the_metric(text, metrics, sweep_file, tmp_path, capsys,
                                                                 run_launch):
    runs = tmp_path / "runs"
    assert run_launch("--sweep", str(sweep_file(text)), "--debug", runs=runs) == 0
    hints = _hinted_reports(capsys.readouterr().out)
    assert [h[h.index("--metric") + 1] for h in hints] == metrics
    for hint in hints:
        assert launch.main([*hint, "--format", "csv"]) == 0
        table = pl.read_csv(capsys.readouterr().out.strip().encode())
        assert table.height >= 1 and table["mean"].is_not_null().all(), (hint, table)
