"""Score job: trait discovery with prototypes (seed 004) on cached activations.

A scorer (random unit vectors, k-means, PCA or a ReLU sparse autoencoder) is trained on patches of the
training images, or reused from `<runs_root>/scorers/<hash>.pt` when an earlier cell trained the same one
(same activations, scorer, size, options and seed; `n_train` is not part of it). Image score = max over its
patches. For each trait the prototype with the best AP on `n_train` training images (seeded; 0 = all) is chosen
and its AP measured on the test (`val`) images.

Rows (`row_type` tells them apart):
- `trait`: one per trait: `trait`, `trait_name`, `prototype`, `train_ap`, `test_ap`, `train_pos`, `test_pos`,
  `prevalence` (test; also the constant predictor's AP);
- `summary`: one: `map`, `ap_q05`, `ap_q95`, `constant_map` (mean test prevalence; check it before anything
  else), `constant_map_implausible`, `train_map`, trait and image counts, `seconds_select`, `seconds_scorer`,
  `pictures` (the pictures' index page relative to the run dir; empty when they could not be drawn).
  AP is undefined for traits without test positives: they are left out of mAP and counted.

Pictures (`nfjobs.scoring.pictures`): per trait, the chosen prototype's top test images with the best patch
outlined, under `<run_dir>/pictures/` (`index.html` links them).

`activations` names a cache cell (key or run directory holding `train/` and `val/`, see `nfjobs.activations`),
or `builtin-pixels`: the builtin dataset (`data`) cut into 4x4 patches, 64 tokens of 48 pixel values, so the
whole protocol runs without downloads or a cache cell.
"""

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from nfjobs.config import DataConfig, runtime_field

BUILTIN_PIXELS = "builtin-pixels"
PATCH = 4


