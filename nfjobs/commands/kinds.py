"""`launch.py kinds`: the job kinds a sweep may name."""

from dataclasses import dataclass

from nfjobs.kinds import describe_kinds


@dataclass(frozen=True)
class Args:
    """List the job kinds a sweep may name, with their modules."""


def main(args: Args) -> int:
    print(describe_kinds())
    return 0
