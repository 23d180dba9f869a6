"""Issue #22, training and files: a run owns its folder and never overwrites another run's work,
corrupt checkpoints are set aside and not counted, sizes and config values are checked before
anything is allocated, and checkpoint / JSON / NumPy / pickle problems read as one helpful line."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import tatlas
from tatlas.cli.main import app
from tatlas.io import CheckpointError, CheckpointMismatchError, check_state_dict, config_from_dict, load_torch_file
from tatlas.io import read_checkpoint, save_checkpoint
from tatlas.io.arrays import load_numpy
from tatlas.train import TrainConfig, Trainer
from tatlas.train.runlock import LOCK_NAME, RunFolderBusy
from test_train import RandomBytes, config, next_token_loss, tiny_model, train

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- a run owns its folder


@pytest.fixture
def live_pid():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_run_on_a_folder_in_use_fails_and_leaves_the_first_runs_files(tmp_path, live_pid):
    import socket

    (tmp_path / LOCK_NAME).write_text(f"{socket.gethostname()} {live_pid}\n")
    with pytest.raises(RunFolderBusy, match=rf"in use by another run \(process {live_pid}\)"):
        train(config(steps=2, out_dir=tmp_path, checkpoint_every=1))
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME]  # nothing written, the lock kept
    assert (tmp_path / LOCK_NAME).read_text().split()[1] == str(live_pid)


def test_a_stale_lock_of_a_dead_process_is_taken_over_and_released(tmp_path, caplog):
    import socket

    dead = _dead_pid()
    (tmp_path / LOCK_NAME).write_text(f"{socket.gethostname()} {dead}\n")
    with caplog.at_level(logging.WARNING, logger="tatlas.train"):
        result = train(config(steps=2, out_dir=tmp_path, checkpoint_every=1))
    assert result.steps == 2 and f"taking over the lock of process {dead}" in caplog.text
    assert not (tmp_path / LOCK_NAME).exists()  # released when fit returned


def test_two_concurrent_cli_runs_on_one_folder_the_second_fails(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "tatlas.cli.main", "train", "imagegpt", "--steps", "400", "--batch-size", "2",
           "--checkpoint-every", "400", "--out", str(out), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while not (out / LOCK_NAME).exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.1)
        assert (out / LOCK_NAME).exists(), first.communicate()
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and "in use by another run" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.kill()
        first.wait()


def test_a_fresh_or_resumed_run_never_replaces_a_finished_run_without_checkpoints(tmp_path):
    first = train(config(steps=2, out_dir=tmp_path))  # no checkpoint_every: weights and metrics only
    weights, metrics = first.model_path.read_bytes(), first.metrics_path.read_bytes()
    for resume in (False, True):
        with pytest.raises(ValueError, match=r"already holds an earlier run \(metrics.jsonl, model.safetensors\) "
                                             r"with no checkpoint to resume from"):
            train(config(steps=4, out_dir=tmp_path), resume=resume)
    assert first.model_path.read_bytes() == weights and first.metrics_path.read_bytes() == metrics


def test_the_cli_refusal_of_a_run_folder_names_the_option_not_only_the_python_call(tmp_path):
    args = ["train", "imagegpt", "--steps", "2", "--batch-size", "2", "--checkpoint-every", "1", "--out",
            str(tmp_path), "--no-progress"]
    assert runner.invoke(app, args).exit_code == 0
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "--resume" in res.output and "Traceback" not in res.output


# --------------------------------------------------------------------------- corrupt checkpoints


def _flip(folder):
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_corrupt_newest_checkpoint_is_set_aside_and_not_counted_by_keep_k(tmp_path, caplog):
    train(config(steps=6, out_dir=tmp_path, checkpoint_every=2, keep_checkpoints=2))  # step-4, step-6
    root = tmp_path / "checkpoints"
    _flip(root / "step-00000006")
    with caplog.at_level(logging.WARNING, logger="tatlas.train"):
        resumed = train(config(steps=5, out_dir=tmp_path, checkpoint_every=1, keep_checkpoints=2), resume=True)
    assert resumed.start_step == 4 and "step-00000006 is incomplete or corrupt" in caplog.text
    names = sorted(p.name for p in root.iterdir())
    assert names == ["latest", "step-00000004", "step-00000005", "step-00000006.corrupt"], names


def test_resuming_when_every_checkpoint_is_corrupt_says_so_without_api_advice(tmp_path):
    train(config(steps=2, out_dir=tmp_path, checkpoint_every=1))
    for folder in (tmp_path / "checkpoints").glob("step-*"):
        _flip(folder)
    with pytest.raises(CheckpointError, match="no complete checkpoint to resume from; 2 incomplete or corrupt") as e:
        train(config(steps=4, out_dir=tmp_path, checkpoint_every=1), resume=True)
    assert "fit(resume=True)" not in str(e.value)
    res = runner.invoke(app, ["train", "imagegpt", "--steps", "1", "--out", str(tmp_path), "--resume",
                              "--no-progress"])
    assert res.exit_code == 2 and "no complete checkpoint" in res.output and "fit(" not in res.output


# --------------------------------------------------------------------------- sizes and config values


def test_train_config_refuses_infinite_and_nan_rates():
    for lr in (float("inf"), float("nan")):
        with pytest.raises(ValueError, match="TrainConfig.lr: expected a positive learning rate"):
            TrainConfig(steps=2, batch_size=2, lr=lr)
    with pytest.raises(ValueError, match="weight_decay"):
        TrainConfig(steps=2, batch_size=2, weight_decay=float("inf"))


def test_cli_lr_inf_is_one_line_and_leaves_no_folder(tmp_path):
    res = runner.invoke(app, ["train", "imagegpt", "--steps", "2", "--out", str(tmp_path / "r"), "--lr", "inf",
                              "--no-progress"])
    assert res.exit_code == 2 and "TrainConfig.lr" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "r").exists()


def test_config_values_are_type_checked_in_create_and_when_read():
    with pytest.raises(ValueError, match=r"ImageGPTConfig.norm_eps: expected float, got 'x' \(str\)"):
        tatlas.create("imagegpt", norm_eps="x")
    with pytest.raises(ValueError, match=r"ImageGPTConfig.dim: expected int, got 'abc'"):
        tatlas.create("imagegpt", dim="abc")
    with pytest.raises(ValueError, match=r"layers: expected int, got 1.5"):
        tatlas.create("imagegpt", layers=1.5)
    with pytest.raises(ValueError, match=r"mlp_hidden: expected int or None, got True"):
        tatlas.create("imagegpt", mlp_hidden=True)
    cls = type(tatlas.create("imagegpt", device="meta").config)
    with pytest.raises(ValueError, match=r"ImageGPTConfig.dim: expected int, got '64'"):
        config_from_dict(cls, {"clusters": 16, "image_size": 4, "dim": "64", "layers": 1, "heads": 4})
    assert tatlas.create("imagegpt", norm_eps=1).config.norm_eps == 1  # an int is a float


@pytest.mark.parametrize("override, words", [
    ("dim=abc", "ImageGPTConfig.dim: expected int, got 'abc'"),
    ("norm_eps=abc", "ImageGPTConfig.norm_eps: expected float, got 'abc'"),
    ("dim=1000000000", "not enough memory"),
])
def test_cli_config_overrides_fail_in_one_line_before_allocating(tmp_path, override, words):
    res = runner.invoke(app, ["train", "imagegpt", "--steps", "1", "--out", str(tmp_path / "r"),
                              "--config", override, "--no-progress"])
    assert res.exit_code == 2 and words in res.output and "Traceback" not in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1


def test_a_model_too_big_for_memory_is_refused_before_allocation():
    start = time.perf_counter()
    with pytest.raises(MemoryError, match=r"imagegpt with [\d,]+ parameters needs [\d.]+ TB; the CPU has"):
        tatlas.create("imagegpt", dim=100_000)
    with pytest.raises(MemoryError, match="too large for any memory"):
        tatlas.create("imagegpt", dim=1_000_000_000)
    assert time.perf_counter() - start < 10


# --------------------------------------------------------------------------- checkpoint files


def test_a_checkpoint_tensor_of_the_wrong_dtype_is_a_one_line_mismatch(tmp_path):
    model = tatlas.create("imagegpt")
    path = tatlas.save(model, tmp_path / "m.safetensors")
    state, system, cfg, _ = read_checkpoint(path)
    state["norm.weight"] = state["norm.weight"].to(torch.int32)
    save_checkpoint(path, state, system=system, config=cfg)
    with pytest.raises(CheckpointMismatchError, match=r"wrong dtype 1: norm.weight \(model torch.float32, "
                                                      r"checkpoint torch.int32\)"):
        tatlas.load(path)
    res = runner.invoke(app, ["imagegpt", "complete", str(path), "--out", str(tmp_path / "g.png"), "--model",
                              str(path)])
    assert res.exit_code == 2 and "Traceback" not in res.output


def test_a_mismatch_with_thousands_of_tensors_lists_some_and_counts_the_rest():
    with torch.device("meta"):
        small, big = tatlas.create("imagegpt", device="meta"), tatlas.create("imagegpt", layers=300, device="meta")
    with pytest.raises(CheckpointMismatchError) as e:
        check_state_dict(small, big.state_dict())
    assert len(e.value.unexpected) > 2000 and "... and " in str(e.value) and "more" in str(e.value)
    assert len(str(e.value)) < 3000


def test_config_json_that_is_not_json_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config.json: not valid JSON \(line 1, column 2"):
        tatlas.load(tmp_path)


def test_a_non_integer_hf_config_value_names_the_field(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "imagegpt", "n_layer": "abc"}))
    with pytest.raises(CheckpointError, match=r"config.json: n_layer = 'abc'"):
        tatlas.load(tmp_path)


def test_an_unknown_file_message_fits_the_api_and_the_cli(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\0" * 16)
    with pytest.raises(CheckpointError) as e:
        tatlas.load(path)
    assert "format=" not in str(e.value) and "openai-whisper" in str(e.value)


def test_numpy_and_pickle_refusals_never_advise_unsafe_loading(tmp_path):
    text = tmp_path / "data.npz"
    text.write_text("episode,return\n1,2\n")
    with pytest.raises(ValueError, match=r"data.npz: not a NumPy .npy or .npz file") as e:
        load_numpy(text)
    res = runner.invoke(app, ["dt", "info", str(text)])
    assert res.exit_code == 2 and "unsafe" not in res.output and "allow_pickle" not in res.output
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="holds Python objects") as e:
        load_numpy(objects)
    assert "unsafe" not in str(e.value)
    pickled = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2), "x": Exception("not a tensor")}, pickled)
    with pytest.raises(CheckpointError, match="holds objects other than tensors") as e:
        load_torch_file(pickled)
    assert "weights_only=False" not in str(e.value) and "\n" not in str(e.value)


def test_trainer_still_trains_a_plain_module_with_the_lock(tmp_path):
    result = Trainer(tiny_model(0), next_token_loss, RandomBytes(), config(steps=2, out_dir=tmp_path)).fit()
    assert result.steps == 2 and not (tmp_path / LOCK_NAME).exists()
