"""Sweep semantics (docs/sweeps.md): grids, paired axes, nested tables, groups, references, precedence, seeds,
keys, and one fixture file per failure mode in tests/sweeps/."""

from pathlib import Path

import pytest

from nfjobs.identity import cell_key
from nfjobs.sweep import Override, SweepError, expand

FIXTURES = Path(__file__).parent / "sweeps"


def problems_of(*paths, overrides=()) -> str:
    with pytest.raises(SweepError) as info:
        expand(list(paths), list(overrides))
    return str(info.value)


# ------------------------------------------------------------------------------------------ grid semantics
def test_list_values_are_a_cartesian_grid_and_scalars_override_defaults(sweep_file):
    cells = expand([sweep_file('kind = "toy"\n[optim]\nlr = [1e-3, 1e-2]\nweight_decay = 0.1\n'
                               '[head]\nwidth = [4, 8, 16]\n')])
    assert len(cells) == 6
    assert {(c.config.optim.lr, c.config.head.width) for c in cells} == {
        (lr, w) for lr in (1e-3, 1e-2) for w in (4, 8, 16)}
    assert all(c.config.optim.weight_decay == 0.1 for c in cells)
    assert all(c.config.optim.warmup_steps == 100 for c in cells)  # untouched default
    assert all(isinstance(c.config.optim.lr, float) for c in cells)


def test_dotted_keys_equal_nested_tables(sweep_file):
    a = expand([sweep_file('kind = "toy"\noptim.lr = 0.5\n', "a.toml")])
    b = expand([sweep_file('kind = "toy"\n[optim]\nlr = 0.5\n', "b.toml")])
    assert [c.key for c in a] == [c.key for c in b]


def test_list_typed_field_takes_a_flat_list_as_one_value_and_a_list_of_lists_as_an_axis(sweep_file):
    one = expand([sweep_file('kind = "toy"\nhead.dims = [3, 4, 5]\n', "a.toml")])
    assert [c.config.head.dims for c in one] == [(3, 4, 5)]
    axis = expand([sweep_file('kind = "toy"\nhead.dims = [[1], [2, 3]]\n', "b.toml")])
    assert sorted(c.config.head.dims for c in axis) == [(1,), (2, 3)]


def test_zip_pairs_axes_and_crosses_with_the_grid(sweep_file):
    cells = expand([sweep_file('kind = "toy"\nhead.width = [4, 8]\n'
                               '[[zip]]\noptim.lr = [1e-3, 1e-4]\noptim.warmup_steps = [10, 20]\n')])
    pairs = {(c.config.optim.lr, c.config.optim.warmup_steps) for c in cells}
    assert pairs == {(1e-3, 10), (1e-4, 20)}
    assert len(cells) == 4


def test_several_files_in_one_launch_and_duplicates_collapse(sweep_file):
    a = sweep_file('kind = "smoke"\nsteps = [1, 2]\n', "a.toml")
    b = sweep_file('kind = "smoke"\nsteps = [2, 3]\n', "b.toml")
    cells = expand([a, b])
    assert sorted(c.config.steps for c in cells) == [1, 2, 3]
    assert {c.sweep for c in cells} == {"a", "b"}


def test_groups_mix_kinds_and_references_make_stages(sweep_file):
    cells = expand([sweep_file('''
[sweep]
name = "two-stage"

[[group]]
name = "up"
kind = "toy"
head.width = [4, 8]

[[group]]
name = "down"
kind = "toy"
upstream = "@up"
optim.lr = [0.1, 0.2]

[[group]]
name = "check"
kind = "smoke"
''')])
    up = [c for c in cells if c.group == "up"]
    down = [c for c in cells if c.group == "down"]
    assert len(up) == 2 and len(down) == 4 and {c.kind for c in cells} == {"toy", "smoke"}
    assert {c.config.upstream for c in down} == {c.key for c in up}  # an axis over the referenced cells
    assert all(c.stage == 0 for c in up) and all(c.stage == 1 for c in down)
    assert all(len(c.deps) == 1 and c.deps[0] in {u.key for u in up} for c in down)
    assert {c.sweep for c in cells} == {"two-stage"}


