"""Score job: trait discovery with prototypes (seed 004) on cached activations.

A scorer (random unit vectors, k-means, PCA or a ReLU sparse autoencoder) is trained on patches of the
training images, or reused from `<runs_root>/scorers/<scorer key>.pt` when an earlier cell trained the same one
(`scorer_key`: the same input content, scorer options and seed; how the cell evaluates it, `n_train` and
`eval_split`, and how it runs are not part of it). Image score = max over its
patches. For each trait the prototype with the best AP on `n_train` training images (seeded; 0 = all) is chosen
and its AP measured on the test (`val`) images.

Rows (`row_type` tells them apart):
- `trait`: one per trait: `trait`, `trait_name`, `prototype`, `train_ap`, `test_ap`, `train_pos`, `test_pos`,
  `prevalence` (test; also the constant predictor's AP);
- `summary`: one: `map`, `ap_q05`, `ap_q95`, `constant_map` (mean test prevalence; check it before anything
  else), `constant_map_implausible`, `train_map`, trait and image counts, `seconds_select`, `seconds_scorer`,
  `pictures` (the pictures' index page relative to the run dir; empty when they could not be drawn),
  `prototypes` (what the scorer offered: `n_prototypes`, or an `sae` cell's width), and the scored cache's
  `representation` and `layer` (its backbone layer; empty otherwise), so layers are told apart in reports.
  AP is undefined for traits without test positives: they are left out of mAP and counted.

`metrics.jsonl` gets one record per phase: `scorer`, `image_scores`, `select` (mAP, constant mAP, train mAP).

Pictures (`nfjobs.scoring.pictures`): per trait, the chosen prototype's top test images with the best patch
outlined, under `<run_dir>/pictures/` (`index.html` links them).

`activations` names a cache cell (key or run directory holding `train/` and `val/`, see `nfjobs.activations`),
or `builtin-pixels`: the builtin dataset (`data`) cut into 4x4 patches, 64 tokens of 48 pixel values, so the
whole protocol runs without downloads or a cache cell.
"""

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nfjobs.config import (BUILTIN_PIXELS, EVALUATION, INPUT, DataConfig, InvalidField, device_problem,
                           evaluation_field,
                           input_field, runtime_field)
from nfjobs.identity import content_key, file_digest
from nfjobs.store import layout
from nfjobs.store.layout import RunsRoot, looks_like_path

N_PROTOTYPES = 128


