"""Sweeps: TOML files -> validated, content-keyed cells (docs/sweeps.md)."""

from nfjobs.sweep.expand import expand, search_of, validate_config
from nfjobs.sweep.model import MAX_CELLS, Cell, KindInfo, Override, SweepError, kind_info
from nfjobs.sweep.sampling import Distribution, Search

__all__ = ["Cell", "Distribution", "KindInfo", "MAX_CELLS", "Override", "Search", "SweepError", "expand", "kind_info",
           "search_of", "validate_config"]
