"""tatlas.train on one process: config validation, AdamW groups, the warm-up + cosine schedule, the
data order, the trainer (learning, accumulation invariance, metrics, evaluation, divergence), and
checkpoints (contents, pruning, exact resume, corruption, SIGKILL at random moments)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tatlas
from tatlas.io import read_checkpoint
from tatlas.train import (
    CheckpointStore,
    InfiniteBatchSampler,
    TrainConfig,
    Trainer,
    TrainingDiverged,
    WarmupCosine,
    param_groups,
    read_metrics,
    verify,
    warmup_cosine,
)

SCRIPT = Path(__file__).parent / "_train_scripts" / "train_tiny.py"
_spec = importlib.util.spec_from_file_location("_train_tiny", SCRIPT)
_tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tiny)
RandomBytes, next_token_loss, tiny_model = _tiny.RandomBytes, _tiny.next_token_loss, _tiny.tiny_model


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


def config(**overrides) -> TrainConfig:
    """The settings the subprocess script uses too (float32, deterministic, log every step)."""
    base = dict(steps=6, batch_size=8, lr=1e-2, warmup_steps=2, log_every=1, progress=False,
                precision="float32", deterministic=True)
    return TrainConfig(**{**base, **overrides})


def train(cfg: TrainConfig, *, loss_fn=next_token_loss, model_seed: int = 0, resume=False, **kw):
    return Trainer(tiny_model(model_seed), loss_fn, RandomBytes(), cfg, **kw).fit(resume=resume)


def noisy_loss(model: nn.Module, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Draws from the torch, Python and NumPy global RNGs, so an exact resume needs all three."""
    per_token = F.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten(), reduction="none")
    weights = torch.rand(per_token.shape)
    scale = 1.0 + 0.1 * random.random() + 0.1 * float(np.random.rand())
    return {"loss": (per_token * weights).mean() * scale, "ppl": per_token.mean().exp()}


def run_until(cfg: TrainConfig, stop_at: int, *, loss_fn=next_token_loss, model_seed: int = 0):
    """Train with ``cfg`` (eval_every=1) and press Ctrl-C during step ``stop_at``."""
    assert cfg.eval_every == 1

    def eval_fn(model):
        if trainer.scheduler.last_step == stop_at:
            os.kill(os.getpid(), signal.SIGINT)
        return {}

    trainer = Trainer(tiny_model(model_seed), loss_fn, RandomBytes(), cfg, eval_fn=eval_fn)
    return trainer.fit()


# ------------------------------------------------------------------------------------ config


@pytest.mark.parametrize("field, value, words", [
    ("steps", 0, "expected a positive int"),
    ("steps", -3, "got -3"),
    ("batch_size", 0, "batch_size"),
    ("lr", 0.0, "positive learning rate"),
    ("betas", (0.9, 1.0), "[0, 1)"),
    ("warmup_steps", 99, "[0, steps=6]"),
    ("min_lr_ratio", 1.5, "[0, 1]"),
    ("grad_clip", 0.0, "positive number or None"),
    ("grad_accum", 3, "multiple of grad_accum=3"),
    ("precision", "fp8", "one of"),
    ("strategy", "zero3", "one of"),
    ("eval_every", 0, "positive int or None"),
    ("checkpoint_every", 5, "out_dir"),
])
def test_config_rejects_bad_values_naming_expected_and_got(field, value, words):
    with pytest.raises(ValueError, match=field) as e:
        TrainConfig(**{"steps": 6, "batch_size": 8, field: value})
    assert words in str(e.value)


