"""Does numba's on-disk cache of the AP kernel survive a new code snapshot? First-call time of
`average_precision_numba` in fresh processes that import the code from `snapshot.freeze` copies, as jobs do.

Each launch whose code changed anywhere freezes a new copy (`runs/_code/<hash>/`), so the kernel file moves to a
new path even when its text is the same. Rows: numba's default cache (`__pycache__` beside the source) and a
stable `NUMBA_CACHE_DIR`, each for a first process in a snapshot, a second process in it, and a process in a
second snapshot of the same code at another path.

    uv run python -m bench.numba_cache_bench
"""

import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from nfjobs import snapshot

PROBE = """
import time
t0 = time.perf_counter()
import numpy as np
from nfjobs.scoring.ap_numba import average_precision_numba
t1 = time.perf_counter()
rng = np.random.default_rng(0)
scores, labels = rng.random((512, 16), dtype=np.float32), rng.random((512, 8)) < 0.2
average_precision_numba(scores, labels)
t2 = time.perf_counter()
average_precision_numba(scores, labels)
t3 = time.perf_counter()
import nfjobs, json
print(json.dumps({"import": t1 - t0, "first": t2 - t1, "second": t3 - t2, "code": nfjobs.__file__}))
"""


def first_call(code_dir: Path, numba_cache: Path | None) -> dict:
    """Seconds to import, first call (compile or cache load) and second call, in a fresh process."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"} | snapshot.job_env(code_dir)
    if numba_cache is not None:
        env["NUMBA_CACHE_DIR"] = str(numba_cache)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=code_dir.parent, capture_output=True,
                         text=True, check=True).stdout
    row = json.loads(out.strip().splitlines()[-1])
    assert row["code"].startswith(str(code_dir)), row  # the snapshot was imported, not the working tree
    return row


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        snap = {name: snapshot.freeze(root / name)[0] for name in "abcd"}
        stable = root / "numba-cache"
        rows = []
        for label, cache, (first, second) in (("default (__pycache__ beside the source)", None, "ab"),
                                              ("NUMBA_CACHE_DIR, one folder for all", stable, "cd")):
            rows.append((label, "first process, snapshot 1", first_call(snap[first], cache)))
            rows.append((label, "second process, snapshot 1", first_call(snap[first], cache)))
            rows.append((label, "first process, snapshot 2 (same code)", first_call(snap[second], cache)))
        subdirs = sorted(p.name for p in stable.iterdir()) if stable.exists() else []
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}")
    print(f"| cache | process | import s | first call s | second call s | first / second |")
    print("|---|---|---|---|---|---|")
    for label, what, r in rows:
        print(f"| {label} | {what} | {r['import']:.2f} | {r['first']:.2f} | {r['second']:.4f} | "
              f"{r['first'] / r['second']:.0f}x |")
    print(f"NUMBA_CACHE_DIR subfolders (one per source folder path): {len(subdirs)}: {', '.join(subdirs)}")


if __name__ == "__main__":
    main()
