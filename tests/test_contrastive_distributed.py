"""Contrastive losses across ranks (:mod:`tatlas.nn.contrastive`): on one process ``info_nce`` is
CLIP's former in-batch formula; under torchrun (2 gloo processes on CPU) CLIP's loss gathers every
rank's embeddings with gradients, so that the loss and the gradients after DDP's averaging equal
one process on the global batch, and not the old local-negatives loss."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tatlas.models.clip.task import MAX_LOGIT_SCALE, clip_loss
from tatlas.nn import contrastive_accuracy, gather_with_grad, info_nce

SCRIPT = Path(__file__).parent / "_train_scripts" / "clip_contrastive.py"
_spec = importlib.util.spec_from_file_location("_clip_contrastive", SCRIPT)
_worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_worker)

pytestmark = pytest.mark.usefixtures("one_thread")

B = 4  # per rank; the global batch is 2 * B


def previous_clip_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``clip_loss`` as it was before the gather (in-batch negatives only), kept verbatim."""
    image = F.normalize(model.encode_image(batch["pixels"]).float(), dim=-1)
    text = F.normalize(model.encode_text(batch["tokens"]).float(), dim=-1)
    scale = model.logit_scale.float().clamp(max=MAX_LOGIT_SCALE).exp()
    logits = scale * image @ text.t()
    tokens = batch["tokens"]
    same = (tokens[:, None, :] == tokens[None, :, :]).all(dim=-1)
    target = same.float() / same.sum(dim=1, keepdim=True)
    loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
    rows = torch.arange(logits.shape[0], device=logits.device)
    accuracy = 0.5 * (same[rows, logits.argmax(1)].float().mean() + same[logits.argmax(0), rows].float().mean())
    return {"loss": loss, "logit_scale": scale.detach(), "batch_accuracy": accuracy.detach()}


def _loss_and_grads(fn, batch) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    model = _worker.tiny_clip(0)
    out = fn(model, batch)
    out["loss"].backward()
    return ({k: v.item() for k, v in out.items()},
            {n: p.grad.detach().clone() for n, p in model.named_parameters()})


def test_one_process_info_nce_is_the_previous_clip_loss():
    batch = _worker.global_batch(2 * B)
    new, new_grads = _loss_and_grads(clip_loss, batch)
    old, old_grads = _loss_and_grads(previous_clip_loss, batch)
    assert new == old  # loss, logit_scale and batch_accuracy: bit for bit
    for k, g in old_grads.items():
        assert torch.equal(new_grads[k], g), k
    # without keys (distinct pairs) it is the paper's formula with integer labels
    g = torch.Generator().manual_seed(0)
    a, b = F.normalize(torch.randn(5, 8, generator=g), dim=-1), F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    logits = 14.0 * a @ b.t()
    expected = 0.5 * (F.cross_entropy(logits, torch.arange(5)) + F.cross_entropy(logits.t(), torch.arange(5)))
    torch.testing.assert_close(info_nce(a, b, 14.0), expected, rtol=0, atol=0)
    assert info_nce(a, b, 14.0, gather=False).item() == expected.item()
    right = (logits.argmax(1) == torch.arange(5)).float().mean() + (logits.argmax(0) == torch.arange(5)).float().mean()
    assert contrastive_accuracy(a, b, 14.0).item() == pytest.approx(right.item() / 2)
    assert gather_with_grad(a) is a  # no process group: the identity


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_equal_one_process_on_the_global_batch(tmp_path):
    result = tmp_path / "result.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(SCRIPT), "--batch-size", str(B), "--result", str(result)]
    proc = subprocess.run(cmd, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    ranks = torch.load(result, weights_only=True)

    batch = _worker.global_batch(2 * B)
    one, one_grads = _loss_and_grads(clip_loss, batch)  # one process, global batch of 2B
    halves = [{k: v[r * B:(r + 1) * B] for k, v in batch.items()} for r in range(2)]
    local = [_loss_and_grads(previous_clip_loss, h) for h in halves]  # each rank's own negatives
    local_loss = sum(out["loss"] for out, _ in local) / 2
    local_grads = {k: sum(g[k] for _, g in local) / 2 for k in one_grads}  # what DDP would average

    assert abs(local_loss - one["loss"]) > 1e-2  # the old loss is not the global one: this test can fail
    assert max((local_grads[k] - g).abs().max().item() for k, g in one_grads.items()) > 1e-3
    assert ranks["loss"] == pytest.approx(one["loss"], rel=1e-5, abs=1e-6)
    assert ranks["batch_accuracy"] == pytest.approx(one["batch_accuracy"], abs=1e-6)
    assert ranks["grads"].keys() == one_grads.keys()
    for k, g in one_grads.items():
        torch.testing.assert_close(ranks["grads"][k], g, rtol=1e-4, atol=1e-5, msg=k)
