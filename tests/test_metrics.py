"""Metrics while a cell runs: metrics.jsonl records (exact content, attempts across a requeue, torn lines),
`results.load_metrics`, the TensorBoard writer, a missing tracker package, progress lines with rate and ETA."""

import io
import json
from dataclasses import replace
from pathlib import Path

import pytest

from nfjobs import results
from nfjobs.config import DataConfig
from nfjobs.jobs import smoke
from nfjobs.metrics import METRICS_FILE, RECORD_FIELDS, Progress
from nfjobs.worker import CellSpec, run_cell


def lines(runs: Path, key: str) -> list[dict]:
    return [json.loads(x) for x in (runs / key / METRICS_FILE).read_text().splitlines()]


def without_times(recs: list[dict]) -> list[dict]:
    drop = {"time", "wall_s", "host", "slurm_job_id", "slurm_restarts"}
    return [{k: v for k, v in r.items() if k not in drop} for r in recs]


def test_smoke_records_every_step_and_a_requeue_appends_a_new_attempt(tmp_path, make_context):
    with pytest.raises(RuntimeError, match="on purpose"):
        smoke.run(smoke.Config(steps=3, fail_at_step=2), ctx := make_context("smoke", "s"))
    ctx.close()
    ctx = make_context("smoke", "s")  # the requeued process: resumes at step 2
    assert smoke.run(smoke.Config(steps=3), ctx)[0]["starts"] == 2
    ctx.close()
    recs = lines(tmp_path, "s")
    assert without_times(recs) == [
        {"event": "attempt", "attempt": 1},
        {"step": 1, "phase": "step", "attempt": 1, "metrics": {"starts": 1}},
        {"step": 2, "phase": "step", "attempt": 1, "metrics": {"starts": 1}},
        {"event": "attempt", "attempt": 2},
        {"step": 3, "phase": "step", "attempt": 2, "metrics": {"starts": 2}},
    ]
    walls = [r["wall_s"] for r in recs if "wall_s" in r]
    assert walls == sorted(walls) and all(w >= 0 for w in walls)  # the clock continues over the requeue
    table = results.load_metrics(tmp_path, "s")
    assert table.columns == ["step", "wall_s", "time", "phase", "attempt", "starts"]
    assert table.select("step", "attempt", "starts").rows() == [(1, 1, 1), (2, 1, 1), (3, 2, 2)]


def test_toy_kind_through_the_runner(tmp_path):
    from kinds import toy

    spec = CellSpec(kind="toy", config=toy.Config(seed=3), key="t", sweep="s", group="g",
                    runs_root=str(tmp_path), provenance={})
    run_cell(spec)
    assert without_times(lines(tmp_path, "t")) == [
        {"event": "attempt", "attempt": 1},
        {"step": 0, "phase": "toy", "attempt": 1, "metrics": {"metric": 1e-3 * 8 + 3}},
    ]


def test_a_torn_last_line_is_skipped_and_the_next_record_starts_on_its_own_line(tmp_path, make_context):
    ctx = make_context("smoke", "k")
    ctx.log_metrics(1, {"a": 1.5})
    ctx.close()
    with open(tmp_path / "k" / METRICS_FILE, "a") as f:
        f.write('{"step": 2, "wall_s": 3')  # killed mid-write
    ctx = make_context("smoke", "k")
    ctx.log_metrics(3, {"a": 2.5, "b": True})
    ctx.close()
    table = results.load_metrics(tmp_path, "k")
    assert table.select("step", "attempt", "a", "b").rows() == [(1, 1, 1.5, None), (3, 2, 2.5, 1)]
    assert results.load_metrics(tmp_path, "none").is_empty()


def test_bad_metrics_are_errors(tmp_path, make_context):
    ctx = make_context("smoke", "k")
    with pytest.raises(ValueError, match="reserved"):
        ctx.log_metrics(0, {"wall_s": 1.0})
    with pytest.raises(TypeError, match="must be a number"):
        ctx.log_metrics(0, {"name": "text"})
    ctx.close()


def test_metrics_due_bounds_the_rate(tmp_path, make_context):
    ctx = make_context("smoke", "k", metrics_every_s=3600)
    assert ctx.metrics_due("step")
    ctx.log_metrics(0, {"x": 1}, phase="step")
    assert not ctx.metrics_due("step") and ctx.metrics_due("epoch")
    ctx.close()


def test_tensorboard_writer_writes_event_files(tmp_path, make_context):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ctx = make_context("smoke", "k", trackers="tensorboard")
    for step in range(3):
        ctx.log_metrics(step, {"loss": 1.0 / (step + 1)}, phase="train")
    ctx.close()
    acc = EventAccumulator(str(tmp_path / "k" / "tensorboard"))
    acc.Reload()
    assert acc.Tags()["scalars"] == ["train/loss"]
    events = acc.Scalars("train/loss")
    assert [e.step for e in events] == [0, 1, 2]
    assert [e.value for e in events] == pytest.approx([1.0, 0.5, 1 / 3])


