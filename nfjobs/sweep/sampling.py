"""Distributions as a field's value (`{ uniform = [lo, hi] }`, ...), checked against the field; the points drawn
from them (`[sweep] samples`), and the `[search]` table that lets Optuna choose the points instead.

A drawn value is an ordinary config value: it enters the cell key like any other. Each field draws from its own
random stream, seeded by a hash of (`sample_seed`, group name, dotted key), so the same file and seed give the
same cells on every machine, and adding a distributed field changes no other field's draws.
"""

import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal


from nfjobs import identity, typed
from nfjobs.errors import one_line

KINDS = ("uniform", "loguniform", "intuniform", "choice")
"""The distributions a field may take, in the order the docs list them."""
EXPECTED = ("expected a distribution { uniform = [lo, hi] }, { loguniform = [lo, hi] }, { intuniform = [lo, hi] } "
            "or { choice = [a, b, ...] }")
SIGNIFICANT_DIGITS = 12
"""Drawn floats are rounded to this many digits: a last-bit difference of `exp` between two machines' numpy
builds then cannot change a value, hence a cell key."""


@dataclass(frozen=True)
class Distribution:
    """One field's distribution: `kind` with bounds `(lo, hi)` (inclusive for intuniform) or the `choice` items."""

    kind: str
    values: tuple[Any, ...]

    @property
    def corners(self) -> tuple[Any, Any]:
        """The two ends of its range (first and last choice): what a search is validated at."""
        return self.values[0], self.values[-1]


def parse(add: Callable[[str], None], table: dict[str, Any], tp: Any) -> Distribution | None:
    """The distribution a `{ kind = [...] }` table describes for a field of type `tp`; None after `add`ing each
    problem (one line, without the key: the caller names it)."""
    if len(table) != 1 or next(iter(table)) not in KINDS:
        add(f"{EXPECTED}, got {{ {', '.join(f'{k} = {v!r}' for k, v in table.items())} }}")
        return None
    kind, values = next(iter(table.items()))
    if not isinstance(values, list):
        add(f"{kind}: expected a list, got {values!r}")
        return None
    if kind == "choice":
        if not values:
            add("choice is empty: give at least one value, { choice = [a, b, ...] }")
            return None
        items = []
        for v in values:
            try:
                items.append(typed.coerce(v, tp))
            except typed.TypeMismatch as err:
                add(f"choice: expected {err.expected} for every value, got {v!r}")
                return None
        return Distribution(kind, tuple(items))
    integer = kind == "intuniform"
    numbers = len(values) == 2 and all(isinstance(v, int if integer else (int, float)) and not isinstance(v, bool)
                                       and math.isfinite(v) for v in values)
    if not numbers:
        what = "two integers" if integer else "two finite numbers"
        add(f"{kind}: expected [lo, hi] with {what}, got {values!r}")
        return None
    lo, hi = values
    if not lo < hi:
        add(f"{kind}: expected lo < hi, got [{lo!r}, {hi!r}]")
        return None
    if kind == "loguniform" and lo <= 0:
        add(f"loguniform: expected lo > 0 (its logarithm is drawn uniformly), got [{lo!r}, {hi!r}]")
        return None
    if not integer and not _takes(tp, 0.5):
        if _takes(tp, 1):
            add(f"an integer field takes {{ intuniform = [lo, hi] }} or a choice of integers, got {kind}")
        else:
            add(f"a field of type {typed.describe(tp)} takes {{ choice = [a, b, ...] }}, got {kind}")
        return None
    if integer and not _takes(tp, 1):
        add(f"a field of type {typed.describe(tp)} takes {{ choice = [a, b, ...] }}, got {kind}")
        return None
    return Distribution(kind, (lo, hi))


def _takes(tp: Any, value: Any) -> bool:
    try:
        typed.coerce(value, tp)
    except typed.TypeMismatch:
        return False
    return True


