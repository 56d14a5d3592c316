r"""Pre-tokenization: cut text into the pieces that byte-level BPE encodes one at a time.

Byte-level BPE never merges across a piece boundary: GPT-2 (Radford et al., 2019,
"Language Models are Unsupervised Multitask Learners", section 2.2) splits the text
first so that merges do not mix letters with punctuation ("dog." "dog!" "dog?" would
each waste a vocabulary slot), and the piece boundaries are drawn by one regular
expression, ``pat`` in openai/gpt-2's ``src/encoder.py``, run with ``regex.findall``.
GPT-4's tokenizer (tiktoken's ``cl100k_base``) uses a refined expression. This module
states both expressions (:data:`GPT2_PATTERN`, :data:`GPT4_PATTERN`, the strings that the
``regex`` package, Hugging Face ``tokenizers`` and ``tiktoken`` accept) and then
implements them again with the standard library only, as a left-to-right scanner over
code points whose rules are the expressions' alternatives in order. The tests prove
``pretokenize(text, p) == regex.findall(PATTERNS[p], text)`` on generated and real text.

Math (what ``regex.findall`` does, spelled out)
------------------------------------------------
``findall`` scans left to right; at position ``i`` it tries the alternatives *in order*
and takes the first that matches (each one greedy, with backtracking inside it), emits
``text[i:j]`` and continues at ``j``. Every alternative matches at least one character
and every character is matched by some alternative (the last one is ``\s+``, and a
non-space character is a letter, a number or "other"), so the pieces tile the text:
``"".join(pretokenize(text)) == text``.

Character classes (exactly those of the ``regex`` package on ``str`` patterns):

* **letter** ``\p{L}``: general category Lu, Ll, Lt, Lm, Lo. Combining marks (Mn, Mc,
  Me) are *not* letters: "é" written as e + U+0301 ends a letter run at the accent.
* **number** ``\p{N}``: general category Nd, Nl, No (so "²", "Ⅻ", "٣" are numbers).
* **space** ``\s``: the Unicode White_Space property, which is general category Zs, Zl,
  Zp plus the six controls U+0009..U+000D and U+0085. It is *not* ``str.isspace()``:
  U+001C..U+001F (information separators, bidi class B/S) are ``isspace()`` but not
  White_Space, so they are "other" here; U+200B ZERO WIDTH SPACE (Cf) and U+180E (Cf
  since Unicode 6.3) are "other" too.
* **other**: every remaining code point (punctuation, symbols, marks, controls, format
  characters such as ZWJ U+200D, private use, lone surrogates U+D800..U+DFFF, and
  unassigned code points).

GPT-2 (:data:`GPT2_PATTERN`), at position ``i`` the first that matches:

1. ``'s|'t|'re|'ve|'m|'ll|'d`` -- an English contraction after U+0027 APOSTROPHE, lower
   case only ("'S" is not one; it becomes the other-run "'" and the letter run "S").
2. `` ?\p{L}+`` -- an optional U+0020 SPACE (only that space) and a maximal letter run.
3. `` ?\p{N}+`` -- the same for numbers (any length).
4. `` ?[^\s\p{L}\p{N}]+`` -- the same for a maximal run of "other" characters (an
   apostrophe that starts no contraction is "other": "''s" -> "''", "s").
5. ``\s+(?!\S)`` -- a maximal space run ``text[i:j]`` if it ends the text; otherwise the
   run without its last character, if that leaves at least one (so "   x" gives "  "
   and then " x": the last space stays with the word, the reason for this rule).
6. ``\s+`` -- the whole space run (a run of one space character before a non-space that
   rules 2-4 did not take, e.g. "\t" before "x" or "\n" before "x").

GPT-4 (:data:`GPT4_PATTERN`, ``cl100k_base``):

1. ``(?i:'s|'t|'re|'ve|'m|'ll|'d)`` -- contractions in any case. ``(?i)`` is simple
   Unicode case folding, so each letter matches the characters whose ``casefold()`` is
   that letter: s matches "s", "S" and U+017F LATIN SMALL LETTER LONG S; every other
   letter only its two ASCII cases.
2. ``[^\r\n\p{L}\p{N}]?\p{L}+`` -- a maximal letter run, optionally preceded by one
   character that is neither CR, LF, a letter nor a number (a space, a tab, a bracket,
   an apostrophe: "(hello" and "\thello" are single pieces).
3. ``\p{N}{1,3}`` -- numbers in groups of at most three, left to right ("12345" ->
   "123", "45"); no leading space.
4. `` ?[^\s\p{L}\p{N}]+[\r\n]*`` -- an optional U+0020, a maximal other-run, and the CR
   and LF characters that directly follow it.
5. ``\s*[\r\n]+`` -- within the space run starting here, everything up to and including
   its last CR or LF (if it has one).
6. ``\s+(?!\S)`` and 7. ``\s+`` -- as GPT-2's rules 5 and 6.

The expression is the one tiktoken published for cl100k_base (and that Hugging Face's
GPT-4 ports use). Later tiktoken releases (0.14 here) ship a rewrite with possessive
quantifiers and an extra alternative ``\s++$`` before ``\s*[\r\n]``. It is *not*
equivalent: a space run that ends the text and holds a newline followed by spaces
("a\n  ") is one piece there ("\n  ") and two here ("\n", "  "); and its ``$`` means
"end, or before a final newline" in Python's ``regex`` but "end" in Rust's
``fancy-regex``. We keep the original, which contains no ``$`` and so means the same
in both engines.

Numerics (every output-determining choice)
------------------------------------------
* Pieces are ``str`` slices of the input; nothing is normalised (no NFC, no case
  mapping). Lone surrogates pass through as "other" characters.
* The categories come from the running Python's ``unicodedata``
  (``unicodedata.unidata_version``, 14.0.0 on Python 3.11). The ``regex`` package ships
  its own, usually newer, Unicode tables; the two agree on every code point assigned in
  the older version, and differ only on code points assigned since (unassigned here,
  so "other"; a letter or number there). The tests check every code point
  0..0x10FFFF and assert that those are the only differences.
* ``pattern`` is a name in :data:`PATTERNS` ("gpt2", "gpt4") or one of the two
  expression strings themselves (so a tokenizer that stores the expression can pass it).
"""

