"""One GPU session that measures what issues 4, 5, 6 and 7 need, in priority order, under a wall-clock budget.

Parts (each with its own time budget; a part that does not fit in what is left is skipped and reported):

1. AP engine (issue 7): `best_prototypes` at full scale (8192 prototypes x 312 traits x 5994 images, synthetic
   data as in `bench/ap_bench.py`), checked against scikit-learn on a few prototypes.
2. Perceiver NF quality (issue 4): the `train` job with its default recipe on CIFAR-10, val PSNR vs wall-clock.
3. Mamba-GINR ablations (issue 5): default (2-D bias) vs faithful 1-D bias (alpha 10 fixed) vs no jitter vs the
   simple decoder, the same step budget each; the budget is set from a measured step time.
4. NF+JEPA sanity (issue 5): JEPA loss, collapse monitor, recon PSNR per obs_frac, target-encoder grad check.
5. Representation probes (issue 6): `cache` original / perceiver latents (full and sparse context) from part 2's
   model, then `probe` linear + k-NN (+ the transformer for 1 epoch when time is left).

Every job runs through its module's `run(cfg, Context(...))`. Training checkpoints are kept in memory (not
written to disk) and a run that would overrun its part's budget stops after an epoch and is finished here from
its last state (evaluation, reconstructions, model.pt), which the tables say. When only some CIFAR-10 training
batches exist under the data root (the device session carries one), `nfjobs.data.cifar10.TRAIN_FILES` is
narrowed to them and every table says so.

    # on a GPU machine (writes results.json, results.md and PNGs to --out):
    python bench/gpu_session.py --data-root .dev/gpu/cifar --out $OUT --budget-s 450
    # a CPU smoke test at tiny sizes (about a minute):
    uv run python bench/gpu_session.py --tiny --data-root .dev/gpu/cifar --out /tmp/gpu_session_tiny
"""

import argparse
import contextlib
import dataclasses
import gc
import json
import math
import os
import platform
import shutil
import signal
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nfjobs.data.cifar10 as cifar10  # noqa: E402
from nfjobs.config import DataConfig, OptimConfig  # noqa: E402
from nfjobs.context import Context  # noqa: E402


class PartTimeout(Exception):
    """Raised by SIGALRM when a part overruns its hard limit."""


class StopTraining(Exception):
    """Raised after an epoch's checkpoint when the next epoch would overrun the run's soft deadline."""

    def __init__(self, state: dict):
        super().__init__(f"stopped after epoch {state['epoch']} (time budget)")
        self.state = state


class SessionContext(Context):
    """A `Context` that keeps checkpoints in memory and stops training gracefully when the next epoch would end
    after `soft_deadline` (time.perf_counter() seconds)."""

    def __init__(self, key: str, kind: str, runs_root: Path, soft_deadline: float = math.inf, epochs: int = 0):
        super().__init__(key=key, kind=kind, runs_root=runs_root)
        self.soft_deadline = soft_deadline
        self.epochs = epochs
        self.state: dict | None = None
        self._last = time.perf_counter()
        self._durations: list[float] = []

    def load_checkpoint(self, map_location="cpu"):
        return None  # every run here starts fresh

    def save_checkpoint(self, state: dict) -> None:
        self.state = state
        now = time.perf_counter()
        self._durations.append(now - self._last)
        self._last = now
        # the first epoch includes compilation: predict from the last full epoch once there is one
        predicted = self._durations[-1] if len(self._durations) < 2 else max(self._durations[1:][-2:])
        if now + predicted > self.soft_deadline and state["epoch"] < self.epochs:
            raise StopTraining(state)



def epoch_logs(ctx: Context) -> list[dict]:
    """The `epoch` records of this run's metrics.jsonl (latest attempt): `epoch`, `loss` (mean train loss), the
    family's log means (`psnr`, `alpha`, `jepa`, ...: the records' `train_<log>`), `curve_psnr@<frac>` of the curve
    images, `wall_s`."""
    from nfjobs.results import load_metrics

    table = load_metrics(ctx.runs_root, ctx.key, phase="epoch")
    if table.is_empty():
        return []
    table = table.filter(table["attempt"] == table["attempt"].max())
    return table.rename({c: c.removeprefix("train_") for c in table.columns}).to_dicts()


