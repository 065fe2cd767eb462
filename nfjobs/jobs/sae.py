"""The `sae` job kind: a ReLU sparse autoencoder trained on every patch of a cache's training images (seed 004).

Epochs stream the cache in order with at most `max_resident_bytes` of it in memory (see
`ActivationCache.stream`); the patches of each block of `shuffle_images` images are shuffled (seeded by seed,
epoch and block) and cut into batches, so the result does not depend on the memory budget. Loss: squared
reconstruction error + `l1` · L1 of the codes, decoder rows kept at unit norm (`scoring.scorers.SparseAutoencoder`,
the scorer a `score` cell with `scorer = "sae"` and `sae = <this cell>` uses). A checkpoint after every epoch
(weights, Adam state, rows so far) lets a requeued job continue at the next epoch.

`activations = "builtin-pixels"` trains on the builtin dataset's 4x4 pixel patches (`data`), what a `score` cell of
that name scores, held in memory (so `gb_read` is 0).

Metrics (`ctx.log_metrics`, metrics.jsonl): phase `step`, at most every `ctx.metrics_every_s`, the batch's `loss`
and `lr`; phase `epoch`, the epoch's row below, its mean loss `train_loss` and `lr`.

One row per epoch: `mse` (per patch), `fvu` (mse / variance of the patches), `code_l1` (L1 of the codes per patch;
not `l1`, the coefficient's column), `l0` (active latents per patch), `frac_dead` (latents that never fired in the
epoch), `frac_dense` (latents firing on more than `dense_frac` of the patches), and what was read (`gb_read`,
`read_gb_per_s`, `peak_resident_bytes`, `patches_per_s`).
"""

import time
from dataclasses import dataclass, field
from pathlib import Path

from nfjobs.config import BUILTIN_PIXELS, DataConfig, InvalidField, device_problem, runtime_field
from nfjobs.store import layout
from nfjobs.store.layout import looks_like_path

CHECKPOINTABLE = True
"""Resumable: a checkpoint per epoch."""

MOMENT_ROWS = 65536
"""Patches cast to float64 at once while summing the moments."""


@dataclass(frozen=True)
class Config:
    """Train a sparse autoencoder on the patches of a cache's training split."""

    seed: int = 0
    """Seeds the initialisation and the patch order."""
    activations: str = ""
    """Cell key or run directory of a cache cell (its `train/` split is read), or `builtin-pixels`."""
    width: int = 1024
    """Latents (prototypes a scorer built from it offers)."""
    l1: float = 1e-3
    """L1 coefficient on the codes."""
    lr: float = 1e-3
    """Adam learning rate."""
    epochs: int = 4
    """Passes over every training patch."""
    batch: int = 4096
    """Patches per step."""
    shuffle_images: int = 64
    """Images whose patches are shuffled together (the unit of reading; must fit in half the memory budget)."""
    dense_frac: float = 0.1
    """A latent firing on more than this fraction of an epoch's patches counts as dense."""
    data: DataConfig = field(default_factory=DataConfig)
    """Images of `builtin-pixels` (must be `builtin`); unused for a cache."""
    device: str = runtime_field("auto")
    """`auto` (GPU when visible), `cpu`, `cuda`, ..."""
    max_resident_bytes: int = runtime_field(1 << 30)
    """Cache bytes held in memory at once (shards are streamed in order, one block read ahead)."""

    def __post_init__(self):
        if problem := device_problem(self.device):
            raise InvalidField("device", f"device {problem}")
        if self.max_resident_bytes < 1:
            raise InvalidField("max_resident_bytes", f"max_resident_bytes must be >= 1, got {self.max_resident_bytes}")
        for name in ("width", "epochs", "batch", "shuffle_images"):
            if getattr(self, name) < 1:
                raise InvalidField(name, f"{name} must be >= 1, got {getattr(self, name)}")
        if self.width > 1 << 20:
            raise InvalidField("width", f"width must be <= {1 << 20:,}, got {self.width}")
        if self.l1 < 0:
            raise InvalidField("l1", f"l1 must be >= 0, got {self.l1}")
        if self.lr <= 0:
            raise InvalidField("lr", f"lr must be > 0, got {self.lr}")
        if not 0 < self.dense_frac <= 1:
            raise InvalidField("dense_frac", f"dense_frac must be in (0, 1], got {self.dense_frac}")


def check(cfg: Config) -> list[tuple[str, str]]:
    if cfg.activations == BUILTIN_PIXELS:
        if cfg.data.name != "builtin":
            return [("data.name", f"{BUILTIN_PIXELS} cuts the builtin images into patches; got {cfg.data.name!r}")]
        return []
    if not cfg.activations:
        return [("activations", f"name the cell key or run directory of a cache cell, or {BUILTIN_PIXELS!r}")]
    if looks_like_path(cfg.activations) and not (Path(cfg.activations).expanduser() / "train" / layout.META).is_file():
        return [("activations", f"{cfg.activations} holds no train/{layout.META} (a cache cell writes it)")]
    return []


def depends_on(cfg: Config) -> list[str]:
    """The cache cell it trains on (a key or a run dir)."""
    return [cfg.activations] if cfg.activations not in ("", BUILTIN_PIXELS) else []


class _InMemory:
    """(images, tokens, d) activations held in memory, streamed in image order as `ActivationCache.stream` does
    (the same chunks for the same `images_per_chunk`; nothing is read, so `stats` stays empty)."""

    def __init__(self, acts):
        self.acts = acts

    def stream(self, max_resident_bytes: int, images_per_chunk: int = 0, stats=None):
        step = images_per_chunk or len(self.acts)
        for first in range(0, len(self.acts), step):
            yield first, self.acts[first : first + step]


