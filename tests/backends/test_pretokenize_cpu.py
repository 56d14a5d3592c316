"""backends.cpu.tokenize.pretokenize.split_utf8 equals the spec's pieces, encoded."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

from backends.cpu.tokenize.pretokenize import class_table, split_utf8
from spec.tokenize.pretokenize import GPT4_PATTERN, PATTERNS, char_class, pretokenize
from tests.spec.test_pretokenize import pretoken_texts, stdlib_sample, with_edge_texts


def _check(text: str, pattern: str) -> None:
    text_U8, bounds_K = split_utf8(text, pattern)
    encoded = text.encode("utf-8", "surrogatepass")
    assert text_U8.dtype == np.uint8 and text_U8.flags.c_contiguous and text_U8.flags.writeable
    assert bounds_K.dtype == np.int64 and bounds_K.ndim == 1
    assert text_U8.tobytes() == encoded
    assert bounds_K[0] == 0 and bounds_K[-1] == len(encoded)
    assert np.all(np.diff(bounds_K) > 0)
    got = [encoded[a:b] for a, b in zip(bounds_K[:-1].tolist(), bounds_K[1:].tolist())]
    want = [piece.encode("utf-8", "surrogatepass") for piece in pretokenize(text, pattern)]
    assert got == want


def test_class_table_every_code_point():
    table = class_table()
    assert table.shape == (0x110000,) and table.dtype == np.uint8
    want = np.frombuffer(bytes(map(char_class, map(chr, range(0x110000)))), dtype=np.uint8)
    np.testing.assert_array_equal(table, want)


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
@settings(max_examples=300, deadline=None)
@given(text=pretoken_texts())
@with_edge_texts
def test_equals_spec(pattern, text):
    _check(text, pattern)


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_equals_spec_on_stdlib_sources(pattern):
    _check(stdlib_sample(), pattern)


def test_pattern_by_expression():
    text = "It's 2024 (\u00e9t\u00e9)\n\n"
    for a, b in zip(split_utf8(text, GPT4_PATTERN), split_utf8(text, "gpt4")):
        np.testing.assert_array_equal(a, b)


def test_bad_inputs():
    with pytest.raises(TypeError, match="text"):
        split_utf8(b"bytes")
    with pytest.raises(TypeError, match="text"):
        split_utf8(None)
    with pytest.raises(ValueError, match="pattern"):
        split_utf8("x", "gpt3")
    with pytest.raises(TypeError, match="pattern"):
        split_utf8("x", 2)
