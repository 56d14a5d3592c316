"""What the lesson notebooks (``lessons/NN_*.py``) share, so that each does not carry a copy.

Printing a function's source between two markers, reporting an exercise check as
TODO / FAIL / PASS, and running a conformance check on pinned and drawn problems. (Finding the checkout stays in each lesson: it must run before
anything of the project can be imported.)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable


def show_source(fn: Callable, start: str | None = None, stop: str | None = None) -> None:
    """Print the source of ``fn`` from the line containing ``start`` through ``stop``.

    Falls back to the whole function when a marker is not found, so an edit of the
    spec can never make a lesson cell lie or fail.
    """
    lines = inspect.getsource(fn).splitlines()
    i = next((n for n, line in enumerate(lines) if start and start in line), 0)
    j = next((n for n, line in enumerate(lines[i:], i) if stop and stop in line), len(lines) - 1)
    print(f"# {inspect.getsourcefile(fn)}, {fn.__name__}\n")
    print("\n".join(lines[i : j + 1]))


def check_name(fn) -> str:
    """How check results name a function: module.name unless the notebook defined it."""
    name = getattr(fn, "__qualname__", repr(fn))
    module = getattr(fn, "__module__", "__main__")
    return name if module == "__main__" else f"{module}.{name}"


def verdict(fn, run: Callable[[], object], passed: str) -> bool:
    """Call ``run()``; print TODO (not written yet), FAIL (with the reason) or PASS."""
    name = check_name(fn)
    try:
        run()
    except NotImplementedError:
        print(f"TODO {name}: not written yet; fill in your part and run this cell again")
        return False
    except Exception as exc:  # noqa: BLE001 - any failure of the learner's code is a FAIL line
        print(f"FAIL {name}: {type(exc).__name__}: {exc}")
        return False
    print(f"PASS {name}: {passed}")
    return True


def check_on_problems(fn, conform: Callable, pinned, drawn_problems, *, max_examples: int,
                      derandomize: bool, dtypes=None) -> bool:
    """Run ``conform(fn, problem, dtype)`` (a check of ``tests/backends/conformance.py``)
    on every ``pinned`` problem, then on ``max_examples`` problems drawn by hypothesis
    from ``drawn_problems``, in each of ``dtypes`` (float64 and float32 by default);
    print the :func:`verdict`. On a failure hypothesis shrinks the drawn problem."""
    import numpy as np
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    dtypes = (np.float64, np.float32) if dtypes is None else tuple(dtypes)

    @settings(max_examples=max_examples, deadline=None, database=None, derandomize=derandomize,
              suppress_health_check=list(HealthCheck))
    @given(problem=drawn_problems, dtype=st.sampled_from(dtypes))
    def drawn(problem, dtype):
        conform(fn, problem, dtype)

    def run():
        for problem in pinned:
            for dtype in dtypes:
                conform(fn, problem, dtype)
        drawn()

    names = "/".join(np.dtype(d).name for d in dtypes)
    return verdict(fn, run, f"{len(pinned)} pinned problems and {max_examples} drawn problems, {names}")
