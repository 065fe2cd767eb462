"""Checking TOML / command-line values against dataclass field types, with errors a person can act on.

tyro does this for one command line; sweeps need it for thousands of cells and for values that come from TOML,
so this small checker walks the same dataclass annotations. Supported: bool, int, float, str, Path, Literal,
tuple[T, ...], tuple[A, B], list[T], `T | None`, and nested dataclasses.
"""

import dataclasses
import difflib
import functools
import math
import pathlib
import types
import typing
from typing import Any, Literal, Union


class TypeMismatch(ValueError):
    """A value does not fit its field; `expected` says what would."""

    def __init__(self, expected: str, got: Any):
        self.expected, self.got = expected, got
        super().__init__(f"expected {expected}, got {got!r} ({type(got).__name__})")


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """Resolved annotations of a dataclass's fields."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


@functools.cache
def leaf_fields(cls: type) -> dict[str, Any]:
    """Every leaf field of a (nested) dataclass by dotted path, e.g. `optim.lr` -> float."""
    out: dict[str, Any] = {}
    for name, tp in field_types(cls).items():
        if dataclasses.is_dataclass(tp):
            out.update({f"{name}.{k}": v for k, v in leaf_fields(tp).items()})
        else:
            out[name] = tp
    return out


@functools.cache
def defaults_flat(cls: type) -> dict[str, Any]:
    """Default value of every leaf field by dotted path."""
    return flatten(dataclasses.asdict(cls()))


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts (TOML tables, `dataclasses.asdict`) -> dotted keys; lists and scalars are leaves."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


class FieldError(ValueError):
    """A config refused a value in `__post_init__`; `key` is the dotted field it refused (else the dotted
    sub-config), so a sweep error can name it."""

    def __init__(self, key: str, message: str):
        self.key, self.message = key, message
        super().__init__(message)


def _construct(cls: type, prefix: str, kwargs: dict[str, Any]) -> Any:
    """`cls(**kwargs)`; a refusal becomes a FieldError naming the dotted key. A config names the field it refuses
    by raising an error with a `field` attribute (`nfjobs.config.InvalidField`); only an error without one is
    matched by the first word of its message (a field name, as the messages of older configs start)."""
    try:
        return cls(**kwargs)
    except FieldError as err:
        raise err from None
    except ValueError as err:
        names = {f.name for f in dataclasses.fields(cls)}
        field = getattr(err, "field", None)
        if isinstance(field, str) and field.split("[", 1)[0] in names:
            raise FieldError(prefix + field, str(getattr(err, "message", err))) from None
        first = str(err).split(" ", 1)[0]
        raise FieldError(prefix + first if first in names else prefix.rstrip("."), str(err)) from None


MAX_TOML_DEPTH = 32
"""Deepest nesting of tables and arrays a TOML file read here may have (a sweep needs a handful of levels)."""


class TomlError(ValueError):
    """A TOML file that cannot be read as one; `str()` is one line saying why."""


def load_toml(data: bytes, max_depth: int = MAX_TOML_DEPTH) -> dict[str, Any]:
    """A TOML document as nested dicts, refused (TomlError) when it is not UTF-8, not TOML, or nested deeper than
    `max_depth` tables and arrays: everything reading it afterwards may recurse, and tomllib itself ends in a
    RecursionError on a deep enough file."""
    import tomllib

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise TomlError(f"not UTF-8 text (byte {err.start})") from None
    depth, deepest = _bracket_depth(text)
    if deepest > max_depth:
        raise TomlError(f"nested deeper than {max_depth} levels (arrays or inline tables {deepest} deep)")
    try:
        tree = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise TomlError(f"not valid TOML: {err}") from None
    except RecursionError:
        raise TomlError(f"nested deeper than {max_depth} levels") from None
    deepest = nesting_depth(tree)
    if deepest > max_depth:
        raise TomlError(f"nested deeper than {max_depth} levels (tables or arrays {deepest} deep)")
    return tree


def _bracket_depth(text: str) -> tuple[int, int]:
    """(final, deepest) count of open `[` / `{` outside strings and comments, a cheap bound taken before parsing
    (tomllib recurses once per level of an inline array or table)."""
    depth = deepest = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "#":
            i = text.find("\n", i)
            if i < 0:
                break
        elif c in "\"'":
            triple = text.startswith(c * 3, i)
            end = c * 3 if triple else c
            j = i + len(end)
            while j < n:
                if c == '"' and text[j] == "\\":
                    j += 2
                    continue
                if text.startswith(end, j):
                    break
                if not triple and text[j] == "\n":
                    break
                j += 1
            i = j + len(end) - 1
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth = max(0, depth - 1)
        i += 1
    return depth, deepest


def nesting_depth(tree: Any) -> int:
    """Levels of dicts and lists in `tree` (a scalar is 0), without recursion."""
    deepest, stack = 0, [(tree, 0)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            stack.extend((v, level + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, level + 1) for v in node)
        else:
            continue
        deepest = max(deepest, level + 1)
    return deepest


def build(cls: type, flat: dict[str, Any]) -> Any:
    """Instantiate a nested dataclass from already-checked leaf values (missing leaves keep defaults).

    Nested configs are frozen, so equal sub-configs are built once and shared (sweeps of 10,000 cells repeat
    the same few `optim` / `data` tables over and over)."""
    return _build(cls, "", flat)


@functools.cache
def _plan(cls: type) -> tuple[tuple[str, type | None], ...]:
    """Each field with its nested dataclass type (None for leaves)."""
    return tuple((name, tp if dataclasses.is_dataclass(tp) else None) for name, tp in field_types(cls).items())


_SHARED: dict[tuple, Any] = {}


def _build(cls: type, prefix: str, flat: dict[str, Any]) -> Any:
    kwargs = {}
    for name, sub in _plan(cls):
        dotted = prefix + name
        if sub is not None:
            kwargs[name] = _build(sub, dotted + ".", flat)
        elif dotted in flat:
            kwargs[name] = flat[dotted]
    if prefix:  # a nested config: share equal instances
        try:
            memo = (cls, tuple(kwargs.items()))
            if memo not in _SHARED:
                _SHARED[memo] = _construct(cls, prefix, kwargs)
            return _SHARED[memo]
        except TypeError:  # an unhashable value (a list-typed field)
            pass
    return _construct(cls, prefix, kwargs)


def describe(tp: Any) -> str:
    """A short human description of a type: `float`, `one of 'a', 'b'`, `list of int`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {describe(args[0])}"
        return f"a list of {len(args)} values ({', '.join(describe(a) for a in args)})"
    if origin is list:
        return f"a list of {describe(args[0])}"
    if tp is type(None):
        return "none"
    if tp is pathlib.Path:
        return "a path (string)"
    return getattr(tp, "__name__", str(tp))


