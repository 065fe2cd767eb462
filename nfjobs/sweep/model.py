"""What a sweep is made of: cells, typed overrides, the errors it reports, the job kinds it may name."""

from dataclasses import dataclass, field
from typing import Any

from nfjobs import identity, typed
from nfjobs.errors import UserError, one_line
from nfjobs.kinds import UnknownKind, load_kind

RESERVED = {"kind", "name", "zip", "group", "slurm", "sweep", "search"}
"""Top-level / group keys that are not config fields."""
SWEEP_META = {"name", "seeds", "description", "samples", "sample_seed"}
SEED_POLICIES = ("derived", "fixed")
MAX_CELLS = 200_000
"""Default limit on the cells of one launch (`--max-cells` raises it); counted before any cell is built."""
RUNTIME_AXIS = ("is a runtime field (how or where to run, not what is computed): it is not part of the cell key, "
               "so a grid over it would collapse to one cell; set one value here, give it per launch as a typed "
               "flag (--key value), or put each value in its own sweep file")


class SweepError(UserError):
    """One or more problems with sweep files; `str()` lists them, one per line."""

    def __init__(self, problems: list[str]):
        # one line per problem whatever the files and flags hold: a newline or other control character in a
        # name, key or value is written as its escape
        self.problems = [one_line(text) for text in problems]
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class Cell:
    """One job to run: a job kind, one frozen config and the content hash that names its results."""

    kind: str
    config: Any
    key: str
    sweep: str
    group: str
    stage: int
    source: str
    deps: tuple[str, ...] = ()
    slurm: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Override:
    """A `--dotted.key value` the user typed: it beats the sweep for every cell whose kind has that key."""

    key: str
    text: str | tuple[str, ...]
    """The value as typed: one token, or the tokens after the flag (`--optim.betas 0.9 0.95`)."""


# ---------------------------------------------------------------------------------------------------- kinds
@dataclass(frozen=True)
class KindInfo:
    """What a sweep needs to know of a job kind: its module, config class, leaf fields and their defaults."""

    kind: str
    module: Any
    cls: type
    leaves: dict[str, Any]
    defaults: dict[str, Any]
    runtime: frozenset[str] = frozenset()
    """Dotted keys of runtime fields (how or where to run; not in the cell key)."""

    def identity(self, flat: dict[str, Any]) -> str:
        return identity.identity(self.cls, flat)

    def key(self, ident: str, seed: Any) -> str:
        return identity.digest(self.kind, ident, seed)


_KIND_CACHE: dict[str, KindInfo] = {}


def kind_info(kind: str) -> KindInfo:
    if kind not in _KIND_CACHE:
        module = load_kind(kind)
        cls = module.Config
        leaves = typed.leaf_fields(cls)
        clash = RESERVED & {k.split(".")[0] for k in leaves}
        if clash:
            raise UnknownKind(f"job kind {kind!r}: config fields {sorted(clash)} clash with reserved sweep keys")
        _KIND_CACHE[kind] = KindInfo(kind, module, cls, leaves, typed.defaults_flat(cls), identity.runtime_leaves(cls))
    return _KIND_CACHE[kind]
