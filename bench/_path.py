"""``sys.path`` for a benchmark run as a script (``python bench/NAME.py``).

Python then puts this folder first on ``sys.path``, where ``tokenize.py`` (the tokenizer
benchmark) shadows the standard library's ``tokenize``, which ``linecache``, ``inspect``,
torch and numba import: importing torch from any benchmark failed with "module
'tokenize' has no attribute 'open'". :func:`use_repository` takes this folder off the
path and puts the repository root first, so that ``spec``, ``backends`` and ``theory``
import from the checkout without an install. Call it before importing anything else.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def use_repository() -> None:
    sys.path[:] = [REPO] + [p for p in sys.path if os.path.abspath(p or os.curdir) not in (HERE, REPO)]
