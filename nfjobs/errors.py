"""The one error a user can act on: printed as one line (no traceback), exit code 2, nothing done."""


class UserError(Exception):
    """Something the user gave (a file, a flag, a name, a cluster that is not there) is wrong; `str()` is the
    whole message: one line per problem, each naming the file or flag, the dotted key and what was expected."""

    exit_code = 2


def one_line(text: str) -> str:
    """`text` with every newline or other control character written as its escape, so a problem quoting a
    file's or a flag's content stays one line whatever that content holds."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
