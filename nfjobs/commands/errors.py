"""The one error path of every command: a `UserError` is printed as one line per problem (no traceback) and the
command exits 2 (SystemExit, also when called from Python); a closed output pipe (`| head`) ends it quietly."""

import functools
import os
import sys
from typing import Callable, NoReturn

from nfjobs.errors import UserError


def fail(msg: str) -> NoReturn:
    raise UserError(msg)


def guarded(main: Callable[..., int]) -> Callable[..., int]:
    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(err.exit_code) from None
        except BrokenPipeError:
            # the reader went away (`launch.py status | head`): nothing more to say, and nothing to flush
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 0
    return wrapper
