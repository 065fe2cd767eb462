"""Launch sweeps, and watch, cancel and summarise them: `uv run launch.py --help`. The commands live in
`nfjobs/commands/` (one module per verb); this file only starts them."""

import sys

from nfjobs.commands import main

if __name__ == "__main__":
    sys.exit(main())
