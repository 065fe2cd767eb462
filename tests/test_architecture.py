"""The layers of docs/architecture.md hold: the import contracts of .importlinter (no cycle, imports inside
functions included; no import from a lower layer to a higher one; no kind imports another), and the size rules."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_the_import_contracts_are_kept():
    proc = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--config", str(ROOT / ".importlinter")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "0 broken" in proc.stdout, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_launch_py_is_thin_and_no_module_is_over_450_lines():
    assert len((ROOT / "launch.py").read_text().splitlines()) <= 120
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in (ROOT / "nfjobs").rglob("*.py")}
    assert not {p: n for p, n in sizes.items() if n > 450}
