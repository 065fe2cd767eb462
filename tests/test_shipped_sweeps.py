"""Every sweep in configs/sweeps/ validates, and every CPU-sized one runs end to end through launch.py."""

import json
import re
from pathlib import Path

import polars as pl
import pytest

from nfjobs import commands as launch
from data_fixtures import write_trait_folder
from nfjobs import results, sweep
from nfjobs.store import rows as stored
from nfjobs.store.layout import run_dir

ROOT = Path(__file__).parent.parent
SWEEPS = sorted((ROOT / "configs" / "sweeps").glob("*.toml"))
CPU_SIZED = ["quickstart.toml", "nf_variants_tiny.toml", "ginr_tiny.toml", "jepa_tiny.toml",
             "representations_tiny.toml", "prototypes_tiny.toml", "prototypes_folder_tiny.toml",
             "traits_ginr_cifar_tiny.toml"]

NO_SEED_TABLES = ["quickstart.toml", "nf_variants_tiny.toml"]
"""Perceiver fields only: no seed table reads them (`launch.py tables` says so)."""


def _cifar_stand_in(tmp_path: Path) -> list[sweep.Override]:
    root = tmp_path / "data" / "cifar-10-batches-py"
    root.mkdir(parents=True, exist_ok=True)  # the key test's fixed root may be made by two workers at once
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "batches.meta"):
        (root / name).touch()
    return [sweep.Override("data.root", str(tmp_path / "data"))]


def _folder_stand_in(tmp_path: Path, monkeypatch) -> None:
    """The image-folder sweeps read data/images/ (and weights/) under the working directory: write them there."""
    monkeypatch.chdir(tmp_path)
    write_trait_folder(tmp_path / "data" / "images")
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "vit_b_16.pth").touch()
    _cifar10_folder(tmp_path / "data" / "cifar10_folder")


