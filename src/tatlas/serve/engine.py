"""The chat engine: one thread runs a :class:`~tatlas.generate.continuous.ContinuousBatch` of a text
model. Between decode steps it drops requests whose clients left (their rows are free for the next
step), prefills newcomers into free rows, and then decodes every running row at once; each request
samples with its own settings and generator, and stops on its own stop tokens, stop strings or
token budget. Text goes back through each request's ``emit`` callback (called on the engine thread)
as it becomes decodable; a stop string is never shown in part.

Bounded: at most ``max_queue`` requests waiting or running (:class:`QueueFull` beyond, which the
HTTP layer answers with 429). A failing request fails alone; a failing step fails the running
requests and the engine starts a fresh batch.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..generate.continuous import ContinuousBatch
from ..generate.search import Sampler

Event = dict[str, Any]  # {"text": piece} | {"done": finish_reason, "prompt_tokens", "completion_tokens"} | {"error": msg}


class QueueFull(Exception):
    """More requests than the server holds; ``retry_after``: seconds a client should wait."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(eq=False)
class ChatJob:
    """One request: its prompt ids (and image inputs, prefill only), sampling, stop rules, and
    where its text goes."""

    ids: list[int]
    max_tokens: int
    emit: Callable[[Event], None]
    decode: Callable[[list[int]], str]
    temperature: float = 0.0
    top_p: float | None = None
    seed: int | None = None
    stop_tokens: frozenset[int] = frozenset()
    stops: tuple[str, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    cancelled: threading.Event = field(default_factory=threading.Event)
    produced: list[int] = field(default_factory=list)
    shown: str = ""
    last: int = -1

    def __post_init__(self) -> None:
        generator = None
        if self.seed is not None and self.temperature > 0:
            generator = torch.Generator().manual_seed(self.seed)
        self.sampler = Sampler(temperature=self.temperature, top_p=self.top_p, generator=generator)

    def cancel(self) -> None:
        self.cancelled.set()

    def choose(self, logits: torch.Tensor) -> int:
        return int(self.sampler.choose(logits[None].float().cpu())[0])

    def accept(self, token: int) -> bool:
        """Take the next token; stream what became text. Returns True when the request is finished."""
        if token in self.stop_tokens:
            return self._finish("stop", self.decode(self.produced))
        self.produced.append(token)
        self.last = token
        text = self.decode(self.produced)
        cut = _first_stop(text, self.stops, since=max(0, len(self.shown) - max(map(len, self.stops), default=0)))
        if cut is not None:
            return self._finish("stop", text[:cut])
        if len(self.produced) >= self.max_tokens:
            return self._finish("length", text)
        if not text.endswith("\ufffd"):  # a character cut between tokens waits for its bytes
            safe = len(text) - _held_back(text, self.stops)
            if safe > len(self.shown):
                self.emit({"text": text[len(self.shown):safe]})
                self.shown = text[:safe]
        return False

    def _finish(self, reason: str, text: str) -> bool:
        if len(text) > len(self.shown):
            self.emit({"text": text[len(self.shown):]})
        self.emit({"done": reason, "prompt_tokens": len(self.ids), "completion_tokens": len(self.produced)})
        return True


def _first_stop(text: str, stops: Sequence[str], since: int) -> int | None:
    found = [i for i in (text.find(s, since) for s in stops) if i >= 0]
    return min(found) if found else None


def _held_back(text: str, stops: Sequence[str]) -> int:
    """Characters at the end of ``text`` that may be the start of a stop string."""
    return max((n for s in stops for n in range(min(len(s) - 1, len(text)), 0, -1) if text.endswith(s[:n])),
               default=0)


class ChatEngine:
    """A thread decoding the text model's requests with continuous batching (module docstring)."""

    _ids = itertools.count()

    def __init__(self, model: torch.nn.Module, *, rows: int, context: int, max_queue: int,
                 name: str = "chat") -> None:
        self.model, self.rows, self.context, self.max_queue = model, rows, context, max_queue
        self.batch = ContinuousBatch(model, rows=rows, max_len=context)
        self.waiting: deque[ChatJob] = deque()
        self.running: dict[int, ChatJob] = {}
        self.cond = threading.Condition()
        self.closing = False
        self.steps = 0
        self.thread = threading.Thread(target=self._loop, name=f"tatlas-serve-{name}", daemon=True)
        self.thread.start()

    def fits(self, prompt_tokens: int, max_tokens: int) -> bool:
        return self.batch.fits(prompt_tokens, max_tokens)

    def submit(self, job: ChatJob) -> None:
        with self.cond:
            if self.closing:
                raise QueueFull("the server is shutting down", retry_after=5)
            if len(self.waiting) + len(self.running) >= self.max_queue:
                raise QueueFull(f"{self.max_queue} chat requests are already waiting or running (the queue limit)")
            self.waiting.append(job)
            self.cond.notify()

    def stats(self) -> dict[str, int]:
        with self.cond:
            return {"waiting": len(self.waiting), "running": len(self.running), "rows": self.rows,
                    "steps": self.steps}

    def close(self, timeout: float | None = None) -> None:
        """Finish what was submitted, then stop the thread."""
        with self.cond:
            self.closing = True
            self.cond.notify()
        self.thread.join(timeout)

    # ---------------------------------------------------------------------------- the thread

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.waiting and not self.running and not self.closing:
                    self.cond.wait()
                if self.closing and not self.waiting and not self.running:
                    return
            self._drop_cancelled()
            self._admit()
            if self.running:
                self._step()
                time.sleep(0)  # let the event loop's thread take the GIL and send what this step produced

    def _leave(self, key: int) -> None:
        self.batch.leave(key)
        with self.cond:
            self.running.pop(key, None)

    def _drop_cancelled(self) -> None:
        for key, job in list(self.running.items()):
            if job.cancelled.is_set():
                self._leave(key)

    def _admit(self) -> None:
        """Prefill newcomers into free rows: all of them when nothing runs, else one per step (a long
        prompt delays the running rows by one prefill at most)."""
        admitted = 0
        while self.batch.free and (admitted == 0 or not self.running):
            with self.cond:
                if not self.waiting:
                    return
                job = self.waiting.popleft()
            if job.cancelled.is_set():
                continue
            key = next(self._ids)
            try:
                logits = self.batch.join(key, job.ids, job.max_tokens, **job.kwargs)
                job.kwargs = {}  # images are in the cache now
                with self.cond:
                    self.running[key] = job
                if job.accept(job.choose(logits)):
                    self._leave(key)
            except Exception as e:  # noqa: BLE001 - the request fails, the server goes on
                if key in self.batch.keys:
                    self._leave(key)
                job.emit({"error": f"{type(e).__name__}: {e}"})
            admitted += 1

    def _step(self) -> None:
        try:
            logits = self.batch.step({key: job.last for key, job in self.running.items()})
        except Exception as e:  # noqa: BLE001 - fail the running requests, start a fresh batch
            for job in self.running.values():
                job.emit({"error": f"{type(e).__name__}: {e}"})
            with self.cond:
                self.running.clear()
            self.batch = ContinuousBatch(self.model, rows=self.rows, max_len=self.context)
            return
        self.steps += 1
        for key, row in logits.items():
            job = self.running[key]
            if job.cancelled.is_set():
                self._leave(key)
                continue
            try:
                finished = job.accept(job.choose(row))
            except Exception as e:  # noqa: BLE001
                job.emit({"error": f"{type(e).__name__}: {e}"})
                finished = True
            if finished:
                self._leave(key)