CHAIN = """
[sweep]
seeds = "fixed"

[[group]]
name = "up"
kind = "toy"
head.width = [4, 8, 16]

[[group]]
name = "mid"
kind = "toy"
upstream = "@up"
head.width = "@up.head.width"
optim.lr = [0.1, 0.2]

[[group]]
name = "down"
kind = "toy"
upstream = "@mid.upstream"
"""


def test_a_reference_to_a_groups_key_takes_it_from_the_same_cell_as_the_groups_other_references(sweep_file):
    cells = expand([sweep_file(CHAIN)])
    up = {c.key: c for c in cells if c.group == "up"}
    mid = [c for c in cells if c.group == "mid"]
    assert len(mid) == 3 * 2  # one axis over up's cells (paired), crossed with lr; not 3 x 3 x 2
    for c in mid:  # the width is the width of the very cell it reads
        assert c.config.head.width == up[c.config.upstream].config.head.width and c.deps == (c.config.upstream,)
        assert c.stage == 1
    down = [c for c in cells if c.group == "down"]  # six mid cells read three up cells: three distinct cells
    assert sorted(c.config.upstream for c in down) == sorted(up) and all(c.stage == 2 for c in down)


def test_references_to_one_group_count_once_against_the_cell_limit(sweep_file):
    path = sweep_file(CHAIN.split('[[group]]\nname = "down"')[0])
    assert len(expand([path], max_cells=3 + 6)) == 9


@pytest.mark.parametrize(("text", "words"), [
    ('head.width = "@up.head.widht"', "references @up.head.widht: group up (kind 'toy') has no key 'head.widht'; "
                                      "did you mean 'head.width'?"),
    ('head.act = "@up.head.width"', "group mid: head.act (@up.head.width): expected one of 'relu', 'gelu', got 4"),
    ('upstream = "@later.upstream"', "references @later.upstream: it is defined later"),
    ('upstream = "@nowhere.upstream"', "references @nowhere.upstream: no such group"),
    ('log_every = "@up.log_every"', "log_every: is a runtime field"),
])
def test_a_bad_reference_to_a_groups_key_is_named(text, words, sweep_file):
    msg = problems_of(sweep_file('[[group]]\nname = "up"\nkind = "toy"\nhead.width = [4, 8]\n'
                                 f'[[group]]\nname = "mid"\nkind = "toy"\n{text}\n'
                                 '[[group]]\nname = "later"\nkind = "toy"\n'))
    assert words in msg


@pytest.mark.parametrize(("text", "words"), [
    ('head.width = "@up.head.width\\nINJECT"', "references @up.head.width\\nINJECT: group up"),
    ('upstream = "@up\\nx"', "references @up\\nx: no such group"),
    ('"head\\nx" = 1', "head\\nx: unknown key"),
])
def test_a_newline_from_the_file_is_escaped_so_each_problem_is_one_line(text, words, sweep_file):
    msg = problems_of(sweep_file('[[group]]\nname = "up"\nkind = "toy"\n'
                                 f'[[group]]\nname = "mid"\nkind = "toy"\n{text}\n'))
    assert words in msg and len(msg.splitlines()) == 1


def test_a_newline_in_a_flag_is_escaped_so_its_problem_is_one_line(sweep_file):
    msg = problems_of(sweep_file('kind = "toy"\n'), overrides=[Override("optim.l\nr", "1")])
    assert "command line: --optim.l\\nr: unknown key" in msg and len(msg.splitlines()) == 1


def test_group_names_with_dots_are_read_before_keys(sweep_file):
    cells = expand([sweep_file('[[group]]\nname = "a.b"\nkind = "toy"\nhead.width = 5\n'
                               '[[group]]\nname = "c"\nkind = "toy"\nhead.width = "@a.b.head.width"\n'
                               'upstream = "@a.b"\n')])
    assert [c.config.head.width for c in cells if c.group == "c"] == [5]


def test_group_tables_merge_with_the_files_tables_key_by_key(sweep_file):
    cells = expand([sweep_file('optim = { lr = 0.5, warmup_steps = 7 }\n'
                               '[[group]]\nkind = "toy"\noptim = { lr = 0.25 }\n')])
    assert [(c.config.optim.lr, c.config.optim.warmup_steps) for c in cells] == [(0.25, 7)]


def test_top_level_fields_are_shared_by_every_group(sweep_file):
    cells = expand([sweep_file('seed = 5\n[sweep]\nseeds = "fixed"\n'
                               '[[group]]\nkind = "smoke"\n[[group]]\nkind = "toy"\n')])
    assert [c.config.seed for c in cells] == [5, 5]


