"""Fit one probe on a cached representation from the command line: `uv run probe.py --help`.
Sweeps (caches and probes together) go through launch.py."""

import sys

from nfjobs.commands.single import run_single

if __name__ == "__main__":
    sys.exit(run_single("probe"))
