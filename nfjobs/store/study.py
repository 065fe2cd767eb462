"""A search's Optuna study, kept in a journal file of the runs root (`RunsRoot.study`): opening it, and the
question a running trial asks its pruner. Optuna is optional (the `search` extra): it is imported only when a
search runs, and its absence is one line saying how to install it."""

import fcntl
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from nfjobs.errors import UserError, one_line
from nfjobs.store.layout import RunsRoot

INSTALL = "pip install 'nfjobs[search]' (or: uv sync --extra search)"


class SearchUnavailable(UserError):
    """A `[search]` table was given but Optuna is not installed."""


class StudyUnreadable(UserError):
    """A search's journal file in the runs root cannot be read back (damaged, or not Optuna's)."""


def optuna() -> Any:
    """The optuna module, or SearchUnavailable saying how to install it."""
    try:
        import optuna as found
    except ImportError:
        raise SearchUnavailable(f"a [search] table needs Optuna, which is not installed: {INSTALL}; "
                                "nothing was submitted") from None
    found.logging.set_verbosity(found.logging.WARNING)
    return found


def storage(runs_root: Path | str, sweep: str) -> Any:
    """The sweep's study storage: a journal file (appended under a file lock, so the launcher and running
    trials on other nodes of a shared file system can use it at once)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.storages.journal._file import BaseJournalFileLock

    class FlockLock(BaseJournalFileLock):
        """An flock on `<journal>.lock`: the kernel releases it when its holder dies. Optuna's own file locks
        outlive a killed launcher until a 30 s grace period ends (measured: a relaunch after SIGKILL waited
        that long)."""

        def __init__(self, path: Path):
            self.path, self.handle = path, None

        def acquire(self) -> bool:
            self.handle = open(self.path, "a")
            fcntl.flock(self.handle, fcntl.LOCK_EX)
            return True

        def release(self) -> None:
            self.handle.close()

    path = RunsRoot(runs_root).study(sweep)
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path), lock_obj=FlockLock(path.with_name(path.name + ".lock"))))


def open_study(runs_root: Path | str, sweep: str, create: dict[str, Any] | None = None, **load: Any) -> Any:
    """The sweep's study, loaded (`load`: load_study's other arguments), or, given `create` (create_study's other
    arguments), created on first use. The journal is data of the runs root, read back (replayed) here: one that
    cannot be read is StudyUnreadable, one line naming it."""
    module = optuna()
    try:
        if create is None:
            return module.load_study(study_name=sweep, storage=storage(runs_root, sweep), **load)
        return module.create_study(study_name=sweep, storage=storage(runs_root, sweep), load_if_exists=True, **create)
    except Exception as err:  # noqa: BLE001 - any way a damaged journal fails is the same problem for the user
        raise StudyUnreadable(f"{RunsRoot(runs_root).study(sweep)}: not a search journal this launcher can read "
                              f"({one_line(f'{type(err).__name__}: {err}')[:200]}); move it aside to start the "
                              "search afresh (finished trial cells are kept and reused); nothing was submitted") from None


def pruner(name: str) -> Any:
    """Optuna's pruner for a `[search] pruner` name."""
    pruners = optuna().pruners
    return {"none": pruners.NopPruner, "median": pruners.MedianPruner, "hyperband": pruners.HyperbandPruner}[name]()


@dataclass(frozen=True)
class TrialRef:
    """Which trial of which study a cell runs as (picklable: it travels with the cell to its worker)."""

    runs_root: str
    sweep: str
    trial_id: int
    pruner: str
    metric: str


def pruning_hook(ref: TrialRef) -> Callable[[int, dict[str, Any]], bool]:
    """`report(step, metrics)`: records the trial's intermediate value of the searched metric (if `metrics` has
    it) and returns whether the pruner says to stop."""
    found: dict[str, Any] = {}

    def report(step: int, metrics: dict[str, Any]) -> bool:
        value = metrics.get(ref.metric)
        if ref.pruner == "none" or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if "trial" not in found:
            study = open_study(ref.runs_root, ref.sweep, pruner=pruner(ref.pruner))
            found["trial"] = optuna().trial.Trial(study, ref.trial_id)
        trial = found["trial"]
        trial.report(float(value), step)
        return trial.should_prune()

    return report
