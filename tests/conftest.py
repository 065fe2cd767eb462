import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from waiting import SLURM_LANE

if os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") != "1":
    # Several workers on a few cores: one torch (OpenMP) thread per test process and per cell it starts, unless a test
    # sets its own. Two threads per process on two busy cores stall on each other: the quickstart end to end took
    # 290 s in `pytest -n 3` with torch's default threads (47 s alone, BENCHMARKS.md "Test suite").
    os.environ.setdefault("OMP_NUM_THREADS", "1")

TESTS = Path(__file__).parent
ROOT = TESTS.parent
PLUGIN = TESTS / "plugin"
# The test-only job kinds (tests/kinds) are declared by a plugin only the tests install: tests/plugin holds the
# metadata of a distribution `nfjobs-test-kinds` whose `nfjobs.kinds` entry point declares `toy`, so any Python
# process with tests/plugin on its path declares it, like an installed package would -- here, and in the
# subprocesses, local workers and Slurm jobs the tests start (they inherit PYTHONPATH; Slurm jobs put their code
# copy before it). The product declares no test kind. tests/ is on the path too (data_fixtures, waiting).
sys.path[:0] = [str(PLUGIN), str(TESTS)]
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PLUGIN), str(TESTS), str(ROOT),
                                                         os.environ.get("PYTHONPATH")]))
# the CI machine is a loaded 2-core box: a stall there must not fail a property test on time
settings.register_profile("loaded", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("loaded")


@pytest.hookimpl(trylast=True)  # after the plugins have registered their markers (skip, parametrize, ...)
def pytest_configure(config):
    """A `-m` expression naming a marker nobody registered is a usage error, not a silent selection: `-m "not slwo"`
    would run everything, `-m slwo` nothing. (A run that selects no test exits 5, a failure: .ci/run says so.)"""
    expr = config.option.markexpr
    if not expr:
        return
    known = {line.split(":", 1)[0].split("(", 1)[0].strip() for line in config.getini("markers")}
    names = set(re.findall(r"[A-Za-z_]\w*", re.sub(r"(\w)\s*\([^()]*\)", r"\1", expr))) - {"and", "or", "not"}
    unknown = sorted(names - known)
    if unknown:
        raise pytest.UsageError(f"-m {expr!r}: unknown marker(s) {', '.join(unknown)}; registered: "
                                f"{', '.join(sorted(known))} (pyproject.toml [tool.pytest.ini_options] markers)")


def _slurm_problem() -> str | None:
    if shutil.which("sinfo") is None:
        return "sinfo is not on PATH"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        return f"sinfo failed: {err}"
    if out.returncode != 0:
        return f"sinfo failed: {out.stderr.strip()}"
    # "completing": jobs of a run just before are still being cleaned up; the node takes new ones
    if not any(s in out.stdout for s in ("idle", "mixed", "allocated", "completing")):
        return f"no usable node (sinfo says {out.stdout.strip()!r})"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """A real Slurm cluster: skip without one, but fail when NFJOBS_REQUIRE_SLURM=1 (CI)."""
    problem = _slurm_problem()
    if problem is None:
        return
    if os.environ.get("NFJOBS_REQUIRE_SLURM") == "1":
        pytest.fail(f"Slurm is required here (NFJOBS_REQUIRE_SLURM=1) but {problem}")
    pytest.skip(f"no Slurm cluster ({problem}); start one with `bash scripts/dev-slurm.sh up`")


@pytest.fixture(autouse=True)
def _cancel_leftover_slurm_jobs(request):
    """A Slurm test that fails midway must not leave its jobs holding the cluster's CPUs for the tests after it
    (they launch under tmp_path/runs; the manifests there name their jobs)."""
    if request.node.get_closest_marker("slurm") is None:
        yield
        return
    sweeps = request.getfixturevalue("tmp_path") / "runs" / "_sweeps"
    yield
    ids = {j.split("_")[0] for m in sweeps.glob("*.json") for j in json.loads(m.read_text()).get("jobs", {}).values()}
    if ids:
        subprocess.run(["scancel", *sorted(ids)], capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of a headless-capable Chromium: skip without one, but fail when NFJOBS_REQUIRE_BROWSER=1 (CI)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    if os.environ.get("NFJOBS_REQUIRE_BROWSER") == "1":
        pytest.fail("Chromium is required here (NFJOBS_REQUIRE_BROWSER=1) but it is not on PATH")
    pytest.skip("no chromium on PATH (Debian: apt-get install -y chromium)")


@pytest.fixture
def sweep_file(tmp_path):
    """Write a sweep file from text and return its path."""
    def write(text: str, name: str = "s.toml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture
def run_launch(tmp_path):
    """`launch.main(args)` with its roots under tmp_path, returning the exit code: `--runs-root` (tmp_path/runs, or
    `runs=`) unless the arguments name one, and `--log-root` beside it for the commands that take one -- so no
    test writes under the repository's runs/ or logs/."""
    from nfjobs.commands import main

    def run(*args: str, runs: Path | None = None) -> int:
        runs = Path(runs) if runs is not None else tmp_path / "runs"
        command = args[0] if args and not args[0].startswith("-") else "run"
        extra = []
        if command != "kinds" and "--runs-root" not in args:
            extra += ["--runs-root", str(runs)]
        if command in ("run", "status", "logs") and "--log-root" not in args:
            extra += ["--log-root", str(runs.parent / "logs")]
        return main([*map(str, args), *extra])

    return run


@pytest.fixture
def make_context(tmp_path):
    """A job `Context` for calling a kind's `run` directly: `make_context(kind, key=kind, runs_root=tmp_path,
    **fields)` (the run directory is then tmp_path/<key>)."""
    from nfjobs.context import Context

    def make(kind: str, key: str | None = None, runs_root: Path | None = None, **fields) -> Context:
        return Context(key=key or kind, kind=kind, runs_root=Path(runs_root or tmp_path), **fields)

    return make


def pytest_collection_modifyitems(items):
    """With `-n 3` (the full suite, as CI runs it), the `slurm` tests run in two lanes (xdist groups), each one
    test after another in its own worker: they share the one local cluster and spend most of their time waiting on
    it, so the two lanes' waits overlap each other and the CPU-bound tests of the third worker. A test names its
    lane with `xdist_group(SECOND_LANE)`; the rest are in `SLURM_LANE`. They are collected first, so those workers
    start on them at once (the lanes, ~320 s each on an idle machine, are the longest chains)."""
    for item in items:
        if item.get_closest_marker("slurm") is not None and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(SLURM_LANE))
    items.sort(key=lambda item: item.get_closest_marker("slurm") is None)  # stable: file order otherwise
