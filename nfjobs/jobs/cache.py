"""The `cache` job kind: compute a representation of every image once and store it as activation shards.

Sources: `original` (4×4 pixel patches, or (x, y, r, g, b) points with sparse context), `nf` (the last latent
(B, N, D) of a trained neural field), `tdsm` (token-decoded spatial maps of a trained field, as H·W tokens of
K or 3K channels) and `backbone` (per-patch tokens of a torchvision ViT-B/16 or ResNet layer).

A cell writes one cache per split under `<run_dir>/<split>/` (see `nfjobs.activations`). Sparse context picks
the same seeded random pixels of each image for every source, so representations are compared on the same
observations. A requeued or re-run cell resumes at the first missing shard; a finished one is reused.
A cache too large for one job is written by `parts` tasks at once (see `nfjobs.parts`): each writes its own
range of shards of every split (`nfjobs.activations.part_shards`) and resumes from its own shards; the last to
end marks the caches complete and writes the cell's rows, so dependants see a cache only once all parts are done.
`metrics.jsonl` gets a `cache_<split>` record per shard written (step = shard index) and a `split_<split>` one
per split finished.

Fields read their sparse observations in raster order (the order of a full grid), which set encoders such as the
Perceiver ignore and sequence encoders need. How many pixels a fraction means is the field's own rule: the model's
`context_size(n_pixels, frac)` where it has one, else `nfjobs.nf.fields.n_context` (at least 64 points, as in
sparse Perceiver training; also the rule of `original`). NF+JEPA (`nfjobs.models.jepa.NfJepa`) counts as its
`obs_frac` does in training and evaluation, round(frac · HW) with no minimum: `context_frac = 0.1` is 102 of
1,024 pixels, and 0.05 is 51 where the minimum would make it 64. The points are always a prefix of the same
seeded per-image permutation, so a smaller context is a subset of a larger one. A JEPA `nf` cache holds the
context encoder's output tokens (images, round(frac · HW), dim), what its predictor and decoder read; the linear
and k-NN probes mean-pool them into the per-image embedding (the `z` of its collapse monitor), the transformer
probe reads the tokens. GINR encodes whole images only (`encode(images)`), so it takes full context only.
"""

import inspect
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from nfjobs.config import DataConfig, InvalidField, runtime_field
from nfjobs.identity import file_digest, without_runtime
from nfjobs.probes.tdsm_config import TdsmOptions
from nfjobs.store import layout
from nfjobs.store.layout import looks_like_path

CHECKPOINTABLE = True
"""Resumable: progress is the shards on disk (written atomically), so a requeue continues where it stopped."""
DISTRIBUTED = True
"""A cell of several ranks splits each split's shards (of its part) between them: each rank writes its own range,
then, once every rank is done, rank 0 marks the cache complete. The bytes do not depend on the number of ranks."""

Source = Literal["original", "nf", "tdsm", "backbone"]
Backbone = Literal["vit_b_16", "resnet18", "resnet50"]
RESNET_BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet50": (3, 4, 6, 3)}


def backbone_layers(name: str) -> list[str]:
    """Module names of `name` whose output can be cached (torchvision naming, no weights needed)."""
    if name == "vit_b_16":
        return ["conv_proj", *(f"encoder.layers.encoder_layer_{i}" for i in range(12)), "encoder.ln"]
    blocks = [f"layer{i + 1}.{j}" for i, n in enumerate(RESNET_BLOCKS[name]) for j in range(n)]
    return ["conv1", "bn1", "relu", "maxpool", *(f"layer{i}" for i in range(1, 5)), *blocks]


