"""Where every file of a runs root lives. Each name is written here once; everything else asks a `RunDir` or a
`RunsRoot` (the on-disk format is specified in docs/architecture.md, "The runs root")."""

import re
from dataclasses import dataclass
from pathlib import Path

# ------------------------------------------------------------------ inside a run directory (one per cell key)
RESULT = "result.parquet"
"""The cell's one result file (atomic): its rows, whatever the outcome."""
CONFIG = "config.json"
"""What the cell runs (kind, key, sweep, group, config, provenance), written before it starts."""
CHECKPOINT = "checkpoint.pt"
"""The last state a requeued or relaunched attempt resumes from."""
MODEL = "model.pt"
"""A finished `train` cell's model: {"config": dict, "model": state_dict}."""
SAE = "sae.pt"
"""A finished `sae` cell's autoencoder (a `scoring.scorers.save` file)."""
METRICS = "metrics.jsonl"
"""One JSON record per line while the cell runs (`nfjobs.metrics`)."""
OUTPUTS = "outputs.json"
"""Files the cell produced outside its run directory (shared scorers): `--force` deletes them too."""
PARTS = "parts"
"""Markers of a cell run as several tasks (`nfjobs.parts`)."""
CLAIM = ".claim"
"""Held (flock) by the process running the cell (`.claim-<i>-of-<N>` by a part's): no cell runs twice at once."""
RANK_ENDED = ".rank-ended"
"""Created exclusively by the first rank of a multi-task cell to end it (`.rank-ended-<i>-of-<N>` in a part): that
rank writes the result, no other (`nfjobs.ranks.first_to_end`); removed by the claim holder when an attempt starts."""
PARTS_LOCK = ".lock"
"""In `parts/`: held by the part that finalises the cell."""
RECONSTRUCTIONS = "reconstructions.png"
META = "meta.json"
"""A cache split's description, in `<run dir>/<split>/`."""

# ------------------------------------------------------------------ the runs root itself
MANIFESTS = "_sweeps"
"""`<sweep>.json` per launched sweep: its cells, job ids and log paths."""
CODE = "_code"
"""`<hash>/`: the frozen code copies launched jobs import."""
LOCKS = "_locks"
"""`<sweep>.lock`: held by the launch that is submitting the sweep's cells."""
SEARCHES = "_searches"
"""`<sweep>.journal`: a search's Optuna study (its journal file; `<sweep>.journal.lock` beside it)."""
SCORERS = "scorers"
"""`<scorer key>.pt`: trained scorers shared by the score cells that would train the same one."""

CELL_KEY = re.compile(r"[a-z][a-z0-9_]*-[0-9a-f]{12}")
"""A cell key as the launcher makes it: `<kind>-<12 hex digits>`."""
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
"""A run directory or sweep name: one path component, never `.`/`..`, hidden or with a separator."""


def is_safe_name(name: object) -> bool:
    return isinstance(name, str) and SAFE_NAME.fullmatch(name) is not None and name not in (".", "..")


@dataclass(frozen=True)
class RunDir:
    """The directory of one cell, `<runs root>/<key>`, and every file the launcher keeps in it."""

    root: Path
    key: str

    def __post_init__(self):
        if not is_safe_name(self.key):
            raise ValueError(f"{self.key!r} is not a cell key (a single name of letters, digits, '_', '-', '.')")
        object.__setattr__(self, "root", Path(self.root))

    @property
    def path(self) -> Path:
        return self.root / self.key

    def ensure(self) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        return self.path

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def result(self) -> Path:
        return self.path / RESULT

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def model(self) -> Path:
        return self.path / MODEL

    @property
    def sae(self) -> Path:
        return self.path / SAE

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def outputs(self) -> Path:
        return self.path / OUTPUTS

    def claim(self, part: int | None = None, parts: int = 1) -> Path:
        return self.path / (CLAIM if part is None else f"{CLAIM}-{part}-of-{parts}")

    def rank_ended(self, part: int | None = None, parts: int = 1) -> Path:
        return self.path / (RANK_ENDED if part is None else f"{RANK_ENDED}-{part}-of-{parts}")

    @property
    def parts(self) -> Path:
        return self.path / PARTS

    def part_marker(self, part: int, parts: int) -> Path:
        return self.parts / f"{part}-of-{parts}.json"

    @property
    def parts_lock(self) -> Path:
        return self.parts / PARTS_LOCK


@dataclass(frozen=True)
class RunsRoot:
    """A folder of run directories, sweep manifests, code copies and locks."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    def run(self, key: str) -> RunDir:
        return RunDir(self.path, key)

    def manifest(self, sweep: str) -> Path:
        if not is_safe_name(sweep):
            raise ValueError(f"{sweep!r} is not a sweep name")
        return self.path / MANIFESTS / f"{sweep}.json"

    def manifest_lock(self, sweep: str) -> Path:
        """Held while the manifest is read, changed and written back."""
        return self.manifest(sweep).with_name(f".{sweep}.json.lock")

    @property
    def manifests(self) -> Path:
        return self.path / MANIFESTS

    @property
    def code(self) -> Path:
        return self.path / CODE

    def lock(self, sweep: str) -> Path:
        if not is_safe_name(sweep):
            raise ValueError(f"{sweep!r} is not a sweep name")
        return self.path / LOCKS / f"{sweep}.lock"

    def study(self, sweep: str) -> Path:
        """The journal file of the sweep's search (Optuna's JournalStorage)."""
        if not is_safe_name(sweep):
            raise ValueError(f"{sweep!r} is not a sweep name")
        return self.path / SEARCHES / f"{sweep}.journal"

    def scorer(self, key: str) -> Path:
        if not is_safe_name(key):
            raise ValueError(f"{key!r} is not a scorer key")
        return self.path / SCORERS / f"{key}.pt"


def run_dir(runs_root: Path | str, key: str) -> RunDir:
    """The run directory of cell `key` under `runs_root`."""
    return RunDir(Path(runs_root), key)


def looks_like_path(ref: str) -> bool:
    """A reference (`init_from`, `checkpoint`, `activations`, ...) written as a path rather than a cell key."""
    return "/" in ref or ref.startswith((".", "~"))
