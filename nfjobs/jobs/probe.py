"""The `probe` job kind: train a classifier on one representation of a dataset, report val accuracy.

Usually it reads `<cache run dir>/train/` and `<cache run dir>/val/` (a `cache` cell with `split = "both"`) and
nothing else: no model is loaded, no activation recomputed. Probes: the small transformer of seed 000 on the
tokens, logistic regression and distance-weighted k-NN on mean-pooled tokens, and the TDSM heads (`tdsm_gap`,
`tdsm_gmp`, `tdsm_cnn`, `tdsm_attn`) on the maps of a `tdsm` cache with a frozen field (`tdsm_mode = "frozen"`).
The transformer and the TDSM heads stream a training split larger than `max_resident_gb` from the cache
(shuffled pieces, at most that much of it in memory); the linear and k-NN probes hold only mean-pooled tokens.

The other TDSM modes (seed 001, option B and C) train the field too, so they cannot read a cache: they name a
train cell (`checkpoint`), load its field, decode TDSM maps (`tdsm` options) on the fly with the batched decoder
and train field and head together (`finetune`), or the head alone first (`two_stage`). Their images are the
field's own dataset (the train cell's `data`, both splits) with full context; their rows carry the name a
`tdsm` cache of that field gets (`perceiver-tdsm`), so frozen and fine-tuned heads line up in the report.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from nfjobs.config import InvalidField, runtime_field
from nfjobs.probes.tdsm_config import TdsmOptions
from nfjobs.store import layout
from nfjobs.store.layout import looks_like_path

Probe = Literal["transformer", "linear", "knn", "tdsm_gap", "tdsm_gmp", "tdsm_cnn", "tdsm_attn"]
TdsmMode = Literal["frozen", "finetune", "two_stage"]


@dataclass(frozen=True)
class Config:
    """Fit one probe on one cached representation."""

    seed: int = 0
    """Seed of initialisation and batch order."""
    activations: str = ""
    """Cell key of a `cache` cell (split = both), or the path of its run directory (`tdsm_mode = "frozen"`)."""
    probe: Probe = "linear"
    """Classifier: small transformer on tokens, logistic regression or k-NN on mean-pooled tokens, or a TDSM
    head on TDSM maps."""
    tdsm_mode: TdsmMode = "frozen"
    """TDSM heads: `frozen` trains the head on the cached maps of `activations`; `finetune` trains the field of
    `checkpoint` and the head together on maps decoded on the fly; `two_stage` trains the head alone for
    `head_epochs`, then both for `epochs`."""
    checkpoint: str = ""
    """`finetune` / `two_stage`: cell key of a `train` cell, or the path of its run directory (holding model.pt)."""
    tdsm: TdsmOptions = field(default_factory=TdsmOptions)
    """`finetune` / `two_stage`: which tokens are decoded and how (a frozen head takes the cache's). With
    gradients, `chunk` no longer bounds memory: every chunk of a batch is kept for the backward pass."""
    epochs: int = 8
    """Training epochs of the transformer and the TDSM heads (`two_stage`: of its second stage)."""
    head_epochs: int = 2
    """`two_stage`: epochs of the head alone before the field joins."""
    train_images: int = 0
    """`finetune` / `two_stage`: the first this many training images of the field's dataset (0 = all; a frozen probe
    trains on what its cache holds). Set it like the cache's `data.n_train` to compare heads on the same images."""
    lr: float = 1e-3
    """Peak AdamW learning rate (one-cycle schedule) of the transformer and the frozen TDSM heads; the constant
    learning rate of the head in `finetune` / `two_stage`."""
    field_lr: float = 1e-4
    """`finetune` / `two_stage`: constant AdamW learning rate of the field."""
    weight_decay: float = 0.05
    """AdamW weight decay of the transformer and the TDSM heads."""
    batch_size: int = 128
    """Minibatch size of the transformer and the TDSM heads."""
    d_model: int = 256
    """Transformer width (seed 000: 256)."""
    linear_c: float = 0.1
    """Inverse L2 strength of the logistic regression (scikit-learn's C; seed 000: 0.1)."""
    linear_max_iter: int = 500
    """L-BFGS iterations of the logistic regression."""
    knn_k: int = 20
    """Neighbours of the k-NN probe (seed 000: 20)."""
    max_resident_gb: float = runtime_field(8.0)
    """Transformer and TDSM heads: a training split up to this size is loaded (train and val) and moved to the
    device; a larger one is streamed from the cache with at most this much of it in memory (shuffled pieces,
    `ActivationCache.shuffled_batches`), so the batch order then depends on it."""
    eval_split: Literal["val", "test"] = "val"
    """Split the probe is scored on: `val` (held out of the training images) or `test` (a cache with split =
    'all' writes `test/`; `finetune` / `two_stage` read the field's dataset's test split)."""

    def __post_init__(self):
        for name in ("epochs", "head_epochs", "batch_size", "knn_k"):
            if getattr(self, name) < 1:
                raise InvalidField(name, f"{name} must be >= 1, got {getattr(self, name)}")
        if self.train_images < 0:
            raise InvalidField("train_images", f"train_images must be >= 0 (0 = all), got {self.train_images}")
        for name in ("lr", "field_lr"):
            if getattr(self, name) <= 0:
                raise InvalidField(name, f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_resident_gb <= 0:
            raise InvalidField("max_resident_gb", f"max_resident_gb must be > 0, got {self.max_resident_gb}")


def check(cfg: Config) -> list[tuple[str, str]]:
    """A frozen probe names a cache, a finetune / two_stage one a TDSM head and a train cell; named paths must
    hold what is read (a key is checked by the launcher: depends_on)."""
    if cfg.tdsm_mode != "frozen":
        return _check_with_field(cfg)
    if cfg.checkpoint or cfg.train_images:
        key = "checkpoint" if cfg.checkpoint else "train_images"
        return [(key, f"a frozen probe reads a cache only; {key} is for finetune / two_stage")]
    if not cfg.activations:
        return [("activations", "name the cell key or run directory of a cache cell")]
    if looks_like_path(cfg.activations):
        root = Path(cfg.activations).expanduser()
        missing = [s for s in ("train", cfg.eval_split) if not (root / s / layout.META).is_file()]
        if missing:
            return [("activations", f"{root} has no cached {' or '.join(missing)} split (a cache cell with "
                                    "split = 'both' writes train/ and val/, 'all' also test/)")]
    return []


def _check_with_field(cfg: Config) -> list[tuple[str, str]]:
    problems = []
    if not cfg.probe.startswith("tdsm_"):
        problems.append(("probe", f"tdsm_mode {cfg.tdsm_mode!r} trains a field under a TDSM head; use tdsm_gap, "
                                  "tdsm_gmp, tdsm_cnn or tdsm_attn"))
    if cfg.activations:
        problems.append(("activations", f"tdsm_mode {cfg.tdsm_mode!r} decodes maps from the field, not a cache; "
                                        "leave activations empty"))
    if not cfg.checkpoint:
        problems.append(("checkpoint", f"tdsm_mode {cfg.tdsm_mode!r} needs the cell key or run dir of a train cell"))
    elif looks_like_path(cfg.checkpoint) and not (Path(cfg.checkpoint).expanduser() / layout.MODEL).is_file():
        problems.append(("checkpoint", f"{cfg.checkpoint} holds no {layout.MODEL} (not a finished train run dir)"))
    return problems


def depends_on(cfg: Config) -> list[str]:
    """The cache cell (frozen) or train cell (finetune / two_stage) this probe reads (a key or a run dir)."""
    ref = cfg.activations if cfg.tdsm_mode == "frozen" else cfg.checkpoint
    return [ref] if ref else []


def _epoch_logger(ctx, epochs: int):
    """An `on_epoch` callback: a `probe_epoch` metrics record and a progress tick per epoch; and its closer."""
    bar = ctx.progress_bar(epochs, desc="probe epochs")

    def on_epoch(m: dict) -> None:
        ctx.log_metrics(int(m["epoch"]), m, phase="probe_epoch")
        bar.update()

    return on_epoch, bar.close


def run(cfg: Config, ctx) -> list[dict]:
    """Fit the probe on the train cache and score it on the val cache; one row. `metrics.jsonl` gets a
    `probe_epoch` record per epoch of the trained probes and one `probe` record with the result."""
    problems = check(cfg)
    if problems:
        raise ValueError("; ".join(f"{k}: {m}" for k, m in problems))
    if cfg.tdsm_mode != "frozen":
        row = _run_with_field(cfg, ctx)
        ctx.log_metrics(0, {k: row[k] for k in ("accuracy", "train_accuracy", "train_s")}, phase="probe")
        return [row]
    from nfjobs.activations import open_cache

    root = ctx.resolve(cfg.activations)
    train, val = open_cache(root / "train"), open_cache(root / cfg.eval_split)
    meta = train.meta
    if cfg.probe.startswith("tdsm_") and meta["source"] != "tdsm":
        raise ValueError(f"probe {cfg.probe!r} needs a tdsm cache; {cfg.activations} caches {meta['source']!r}")

    import torch

    from nfjobs.probes import linear
    from nfjobs.probes.fit import fit

    torch.manual_seed(cfg.seed)
    device = ctx.device()
    n_classes = len(meta["class_names"])
    y_train = torch.from_numpy(train.labels).to(device)
    y_val = torch.from_numpy(val.labels).to(device)
    read = {}  # how the trained probes read the cache
    if cfg.probe in ("linear", "knn"):
        x_train = torch.from_numpy(train.load_all("mean")).to(device)
        x_val = torch.from_numpy(val.load_all("mean")).to(device)
        if cfg.probe == "linear":
            res = linear.logistic_regression(x_train, y_train, x_val, y_val, n_classes=n_classes,
                                             c=cfg.linear_c, max_iter=cfg.linear_max_iter)
        else:
            res = linear.knn(x_train, y_train, x_val, y_val, n_classes=n_classes, k=cfg.knn_k)
    else:
        model = _make_model(cfg, meta, train.n_tokens, train.d, n_classes)
        maps = tuple(meta["image_shape"][:2]) if cfg.probe.startswith("tdsm_") else None
        budget = int(cfg.max_resident_gb * 1e9)
        on_epoch, done = _epoch_logger(ctx, cfg.epochs)
        if train.n_images * train.bytes_per_image <= budget:
            x_train, x_val = torch.from_numpy(train.load_all()).to(device), torch.from_numpy(val.load_all()).to(device)
            if maps:
                x_train, x_val = x_train.unflatten(1, maps), x_val.unflatten(1, maps)
            res = fit(model, x_train, y_train, x_val, y_val, epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                      weight_decay=cfg.weight_decay, seed=cfg.seed, device=device, on_epoch=on_epoch)
            n_bytes = (train.n_images + val.n_images) * train.bytes_per_image
            read = {"streamed": False, "cache_gb_read": n_bytes / 1e9, "peak_resident_bytes": n_bytes}
        else:
            res, read = _fit_streamed(cfg, model, train, val, budget, maps, device, on_epoch)
        done()
    ctx.log_metrics(0, {"accuracy": res.accuracy, "train_accuracy": res.train_accuracy, "train_s": res.train_s},
                    phase="probe")
    return [{
        "representation": meta["label"], "source": meta["source"], "context": meta["context"],
        "context_frac": meta["context_frac"], "dataset": meta["dataset"]["name"], "n_train": train.n_images,
        "n_val": val.n_images, "n_tokens": train.n_tokens, "d": train.d, "tdsm_mode": cfg.tdsm_mode,
        "accuracy": res.accuracy, "train_accuracy": res.train_accuracy, "train_s": res.train_s, **read,
    }]


def _fit_streamed(cfg: Config, model, train, val, budget: int, maps: tuple[int, int] | None, device, on_epoch):
    """`fit` with at most `budget` bytes of the caches in memory: every epoch a fresh order seeded by (seed,
    epoch) (`ActivationCache.shuffled_batches`), val read in order; and what was read."""
    import numpy as np
    import torch

    from nfjobs.activations import StreamStats
    from nfjobs.probes.fit import fit_batches

    stats = StreamStats()

    def tensor(acts):
        x = torch.from_numpy(acts)
        return x.unflatten(1, maps) if maps else x

    def train_batches(epoch: int):
        rng = np.random.default_rng([cfg.seed, epoch])
        for idx, acts in train.shuffled_batches(budget, cfg.batch_size, rng, stats):
            yield tensor(acts), torch.from_numpy(train.labels[idx])

    def val_batches():
        for first, chunk in val.stream(budget, stats=stats):
            for i in range(0, len(chunk), cfg.batch_size):
                part = chunk[i : i + cfg.batch_size].copy()  # no view of the chunk outlives it
                yield tensor(part), torch.from_numpy(val.labels[first + i : first + i + len(part)])
            del chunk

    res = fit_batches(model, train_batches, val_batches(), steps_per_epoch=-(-train.n_images // cfg.batch_size),
                      epochs=cfg.epochs, lr=cfg.lr, weight_decay=cfg.weight_decay, device=device, on_epoch=on_epoch)
    return res, {"streamed": True, "cache_gb_read": stats.bytes_read / 1e9,
                 "peak_resident_bytes": stats.peak_resident_bytes}


def _make_model(cfg: Config, meta: dict, n_tokens: int, d: int, n_classes: int):
    if cfg.probe == "transformer":
        from nfjobs.probes.transformer import SmallTransformer

        return SmallTransformer(d, n_tokens, n_classes, d_model=cfg.d_model)
    return _tdsm_head(cfg.probe, tuple(meta["image_shape"][:2]), meta["config"]["tdsm"]["reduce"], d, n_classes)


def _tdsm_head(probe: str, size: tuple[int, int], reduce: str, channels: int, n_classes: int):
    """The head of `probe` (`tdsm_gap`, ...) for maps of `channels` channels (1 or 3 per token)."""
    from nfjobs.probes.tdsm import make_head

    per_token = 3 if reduce == "rgb" else 1
    return make_head(probe.removeprefix("tdsm_"), size, channels // per_token, channels, n_classes)


def _run_with_field(cfg: Config, ctx) -> dict:
    """`finetune` / `two_stage`: TDSM maps of the checkpoint's field over its own dataset, decoded in every step
    (`tdsm.chunk` pairs per decoder forward), train the head and the field; one row like a frozen TDSM probe's."""
    import dataclasses
    import inspect

    import torch

    from nfjobs.data import load_split
    from nfjobs.models.trained import field_name, load_trained
    from nfjobs.nf import fields as nf
    from nfjobs.probes.tdsm import TDSMClassifier, fit_tdsm, token_subset

    try:
        run_dir = ctx.resolve(cfg.checkpoint)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"checkpoint: {err} (has the train cell run?)") from None
    torch.manual_seed(cfg.seed)
    device = ctx.device()
    model, tc = load_trained(run_dir, device)
    data = dataclasses.replace(tc.data, n_train=cfg.train_images) if cfg.train_images else tc.data
    train, val = load_split(data, "train"), load_split(data, cfg.eval_split)
    takes_points = len(inspect.signature(model.encode).parameters) == 2

    def contexts(images_u8) -> tuple[torch.Tensor, ...]:
        """Full context of uint8 images (N, H, W, 3): (coords (N, P, 2), rgb (N, P, 3)) or images (N, 3, H, W)."""
        images = torch.from_numpy(images_u8).to(device).permute(0, 3, 1, 2).float() / 255
        if not takes_points:
            return (images,)
        n, _, h, w = images.shape
        return nf.grid(h, w, device).expand(n, -1, -1), nf.pixels(images)

    x_train, x_val = contexts(train.images), contexts(val.images)
    y_train, y_val = torch.from_numpy(train.labels).to(device), torch.from_numpy(val.labels).to(device)
    size = train.images.shape[1:3]
    with torch.no_grad():
        n_latents = model.encode(*(x[:1] for x in x_train)).shape[1]
    tokens = token_subset(n_latents, cfg.tdsm.every, cfg.tdsm.tokens)
    channels = len(tokens) * (3 if cfg.tdsm.reduce == "rgb" else 1)
    head = _tdsm_head(cfg.probe, size, cfg.tdsm.reduce, channels, len(train.class_names))
    clf = TDSMClassifier(model, nf.grid(*size, device), size, tokens, cfg.tdsm.reduce, head, cfg.tdsm.chunk)
    on_epoch, done = _epoch_logger(ctx, cfg.epochs + (cfg.head_epochs if cfg.tdsm_mode == "two_stage" else 0))
    res = fit_tdsm(clf.to(device), x_train, y_train, x_val, y_val, mode=cfg.tdsm_mode, epochs=cfg.epochs,
                   head_epochs=cfg.head_epochs, head_lr=cfg.lr, field_lr=cfg.field_lr, batch_size=cfg.batch_size,
                   weight_decay=cfg.weight_decay, seed=cfg.seed, on_epoch=on_epoch)
    done()
    return {
        "representation": f"{field_name(tc)}-tdsm", "source": "tdsm", "context": "full", "context_frac": 1.0,
        "dataset": tc.data.name, "n_train": len(y_train), "n_val": len(y_val), "n_tokens": size[0] * size[1],
        "d": channels, "tdsm_mode": cfg.tdsm_mode, "accuracy": res.accuracy, "train_accuracy": res.train_accuracy,
        "train_s": res.train_s,
    }
