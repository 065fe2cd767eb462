"""The test suite's own setup: marker expressions that cannot select what they mean fail, and the test job kinds
are declared by the tests, not by the project."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def _pytest(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q", *args,
                           "tests/test_typed.py"], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("expr", ["not slwo", "slwo", "slow and not slrum"])
def test_a_marker_expression_naming_an_unknown_marker_is_a_usage_error(expr):
    proc = _pytest("-m", expr)
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, proc.stdout + proc.stderr
    assert "unknown marker(s) sl" in proc.stderr and "registered: " in proc.stderr


def test_a_marker_expression_selecting_no_test_fails():
    proc = _pytest("-m", "slow and not slow")
    assert proc.returncode == pytest.ExitCode.NO_TESTS_COLLECTED, proc.stdout + proc.stderr
    assert _pytest("-m", "not slow and not slurm").returncode == 0


def test_the_project_declares_no_test_kind_and_the_tests_declare_toy():
    from nfjobs.kinds import declared

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "kinds" not in project.get("tool", {}).get("nfjobs", {})
    assert declared()["toy"].module == "tests.kinds.toy" and declared()["toy"].origin.startswith("entry point")
    # and so does every process the tests start (PYTHONPATH), wherever it runs
    proc = subprocess.run([sys.executable, str(ROOT / "launch.py"), "kinds"], cwd="/", capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    (toy,) = [ln for ln in proc.stdout.splitlines() if ln.split()[0] == "toy"]
    assert "tests.kinds.toy" in toy and toy.endswith("[entry point (nfjobs-test-kinds)]")
