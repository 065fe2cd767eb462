"""The runs root on disk: one home for every path, file format, state and lock (docs/architecture.md).

Nothing here knows about Slurm, torch or job kinds.
"""