def test_config_is_frozen_keyword_only_and_derives_warmup():
    cfg = TrainConfig(steps=200, batch_size=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.steps = 3
    with pytest.raises(TypeError):
        TrainConfig(200, 4)
    assert cfg.warmup == 10 and cfg.warmup_steps is None  # derived, never rewritten
    assert dataclasses.replace(cfg, warmup_steps=0).warmup == 0
    assert json.loads(json.dumps(TrainConfig(steps=1, batch_size=1, out_dir=Path("x")).to_dict()))["out_dir"] == "x"


# ------------------------------------------------------------------------- optimizer, schedule


def test_no_weight_decay_on_norms_biases_embeddings():
    model = tatlas.create("llm", "tiny", dim=32, layers=1, heads=2, kv_heads=1, mlp_hidden=64, qkv_bias=True)
    decay, other = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and other["weight_decay"] == 0.0
    assert set(other["names"]) == {
        "embed.weight", "norm.weight", "layers.0.attn_norm.weight", "layers.0.mlp_norm.weight",
        "layers.0.attn.q.bias", "layers.0.attn.k.bias", "layers.0.attn.v.bias",
    }
    assert "lm_head.weight" in decay["names"] and "layers.0.attn.q.weight" in decay["names"]
    n_params = len(list(model.parameters()))
    assert len(decay["params"]) + len(other["params"]) == n_params


def test_a_tied_head_counts_once_as_an_embedding():
    model = tatlas.create("llm", "tiny", dim=32, layers=1, heads=2, kv_heads=1, mlp_hidden=64, tie_embeddings=True)
    decay, other = param_groups(model, 0.1)
    assert "embed.weight" in other["names"]
    assert "lm_head.weight" not in decay["names"] + other["names"]  # the same tensor, listed once
    assert all(p is not model.embed.weight for p in decay["params"])


def test_fused_adamw_on_the_cpu_equals_foreach_and_resumes_a_foreach_state():
    """The trainer's AdamW is torch's fused kernel on the CPU (``can_fuse``); ten steps of it and of
    ``foreach`` from the same start agree to float32 rounding, and a state saved by a ``foreach``
    optimizer (a run started before) loads and steps on, as ``foreach``."""
    from tatlas.train.optim import build_optimizer, can_fuse

    def run(fused: bool, start: dict | None = None):
        torch.manual_seed(0)
        model = tatlas.create("llm", "tiny", dim=32, layers=1, heads=2, kv_heads=1, mlp_hidden=64)
        opt = build_optimizer(model, config(weight_decay=0.1))
        if not fused:
            opt = torch.optim.AdamW([{"params": g["params"], "weight_decay": g["weight_decay"]} for g in opt.param_groups],
                                    **{k: opt.defaults[k] for k in ("lr", "betas", "eps")}, foreach=True)
        if start is not None:
            opt.load_state_dict(start)
        kernel = fused and start is None  # a loaded state brings its groups' flags: a foreach run stays foreach
        assert {(bool(g["fused"]), bool(g["foreach"])) for g in opt.param_groups} == {(kernel, not kernel)}
        tokens = torch.randint(0, 256, (4, 9), generator=torch.Generator().manual_seed(1))
        for _ in range(10):
            next_token_loss(model, tokens).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return model.state_dict(), opt.state_dict()

    (fused, _), (foreach, saved) = run(True), run(False)
    for name, value in fused.items():
        torch.testing.assert_close(value, foreach[name], atol=1e-6, rtol=1e-5, msg=name)
    assert not torch.equal(fused["embed.weight"], run(True, saved)[0]["embed.weight"])  # resumed and stepped
    p = nn.Parameter(torch.zeros(2))
    assert can_fuse([p, torch.zeros(3)]) and not can_fuse([p, p.to(torch.int32)]) and not can_fuse([p, p.to("meta")])


def test_warmup_then_cosine_to_min_ratio():
    f = [warmup_cosine(s, warmup=4, total=20, min_ratio=0.1) for s in range(25)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0]
    assert f[4] == pytest.approx(1.0)
    assert f[12] == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the decay
    assert f[20] == pytest.approx(0.1) and f[24] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(f[4:], f[5:], strict=False))

    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(2))], lr=1.0)
    sched = WarmupCosine(opt, warmup=4, total=20, min_ratio=0.1)
    for _ in range(7):
        sched.step()
    assert sched.get_last_lr() == [pytest.approx(f[7])]
    again = WarmupCosine(opt, warmup=4, total=20, min_ratio=0.1)
    again.load_state_dict(sched.state_dict())
    assert again.get_last_lr() == sched.get_last_lr()


