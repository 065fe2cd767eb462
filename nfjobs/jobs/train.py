"""The `train` job kind: train one neural field (full-context, sparse-context, Soft-InfoNCE, or a finetune).

Objectives are two fields: `context_frac` (1.0 = every pixel is context; 0.2 = the seeds' sparse variant)
and `nce_weight` (> 0 adds Soft-InfoNCE between affine views). `init_from` starts from another cell's
trained model (the sparse → NCE finetune). The model family (`model`) is a module in `nfjobs.models`.

Writes under the run directory: `checkpoint.pt` (every epoch; exact resume), `model.pt`
({"config": dict, "model": state_dict}), `train_loss.npy` (loss of every step), `reconstructions.png`
(rows, labelled: ground truth, then reconstructions from each of `GRID_FRACS` of the pixels, or one from the whole
image for a family whose reconstruction ignores the context, `CONTEXT_FREE`) and `metrics.jsonl` (phase
`step`: the batch's `loss`, `lr` and the family's logs as `train_<log>`, every `ctx.metrics_every_s`; `epoch`:
`train_loss`, `train_s`, the logs' means as `train_<log>` and `curve_psnr@<frac>` of the curve images; `final`:
`val_psnr@<frac>` of the whole validation split: a curve and a final number never share a name).
Rows: per epoch (`split="val_curve"`, first `curve_images` validation images) and at the end
(`split` = `eval_split`: the whole validation or test split): whatever the family's `evaluate` returns
(perceiver: one row per `eval_context_frac`, with `psnr` and `mse`), plus `epoch`, `train_loss`, `train_s` and `wall_s`.

A cell of several ranks (`ctx.world_size`) runs DistributedDataParallel: every rank walks the same global batches
and takes its slice of each, so the loss trajectory is the one-process trajectory up to float rounding when the
objective draws nothing at random (full context, no NCE, jitter or augmentation); random draws come from a
generator per rank and epoch, so they differ from the one-process run's. Rank 0 evaluates and writes every file;
`train_loss` is the mean over the whole global batch (the `step` records of metrics.jsonl: rank 0's slice).
"""

import dataclasses
import time
from pathlib import Path

from nfjobs.context import Pruned
from nfjobs.models.trained import field_name
from nfjobs.models.train_config import TrainConfig as Config
from nfjobs.store import layout
from nfjobs.store.files import atomic_write_with

CHECKPOINTABLE = True
DISTRIBUTED = True
"""A cell of several ranks trains with DistributedDataParallel: the global batch (`batch_size`) is cut into one
slice per rank, in the same order and with the same learning-rate schedule as on one process."""
GRID_FRACS = (0.1, 0.2, 1.0)
"""Context fractions shown in the reconstruction grid."""
GRID_IMAGES = 8
"""Validation images shown in the reconstruction grid."""


DEFAULTS = Config()


def check(cfg: Config) -> list[tuple[str, str]]:
    """The dataset root, options the model family does not use, and the run dir `init_from` names (the launcher
    passes references resolved to run dirs; a cell key of the same launch is checked when it has run)."""
    from nfjobs.data import check as check_data
    from nfjobs.models import foreign_options

    splits = ("train", "val") if cfg.eval_split == "val" else ("train", "val", "test")
    problems = check_data(cfg.data, splits=splits) + foreign_options(cfg, DEFAULTS)
    if layout.looks_like_path(cfg.init_from) and not (Path(cfg.init_from).expanduser() / layout.MODEL).is_file():
        problems.append(("init_from", f"{cfg.init_from} holds no {layout.MODEL} (not a finished train run dir)"))
    return problems


def depends_on(cfg: Config) -> list[str]:
    return [cfg.init_from] if cfg.init_from else []


def grid_rows(family) -> tuple[tuple[float, ...], list[str]]:
    """The context fractions of `reconstructions.png`'s reconstruction rows and what each row of it is: one row
    for a family whose reconstruction does not depend on the context (`CONTEXT_FREE`), not copies of it."""
    if getattr(family, "CONTEXT_FREE", False):
        return (1.0,), ["ground truth", "from the whole image"]
    return GRID_FRACS, ["ground truth", *(f"context {f:.0%}" for f in GRID_FRACS)]


