"""Probes on features: small transformer, torch logistic regression (vs scikit-learn), distance-weighted k-NN."""

import numpy as np
import pytest
import torch

from nfjobs.probes.fit import fit
from nfjobs.probes.linear import knn, logistic_regression
from nfjobs.probes.transformer import SmallTransformer


def _blobs(n, d=8, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=torch.Generator().manual_seed(42)) * 3
    y = torch.randint(0, classes, (n,), generator=g)
    return centres[y] + torch.randn(n, d, generator=g), y


def test_transformer_shapes_and_learning():
    x, y = _blobs(96)
    tokens = x[:, None, :] + 0.1 * torch.randn(96, 5, 8)  # (N, L=5, d=8)
    m = SmallTransformer(d_in=8, n_tokens=5, n_classes=3, d_model=32)
    assert m(tokens[:2]).shape == (2, 3)
    res = fit(m, tokens[:64], y[:64], tokens[64:], y[64:], epochs=8, lr=3e-3, batch_size=16, weight_decay=0.0,
              seed=0, device=torch.device("cpu"))
    assert res.accuracy > 0.8 and res.train_s > 0


def test_logistic_regression_matches_sklearn():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x, y = _blobs(300, seed=1)
    xt, yt, xv, yv = x[:200], y[:200], x[200:], y[200:]
    ours = logistic_regression(xt, yt, xv, yv, n_classes=3, c=0.1)
    scaler = StandardScaler().fit(xt.numpy())
    ref = LogisticRegression(C=0.1, max_iter=500).fit(scaler.transform(xt.numpy()), yt.numpy())
    assert ours.accuracy == pytest.approx(ref.score(scaler.transform(xv.numpy()), yv.numpy()), abs=0.02)


def test_knn_matches_sklearn():
    from sklearn.neighbors import KNeighborsClassifier

    x, y = _blobs(300, seed=2)
    x = x + torch.randn_like(x) * 2
    ours = knn(x[:200], y[:200], x[200:], y[200:], n_classes=3, k=20, chunk=33)
    ref = KNeighborsClassifier(n_neighbors=20, weights="distance").fit(x[:200].numpy(), y[:200].numpy())
    assert ours.accuracy == pytest.approx(ref.score(x[200:].numpy(), y[200:].numpy()), abs=1e-9)
    assert np.isnan(ours.train_accuracy)


# ---------------------------------------------------------------- the probe job on real caches
from nfjobs.config import DataConfig  # noqa: E402
from nfjobs.context import Context  # noqa: E402
from nfjobs.jobs import cache, probe  # noqa: E402
from nfjobs.probes.tdsm_config import TdsmOptions  # noqa: E402


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    """An `original` cache and a `tdsm` cache (stand-in field) of 60 builtin images; the field's run dir is
    deleted afterwards and loading any field fails, so probes can only read the shards."""
    from tests.toy_field import ToyField

    runs = tmp_path_factory.mktemp("runs")
    field_dir = runs / "train-x"
    field_dir.mkdir()
    (field_dir / "model.pt").write_bytes(b"w")
    torch.manual_seed(0)
    toy = ToyField(n_latents=4, latent_dim=8, hidden=8).eval()
    mp = pytest.MonkeyPatch()
    mp.setattr(cache, "load_field", lambda d, device: (toy, "toy"))
    data = DataConfig(builtin_n=60, val_frac=0.25)
    for key, extra in [("orig", dict(source="original")),
                       ("tdsm", dict(source="tdsm", checkpoint=str(field_dir), tdsm=TdsmOptions(every=1)))]:
        cache.run(cache.Config(data=data, shard_size=16, **extra), Context(key=key, kind="cache", runs_root=runs))
    for f in field_dir.iterdir():
        f.unlink()
    field_dir.rmdir()

    def no_model(*_args, **_kw):
        raise AssertionError("a probe tried to load a model")

    mp.setattr(cache, "load_field", no_model)
    yield runs
    mp.undo()


@pytest.mark.parametrize("kind,key", [("transformer", "orig"), ("linear", "orig"), ("knn", "orig"),
                                      ("tdsm_gap", "tdsm"), ("tdsm_gmp", "tdsm"), ("tdsm_cnn", "tdsm"),
                                      ("tdsm_attn", "tdsm"), ("linear", "tdsm")])
def test_probe_job_reads_cache_only(caches, kind, key):
    cfg = probe.Config(activations=key, probe=kind, epochs=2, batch_size=16, d_model=32)
    assert probe.depends_on(cfg) == [key] and probe.check(cfg) == []
    (row,) = probe.run(cfg, Context(key=f"p-{kind}-{key}", kind="probe", runs_root=caches))
    assert 0.0 <= row["accuracy"] <= 1.0 and row["train_s"] >= 0
    assert row["representation"] == ("original" if key == "orig" else "toy-tdsm") and row["n_val"] == 15
    assert row["context"] == "full"


def test_probe_job_errors(caches, tmp_path):
    assert probe.check(probe.Config())[0][0] == "activations"
    assert "no cached train or val" in probe.check(probe.Config(activations=str(tmp_path)))[0][1]
    with pytest.raises(ValueError, match="needs a tdsm cache"):
        probe.run(probe.Config(activations="orig", probe="tdsm_gap"), Context("p", "probe", caches))


def test_report_table_and_chart(tmp_path):
    import polars as pl

    from nfjobs.reports.plots import probe_accuracy
    from nfjobs.reports.probes import summary, wide

    rows = pl.DataFrame([
        {"kind": "probe", "status": "ok", "representation": r, "context": c, "probe": p, "accuracy": a, "train_s": 1.0}
        for r, a in (("original", 0.4), ("perceiver", 0.6)) for c in ("full", "sparse") for p in ("linear", "knn")
    ])
    table = summary(rows, {})
    assert table.height == 8 and table["n"].to_list() == [1] * 8
    assert wide(table).columns == ["representation", "full/knn", "full/linear", "sparse/knn", "sparse/linear"]
    probe_accuracy(table, tmp_path / "acc.png")
    from PIL import Image

    assert Image.open(tmp_path / "acc.png").size[0] > 100


def test_report_names_tdsm_modes():
    import polars as pl

    from nfjobs.reports.probes import summary

    rows = pl.DataFrame([
        {"kind": "probe", "status": "ok", "representation": "perceiver-tdsm", "context": "full", "probe": p,
         "tdsm_mode": m, "accuracy": 0.5, "train_s": 1.0}
        for p, m in (("tdsm_gap", "frozen"), ("tdsm_gap", "finetune"), ("tdsm_gap", "two_stage"), ("linear", None))
    ])
    assert summary(rows, {})["probe"].to_list() == ["linear", "tdsm_gap", "tdsm_gap+finetune", "tdsm_gap+two_stage"]