# ----------------------------------------------------------------------------------- sampler


def test_sampler_is_an_endless_seeded_resumable_permutation_stream():
    s = InfiniteBatchSampler(10, batch_size=4, seed=3)
    it = iter(s)
    batches = [next(it) for _ in range(6)]  # 2 batches per epoch (2 samples dropped each epoch)
    for e in range(3):
        epoch = batches[2 * e] + batches[2 * e + 1]
        assert len(set(epoch)) == 8 and epoch == s.permutation(e)[:8].tolist()
    assert batches[0:2] != batches[2:4]  # a fresh order every epoch
    resumed = iter(InfiniteBatchSampler(10, batch_size=4, seed=3, start=3))
    assert [next(resumed) for _ in range(3)] == batches[3:6]


def test_sampler_shards_each_global_batch_over_ranks_and_micro_batches():
    whole = iter(InfiniteBatchSampler(32, batch_size=8, seed=0))
    parts = [iter(InfiniteBatchSampler(32, batch_size=8, seed=0, rank=r, world_size=2, grad_accum=2)) for r in (0, 1)]
    for _ in range(5):
        expected = next(whole)
        got = [i for p in parts for i in next(p) + next(p)]
        assert got == expected


@pytest.mark.parametrize("n, batch, words", [(0, 4, "empty"), (3, 4, "larger than the dataset")])
def test_trainer_rejects_bad_data_before_training(n, batch, words):
    with pytest.raises(ValueError, match=words):
        Trainer(tiny_model(), next_token_loss, RandomBytes(n=n), config(batch_size=batch))


def test_trainer_rejects_an_iterable_dataset_and_a_loss_dict_without_loss():
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield torch.zeros(33, dtype=torch.long)

    with pytest.raises(TypeError, match="map-style"):
        Trainer(tiny_model(), next_token_loss, Stream(), config())
    with pytest.raises(ValueError, match="without 'loss' at step 1"):
        train(config(), loss_fn=lambda m, b: {"nll": next_token_loss(m, b)})


# ------------------------------------------------------------------------------------ trainer


def test_it_learns_and_writes_metrics_plot_and_final_weights(tmp_path, capfd):
    seen = []

    def eval_fn(model):
        assert not model.training and not torch.is_grad_enabled()
        seen.append(1)
        return {"loss": float(next_token_loss(model, RandomBytes().data[:8]))}

    cfg = config(steps=30, batch_size=8, lr=2e-2, out_dir=tmp_path, eval_every=10, log_every=5, progress=True)
    trainer = Trainer(tiny_model(), noisy_loss, RandomBytes(n=8), cfg, eval_fn=eval_fn,
                      tokens_fn=lambda b: b[:, 1:].numel())
    result = trainer.fit()
    assert result.steps == 30 and len(result.losses) == 30 and not result.interrupted
    assert result.final_loss < result.losses[0] - 1.0  # memorises 8 sequences
    assert len(seen) == 3 and result.eval["loss"] < 4.5
    assert result.tokens_per_s > 0 and result.samples_per_s > 0

    records = read_metrics(result.metrics_path)
    train_recs = [r for r in records if "lr" in r]
    assert [r["step"] for r in train_recs] == [5, 10, 15, 20, 25, 30]
    assert {"step", "loss", "lr", "grad_norm", "samples_per_s", "tokens_per_s", "elapsed", "ppl"} <= set(train_recs[0])
    assert [r["step"] for r in records if "eval/loss" in r] == [10, 20, 30]
    assert result.plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    loaded = tatlas.load(result.model_path)
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    err = capfd.readouterr().err  # not a terminal: one plain progress line per logged step
    assert "step 30 loss" in err and "tokens/s" in err


