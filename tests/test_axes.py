"""One model of a sweep's axes: the manifest records per group the config fields its cells vary (references
resolved to the referenced cells' axes, seeds pooled over); `results.axes` / `results.swept` read them back, and
compute them from the result rows for a manifest without them."""

import json

from nfjobs import results
from nfjobs.store import manifest


def launch(run_launch, sweep_file, text: str, tmp_path, name: str = "s"):
    path = sweep_file(text, f"{name}.toml")
    assert run_launch("--sweep", str(path), "--debug") == 0
    return tmp_path / "runs"


def test_a_grid_records_its_fields_and_nothing_constant(run_launch, sweep_file, tmp_path):
    runs = launch(run_launch, sweep_file, 'kind = "toy"\noptim.lr = [1e-3, 1e-4]\nhead.width = [4, 8]\n'
                  'head.act = "gelu"\n', tmp_path)
    found = results.axes("s", runs)
    assert list(found) == ["main"] and found["main"].kind == "toy"
    assert set(found["main"].axes) == {"optim.lr", "head.width"} and not found["main"].seeded
    swept = results.swept("s", runs).sort("optim.lr", "head.width")
    assert swept.select("optim.lr", "head.width").rows() == [(1e-4, 4), (1e-4, 8), (1e-3, 4), (1e-3, 8)]


def test_a_zip_is_two_axes_that_vary_together_and_a_list_field_is_one_value(run_launch, sweep_file, tmp_path):
    runs = launch(run_launch, sweep_file, 'kind = "toy"\nhead.dims = [[1], [1, 2, 3]]\n[[zip]]\n'
                  'optim.lr = [1e-3, 1e-4]\nhead.width = [4, 8]\n', tmp_path)
    assert set(results.axes("s", runs)["main"].axes) == {"head.dims", "optim.lr", "head.width"}
    assert set(results.swept("s", runs)["head.dims"].to_list()) == {"[1, 2, 3]", "[1]"}


def test_groups_have_their_own_axes(run_launch, sweep_file, tmp_path):
    runs = launch(run_launch, sweep_file, '[[group]]\nname = "a"\nkind = "toy"\nhead.width = [4, 8]\n'
                  '[[group]]\nname = "b"\nkind = "toy"\nhead.width = 16\nhead.act = ["relu", "gelu"]\n'
                  '[[group]]\nname = "c"\nkind = "toy"\noptim.lr = 0.5\n', tmp_path)
    found = results.axes("s", runs)
    assert {g: a.axes for g, a in found.items()} == {"a": ("head.width",), "b": ("head.act",), "c": ()}


def test_a_reference_is_resolved_to_the_referenced_cells_axes(run_launch, sweep_file, tmp_path):
    runs = launch(run_launch, sweep_file, '[[group]]\nname = "up"\nkind = "toy"\nhead.width = [4, 8]\n'
                  '[[group]]\nname = "down"\nkind = "toy"\nupstream = "@up"\nhead.act = ["relu", "gelu"]\n'
                  '[[group]]\nname = "deeper"\nkind = "toy"\nupstream = "@down"\n', tmp_path)
    found = results.axes("s", runs)
    assert found["down"].axes == ("head.act", "upstream.head.width")
    assert found["deeper"].axes == ("upstream.head.act", "upstream.upstream.head.width")
    swept = results.swept("s", runs).filter(group="down")
    assert sorted(swept.select("head.act", "upstream.head.width").rows()) == [
        ("gelu", 4), ("gelu", 8), ("relu", 4), ("relu", 8)]


def test_seeds_are_pooled_over_not_an_axis(run_launch, sweep_file, tmp_path):
    runs = launch(run_launch, sweep_file, '[[group]]\nname = "seeds"\nkind = "toy"\nseed = [0, 1, 2]\n'
                  'head.width = [4, 8]\n[[group]]\nname = "derived"\nkind = "toy"\nhead.width = [4, 8]\n'
                  '[[group]]\nname = "down"\nkind = "toy"\nupstream = "@seeds"\n', tmp_path)
    found = results.axes("s", runs)
    assert found["seeds"].axes == ("head.width",) and found["seeds"].seeded
    assert found["derived"].axes == ("head.width",) and not found["derived"].seeded  # derived seeds differ per cell
    assert found["down"].axes == ("upstream.head.width",) and found["down"].seeded  # reads 3 seeds per width


def test_a_relaunch_with_another_value_adds_the_axis(run_launch, sweep_file, tmp_path):
    runs = launch(run_launch, sweep_file, 'kind = "toy"\noptim.lr = 1e-3\n', tmp_path)
    assert results.axes("s", runs)["main"].axes == ()
    launch(run_launch, sweep_file, 'kind = "toy"\noptim.lr = 1e-4\n', tmp_path)
    assert results.axes("s", runs)["main"].axes == ("optim.lr",)
    assert sorted(results.swept("s", runs)["optim.lr"].to_list()) == [1e-4, 1e-3]


def test_a_manifest_without_axes_gets_them_from_the_rows(run_launch, sweep_file, tmp_path):
    runs = launch(run_launch, sweep_file, '[[group]]\nname = "up"\nkind = "toy"\nhead.width = [4, 8]\n'
                  '[[group]]\nname = "down"\nkind = "toy"\nupstream = "@up"\nseed = [0, 1]\n', tmp_path)
    recorded = results.axes("s", runs)
    data = manifest.read(runs, "s")
    data.pop("groups")
    for info in data["cells"].values():
        info.pop("values")
    manifest.write(runs, data)
    assert "values" not in json.dumps(manifest.read(runs, "s")["cells"])
    assert results.axes("s", runs) == recorded
    assert recorded["down"].axes == ("upstream.head.width",) and recorded["down"].seeded
