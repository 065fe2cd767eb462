"""Value checking for sweep files (TOML values) and typed command-line flags (strings)."""

from pathlib import Path
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nfjobs.typed import TypeMismatch, coerce, describe, parse_string


@pytest.mark.parametrize(("value", "tp", "expected"), [
    (1, float, 1.0), (True, bool, True), ("a", Literal["a", "b"], "a"), ([1, 2], tuple[int, ...], (1, 2)),
    ([0.9, 1], tuple[float, float], (0.9, 1.0)), ("x", str | None, "x"), ("p", Path, Path("p")),
])
def test_coerce_accepts_lossless_values(value, tp, expected):
    got = coerce(value, tp)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(("value", "tp", "words"), [
    (True, int, "an integer"), (1.5, int, "an integer"), ("3", int, "an integer"), (1, bool, "true or false"),
    ("c", Literal["a", "b"], "one of 'a', 'b'"), ([1, 2, 3], tuple[float, float], "a list of 2 values"),
    (3, str, "a string"), ("tru", Literal["true", "false"], "did you mean 'true'"),
])
def test_coerce_rejects_with_what_was_expected(value, tp, words):
    with pytest.raises(TypeMismatch) as info:
        coerce(value, tp)
    assert words in str(info.value)


@pytest.mark.parametrize(("text", "tp", "expected"), [
    ("3", int, 3), ("1e-3", float, 1e-3), ("false", bool, False), ("yes", bool, True), ("gelu", Literal["relu", "gelu"], "gelu"),
    ("256,384", tuple[int, ...], (256, 384)), ("", tuple[int, ...], ()), ("0.9, 0.95", tuple[float, float], (0.9, 0.95)),
])
def test_parse_string_reads_command_line_values(text, tp, expected):
    assert parse_string(text, tp) == expected


@given(st.integers(-10**9, 10**9))
def test_integers_round_trip_through_the_command_line(n):
    assert parse_string(str(n), int) == n and parse_string(str(n), float) == float(n)


def test_describe_is_readable():
    assert describe(tuple[int, ...]) == "a list of int"
    assert describe(Literal["a", "b"]) == "one of 'a', 'b'"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_inf_are_refused_from_toml_and_from_flags(value):
    with pytest.raises(TypeMismatch, match="finite"):
        coerce(value, float)
    with pytest.raises(TypeMismatch, match="finite"):
        parse_string(str(value), float)
    with pytest.raises(TypeMismatch):
        coerce([1.0, value], tuple[float, float])
