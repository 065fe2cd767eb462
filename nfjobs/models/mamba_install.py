"""Launch-side check of the Mamba install, without importing torch: which GPU cells will scan on a slow path.

`nfjobs.models.mamba.backend_problem` decides for real when a job runs; this only looks at what is installed
where `launch.py` runs (on a cluster, usually the environment the jobs use too).
"""

import importlib.util

INSTALL_HINT = "install the kernel with scripts/install-mamba-ssm.sh (see README, Options for CUDA clusters)"


def kernel_installed() -> bool:
    """Whether mamba_ssm and its compiled selective-scan kernel (`selective_scan_cuda`) are installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("mamba_ssm", "selective_scan_cuda"))


def slow_path_warning(cells: list, flags: dict) -> str | None:
    """A warning when a train cell with GPUs (`gpus_per_node` from its sweep or `flags`) will run a Mamba
    family without mamba_ssm's kernel: `auto` then uses the Triton scan (or the pure scan), `pure` always."""
    slow: dict[str, int] = {}
    kernel = None
    for cell in cells:
        family = getattr(cell.config, "model", None)
        if cell.kind != "train" or family not in ("ginr", "jepa"):
            continue
        if not {**cell.slurm, **flags}.get("gpus_per_node"):
            continue
        choice = getattr(cell.config, family).mamba_backend
        if choice == "auto":
            kernel = kernel_installed() if kernel is None else kernel
            if kernel:
                continue
        elif choice != "pure":
            continue
        slow[choice] = slow.get(choice, 0) + 1
    if not slow:
        return None
    parts = [f"{n} with mamba_backend={choice}" for choice, n in sorted(slow.items())]
    why = ("auto runs the Triton scan, else the pure one: mamba_ssm's selective-scan kernel is not installed here; "
           + INSTALL_HINT) if "auto" in slow else "'pure' is the slowest scan on a GPU; use 'auto'"
    return f"warning: {sum(slow.values())} GPU cell(s) run a Mamba family on a slower path ({', '.join(parts)}): {why}"