# ------------------------------------------------------------------------------------------ precedence
def test_typed_flags_beat_the_sweep_even_when_equal_to_the_default(sweep_file):
    path = sweep_file('kind = "toy"\n[optim]\nlr = 0.5\nwarmup_steps = [1, 2]\n')
    cells = expand([path], [Override("optim.lr", "0.001")])  # 1e-3 is OptimConfig's default
    assert {c.config.optim.lr for c in cells} == {0.001}
    assert {c.config.optim.warmup_steps for c in cells} == {1, 2}


def test_typed_flag_unknown_to_every_kind_is_an_error_with_a_suggestion(sweep_file):
    msg = problems_of(sweep_file('kind = "toy"\n'), overrides=[Override("optim.lrr", "1")])
    assert "--optim.lrr" in msg and "optim.lr" in msg


def test_typed_flag_with_a_wrong_type_names_the_flag(sweep_file):
    msg = problems_of(sweep_file('kind = "smoke"\n'), overrides=[Override("steps", "many")])
    assert "--steps" in msg and "an integer" in msg


# ------------------------------------------------------------------------------------------ seeds and keys
def test_derived_seeds_are_distinct_deterministic_and_stable_when_the_grid_grows(sweep_file):
    small = expand([sweep_file('kind = "toy"\nhead.width = [4, 8]\n', "a.toml")])
    big = expand([sweep_file('kind = "toy"\nhead.width = [2, 4, 8]\n', "b.toml")])
    seeds = {c.config.head.width: c.config.seed for c in small}
    assert len(set(seeds.values())) == 2
    assert {c.config.head.width: c.config.seed for c in big if c.config.head.width in seeds} == seeds
    assert {c.key for c in small} <= {c.key for c in big}  # so a relaunch skips the finished ones
    again = expand([sweep_file('kind = "toy"\nhead.width = [4, 8]\n', "c.toml")])
    assert [c.config.seed for c in again] == [c.config.seed for c in small]


def test_a_swept_seed_is_used_as_is(sweep_file):
    cells = expand([sweep_file('kind = "toy"\nseed = [0, 1, 2]\nhead.width = [4, 8]\n')])
    assert sorted(c.config.seed for c in cells) == [0, 0, 1, 1, 2, 2]


def test_fixed_seed_policy_keeps_the_base_seed(sweep_file):
    cells = expand([sweep_file('kind = "toy"\nseed = 3\nhead.width = [4, 8]\n[sweep]\nseeds = "fixed"\n')])
    assert [c.config.seed for c in cells] == [3, 3]


def test_key_ignores_runtime_fields_and_depends_on_everything_else(sweep_file):
    a = expand([sweep_file('kind = "toy"\nlog_every = 1\n[sweep]\nseeds = "fixed"\n', "a.toml")])[0]
    b = expand([sweep_file('kind = "toy"\nlog_every = 99\n[sweep]\nseeds = "fixed"\n', "b.toml")])[0]
    c = expand([sweep_file('kind = "toy"\nhead.width = 9\n[sweep]\nseeds = "fixed"\n', "c.toml")])[0]
    assert a.key == b.key != c.key
    assert a.key == cell_key("toy", a.config)
    assert a.key.startswith("toy-")


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(("fixture", "key", "expected"), [
    ("unknown_key.toml", "stpes", "did you mean 'steps'"),
    ("unknown_nested_key.toml", "optim.lrr", "did you mean 'optim.lr'"),
    ("wrong_type.toml", "steps", "expected an integer, got 'three'"),
    ("wrong_type_in_axis.toml", "head.act", "expected one of 'relu', 'gelu'"),
    ("empty_axis.toml", "steps", "empty list"),
    ("mismatched_zip.toml", "zip[0]", "same length: optim.lr has 3, optim.warmup_steps has 2"),
    ("unknown_kind.toml", "kind", "unknown job kind 'smoek'"),
    ("unreadable.toml", "", "not valid TOML"),
    ("missing_dataset_root.toml", "data.root", "/nonexistent/cifar"),
    ("invalid_value.toml", "optim.lr", "lr must be > 0"),
    ("bad_reference.toml", "upstream", "references @a: it is defined later"),
    ("no_kind.toml", "kind", "missing"),
    ("search_metric_newline.toml", "search.metric", "got 'obj\\nective'"),
    ("search_where_control.toml", "search.where", "without control characters"),
    ("dist_nan_bound.toml", "x", "two finite numbers, got [nan, 1.0]"),
    ("slurm_nodes_negative.toml", "slurm.nodes", "must be >= 1"),
])
def test_each_bad_input_fixture_names_file_key_and_expectation(fixture, key, expected):
    msg = problems_of(FIXTURES / fixture)
    assert str(FIXTURES / fixture) in msg
    assert key in msg
    assert expected in msg