@contextlib.contextmanager
def hard_limit(seconds: float):
    """SIGALRM after `seconds`: the last line of defence against a part that ignores its soft budget."""
    def handler(signum, frame):
        raise PartTimeout(f"hard time limit of {seconds:.0f} s reached")

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1.0))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def md_table(headers: list[str], rows: list[list]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return "nan" if math.isnan(v) else (f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}")
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def free_memory():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")


class Session:
    def __init__(self, args):
        self.args = args
        self.t0 = time.perf_counter()
        self.deadline = self.t0 + args.budget_s
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.runs = Path(args.runs_root)
        shutil.rmtree(self.runs, ignore_errors=True)
        self.runs.mkdir(parents=True)
        self.results: dict = {"parts": {}, "skipped": [], "errors": {}}
        self.markdown: list[str] = []

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def emit(self, title: str, table: str, notes: str = "") -> None:
        block = f"### {title}\n\n{table}\n" + (f"\n{notes}\n" if notes else "")
        print("\n" + block, flush=True)
        self.markdown.append(block)
        self.write()

    def write(self) -> None:
        self.results["elapsed_s"] = self.elapsed()
        (self.out / "results.json").write_text(json.dumps(self.results, indent=1, default=str))
        (self.out / "results.md").write_text("\n".join(self.markdown))

    def run_part(self, name: str, fn, budget: float, minimum: float) -> None:
        left = self.left()
        if left < minimum:
            msg = f"{name}: skipped ({left:.0f} s left of the session budget, needs at least {minimum:.0f} s)"
            print(f"\n## {msg}", flush=True)
            self.results["skipped"].append(msg)
            self.write()
            return
        budget = min(budget, left)
        print(f"\n## {name}: budget {budget:.0f} s (session elapsed {self.elapsed():.0f} s, {left:.0f} s left)",
              flush=True)
        start = time.perf_counter()
        try:
            with hard_limit(budget + self.args.hard_slack_s):
                fn(self, start + budget)
        except Exception as err:  # noqa: BLE001 - a failed part must not cost the later ones
            tb = traceback.format_exc(limit=6)
            print(f"## {name} FAILED: {err!r}\n{tb}", flush=True)
            self.results["errors"][name] = f"{err!r}\n{tb}"
        finally:
            self.results.setdefault("part_seconds", {})[name] = time.perf_counter() - start
            free_memory()
            self.write()
        print(f"## {name}: took {time.perf_counter() - start:.1f} s", flush=True)


# ------------------------------------------------------------------------------------------------- part 1
def part_ap(s: Session, deadline: float) -> None:
    from bench.ap_bench import sklearn_reference, synthetic_problem
    from nfjobs.scoring.ap import average_precision, best_prototypes

    a = s.args
    n, k, t = (600, 256, 24) if a.tiny else (5994, 8192, 312)
    ks = 2 if a.tiny else 4
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    scores, labels = synthetic_problem(n, k, t)
    ref, per_call = sklearn_reference(scores[:, :ks], labels)
    scores_d, labels_d = scores.to(device), labels.to(device)
    exact, _ = average_precision(scores_d[:, :ks], labels_d)
    max_err = float(np.abs(exact.cpu().numpy() - ref).max())

    free_memory()
    best_prototypes(scores_d[:, :64], labels_d)  # warm-up: CUDA context and kernels
    sync()
    rows, timings = [], {}
    chunks = [None, 1 << 27, 1 << 29] if device.type == "cuda" else [None]
    first = None
    for chunk in chunks:
        for rep in range(3 if chunk is None else 1):
            if timings and time.perf_counter() > deadline - 5:
                break
            free_memory()
            sync()
            t0 = time.perf_counter()
            best = best_prototypes(scores_d, labels_d, chunk)
            sync()
            sec = time.perf_counter() - t0
            timings.setdefault(str(chunk or "default"), []).append(sec)
            first = first or best
            same = bool(torch.equal(first.index, best.index))
            rows.append([f"{chunk or 'default'} (rep {rep + 1})", f"{k * t:,}", sec, k * t / sec / 1e6,
                         peak_gib(), same])
    sk_full = per_call * k * t
    best_s = min(min(v) for v in timings.values())
    s.results["parts"]["ap"] = {
        "n_images": n, "n_prototypes": k, "n_traits": t, "device": str(device),
        "mean_prevalence": float(labels.float().mean()), "sklearn_s_per_ap": per_call,
        "sklearn_full_extrapolated_s": sk_full, "max_abs_diff_vs_sklearn": max_err, "sklearn_prototypes": ks,
        "timings_s": timings, "best_s": best_s, "goal_s": 0.5, "meets_goal": best_s <= 0.5,
        "mean_best_train_ap": float(first.ap.mean()),
    }
    s.emit(
        f"1. AP engine, best of {k} prototypes x {t} traits x {n} images on {device}",
        md_table(["chunk_elements", "AP evaluations", "seconds", "M APs/s", "peak GiB", "same selection"], rows),
        f"scikit-learn: {per_call * 1e3:.2f} ms per AP on the device's CPU ({ks} x {t} subset), so "
        f"{sk_full:,.0f} s for all (extrapolated); engine vs scikit-learn on that subset: max |diff| = "
        f"{max_err:.1e}. Best engine time {best_s:.3f} s vs the goal 0.5 s "
        f"({'met' if best_s <= 0.5 else 'NOT met'}); {sk_full / best_s:,.0f}x scikit-learn.",
    )


# ------------------------------------------------------------------------------------------------- helpers
def data_config(s: Session, **kw) -> DataConfig:
    return DataConfig(name="cifar10", root=str(Path(s.args.data_root).resolve()),
                      val_frac=s.args.val_frac, **kw)


def train_once(s: Session, cfg, key: str, soft_deadline: float) -> dict:
    """`train.run` with in-memory checkpoints; a budget stop is finished here like the job's end."""
    from nfjobs.jobs import train

    ctx = SessionContext(key, "train", s.runs, soft_deadline, cfg.epochs)
    t0 = time.perf_counter()
    stopped = None
    try:
        rows = train.run(cfg, ctx)
    except StopTraining as stop:
        stopped = stop.state["epoch"]
        ctx.log(f"stopped after epoch {stopped}/{cfg.epochs} for the time budget; finishing from that state")
        rows = finish_from_state(cfg, stop.state, ctx)
    ctx.close()
    return {"rows": rows, "wall_s": time.perf_counter() - t0, "stopped_after_epoch": stopped,
            "epoch_logs": epoch_logs(ctx), "run_dir": str(ctx.run_dir), "history": ctx.state["history"] if ctx.state else []}


def finish_from_state(cfg, state: dict, ctx) -> list[dict]:
    """What `train.run` does after its last epoch, from a checkpoint state: full val evaluation, the
    reconstruction grid, model.pt."""
    from nfjobs.data import load_split
    from nfjobs.jobs import train
    from nfjobs.models import load_family
    from nfjobs.models.trained import field_name
    from nfjobs.nf import training as T

    device = ctx.device()
    family = load_family(cfg.model)
    model = family.build(cfg).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    val = T.to_device(load_split(cfg.data, "val").images, device).float().div_(255)
    bf16 = T.uses_bf16(cfg.precision, device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        final = family.evaluate(model, val, cfg)
        if hasattr(family, "reconstruct"):
            train.save_reconstructions(ctx.run_dir / "reconstructions.png", family, model, val[: train.GRID_IMAGES],
                                       field_name(cfg))
    torch.save({"config": dataclasses.asdict(cfg), "model": model.state_dict()}, ctx.run_dir / "model.pt")
    steps = len(state["history"]) // max(state["epoch"], 1)
    last = {"epoch": state["epoch"], "train_loss": float(np.mean(state["history"][-steps:])),
            "train_s": state["train_s"], "wall_s": state["curve"][-1]["wall_s"] if state["curve"] else float("nan")}
    return state["curve"] + [{**r, "split": "val", **last} for r in final]


def calibrate(s: Session, cfg, batch: int, eval_images: int) -> dict:
    """Seconds per training step (batch `batch`) and per evaluated image of `cfg`'s family on this device."""
    from nfjobs.data import load_split
    from nfjobs.models import load_family
    from nfjobs.nf import training as T

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    family = load_family(cfg.model)
    torch.manual_seed(0)
    model = family.build(cfg).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.optim.lr, fused=device.type == "cuda")
    train_u8 = T.to_device(load_split(cfg.data, "train").images[: batch * 4], device)
    val = T.to_device(load_split(cfg.data, "val").images[:eval_images], device).float().div_(255)
    bf16 = T.uses_bf16(cfg.precision, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    step = torch.zeros((), dtype=torch.long, device=device)
    free_memory()
    warm, timed = (1, 2) if s.args.tiny else (2, 4)
    for i in range(warm + timed):
        if i == warm:
            sync()
            t0 = time.perf_counter()
        images = train_u8[(i % 4) * batch:(i % 4 + 1) * batch].float().div_(255)
        with autocast:
            loss, _ = family.training_loss(model, images, step, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if hasattr(family, "after_step"):
            family.after_step(model, step, cfg)
        step += 1
    sync()
    step_s = (time.perf_counter() - t0) / timed
    model.eval()
    with autocast:
        family.evaluate(model, val[: min(8, len(val))], cfg)  # warm-up at a new shape
        sync()
        t0 = time.perf_counter()
        family.evaluate(model, val, cfg)
        sync()
    eval_s = (time.perf_counter() - t0) / len(val)
    out = {"step_s": step_s, "eval_s_per_image": eval_s, "batch": batch, "peak_gib": peak_gib(),
           "loss": float(loss.detach()), "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
           "backend": getattr(model, "backend", "")}
    del model, opt, train_u8, val
    free_memory()
    return out


def copy_png(src: Path, name: str, s: Session) -> None:
    if src.is_file():
        shutil.copy(src, s.out / name)


# ------------------------------------------------------------------------------------------------- part 2
def part_perceiver(s: Session, deadline: float) -> None:
    from nfjobs.jobs import train
    from nfjobs.models.perceiver_config import PerceiverConfig

    a = s.args
    cfg = train.Config(data=data_config(s), epochs=a.perceiver_epochs, curve_images=1000)
    if a.tiny:
        cfg = replace(cfg, data=data_config(s, n_train=256), batch_size=32, curve_images=50,
                      perceiver=PerceiverConfig(fourier_size=16, latent_dims=(32,), num_latents=16, cross_heads=1,
                                                cross_dim_head=16, self_heads=2, self_dim_head=16, processor_depth=1))
    res = train_once(s, cfg, "perceiver", deadline - 8)  # keep time for the final evaluation
    rows = res["rows"]
    curve = [r for r in rows if r["split"] == "val_curve" and r["eval_context_frac"] == 1.0]
    final = [r for r in rows if r["split"] == "val"]
    peak = max((r["psnr"] for r in curve), default=float("nan"))
    last = curve[-1]["psnr"] if curve else float("nan")
    first28 = next((r for r in curve if r["psnr"] >= 28), None)
    steps_per_epoch = len(res["history"]) // max(len(curve), 1)
    images = len(res["history"]) * cfg.batch_size
    train_s = final[0]["train_s"] if final else float("nan")
    hist = np.asarray(res["history"], dtype=np.float64)
    jumps = [hist[i] / np.median(hist[i - 50:i]) for i in range(50, len(hist))]
    jump = float(max(jumps)) if jumps else float("nan")  # largest loss / median of the previous 50 steps
    spike = bool(jump > 3)
    s.results["parts"]["perceiver"] = {
        "config": {"lr": cfg.optim.lr, "betas": cfg.optim.betas, "warmup_steps": cfg.optim.warmup_steps,
                   "min_lr": cfg.optim.min_lr, "grad_clip": cfg.optim.grad_clip, "batch_size": cfg.batch_size,
                   "epochs": cfg.epochs, "learn_latents": cfg.perceiver.learn_latents,
                   "normalize_inputs": cfg.perceiver.normalize_inputs, "train_files": cifar10.TRAIN_FILES},
        "curve": [{k: r[k] for k in ("epoch", "wall_s", "train_s", "train_loss", "psnr")} for r in curve],
        "final": [{k: r[k] for k in ("eval_context_frac", "psnr", "epoch", "wall_s")} for r in final],
        "stopped_after_epoch": res["stopped_after_epoch"], "peak_psnr": peak, "last_psnr": last,
        "first_28db": {k: first28[k] for k in ("epoch", "wall_s")} if first28 else None,
        "steps": len(hist), "steps_per_epoch": steps_per_epoch, "train_images_per_s": images / train_s,
        "loss_spike": spike, "max_loss_jump": jump, "diverged": bool(curve and last < peak - 3), "run_wall_s": res["wall_s"],
        "run_dir": res["run_dir"],
    }
    step = max(1, len(curve) // 12)
    shown = curve[::step] + ([curve[-1]] if curve and curve[-1] is not curve[::step][-1] else [])
    s.emit(
        f"2. Perceiver NF, default recipe (lr {cfg.optim.lr}, betas {cfg.optim.betas}, warm-up "
        f"{cfg.optim.warmup_steps} steps, cosine to {cfg.optim.min_lr}, batch {cfg.batch_size}), "
        f"CIFAR-10 {'+'.join(cifar10.TRAIN_FILES)}: val PSNR (full context, {cfg.curve_images} val images) vs wall-clock",
        md_table(["epoch", "wall s (incl. compile + eval)", "train loss", "val PSNR dB"],
                 [[r["epoch"], r["wall_s"], r["train_loss"], r["psnr"]] for r in shown])
        + "\n\n" + md_table(["eval context frac", "final val PSNR dB (all val images)"],
                            [[r["eval_context_frac"], r["psnr"]] for r in final]),
        f"{len(hist)} steps ({steps_per_epoch}/epoch), {images / train_s:,.0f} train images/s (train loop only); "
        f"peak {peak:.2f} dB, last {last:.2f} dB, 28 dB first at "
        f"{'epoch %d, %.0f s' % (first28['epoch'], first28['wall_s']) if first28 else 'never'}; "
        f"diverged (last < peak - 3 dB): {s.results['parts']['perceiver']['diverged']}; largest step loss / median "
        f"of the previous 50 steps: {jump:.2f} (spike if > 3: {spike}); "
        f"stopped early for time: {res['stopped_after_epoch'] or 'no'}.",
    )
    copy_png(Path(res["run_dir"]) / "reconstructions.png", "perceiver_recon.png", s)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
        for frac in sorted({r["eval_context_frac"] for r in rows if r["split"] == "val_curve"}):
            c = [r for r in rows if r["split"] == "val_curve" and r["eval_context_frac"] == frac]
            ax1.plot([r["wall_s"] for r in c], [r["psnr"] for r in c], marker=".", label=f"context {frac}")
        ax1.axhline(28, color="grey", ls="--", lw=0.8)
        ax1.set(xlabel="wall-clock s (incl. compile + eval)", ylabel="val PSNR dB", title="Perceiver NF, default recipe")
        ax1.legend(fontsize=7)
        ax2.semilogy(hist)
        ax2.set(xlabel="step", ylabel="train MSE", title="training loss per step")
        fig.tight_layout()
        fig.savefig(s.out / "perceiver_curve.png", dpi=110)
        plt.close(fig)
    except Exception as err:  # noqa: BLE001
        print(f"plot failed: {err!r}")


# ------------------------------------------------------------------------------------------------- part 3
def part_ginr(s: Session, deadline: float) -> None:
    from nfjobs.jobs import train
    from nfjobs.models.ginr_config import GinrConfig
    from nfjobs.models.trained import load_trained
    from nfjobs.nf import training as T

    a = s.args
    tiny = dict(dim=64, depth=1, ff_dim=128, feature_dim=16, head_dim=16, simple_hidden=64, simple_freqs=8) if a.tiny else {}
    batch, epochs, curve_images = (4 if a.tiny else 16), 2, (20 if a.tiny else 200)
    base = train.Config(
        model="ginr", data=data_config(s, n_train=batch * 4), batch_size=batch, epochs=epochs,
        curve_images=curve_images, compile=False, eval_batch_size=100,
        optim=OptimConfig(lr=5e-4, min_lr=1e-8, warmup_steps=10, weight_decay=0.0, grad_clip=0.0),
        ginr=GinrConfig(**tiny),
    )
    n_val = _n_val(s)
    variants = {
        "default (2-D bias, alpha 256 learnable, jitter 0.01, LAINR)": {},
        "faithful bias (faithful_1d, alpha 10 fixed)": dict(spatial_bias="faithful_1d", alpha=10.0, alpha_learnable=False),
        "no jitter": dict(jitter_std=0.0),
        "simple decoder": dict(decoder="simple"),
    }
    start = time.perf_counter()
    run_budget = (deadline - start - (4 if a.tiny else 12)) / len(variants)
    depths = [base.ginr.depth] + ([] if a.tiny else [d for d in (3, 2) if d < base.ginr.depth])
    min_steps = 20 if a.tiny else 150
    cal, steps = None, 0
    for depth in depths:
        cfg = replace(base, ginr=replace(base.ginr, depth=depth))
        try:
            cal = calibrate(s, cfg, batch, 20 if a.tiny else 100)
        except (RuntimeError, TypeError) as err:  # e.g. a dtype clash of the pure scan under bf16 autocast
            print(f"GINR calibration failed under {cfg.precision} autocast ({err!r}); retrying in fp32", flush=True)
            s.results["parts"].setdefault("ginr", {})["bf16_error"] = repr(err)
            cfg = replace(cfg, precision="fp32")
            free_memory()
            cal = calibrate(s, cfg, batch, 20 if a.tiny else 100)
        eval_images = epochs * curve_images + n_val + 8
        overhead = 1.5 if a.tiny else 3.0
        steps = int((run_budget - overhead - eval_images * cal["eval_s_per_image"]) / (cal["step_s"] * 1.1))
        print(f"GINR calibration depth {depth}: {cal}; steps per run within {run_budget:.0f} s: {steps}", flush=True)
        s.results["parts"].setdefault("ginr", {}).setdefault("calibration", []).append({"depth": depth, **cal, "steps_fit": steps})
        base = cfg
        if steps >= min_steps:
            break
    run_budget = (deadline - time.perf_counter() - (1 if a.tiny else 3)) / len(variants)  # after calibration
    steps = int((run_budget - overhead - eval_images * cal["eval_s_per_image"]) / (cal["step_s"] * 1.1))
    steps_per_epoch = max(1, steps // epochs)
    print(f"GINR: depth {base.ginr.depth}, {run_budget:.0f} s per run -> {epochs} x {steps_per_epoch} steps", flush=True)
    base = replace(base, data=data_config(s, n_train=steps_per_epoch * batch),
                   optim=replace(base.optim, warmup_steps=max(1, steps_per_epoch * epochs // 8)))
    results, recon = [], []
    for i, (name, over) in enumerate(variants.items()):
        if time.perf_counter() > deadline - 3:
            s.results["skipped"].append(f"GINR variant {name}: no time left")
            continue
        cfg = replace(base, ginr=replace(base.ginr, **over))
        run_deadline = min(deadline, time.perf_counter() + run_budget + 5)
        res = train_once(s, cfg, f"ginr{i}", run_deadline - 3)
        final = [r for r in res["rows"] if r["split"] == "val"][0]
        curve = [r for r in res["rows"] if r["split"] == "val_curve"]
        alpha = res["epoch_logs"][-1].get("alpha", float("nan")) if res["epoch_logs"] else float("nan")
        n_steps = len(res["history"])
        results.append({"variant": name, "ginr": dataclasses.asdict(cfg.ginr), "val_psnr": final["psnr"],
                        "curve_psnr": [r["psnr"] for r in curve], "epochs": final["epoch"], "steps": n_steps,
                        "images": n_steps * batch, "train_s": final["train_s"], "run_wall_s": res["wall_s"],
                        "alpha_end": alpha, "backend": final.get("backend"), "stopped_after_epoch": res["stopped_after_epoch"],
                        "train_psnr_last_epoch": res["epoch_logs"][-1].get("psnr") if res["epoch_logs"] else None})
        try:
            model, _ = load_trained(res["run_dir"], "cuda" if torch.cuda.is_available() else "cpu")
            from nfjobs.data import load_split
            from nfjobs.models import ginr as G

            dev = next(model.parameters()).device
            shown = T.to_device(load_split(cfg.data, "val").images[:8], dev).float().div_(255)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                recon.append((shown, G.reconstruct(model, shown, 1.0), name))
            del model
        except Exception as err:  # noqa: BLE001
            print(f"GINR reconstruction failed: {err!r}")
        free_memory()
        s.results["parts"]["ginr"]["runs"] = results
        s.write()
    s.results["parts"]["ginr"].update({"batch": batch, "epochs": epochs, "steps_per_epoch": steps_per_epoch,
                                       "n_train": steps_per_epoch * batch, "depth": base.ginr.depth,
                                       "warmup_steps": base.optim.warmup_steps, "run_budget_s": run_budget,
                                       "precision": base.precision})
    if recon:
        T.save_grid(s.out / "ginr_recon.png", [recon[0][0]] + [r for _, r, _ in recon],
                    labels=["ground truth", *(f"GINR {n}" for _, _, n in recon)], title="GINR variants, full context")
    s.emit(
        f"3. Mamba-GINR ablations: depth {base.ginr.depth}, backend {cal['backend'] if cal else '?'}, batch {batch}, "
        f"{epochs} epochs x {steps_per_epoch} steps on {steps_per_epoch * batch} CIFAR-10 images "
        f"({'+'.join(cifar10.TRAIN_FILES)}), lr 5e-4, warm-up {base.optim.warmup_steps} steps, cosine to 1e-8",
        md_table(["variant", f"val PSNR dB ({n_val} val images)", f"curve PSNR per epoch ({curve_images} val images)", "steps",
                  "train s", "images/s", "alpha at end"],
                 [[r["variant"], r["val_psnr"], ", ".join(f"{p:.2f}" for p in r["curve_psnr"]), r["steps"],
                   r["train_s"], r["images"] / r["train_s"], r["alpha_end"]] for r in results]),
        f"Step time (calibration, batch {batch}, precision {base.precision}): "
        + "; ".join(f"depth {c['depth']}: {c['step_s'] * 1e3:.0f} ms/step, eval {c['eval_s_per_image'] * 1e3:.2f} ms/image, "
                    f"{c['params_m']:.1f} M params, peak {c['peak_gib']:.1f} GiB"
                    for c in s.results["parts"]["ginr"]["calibration"])
        + ". The reference recipe (40 epochs x 2,812 steps) would take "
        + ", ".join(f"{40 * 2812 * c['step_s'] / 3600:.1f} h at depth {c['depth']}"
                    for c in s.results["parts"]["ginr"]["calibration"])
        + " per run at these step times.",
    )


def _n_val(s: Session) -> int:
    from nfjobs.data import load_split

    return len(load_split(data_config(s), "val").images)


# ------------------------------------------------------------------------------------------------- part 4
def part_jepa(s: Session, deadline: float) -> None:
    from nfjobs.jobs import train
    from nfjobs.models import jepa as J
    from nfjobs.models.jepa_config import JepaConfig
    from nfjobs.nf import training as T

    a = s.args
    tiny = dict(dim=32, depth=1, ff_dim=64, n_freqs=4, recon_hidden=32, pred_depth=1) if a.tiny else {}
    batch, epochs, curve_images = (16, 2, 20) if a.tiny else (64, a.jepa_epochs, 200)
    base = train.Config(
        model="jepa", data=data_config(s, n_train=batch * 4), batch_size=batch, epochs=epochs,
        curve_images=curve_images, compile=False, eval_batch_size=100,
        optim=OptimConfig(lr=5e-4, min_lr=1e-6, warmup_steps=10, weight_decay=0.05), jepa=JepaConfig(**tiny),
    )
    start = time.perf_counter()
    # grad check on a fresh model: one training step must leave every target parameter without .grad, and
    # the EMA update must move the target only towards the context encoder.
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from nfjobs.data import load_split

    model = J.build(base).to(device)
    images = T.to_device(load_split(base.data, "train").images[:batch], device).float().div_(255)
    step = torch.zeros((), dtype=torch.long, device=device)
    if "bf16_error" in s.results["parts"].get("ginr", {}):  # the pure scan failed under bf16 autocast there
        base = replace(base, precision="fp32")
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" and base.precision == "auto"):
            loss, logs = J.training_loss(model, images, step, base)
        loss.backward()
    except (RuntimeError, TypeError) as err:
        print(f"JEPA step failed under bf16 autocast ({err!r}); using fp32", flush=True)
        base = replace(base, precision="fp32")
        model.zero_grad(set_to_none=True)
        loss, logs = J.training_loss(model, images, step, base)
        loss.backward()
    problems = J.target_grad_problems(model)
    ctx_grads = sum(p.grad is not None for p in model.context_encoder.parameters())
    before = [p.detach().clone() for p in model.target_encoder.parameters()]
    J.after_step(model, step, base)
    m = float(J.ema_momentum(step, base.jepa))
    with torch.no_grad():
        ema_err = max(float((t - (m * b + (1 - m) * c)).abs().max()) for t, b, c in
                      zip(model.target_encoder.parameters(), before, model.context_encoder.parameters()))
    grad_check = {"target_params_with_grad_or_requires_grad": problems, "context_params_with_grad": ctx_grads,
                  "ema_max_abs_error": ema_err, "pass": not problems and ctx_grads > 0 and ema_err < 1e-5}
    print(f"JEPA grad check: {grad_check}", flush=True)
    del model, images
    free_memory()

    cal = calibrate(s, base, batch, 20 if a.tiny else 100)
    budget = deadline - time.perf_counter() - (8 if a.tiny else 35)  # 35 s left for the probe
    eval_images = epochs * curve_images + _n_val(s) + 8
    steps = int((budget - eval_images * cal["eval_s_per_image"]) / (cal["step_s"] * 1.1))
    steps_per_epoch = max(1, steps // epochs)
    print(f"JEPA calibration: {cal}; steps within {budget:.0f} s: {steps}", flush=True)
    cfg = replace(base, data=data_config(s, n_train=steps_per_epoch * batch),
                  optim=replace(base.optim, warmup_steps=max(1, steps_per_epoch * epochs // 10)),
                  jepa=replace(base.jepa, ema_ramp_steps=steps_per_epoch * epochs))
    res = train_once(s, cfg, "jepa", deadline - (6 if a.tiny else 30))
    final = [r for r in res["rows"] if r["split"] == "val"]
    s.results["parts"]["jepa"] = {
        "grad_check": grad_check, "calibration": cal, "batch": batch, "epochs": final[0]["epoch"] if final else None,
        "steps_per_epoch": steps_per_epoch, "n_train": steps_per_epoch * batch, "epoch_logs": res["epoch_logs"],
        "final": final, "stopped_after_epoch": res["stopped_after_epoch"], "run_wall_s": res["wall_s"],
        "jepa": dataclasses.asdict(cfg.jepa), "first_step": {k: float(v) for k, v in logs.items()},
    }
    copy_png(Path(res["run_dir"]) / "reconstructions.png", "jepa_recon.png", s)
    keys = ["loss", "jepa", "recon_mse", "psnr", "emb_std", "z_std", "target_std", "ema_momentum"]
    s.emit(
        f"4. NF+JEPA sanity: backend {cal['backend']}, depth {cfg.jepa.depth}, batch {batch}, {epochs} epochs x "
        f"{steps_per_epoch} steps on {steps_per_epoch * batch} CIFAR-10 images ({'+'.join(cifar10.TRAIN_FILES)}), "
        f"obs_frac {cfg.jepa.obs_frac}, target_frac {cfg.jepa.target_frac}, loss {cfg.jepa.loss}, "
        f"recon_weight {cfg.jepa.recon_weight}",
        md_table(["epoch", *keys], [[e["epoch"], *[e.get(k, float("nan")) for k in keys]] for e in res["epoch_logs"]])
        + "\n\n" + md_table(["eval obs_frac", "recon PSNR dB (all val images)", "target_grad_ok"],
                            [[r["eval_context_frac"], r["psnr"], r.get("target_grad_ok")] for r in final]),
        f"Grad check (one step on a fresh model): target params with grad / requires_grad: {len(problems)}, context "
        f"params with grad: {ctx_grads}, EMA update max |error| {ema_err:.1e} -> "
        f"{'PASS' if grad_check['pass'] else 'FAIL'}. First step: "
        + ", ".join(f"{k} {float(v):.3g}" for k, v in logs.items())
        + f". Step {cal['step_s'] * 1e3:.0f} ms at batch {batch} ({cal['params_m']:.1f} M params, "
        f"peak {cal['peak_gib']:.1f} GiB).",
    )
    jepa_probe(s, res["run_dir"], deadline)


def jepa_probe(s: Session, run_dir: str, deadline: float) -> None:
    """Seed 002's linear probe at obs_frac 0.1: `cache` the JEPA context tokens (and, as the baseline, the same
    observed (x, y, r, g, b) points) of `probe_images` training and all validation images, then `probe` linear."""
    from nfjobs.jobs import cache, probe

    a = s.args
    data = data_config(s, n_train=256 if a.tiny else a.probe_images)
    rows = []
    for source in ("nf", "original"):
        if time.perf_counter() > deadline - 5:
            s.results["skipped"].append(f"JEPA probe ({source}): no time left")
            continue
        ctx = SessionContext(f"jepa-cache-{source}", "cache", s.runs)
        t0 = time.perf_counter()
        cache.run(cache.Config(data=data, source=source, checkpoint=run_dir if source == "nf" else "",
                               context="sparse", context_frac=0.1), ctx)
        cache_s = time.perf_counter() - t0
        row = probe.run(probe.Config(activations=str(ctx.run_dir), probe="linear"),
                        SessionContext(f"jepa-probe-{source}", "probe", s.runs))[0]
        rows.append(["NF+JEPA context tokens" if source == "nf" else "observed points (x, y, r, g, b)",
                     row["n_tokens"], row["d"], row["n_train"], row["n_val"], row["accuracy"], row["train_accuracy"],
                     cache_s, row["train_s"]])
        free_memory()
    s.results["parts"]["jepa"]["probe"] = rows
    s.emit("4b. Linear probe at obs_frac 0.1 (102 of 1,024 pixels, the same seeded points for both rows)",
           md_table(["representation", "tokens", "d", "train images", "val images", "val accuracy", "train accuracy",
                     "cache s", "fit s"], rows))


# ------------------------------------------------------------------------------------------------- part 5
def part_probes(s: Session, deadline: float) -> None:
    from nfjobs.jobs import cache, probe

    a = s.args
    perc = s.results["parts"].get("perceiver")
    if not perc or not (Path(perc["run_dir"]) / "model.pt").is_file():
        raise RuntimeError("part 2 left no Perceiver model.pt")
    ckpt = perc["run_dir"]
    data = data_config(s, n_train=512) if a.tiny else data_config(s)
    caches = {
        ("original", "full"): cache.Config(data=data, source="original", context="full"),
        ("perceiver", "full"): cache.Config(data=data, source="nf", checkpoint=ckpt, context="full"),
        ("original", "sparse"): cache.Config(data=data, source="original", context="sparse", context_frac=0.2),
        ("perceiver", "sparse"): cache.Config(data=data, source="nf", checkpoint=ckpt, context="sparse", context_frac=0.2),
    }
    dirs, cache_rows = {}, []
    for i, (name, cfg) in enumerate(caches.items()):
        if time.perf_counter() > deadline - 10:
            s.results["skipped"].append(f"cache {name}: no time left")
            continue
        ctx = SessionContext(f"cache{i}", "cache", s.runs)
        t0 = time.perf_counter()
        rows = cache.run(cfg, ctx)
        dirs[name] = str(ctx.run_dir)
        cache_rows.append([*name, rows[0]["n_images"], rows[1]["n_images"] if len(rows) > 1 else 0,
                           rows[0]["n_tokens"], rows[0]["d"], time.perf_counter() - t0])
    results = []
    probes = [("linear", {}), ("knn", {})] + [("transformer", {"epochs": 1})]
    for p, over in probes:
        for name, d in dirs.items():
            need = 20 if p == "transformer" else 6
            if time.perf_counter() > deadline - need:
                s.results["skipped"].append(f"probe {p} on {name}: no time left")
                continue
            cfg = probe.Config(activations=d, probe=p, **over)
            t0 = time.perf_counter()
            row = probe.run(cfg, SessionContext(f"probe-{p}-{name[0]}-{name[1]}", "probe", s.runs))[0]
            results.append({"representation": name[0], "context": name[1], "probe": p, "accuracy": row["accuracy"],
                            "train_accuracy": row["train_accuracy"], "train_s": row["train_s"],
                            "wall_s": time.perf_counter() - t0, "n_train": row["n_train"], "n_val": row["n_val"],
                            "n_tokens": row["n_tokens"], "d": row["d"], **over})
            free_memory()
            s.results["parts"]["probes"] = {"caches": cache_rows, "results": results, "checkpoint": ckpt}
            s.write()
    s.results["parts"]["probes"] = {"caches": cache_rows, "results": results, "checkpoint": ckpt}
    s.emit(
        f"5. Representation probes on CIFAR-10 ({'+'.join(cifar10.TRAIN_FILES)}; train / val images below), "
        "Perceiver = part 2's model",
        md_table(["representation", "context", "train images", "val images", "tokens", "d", "cache s"], cache_rows)
        + "\n\n" + md_table(["representation", "context", "probe", "val accuracy", "train accuracy", "fit s"],
                            [[r["representation"], r["context"], r["probe"] + (" (1 epoch)" if r.get("epochs") else ""),
                              r["accuracy"], r["train_accuracy"], r["train_s"]] for r in results]),
        "Sparse context: 20 % of the pixels (204 of 1024), the same seeded points for both representations. "
        "Linear = logistic regression (C 0.1, L-BFGS) and k-NN (k 20, distance-weighted) on mean-pooled tokens.",
    )
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        labels = sorted({(r["representation"], r["context"]) for r in results})
        kinds = sorted({r["probe"] for r in results})
        fig, ax = plt.subplots(figsize=(8, 4))
        width = 0.8 / max(len(kinds), 1)
        for j, kind in enumerate(kinds):
            acc = [next((r["accuracy"] for r in results if (r["representation"], r["context"]) == lab and r["probe"] == kind),
                        0.0) for lab in labels]
            ax.bar(np.arange(len(labels)) + j * width, acc, width, label=kind)
        ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, [f"{r}\n{c}" for r, c in labels])
        ax.set(ylabel="val accuracy", title="CIFAR-10 probes (one training batch)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(s.out / "probes.png", dpi=110)
        plt.close(fig)
    except Exception as err:  # noqa: BLE001
        print(f"plot failed: {err!r}")


# ------------------------------------------------------------------------------------------------- main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="CPU smoke test at tiny sizes")
    p.add_argument("--data-root", default=".dev/gpu/cifar", help="directory holding cifar-10-batches-py/")
    p.add_argument("--val-frac", type=float, default=None, help="held-out fraction (default 0.1; tiny 0.01)")
    p.add_argument("--out", default=os.environ.get("OUT", "/tmp/gpu_session_out"))
    p.add_argument("--runs-root", default="/tmp/gpu_session_runs", help="scratch run directories (wiped first)")
    p.add_argument("--budget-s", type=float, default=None, help="session budget (default 450; tiny 75)")
    p.add_argument("--hard-slack-s", type=float, default=20.0, help="SIGALRM this long after a part's budget")
    p.add_argument("--perceiver-epochs", type=int, default=32,
                   help="epochs of part 2 (32 x 35 steps fit ~150 s on an H100 with 9,000 images)")
    p.add_argument("--parts", default="ap,perceiver,ginr,jepa,probes")
    p.add_argument("--ginr-s", type=float, default=None, help="budget of the GINR part (default 130)")
    p.add_argument("--jepa-s", type=float, default=None, help="budget of the JEPA part incl. its probe (default 42)")
    p.add_argument("--jepa-epochs", type=int, default=3, help="epochs of the JEPA run (its steps fit the budget)")
    p.add_argument("--probe-images", type=int, default=10000, help="training images of the JEPA linear probe")
    args = p.parse_args()
    args.val_frac = args.val_frac if args.val_frac is not None else (0.01 if args.tiny else 0.1)
    args.budget_s = args.budget_s or (90.0 if args.tiny else 450.0)
    if args.tiny:
        args.perceiver_epochs = 2

    folder = Path(args.data_root) / cifar10.FOLDER
    present = tuple(f for f in cifar10.TRAIN_FILES if (folder / f).is_file())
    if present and present != cifar10.TRAIN_FILES:
        cifar10.TRAIN_FILES = present  # the device session carries fewer batches than the full split

    s = Session(args)
    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
           "cpu_threads": torch.get_num_threads(), "train_files": cifar10.TRAIN_FILES, "val_frac": args.val_frac,
           "budget_s": args.budget_s, "tiny": args.tiny, "argv": sys.argv}
    s.results["env"] = env
    print(f"# GPU session: {env}", flush=True)
    s.emit("Session", md_table(list(env), [list(env.values())]))

    # name, function, budget (s), minimum time left to start it (s); in priority order
    budgets = {
        "ap": (part_ap, 35, 10) if not args.tiny else (part_ap, 5, 2),
        "perceiver": (part_perceiver, 165, 60) if not args.tiny else (part_perceiver, 12, 3),
        "ginr": (part_ginr, args.ginr_s or 130, 40) if not args.tiny else (part_ginr, args.ginr_s or 30, 3),
        "jepa": (part_jepa, args.jepa_s or 42, 20) if not args.tiny else (part_jepa, args.jepa_s or 20, 3),
        "probes": (part_probes, 1e9, 60) if not args.tiny else (part_probes, 1e9, 5),
    }
    for name in args.parts.split(","):
        fn, budget, minimum = budgets[name]
        s.run_part(name, fn, budget, minimum)
    s.results["total_s"] = s.elapsed()
    summary = md_table(["part", "seconds", "status"], [
        [n, s.results.get("part_seconds", {}).get(n, 0.0),
         "error" if n in s.results["errors"] else ("done" if n in s.results.get("part_seconds", {}) else "skipped")]
        for n in args.parts.split(",")])
    s.emit(f"Summary ({s.elapsed():.0f} s)", summary,
           "Skipped: " + ("; ".join(s.results["skipped"]) or "nothing")
           + ("\n\nErrors: " + "; ".join(f"{k}: {v.splitlines()[0]}" for k, v in s.results["errors"].items())
              if s.results["errors"] else ""))


if __name__ == "__main__":
    main()