@dataclass(frozen=True)
class Config:
    """Prototype scoring of one activation cache."""

    seed: int = 0
    """Seeds the scorer and the choice of the `n_train` training images."""
    activations: str = input_field(BUILTIN_PIXELS)
    """Cell key or run directory of a cache cell (with `train/` and `val/`), or `builtin-pixels`."""
    scorer: Literal["random", "kmeans", "pca", "sae"] = "random"
    """How prototypes are chosen: random unit vectors, k-means centres, principal directions, SAE codes."""
    n_prototypes: int = N_PROTOTYPES
    """Prototypes (K) the scorer offers every trait; 0 with `sae` (the sae cell's width is K: rows say it in
    `prototypes`)."""
    n_train: int = evaluation_field(0)
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
    sae: str = input_field("")
    """`scorer = "sae"`: cell key or run directory of an `sae` cell whose autoencoder scores (its width is the
    number of prototypes; `sae_*` are then unused and `n_prototypes` is 0); empty = train one here as above."""
    data: DataConfig = input_field(default_factory=DataConfig)
    """Images of `builtin-pixels` (must be `builtin`); unused for a cache."""
    device: str = runtime_field("auto")
    """`auto` (GPU when visible), `cpu`, `cuda`, `cuda:1`, ..."""
    batch_patches: int = runtime_field(16384)
    """Patches scored at once (bounds the (patches, K) score matrix in memory)."""
    max_resident_bytes: int = runtime_field(1 << 30)
    """Cache bytes held in memory at once while scoring (shards are streamed in order, read ahead)."""
    precision: Literal["auto", "bf16", "fp32"] = runtime_field("auto")
    """Patch x prototype products of the random scorer: `auto` = bf16 on CUDA (as every job), fp32 on CPU; the
    other scorers compute in fp32. Image scores and APs are float32 either way."""
    eval_split: Literal["val", "test"] = evaluation_field("val")
    """Split the chosen prototypes are tested on: the cache's `val/` or `test/` (a cache with split = 'all')."""
    pictures_top_k: int = runtime_field(8)
    """Top test images drawn per trait under `pictures/` (0 = no pictures)."""

    def __post_init__(self):
        if problem := device_problem(self.device):
            raise InvalidField("device", f"device {problem}")
        if self.max_resident_bytes < 1:
            raise InvalidField("max_resident_bytes", f"max_resident_bytes must be >= 1, got {self.max_resident_bytes}")
        if self.sae:  # the prototype count is the sae cell's width, known once it has run: 0, never a wrong number
            if self.n_prototypes not in (0, N_PROTOTYPES):
                raise InvalidField("n_prototypes", f"n_prototypes = {self.n_prototypes} with sae = {self.sae!r}: the sae cell's width is "
                                 "the number of prototypes (rows say it in `prototypes`); leave n_prototypes out")
            object.__setattr__(self, "n_prototypes", 0)
        counts = ("train_patches", "kmeans_iters", "sae_steps", "sae_batch", *(() if self.sae else ("n_prototypes",)))
        for name in counts:
            if getattr(self, name) < 1:
                raise InvalidField(name, f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_prototypes > 1 << 20:
            raise InvalidField("n_prototypes", f"n_prototypes must be <= {1 << 20:,}, got {self.n_prototypes}")
        if self.n_train < 0:
            raise InvalidField("n_train", f"n_train must be >= 0 (0 = all), got {self.n_train}")
        if self.pictures_top_k < 0:
            raise InvalidField("pictures_top_k", f"pictures_top_k must be >= 0 (0 = no pictures), got {self.pictures_top_k}")


def check(cfg: Config) -> list[tuple[str, str]]:
    """A named cache directory must hold both splits with traits; `builtin-pixels` needs the builtin data."""
    if cfg.sae and cfg.scorer != "sae":
        return [("sae", f"names an sae cell, which only scorer = 'sae' uses (scorer is {cfg.scorer!r})")]
    if cfg.sae and looks_like_path(cfg.sae) and not (Path(cfg.sae).expanduser() / layout.SAE).is_file():
        return [("sae", f"{cfg.sae} holds no {layout.SAE} (a finished sae cell writes it)")]
    if cfg.activations == BUILTIN_PIXELS:
        if cfg.data.name != "builtin":
            return [("data.name", f"{BUILTIN_PIXELS} cuts the builtin images into patches; got {cfg.data.name!r}")]
        if cfg.eval_split == "test":
            return [("eval_split", f"{BUILTIN_PIXELS} has train and val splits only")]
        return []
    if not cfg.activations:
        return [("activations", f"name the cell key or run directory of a cache cell, or {BUILTIN_PIXELS!r}")]
    if looks_like_path(cfg.activations):
        root = Path(cfg.activations).expanduser()
        missing = [f"{s}/{f}" for s in ("train", cfg.eval_split) for f in (layout.META, "traits.npy")
                   if not (root / s / f).is_file()]
        if missing:
            return [("activations", f"{root} lacks {', '.join(missing)} (a cache cell of a dataset with traits "
                                    "and split = 'both' writes them)")]
    return []


def depends_on(cfg: Config) -> list[str]:
    """The cache cell this job scores and the sae cell whose autoencoder scores (keys or run dirs)."""
    refs = [] if cfg.activations in (BUILTIN_PIXELS, "") else [cfg.activations]
    return refs + ([cfg.sae] if cfg.sae else [])


def _load(cfg: Config, ctx):
    """Per split: an activation cache (or, for builtin-pixels, a list of one (images, tokens, d) array) and
    traits (N, T); plus the trait names."""
    if cfg.activations == BUILTIN_PIXELS:
        from nfjobs.data.pixels import builtin_pixels

        train, val = builtin_pixels(cfg.data, "train"), builtin_pixels(cfg.data, "val")
        return ([train[0]], train[1]), ([val[0]], val[1]), train[2]
    from nfjobs.activations import open_cache

    root = ctx.resolve(cfg.activations)
    train, val = open_cache(root / "train"), open_cache(root / cfg.eval_split)
    if train.traits is None or val.traits is None:
        raise ValueError(f"{cfg.activations}: the cache has no traits.npy; trait scoring needs a dataset with traits")
    names = train.meta.get("trait_names", ())
    return (train, train.traits), (val, val.traits), tuple(names)


def _representation(source) -> dict[str, str]:
    """What was scored, from the cache's meta.json (`builtin-pixels` for the builtin patches)."""
    meta = getattr(source, "meta", {"label": BUILTIN_PIXELS})
    return {"representation": meta.get("label", ""), "layer": meta.get("layer", "")}


def _shards(source) -> list:
    """Memory-mapped shards of a cache (or the in-memory arrays of builtin-pixels), for sampling patches."""
    return list(source.shards) if hasattr(source, "shards") else source


def scorer_key(cfg: Config, ctx) -> str:
    """Content key of the scorer `cfg` trains: its fields but those marked runtime, evaluation or input, and the
    content of its input (the cache's `train/meta.json`, or the builtin images' config) in place of its name."""
    if cfg.activations == BUILTIN_PIXELS:
        source = content_key(BUILTIN_PIXELS, cfg.data)
    else:
        source = file_digest(ctx.resolve(cfg.activations) / "train" / layout.META)
    return content_key(cfg.scorer, cfg, omit=(EVALUATION, INPUT), extra={"input": source})


def _n_batches(source, n_tokens_per_batch: int, max_resident_bytes: int) -> int:
    """How many batches `batches` yields: each chunk it streams is sliced on its own."""
    step = max(1, n_tokens_per_batch // _shards(source)[0].shape[1])
    sizes = ([hi - lo for _, lo, hi in source.chunks(max_resident_bytes)] if hasattr(source, "chunks")
             else [len(a) for a in source])
    return sum(-(-n // step) for n in sizes)


def batches(source, n_tokens_per_batch: int, max_resident_bytes: int, stats=None):
    """(B, P, D) torch tensors in image order, about `n_tokens_per_batch` patches each: a cache is streamed
    (at most `max_resident_bytes` of it in memory, `stats` counts what was read), arrays are sliced."""
    import torch

    chunks = (source.stream(max_resident_bytes, stats=stats) if hasattr(source, "stream")
              else ((0, a) for a in source))
    for _, chunk in chunks:
        step = max(1, n_tokens_per_batch // chunk.shape[1])
        for i in range(0, len(chunk), step):
            yield torch.from_numpy(chunk[i : i + step])  # a view; the scorer casts on the device


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

    if cfg.sae:
        path = ctx.resolve(cfg.sae) / layout.SAE
        if not path.is_file():
            raise FileNotFoundError(f"sae: {path} does not exist (has the sae cell finished?)")
        model, d = scorers.load(path, device), _shards(train_shards)[0].shape[2]
        if model.mean.shape[0] != d:
            raise ValueError(f"sae: {cfg.sae} was trained on {model.mean.shape[0]}-dim activations; "
                             f"{cfg.activations} holds {d}-dim ones")
        ctx.log(f"scorer: the autoencoder of {path}")
        return model, 0.0
    path = RunsRoot(ctx.runs_root).scorer(scorer_key(cfg, ctx))
    ctx.record_output(path)  # --force on this cell retrains it
    if path.exists():
        ctx.log(f"scorer reused from {path}")
        return scorers.load(path, device), 0.0
    options = {
        "kmeans": {"n_iter": cfg.kmeans_iters},
        "sae": {"l1": cfg.sae_l1, "lr": cfg.sae_lr, "steps": cfg.sae_steps, "batch": cfg.sae_batch},
    }.get(cfg.scorer, {})
    scorer = scorers.make(cfg.scorer, cfg.n_prototypes, cfg.seed, **options)
    start = time.perf_counter()
    scorer.train(_training_patches(_shards(train_shards), cfg.train_patches, cfg.seed).to(device))
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
    from nfjobs.activations import StreamStats
    from nfjobs.nf.training import uses_bf16

    (train_src, train_traits), (val_src, val_traits), names = _load(cfg, ctx)
    scorer, seconds_scorer = _scorer(cfg, ctx, train_src, device)
    ctx.log_metrics(0, {"seconds_scorer": seconds_scorer, "reused": seconds_scorer == 0.0}, phase="scorer")
    stats, start = StreamStats(), time.perf_counter()
    dtype = torch.bfloat16 if uses_bf16(cfg.precision, device) else torch.float32
    scores = {}
    for split, src in (("train", train_src), ("val", val_src)):
        total = _n_batches(src, cfg.batch_patches, cfg.max_resident_bytes)
        chunks = ctx.progress(batches(src, cfg.batch_patches, cfg.max_resident_bytes, stats),
                              total=total, desc=f"score {cfg.eval_split if split == 'val' else split} images")
        scores[split] = protocol.image_scores(scorer, chunks, device, dtype)
    seconds_score = time.perf_counter() - start
    ctx.log_metrics(0, {"train_images": len(scores["train"]), "val_images": len(scores["val"]),
                        "seconds": seconds_score}, phase="image_scores")
    n_patches = sum(len(s) * s.shape[1] for s in (*_shards(train_src), *_shards(val_src)))
    result = protocol.evaluate(scores["train"], torch.from_numpy(train_traits), scores["val"],
                               torch.from_numpy(val_traits), cfg.n_train, cfg.seed)
    summary = result.summary()
    ctx.log_metrics(0, {k: summary[k] for k in ("map", "constant_map", "train_map", "seconds_select") if k in summary},
                    phase="select")
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
    page = pictures.write_for_score(cfg, ctx, scorer, result, scores["val"], _shards(val_src), val_traits, names,
                                    device)
    rows.append({"row_type": "summary", **summary, "seconds_scorer": seconds_scorer, "seconds_score": seconds_score,
                 "patches_per_s": n_patches / max(seconds_score, 1e-9), "cache_gb_read": stats.bytes_read / 1e9,
                 "peak_resident_bytes": stats.peak_resident_bytes, "pictures": page,
                 "prototypes": int(scores["val"].shape[1]), **_representation(train_src)})
    return rows