def _cifar10_folder(out: Path) -> None:
    """data/cifar10_folder/ as scripts/cifar10_folder.py writes it, from a small CIFAR-10 fixture."""
    import importlib.util

    from data_fixtures import write_cifar

    spec = importlib.util.spec_from_file_location("cifar10_folder", ROOT / "scripts" / "cifar10_folder.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.write(str(write_cifar(out.parent / "cifar_batches", n_per_batch=12, test=False)), out)


def _finished_field(runs: Path) -> list[sweep.Override]:
    """traits_ginr_cifar.toml reads a field trained elsewhere (`--checkpoint`): a finished train cell stand-in."""
    field = run_dir(runs, "train-0123456789ab")
    field.ensure()
    field.model.touch()
    stored.write_rows(field.result, [{"status": "ok"}])
    return [sweep.Override("checkpoint", field.key)]


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_every_shipped_sweep_validates(path, tmp_path, monkeypatch):
    # the CIFAR-10 / CUB sweeps name a dataset root; point it at a fixture-free stand-in that passes the check
    overrides = _cifar_stand_in(tmp_path) if 'name = "cifar10"' in path.read_text() else []
    if "imagefolder" in path.read_text():
        _folder_stand_in(tmp_path, monkeypatch)
    if 'checkpoint = ""' in path.read_text():
        overrides += _finished_field(tmp_path / "runs")
    cells = sweep.expand([path], overrides)
    assert cells


SEARCHES = ["search_tiny.toml"]
"""Shipped [search] sweeps: Optuna chooses their cells, so they have no fixed keys to pin and are not in CPU_SIZED
(a CPU run of search_tiny: its 6 trials took 3 min on the loaded 2-core VM, 2026-12-07); each validates at the ends
of its ranges and says what it searches."""


@pytest.mark.parametrize("name", SEARCHES)
def test_a_shipped_search_validates_and_its_dry_run_says_what_it_searches(name, tmp_path, capsys):
    path = ROOT / "configs" / "sweeps" / name
    found = sweep.search_of([path])
    assert found is not None and found.space and found.trials >= found.per_round
    assert launch.main(["--sweep", str(path), "--dry-run", "--runs-root", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"search {found.sweep}: {found.direction} {found.metric} over ")
    assert f"0 of {found.trials} trials ended so far" in out and not (tmp_path / "runs").exists()


SEED_004 = ["prototypes.toml", "prototypes_tiny.toml", "prototypes_folder.toml", "prototypes_folder_tiny.toml",
            "traits_ginr_cifar.toml", "traits_ginr_cifar_tiny.toml"]


@pytest.mark.parametrize("name", SEED_004)
def test_seed_004_sweeps_train_every_sae_in_its_own_cell_one_chain_per_cache(name, tmp_path, monkeypatch, capsys):
    path = ROOT / "configs" / "sweeps" / name
    overrides = []
    if "imagefolder" in path.read_text():
        _folder_stand_in(tmp_path, monkeypatch)
    if 'checkpoint = ""' in path.read_text():
        overrides += _finished_field(tmp_path / "runs")
    cells = sweep.expand([path], overrides, runs_root=tmp_path / "runs")
    scores, saes = [c for c in cells if c.kind == "score"], [c for c in cells if c.kind == "sae"]
    assert saes and all(bool(c.config.sae) == (c.config.scorer == "sae") for c in scores)  # none trains one inside
    widths = {c.config.n_prototypes for c in scores if c.config.scorer != "sae"}
    sources = {c.config.activations for c in scores}
    # one sae cell per cache and prototype count the other scorers offer
    assert {(c.config.activations, c.config.width) for c in saes} == {(a, w) for a in sources for w in widths}
    assert len(saes) == len(sources) * len(widths)
    n_train = sorted(c.config.n_train for c in scores if c.config.scorer == "random" and c.config.n_prototypes ==
                     min(widths) and c.config.activations == saes[0].config.activations)
    for s in saes:  # read by one score cell per n_train, on the cache it was trained on, after it has ended
        readers = [c for c in scores if c.config.sae == s.key]
        assert sorted(c.config.n_train for c in readers) == n_train
        for c in readers:
            assert c.config.activations == s.config.activations and set(c.deps) == {s.key, *s.deps}
            assert c.stage > s.stage
    # what --dry-run prints: the sae cells counted as a kind of their own
    flags = [arg for o in overrides for arg in (f"--{o.key}", o.text)]
    assert launch.main(["--sweep", str(path), "--dry-run", "--runs-root", str(tmp_path / "runs"), *flags]) == 0
    assert re.search(rf"^ +sae +{len(saes)} to run", capsys.readouterr().out, re.M)


@pytest.mark.slow
@pytest.mark.parametrize("name", CPU_SIZED)
def test_cpu_sized_sweeps_run_end_to_end(name, tmp_path, monkeypatch, run_launch, request):
    path = ROOT / "configs" / "sweeps" / name
    if "imagefolder" in path.read_text():
        _folder_stand_in(tmp_path, monkeypatch)
    runs = tmp_path / "runs"
    assert run_launch("--sweep", path, "--debug") == 0
    df = results.load(path, runs).collect()
    n_cells = len(sweep.expand([path]))
    assert df["key"].n_unique() == n_cells and set(df["status"]) == {"ok"}
    if name == "representations_tiny.toml":
        from nfjobs.reports.probes import summary

        table = summary(df, results.axes(path, runs))
        assert set(table["context"]) == {"full", "sparse"}
        assert {"knn", "linear", "transformer"} <= set(table["probe"])
        assert table["representation"].n_unique() >= 5
    if name in ("quickstart.toml", "nf_variants_tiny.toml"):
        val = df.filter(pl.col("split") == "val")
        assert val["psnr"].is_finite().all() and (val["psnr"] > 5).all()
    if name == "quickstart.toml":  # the README's first command shows a field that learns, not a flat line
        curve = df.filter((pl.col("split") == "val_curve") & (pl.col("eval_context_frac") == 1.0))
        for key in curve["key"].unique():
            psnr = curve.filter(pl.col("key") == key).sort("epoch")["psnr"]
            assert psnr[-1] > psnr[0] + 2.0, psnr.to_list()
    if name in ("prototypes_tiny.toml", "prototypes_folder_tiny.toml", "traits_ginr_cifar_tiny.toml"):
        summary = df.filter(pl.col("row_type") == "summary")
        by_sae = summary.filter(pl.col("scorer") == "sae")  # scored by the sweep's sae cells, at their widths
        assert set(by_sae["sae"]) == set(df.filter(pl.col("kind") == "sae")["key"])
        assert set(by_sae["prototypes"]) == set(summary.filter(pl.col("scorer") == "pca")["n_prototypes"])
    if name == "prototypes_folder_tiny.toml":
        summary = df.filter(pl.col("row_type") == "summary")
        assert set(summary["scorer"]) == {"random", "kmeans", "pca", "sae"} and len(summary) == 32
        assert (summary["n_test_images"] == 12).all() and summary["map"].is_finite().all()
        for key in summary["key"]:
            assert (runs / key / "pictures" / "index.html").is_file()
    if name == "traits_ginr_cifar_tiny.toml":
        import json

        summary = df.filter(pl.col("row_type") == "summary")
        assert set(summary["scorer"]) == {"random", "kmeans", "pca", "sae"} and len(summary) == 16
        assert (summary["n_test_images"] == 6).all() and summary["map"].is_finite().all()
        traits = df.filter(pl.col("row_type") == "trait")
        assert set(traits["trait_name"]) == {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                             "horse", "ship", "truck"}
        cache_key = next(k for k in df["key"].unique() if k.startswith("cache-"))
        meta = json.loads((runs / cache_key / "val" / "meta.json").read_text())
        assert meta["token_grid"] == [8, 8] and meta["token_cells"] == list(range(64))  # one LP per 4x4 patch
        for key in summary["key"]:
            assert len(list((runs / key / "pictures").glob("trait_*.png"))) == 10
    if name != "ginr_tiny.toml":  # its page and tables are checked in the quick loop (test_tiny_sweep_pages)
        from test_tiny_sweep_pages import check_page, check_tables

        if name not in NO_SEED_TABLES:
            check_tables(path, runs, tmp_path / "tables", run_launch)
        check_page(path, runs, tmp_path, request.getfixturevalue("chromium"))  # skips without a browser, at the end


def test_the_representation_comparison_probes_the_same_four_fields_nf_variants_trains(tmp_path):
    overrides = _cifar_stand_in(tmp_path)
    variants = {c.key for c in sweep.expand([ROOT / "configs/sweeps/nf_variants.toml"], overrides)}
    fields = {c.key for c in sweep.expand([ROOT / "configs/sweeps/representations.toml"], overrides)
              if c.kind == "train"}
    assert len(variants) == 4 and fields == variants


def test_the_short_gpu_session_copies_still_apply_and_share_their_train_cells(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "sw"
    proc = subprocess.run([sys.executable, str(ROOT / "bench/short_sweeps.py"), "--root", "/gpu/cifar", "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    text = (out / "representations.toml").read_text()
    assert text.count("n_train = 10000") == 6 and text.count('root = "/gpu/cifar"') == 10
    assert text.count("train_images = 10000") == 1  # the TDSM field probes train on the caches' images
    assert "epochs = 40" not in (out / "nf_variants.toml").read_text()


KEYS_BEFORE = json.loads((ROOT / "tests" / "fixtures" / "shipped_cell_keys.json").read_text())
"""Every shipped sweep's cell keys as the code before the core moved (1d11564) computed them: a finished result
is found again by every later version of the launcher."""


@pytest.mark.parametrize("name", sorted(KEYS_BEFORE))
def test_the_cell_keys_of_every_shipped_sweep_are_those_before_the_core_moved(name, tmp_path, monkeypatch):
    path = ROOT / "configs" / "sweeps" / name
    text = path.read_text()
    overrides = [sweep.Override(k, tuple(v) if isinstance(v, list) else v) for k, v in KEYS_BEFORE[name]["overrides"]]
    cifar = Path(next((v for k, v in KEYS_BEFORE[name]["overrides"] if k == "data.root"), "/nonexistent"))
    if 'name = "cifar10"' in text and not (cifar / "cifar-10-batches-py" / "batches.meta").exists():
        _cifar_stand_in(cifar.parent)  # the same absolute root the keys were made with: it is part of them
    if "imagefolder" in text:
        _folder_stand_in(tmp_path, monkeypatch)
    if 'checkpoint = ""' in text:
        _finished_field(tmp_path / "runs")
    cells = sweep.expand([path], overrides, runs_root=tmp_path / "runs")
    assert [[c.group, c.key] for c in cells] == KEYS_BEFORE[name]["cells"]
