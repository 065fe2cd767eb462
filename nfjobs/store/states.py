"""Cell states, declared once. A cell's state comes from its result file (the truth for ended cells) and, while
it has none or a retry is live, from its job (`nfjobs.backends` maps each scheduler's words onto these)."""

from typing import Literal, get_args

Outcome = Literal["ok", "failed", "blocked", "cancelled", "pruned"]
"""What a result file can say (its `status` column)."""
State = Literal["ok", "failed", "blocked", "cancelled", "pruned", "running", "pending", "requeued", "not run"]
"""Every state `launch.py status` and `results.cell_states` report."""

OK: Outcome = "ok"
FAILED: Outcome = "failed"
BLOCKED: Outcome = "blocked"
CANCELLED: Outcome = "cancelled"
PRUNED: Outcome = "pruned"
"""A search's pruner stopped the trial early (its checkpoint is kept); the search counts it as ended."""
RUNNING: State = "running"
PENDING: State = "pending"
REQUEUED: State = "requeued"
NOT_RUN: State = "not run"

OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
STATES: tuple[State, ...] = get_args(State)
LIVE: tuple[State, ...] = (RUNNING, PENDING, REQUEUED)
"""States of a cell whose job is still queued or running."""
UNSUCCESSFUL: tuple[State, ...] = (FAILED, BLOCKED, CANCELLED)
