"""How many CPU threads a loop of small steps should use, found by measuring, again and again.

On a 2-core machine that another process keeps busy, every parallel region of torch's OpenMP pool
waits at its barrier for the thread the scheduler has not yet run: a decode step or a small
training step, made of hundreds of such regions, then takes several times longer with 2 threads
than with 1 (measured here: the Flamingo demo 48 s quiet, 166 s beside one busy process; beside two,
309 s with 2 threads against 112 s with 1). On a quiet machine the second thread helps. No rule
read off the machine (load average, idle time) predicts which side of that line a loop is on, and
the machine changes state while the loop runs; so :class:`ThreadTuner` times the loop's own steps
at each thread count now and then, and runs the faster in between.

``TATLAS_THREADS=N`` (or ``OMP_NUM_THREADS``) fixes the count and turns the tuner off;
:func:`apply_thread_setting` (run when ``tatlas`` is imported) sets torch to ``N``.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from contextlib import contextmanager

import torch


def _setting() -> str:
    return os.environ.get("TATLAS_THREADS", "auto").strip().lower()


def fixed_threads() -> int | None:
    """The thread count ``TATLAS_THREADS`` fixes (``None`` for unset or ``auto``); a value that is not
    a positive whole number is a one-line ``ValueError``."""
    value = _setting()
    if value == "auto":
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"TATLAS_THREADS: expected a positive whole number or 'auto', got {value!r}")
    return int(value)


def environment_threads() -> int | None:
    """The threads a process gets when the environment fixes them: ``TATLAS_THREADS``, else a
    valid ``OMP_NUM_THREADS``."""
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    return fixed_threads() or (int(omp) if omp.isdigit() and int(omp) > 0 else None)


def apply_thread_setting(*, strict: bool = True) -> None:
    """Set torch's thread count to ``TATLAS_THREADS`` when it fixes one (a bad value: the error of
    :func:`fixed_threads`, or ignored when not ``strict``, as at import; the command line reports it)."""
    try:
        n = fixed_threads()
    except ValueError:
        if strict:
            raise
        return
    if n is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)


def tuning_wanted(device: torch.device | str | None = None) -> bool:
    """Whether a loop on ``device`` should tune its threads: a CPU loop with more than one thread,
    unless ``TATLAS_THREADS`` or ``OMP_NUM_THREADS`` fixes the count."""
    if device is not None and torch.device(device).type != "cpu":
        return False
    if _setting() != "auto" or "OMP_NUM_THREADS" in os.environ:
        return False
    return torch.get_num_threads() > 1


class ThreadTuner:
    """Call :meth:`tick` once at the start of every step of a loop. Each thread count in
    ``candidates`` (default: 1 and torch's current count), torch's own count first, is tried for
    ``warmup + trial`` steps (the warm-up steps are not timed: the pool is rebuilt), and a count
    whose timed steps so far take more than ``abandon`` times the best mean of a count already
    tried is given up at once (on a quiet machine one thread decodes the 0.5B model ~1.7x slower:
    four more such steps would cost 10% of a 32-token generation); the one with the smaller mean
    step time — the mean, not the median: beside a busy process most steps on 2 threads may be
    near one thread's time and every few a multiple of it (the descheduled thread), and the mean is
    what the loop's wall time pays (bfloat16 0.5B decode, one busy process: a median of 48 ms on 2
    threads against 42 on 1 kept 2 threads, whose mean was ~60) —
    torch's own count unless another is faster by more than ``margin`` (steps of uneven size, e.g.
    batches of varying length, make a few timed steps noisy; the busy-machine gap is 2-3x) — then
    runs for ``period`` steps, a period that doubles (up to ``max_period``) while the choice
    holds. A step slower than ``1 + drift`` times the winner's mean for ``patience`` steps in a
    row (the machine got busier, or quieter for the other count) starts a new round at once.
    :meth:`close` (or leaving ``with``) restores the thread count found at the start.

    ``choices`` records each round's ``(step, {threads: mean seconds}, chosen)``."""

    def __init__(self, *, candidates: tuple[int, ...] | None = None, warmup: int = 1, trial: int = 4,
                 period: int = 32, max_period: int = 512, drift: float = 0.5, patience: int = 4, margin: float = 0.15,
                 abandon: float = 1.5, clock=time.perf_counter) -> None:
        self.base = torch.get_num_threads()
        given = set(candidates or (1, self.base))
        self.candidates = tuple(sorted(given, key=lambda c: (c != self.base, c)))  # the live count first
        if any(c < 1 for c in self.candidates):
            raise ValueError(f"thread candidates must be >= 1, got {self.candidates}")
        self.warmup, self.trial, self.first_period, self.max_period = warmup, trial, period, max_period
        self.drift, self.patience, self.margin, self.abandon, self.clock = drift, patience, margin, abandon, clock
        self.steps = 0
        self.closed_at: float | None = None
        self.choices: list[tuple[int, dict[int, float], int]] = []
        self._last: float | None = None
        self._period = period
        self._new_round()

    # --- the schedule ------------------------------------------------------------------------

    def _new_round(self) -> None:
        # the last round's choice is tried first: the other count, if still slower, is then given up
        # after its first timed step (abandon), where trying it first would run all its steps
        order = sorted(self.candidates, key=lambda c: c != self.chosen) if self.choices else self.candidates
        self._queue = [c for c in order for _ in range(self.warmup + self.trial)]
        self._timed: dict[int, list[float]] = {c: [] for c in self.candidates}
        self._left = 0  # exploitation steps left
        self._slow = 0
        self._best: float | None = None
        self._set(self._queue[0])

    def _set(self, n: int) -> None:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        self.current = n

    def _record(self, seconds: float) -> None:
        """The step that just ended ran with ``self.current`` threads for ``seconds``."""
        if self._queue:  # exploring
            n = self._queue.pop(0)
            done_with_n = sum(1 for c in self._queue if c == n)
            if done_with_n < self.trial:  # past the warm-up steps of this count
                self._timed[n].append(seconds)
                tried = [statistics.fmean(v) for c, v in self._timed.items() if c != n and v]
                if tried and statistics.fmean(self._timed[n]) > self.abandon * min(tried):
                    self._queue = [c for c in self._queue if c != n]  # clearly slower: no more steps on it
            if self._queue:
                self._set(self._queue[0])
                return
            means = {c: statistics.fmean(v) for c, v in self._timed.items() if v}
            chosen = min(means, key=means.get)
            if self.base in means and means[chosen] > (1 - self.margin) * means[self.base]:
                chosen = self.base  # another count must win clearly: steps of uneven size make trials noisy
            previous = self.choices[-1][2] if self.choices else None
            self._period = min(self._period * 2, self.max_period) if chosen == previous else self.first_period
            self.choices.append((self.steps, means, chosen))
            self._best, self._left, self._slow = means[chosen], self._period, 0
            self._set(chosen)
            return
        self._left -= 1  # exploiting
        self._slow = self._slow + 1 if self._best is not None and seconds > (1 + self.drift) * self._best else 0
        if self._left <= 0 or self._slow >= self.patience:
            if self._slow >= self.patience:
                self._period = self.first_period
            self._new_round()

    # --- the interface -----------------------------------------------------------------------

    def tick(self) -> None:
        """A step begins (and the previous one, if any, ended now)."""
        now = self.clock()
        if self._last is not None:
            self._record(now - self._last)
            self.steps += 1
        self._last = now

    def pause(self) -> None:
        """Time not to count (an evaluation, a checkpoint): the next :meth:`tick` starts afresh."""
        self._last = None

    def close(self) -> None:
        torch.set_num_threads(self.base)
        self.closed_at = self.clock()

    def resume(self) -> None:
        """Go on with this tuner's schedule in a new loop (:func:`thread_tuner` with a ``key``): its
        current thread count again, the time between the loops not counted."""
        self._last = None
        self._set(self.current)

    @property
    def chosen(self) -> int | None:
        """The thread count of the latest finished round, if any."""
        return self.choices[-1][2] if self.choices else None