from __future__ import annotations

import unicodedata

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT4_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"""
    r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
PATTERNS = {"gpt2": GPT2_PATTERN, "gpt4": GPT4_PATTERN}

# ------------------------------------------------------------- character classes

# Class codes; backends.cpu.tokenize.pretokenize stores them in a uint8 table per code point.
OTHER, LETTER, NUMBER, SPACE = 0, 1, 2, 3

# \p{L}, \p{N} and the Z part of White_Space, by general category; every other
# category (M*, P*, S*, C*) is "other".
CLASS_OF_CATEGORY = {
    "Lu": LETTER, "Ll": LETTER, "Lt": LETTER, "Lm": LETTER, "Lo": LETTER,
    "Nd": NUMBER, "Nl": NUMBER, "No": NUMBER,
    "Zs": SPACE, "Zl": SPACE, "Zp": SPACE,
    "Mn": OTHER, "Mc": OTHER, "Me": OTHER,
    "Pc": OTHER, "Pd": OTHER, "Ps": OTHER, "Pe": OTHER, "Pi": OTHER, "Pf": OTHER, "Po": OTHER,
    "Sm": OTHER, "Sc": OTHER, "Sk": OTHER, "So": OTHER,
    "Cc": OTHER, "Cf": OTHER, "Cs": OTHER, "Co": OTHER, "Cn": OTHER,
}
# White_Space code points outside Zs/Zl/Zp: TAB, LF, VT, FF, CR (category Cc) and
# NEL U+0085 (Cc). Not U+001C..U+001F, which str.isspace() counts and \s does not.
SPACE_CONTROLS = "\t\n\x0b\x0c\r\x85"

# The characters a case-insensitive contraction letter matches (GPT-4 rule 1):
# those whose casefold() is the letter ('s' also matches U+017F LONG S).
_APOSTROPHE = "'"
_GPT2_CONTRACTIONS = ("s", "t", "re", "ve", "m", "ll", "d")


def char_class(ch: str) -> int:
    """The class of one code point: :data:`LETTER`, :data:`NUMBER`, :data:`SPACE` or
    :data:`OTHER` (``\\p{L}``, ``\\p{N}``, ``\\s`` or none of them, see the module
    docstring)."""
    if ch in SPACE_CONTROLS:
        return SPACE
    return CLASS_OF_CATEGORY[unicodedata.category(ch)]


# ------------------------------------------------------------- the two scanners


def _class_at(text: str, i: int) -> int:
    """Class of text[i], or -1 past the end (matches no class)."""
    return char_class(text[i]) if i < len(text) else -1


def _run_end(text: str, i: int, cls: int) -> int:
    """End of the maximal run of class ``cls`` starting at i (i itself if none)."""
    n = len(text)
    while i < n and char_class(text[i]) == cls:
        i += 1
    return i


def _space_run_end(text: str, i: int) -> int:
    """Rules ``\\s+(?!\\S)`` then ``\\s+`` for the space run starting at i: the whole run
    if it ends the text or has one character, else the run without its last one."""
    j = _run_end(text, i, SPACE)
    if j == len(text) or j - i == 1:
        return j  # (?!\S) holds at the end of text; a run of one takes \s+
    return j - 1  # backtrack one: (?!\S) holds before the run's last space


def _gpt2_end(text: str, i: int) -> int:
    """End of the GPT-2 piece that starts at text[i]."""
    # 1. 's|'t|'re|'ve|'m|'ll|'d (case-sensitive; first letters differ, order is moot)
    if text[i] == _APOSTROPHE:
        for c in _GPT2_CONTRACTIONS:
            if text.startswith(c, i + 1):
                return i + 1 + len(c)
    cls = char_class(text[i])
    # 2.-4. ` ?X+` for X = letter, number, other: the optional space is U+0020 only
    if text[i] == " ":
        nxt = _class_at(text, i + 1)
        if nxt in (LETTER, NUMBER, OTHER):
            return _run_end(text, i + 1, nxt)
    if cls != SPACE:
        return _run_end(text, i, cls)
    # 5.-6. \s+(?!\S) | \s+
    return _space_run_end(text, i)


def _casefold_is(text: str, i: int, letters: str) -> bool:
    """text[i:i+len(letters)] matches ``letters`` under (?i): per character, its
    casefold() equals the letter (simple case folding for these letters)."""
    if i + len(letters) > len(text):
        return False
    return all(text[i + k].casefold() == c for k, c in enumerate(letters))


def _gpt4_end(text: str, i: int) -> int:
    """End of the GPT-4 (cl100k_base) piece that starts at text[i]."""
    n = len(text)
    ch = text[i]
    # 1. (?i:'s|'t|'re|'ve|'m|'ll|'d)
    if ch == _APOSTROPHE:
        for c in _GPT2_CONTRACTIONS:
            if _casefold_is(text, i + 1, c):
                return i + 1 + len(c)
    cls = char_class(ch)
    # 2. [^\r\n\p{L}\p{N}]?\p{L}+ : a letter run, or one prefix character and a letter run
    if cls == LETTER:
        return _run_end(text, i, LETTER)
    if ch not in "\r\n" and cls != NUMBER and _class_at(text, i + 1) == LETTER:
        return _run_end(text, i + 1, LETTER)
    # 3. \p{N}{1,3}
    if cls == NUMBER:
        j = i + 1
        while j < min(i + 3, n) and char_class(text[j]) == NUMBER:
            j += 1
        return j
    # 4. ` ?[^\s\p{L}\p{N}]+[\r\n]*`
    start = i + 1 if ch == " " and _class_at(text, i + 1) == OTHER else i
    if start > i or cls == OTHER:
        j = _run_end(text, start, OTHER)
        while j < n and text[j] in "\r\n":
            j += 1
        return j
    # 5. \s*[\r\n]+ : up to and including the space run's last CR/LF
    j = _run_end(text, i, SPACE)
    last_newline = max(text.rfind("\r", i, j), text.rfind("\n", i, j))
    if last_newline >= 0:
        return last_newline + 1
    # 6.-7. \s+(?!\S) | \s+
    return _space_run_end(text, i)


_SCANNERS = {"gpt2": _gpt2_end, "gpt4": _gpt4_end}


def pattern_name(pattern: str) -> str:
    """The name in :data:`PATTERNS` ("gpt2" or "gpt4") of ``pattern``, given as a name
    or as the expression string itself; TypeError/ValueError naming ``pattern`` else."""
    if not isinstance(pattern, str):
        raise TypeError(f"pattern: expected a str (one of {sorted(PATTERNS)}), "
                        f"got {type(pattern).__name__}")
    if pattern in PATTERNS:
        return pattern
    for name, expr in PATTERNS.items():
        if pattern == expr:
            return name
    raise ValueError(f"pattern: expected one of {sorted(PATTERNS)} (or their expression "
                     f"strings), got {pattern!r}")


def pretokenize(text: str, pattern: str = "gpt2") -> list[str]:
    """Split ``text`` into pre-tokens, exactly as ``regex.findall(PATTERNS[pattern], text)``.

    Math: the rules of the module docstring, first match wins at each position, scanned
    left to right (GPT-2: openai/gpt-2 ``src/encoder.py``; GPT-4: tiktoken cl100k_base).

    Shapes: ``text`` of n code points -> a list of k non-empty strings, k <= n, whose
    concatenation is ``text`` (``[]`` for ``""``).

    Numerics: exact; classes from the running Python's ``unicodedata`` (module docstring).
    """
    if not isinstance(text, str):
        raise TypeError(f"text: expected a str, got {type(text).__name__}")
    end_of = _SCANNERS[pattern_name(pattern)]
    pieces = []
    i = 0
    while i < len(text):
        j = end_of(text, i)
        pieces.append(text[i:j])
        i = j
    return pieces
