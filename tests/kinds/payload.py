"""Not a declared job kind: a sweep naming it must be refused without importing it. Importing it leaves a marker
file named by NFJOBS_TEST_PAYLOAD_MARKER, so a test can tell."""

import os
from pathlib import Path

if os.environ.get("NFJOBS_TEST_PAYLOAD_MARKER"):
    Path(os.environ["NFJOBS_TEST_PAYLOAD_MARKER"]).write_text("imported")
Config = run = None