def test_gradient_accumulation_does_not_change_the_loss_curve():
    one = train(config(batch_size=8, grad_accum=1))
    four = train(config(batch_size=8, grad_accum=4))
    np.testing.assert_allclose(four.losses, one.losses, rtol=1e-5)


def test_deterministic_mode_and_signal_handlers_are_restored():
    before = (torch.are_deterministic_algorithms_enabled(), signal.getsignal(signal.SIGINT),
              signal.getsignal(signal.SIGTERM))
    train(config(steps=2, deterministic=True))
    assert (torch.are_deterministic_algorithms_enabled(), signal.getsignal(signal.SIGINT),
            signal.getsignal(signal.SIGTERM)) == before


@pytest.mark.parametrize("how", ["nan loss", "inf gradient"])
def test_divergence_stops_naming_the_step_and_saves_nothing_bad(tmp_path, how):
    calls = {"n": 0}

    def loss_fn(model, tokens):
        calls["n"] += 1  # grad_accum=1: call k is step k
        loss = next_token_loss(model, tokens)
        if calls["n"] == 3 and how == "nan loss":
            return loss * float("nan")
        if calls["n"] == 3:
            model.embed.weight.register_hook(lambda g: torch.full_like(g, float("inf")))
        return loss

    trainer = Trainer(tiny_model(), loss_fn, RandomBytes(), config(out_dir=tmp_path, checkpoint_every=1))
    with pytest.raises(TrainingDiverged, match="at step 3") as e:
        trainer.fit()
    assert e.value.step == 3 and e.value.last_checkpoint.name == "step-00000002"
    store = CheckpointStore(tmp_path / "checkpoints")
    assert [s for s, _ in store.step_dirs()] == [2, 1] and store.newest_complete().name == "step-00000002"
    saved, *_ = read_checkpoint(tmp_path / "checkpoints" / "step-00000002" / "model.safetensors")
    for k, v in trainer.model.state_dict().items():  # the bad step never reached the weights
        assert torch.equal(v, saved[k]), k
    assert not (tmp_path / "model.safetensors").exists()


# -------------------------------------------------------------------------------- checkpoints


def test_checkpoint_contents_load_safely(tmp_path):
    result = train(config(steps=3, out_dir=tmp_path, checkpoint_every=3))
    ck = result.checkpoint
    assert ck.name == "step-00000003" and verify(ck) is None
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == ck.name
    state = torch.load(ck / "trainer.pt", weights_only=True)
    assert state["step"] == 3 and state["data"]["batches"] == 3 and state["scheduler"] == {"last_step": 3}
    assert state["config"]["steps"] == 3 and len(state["optimizer"]["state"]) > 0
    rng = torch.load(ck / "rng-rank00000.pt", weights_only=True)
    assert isinstance(rng["numpy"]["keys"], list) and isinstance(rng["python"]["state"], list)
    manifest = json.loads((ck / "MANIFEST.json").read_text())
    assert set(manifest["files"]) == {"model.safetensors", "trainer.pt", "rng-rank00000.pt"}
    weights = tatlas.load(ck / "model.safetensors").state_dict()  # a tatlas checkpoint of its own
    final = tatlas.load(result.model_path).state_dict()
    assert all(torch.equal(weights[k], final[k]) for k in final)


def test_only_the_newest_k_checkpoints_are_kept(tmp_path):
    train(config(steps=5, out_dir=tmp_path, checkpoint_every=1, keep_checkpoints=2))
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-00000004", "step-00000005"]


def test_a_fresh_run_refuses_an_out_dir_with_checkpoints_and_resume_without_any_starts_afresh(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="tatlas.train"):
        first = train(config(steps=2, out_dir=tmp_path, checkpoint_every=1), resume=True)
    assert first.start_step == 0 and "starting afresh" in caplog.text
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train(config(steps=4, out_dir=tmp_path, checkpoint_every=1))
    more = train(config(steps=4, out_dir=tmp_path, checkpoint_every=1), resume=True)  # extend the run
    assert more.start_step == 2 and more.steps == 4


