"""Sweep semantics (docs/sweeps.md): grids, paired axes, nested tables, groups, references, precedence, seeds,
keys, and one fixture file per failure mode in tests/sweeps/."""

from pathlib import Path

import pytest

from nfjobs.sweep import Override, SweepError, cell_key, expand

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
    ("invalid_value.toml", "", "lr must be > 0"),
    ("bad_reference.toml", "upstream", "references @a: it is defined later"),
    ("no_kind.toml", "kind", "missing"),
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
