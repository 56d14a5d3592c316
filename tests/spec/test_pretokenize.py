"""spec.tokenize.pretokenize equals regex.findall of the reference expressions.

The character classes are checked on every code point; the scanners on generated text
(biased to the cases where the rules interact) and on real text (standard-library
sources, a fixed file list).
"""

from __future__ import annotations

import pathlib
import sysconfig
import unicodedata

import pytest
import regex
from hypothesis import example, given, settings
from hypothesis import strategies as st

from spec.tokenize.pretokenize import (
    GPT2_PATTERN,
    GPT4_PATTERN,
    LETTER,
    NUMBER,
    OTHER,
    PATTERNS,
    SPACE,
    char_class,
    pretokenize,
)

EVERY_CHAR = "".join(map(chr, range(0x110000)))

# Code points the regex package classes as letter/number by its newer Unicode tables
# that the running Python's unicodedata does not know yet (category Cn here). Generated
# text avoids them; test_classes_every_code_point proves these are the only differences.
NEWER_UNICODE = frozenset(
    c for c in regex.findall(r"[\p{L}\p{N}]", EVERY_CHAR) if unicodedata.category(c) == "Cn"
)

HARD_CHARS = (
    # apostrophes, contraction letters in both cases, LONG S (folds to s)
    "'", "'", "'", "s", "S", "t", "T", "r", "R", "e", "E", "v", "V", "m", "M", "l", "L",
    "d", "D", "\u017f", "\u2019", "`", '"',
    # letters of several scripts (Lu Ll Lt Lm Lo)
    "a", "Z", "\u00e9", "\u01c5", "\u02b0", "\u4e2d", "\u05d0", "\u0628", "\u0416", "\u3042",
    # combining marks (Mn Mc Me) are not letters
    "\u0301", "\u0903", "\u20dd",
    # numbers: Nd of other scripts, Nl, No
    "0", "7", "\u0663", "\u0967", "\uff11", "\u2167", "\u00b2", "\u00bd", "\U0001d7ce",
    # every kind of space, and the isspace()-but-not-\s separators
    " ", " ", " ", "\t", "\n", "\r", "\x0b", "\x0c", "\x85", "\xa0", "\u1680", "\u2000",
    "\u200a", "\u2028", "\u2029", "\u202f", "\u205f", "\u3000", "\x1c", "\x1d", "\x1e",
    "\x1f", "\u200b", "\u180e",
    # other: punctuation, symbols, controls, format characters, private use
    ".", ",", "!", "?", "(", ")", "-", "_", "#", "\x00", "\x7f", "\u200d", "\ufeff",
    "\ue000", "\U0001f600", "\U0001f3fd",
    # lone surrogates
    "\ud800", "\udbff", "\udc00", "\udfff",
)
FRAGMENTS = (
    "'s", "'S", "'t", "'re", "'RE", "'Ve", "'m", "'ll", "'LL", "'lL", "'d", "'\u017f",
    "\r\n", " \n", "\n ", "   ", " \t", "12345", "e\u0301", " x", " 1", " .",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467", "\U0001f44d\U0001f3fd",
)


def pretoken_texts(max_size: int = 40) -> st.SearchStrategy[str]:
    """Text built from hard characters, multi-character fragments and any code point
    (surrogates included) on which the two Unicode versions agree."""
    atom = st.one_of(
        st.sampled_from(HARD_CHARS),
        st.sampled_from(FRAGMENTS),
        st.characters(codec=None).filter(lambda c: c not in NEWER_UNICODE),
        st.characters(categories=["Cs"]),
    )
    return st.lists(atom, max_size=max_size).map("".join)


STDLIB_FILES = (
    "argparse.py", "typing.py", "textwrap.py", "string.py", "shlex.py",
    "re/_casefix.py", "email/_header_value_parser.py",
)


def stdlib_sample() -> str:
    """A few hundred KB of real text: fixed standard-library sources, concatenated."""
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    parts = [(root / name).read_text(encoding="utf-8")
             for name in STDLIB_FILES if (root / name).is_file()]
    text = "".join(parts)
    assert len(text) > 100_000, "standard-library sources not found"
    return text


# --------------------------------------------------------------- character classes


