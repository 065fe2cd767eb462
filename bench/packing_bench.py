"""Small cells packed into one Slurm array task vs one task per cell: wall time and scheduler time, one run.

    uv run python bench/packing_bench.py --account ci --partition cpu [--pack 11]

Runs the upstream cells of `--sweep` (default: the tiny representation sweep: trains and caches) once in this
process, then submits the same `--kind` cells (default: its 44 probes) to the real Slurm twice, each time from
scratch (`store.rows.forget`): one cell per array task, then `--pack` cells per task (`--cells-per-job`). Reports,
per variant: wall time from submission until every cell has a result, array tasks, summed queue wait (sacct
Start - Submit), summed task time (End - Start), summed cell time (`run.seconds` of the rows) and the per-task
overhead (task time - cell time: interpreter start, imports, torch). Prints a markdown table.
"""

import argparse
import datetime as dt
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from nfjobs.store.layout import run_dir
from nfjobs.store import rows as stored

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def sacct_times(job_ids: set[str]) -> list[tuple[dt.datetime, dt.datetime, dt.datetime]]:
    """(submit, start, end) of each array task / job."""
    arrays = sorted({j.split("_")[0] for j in job_ids})
    for _ in range(60):  # the accounting of the last tasks can lag their end by a few seconds
        out = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,Submit,Start,End", "-j", ",".join(arrays)],
                             capture_output=True, text=True, check=True).stdout
        rows = [line.split("|") for line in out.splitlines() if line.split("|")[0] in job_ids]
        if len(rows) == len(job_ids) and not any("Unknown" in r for r in rows):
            break
        time.sleep(1)
    return [tuple(dt.datetime.fromisoformat(t) for t in r[1:]) for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", default=str(ROOT / "configs/sweeps/representations_tiny.toml"))
    parser.add_argument("--kind", default="probe", help="the small cells to submit")
    parser.add_argument("--pack", type=int, default=11, help="cells per array task in the packed variant")
    parser.add_argument("--account", required=True)
    parser.add_argument("--partition", default="")
    parser.add_argument("--runs-root", default="", help="reuse a runs root (upstream cells already done)")
    args = parser.parse_args()

    import polars as pl

    from nfjobs import sweep
    from nfjobs.backends import debug, slurm
    from nfjobs.orchestration import plan
    from nfjobs.store import snapshot

    runs = Path(args.runs_root or tempfile.mkdtemp(prefix="packing-bench-"))
    cells = sweep.expand([args.sweep])
    upstream = [c for c in cells if c.kind != args.kind and stored.status(runs, c.key) != "ok"]
    targets = [c for c in cells if c.kind == args.kind]
    t0 = time.monotonic()
    debug.run(upstream, plan.specs(upstream, runs), {})
    print(f"upstream: {len(upstream)} cells in {time.monotonic() - t0:.0f} s (in this process); "
          f"{len(targets)} {args.kind} cells to submit", file=sys.stderr)
    code_dir, code_hash = snapshot.freeze(runs)
    flags = {"account": args.account, "cpus_per_task": 1, **({"partition": args.partition} if args.partition else {})}
    table = []
    for per_job in (1, args.pack):
        for c in targets:
            stored.forget(runs, c.key)
        start = time.monotonic()
        jobs = slurm.submit(targets, plan.specs(targets, runs, code_hash), runs / "_logs" / f"pack{per_job}", flags,
                            per_job, snapshot.job_env(code_dir))
        outcomes = slurm.wait(jobs, runs, poll_s=1.0)
        wall = time.monotonic() - start
        times = sacct_times({j.job_id for j in jobs.values()})
        rows = pl.concat([pl.read_parquet(run_dir(runs, c.key).result, columns=["run.seconds"]) for c in targets])
        queue = sum((s - sub).total_seconds() for sub, s, _ in times)
        task = sum((e - s).total_seconds() for _, s, e in times)
        cell = float(rows["run.seconds"].sum())
        ok = sum(o == "ok" for o in outcomes.values())
        table.append((per_job, len(times), ok, wall, queue, task, cell, (task - cell) / len(times)))
    print("| cells per task | array tasks | ok cells | wall s | summed queue wait s | summed task s | "
          "summed cell s | overhead per task s |\n|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in table:
        print(f"| {r[0]} | {r[1]} | {r[2]}/{len(targets)} | {r[3]:.0f} | {r[4]:.0f} | {r[5]:.0f} | {r[6]:.0f} | {r[7]:.1f} |")
    one, packed = table
    print(f"\npacked / one per task: wall {packed[3] / one[3]:.2f}x, summed task time {packed[5] / one[5]:.2f}x, "
          f"summed queue wait {packed[4] / max(one[4], 1e-9):.2f}x")


if __name__ == "__main__":
    main()
