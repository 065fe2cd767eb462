import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

TESTS = Path(__file__).parent
ROOT = TESTS.parent
# test-only job kinds (tests/kinds) are importable here and in the subprocesses / Slurm jobs the tests start
sys.path.insert(0, str(TESTS))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), str(ROOT), os.environ.get("PYTHONPATH")]))
# the CI machine is a loaded 2-core box: a stall there must not fail a property test on time
settings.register_profile("loaded", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("loaded")


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
