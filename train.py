"""Train one neural field from the command line: `uv run train.py --help`. Sweeps go through launch.py."""

import sys

from nfjobs.commands.single import run_single

if __name__ == "__main__":
    sys.exit(run_single("train"))