def draw(dist: Distribution, n: int, sample_seed: int, group: str, key: str) -> list[Any]:
    """`n` values of `dist` from the stream of (`sample_seed`, `group`, dotted `key`): the same on every machine."""
    import numpy as np  # only a sweep that draws pays for it: the CLI starts without numpy

    rng = np.random.default_rng(identity.stream_seed(sample_seed, group, key))
    if dist.kind == "choice":
        return [dist.values[i] for i in rng.integers(len(dist.values), size=n)]
    lo, hi = dist.values
    if dist.kind == "intuniform":
        return [int(v) for v in rng.integers(lo, hi, size=n, endpoint=True)]
    if dist.kind == "loguniform":
        found = np.exp(rng.uniform(math.log(lo), math.log(hi), size=n))
    else:
        found = rng.uniform(lo, hi, size=n)
    return [min(max(float(f"{v:.{SIGNIFICANT_DIGITS}g}"), lo), hi) for v in found]


# -------------------------------------------------------------------------------------------------- [search]
@dataclass(frozen=True)
class Search:
    """A sweep file's `[search]` table: Optuna chooses the points of its distributions, round after round."""

    metric: str
    """The result column to optimise (the last of a cell's rows that match `where`)."""
    direction: Literal["minimize", "maximize"] = "minimize"
    trials: int = 20
    """Trials in all; the search stops when this many have ended."""
    per_round: int = 4
    """Trials launched together, as one batch (one array on Slurm)."""
    sampler: Literal["tpe", "random"] = "tpe"
    pruner: Literal["none", "median", "hyperband"] = "none"
    where: dict[str, Any] = field(default_factory=dict)
    """Columns a row must have these values in to count (`{ split = "val" }`)."""
    intermediate: str = ""
    """The per-epoch (or per-step) value the pruner watches, as the kind reports it (train: `curve_psnr@1.0`,
    `train_loss`); default: `metric`."""
    space: dict[str, Distribution] = field(default_factory=dict, compare=False)
    """Dotted key -> distribution: what Optuna chooses (filled in from the group)."""
    seed: int = 0
    """The sampler's seed (`[sweep] sample_seed`)."""
    group: str = "main"
    kind: str = ""
    source: str = ""
    """The sweep file."""
    sweep: str = ""
    """The sweep's name: names the study too."""


SEARCH_TYPES = {name: tp for name, tp in typed.field_types(Search).items()
                if name not in ("space", "seed", "group", "kind", "source", "sweep")}
"""The settings a `[search]` table may hold."""


def parse_search(add: Callable[[str, str], None], table: Any) -> Search | None:
    """The `[search]` table checked field by field (`add(key, message)` per problem); None if any was found."""
    if not isinstance(table, dict):
        add("search", f"expected a [search] table, got {table!r}")
        return None
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in SEARCH_TYPES:
            close = difflib.get_close_matches(key, list(SEARCH_TYPES), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"expected one of {', '.join(SEARCH_TYPES)}"
            add(f"search.{key}", f"unknown search setting; {hint}")
            continue
        if key == "where":
            ok = isinstance(value, dict) and all(not isinstance(v, (dict, list)) for v in value.values())
            if not ok:
                add("search.where", f"expected a table of column = value, e.g. {{ split = \"val\" }}, got {value!r}")
                continue
            if any(not _printable(x) for item in value.items() for x in item):
                add("search.where", "expected column names and values without control characters (a newline, "
                                    f"a tab), got {one_line(repr(value))}")
                continue
            values[key] = dict(value)
            continue
        try:
            values[key] = typed.coerce(value, SEARCH_TYPES[key])
        except typed.TypeMismatch as err:
            add(f"search.{key}", f"expected {err.expected}, got {value!r}")
    for key in ("metric", "intermediate"):
        if isinstance(values.get(key), str) and not _printable(values[key]):
            add(f"search.{key}", f"expected a result column's name, without control characters, got "
                                 f"{one_line(repr(values.pop(key)))}")
    if "metric" not in table:
        add("search.metric", "missing: name the result column to optimise, e.g. metric = \"psnr\"")
    for key in ("trials", "per_round"):
        if isinstance(values.get(key), int) and values[key] < 1:
            add(f"search.{key}", f"expected a whole number >= 1, got {values[key]}")
            del values[key]
    if len(values) < len(table) or "metric" not in values:
        return None
    return Search(**values)


def _printable(value: Any) -> bool:
    return not isinstance(value, str) or one_line(value) == value
