"""Neural-field model families trained by the `train` job kind (contract: docs/models.md).

A family is a module (imported only when a job runs) providing
`build(cfg) -> nn.Module` (the model has `encode(...) -> latents (B, N, D)` and
`decode(queries, latents) -> (rgb, hidden)`), `training_loss(model, images, step, cfg) -> (loss, logs)`,
`evaluate(model, images, cfg) -> list[dict]` and optionally `after_step(model, step, cfg)` and
`reconstruct(model, images, frac) -> images`. `cfg` is the whole `nfjobs.jobs.train.Config`.
"""

import importlib
from types import ModuleType

FAMILIES: dict[str, str] = {
    "perceiver": "nfjobs.models.perceiver",
    "ginr": "nfjobs.models.ginr",
    "jepa": "nfjobs.models.jepa",
}
"""Model family name → module path (the names of `nfjobs.jobs.train.Config.model`)."""


def load_family(name: str) -> ModuleType:
    """The module implementing the family `name`."""
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known: {', '.join(sorted(FAMILIES))}")
    return importlib.import_module(FAMILIES[name])
