"""`tatlas train`: a tiny model trains from the command line with metrics, a plot and a
resumable checkpoint, and under `torchrun` the same command trains the same curve."""

import json
import os
import socket
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import tatlas
from tatlas.cli.main import app

runner = CliRunner()
SMALL = ["--config", "dim=32", "--config", "layers=1", "--batch-size", "8", "--no-progress"]


def _losses(folder):
    return [json.loads(line)["loss"] for line in (folder / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)]


def test_train_resume_equals_uninterrupted(tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    common = ["train", "llm", *SMALL, "--checkpoint-every", "3"]
    res = runner.invoke(app, [*common, "--steps", "6", "--out", str(whole)])
    assert res.exit_code == 0, res.output
    assert (whole / "metrics.png").is_file() and (whole / "model.safetensors").is_file()
    model = tatlas.load(whole / "model.safetensors")
    assert model.config.dim == 32
    # an "interrupted" run: only the step-3 checkpoint of a 6-step run survives
    import shutil

    shutil.copytree(whole / "checkpoints" / "step-00000003", split / "checkpoints" / "step-00000003")
    res = runner.invoke(app, [*common, "--steps", "6", "--out", str(split), "--resume"])
    assert res.exit_code == 0, res.output
    assert "to step 6" in res.output
    a, b = tatlas.load(whole / "model.safetensors"), tatlas.load(split / "model.safetensors")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert (p - q).abs().max() < 1e-5, name


def test_train_bad_input_is_one_line(tmp_path):
    for args, msg in ((["--steps", "0"], "steps"), (["--config", "depth=3"], "unknown config fields ['depth']"),
                      (["--config", "dim"], "expected KEY=VALUE")):
        res = runner.invoke(app, ["train", "llm", "--out", str(tmp_path / "x"), *args])
        assert res.exit_code == 2 and msg in res.output, res.output
    res = runner.invoke(app, ["train", "nope", "--out", str(tmp_path / "y")])
    assert res.exit_code == 2 and "unknown system 'nope'" in res.output


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("system, args", [
    ("llm", [*SMALL, "--steps", "4", "--checkpoint-every", "2"]),
    # proteins of different lengths: one rank's unpadded protein equals its part of the padded pair
    ("evoformer", ["--steps", "2", "--batch-size", "2", "--checkpoint-every", "2", "--no-progress"]),
])
def test_same_command_under_torchrun(tmp_path, system, args):
    args = ["train", system, *args]
    single = subprocess.run([sys.executable, "-m", "tatlas.cli.main", *args, "--out", str(tmp_path / "one")],
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    dist = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(_free_port()), "-m", "tatlas.cli.main", *args, "--out",
                           str(tmp_path / "two")], capture_output=True, text=True, timeout=300, env=env)
    assert dist.returncode == 0, dist.stderr[-2000:]
    assert dist.stdout.count(f"trained {system}") == 1, "only rank 0 reports"
    for x, y in zip(_losses(tmp_path / "one"), _losses(tmp_path / "two"), strict=True):
        assert abs(x - y) <= 1e-5 * abs(x)
