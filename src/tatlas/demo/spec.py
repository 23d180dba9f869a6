"""The records of a demo, as plain data: :class:`Demo` (a system's name and its ``run``), the
options a run gets, and what it returns (:class:`DemoResult`, or :class:`DemoFailure` when it
raised). This module imports nothing of tatlas."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class DemoOptions:
    out_dir: Path
    seed: int = 0
    quick: bool = False  # a shorter run (tests, smoke checks)
    progress: bool = True


@dataclass(frozen=True, kw_only=True)
class DemoResult:
    system: str
    claim: str  # the phenomenon, in one line
    metric: str
    value: float
    baseline: str
    baseline_value: float
    higher_is_better: bool = True
    seconds: float = 0.0
    artifacts: dict[str, str] = field(default_factory=dict)  # name -> path inside the report folder
    details: dict[str, float] = field(default_factory=dict)

    @property
    def beats_baseline(self) -> bool:
        return self.value > self.baseline_value if self.higher_is_better else self.value < self.baseline_value


@dataclass(frozen=True, kw_only=True)
class DemoFailure:
    """A demo that raised: its one-line error; the full traceback is ``<system>/error.txt``."""

    system: str
    error: str
    seconds: float = 0.0
    artifacts: dict[str, str] = field(default_factory=dict)

    beats_baseline = False


@dataclass(frozen=True)
class Demo:
    """``system``'s demo: ``run(options) -> DemoResult`` trains it on embedded data and measures the
    paper's headline result beside a baseline. ``run`` defined at a module's top level can run in
    a process of its own, beside other demos (:mod:`tatlas.demo.processes`)."""

    system: str
    run: Callable[[DemoOptions], DemoResult]
    expected_seconds: float = 60.0  # about how long it takes on 2 (Zen 1) cores: side by side, longest first
