"""Job kinds: one module each, with a frozen `Config` dataclass and `run(cfg, ctx) -> list[dict]`.

A job module may also define:
- `check(cfg) -> list[tuple[str, str]]`: fast pre-submission checks (no torch, no GPU) returning
  `(dotted key, message)` pairs, e.g. a dataset root that does not exist;
- `depends_on(cfg) -> list[str]`: the cell keys whose artefacts it reads (e.g. a checkpoint to cache from).

Modules must not import torch at import time: the launcher imports them to validate sweeps.
A sweep may also name any importable module with that interface by its dotted path (your own job kinds).
"""

import difflib
import importlib
from types import ModuleType

KINDS: dict[str, str] = {
    "train": "nfjobs.jobs.train",
    "cache": "nfjobs.jobs.cache",
    "probe": "nfjobs.jobs.probe",
    "score": "nfjobs.jobs.score",
    "sae": "nfjobs.jobs.sae",
    "smoke": "nfjobs.jobs.smoke",
}
"""Registered job kinds and their modules."""


class UnknownKind(ValueError):
    pass


def load_kind(kind: str) -> ModuleType:
    """The module implementing `kind`: a registered name or a dotted module path."""
    module_name = KINDS.get(kind, kind if "." in kind else None)
    if module_name is None:
        close = difflib.get_close_matches(kind, KINDS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownKind(f"unknown job kind {kind!r}; valid kinds: {', '.join(sorted(KINDS))}.{hint}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            raise UnknownKind(
                f"job kind {kind!r}: module {module_name!r} not found; valid kinds: {', '.join(sorted(KINDS))}"
            ) from None
        raise
    for attr in ("Config", "run"):
        if not hasattr(module, attr):
            raise UnknownKind(f"job kind {kind!r}: module {module_name!r} has no `{attr}`")
    return module
