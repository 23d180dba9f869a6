"""What the fuzz tests (``tests/test_fuzz_*.py``, issue #22) share: Hypothesis settings sized for CI
and for long runs, byte-level mutations of a valid file, and the property every reader must keep.

The property (:func:`refuses_cleanly`): reading a mutated input either succeeds or raises one of
the expected error types (``ValueError`` and its subclasses: ``CheckpointError``, ``AudioError``,
``ImageReadError``, ``DatasetError``, ``ConfigValueError`` ...; ``OSError``) with a non-empty
one-line message, naming the file where one is given; never another exception type, never a hang
(each case runs under a hard :data:`CASE_SECONDS` alarm) and never more than :data:`BUDGET_MB` of
memory traced by ``tracemalloc`` (Python and NumPy allocations) per case; each test also checks the
process' peak RSS (``ru_maxrss``) grew by less than the budget over all its cases (torch's own
allocations are not traced by ``tracemalloc``).

``TATLAS_FUZZ_EXAMPLES=N`` runs every fuzz test with N examples, randomised (the long run of
``docs/reliability.md``); unset, each test runs its small CI count, derandomised so CI is
reproducible.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import struct
import tracemalloc
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

BUDGET_MB = 256
CASE_SECONDS = 30
LONG = int(os.environ.get("TATLAS_FUZZ_EXAMPLES", "0") or 0)
EXPECTED: tuple[type[BaseException], ...] = (ValueError, OSError)


def fuzz(ci_examples: int):
    """``@settings`` for one fuzz test: ``ci_examples`` derandomised cases in CI, ``$TATLAS_FUZZ_EXAMPLES``
    random ones in a long run."""
    return settings(max_examples=LONG or ci_examples, deadline=timedelta(seconds=CASE_SECONDS), derandomize=not LONG,
                    database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large, HealthCheck.large_base_example])


class CaseTimeout(BaseException):
    """A case ran past :data:`CASE_SECONDS`."""


@contextlib.contextmanager
def time_limit(seconds: float = CASE_SECONDS):
    def expire(signum, frame):
        raise CaseTimeout(f"the case ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.contextmanager
def rss_budget(mb: float = BUDGET_MB):
    """The process' peak RSS grows by less than ``mb`` over the block (all of a test's cases)."""
    before = peak_rss_mb()
    yield
    grown = peak_rss_mb() - before
    assert grown < mb, f"peak RSS grew by {grown:.0f} MB over the cases, more than the budget of {mb} MB"


def refuses_cleanly(call: Callable[[], object], *, names: str | Path | None = None,
                    expected: tuple[type[BaseException], ...] = EXPECTED, budget_mb: float = BUDGET_MB) -> object:
    """Run ``call``: its result, or ``None`` when it raised an expected error with a one-line message
    (mentioning ``names``, a file name, when given). Anything else fails the test."""
    tracemalloc.start()
    try:
        with time_limit():
            try:
                return call()
            except expected as e:
                message = str(e)
                assert message.strip(), f"{type(e).__name__} without a message"
                assert "\n" not in message.strip(), f"{type(e).__name__} over several lines: {message!r}"
                assert "Traceback" not in message, message
                if names is not None:
                    assert Path(names).name in message, f"the message does not name {Path(names).name}: {message!r}"
                return None
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < budget_mb * 2**20, f"the case allocated {peak / 2**20:.0f} MB (budget {budget_mb} MB)"


# --------------------------------------------------------------------------- byte mutations

HUGE = (2**31 - 1, 2**32 - 1, 2**40, 2**63 - 1, 2**64 - 1)


@st.composite
def mutated(draw, data: bytes, hot: int | None = None) -> bytes:
    """``data`` truncated, with bits flipped, bytes inserted or deleted, or a 4/8-byte little- or
    big-endian field overwritten with a huge or negative number. ``hot``: the length of the header
    region where most positions are drawn (the rest of a file is mostly payload)."""
    n = len(data)
    hot = min(hot or n, n)

    def position(limit: int = n) -> int:
        return draw(st.one_of(st.integers(0, max(min(hot, limit) - 1, 0)), st.integers(0, max(limit - 1, 0))))

    kind = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "number", "several"]))
    out = bytearray(data)
    if kind == "truncate":
        return bytes(out[:position()])
    steps = draw(st.integers(2, 6)) if kind == "several" else 1
    for _ in range(steps):
        step = kind if kind != "several" else draw(st.sampled_from(["flip", "insert", "delete", "number"]))
        if not out:
            break
        if step == "flip":
            i = position(len(out))
            out[i] ^= 1 << draw(st.integers(0, 7))
        elif step == "insert":
            i = position(len(out))
            out[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif step == "delete":
            i = position(len(out))
            del out[i:i + draw(st.integers(1, 16))]
        else:
            value = draw(st.one_of(st.sampled_from(HUGE), st.integers(-(2**31), 2**31 - 1)))
            fmt = draw(st.sampled_from(["<I", ">I", "<Q", ">Q", "<i", ">i", "<q"]))
            raw = struct.pack(fmt, value % (2 ** (8 * struct.calcsize(fmt)))
                              if fmt[1].isupper() else max(min(value, 2**31 - 1), -(2**31)))
            i = position(len(out))
            out[i:i + len(raw)] = raw
    return bytes(out)


JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                 st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=10)
