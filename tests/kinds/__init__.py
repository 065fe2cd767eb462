"""Job kinds used only by the tests (named in sweeps by dotted path, like a user's own job kinds)."""
