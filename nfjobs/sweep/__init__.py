"""Sweeps: TOML files -> validated, content-keyed cells (docs/sweeps.md)."""

from nfjobs.sweep.expand import expand, validate_config
from nfjobs.sweep.model import MAX_CELLS, Cell, KindInfo, Override, SweepError, kind_info

__all__ = ["Cell", "KindInfo", "MAX_CELLS", "Override", "SweepError", "expand", "kind_info", "validate_config"]