class NoTuner:
    """The tuner's interface, doing nothing (a GPU loop, a fixed thread count)."""

    steps, choices, chosen = 0, [], None

    def tick(self) -> None:
        pass

    def pause(self) -> None:
        pass

    def close(self) -> None:
        pass


# Loops of one kind that follow each other (the windows of a transcription, one generation after
# another from one model) share one tuner: each new loop goes on with the schedule the last one left,
# where a tuner of its own would time the slower thread count again for its first ~10 steps, most of
# a Whisper window's ~14 (beside a busy process, 2 threads' steps are 2-3x slower). A loop that comes
# more than RESUME_SECONDS after the last one ended starts afresh (the machine may have changed).
RESUME_SECONDS = 10.0
_SHARED: OrderedDict[Hashable, ThreadTuner] = OrderedDict()
_SHARED_LIMIT = 64


def thread_tuner(device: torch.device | str | None = None, *, enabled: bool = True, key: Hashable | None = None,
                 **kwargs) -> ThreadTuner | NoTuner:
    """A :class:`ThreadTuner` for a loop on ``device`` when ``enabled`` and :func:`tuning_wanted`, else
    one that does nothing (close it, or use :func:`tuned_threads`). With a ``key`` (what kind of loop
    this is, e.g. the model's decode step and its row count), the tuner of the last loop of that key
    in this thread goes on, if it ended within :data:`RESUME_SECONDS`."""
    if not (enabled and tuning_wanted(device)):
        return NoTuner()
    if key is None:
        return ThreadTuner(**kwargs)
    key = (key, threading.get_ident(), torch.get_num_threads())
    tuner = _SHARED.get(key)
    if tuner is not None and tuner.closed_at is not None and tuner.clock() - tuner.closed_at <= RESUME_SECONDS:
        tuner.resume()
    else:
        tuner = _SHARED[key] = ThreadTuner(**kwargs)
    _SHARED.move_to_end(key)
    while len(_SHARED) > _SHARED_LIMIT:
        _SHARED.popitem(last=False)
    return tuner


@contextmanager
def tuned_threads(device: torch.device | str | None = None, **kwargs) -> Iterator[ThreadTuner | NoTuner]:
    """:func:`thread_tuner` as a context: the thread count is restored on exit."""
    tuner = thread_tuner(device, **kwargs)
    try:
        yield tuner
    finally:
        tuner.close()