def test_a_missing_or_unknown_tracker_is_one_warning_and_the_jsonl_is_still_written(tmp_path, monkeypatch, capsys,
                                                                                    make_context):
    import builtins

    real_import = builtins.__import__

    def no_wandb(name, *args, **kw):
        if name == "wandb":
            raise ModuleNotFoundError("No module named 'wandb'", name="wandb")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    monkeypatch.setenv("NFJOBS_TRACKERS", "wandb, nosuch")
    ctx = make_context("smoke", "k")
    ctx.log_metrics(0, {"x": 1})
    ctx.close()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert "tracker 'wandb' is off: No module named 'wandb'" in err[0] and "`wandb` extra" in err[0]
    assert "unknown tracker 'nosuch'" in err[1]
    assert results.load_metrics(tmp_path, "k")["x"].to_list() == [1]


def test_progress_plain_lines_have_rate_and_eta_and_a_terminal_gets_a_bar():
    out: list[str] = []
    p = Progress(4, "work", out.append, every_s=0.0, stream=io.StringIO(), tty=False)
    for _ in range(4):
        p.update()
    p.close()
    assert len(out) == 5
    assert out[0].startswith("work 1/4 (25%) ") and "/s" in out[0] and " ETA " in out[0]
    assert out[-1].startswith("work done 4/4 in ")
    stream = io.StringIO()
    p = Progress(10, "bar", [].append, every_s=0.0, stream=stream, tty=True)
    p.last -= 1  # the bar redraws at most every 0.1 s
    p.update(5)
    assert stream.getvalue().startswith("\r[############............] bar 5/10 (50%)")


def test_tiny_train_records_steps_epochs_and_the_final_psnr(tmp_path, make_context):
    from test_train import TINY

    cfg = replace(TINY, data=DataConfig(name="builtin", builtin_n=60, val_frac=0.2), epochs=2)
    ctx = make_context("train", "tr", metrics_every_s=0.0)
    rows = train_run(cfg, ctx)
    table = results.load_metrics(tmp_path, "tr")
    steps = table.filter(phase="step")
    assert steps["step"].to_list() == [1, 2, 3, 4]  # 48 images / batch 24, 2 epochs, every step (rate 0)
    assert {"loss", "lr", "train_recon"} <= set(steps.columns)  # the batch's, not a validation number
    epochs = results.load_metrics(tmp_path, "tr", phase="epoch")
    assert epochs["epoch"].to_list() == [1, 2] and epochs["step"].to_list() == [2, 4]
    curve = [r for r in rows if r["split"] == "val_curve"]
    for r in curve:
        got = epochs.filter(epoch=r["epoch"])[f"curve_psnr@{r['eval_context_frac']}"].item()
        assert got == pytest.approx(r["psnr"])
    assert epochs["train_loss"].to_list() == pytest.approx([r["train_loss"] for r in curve[:: len(curve) // 2]])
    final = results.load_metrics(tmp_path, "tr", phase="final")
    assert not (set(final.columns) - set(RECORD_FIELDS)) & set(epochs.columns)  # no curve is named as a final number
    want = {f"val_psnr@{r['eval_context_frac']}": r["psnr"] for r in rows if r["split"] == "val"}
    assert {k: final[k].drop_nulls().item() for k in want} == pytest.approx(want)


def train_run(cfg, ctx):
    from nfjobs.jobs import train

    try:
        return train.run(cfg, ctx)
    finally:
        ctx.close()


def test_cache_probe_and_score_record_their_phases(tmp_path, make_context):
    from nfjobs.jobs import cache, probe, score

    data = DataConfig(builtin_n=60, val_frac=0.25)
    cache.run(cache.Config(data=data, shard_size=16), c := make_context("cache", "c"))
    c.close()
    shards = results.load_metrics(tmp_path, "c", phase="cache_train")
    assert shards["step"].to_list() == [0, 1, 2] and shards["images"].to_list() == [16, 16, 13]
    assert results.load_metrics(tmp_path, "c", phase="split_val")["n_images"].to_list() == [15]
    p = make_context("probe", "p")
    (row,) = probe.run(probe.Config(activations="c", probe="transformer", epochs=2, batch_size=16, d_model=32), p)
    p.close()
    m = results.load_metrics(tmp_path, "p")
    epochs = m.filter(phase="probe_epoch")
    assert epochs["epoch"].to_list() == [1, 2] and epochs["batch_accuracy"].is_finite().all()
    assert epochs["train_accuracy"].is_null().all()  # the final number's name is not used by the curve
    assert m.filter(phase="probe")["accuracy"].to_list() == [row["accuracy"]]
    s = make_context("score", "s")
    rows = score.run(score.Config(scorer="random", n_prototypes=4, device="cpu", data=DataConfig(builtin_n=80)), s)
    s.close()
    m = results.load_metrics(tmp_path, "s")
    assert m["phase"].to_list() == ["scorer", "image_scores", "select"]
    assert m.filter(phase="select")["map"].item() == pytest.approx(rows[-1]["map"])