def test_unknown_kind_lists_the_valid_kinds_and_suggests_one():
    msg = problems_of(FIXTURES / "unknown_kind.toml")
    assert "valid kinds:" in msg and "train" in msg and "did you mean 'smoke'" in msg.lower()


def test_problems_from_several_files_are_all_reported(sweep_file):
    msg = problems_of(FIXTURES / "wrong_type.toml", FIXTURES / "empty_axis.toml")
    assert "wrong_type.toml" in msg and "empty_axis.toml" in msg


def test_a_table_given_as_a_value_is_explained(sweep_file):
    assert "is a table of settings" in problems_of(sweep_file('kind = "toy"\noptim = 3\n'))


def test_an_empty_grid_is_an_error(sweep_file):
    assert "empty" in problems_of(sweep_file("group = []\n"))


def test_unknown_slurm_setting_is_an_error(sweep_file):
    msg = problems_of(sweep_file('kind = "smoke"\n[slurm]\ngpus = 1\n'))
    assert "slurm.gpus" in msg and "did you mean 'gpus_per_node'" in msg


# ------------------------------------------------------------------------------------------ hostile input (issue 12)
# One fixture per failure mode: (file, dotted key named, words of the message). Each is refused in-process and
# through the real CLI (dry run and real launch): exit 2, one message, no traceback, nothing written, no sweep code run.
HOSTILE = [
    ("slurm_extra_injection.toml", "slurm.extra[0]", "control character"),
    ("slurm_extra_without_equals.toml", "slurm.extra[0]", "expected `name=value`"),
    ("slurm_negative_count.toml", "slurm.cpus_per_task", "must be >= 1"),
    ("slurm_negative_parallelism.toml", "slurm.max_parallel", "must be >= 0"),
    ("slurm_account_newline.toml", "slurm.account", "without control characters"),
    ("kind_undeclared_module.toml", "kind", "unknown job kind 'tests.kinds.payload'"),
    ("kind_stdlib_module.toml", "kind", "unknown job kind 'idlelib.idle'"),
    ("kind_import_fails.toml", "kind", "module 'tests.kinds.broken' (declared in"),
    ("sweep_name_escape.toml", "sweep.name", "got '../../x'"),
    ("group_name_escape.toml", "group[0].name", "got '../up'"),
    ("nan_value.toml", "optim.lr", "expected a finite number"),
    ("inf_in_axis.toml", "optim.weight_decay", "expected a finite number"),
    ("negative_step_seconds.toml", "step_seconds", "step_seconds must be >= 0"),
    ("data_image_size_negative.toml", "data.image_size", "image_size must be >= 1 and <= 8192 (pixels per side), got -3"),
    ("cache_parts_zero.toml", "parts", "parts must be >= 1, got 0"),
    ("score_max_resident_negative.toml", "max_resident_bytes", "max_resident_bytes must be >= 1, got -1"),
    ("probe_max_resident_zero.toml", "max_resident_gb", "max_resident_gb must be > 0, got 0.0"),
    ("score_device_newline.toml", "device", "expected auto, cpu, cuda or cuda:N"),
    ("score_sae_outside_runs.toml", "sae", "neither a cell of this launch nor a run directory"),
    ("score_sae_with_n_prototypes.toml", "n_prototypes", "the sae cell's width is the number of prototypes"),
    ("train_test_split_missing.toml", "data.name", "no test"),
    ("init_from_outside_runs.toml", "init_from", "neither a cell of this launch nor a run directory"),
    ("probe_unknown_activations.toml", "activations", "no cell of this launch has that key"),
    ("ginr_perceiver_options.toml", "context_frac", "model 'ginr' does not use this option"),
    ("runtime_axis.toml", "eval_batch_size", "is a runtime field"),
    ("too_many_cells.toml", "", "more than 200,000 cells"),
    # issue 22: every number bounded, references whole values, a train cell needs validation images
    ("cache_parts_huge.toml", "parts", "parts must be <= 10,000"),
    ("cache_parts_more_than_shards.toml", "parts", "parts must be <= 2, the shards of the largest split"),
    ("slurm_n_hours_huge.toml", "slurm.n_hours", "must be > 0 and <= 8760 (365 days), got 1e+308"),
    ("slurm_tasks_beyond_gpus.toml", "slurm.tasks_per_node", "must be <= gpus_per_node (2)"),  # issue 24
    ("data_builtin_n_huge.toml", "data.builtin_n", "builtin_n must be >= 2 and <= 200,000"),
    ("deep_nesting.toml", "", "nested deeper than 32 levels"),
    ("deep_dotted_key.toml", "", "nested deeper than 32 levels"),
    ("train_val_frac_zero.toml", "data.val_frac", "expected val_frac > 0"),
    ("probe_knn_k_zero.toml", "knn_k", "knn_k must be >= 1, got 0"),
    ("data_negative_seed.toml", "data.split_seed", "split_seed must be >= 0, got -1"),
    ("reference_trailing_dot.toml", "[[group]] down: upstream", "references @up.: an empty name"),
    ("reference_in_list_axis.toml", "[[group]] down: upstream", "a reference is a whole value"),
]
PROJECT = '[tool.nfjobs.kinds]\ntoy = "tests.kinds.toy"\nbroken = "tests.kinds.broken"\n'
"""A pyproject.toml the CLI tests stand in: it declares nothing (only the project of the environment does)."""