def test_classes_every_code_point():
    """char_class agrees with regex's \\s, \\p{L}, \\p{N} on every code point 0..0x10FFFF
    except code points unassigned in unicodedata and assigned in regex's Unicode."""
    space = set(regex.findall(r"\s", EVERY_CHAR))
    letter = set(regex.findall(r"\p{L}", EVERY_CHAR))
    number = set(regex.findall(r"\p{N}", EVERY_CHAR))
    assert not (space & letter or space & number or letter & number)
    differ = []
    for c in EVERY_CHAR:
        want = SPACE if c in space else LETTER if c in letter else NUMBER if c in number else OTHER
        if char_class(c) != want:
            differ.append(c)
    assert all(unicodedata.category(c) == "Cn" and char_class(c) == OTHER for c in differ)
    assert set(differ) == NEWER_UNICODE
    # \s is White_Space, not str.isspace()
    assert {c for c in EVERY_CHAR if c.isspace()} - space == set("\x1c\x1d\x1e\x1f")
    assert space - {c for c in EVERY_CHAR if c.isspace()} == set()


def test_case_insensitive_contraction_letters():
    """GPT-4's (?i) letters match exactly the characters whose casefold() is the letter."""
    for letter in "strvemld":
        matched = set(regex.findall(f"(?i:{letter})", EVERY_CHAR))
        assert matched == {c for c in EVERY_CHAR if c.casefold() == letter}, letter
    assert regex.findall(GPT4_PATTERN, "'\u017f") == ["'\u017f"]


# --------------------------------------------------------------- the scanners


# Pinned on every scanner test (spec and backend): each rule's edge, the classes that
# str.isspace() and \s disagree on, U+017F (the non-ASCII "s" of GPT-4's contractions).
EDGE_TEXTS = (
    "",
    "'",
    " ",
    "'s 'S ''s 'sa can't I'LL we'Re '\u017f",
    "   x\n\nx\t\tx \t x\r\n\r\n  y",
    "a\n  ",
    "12345 1234567 \u0663\u0663\u0663\u0663 \U0001d7ce\U0001d7ce\U0001d7ce\U0001d7ce",
    "(hello \thello 'hello \u3000hello \nhello",
    "e\u0301t\u00e9 \U0001f468\u200d\U0001f469\u200d\U0001f467!! \ud800\udc00\udfff",
    "x  \x1c\x1c y\u200b\u200bz \x85\x85w\u2028\u2028",
)


def with_edge_texts(test):
    """Pin every text of EDGE_TEXTS on a hypothesis test taking ``text``."""
    for text in EDGE_TEXTS:
        test = example(text=text)(test)
    return test


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
@settings(max_examples=300, deadline=None)
@given(text=pretoken_texts())
@with_edge_texts
def test_equals_regex(pattern, text):
    pieces = pretokenize(text, pattern)
    assert pieces == regex.findall(PATTERNS[pattern], text)
    assert "".join(pieces) == text
    assert all(pieces)


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_equals_regex_on_stdlib_sources(pattern):
    text = stdlib_sample()
    pieces = pretokenize(text, pattern)
    assert pieces == regex.findall(PATTERNS[pattern], text)


def test_known_splits():
    assert pretokenize("Hello world's 12345!!") == ["Hello", " world", "'s", " 12345", "!!"]
    assert pretokenize("Hello world'S 12345!!", "gpt4") == \
        ["Hello", " world", "'S", " ", "123", "45", "!!"]
    assert pretokenize("   x") == ["  ", " x"]
    assert pretokenize("a\n\n  b", "gpt4") == ["a", "\n\n", " ", " b"]


def test_pattern_by_expression():
    text = "It's 2024 (\u00e9t\u00e9)\n\n"
    assert pretokenize(text, GPT2_PATTERN) == pretokenize(text, "gpt2")
    assert pretokenize(text, GPT4_PATTERN) == pretokenize(text, "gpt4")


def test_bad_inputs():
    with pytest.raises(TypeError, match="text"):
        pretokenize(b"bytes")
    with pytest.raises(TypeError, match="text"):
        pretokenize(None)
    with pytest.raises(ValueError, match="pattern"):
        pretokenize("x", "gpt3")
    with pytest.raises(TypeError, match="pattern"):
        pretokenize("x", None)
