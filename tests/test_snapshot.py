"""Code snapshots: a new copy of unchanged numba kernels loads their compiled code instead of compiling again."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nfjobs.store import snapshot

KERNEL = "import numba\n\n\n@numba.njit(cache=True)\ndef bump(x):\n    return x + {n}\n"


def _call(code_dir: Path) -> str:
    """numba's cache log of a fresh process that imports the snapshot as a job does and calls the kernel."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"} | snapshot.job_env(code_dir)
    proc = subprocess.run([sys.executable, "-c", "from nfjobs.kern import bump; print('result', bump(1))"],
                          env={**env, "NUMBA_DEBUG_CACHE": "1"}, cwd=code_dir.parent, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.slow
def test_a_new_snapshot_carries_the_compiled_code_of_kernels_it_did_not_change(tmp_path):
    project, runs = tmp_path / "project", tmp_path / "runs"
    (project / "nfjobs").mkdir(parents=True)
    (project / "nfjobs" / "__init__.py").write_text("")
    (project / "nfjobs" / "kern.py").write_text(KERNEL.format(n=1))
    (project / "nfjobs" / "other.py").write_text("A = 1\n")
    first = snapshot.freeze(runs, project)[0]
    out = _call(first)
    assert "result 2" in out and "data saved" in out  # compiled into the copy's __pycache__

    (project / "nfjobs" / "other.py").write_text("A = 2\n")  # an edit elsewhere: a new copy, same kernel
    second = snapshot.freeze(runs, project)[0]
    assert second != first
    out = _call(second)
    assert "result 2" in out and "data loaded" in out and "data saved" not in out

    (project / "nfjobs" / "kern.py").write_text(KERNEL.format(n=5))  # the kernel itself changed: compiled again
    third = snapshot.freeze(runs, project)[0]
    assert not list((third / "nfjobs" / "__pycache__").glob("*.nb[ic]"))
    out = _call(third)
    assert "result 6" in out and "data saved" in out