@dataclass(frozen=True)
class Config:
    """Cache one representation of a dataset's images as activation shards."""

    seed: int = 0
    """Seed of the sparse-context pixel subsets (the same for every source)."""
    data: DataConfig = field(default_factory=DataConfig)
    split: Literal["train", "val", "test", "both", "all"] = "both"
    """Which split(s) to cache; `both` writes `train/` and `val/` (what a probe needs), `all` also `test/`."""
    source: Source = "original"
    """What to cache: pixels, a trained field's last latent, its TDSM, or a vision backbone's layer."""
    checkpoint: str = ""
    """`nf`/`tdsm`: cell key of a `train` cell, or the path of a train run directory (holding model.pt)."""
    label: str = ""
    """Name of this representation in result tables (default: `original`, `backbone`, the field's name such as
    `perceiver-sparse-nce-ft`, or that name + `-tdsm`)."""
    context: Literal["full", "sparse"] = "full"
    """Every pixel, or a seeded random subset of pixels per image (not for `backbone`)."""
    context_frac: float = 0.2
    """Sparse context: fraction of the pixels, counted by the field's rule (at least 64 as in Perceiver training;
    exactly round(frac · HW) for NF+JEPA, its `obs_frac`; at least 64 for `original`)."""
    patch_size: int = 4
    """`original` with full context: side of the square pixel patches."""
    backbone: Backbone = "resnet18"
    """`backbone`: torchvision architecture."""
    backbone_weights: str = ""
    """`backbone`: local state-dict file; empty = random initialisation drawn from `seed` (tests only)."""
    backbone_size: int = 224
    """`backbone`: images are resized to this side (ViT-B/16 is built for it)."""
    layer: str = ""
    """`backbone`: module whose output is cached (see `backbone_layers`); empty = the last block."""
    tdsm: TdsmOptions = field(default_factory=TdsmOptions)
    dtype: Literal["float16", "float32"] = "float16"
    """Storage dtype of the shards."""
    shard_size: int = 1024
    """Images per shard (the unit of resumption)."""
    batch_size: int = runtime_field(256)
    """Images per forward."""
    precision: Literal["auto", "bf16", "fp32"] = runtime_field("auto")
    """Autocast dtype of the field / backbone forward: `auto` = bf16 on CUDA (as the train job), fp32 on CPU."""
    parts: int = runtime_field(1)
    """Tasks the cell runs as, each writing a disjoint range of shards (same cache whatever the number)."""

    def __post_init__(self):
        if not 0.0 < self.context_frac <= 1.0:
            raise InvalidField("context_frac", f"context_frac must be in (0, 1], got {self.context_frac}")
        for name in ("shard_size", "batch_size", "parts"):
            if getattr(self, name) < 1:
                raise InvalidField(name, f"{name} must be >= 1, got {getattr(self, name)}")
        if self.parts > MAX_PARTS:  # each part is a task: a huge number would be listed before anything ran
            raise InvalidField("parts", f"parts must be <= {MAX_PARTS:,} (and no more than the shards the cell "
                                        f"writes), got {self.parts}")
        for name, most in (("patch_size", 1024), ("backbone_size", 8192), ("shard_size", 1 << 20)):
            if not 1 <= getattr(self, name) <= most:
                raise InvalidField(name, f"{name} must be >= 1 and <= {most:,}, got {getattr(self, name)}")

    @property
    def backbone_layer(self) -> str:
        return self.layer or ("encoder.ln" if self.backbone == "vit_b_16" else "layer4")


MAX_PARTS = 10_000
"""Most tasks one cache cell runs as (checked before the shards are counted)."""


def _checkpoint_file(run_dir: Path) -> Path:
    return run_dir / layout.MODEL if run_dir.is_dir() else run_dir


def check(cfg: Config) -> list[tuple[str, str]]:
    """Problems visible without torch: missing checkpoint path or weights file, unknown layer, bad combos."""
    from nfjobs.data import check as check_data

    problems = check_data(cfg.data, splits=_splits(cfg))
    if cfg.parts > 1 and not problems:
        problems += _parts_problems(cfg)
    if cfg.source in ("nf", "tdsm"):
        if not cfg.checkpoint:
            problems.append(("checkpoint", f"source {cfg.source!r} needs the cell key or run dir of a train cell"))
        elif looks_like_path(cfg.checkpoint) or cfg.checkpoint.endswith(".pt"):
            ckpt = _checkpoint_file(Path(cfg.checkpoint).expanduser())
            if not ckpt.is_file():
                problems.append(("checkpoint", f"{ckpt} does not exist (a train run dir holds {layout.MODEL})"))
    if cfg.source == "backbone":
        valid = backbone_layers(cfg.backbone)
        if cfg.layer and cfg.layer not in valid:
            problems.append(("layer", f"{cfg.backbone} has no layer {cfg.layer!r}; valid: {', '.join(valid)}"))
        if cfg.backbone_weights and not Path(cfg.backbone_weights).expanduser().is_file():
            problems.append(("backbone_weights", f"{cfg.backbone_weights} does not exist"))
        if cfg.context == "sparse":
            problems.append(("context", "a backbone sees whole images; use context = 'full'"))
    return problems


