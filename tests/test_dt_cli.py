"""`tatlas dt collect | info | train | evaluate` end to end on a tiny run, and their one-line errors."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tatlas.cli.main import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models, a few tokens per call: one intra-op thread (a second one only waits on a shared machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _ok(args):
    res = runner.invoke(app, args, terminal_width=200)
    assert res.exit_code == 0, res.output
    return res.output


def _error(args, *fragments):
    res = runner.invoke(app, args, terminal_width=200)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and res.output.count("\n") == 1, res.output
    for fragment in fragments:
        assert fragment in res.output, res.output
    return res.output


def test_collect_train_evaluate(tmp_path):
    data = tmp_path / "pendulum.npz"
    out = _ok(["dt", "collect", "Pendulum-v1", "--episodes", "6", "--mix", "random=1,expert=1", "--out", str(data)])
    assert "6 episodes, 1200 steps" in out and data.is_file()
    assert "box of 1 in [(-2.0,), (2.0,)]" in _ok(["dt", "info", str(data)])
    run = tmp_path / "run"
    out = _ok(["dt", "train", str(data), "--out", str(run), "--steps", "4", "--batch-size", "8", "--context", "5",
               "--eval-episodes", "1", "--no-progress"])
    assert "trained to step 4" in out and "achieved_return" in out
    plot = tmp_path / "returns.png"
    out = _ok(["dt", "evaluate", str(run / "model.safetensors"), "--env", "Pendulum-v1", "--targets=-800,-100",
               "--episodes", "2", "--dataset", str(data), "--plot", str(plot)])
    lines = [line.split() for line in out.splitlines()]
    assert lines[0][:2] == ["target", "achieved"] and [float(r[0]) for r in lines[1:3]] == [-800.0, -100.0]
    assert all(-2000 < float(r[1]) < 0 for r in lines[1:3]) and "data: average return" in out
    assert plot.stat().st_size > 0
    recomputed = _ok(["dt", "evaluate", str(run / "model.safetensors"), "--env", "Pendulum-v1", "--targets=-800,-100",
                      "--episodes", "2", "--recompute", "--context", "3"])
    assert [r.split()[0] for r in recomputed.splitlines()[1:]] == ["-800.0", "-100.0"]
    _error(["dt", "evaluate", str(run / "model.safetensors"), "--env", "CartPole-v1", "--targets", "100"],
           "does not fit CartPole-v1", "state_dim is 3")


def test_errors_are_one_line(tmp_path):
    _error(["dt", "collect", "Nope-v9", "--out", str(tmp_path / "x.npz")], "no scripted policies for 'Nope-v9'")
    _error(["dt", "collect", "CartPole-v1", "--out", str(tmp_path / "x.npz"), "--mix", "lucky=1"], "unknown policies")
    _error(["dt", "collect", "CartPole-v1", "--out", str(tmp_path / "x.txt")], "expected a file name ending in .npz")
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    _error(["dt", "train", str(empty), "--out", str(tmp_path / "run")], "the file is empty")
    broken = tmp_path / "broken.npz"
    np.savez(broken, **{"episode_0/observations": np.zeros((3, 2)), "episode_0/actions": np.zeros(2, int)})
    _error(["dt", "info", str(broken)], "episode_0: missing field 'rewards'")
    _error(["dt", "evaluate", str(tmp_path / "none.safetensors"), "--env", "CartPole-v1", "--targets", "1"],
           "no such file")
    _error(["dt", "evaluate", str(empty), "--env", "CartPole-v1", "--targets", "x,y"], "--targets")
