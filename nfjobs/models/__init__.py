"""Neural-field model families trained by the `train` job kind (contract: docs/models.md).

A family is a module (imported only when a job runs) providing
`build(cfg) -> nn.Module` (the model has `encode(...) -> latents (B, N, D)` and
`decode(queries, latents) -> (rgb, hidden)`), `training_loss(model, images, step, cfg) -> (loss, logs)`,
`evaluate(model, images, cfg) -> list[dict]` and optionally `after_step(model, step, cfg)` and
`reconstruct(model, images, frac) -> images` (with `CONTEXT_FREE = True` when the reconstruction ignores `frac`:
the model always encodes the whole image). `cfg` is the whole train config
(`nfjobs.models.train_config.TrainConfig`).
A model whose latent tokens each belong to a cell of a grid over the image may say where: `token_grid`
(rows, cols) and `token_cells` (row-major cell index per latent); caches record both and pictures outline
those cells (without them, tokens are taken to be a square grid in row-major order).
"""

import importlib
from types import ModuleType

FAMILIES: dict[str, str] = {
    "perceiver": "nfjobs.models.perceiver",
    "ginr": "nfjobs.models.ginr",
    "jepa": "nfjobs.models.jepa",
}
"""Model family name → module path (the names of `TrainConfig.model`)."""
OPTIONS: dict[str, tuple[str, ...]] = {
    "perceiver": ("perceiver", "context_frac", "nce_weight", "nce", "jitter"),
    "ginr": ("ginr",),
    "jepa": ("jepa",),
}
"""The train-job options (top-level fields and sub-config tables) each family reads; the family-specific
options of the others must keep their defaults (a value there would be silently ignored or rejected late)."""
FAMILY_SPECIFIC = ("perceiver", "ginr", "jepa", "context_frac", "nce_weight", "nce", "jitter")


def foreign_options(cfg, defaults) -> list[tuple[str, str]]:
    """`(dotted key, message)` for every family-specific option of `cfg` (a train config) that differs from
    `defaults` but is not one `cfg.model` reads."""
    import dataclasses

    problems = []
    for name in FAMILY_SPECIFIC:
        if name in OPTIONS[cfg.model]:
            continue
        value, default = getattr(cfg, name), getattr(defaults, name)
        if value == default:
            continue
        if dataclasses.is_dataclass(value):
            keys = [f"{name}.{f.name}" for f in dataclasses.fields(value)
                    if getattr(value, f.name) != getattr(default, f.name)]
        else:
            keys = [name]
        users = [f for f, used in OPTIONS.items() if name in used]
        for key in keys:
            problems.append((key, f"model {cfg.model!r} does not use this option (it is for "
                                  f"{', '.join(users)}); leave it at its default for {cfg.model!r}"))
    return problems


def load_family(name: str) -> ModuleType:
    """The module implementing the family `name`."""
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known: {', '.join(sorted(FAMILIES))}")
    return importlib.import_module(FAMILIES[name])
