"""A small progress bar for long training runs, on stderr, with no dependency.

The training functions (``spec.tokenize.bpe.train``, ``spec.tokenize.swe.train`` and
their cpu mirrors) take ``progress=callable(done, total)`` and call it now and then.
:class:`ProgressBar` is such a callable:

    from backends.progress import ProgressBar
    tok = train(texts, 32768, progress=ProgressBar("bpe merges"))

What it shows: ``bpe merges  [#########.........]  12000/32512  37%  4.1 s, ~7.0 s left``,
redrawn in place with a carriage return. What it does not do:

* draw at all when the stream is not a terminal (a log file, a pipe, a test's captured
  stderr), unless ``force=True``: training runs in scripts stay quiet;
* draw before ``delay`` seconds (default 1.0) have passed since its first call: a run of
  a few seconds or less shows nothing, or a bar that finishes at once;
* redraw more often than every ``interval`` seconds (default 0.1), so that a caller
  reporting every step costs a clock read and a comparison per call;
* leave the line unfinished: it ends the line when ``done >= total`` (after having drawn)
  and in :meth:`close`, which ``with ProgressBar(...) as bar:`` calls.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """``progress(done, total)``: a rate-limited bar on stderr (only on a terminal unless forced)."""

    def __init__(self, label: str = "", *, stream: TextIO | None = None, force: bool = False,
                 delay: float = 1.0, interval: float = 0.1, width: int = 30,
                 clock=time.monotonic):
        if delay < 0 or interval < 0:
            raise ValueError(f"delay and interval must be >= 0, got {delay!r}, {interval!r}")
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive int, got {width!r}")
        self.label, self.width, self.delay, self.interval = label, width, delay, interval
        self.stream = sys.stderr if stream is None else stream
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(force or (isatty is not None and isatty()))
        self._clock = clock
        self._start: float | None = None
        self._last_draw = -float("inf")
        self._drawn = False  # a line is open on the stream
        self.draws = 0

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = self._clock()
        if self._start is None:
            self._start = now
        finished = total > 0 and done >= total
        if now - self._start < self.delay and not (finished and self._drawn):
            return
        if not finished and now - self._last_draw < self.interval:
            return
        self._last_draw = now
        self._draw(done, total, now - self._start)
        if finished:
            self.close()

    def _draw(self, done: int, total: int, elapsed: float) -> None:
        frac = min(max(done / total, 0.0), 1.0) if total > 0 else 0.0
        fill = round(frac * self.width)
        bar = "#" * fill + "." * (self.width - fill)
        left = f", ~{elapsed * (1 - frac) / frac:.1f} s left" if 0 < frac < 1 else ""
        label = f"{self.label}  " if self.label else ""
        self.stream.write(f"\r{label}[{bar}]  {done}/{total}  {100 * frac:3.0f}%  "
                          f"{elapsed:.1f} s{left}   ")
        self.stream.flush()
        self._drawn = True
        self.draws += 1

    def close(self) -> None:
        """End the bar's line, if one was drawn."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