def is_sequence_type(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return any(is_sequence_type(a) for a in typing.get_args(tp))
    return origin in (tuple, list)


def coerce(value: Any, tp: Any) -> Any:
    """`value` converted to `tp` where that is lossless (int -> float, list -> tuple), else TypeMismatch."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value in args and type(value) is type(next(a for a in args if a == value)):
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise TypeMismatch(describe(tp) + hint, value)
    if origin in (Union, types.UnionType):
        for a in args:
            try:
                return coerce(value, a)
            except TypeMismatch:
                continue
        raise TypeMismatch(describe(tp), value)
    if origin is tuple or origin is list:
        if not isinstance(value, (list, tuple)):
            raise TypeMismatch(describe(tp), value)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise TypeMismatch(describe(tp), value)
            items = [coerce(v, a) for v, a in zip(value, args)]
        else:
            items = [coerce(v, args[0]) for v in value]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeMismatch("true or false", value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeMismatch("an integer", value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise TypeMismatch("a finite number (nan and inf are refused)", value)
            return float(value)
        raise TypeMismatch("a number", value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise TypeMismatch("a string", value)
    if tp is pathlib.Path:
        if isinstance(value, (str, pathlib.Path)):
            return pathlib.Path(value)
        raise TypeMismatch("a path (string)", value)
    if tp is type(None):
        if value is None:
            return None
        raise TypeMismatch("none", value)
    raise TypeMismatch(describe(tp), value)


def parse_string(text: str, tp: Any) -> Any:
    """A command-line string converted to `tp` (`true`/`false`, numbers, comma-separated lists)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        for a in args:
            try:
                return parse_string(text, a)
            except TypeMismatch:
                continue
        raise TypeMismatch(describe(tp), text)
    if origin in (tuple, list):
        parts = [p.strip() for p in text.split(",")] if text.strip() else []
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return coerce([parse_string(p, a) for p, a in zip(parts, args)] if len(parts) == len(args) else parts, tp)
        return coerce([parse_string(p, args[0]) for p in parts], tp)
    if origin is Literal:
        for a in args:
            if str(a) == text:
                return a
        return coerce(text, tp)  # raises with a suggestion
    if tp is bool:
        low = text.lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise TypeMismatch("true or false", text)
    if tp is int:
        try:
            return int(text)
        except ValueError:
            raise TypeMismatch("an integer", text) from None
    if tp is float:
        try:
            number = float(text)
        except ValueError:
            raise TypeMismatch("a number", text) from None
        return coerce(number, float)
    return coerce(text, tp)


def parse_tokens(tokens: str | tuple[str, ...] | list[str], tp: Any) -> Any:
    """Command-line tokens converted to `tp` as tyro reads them (train.py, probe.py): a list takes one token per
    item (`--optim.betas 0.9 0.95`), a boolean flag alone means true, `None` means none. A str is one token."""
    tokens = (tokens,) if isinstance(tokens, str) else tuple(tokens)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if type(None) in args and tokens == ("None",):
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return parse_tokens(tokens, a)
            except TypeMismatch:
                continue
        raise TypeMismatch(describe(tp), " ".join(tokens))
    if origin in (tuple, list):
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(tokens) != len(args):
                raise TypeMismatch(describe(tp), " ".join(tokens))
            return coerce([parse_string(t, a) for t, a in zip(tokens, args)], tp)
        return coerce([parse_string(t, args[0]) for t in tokens], tp)
    if tp is bool and not tokens:
        return True
    if len(tokens) != 1:
        raise TypeMismatch(describe(tp) if tp is not bool else "true or false", " ".join(tokens))
    return parse_string(tokens[0], tp)


@functools.cache
def attribute_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass (what tyro shows as its help), by field name."""
    import ast
    import inspect
    import textwrap

    try:
        body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    except (OSError, TypeError, SyntaxError, IndexError, AttributeError):
        return {}
    docs = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs
