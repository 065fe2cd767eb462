"""The `probe` job kind: train a classifier on the cached activations of one cache cell, report val accuracy.

Reads `<cache run dir>/train/` and `<cache run dir>/val/` (a `cache` cell with `split = "both"`) and nothing
else: no model is loaded, no activation recomputed. Probes: the small transformer of seed 000 on the tokens,
logistic regression and distance-weighted k-NN on mean-pooled tokens, and the TDSM heads (`tdsm_gap`,
`tdsm_gmp`, `tdsm_cnn`, `tdsm_attn`) on the maps of a `tdsm` cache with a frozen field.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nfjobs.config import runtime_field

Probe = Literal["transformer", "linear", "knn", "tdsm_gap", "tdsm_gmp", "tdsm_cnn", "tdsm_attn"]


@dataclass(frozen=True)
class Config:
    """Fit one probe on one cached representation."""

    seed: int = 0
    """Seed of initialisation and batch order."""
    activations: str = ""
    """Cell key of a `cache` cell (split = both), or the path of its run directory."""
    probe: Probe = "linear"
    """Classifier: small transformer on tokens, logistic regression or k-NN on mean-pooled tokens, or a TDSM
    head on the maps of a `tdsm` cache."""
    epochs: int = 8
    """Training epochs of the transformer and the TDSM heads."""
    lr: float = 1e-3
    """Peak AdamW learning rate (one-cycle schedule) of the transformer and the TDSM heads."""
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
    """Training features larger than this stay in host memory and go to the device batch by batch."""

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.knn_k < 1:
            raise ValueError("epochs, batch_size and knn_k must be >= 1")


def _looks_like_path(ref: str) -> bool:
    return "/" in ref or ref.startswith((".", "~"))


def check(cfg: Config) -> list[tuple[str, str]]:
    """A named cache path must exist and hold both splits; a key is checked by the launcher (depends_on)."""
    if not cfg.activations:
        return [("activations", "name the cell key or run directory of a cache cell")]
    if _looks_like_path(cfg.activations):
        root = Path(cfg.activations).expanduser()
        missing = [s for s in ("train", "val") if not (root / s / "meta.json").is_file()]
        if missing:
            return [("activations", f"{root} has no cached {' or '.join(missing)} split (a cache cell with "
                                    "split = 'both' writes train/ and val/)")]
    return []


def depends_on(cfg: Config) -> list[str]:
    """The cache cell this probe reads, when named by key."""
    return [] if not cfg.activations or _looks_like_path(cfg.activations) else [cfg.activations]


def run(cfg: Config, ctx) -> list[dict]:
    """Fit the probe on the train cache and score it on the val cache; one row."""
    problems = check(cfg)
    if problems:
        raise ValueError("; ".join(f"{k}: {m}" for k, m in problems))
    from nfjobs.activations import open_cache

    root = ctx.resolve(cfg.activations)
    train, val = open_cache(root / "train"), open_cache(root / "val")
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
    if cfg.probe in ("linear", "knn"):
        x_train = torch.from_numpy(train.load_all("mean")).to(device)
        x_val = torch.from_numpy(val.load_all("mean")).to(device)
        if cfg.probe == "linear":
            res = linear.logistic_regression(x_train, y_train, x_val, y_val, n_classes=n_classes,
                                             c=cfg.linear_c, max_iter=cfg.linear_max_iter)
        else:
            res = linear.knn(x_train, y_train, x_val, y_val, n_classes=n_classes, k=cfg.knn_k)
    else:
        x_train, x_val = torch.from_numpy(train.load_all()), torch.from_numpy(val.load_all())
        if x_train.numel() * x_train.element_size() <= cfg.max_resident_gb * 1e9:
            x_train, x_val = x_train.to(device), x_val.to(device)
        model = _make_model(cfg, meta, train.n_tokens, train.d, n_classes)
        if cfg.probe.startswith("tdsm_"):
            h, w = meta["image_shape"][:2]
            x_train, x_val = x_train.unflatten(1, (h, w)), x_val.unflatten(1, (h, w))
        res = fit(model, x_train, y_train, x_val, y_val, epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                  weight_decay=cfg.weight_decay, seed=cfg.seed, device=device)
    return [{
        "representation": meta["label"], "source": meta["source"], "context": meta["context"],
        "context_frac": meta["context_frac"], "dataset": meta["dataset"]["name"], "n_train": train.n_images,
        "n_val": val.n_images, "n_tokens": train.n_tokens, "d": train.d, "accuracy": res.accuracy,
        "train_accuracy": res.train_accuracy, "train_s": res.train_s,
    }]


def _make_model(cfg: Config, meta: dict, n_tokens: int, d: int, n_classes: int):
    if cfg.probe == "transformer":
        from nfjobs.probes.transformer import SmallTransformer

        return SmallTransformer(d, n_tokens, n_classes, d_model=cfg.d_model)
    from nfjobs.probes.tdsm import make_head

    h, w = meta["image_shape"][:2]
    per_token = 3 if meta["config"]["tdsm"]["reduce"] == "rgb" else 1
    return make_head(cfg.probe.removeprefix("tdsm_"), (h, w), d // per_token, d, n_classes)
