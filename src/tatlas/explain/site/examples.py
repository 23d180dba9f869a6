"""The examples on each system page, executed while the site is built: the Python example runs in
this process (a fresh namespace, its printed output captured), the CLI example runs ``tatlas`` in a
subprocess. What they print is what the page shows; an example that raises or exits non-zero stops
the build with one line naming it."""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import subprocess
import sys
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

# what the Python example prints of a system's output: an expression of ``out`` (one tensor)
OUTPUT: dict[str, str] = {
    "clip": "out.logits_per_image",
    "decision_transformer": "out.action_preds",
    "evoformer": "out.distogram_logits",
    "imagebind": "out['audio']",
}

PYTHON = '''\
import tempfile

import torch
import tatlas

model = tatlas.create({name!r}, {preset!r}).eval()  # random weights; the preset name is exact
inputs = tatlas.get_system({name!r}).sample_input(model, torch.Generator().manual_seed(0))
print("parameters:", f"{{sum(p.numel() for p in model.parameters()):,}}")
print("inputs:", {{k: list(v.shape) for k, v in inputs.items() if torch.is_tensor(v)}})
with torch.no_grad():
    out = model(**inputs)
print("output {pick}:", list({pick}.shape))

with tempfile.TemporaryDirectory() as folder:  # a checkpoint carries its system and config
    tatlas.save(model, f"{{folder}}/{name}.safetensors")
    again = tatlas.load(f"{{folder}}/{name}.safetensors").eval()
    with torch.no_grad():
        out_again = again(**inputs)
print("reloaded, max abs diff:", ({pick} - {pick_again}).abs().max().item())
'''


class ExampleError(RuntimeError):
    """An example of the site failed: the build stops, naming it."""


@dataclass(frozen=True)
class Example:
    code: str  # what the page shows (a shell command or Python source)
    output: str  # what it printed
    language: str  # "python" or "bash"


def python_example(name: str, preset: str) -> Example:
    """Run the system's Python example here; its source and printed output."""
    pick = OUTPUT.get(name, "out")
    code = PYTHON.format(name=name, preset=preset, pick=pick, pick_again=pick.replace("out", "out_again", 1))
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            exec(compile(code, f"<example {name}>", "exec"), {"__name__": f"example_{name}"})  # noqa: S102
    except Exception as e:  # any failure of an example fails the build, named
        raise ExampleError(f"the Python example of {name!r} failed: {type(e).__name__}: {' '.join(str(e).split())}") from e
    return Example(code, buf.getvalue(), "python")


class CommandRunner:
    """Runs ``tatlas`` command examples in subprocesses, ``workers`` at a time, while the build goes
    on; :meth:`result` waits for one."""

    def __init__(self, workers: int = 1) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers)
        self._jobs: dict[str, Future] = {}

    def submit(self, key: str, args: list[str], *, head: int = 0) -> None:
        self._jobs[key] = self._pool.submit(_run, args, head)

    def result(self, key: str) -> Example:
        return self._jobs[key].result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _run(args: list[str], head: int) -> Example:
    shown = "tatlas " + shlex.join(args)
    env = {**os.environ, "COLUMNS": "110", "NO_COLOR": "1", "TERM": "dumb"}
    with tempfile.TemporaryDirectory() as cwd:
        proc = subprocess.run([sys.executable, "-m", "tatlas.cli.main", *args], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ExampleError(f"the example `{shown}` exited {proc.returncode}: {last}")
    lines = proc.stdout.rstrip().splitlines()
    if head and len(lines) > head:
        lines = [*lines[:head], f"… ({len(lines) - head} more lines)"]
    return Example(shown, "\n".join(lines), "bash")


def explain_command(name: str, preset: str) -> list[str]:
    """``tatlas explain`` of a system (run in a scratch folder, where its diagram is written)."""
    return ["explain", name, "--preset", preset, "--depth", "1", "--out", f"explain-{name}"]