@dataclass(frozen=True)
class Config:
    """Prototype scoring of one activation cache."""

    seed: int = 0
    """Seeds the scorer and the choice of the `n_train` training images."""
    activations: str = BUILTIN_PIXELS
    """Cell key or run directory of a cache cell (with `train/` and `val/`), or `builtin-pixels`."""
    scorer: Literal["random", "kmeans", "pca", "sae"] = "random"
    """How prototypes are chosen: random unit vectors, k-means centres, principal directions, SAE codes."""
    n_prototypes: int = 128
    """Prototypes (K) the scorer offers every trait."""
    n_train: int = 0
    """Training images on which each trait's prototype is chosen (0 = all)."""
    train_patches: int = 200_000
    """Patches of the training images (sampled, seeded) the scorer learns from."""
    kmeans_iters: int = 20
    """Lloyd iterations after k-means++ initialisation."""
    sae_l1: float = 1e-3
    """L1 penalty on the sparse autoencoder's codes."""
    sae_lr: float = 1e-3
    """Adam learning rate of the sparse autoencoder."""
    sae_steps: int = 2000
    """Optimisation steps of the sparse autoencoder."""
    sae_batch: int = 1024
    """Patches per sparse-autoencoder step."""
    data: DataConfig = field(default_factory=DataConfig)
    """Images of `builtin-pixels` (must be `builtin`); unused for a cache."""
    device: str = runtime_field("auto")
    """`auto` (GPU when visible), `cpu`, `cuda`, `cuda:1`, ..."""
    batch_patches: int = runtime_field(16384)
    """Patches scored at once (bounds the (patches, K) score matrix in memory)."""
    eval_split: Literal["val", "test"] = "val"
    """Split the chosen prototypes are tested on: the cache's `val/` or `test/` (a cache with split = 'all')."""
    pictures_top_k: int = runtime_field(8)
    """Top test images drawn per trait under `pictures/` (0 = no pictures)."""

    def __post_init__(self):
        for name in ("n_prototypes", "train_patches", "kmeans_iters", "sae_steps", "sae_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_train < 0:
            raise ValueError(f"n_train must be >= 0 (0 = all), got {self.n_train}")
        if self.pictures_top_k < 0:
            raise ValueError(f"pictures_top_k must be >= 0 (0 = no pictures), got {self.pictures_top_k}")


def _looks_like_path(ref: str) -> bool:
    return "/" in ref or ref.startswith((".", "~"))


def check(cfg: Config) -> list[tuple[str, str]]:
    """A named cache directory must hold both splits with traits; `builtin-pixels` needs the builtin data."""
    if cfg.activations == BUILTIN_PIXELS:
        if cfg.data.name != "builtin":
            return [("data.name", f"{BUILTIN_PIXELS} cuts the builtin images into patches; got {cfg.data.name!r}")]
        if cfg.eval_split == "test":
            return [("eval_split", f"{BUILTIN_PIXELS} has train and val splits only")]
        return []
    if not cfg.activations:
        return [("activations", f"name the cell key or run directory of a cache cell, or {BUILTIN_PIXELS!r}")]
    if _looks_like_path(cfg.activations):
        root = Path(cfg.activations).expanduser()
        missing = [f"{s}/{f}" for s in ("train", cfg.eval_split) for f in ("meta.json", "traits.npy")
                   if not (root / s / f).is_file()]
        if missing:
            return [("activations", f"{root} lacks {', '.join(missing)} (a cache cell of a dataset with traits "
                                    "and split = 'both' writes them)")]
    return []


def depends_on(cfg: Config) -> list[str]:
    """The cache cell this job scores, when named by key."""
    if cfg.activations == BUILTIN_PIXELS or _looks_like_path(cfg.activations):
        return []
    return [cfg.activations]


def builtin_pixels(data: DataConfig, split: Literal["train", "val"]):
    """(images, 64, 48) float32 activations (4x4 RGB patches in [0, 1]), traits and trait names of the builtin
    dataset."""
    import numpy as np
    from einops import rearrange

    from nfjobs.data import load_split

    s = load_split(data, split)
    acts = rearrange(s.images, "n (h p1) (w p2) c -> n (h w) (p1 p2 c)", p1=PATCH, p2=PATCH)
    return acts.astype(np.float32) / 255.0, s.traits, s.trait_names


def _load(cfg: Config, ctx):
    """Per split: a list of (images, tokens, d) arrays (shards), traits (N, T); plus the trait names."""
    if cfg.activations == BUILTIN_PIXELS:
        train, val = builtin_pixels(cfg.data, "train"), builtin_pixels(cfg.data, "val")
        return ([train[0]], train[1]), ([val[0]], val[1]), train[2]
    from nfjobs.activations import open_cache

    root = ctx.resolve(cfg.activations)
    train, val = open_cache(root / "train"), open_cache(root / cfg.eval_split)
    if train.traits is None or val.traits is None:
        raise ValueError(f"{cfg.activations}: the cache has no traits.npy; trait scoring needs a dataset with traits")
    names = train.meta.get("trait_names", ())
    return (list(train.shards), train.traits), (list(val.shards), val.traits), tuple(names)


def scorer_key(cfg: Config, ctx) -> str:
    """Content hash of what a trained scorer depends on (not `n_train`: the scorer sees all training images)."""
    source = cfg.activations
    if source != BUILTIN_PIXELS:
        meta = (ctx.resolve(source) / "train" / "meta.json").read_text()
        source = hashlib.sha256(meta.encode()).hexdigest()
    options = {k: v for k, v in asdict(cfg).items() if k not in ("n_train", "device", "batch_patches", "activations")}
    if cfg.activations != BUILTIN_PIXELS:
        options.pop("data")
    text = json.dumps({"source": source, **options}, sort_keys=True)
    return f"{cfg.scorer}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def _batches(shards, n_tokens_per_batch: int):
    """(B, P, D) torch tensors in image order, about `n_tokens_per_batch` patches each."""
    import numpy as np
    import torch

    for shard in shards:
        step = max(1, n_tokens_per_batch // shard.shape[1])
        for i in range(0, len(shard), step):
            yield torch.from_numpy(np.array(shard[i : i + step], dtype=np.float32))  # memory-mapped: copy


def _training_patches(shards, n: int, seed: int):
    """`n` patches (or all) sampled without replacement from the training shards, seeded: (n, D)."""
    import numpy as np
    import torch

    sizes = [s.shape[0] * s.shape[1] for s in shards]
    total = sum(sizes)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(total, size=min(n, total), replace=False))
    out, start = [], 0
    for shard, size in zip(shards, sizes):
        local = pick[(pick >= start) & (pick < start + size)] - start
        flat = shard.reshape(size, shard.shape[2])
        out.append(np.asarray(flat[local], np.float32))
        start += size
    return torch.from_numpy(np.concatenate(out))


def _scorer(cfg: Config, ctx, train_shards, device):
    from nfjobs.scoring import scorers

    path = Path(ctx.runs_root) / "scorers" / f"{scorer_key(cfg, ctx)}.pt"
    if path.exists():
        ctx.log(f"scorer reused from {path}")
        return scorers.load(path, device), 0.0
    options = {
        "kmeans": {"n_iter": cfg.kmeans_iters},
        "sae": {"l1": cfg.sae_l1, "lr": cfg.sae_lr, "steps": cfg.sae_steps, "batch": cfg.sae_batch},
    }.get(cfg.scorer, {})
    scorer = scorers.make(cfg.scorer, cfg.n_prototypes, cfg.seed, **options)
    start = time.perf_counter()
    scorer.train(_training_patches(train_shards, cfg.train_patches, cfg.seed).to(device))
    seconds = time.perf_counter() - start
    scorers.save(scorer, path)
    ctx.log(f"scorer {cfg.scorer} ({cfg.n_prototypes} prototypes) trained in {seconds:.1f}s, saved to {path}")
    return scorer, seconds


def run(cfg: Config, ctx) -> list[dict]:
    """Train or reuse the scorer, score every image, choose and test a prototype per trait; rows as above."""
    problems = check(cfg)
    if problems:
        raise ValueError("; ".join(f"{k}: {m}" for k, m in problems))
    import torch

    from nfjobs.scoring import pictures, protocol

    device = ctx.device() if cfg.device == "auto" else torch.device(cfg.device)
    (train_shards, train_traits), (val_shards, val_traits), names = _load(cfg, ctx)
    scorer, seconds_scorer = _scorer(cfg, ctx, train_shards, device)
    train_scores = protocol.image_scores(scorer, _batches(train_shards, cfg.batch_patches), device)
    val_scores = protocol.image_scores(scorer, _batches(val_shards, cfg.batch_patches), device)
    result = protocol.evaluate(train_scores, torch.from_numpy(train_traits), val_scores,
                               torch.from_numpy(val_traits), cfg.n_train, cfg.seed)
    summary = result.summary()
    problem = protocol.constant_map_problem(summary["constant_map"])
    if problem:
        ctx.log(f"WARNING: {problem}")
    ctx.log(f"mAP {summary['map']:.4f} (constant predictor {summary['constant_map']:.4f}) over "
            f"{summary['n_traits']} traits; selection {summary['seconds_select']:.2f}s")
    rows = [{
        "row_type": "trait", "trait": t, "trait_name": names[t] if t < len(names) else str(t),
        "prototype": int(result.prototype[t]), "train_ap": float(result.train_ap[t]),
        "test_ap": float(result.test_ap[t]), "train_pos": int(result.train_pos[t]),
        "test_pos": int(result.test_pos[t]), "prevalence": float(result.prevalence[t]),
    } for t in range(len(result.prototype))]
    page = pictures.write_for_score(cfg, ctx, scorer, result, val_scores, val_shards, val_traits, names, device)
    rows.append({"row_type": "summary", **summary, "seconds_scorer": seconds_scorer, "pictures": page})
    return rows
