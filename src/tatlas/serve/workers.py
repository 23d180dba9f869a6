"""Micro-batching workers for the encoders: a thread takes the first waiting request, waits up to
``wait_s`` for company (at most ``max_batch`` requests), and runs them as one batch.

- :class:`WhisperWorker`: the files of concurrent transcription requests go to one
  :func:`~tatlas.jobs.whisper.transcribe_batch` call, whose rounds decode a window of every file
  together (requests with different options form separate calls);
- :class:`EmbedWorker`: the texts of concurrent embedding requests go through CLIP's text tower in
  one call, the images through its image tower in one call.

Results come back as :class:`concurrent.futures.Future`; a request cancelled before its batch
starts is skipped. If a batch fails, its requests are run one by one, so that a bad request fails
alone.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import torch
import torch.nn.functional as F

from .engine import QueueFull


class BatchWorker:
    def __init__(self, name: str, run_batch: Callable[[list[Any]], Sequence[Any]], *, max_batch: int,
                 wait_s: float, max_queue: int) -> None:
        self.name, self.run_batch = name, run_batch
        self.max_batch, self.wait_s, self.max_queue = max_batch, wait_s, max_queue
        self.queue: deque[tuple[Any, Future]] = deque()
        self.cond = threading.Condition()
        self.busy = 0
        self.closing = False
        self.batches = 0
        self.thread = threading.Thread(target=self._loop, name=f"tatlas-serve-{name}", daemon=True)
        self.thread.start()

    def submit(self, item: Any) -> Future:
        future: Future = Future()
        with self.cond:
            if self.closing:
                raise QueueFull("the server is shutting down", retry_after=5)
            if len(self.queue) + self.busy >= self.max_queue:
                raise QueueFull(f"{self.max_queue} {self.name} requests are already waiting or running (the queue limit)")
            self.queue.append((item, future))
            self.cond.notify()
        return future

    def stats(self) -> dict[str, int]:
        with self.cond:
            return {"waiting": len(self.queue), "running": self.busy, "batches": self.batches}

    def close(self, timeout: float | None = None) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify()
        self.thread.join(timeout)

    def _take(self) -> list[tuple[Any, Future]] | None:
        with self.cond:
            while not self.queue and not self.closing:
                self.cond.wait()
            if not self.queue:
                return None
            deadline = time.monotonic() + self.wait_s
            while len(self.queue) < self.max_batch and not self.closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            taken = [self.queue.popleft() for _ in range(min(self.max_batch, len(self.queue)))]
            live = [(item, f) for item, f in taken if f.set_running_or_notify_cancel()]
            self.busy = len(live)
            return live

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            try:
                if batch:
                    self.batches += 1
                    self._run([item for item, _ in batch], [f for _, f in batch])
            finally:
                with self.cond:
                    self.busy = 0

    def _run(self, items: list[Any], futures: list[Future]) -> None:
        try:
            results = self.run_batch(items)
        except Exception as e:  # noqa: BLE001 - find the request that failed: one by one
            if len(items) == 1:
                futures[0].set_exception(e)
                return
            for item, future in zip(items, futures, strict=True):
                self._run([item], [future])
            return
        for future, result in zip(futures, results, strict=True):
            future.set_result(result)


class WhisperWorker(BatchWorker):
    """Items: ``(samples [S] float32 at 16 kHz, TranscribeOptions)`` -> :class:`Transcript`."""

    def __init__(self, model, *, max_batch: int, wait_s: float, max_queue: int) -> None:
        self.model = model
        super().__init__("transcription", self._transcribe, max_batch=max_batch, wait_s=wait_s, max_queue=max_queue)

    def _transcribe(self, items: list[tuple[Any, Any]]) -> list[Any]:
        from ..jobs.whisper import transcribe_batch

        out: list[Any] = [None] * len(items)
        groups: dict[Any, list[int]] = {}
        for i, (_, options) in enumerate(items):
            groups.setdefault(options, []).append(i)
        for options, rows in groups.items():
            done = transcribe_batch(self.model, [items[i][0] for i in rows], options, batch_size=len(rows), seed=0)
            for i, transcript in zip(rows, done, strict=True):
                out[i] = transcript
        return out


class EmbedWorker(BatchWorker):
    """Items: ``("text", str)`` or ``("image", PIL image)`` -> ``(unit embedding [E], tokens)``;
    ``("zero-shot", (PIL image, labels))`` -> probabilities ``[K]``."""

    def __init__(self, model, *, max_batch: int, wait_s: float, max_queue: int) -> None:
        from ..models.clip.tokenizer import CLIPTokenizer

        self.model = model
        self.tokenizer = CLIPTokenizer(context_length=model.config.text.context_length)
        super().__init__("embedding", self._embed, max_batch=max_batch, wait_s=wait_s, max_queue=max_queue)

    @torch.inference_mode()
    def _embed(self, items: list[tuple[str, Any]]) -> list[Any]:
        from ..models.clip.preprocess import preprocess_batch

        out: list[Any] = [None] * len(items)
        device = self.model.logit_scale.device
        texts = [i for i, (kind, _) in enumerate(items) if kind == "text"]
        if texts:
            tokens = self.tokenizer([items[i][1] for i in texts], truncate=True).to(device)
            embeds = F.normalize(self.model.encode_text(tokens).float(), dim=-1).cpu()
            for i, e, n in zip(texts, embeds, (tokens != 0).sum(-1).tolist(), strict=True):
                out[i] = (e, n)
        images = [i for i, (kind, _) in enumerate(items) if kind == "image"]
        if images:
            pixels = preprocess_batch([items[i][1] for i in images], self.model.config.vision).to(device)
            embeds = F.normalize(self.model.encode_image(pixels).float(), dim=-1).cpu()
            for i, e in zip(images, embeds, strict=True):
                out[i] = (e, 0)
        for i, (kind, payload) in enumerate(items):
            if kind == "zero-shot":
                out[i] = self._zero_shot(*payload)
        return out

    def _zero_shot(self, image, labels: Sequence[str]) -> list[float]:
        from ..models.clip.preprocess import preprocess_batch
        from ..models.clip.zeroshot import build_classifier

        classifier = build_classifier(self.model, self.tokenizer, labels)
        pixels = preprocess_batch([image], self.model.config.vision).to(self.model.logit_scale.device)
        return classifier.probabilities(self.model, pixels)[0].tolist()