def _parts_problems(cfg: Config) -> list[tuple[str, str]]:
    """`parts` no more than the shards of the largest split the cell writes (a part with no shard to write is a
    task that does nothing)."""
    from nfjobs.data import split_size

    sizes = {s: split_size(cfg.data, s) for s in _splits(cfg)}
    if None in sizes.values():
        return []
    shards = max(-(-n // cfg.shard_size) for n in sizes.values())
    if cfg.parts > shards:
        counts = ", ".join(f"{s} {n:,}" for s, n in sizes.items())
        return [("parts", f"parts must be <= {shards:,}, the shards of the largest split this cell writes "
                          f"(images: {counts}; shard_size {cfg.shard_size:,}), got {cfg.parts:,}")]
    return []


def _splits(cfg: Config) -> tuple[str, ...]:
    return {"both": ("train", "val"), "all": ("train", "val", "test")}.get(cfg.split, (cfg.split,))


def depends_on(cfg: Config) -> list[str]:
    """The train cell whose checkpoint this cache reads (a key or a run dir)."""
    needs = cfg.source in ("nf", "tdsm") and cfg.checkpoint
    return [cfg.checkpoint] if needs else []


# ---------------------------------------------------------------- helpers (torch imported inside)
def sparse_indices(image_ids: range, n_pixels: int, n_keep: int, seed: int, split: str):
    """(len(image_ids), n_keep) pixel indices, a function of (seed, split, image index) only: any source,
    shard size or restart draws the same points for the same image."""
    import numpy as np

    salt = 0 if split == "train" else 1
    return np.stack([np.random.default_rng([seed, salt, i]).permutation(n_pixels)[:n_keep] for i in image_ids])


def load_field(run_dir: Path, device):
    """The trained neural field of a train run directory (eval mode) and its name (`models.trained.field_name`)."""
    from nfjobs.models.trained import field_name, load_trained

    model, tc = load_trained(run_dir, device)
    return model, field_name(tc)


def _build_backbone(cfg: Config, device):
    """The torchvision backbone (weights from `backbone_weights`) and the module whose output is cached.
    The layer name is checked on the `meta` device first, so a bad name fails before any real allocation."""
    import torch
    import torchvision.models as tvm

    kwargs = {"image_size": cfg.backbone_size} if cfg.backbone == "vit_b_16" else {}
    with torch.device("meta"):
        names = {n for n, _ in getattr(tvm, cfg.backbone)(**kwargs).named_modules()}
    if cfg.backbone_layer not in names:
        raise ValueError(f"{cfg.backbone} has no layer {cfg.backbone_layer!r}; valid: {', '.join(backbone_layers(cfg.backbone))}")
    with torch.random.fork_rng(devices=[]):  # without weights, the same random backbone for the same key in any process
        torch.manual_seed(cfg.seed)
        model = getattr(tvm, cfg.backbone)(**kwargs)
    if cfg.backbone_weights:
        from nfjobs.store.files import load_tensors

        state = load_tensors(Path(cfg.backbone_weights).expanduser())
        model.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
    return model.to(device).eval(), dict(model.named_modules())[cfg.backbone_layer]


class _Stop(Exception):
    """Raised by the layer hook: nothing after the cached layer needs computing."""


def _make_encoder(cfg: Config, ctx):
    """A function (split, image ids, uint8 images (B, H, W, 3)) -> activations (B, T, D) on the device, plus
    the provenance fields it adds to the cache metadata. All validation happens before anything touches the
    device."""
    problems = check(cfg)
    if problems:
        raise ValueError("; ".join(f"{k}: {m}" for k, m in problems))
    meta: dict = {}
    ckpt = None
    if cfg.source in ("nf", "tdsm"):
        try:
            run_dir = ctx.resolve(cfg.checkpoint)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"checkpoint: {err} (has the train cell run?)") from None
        ckpt = _checkpoint_file(run_dir)
        if not ckpt.is_file():
            raise FileNotFoundError(f"checkpoint: {ckpt} does not exist (a train run dir holds {layout.MODEL})")
        meta = {"checkpoint": cfg.checkpoint, "checkpoint_sha256": file_digest(ckpt)}

    import torch
    import torch.nn.functional as F
    from einops import rearrange

    from nfjobs.nf import fields as nf
    from nfjobs.nf.training import uses_bf16

    device = ctx.device()
    context_size = nf.n_context  # (n_pixels, frac) -> points of a sparse context
    if cfg.source == "backbone":
        model, layer = _build_backbone(cfg, device)
        meta = {"backbone": cfg.backbone, "layer": cfg.backbone_layer, "weights": cfg.backbone_weights}
        mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)
        out: list = []

        def hook(_module, _inputs, output):
            out.append(output)
            raise _Stop

        layer.register_forward_hook(hook)
    if cfg.source in ("nf", "tdsm"):
        model, field_name = load_field(run_dir.parent if run_dir.is_file() else run_dir, device)
        meta["field"] = field_name
        if cfg.source == "nf" and hasattr(model, "token_cells"):  # where each latent sits, for pictures
            meta["token_grid"], meta["token_cells"] = list(model.token_grid), model.token_cells.tolist()
        takes_points = len(inspect.signature(model.encode).parameters) == 2
        if cfg.context == "sparse" and not takes_points:
            raise ValueError(f"checkpoint: {type(model).__name__} encodes whole images; sparse context needs "
                             "a field with encode(coords, rgb)")
        context_size = getattr(model, "context_size", context_size)

    @torch.no_grad()
    def encode(split: str, ids: range, images_u8) -> "torch.Tensor":
        images = torch.from_numpy(images_u8).to(device).permute(0, 3, 1, 2).float() / 255  # (B, 3, H, W)
        b, _, h, w = images.shape
        coords, rgb = nf.grid(h, w, device).expand(b, -1, -1), nf.pixels(images)
        if cfg.context == "sparse":
            keep = context_size(h * w, cfg.context_frac)
            idx = torch.from_numpy(sparse_indices(ids, h * w, keep, cfg.seed, split)).to(device)  # (B, keep)
            if cfg.source in ("nf", "tdsm"):
                idx = idx.sort(dim=1).values  # raster order, as a sequence encoder (JEPA's Mamba) scans it
            coords, rgb = nf.gather(coords, idx), nf.gather(rgb, idx)  # (B, keep, 2), (B, keep, 3)
        if cfg.source == "original":
            if cfg.context == "sparse":
                return torch.cat([coords.flip(-1), rgb * 2 - 1], dim=-1)  # (x, y, r, g, b)
            p = cfg.patch_size
            return rearrange(images * 2 - 1, "b c (h p) (w q) -> b (h w) (p q c)", p=p, q=p)
        if cfg.source == "backbone":
            x = F.interpolate(images, size=(cfg.backbone_size,) * 2, mode="bilinear", align_corners=False)
            out.clear()
            try:
                model((x - mean) / std)
            except _Stop:
                pass
            act = out[0]
            if act.ndim == 4:  # ResNet / patch embedding: (B, C, H, W) → tokens
                return rearrange(act, "b c h w -> b (h w) c")
            return act[:, 1:]  # ViT blocks: drop the class token
        latents = model.encode(coords, rgb) if takes_points else model.encode(images)
        if cfg.source == "nf":
            return latents
        from nfjobs.probes.tdsm import tdsm, token_subset

        t = cfg.tdsm
        tokens = token_subset(latents.shape[1], t.every, t.tokens)
        maps = tdsm(model.decode, nf.grid(h, w, device), latents, (h, w), tokens, t.reduce, t.chunk)
        return rearrange(maps, "b h w c -> b (h w) c")

    bf16 = uses_bf16(cfg.precision, device)
    meta["precision"] = "bf16" if bf16 else "fp32"

    def encode_with_autocast(split: str, ids: range, images_u8) -> "torch.Tensor":
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return encode(split, ids, images_u8)

    return encode_with_autocast, meta