def declaring_broken(tmp_path) -> dict[str, str]:
    """The environment of a process in which an installed distribution declares `broken` (tests/kinds/broken.py,
    in the project) beside tests/plugin's `toy`."""
    import os

    dist = tmp_path / "site" / "brokenkind-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenkind\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[nfjobs.kinds]\nbroken = tests.kinds.broken\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture
def declared_broken_kind():
    from nfjobs.kinds import register, unregister

    register("broken", "tests.kinds.broken")
    yield
    unregister("broken")


@pytest.mark.parametrize(("fixture", "key", "expected"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_fixture_is_refused_in_process(fixture, key, expected, tmp_path, monkeypatch, declared_broken_kind):
    import sys

    marker = tmp_path / "payload-imported"
    monkeypatch.setenv("NFJOBS_TEST_PAYLOAD_MARKER", str(marker))
    with pytest.raises(SweepError) as info:
        expand([FIXTURES / fixture], runs_root=tmp_path / "runs")
    msg = str(info.value)
    assert f"{FIXTURES / fixture}: {key}: " in msg if key else str(FIXTURES / fixture) in msg
    assert expected in msg
    assert not marker.exists() and "tests.kinds.payload" not in sys.modules and "idlelib.idle" not in sys.modules
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("dry_run", [pytest.param(True, id="dry-run"),  # the real-launch half is slow: ~45 s
                                     pytest.param(False, id="launch", marks=pytest.mark.slow)])
@pytest.mark.parametrize(("fixture", "key", "expected"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_fixture_is_refused_by_the_cli(fixture, key, expected, dry_run, tmp_path):
    import subprocess
    import sys

    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(PROJECT)
    marker = tmp_path / "payload-imported"
    cmd = [sys.executable, str(ROOT / "launch.py"), "--sweep", str(FIXTURES / fixture), *(["--dry-run"] * dry_run)]
    env = declaring_broken(tmp_path / "env")
    proc = subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=120,
                          env={**env, "NFJOBS_TEST_PAYLOAD_MARKER": str(marker)})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("error:") == 1
    assert (f"{FIXTURES / fixture}: {key}: " if key else str(FIXTURES / fixture)) in proc.stderr
    assert expected in proc.stderr
    assert not marker.exists()
    assert sorted(p.name for p in project.iterdir()) == ["pyproject.toml"]  # no runs/ or logs/ root
    assert sorted(p.name for p in tmp_path.iterdir()) == ["env", "project"]  # nor anything beside it (../../x)


ROOT = FIXTURES.parent.parent


@pytest.mark.parametrize(("flags", "words"), [
    (["--max-parallel", "-5"], "--max-parallel: must be >= 0"),
    (["--sbatch", "comment=x\nhostname"], "--sbatch: the value of 'comment' holds a control character"),
    (["--sbatch", "exclusive"], "--sbatch: expected `name=value`"),
    (["--sbatch", "output=/tmp/elsewhere"], "'output' is set by the launcher"),
    (["--n-hours", "-1"], "--n-hours: must be > 0"),
    (["--gpus-per-node", "-1"], "--gpus-per-node: must be >= 0"),
    (["--slurm-partition", "cpu\n#SBATCH --time=99:00:00"], "--slurm-partition: expected text without control"),
    (["--optim.lr", "nan"], "--optim.lr: expected a finite number"),
    (["--name", "../../x"], "--name: expected letters"),
    (["--max-cells", "3"], "more than 3 cells"),
    (["--max-cells", "-1"], "--max-cells -1: expected a whole number >= 1"),
    (["--cells-per-job", "0"], "--cells-per-job 0: expected a whole number >= 1"),
])
def test_hostile_flags_are_refused_before_anything_is_written(flags, words, tmp_path):
    import subprocess
    import sys

    sweep = tmp_path / "ok.toml"
    sweep.write_text('kind = "toy"\nhead.width = [1, 2, 3, 4]\n')
    runs, logs = tmp_path / "runs", tmp_path / "logs"
    proc = subprocess.run([sys.executable, "launch.py", "--sweep", str(sweep), "--runs-root", str(runs),
                           "--log-root", str(logs), *flags], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert words in proc.stderr and "Traceback" not in proc.stderr
    assert not runs.exists() and not logs.exists()


def test_a_runtime_field_may_be_set_once_or_by_a_typed_flag(sweep_file):
    (cell,) = expand([sweep_file('kind = "toy"\nlog_every = 3\n')], [Override("sleep_s", "0.5")])
    assert (cell.config.log_every, cell.config.sleep_s) == (3, 0.5)


def test_runtime_field_inside_a_zip_is_refused(sweep_file):
    msg = problems_of(sweep_file('kind = "toy"\n[[zip]]\nlog_every = [1, 2]\nhead.width = [3, 4]\n'))
    assert "zip[0].log_every: is a runtime field" in msg


def test_the_cell_limit_counts_every_group_and_is_raised_by_a_flag(sweep_file):
    path = sweep_file('[[group]]\nname = "a"\nkind = "toy"\nhead.width = [1, 2, 3]\n'
                      '[[group]]\nkind = "toy"\nupstream = "@a"\nseed = [0, 1]\n')
    assert "more than 8 cells" in str(pytest.raises(SweepError, expand, [path], max_cells=8).value)
    assert len(expand([path], max_cells=9)) == 9


def test_kind_names_are_declared_not_imported(sweep_file):
    from nfjobs.kinds import UnknownKind, describe_kinds, register

    assert "valid kinds: broken" not in problems_of(sweep_file('kind = "nfjobs.jobs.smoke"\n'))
    assert "unknown job kind 'nfjobs.jobs.smoke'" in problems_of(sweep_file('kind = "nfjobs.jobs.smoke"\n'))
    listing = describe_kinds()
    assert "smoke" in listing and "[built-in]" in listing
    assert "tests.kinds.toy" in listing and "[entry point (nfjobs-test-kinds)]" in listing  # tests/plugin
    with pytest.raises(UnknownKind, match="built in"):
        register("train", "tests.kinds.toy")
    with pytest.raises(UnknownKind, match="not a dotted module path"):
        register("mine", "os; rm -rf")


def test_an_installed_packages_entry_point_declares_a_kind(tmp_path, monkeypatch, sweep_file):
    dist = tmp_path / "site" / "mykinds-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mykinds\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[nfjobs.kinds]\nplugged = tests.kinds.toy\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    from nfjobs.kinds import describe_kinds

    assert "entry point (mykinds)" in describe_kinds()
    cells = expand([sweep_file('kind = "plugged"\nhead.width = [1, 2]\n')])
    assert len(cells) == 2 and all(c.key.startswith("plugged-") for c in cells)


def test_the_kinds_command_lists_what_a_sweep_may_name(tmp_path):
    import subprocess
    import sys

    (tmp_path / "pyproject.toml").write_text(PROJECT)  # the folder it stands in declares nothing
    proc = subprocess.run([sys.executable, str(ROOT / "launch.py"), "kinds"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env=declaring_broken(tmp_path / "env"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [ln.split()[0] for ln in lines] == ["cache", "probe", "sae", "score", "smoke", "train", "broken", "ranked", "toy"]
    assert "A deterministic job kind" in proc.stdout and "[entry point (brokenkind)]" in proc.stdout
    assert str(tmp_path / "pyproject.toml") not in proc.stdout


# ------------------------------------------------------------------------------------------ references
def _finished_toy_cell(run_launch, sweep_file) -> str:
    path = sweep_file('kind = "toy"\nhead.width = 5\n', "up.toml")
    assert run_launch("--sweep", path, "--debug") == 0
    (cell,) = expand([path])
    return cell.key


def test_a_reference_to_a_finished_cell_is_accepted_by_key_or_run_dir(sweep_file, tmp_path, run_launch):
    runs = tmp_path / "runs"
    key = _finished_toy_cell(run_launch, sweep_file)
    for ref in (key, str(runs / key)):
        (cell,) = expand([sweep_file(f'kind = "toy"\nupstream = "{ref}"\n', "down.toml")], runs_root=runs)
        assert cell.deps == (key,)


@pytest.mark.parametrize(("ref", "words"), [
    ("toy-0123456789ab", "no cell of this launch has that key"),
    ("/etc/passwd", "neither a cell of this launch nor a run directory of the runs root"),
    ("../toy-0123456789ab", "neither a cell of this launch nor a run directory"),
])
def test_a_reference_that_is_not_a_finished_cell_is_refused(ref, words, sweep_file, tmp_path):
    msg = problems_of_at(tmp_path / "runs", sweep_file(f'kind = "toy"\nupstream = "{ref}"\n'))
    assert "upstream: " in msg and words in msg


def test_a_failed_cell_is_not_a_valid_reference(sweep_file, tmp_path, run_launch):
    runs = tmp_path / "runs"
    path = sweep_file('kind = "toy"\nfail = true\n', "up.toml")
    with pytest.raises(ValueError):
        run_launch("--sweep", path, "--debug")
    (up,) = expand([path])
    msg = problems_of_at(runs, sweep_file(f'kind = "toy"\nupstream = "{up.key}"\n', "down.toml"))
    assert "is not a finished cell (its result: failed)" in msg


def test_a_run_dir_without_what_the_kind_reads_is_refused(tmp_path, sweep_file, run_launch):
    runs = tmp_path / "runs"
    key = _finished_toy_cell(run_launch, sweep_file)  # finished, but not a train cell: no model.pt
    msg = problems_of_at(runs, sweep_file(f'kind = "train"\ninit_from = "{key}"\n'))
    assert "init_from: " in msg and "holds no model.pt" in msg


def test_single_runs_get_the_same_checks(tmp_path, capsys):
    from nfjobs.commands.single import run_single

    with pytest.raises(SystemExit) as rc:
        run_single("train", ["--init-from", "/etc/passwd", "--runs-root", str(tmp_path / "runs")])
    assert rc.value.code == 2 and "--init_from: " in capsys.readouterr().err and not (tmp_path / "runs").exists()
    with pytest.raises(SystemExit) as rc:
        run_single("train", ["--model", "ginr", "--nce-weight", "0.1", "--runs-root", str(tmp_path / "runs")])
    assert rc.value.code == 2 and "--nce_weight: model 'ginr' does not use this option" in capsys.readouterr().err


def problems_of_at(runs: Path, *paths) -> str:
    with pytest.raises(SweepError) as info:
        expand(list(paths), runs_root=runs)
    return str(info.value)


@pytest.mark.parametrize("name", ["../x", ".hidden", "-rf", "a/b", "x" * 101, "", "tab\tname"])
def test_names_that_could_leave_their_roots_are_refused(name, sweep_file):
    msg = problems_of(sweep_file(f'kind = "smoke"\n[sweep]\nname = {name!r}\n'.replace("'", '"')))
    assert "sweep.name: sweep name: expected letters" in msg


def test_ordinary_names_are_accepted(sweep_file):
    cells = expand([sweep_file('[sweep]\nname = "nf_variants-v2.1"\n[[group]]\nname = "sparse.ft"\nkind = "smoke"\n')])
    assert [(c.sweep, c.group) for c in cells] == [("nf_variants-v2.1", "sparse.ft")]


# ------------------------------------------------------------------------------------------ bounds (issue 22)
def test_a_huge_parts_is_refused_in_under_a_second():
    """parts = 10**9 used to pass validation, then the launch listed 10**9 tasks while its memory grew."""
    import time

    start = time.perf_counter()
    msg = problems_of(FIXTURES / "cache_parts_huge.toml")
    assert time.perf_counter() - start < 1.0
    assert "parts: " in msg and "parts must be <= 10,000" in msg


def test_parts_up_to_the_shards_is_accepted(sweep_file):
    (cell,) = expand([sweep_file('kind = "cache"\nsource = "original"\nparts = 2\n')])
    assert cell.config.parts == 2


def test_a_config_names_the_field_it_refuses_exactly():
    """The dotted key comes from the config (InvalidField.field), not from the first word of its message."""
    from nfjobs import typed
    from nfjobs.jobs.probe import Config as ProbeConfig

    with pytest.raises(typed.FieldError) as info:
        typed.build(ProbeConfig, {"head_epochs": 0})
    assert info.value.key == "head_epochs"
    with pytest.raises(typed.FieldError) as info:
        typed.build(ProbeConfig, {"data.val_frac": 0.7, "data.test_frac": 0.5} if "data.val_frac" in
                    typed.leaf_fields(ProbeConfig) else {"field_lr": -1.0})
    assert info.value.key in ("data.test_frac", "field_lr")
    from nfjobs.jobs.train import Config as TrainConfig

    for flat, key in [({"data.test_frac": 0.95}, "data.test_frac"), ({"optim.warmup_steps": -1}, "optim.warmup_steps"),
                      ({"data.workers": 10**6}, "data.workers"), ({"data.image_size": 10**9}, "data.image_size")]:
        with pytest.raises(typed.FieldError) as info:
            typed.build(TrainConfig, flat)
        assert info.value.key == key, (flat, info.value.key)


@pytest.mark.parametrize(("text", "words"), [
    ("a = " + "[" * 200 + "]" * 200, "nested deeper than 32 levels"),
    ("a = " + "{b = " * 200 + "1" + "}" * 200, "nested deeper than 32 levels"),
    ("a" + ".a" * 200 + " = 1", "nested deeper than 32 levels"),
])
def test_deep_toml_is_one_line_not_a_recursion_error(text, words, sweep_file):
    msg = problems_of(sweep_file(text + "\n"))
    assert words in msg and len(msg.splitlines()) == 1


def test_brackets_inside_strings_and_comments_do_not_count_as_nesting(sweep_file):
    (cell,) = expand([sweep_file('kind = "toy"\n# ' + "[" * 100 + '\ndata.root = "' + "[{" * 100 + '"\n'
                                 "data.traits_file = '" + "[" * 50 + "'\n")])
    assert cell.config.data.root == "[{" * 100


def test_a_sweep_file_that_is_not_utf8_is_one_line(sweep_file, tmp_path):
    path = tmp_path / "binary.toml"
    path.write_bytes(b'kind = "toy"\nupstream = "\xff\xfe"\n')
    msg = problems_of(path)
    assert f"{path}: not UTF-8 text" in msg


@pytest.mark.parametrize(("value", "words"), [
    ('"@up."', "references @up.: an empty name"),
    ('"@up..head.width"', "references @up..head.width: an empty name"),
    ('"@"', "'@' names no group"),
    ('["a", "@up"]', "'@up' inside a list: a reference is a whole value"),
])
def test_malformed_or_listed_references_are_refused(value, words, sweep_file):
    msg = problems_of(sweep_file(f'[[group]]\nname = "up"\nkind = "toy"\n[[group]]\nname = "down"\nkind = "toy"\n'
                                 f"upstream = {value}\n"))
    assert "down: upstream: " in msg and words in msg


def test_a_reference_inside_a_zip_is_refused(sweep_file):
    msg = problems_of(sweep_file('[[group]]\nname = "up"\nkind = "toy"\n[[group]]\nname = "down"\nkind = "toy"\n'
                                 '[[group.zip]]\nupstream = ["@up", "x"]\nhead.width = [1, 2]\n'))
    assert "a reference is a whole value" in msg