def test_an_interrupted_run_resumes_on_exactly_the_same_curve(tmp_path):
    full = train(config(steps=8), loss_fn=noisy_loss)
    cfg = config(steps=8, out_dir=tmp_path, eval_every=1)  # no periodic checkpoints: Ctrl-C saves one
    handler = signal.getsignal(signal.SIGINT)
    first = run_until(cfg, 4, loss_fn=noisy_loss)
    assert first.interrupted and first.steps == 4 and first.checkpoint.name == "step-00000004"
    assert signal.getsignal(signal.SIGINT) is handler and first.model_path is None
    # a differently initialised model: everything must come from the checkpoint
    second = train(cfg, loss_fn=noisy_loss, model_seed=7, resume=True)
    assert second.start_step == 4 and second.resumed_from == first.checkpoint
    np.testing.assert_allclose(first.losses + second.losses, full.losses, rtol=1e-6)
    steps = [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl") if "loss" in r]
    assert steps == list(range(1, 9))


def test_resume_from_a_named_checkpoint_folder(tmp_path, caplog):
    full = train(config(steps=6))
    run_a = config(steps=6, out_dir=tmp_path / "a", checkpoint_every=1, keep_checkpoints=6)
    train(run_a)
    older = tmp_path / "a" / "checkpoints" / "step-00000002"
    elsewhere = train(config(steps=6, out_dir=tmp_path / "b"), resume=older, model_seed=3)
    assert elsewhere.start_step == 2 and elsewhere.resumed_from == older
    np.testing.assert_allclose(elsewhere.losses, full.losses[2:], rtol=1e-6)
    with caplog.at_level(logging.WARNING, logger="tatlas.train"):
        train(run_a, resume=older)
    assert "later checkpoints (step-00000006" in caplog.text


@pytest.mark.parametrize("damage", ["flip a weight byte", "truncate trainer.pt", "no manifest", "no rng file"])
def test_a_corrupt_newest_checkpoint_is_reported_and_the_previous_one_used(tmp_path, caplog, damage):
    full = train(config(steps=6))
    cfg = config(steps=6, out_dir=tmp_path, checkpoint_every=1, eval_every=1)
    run_until(cfg, 4)
    newest = tmp_path / "checkpoints" / "step-00000004"
    if damage == "flip a weight byte":
        path = newest / "model.safetensors"
        data = bytearray(path.read_bytes())
        data[-100] ^= 0xFF  # inside the tensor data: safetensors itself would not notice
        path.write_bytes(bytes(data))
    elif damage == "truncate trainer.pt":
        path = newest / "trainer.pt"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "no manifest":
        (newest / "MANIFEST.json").unlink()
    else:
        (newest / "rng-rank00000.pt").unlink()
    with caplog.at_level(logging.WARNING, logger="tatlas.train"):
        resumed = train(cfg, model_seed=9, resume=True)
    assert "step-00000004 is incomplete or corrupt" in caplog.text
    assert resumed.start_step == 3
    np.testing.assert_allclose(resumed.losses, full.losses[3:], rtol=1e-6)
    assert verify(newest) is None  # the resumed run wrote a good step 4 in its place


def test_a_plain_module_trains_checkpoints_and_resumes(tmp_path):
    class Bigram(nn.Module):  # not a registered system, with a tied head
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.embed = nn.Embedding(256, 16)
            self.head = nn.Linear(16, 256)
            self.head.weight = self.embed.weight

        def forward(self, tokens):
            return self.head(self.embed(tokens))

    decay, other = param_groups(Bigram(), 0.1)
    assert decay["names"] == [] and other["names"] == ["embed.weight", "head.bias"]
    full = Trainer(Bigram(), next_token_loss, RandomBytes(), config()).fit()
    cfg = config(out_dir=tmp_path, eval_every=1)

    def eval_fn(model):
        if trainer.scheduler.last_step == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return {}

    trainer = Trainer(Bigram(), next_token_loss, RandomBytes(), cfg, eval_fn=eval_fn)
    first = trainer.fit()
    second = Trainer(Bigram(), next_token_loss, RandomBytes(), cfg).fit(resume=True)
    np.testing.assert_allclose(first.losses + second.losses, full.losses, rtol=1e-6)
    assert second.model_path.is_file()


# ------------------------------------------------------------- Ctrl-C from a terminal, SIGKILL


def test_ctrl_c_from_a_terminal_saves_and_exits_cleanly(tmp_path):
    """SIGINT to the whole process group, as a terminal sends it (DataLoader workers included): the
    step finishes, a checkpoint is written, and the process exits 0 with ``interrupted=True``."""
    out, result_path = tmp_path / "run", tmp_path / "result.json"
    cmd = [sys.executable, str(SCRIPT), "--steps", "100000", "--batch-size", "4", "--out", str(out),
           "--num-workers", "1", "--grad-accum", "4", "--result", str(result_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=_script_env(), start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if (out / "metrics.jsonl").is_file() and len((out / "metrics.jsonl").read_text().splitlines()) >= 3:
                break
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    result = json.loads(result_path.read_text())
    assert result["interrupted"] and 3 <= result["steps"] < 100000
    ck = Path(result["checkpoint"])
    assert ck.name == f"step-{result['steps']:08d}" and verify(ck) is None
    assert f"interrupted at step {result['steps']}" in err




def _script_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def test_sigkill_at_random_moments_always_resumes_from_a_complete_checkpoint(tmp_path):
    """A run with a checkpoint after every step is SIGKILLed at random moments (often mid-save),
    restarted with resume each time, then let finish. Every ``step-N`` folder is always complete,
    each restart resumes from the newest complete checkpoint, and the stitched loss curve equals an
    uninterrupted run's."""
    steps, trials, rng = 150, 12, random.Random(0)
    out = tmp_path / "run"
    store = CheckpointStore(out / "checkpoints")
    cmd = [sys.executable, str(SCRIPT), "--steps", str(steps), "--batch-size", "4", "--out", str(out),
           "--checkpoint-every", "1", "--keep", "2", "--resume"]
    newest, expected, mid_save = 0, None, 0
    for trial in range(trials):
        log_path = tmp_path / f"trial{trial}.log"
        with open(log_path, "w") as log_file:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log_file, env=_script_env())
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline:  # until it has saved something new
                dirs = store.step_dirs()
                if dirs and dirs[0][0] > newest:
                    break
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.06))
            proc.kill()
            proc.wait()
        mid_save += any(store.root.glob(".step-*.tmp"))  # killed while a checkpoint was being written
        assert proc.returncode == -signal.SIGKILL, f"trial {trial} ended by itself: {log_path.read_text()[-2000:]}"
        if expected is not None:
            assert f"resumed from {expected} (step {newest})" in log_path.read_text()
        for _, folder in store.step_dirs():  # a torn save never carries a step-N name
            assert verify(folder) is None, folder
        found = store.newest_complete()
        assert found is not None
        step = int(found.name.split("-")[1])
        assert step > newest
        assert torch.load(found / "trainer.pt", weights_only=True)["step"] == step
        newest, expected = step, found
    assert newest < steps and mid_save >= 1, f"{mid_save} of {trials} kills hit a save"
    result_path = tmp_path / "result.json"
    subprocess.run([*cmd, "--result", str(result_path)], check=True, env=_script_env(),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    result = json.loads(result_path.read_text())
    assert result["start_step"] == newest and result["steps"] == steps

    reference = train(config(steps=steps, batch_size=4))  # one thread, as in the script
    logged = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in logged] == list(range(1, steps + 1))
    np.testing.assert_allclose([r["loss"] for r in logged], reference.losses, rtol=1e-5)
    assert math.isfinite(reference.final_loss)
