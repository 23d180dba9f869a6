"""What a run reports: a JSONL log, a PNG plot of loss and learning rate, and a progress bar.

- ``metrics.jsonl``: one JSON object per logged step (``step``, ``loss``, ``lr``, ``grad_norm``,
  ``samples_per_s``, ``tokens_per_s`` when counted, ``elapsed`` seconds, and the extra entries of
  the loss dict), and one per evaluation (``step``, ``elapsed``, ``eval/<name>``). Each line is
  flushed as written. A resumed run first drops the lines beyond its checkpoint's step, so the
  log reads as one run.
- ``metrics.png``: loss (and any evaluated ``*loss*``) and learning rate against step; matplotlib
  is imported only when plotting, through its object API on the Agg canvas (no pyplot state).
- Progress: a ``rich`` bar (step, loss, throughput, ETA) on a terminal; elsewhere (a log file, CI)
  one plain line per logged step on stderr. ``progress=False`` shows nothing.

Only rank 0 writes or shows anything (``enabled=False`` elsewhere).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .checkpoint import atomic_write_bytes

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "metrics.png"


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no nan/inf
    return value


class MetricsLogger:
    """Collects step records in memory and, when ``out_dir`` is set, in ``metrics.jsonl``."""

    def __init__(
        self, out_dir: Path | None, *, total_steps: int, start_step: int = 0, progress: bool = True,
        enabled: bool = True,
    ) -> None:
        self.enabled = enabled
        self.records: list[dict[str, Any]] = []
        self.path = None if out_dir is None or not enabled else out_dir / METRICS_FILE
        self.total_steps, self.start_step = total_steps, start_step
        self._file = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            kept = self._read_until(start_step) if start_step > 0 else []
            self.records.extend(kept)
            # replaced atomically: a kill here leaves the old log, never an empty one
            atomic_write_bytes(self.path, "".join(json.dumps(r) + "\n" for r in kept).encode())
            self._file = open(self.path, "a")  # noqa: SIM115  (closed in close())
        self._progress = _Progress(total_steps, start_step) if progress and enabled else None

    def _read_until(self, step: int) -> list[dict[str, Any]]:
        if self.path is None or not self.path.is_file():
            return []
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # a line torn by a kill
                continue
            if isinstance(record, dict) and record.get("step", math.inf) <= step:
                kept.append(record)
        return kept

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {k: _plain(v) for k, v in record.items()}
        self.records.append(record)
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        if self._progress is not None and "loss" in record:
            self._progress.show(record)

    def advance(self, step: int, loss: float, samples_per_s: float) -> None:
        """Move the bar to ``step`` (called every step; cheap)."""
        if self._progress is not None:
            self._progress.advance(step, loss, samples_per_s)

    def plot(self, path: Path | None = None) -> Path | None:
        """Write the loss/learning-rate figure (next to the JSONL unless ``path``); ``None`` when
        there is nothing to plot or nowhere to put it."""
        path = path or (None if self.path is None else self.path.with_name(PLOT_FILE))
        steps = [r for r in self.records if "loss" in r and "lr" in r]
        if path is None or not steps or not self.enabled:
            return None
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(9, 3.5), layout="constrained")
        FigureCanvasAgg(fig)
        ax_loss, ax_lr = fig.subplots(1, 2)
        ax_loss.plot([r["step"] for r in steps], [_number(r["loss"]) for r in steps], label="train loss")
        eval_keys = sorted({k for r in self.records for k in r if k.startswith("eval/") and "loss" in k})
        for key in eval_keys:
            pts = [(r["step"], _number(r[key])) for r in self.records if key in r]
            ax_loss.plot(*zip(*pts, strict=True), marker="o", label=key)
        ax_loss.set_xlabel("step")
        ax_loss.set_ylabel("loss")
        ax_loss.legend()
        ax_lr.plot([r["step"] for r in steps], [r["lr"] for r in steps], color="tab:orange")
        ax_lr.set_xlabel("step")
        ax_lr.set_ylabel("learning rate")
        fig.savefig(path, dpi=100)
        return path

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._progress is not None:
            self._progress.close()
            self._progress = None


def _number(v: Any) -> float:
    return float(v)  # also reads back the "nan" / "inf" strings written by _plain


class _Progress:
    """A rich bar on a terminal; plain lines on stderr otherwise."""

    def __init__(self, total: int, start: int) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.bar = None
        if self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("step"), MofNCompleteColumn(), BarColumn(),
                TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(), console=self.console, transient=False,
            )
            self.task = self.bar.add_task("train", total=total, completed=start, loss="-", rate="")
            self.bar.start()

    def advance(self, step: int, loss: float, samples_per_s: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, loss=f"{loss:.4f}", rate=f"{samples_per_s:,.1f} samples/s")

    def show(self, record: dict[str, Any]) -> None:
        if self.bar is None:  # not a terminal: one line per logged step
            rate = record.get("tokens_per_s")
            rate_text = (f"{rate:,.0f} tokens/s" if rate is not None
                         else f"{record.get('samples_per_s', 0):,.1f} samples/s")
            self.console.print(
                f"step {record['step']} loss {_number(record['loss']):.4f} lr {record.get('lr', 0):.3g} "
                f"{rate_text} elapsed {record.get('elapsed', 0):.1f}s",
                highlight=False, soft_wrap=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (a line torn by a kill is skipped)."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out

