"""A finished `train` cell's field: loading it from its run directory, and the name it goes by in results."""

import dataclasses
import typing
from pathlib import Path
from typing import Any

from nfjobs.models.train_config import TrainConfig
from nfjobs.store import layout


def field_name(tc: Any) -> str:
    """A trained field's name from its train config (`TrainConfig` or anything with its fields): the family, then
    `-sparse` (sparse-context training), `-nce` (Soft-InfoNCE), `-ft` (initialised from another cell)."""
    tags = [t for t, on in (("sparse", tc.context_frac < 1), ("nce", tc.nce_weight > 0), ("ft", tc.init_from)) if on]
    return "-".join([tc.model, *tags])


def config_from_dict(cls: type, values: dict[str, Any]) -> Any:
    """Rebuild a (nested, frozen) config dataclass from `dataclasses.asdict` output."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        v, tp = values[f.name], hints[f.name]
        if dataclasses.is_dataclass(tp):
            v = config_from_dict(tp, v)
        elif typing.get_origin(tp) is tuple:
            v = tuple(v)
        kwargs[f.name] = v
    return cls(**kwargs)


def load_trained(run_dir: str | Path, device: Any = "cpu") -> tuple[Any, TrainConfig]:
    """The trained model of a finished `train` cell (eval mode, on `device`) and its config."""
    from nfjobs.models import load_family
    from nfjobs.store.files import load_tensors

    blob = load_tensors(Path(run_dir) / layout.MODEL, map_location=device)
    cfg = config_from_dict(TrainConfig, blob["config"])
    model = load_family(cfg.model).build(cfg)
    model.load_state_dict(blob["model"])
    return model.to(device).eval(), cfg
