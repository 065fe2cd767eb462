"""Job kinds import the job contract, never one another; what they use (models, nf, probes, scoring, data,
activations, plots) never imports a kind. Imports inside functions count."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = ("nfjobs.context", "nfjobs.store", "nfjobs.data", "nfjobs.models", "nfjobs.config", "nfjobs.identity",
            "nfjobs.nf", "nfjobs.probes", "nfjobs.scoring", "nfjobs.activations", "nfjobs.errors")
"""What a job kind may import from nfjobs."""
BELOW_KINDS = ("nfjobs.models", "nfjobs.nf", "nfjobs.probes", "nfjobs.scoring", "nfjobs.data", "nfjobs.activations",
               "nfjobs.reports.plots", "nfjobs.identity", "nfjobs.config", "nfjobs.store")


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out += [(node.lineno, node.module)] + [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return out


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def test_no_kind_imports_another_and_nothing_below_the_kinds_imports_one():
    bad = []
    for path in sorted((ROOT / "nfjobs").rglob("*.py")):
        module = _module(path)
        for line, name in _imports(path):
            if not name.startswith("nfjobs.jobs."):
                continue
            if module.startswith("nfjobs.jobs.") and not name.startswith(module):
                bad.append(f"{module}:{line} imports {name} (another kind)")
            if module.startswith(BELOW_KINDS):
                bad.append(f"{module}:{line} imports {name} (a kind, from below the kinds)")
    assert not bad, "\n".join(bad)


def test_a_kind_imports_only_the_job_contract():
    bad = [f"{path.name}:{line} imports {name}" for path in sorted((ROOT / "nfjobs" / "jobs").glob("*.py"))
           for line, name in _imports(path)
           if name.startswith("nfjobs.") and not name.startswith(CONTRACT) and not name.startswith(_module(path))]
    assert not bad, "\n".join(bad)