def save_reconstructions(path: Path, family, model, shown, title: str) -> None:
    """`reconstructions.png`: the images `shown`, then the family's reconstructions of them (`grid_rows`)."""
    from nfjobs.nf import training as T

    fracs, labels = grid_rows(family)
    T.save_grid(path, [shown] + [family.reconstruct(model, shown, f) for f in fracs], labels=labels, title=title)


def _psnr_name(row: dict, curve: bool = False) -> str:
    """Metric name of a final evaluation row's PSNR: `val_psnr@<eval_context_frac>`, or `val_psnr`; a curve
    row's (`curve=True`): `curve_psnr@...`."""
    frac, name = row.get("eval_context_frac"), "curve_psnr" if curve else "val_psnr"
    return name if frac is None else f"{name}@{frac}"


def run(cfg: Config, ctx) -> list[dict]:
    import numpy as np
    import torch

    from nfjobs.data import load_split
    from nfjobs.models import load_family
    from nfjobs.nf import training as T

    device = ctx.device()
    torch.manual_seed(cfg.seed)
    family = load_family(cfg.model)
    train_u8 = T.to_device(load_split(cfg.data, "train").images, device)
    val = T.to_device(load_split(cfg.data, "val").images, device).float().div_(255)
    if cfg.eval_split == "test":
        held_out = T.to_device(load_split(cfg.data, "test").images, device).float().div_(255)
    else:
        held_out = val
    model = family.build(cfg).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        params, lr=cfg.optim.lr, betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay,
        fused=device.type == "cuda",
    )
    batch = min(cfg.batch_size, len(train_u8))
    mine = T.rank_slice(batch, ctx.rank, ctx.world_size)
    share = (mine.stop - mine.start) / batch  # of the global batch: the weight of this rank's mean loss
    steps_per_epoch = len(train_u8) // batch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, T.lr_factor(cfg.optim, cfg.epochs * steps_per_epoch))

    state = ctx.load_checkpoint()
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        sched.load_state_dict(state["sched"])
        T.set_rng_state(state["rng"])
        ctx.log(f"resumed after epoch {state['epoch']}")
    elif cfg.init_from:
        from nfjobs.store.files import load_tensors

        source = ctx.resolve(cfg.init_from) / layout.MODEL
        model.load_state_dict(load_tensors(source, map_location=device)["model"])
        ctx.log(f"initialised from {source}")
    start = state["epoch"] if state else 0
    history: list[float] = state["history"] if state else []
    curve: list[dict] = state["curve"] if state else []
    train_s: float = state["train_s"] if state else 0.0
    epoch_logs: dict[str, float] = state.get("logs", {}) if state else {}

    bf16 = T.uses_bf16(cfg.precision, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    step_fn = family.training_loss
    if cfg.compile and device.type == "cuda":
        step_fn = torch.compile(step_fn, mode=cfg.compile_mode)
    if ctx.world_size > 1:  # after the checkpoint is loaded: DDP starts every rank from rank 0's weights
        step_fn = T.data_parallel(step_fn, model, device)
    after_step = getattr(family, "after_step", None)
    step = torch.tensor(start * steps_per_epoch, device=device)
    wall0 = time.perf_counter() - (curve[-1]["wall_s"] if curve else 0.0)

    bar = ctx.progress_bar((cfg.epochs - start) * steps_per_epoch, desc="train steps")
    for epoch in range(start, cfg.epochs):
        model.train()
        if ctx.world_size > 1:
            torch.manual_seed(T.rank_seed(cfg.seed, epoch, ctx.rank))
        order = torch.randperm(len(train_u8), generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
        order = order[: steps_per_epoch * batch].view(steps_per_epoch, batch)[:, mine].to(device)
        losses = torch.zeros(steps_per_epoch, device=device)
        log_sums: dict[str, torch.Tensor] = {}
        t0 = time.perf_counter()
        for i in range(steps_per_epoch):
            images = train_u8[order[i]].float().div_(255)
            if cfg.data.augment:
                images = T.augment(images)
            with autocast:
                loss, logs = step_fn(model, images, step, cfg)
            opt.zero_grad(set_to_none=True)
            # DDP averages the ranks' gradients: weighting each rank's mean by its share makes that the global mean
            (loss * (share * ctx.world_size) if ctx.world_size > 1 else loss).backward()
            if cfg.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip, foreach=True)
            opt.step()
            sched.step()
            if after_step is not None:
                after_step(model, step, cfg)
            step += 1
            losses[i] = loss.detach()
            for k, v in logs.items():
                log_sums[k] = log_sums.get(k, 0) + v.float()
            bar.update()
            if ctx.metrics_due("step"):  # a host sync, so at a bounded rate
                ctx.log_metrics(int(step), {"loss": loss.item(), "lr": sched.get_last_lr()[0],
                                            **{f"train_{k}": v.item() for k, v in logs.items()}}, phase="step")
        if ctx.world_size > 1:  # the global batch's means, from each rank's share
            names = list(log_sums)
            summed = T.sum_over_ranks(torch.cat([losses, *(log_sums[k].reshape(1) for k in names)]) * share)
            losses, log_sums = summed[:steps_per_epoch], dict(zip(names, summed[steps_per_epoch:]))
        epoch_losses = losses.tolist()  # the epoch's one host sync
        train_s += time.perf_counter() - t0
        history.extend(epoch_losses)
        log_means = {k: v.item() / steps_per_epoch for k, v in log_sums.items()}
        epoch_logs = {f"train_{k}": v for k, v in log_means.items()}  # in the rows: JEPA loss, collapse monitor
        summary = {"epoch": epoch + 1, "train_loss": float(np.mean(epoch_losses)), "train_s": train_s, **epoch_logs}
        model.eval()
        if not ctx.is_main:
            continue  # rank 0 evaluates and saves; this rank goes on to the next epoch's first step and waits there
        if cfg.curve_images > 0:
            with autocast:
                rows = family.evaluate(model, val[: cfg.curve_images], cfg)
            summary["wall_s"] = time.perf_counter() - wall0
            curve += [{**r, "split": "val_curve", **summary} for r in rows]
        summary["wall_s"] = time.perf_counter() - wall0
        means = " ".join(f"{k}={v:.4g}" for k, v in log_means.items())
        psnr = " ".join(f"psnr@{r.get('eval_context_frac', '')}={r.get('psnr', float('nan')):.2f}"
                        for r in curve if r["epoch"] == epoch + 1)
        record = {
            "epoch": epoch + 1, "train_loss": summary["train_loss"], "train_s": train_s,
            **epoch_logs,
            **{_psnr_name(r, curve=True): r["psnr"] for r in curve if r["epoch"] == epoch + 1 and "psnr" in r},
        }
        ctx.log_metrics(int(step), record, phase="epoch")
        ctx.log(f"epoch {epoch + 1}/{cfg.epochs} loss={summary['train_loss']:.4g} {means} {psnr} "
                f"wall={summary['wall_s']:.0f}s ({steps_per_epoch * batch / (time.perf_counter() - t0):.0f} img/s incl. eval)")
        ctx.save_checkpoint({
            "model": model.state_dict(), "optim": opt.state_dict(), "sched": sched.state_dict(),
            "rng": T.rng_state(), "epoch": epoch + 1, "history": history, "curve": curve, "train_s": train_s,
            "logs": epoch_logs,
        })
        if ctx.report(epoch + 1, record):  # a search's pruner stops this trial; its checkpoint stays
            raise Pruned(f"epoch {epoch + 1}")

    bar.close()
    if not ctx.is_main:
        return []
    model.eval()
    with autocast:
        final = family.evaluate(model, held_out, cfg)
        if hasattr(family, "reconstruct"):
            shown = val[:GRID_IMAGES]
            save_reconstructions(ctx.run_dir / layout.RECONSTRUCTIONS, family, model, shown,
                                 f"{field_name(cfg)}: first {len(shown)} val images")
    for r in final:
        if "psnr" in r:
            ctx.log_metrics(int(step), {_psnr_name(r): r["psnr"]}, phase="final")
    np.save(ctx.run_dir / "train_loss.npy", np.asarray(history, dtype=np.float32))
    blob = {"config": dataclasses.asdict(cfg), "model": model.state_dict()}
    atomic_write_with(ctx.run_dir / layout.MODEL, lambda f: torch.save(blob, f))
    last = {"epoch": cfg.epochs, "train_loss": float(np.mean(history[-steps_per_epoch:])), "train_s": train_s,
            "wall_s": time.perf_counter() - wall0, **epoch_logs}
    if device.type == "cuda":  # what a cell needs when cells share a GPU (--cells-per-gpu)
        last["gpu_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return curve + [{**r, "split": cfg.eval_split, **last} for r in final]