def _training_set(cfg: Config, ctx):
    """The training patches: the cache's `train/` split, or the builtin dataset's pixel patches in memory."""
    if cfg.activations == BUILTIN_PIXELS:
        from nfjobs.data.pixels import builtin_pixels

        return _InMemory(builtin_pixels(cfg.data, "train")[0])
    from nfjobs.activations import open_cache

    return open_cache(ctx.resolve(cfg.activations) / "train")


def _moments(cache, budget: int, device) -> tuple["object", float]:
    """Mean patch (D,) and mean squared distance of a patch from it, in one streamed pass (float64 sums)."""
    import torch

    total, sq, n = 0.0, 0.0, 0
    for _, chunk in cache.stream(budget):
        for x in torch.from_numpy(chunk).to(device).reshape(-1, chunk.shape[2]).split(MOMENT_ROWS):
            x = x.double()  # a float64 copy of a few rows, not of the chunk
            total, sq, n = total + x.sum(0), sq + x.square().sum(), n + len(x)
    mean = total / n
    return mean.float(), float(sq / n - mean.square().sum())


def run(cfg: Config, ctx) -> list[dict]:
    """Train (or finish training) the autoencoder; save it to `sae.pt`; one row per epoch."""
    problems = check(cfg)
    if problems:
        raise ValueError("; ".join(f"{k}: {m}" for k, m in problems))
    import numpy as np
    import torch

    from nfjobs.activations import StreamStats
    from nfjobs.scoring import scorers

    device = ctx.device() if cfg.device == "auto" else torch.device(cfg.device)
    cache = _training_set(cfg, ctx)
    sae = scorers.SparseAutoencoder(cfg.width, cfg.seed, l1=cfg.l1, lr=cfg.lr)
    state = ctx.load_checkpoint(map_location=device)
    if state is None:
        mean, variance = _moments(cache, cfg.max_resident_bytes, device)
        opt = torch.optim.Adam(sae.init(mean), lr=cfg.lr)
        state = {"epoch": 0, "rows": [], "variance": variance, "steps": 0}
    else:
        opt = torch.optim.Adam(sae.init(state["sae"]["mean"].to(device)), lr=cfg.lr)
        with torch.no_grad():
            for name in ("w_enc", "b_enc", "w_dec", "b_dec"):
                getattr(sae, name).copy_(state["sae"][name])
        opt.load_state_dict(state["opt"])
        ctx.log(f"resuming at epoch {state['epoch']} of {cfg.epochs}")
    steps = state.get("steps", 0)  # checkpoints from before the metrics records have none
    for epoch in range(state["epoch"], cfg.epochs):
        stats, start = StreamStats(), time.perf_counter()
        fires = torch.zeros(cfg.width, device=device)
        sums = torch.zeros(3, device=device, dtype=torch.float64)  # squared error, L1, L0 (patch sums)
        n = 0
        for first, chunk in cache.stream(cfg.max_resident_bytes, cfg.shuffle_images, stats):
            x = torch.from_numpy(chunk).to(device).reshape(-1, chunk.shape[2])
            del chunk
            block = first // cfg.shuffle_images
            g = torch.Generator().manual_seed(int(np.random.SeedSequence([cfg.seed, epoch, block]).generate_state(1)[0]))
            order = torch.randperm(len(x), generator=g).to(device)  # batches gathered one at a time: no shuffled copy
            for i in range(0, len(x), cfg.batch):
                mse, l1, codes = sae.losses(x[order[i : i + cfg.batch]])
                opt.zero_grad(set_to_none=True)
                loss = mse + cfg.l1 * l1
                loss.backward()
                opt.step()
                sae.normalise_decoder()
                steps += 1
                if ctx.metrics_due("step"):  # a host sync, so at a bounded rate
                    ctx.log_metrics(steps, {"loss": loss.item(), "lr": cfg.lr}, phase="step")
                m = len(codes)
                with torch.no_grad():
                    active = codes > 0
                    fires += active.sum(0)
                    sums += torch.stack([mse.detach() * m, l1.detach() * m, active.sum().double()])
                n += m
            del x  # no chunk of this epoch outlives its stream (the next epoch's reads start at once)
        seconds = time.perf_counter() - start
        se, l1_sum, l0_sum = (sums / n).tolist()
        freq = fires / n
        row = {"epoch": epoch + 1, "mse": se, "fvu": se / max(state["variance"], 1e-12), "code_l1": l1_sum,
               "l0": l0_sum,
               "frac_dead": float((fires == 0).float().mean()), "frac_dense": float((freq > cfg.dense_frac).float().mean()),
               "patches": n, "epoch_s": seconds, "patches_per_s": n / max(seconds, 1e-9), "gb_read": stats.bytes_read / 1e9,
               "read_gb_per_s": stats.bytes_read / 1e9 / max(stats.seconds, 1e-9),
               "peak_resident_bytes": stats.peak_resident_bytes}
        ctx.log_metrics(steps, {**row, "train_loss": se + cfg.l1 * l1_sum, "lr": cfg.lr}, phase="epoch")
        ctx.log(f"epoch {epoch + 1}/{cfg.epochs}: mse {se:.4g} fvu {row['fvu']:.3f} l0 {l0_sum:.1f} "
                f"dead {row['frac_dead']:.3f} dense {row['frac_dense']:.3f} ({row['patches_per_s']:.0f} patches/s)")
        state = {"epoch": epoch + 1, "rows": [*state["rows"], row], "variance": state["variance"], "steps": steps,
                 "sae": {k: v.detach().clone() for k, v in sae.state_dict().items()}, "opt": opt.state_dict()}
        ctx.save_checkpoint(state)
    sae.detach()
    scorers.save(sae, ctx.run_dir / layout.SAE)
    return list(state["rows"])
