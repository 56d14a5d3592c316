"""Text corpora for the tokenizers: the standard library's sources and the built English corpus.

Two corpora, neither downloaded at run time:

* **The standard library** of the running Python (``sysconfig.get_paths()["stdlib"]``):
  always present, so it is the tour's, the tests' and the lessons' default text.
  :func:`stdlib_files` lists its ``.py`` files in a fixed order (sorted by their path
  relative to the library folder, POSIX separators), leaving out ``site-packages`` and
  ``dist-packages`` (third-party code, which differs between machines) and any file that
  is not valid UTF-8. :func:`stdlib_text` returns the first ``n_bytes`` of their
  concatenation. The text is the same on every machine with the same Python release.
* **The English benchmark corpus** that ``scripts/build-corpus`` writes from Debian
  packages of public-domain or freely licensed text (the script's docstring records each
  source's package, version, size and licence): ``train.txt`` (10,000,000 bytes) and
  ``heldout.txt``, in :func:`corpus_dir`. :func:`english_paths` returns them, or raises
  ``FileNotFoundError`` saying how to build them.
"""

from __future__ import annotations

import functools
import os
import sysconfig
from pathlib import Path

ENV_DIR = "ATTNSPEC_CORPUS"
"""Environment variable naming the built corpus's folder (default ~/.cache/attnspec/corpus)."""


def corpus_dir() -> Path:
    """Where scripts/build-corpus writes, and bench/tokenize.py reads, the English corpus."""
    env = os.environ.get(ENV_DIR)
    return Path(env) if env else Path.home() / ".cache" / "attnspec" / "corpus"


def english_paths(folder: Path | None = None) -> tuple[Path, Path]:
    """(train.txt, heldout.txt) of the built corpus; FileNotFoundError naming the command if absent."""
    folder = corpus_dir() if folder is None else Path(folder)
    train, heldout = folder / "train.txt", folder / "heldout.txt"
    if not (train.is_file() and heldout.is_file()):
        raise FileNotFoundError(
            f"the English benchmark corpus is not built in {folder}: run scripts/build-corpus "
            f"(it installs its Debian packages with apt-get; set {ENV_DIR} to use another folder)")
    return train, heldout


@functools.cache
def stdlib_files() -> tuple[Path, ...]:
    """The standard library's ``.py`` files, sorted by relative POSIX path, UTF-8 only."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).as_posix()
        # third-party packages differ between machines; the standard library does not
        if "site-packages" in rel.split("/") or "dist-packages" in rel.split("/"):
            continue
        found.append((rel, path))
    found.sort()
    out = []
    for _, path in found:
        try:
            path.read_bytes().decode("utf-8")
        except (UnicodeDecodeError, OSError):
            # a few test files are deliberately in other encodings; leave them out
            continue
        out.append(path)
    return tuple(out)


def stdlib_text(n_bytes: int, *, offset: int = 0) -> str:
    """``n_bytes`` bytes of the standard library's sources, from byte ``offset`` on.

    The files of :func:`stdlib_files` are concatenated in order; the slice is cut back
    to whole UTF-8 characters at both ends, so the result may be a few bytes shorter.
    Raises ValueError if the library has fewer bytes than asked for.
    """
    if not isinstance(n_bytes, int) or n_bytes < 0:
        raise ValueError(f"n_bytes must be a non-negative int, got {n_bytes!r}")
    if not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be a non-negative int, got {offset!r}")
    chunks, have, skip = [], 0, offset
    for path in stdlib_files():
        data = path.read_bytes()
        if skip >= len(data):
            skip -= len(data)
            continue
        data, skip = data[skip:], 0
        chunks.append(data[: n_bytes - have])
        have += len(chunks[-1])
        if have >= n_bytes:
            break
    if have < n_bytes:
        raise ValueError(f"the standard library has fewer than offset + n_bytes = {offset + n_bytes} bytes")
    # cut partial characters at either end (continuation bytes are 0b10xxxxxx)
    return b"".join(chunks).decode("utf-8", errors="ignore")
