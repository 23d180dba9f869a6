"""`tatlas dt collect | info | train | evaluate` end to end on a tiny run, and their one-line errors."""

import numpy as np
import pytest
from typer.testing import CliRunner

from tatlas.cli.main import app

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


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


def test_collect_a_minari_dataset_of_the_sparse_environment_and_train_on_it(tmp_path):
    folder = tmp_path / "mountaincar-sparse-v0"
    out = _ok(["dt", "collect", "MountainCarSparse-v0", "--episodes", "3", "--mix", "random=1,expert=2", "--out", str(folder)])
    assert "3 episodes" in out and "best 1.0, worst 0.0" in out and f"wrote {folder}" in out
    assert (folder / "data" / "main_data.hdf5").is_file() and (folder / "data" / "metadata.json").is_file()
    assert "MountainCarSparse-v0: 3 episodes" in _ok(["dt", "info", str(folder / "data")])
    run = tmp_path / "run"
    out = _ok(["dt", "train", str(folder), "--out", str(run), "--preset", "tiny-discrete", "--steps", "2",
               "--batch-size", "4", "--context", "3", "--eval-episodes", "1", "--no-progress"])
    assert "trained to step 2" in out and "target_return 1" in out
    named = tmp_path / "elsewhere"
    _ok(["dt", "collect", "CartPole-v1", "--episodes", "1", "--mix", "random=1", "--out", str(named),
         "--dataset-id", "tatlas/cartpole-random-v3"])
    assert '"dataset_id": "tatlas/cartpole-random-v3"' in (named / "data" / "metadata.json").read_text()


def test_errors_are_one_line(tmp_path):
    _error(["dt", "collect", "Nope-v9", "--out", str(tmp_path / "x.npz")], "no scripted policies for 'Nope-v9'")
    _error(["dt", "collect", "CartPole-v1", "--out", str(tmp_path / "x.npz"), "--mix", "lucky=1"], "unknown policies")
    _error(["dt", "collect", "CartPole-v1", "--out", str(tmp_path / "x.txt")], "expected a file name ending in .npz",
           "or a Minari dataset folder named NAME-v<VERSION>")
    _error(["dt", "collect", "CartPole-v1", "--out", str(tmp_path / "d"), "--dataset-id", "no version"],
           "dataset_id: expected Minari's (NAMESPACE/)NAME-v<VERSION>")
    assert not (tmp_path / "d").exists()
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    _error(["dt", "train", str(empty), "--out", str(tmp_path / "run")], "the file is empty")
    broken = tmp_path / "broken.npz"
    np.savez(broken, **{"episode_0/observations": np.zeros((3, 2)), "episode_0/actions": np.zeros(2, int)})
    _error(["dt", "info", str(broken)], "episode_0: missing field 'rewards'")
    _error(["dt", "evaluate", str(tmp_path / "none.safetensors"), "--env", "CartPole-v1", "--targets", "1"],
           "no such file")
    _error(["dt", "evaluate", str(empty), "--env", "CartPole-v1", "--targets", "x,y"], "--targets")
