"""The probe job's finetune / two_stage TDSM modes: the field is loaded, trained with the head, and checked
before any device work."""

import pytest
import torch

from nfjobs.config import DataConfig
from nfjobs.context import Context
from nfjobs.jobs import probe
from nfjobs.models import trained
from nfjobs.models.train_config import TrainConfig
from nfjobs.probes.tdsm_config import TdsmOptions
from tests.toy_field import ToyField


@pytest.fixture
def field(tmp_path, monkeypatch):
    """A fake train run dir `train-x` whose `load_trained` gives a stand-in field trained on 40 builtin images."""
    run_dir = tmp_path / "runs" / "train-x"
    run_dir.mkdir(parents=True)
    (run_dir / "model.pt").write_bytes(b"weights")
    torch.manual_seed(0)
    toy = ToyField(n_latents=4, latent_dim=8, hidden=8).eval()
    tc = TrainConfig(data=DataConfig(builtin_n=40, val_frac=0.25), nce_weight=0.1)
    monkeypatch.setattr(trained, "load_trained", lambda d, device: (toy, tc))
    return toy


def _run(tmp_path, mode, **kw):
    cfg = probe.Config(probe="tdsm_gap", tdsm_mode=mode, checkpoint="train-x", tdsm=TdsmOptions(every=2),
                       epochs=1, head_epochs=1, batch_size=10, **kw)
    assert probe.check(cfg) == [] and probe.depends_on(cfg) == ["train-x"]
    (row,) = probe.run(cfg, Context(key=f"p-{mode}", kind="probe", runs_root=tmp_path / "runs"))
    return row


@pytest.mark.parametrize("mode", ["finetune", "two_stage"])
def test_modes_train_the_field(field, tmp_path, mode):
    before = {n: p.detach().clone() for n, p in field.named_parameters()}
    row = _run(tmp_path, mode)
    assert any(not torch.equal(p, before[n]) for n, p in field.named_parameters())
    assert row["tdsm_mode"] == mode and row["representation"] == "perceiver-nce-tdsm"
    assert (row["context"], row["n_train"], row["n_val"], row["n_tokens"], row["d"]) == ("full", 30, 10, 1024, 2)
    assert 0 <= row["accuracy"] <= 1 and row["train_s"] > 0


def test_train_images_takes_the_first_training_images_of_the_fields_dataset(field, tmp_path):
    row = _run(tmp_path, "finetune", train_images=12)
    assert (row["n_train"], row["n_val"]) == (12, 10)


def test_two_stage_runs_head_then_field(field, tmp_path, monkeypatch):
    trains_field = []  # per training forward: did the field's weights take gradients?
    encode = field.encode

    def spy(coords, rgb):
        if torch.is_grad_enabled():
            trains_field.append(next(field.parameters()).requires_grad)
        return encode(coords, rgb)

    monkeypatch.setattr(field, "encode", spy)
    _run(tmp_path, "two_stage")
    assert trains_field == [False] * 3 + [True] * 3  # 30 images, batches of 10: one epoch per stage


def test_check_before_device_work(tmp_path):
    def problems(**kw):
        return {k for k, _ in probe.check(probe.Config(probe="tdsm_gap", tdsm_mode="finetune", **kw))}

    assert problems() == {"checkpoint"}
    assert problems(checkpoint=str(tmp_path)) == {"checkpoint"}  # a run dir without model.pt
    assert problems(checkpoint="train-x", activations="cache-x") == {"activations"}
    assert {k for k, _ in probe.check(probe.Config(probe="linear", tdsm_mode="two_stage", checkpoint="t"))} == {"probe"}
    assert probe.check(probe.Config(activations="cache-x", checkpoint="train-x"))[0][0] == "checkpoint"
    assert probe.check(probe.Config(activations="cache-x", train_images=10))[0][0] == "train_images"
    with pytest.raises(ValueError, match="checkpoint"):
        probe.run(probe.Config(probe="tdsm_gap", tdsm_mode="finetune"), Context("p", "probe", tmp_path))
