"""tatlas.train under torchrun on CPU (gloo, 2 processes): DDP and FSDP2 follow the one-process loss
curve for the same global batch, and a sharded (DCP) FSDP2 checkpoint resumes on the same curve."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import tatlas
from tatlas.train import TrainConfig, Trainer, verify
from tatlas.train.distributed import resolve_strategy

SCRIPT = Path(__file__).parent / "_train_scripts" / "train_tiny.py"
_spec = importlib.util.spec_from_file_location("_train_tiny", SCRIPT)
_tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tiny)

STEPS = 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(tmp_path: Path, name: str, *args: str) -> dict:
    result = tmp_path / f"{name}.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(SCRIPT), "--steps", str(STEPS), "--batch-size", "8",
           *args, "--result", str(result)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(result.read_text())


@pytest.fixture(scope="module")
def one_process():
    """The same run on one process (threads as in each rank): losses and final weights."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = TrainConfig(steps=STEPS, batch_size=8, lr=1e-2, warmup_steps=2, log_every=1, progress=False,
                          precision="float32", deterministic=True, strategy="single")
        trainer = Trainer(_tiny.tiny_model(0), _tiny.next_token_loss, _tiny.RandomBytes(), cfg)
        result = trainer.fit()
    finally:
        torch.set_num_threads(threads)
    return result.losses, {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_ddp_with_accumulation_follows_the_one_process_curve(tmp_path, one_process):
    losses, _ = one_process
    ddp = torchrun(tmp_path, "ddp", "--strategy", "ddp", "--grad-accum", "2")  # 2 ranks x 2 micro-batches x 2
    assert ddp["steps"] == STEPS
    np.testing.assert_allclose(ddp["losses"], losses, rtol=1e-5)


def test_fsdp2_follows_the_curve_and_resumes_from_a_sharded_checkpoint(tmp_path, one_process):
    losses, weights = one_process
    out = tmp_path / "run"
    first = torchrun(tmp_path, "first", "--strategy", "fsdp", "--grad-accum", "2", "--out", str(out),
                     "--interrupt-at", "3")  # Ctrl-C on rank 0 during step 3: both ranks stop and save
    assert first["interrupted"] and first["steps"] == 3
    ck = Path(first["checkpoint"])
    assert ck.name == "step-00000003" and verify(ck) is None
    assert (ck / "dcp" / ".metadata").is_file()
    assert {p.name for p in ck.glob("rng-rank*.pt")} == {"rng-rank00000.pt", "rng-rank00001.pt"}
    state = torch.load(ck / "trainer.pt", weights_only=True)
    assert state["strategy"] == "fsdp" and state["world_size"] == 2 and "optimizer" not in state

    second = torchrun(tmp_path, "second", "--strategy", "fsdp", "--grad-accum", "2", "--out", str(out),
                      "--resume", "--model-seed", "5")  # another init: the weights must come from DCP
    assert second["start_step"] == 3 and second["resumed_from"] == str(ck)
    assert second["fsdp_units"] == 3  # one per block (2 layers) and the root
    np.testing.assert_allclose(first["losses"] + second["losses"], losses, rtol=1e-5)

    final = tatlas.load(second["model_path"]).state_dict()  # gathered from the shards on rank 0
    for k, v in weights.items():
        torch.testing.assert_close(final[k], v, rtol=1e-4, atol=1e-5)


def test_strategy_and_world_size_are_checked_before_training(monkeypatch):
    cfg = dict(steps=2, batch_size=8, progress=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert resolve_strategy(TrainConfig(**cfg)) == "single"
    with pytest.raises(RuntimeError, match="torchrun"):  # ddp without a process group or its environment
        Trainer(_tiny.tiny_model(), _tiny.next_token_loss, _tiny.RandomBytes(),
                TrainConfig(**cfg, strategy="ddp")).fit()
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert resolve_strategy(TrainConfig(**cfg)) == "ddp"
    with pytest.raises(ValueError, match="divisible by world_size"):
        Trainer(_tiny.tiny_model(), _tiny.next_token_loss, _tiny.RandomBytes(), TrainConfig(**cfg))
    with pytest.raises(ValueError, match="under torchrun"):
        Trainer(_tiny.tiny_model(), _tiny.next_token_loss, _tiny.RandomBytes(),
                TrainConfig(**{**cfg, "batch_size": 6}, strategy="single")).fit()
