"""Does numba's on-disk cache of the AP kernel survive a new code snapshot? First-call time of
`average_precision_numba` in fresh processes that import the code from `snapshot.freeze` copies, as jobs do.

Each launch whose code changed anywhere freezes a new copy (`runs/_code/<hash>/`), so the kernel file moves to a
new path even when its text is the same. Rows: numba's default cache (`__pycache__` beside the source) for a
first and a second process in a snapshot, a snapshot after an edit elsewhere under another runs root (nothing
to carry over: what every new snapshot did before `freeze` carried caches) and under the same runs root
(`freeze` copies the unchanged kernel's cache); then a stable `NUMBA_CACHE_DIR` instead.

    uv run python -m bench.numba_cache_bench
"""

import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from nfjobs.store import snapshot

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
        for name, edit in (("project", ""), ("edited", "\n# an edit that leaves the AP kernel as it was\n")):
            for rel in snapshot.source_files():
                (root / name / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / name / rel).write_bytes((snapshot.CODE_ROOT / rel).read_bytes())
            with open(root / name / "nfjobs" / "jobs" / "smoke.py", "a") as f:
                f.write(edit)
        first = snapshot.freeze(root / "runs", root / "project")[0]
        default = "default (`__pycache__` beside the source)"
        rows = [(default, "first process, snapshot 1", first_call(first, None)),
                (default, "second process, snapshot 1", first_call(first, None))]
        elsewhere = snapshot.freeze(root / "other-runs", root / "edited")[0]
        rows.append((default, "snapshot 2 after an edit elsewhere, other runs root", first_call(elsewhere, None)))
        carried = snapshot.freeze(root / "runs", root / "edited")[0]
        rows.append((default, "snapshot 2 after an edit elsewhere, same runs root (carried)",
                     first_call(carried, None)))
        stable = root / "numba-cache"
        one, two = (snapshot.freeze(root / f"runs-{i}", root / "project")[0] for i in (3, 4))
        label = "`NUMBA_CACHE_DIR`, one folder for all"
        rows += [(label, "first process, snapshot 1", first_call(one, stable)),
                 (label, "second process, snapshot 1", first_call(one, stable)),
                 (label, "first process, snapshot 2 (same code, other path)", first_call(two, stable))]
        subdirs = sorted(p.name for p in stable.iterdir())
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}")
    print("| cache | process | import s | first call s | second call s |")
    print("|---|---|---|---|---|")
    for label, what, r in rows:
        print(f"| {label} | {what} | {r['import']:.2f} | {r['first']:.2f} | {r['second']:.4f} |")
    print(f"NUMBA_CACHE_DIR subfolders (one per source folder path): {len(subdirs)}: {', '.join(subdirs)}")


if __name__ == "__main__":
    main()