def _default_label(source: str, field_name: str | None) -> str:
    """`original`, `resnet18-layer4`, the field's name (`perceiver-sparse`), or `perceiver-sparse-tdsm`."""
    if source == "nf":
        return field_name or source
    return f"{field_name}-{source}" if field_name else source


def cache_dir(run_dir: Path, split: str) -> Path:
    """Where a cache cell keeps the activations of `split`."""
    return Path(run_dir) / split


def run(cfg: Config, ctx) -> list[dict]:
    """Write (or finish, or reuse) the caches of the requested split(s); one row per split."""
    import json

    import numpy as np

    from nfjobs.activations import LABELS, CacheWriter, part_shards
    from nfjobs.data import open_split

    rows, todo = [], []
    for split in _splits(cfg):
        meta_file = cache_dir(ctx.run_dir, split) / layout.META
        if meta_file.exists() and (meta := json.loads(meta_file.read_text())).get("complete"):
            ctx.log(f"{split}: cache complete, reused")
            rows.append({"cached_split": split, "n_images": meta["n_images"], "n_tokens": meta["n_tokens"],
                         "d": meta["d"], "shards_written": 0, "cache_s": 0.0})
        else:
            todo.append(split)
    if not todo:
        return rows
    import torch

    from nfjobs.nf.training import sum_over_ranks

    encode, provenance = _make_encoder(cfg, ctx)
    store_dtype = getattr(torch, cfg.dtype)
    for split in todo:
        data = open_split(cfg.data, split)
        start = time.perf_counter()
        first = encode(split, range(1), next(data.batches(range(1), 1)))
        meta = {
            "source": cfg.source, "context": cfg.context,
            "label": cfg.label or _default_label(cfg.source, provenance.get("field")),
            "context_frac": cfg.context_frac if cfg.context == "sparse" else 1.0, "seed": cfg.seed,
            "dataset": without_runtime(cfg.data), "split": split, "image_shape": list(data.image_shape),
            "class_names": list(data.class_names), "trait_names": list(data.trait_names),
            "config": without_runtime(cfg), **provenance,
        }
        writer = CacheWriter(cache_dir(ctx.run_dir, split), json.loads(json.dumps(meta)), data.n,
                             first.shape[1], first.shape[2], cfg.shard_size, cfg.dtype)
        if ctx.is_main and (ctx.part is None or not (writer.root / LABELS).exists()):
            writer.write_labels(data.labels, data.traits)
        mine = part_shards(writer.n_shards, ctx.part, ctx.parts) if ctx.part is not None else range(writer.n_shards)
        ranks_share = part_shards(len(mine), ctx.rank, ctx.world_size)  # the ranks split a part as parts split a cell
        mine = mine[ranks_share.start:ranks_share.stop]
        missing = [i for i in writer.missing_shards() if i in mine]
        if missing and len(missing) < len(mine):
            ctx.log(f"{split}: resuming at shard {missing[0]} of {mine}")
            ctx.mark_resumed(f"{split} shard {missing[0]}")
        for i in ctx.progress(missing, total=len(missing), desc=f"cache {split}"):
            ids = writer.shard_range(i)
            parts, s = [], ids.start
            for images in data.batches(ids, cfg.batch_size):
                sub, s = range(s, s + len(images)), s + len(images)
                # cast on the device: half the bytes to move, and no slow float32 -> float16 pass in numpy
                parts.append(encode(split, sub, images).to(store_dtype).cpu().numpy())
            writer.write_shard(i, np.concatenate(parts))
            ctx.log_metrics(i, {"images": len(ids), "seconds": time.perf_counter() - start}, phase=f"cache_{split}")
        ctx.barrier()  # every rank's shards are on disk
        if ctx.part is None and ctx.is_main:
            writer.finish()
        elapsed = time.perf_counter() - start
        written = [len(missing), sum(len(writer.shard_range(i)) for i in missing)]
        n_written, n_new = (int(x) for x in sum_over_ranks(torch.tensor(written, dtype=torch.int64)).tolist())
        ctx.log_metrics(writer.n_shards, {"n_images": writer.n_images, "shards_written": n_written,
                                          "cache_s": elapsed, "images_per_s": n_new / max(elapsed, 1e-9)},
                        phase=f"split_{split}")
        rows.append({"cached_split": split, "n_images": writer.n_images, "n_tokens": writer.n_tokens, "d": writer.d,
                     "shards_written": n_written, "cache_s": elapsed, "images_per_s": n_new / max(elapsed, 1e-9)})
    return rows


def finalise(cfg: Config, ctx, part_rows: list[list[dict]]) -> list[dict]:
    """Every part has written its shards: mark each split's cache complete; one row per split, summed over the
    parts (`cache_s` is the slowest part's)."""
    from nfjobs.activations import finish_cache

    rows = []
    for split in dict.fromkeys(r["cached_split"] for rows_ in part_rows for r in rows_):
        split_rows = [r for rows_ in part_rows for r in rows_ if r["cached_split"] == split]
        meta = finish_cache(cache_dir(ctx.run_dir, split))
        seconds = max(r["cache_s"] for r in split_rows)
        written = sum(r["shards_written"] for r in split_rows)
        rows.append({"cached_split": split, "n_images": meta["n_images"], "n_tokens": meta["n_tokens"],
                     "d": meta["d"], "shards_written": written, "cache_s": seconds, "parts": len(part_rows),
                     "images_per_s": sum(r.get("images_per_s", 0.0) for r in split_rows)})
    return rows
