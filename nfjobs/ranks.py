"""Cells larger than one process: who a rank is, how the ranks of a cell join one torch.distributed process group
(with a timeout, so a dead or hung rank ends the cell instead of holding it), and, on this machine, the parent that
starts them.

On Slurm the job's tasks are the ranks: Slurm places them and `submitit.helpers.TorchDistributedEnvironment` reads
their rank, world size and first host (MASTER_ADDR) from Slurm's variables. Locally the cell's worker starts N rank
processes on this machine with the same variables (`spawn`, as torchrun does) and stops them all when one fails.
Each rank sees one of the cell's GPUs (CUDA_VISIBLE_DEVICES narrowed to its local rank's), or none.
"""

import dataclasses
import datetime as dt
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

DIST_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
"""What torch.distributed's `env://` initialisation reads (LOCAL_* for the job's own use)."""


@dataclass(frozen=True)
class Placement:
    """Where one rank of a cell runs."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    nodes: int = 1
    hosts: tuple[str, ...] = ()
    """Each rank's host, in rank order (known once the ranks have joined)."""

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes the cell's result, metrics, checkpoints and pictures."""
        return self.rank == 0


def slurm_placement() -> Placement | None:
    """In a Slurm job of several tasks: this task's place, with torch.distributed's variables exported
    (`TorchDistributedEnvironment`, MASTER_ADDR the job's first host) and its GPU chosen; None otherwise."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return None
    from submitit import JobEnvironment
    from submitit.helpers import TorchDistributedEnvironment

    job = JobEnvironment()
    if job.num_tasks <= 1:
        return None
    # overwrite: the earlier cell of a packed task exported them already (and a launcher's own are not the job's)
    found = TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    os.environ.update(one_gpu(os.environ, found.local_rank))
    return Placement(found.rank, found.world_size, found.local_rank, job.num_nodes)


def env_placement() -> Placement:
    """The place a parent (`spawn`) gave this process in its variables."""
    env = os.environ
    return Placement(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"]))


def one_gpu(env: dict[str, str] | os._Environ, local_rank: int) -> dict[str, str]:
    """CUDA_VISIBLE_DEVICES for a rank: the `local_rank`-th of the GPUs `env` makes visible (Slurm's or the local
    backend's choice, not renumbered: a cluster without device cgroups shows the job its real indices); {} when
    it lists none."""
    ids = [x.strip() for x in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if x.strip()]
    return {"CUDA_VISIBLE_DEVICES": ids[local_rank % len(ids)]} if ids else {}


def join(place: Placement, timeout_s: float, holds_claim: bool) -> Placement | None:
    """Join the cell's process group (gloo on the CPU; NCCL for CUDA tensors where there is a GPU) and agree on
    whether rank 0 holds the cell's claim: this place with every rank's host, or None when another process runs
    the cell (then every rank leaves without running it). Set-up and every later collective fail after
    `timeout_s` seconds."""
    import torch
    import torch.distributed as dist

    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, timeout=dt.timedelta(seconds=timeout_s), rank=place.rank,
                            world_size=place.world_size)
    found: list = [None] * place.world_size
    dist.all_gather_object(found, (holds_claim, host_name()))
    if not found[0][0]:
        return None
    return dataclasses.replace(place, hosts=tuple(host for _, host in found))


def host_name() -> str:
    """This rank's node: Slurm's name for it in a Slurm job (what `squeue` and the node list say), else the
    machine's host name."""
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def leave() -> None:
    """Leave the process group, if this process joined one (a peer that died already is not waited for)."""
    import sys

    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - the group is broken when a rank died; the process ends anyway
            pass


def first_to_end(marker: Path, rank: int) -> bool:
    """Whether this rank is the first of its cell's attempt to end it (it then writes the result): it creates
    `marker` exclusively, naming itself. A rank failing because another died first finds it there."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(f"{rank}\n")
    return True


def free_port() -> int:
    """A TCP port free on this machine now (for rank 0's rendezvous store)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def exit_words(code: int) -> str:
    """A process's exit code as people read it: `exit code 1`, `signal SIGKILL`."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def spawn(command: list[str], payload: bytes, world_size: int, grace_s: float = 5.0,
          poll_s: float = 0.1) -> tuple[list[int], int | None]:
    """Run `command` as `world_size` rank processes of this machine (each reads `payload` on stdin) with
    torch.distributed's variables, each on its own GPU of those visible here, the torch threads of this process
    shared between them. Returns every exit code and the rank that failed first (None if none did). When one
    fails (an error or a signal) the others are stopped at once (SIGTERM, SIGKILL after `grace_s`); when this
    process is interrupted (Ctrl-C, a requeue's exit), all of them, first with SIGINT so they write nothing; when
    it is killed, the kernel kills them too."""
    port = free_port()
    threads = int(os.environ.get("OMP_NUM_THREADS", "") or os.cpu_count() or 1)
    procs: list[subprocess.Popen] = []
    try:
        for rank in range(world_size):
            env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                   "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world_size),
                   "OMP_NUM_THREADS": str(max(1, threads // world_size)), **one_gpu(os.environ, rank)}
            proc = subprocess.Popen(command, stdin=subprocess.PIPE, env=env, preexec_fn=_die_with_parent)
            procs.append(proc)
            proc.stdin.write(payload)
            proc.stdin.close()
        first_failed = None
        while first_failed is None and any(p.poll() is None for p in procs):
            time.sleep(poll_s)
            first_failed = next((r for r, p in enumerate(procs) if p.poll() not in (None, 0)), None)
        if first_failed is None:
            first_failed = next((r for r, p in enumerate(procs) if p.returncode != 0), None)
        _stop(procs, signal.SIGTERM, grace_s)
        return [p.returncode for p in procs], first_failed
    except BaseException:
        _stop(procs, signal.SIGINT, grace_s)
        raise


def _die_with_parent() -> None:
    """In a rank process before it starts: SIGKILL when its parent dies, however that dies (a cancel SIGKILLs the
    worker 1 s after its SIGINT, before it could stop its ranks), so no orphaned rank goes on to write a result."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG (Linux)


def _stop(procs: list[subprocess.Popen], sig: int, grace_s: float) -> None:
    """Send `sig` to the processes still running, SIGKILL to those still running `grace_s` later; reap all."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(sig)
    deadline = time.monotonic() + grace_s
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
