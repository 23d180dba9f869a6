"""ImageBind's image-anchored training task and its demo: the dataset's inputs, that every loss term
pairs a modality with images and nothing else, that a few steps lower the loss, the retrieval and
arithmetic metrics on embeddings whose answers are known, and the quick demo end to end."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import tatlas
from tatlas.models.imagebind import task as T
from tatlas.models.imagebind.system import SYSTEM


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny ops: one intra-op thread is faster on a shared machine (see tatlas.demo.imagebind)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return tatlas.create("imagebind", "tiny-world")


@pytest.fixture(scope="module")
def batch(model):
    data = T.BindDataset(model.config, length=16).prerender()
    return T.collate([data[i] for i in range(len(data))])


def test_dataset_gives_model_inputs(model, batch):
    c = model.config
    assert batch["vision"].shape == (16, 3, c.image_size, c.image_size)
    assert batch["text"].shape == (16, c.context_length) and batch["text"].dtype == torch.long
    assert (batch["text"].argmax(-1) > 0).all() and (batch["text"].max(-1).values == 49_407).all()
    assert batch["audio"].shape == (16, 1, c.mel_bins, c.audio_frames)
    assert batch["depth"].shape == batch["thermal"].shape == (16, 1, c.depth_size, c.depth_size)
    assert batch["imu"].shape == (16, c.imu_channels, c.imu_steps)
    assert batch["attributes"].shape == (16, 4)
    for m in ("vision", "audio", "depth", "thermal", "imu"):  # normalised: roughly zero mean, unit spread
        assert torch.isfinite(batch[m]).all() and batch[m].mean().abs() < 1.5 and 0.2 < batch[m].std() < 5
    assert set(batch) - {"attributes"} == set(model.config.modalities)


def test_every_loss_term_pairs_a_modality_with_images_only(model, batch, monkeypatch):
    produced: dict[int, str] = {}
    encode = model.encode

    def tagged(modality, x, **kw):
        out = encode(modality, x, **kw)
        produced[id(out)] = modality
        return out

    calls = []

    def recording(a, b, scale, **kw):
        calls.append((produced.get(id(a)), produced.get(id(b))))
        return (a * b).sum(-1).mean()

    monkeypatch.setattr(model, "encode", tagged)
    monkeypatch.setattr(T, "info_nce", recording)
    out = T.imagebind_loss(model, batch)
    assert sorted(calls) == sorted(T.PAIRS) and all(a == "vision" for a, _ in calls)
    assert {f"loss_{m}" for m in T.BOUND} | {f"acc_{m}" for m in T.BOUND} | {"loss"} == set(out)
    assert all(a == "vision" for a, _ in T.PAIRS) and len({b for _, b in T.PAIRS}) == 5
    with pytest.raises(ValueError, match="anchor"):
        T.imagebind_loss(model, batch, pairs=(("audio", "text"),))


def test_a_few_steps_lower_the_loss(batch):
    """Memorising 16 scenes: the loss leaves ln(16) (all embeddings alike, where contrastive training
    starts) within 40 warmed-up steps."""
    torch.manual_seed(1)
    model = tatlas.create("imagebind", "tiny-world")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / 10))
    losses = []
    for _ in range(40):
        loss = T.imagebind_loss(model, batch)["loss"]
        losses.append(float(loss.detach()))
        loss.backward()
        opt.step()
        opt.zero_grad()
        schedule.step()
    assert min(losses[-3:]) < math.log(16) - 0.8 < losses[0], losses


def test_retrieval_recall_and_chance_on_known_embeddings():
    gallery = torch.eye(4)
    keys = torch.tensor([[0], [1], [2], [3]])
    r = T.retrieval_recall(gallery, gallery, keys, keys, ks=(1, 2))
    assert r["r@1"] == 1.0 and r["chance@1"] == pytest.approx(0.25) and r["chance@2"] == pytest.approx(0.5)
    r = T.retrieval_recall(gallery.flip(0), gallery, keys, keys, ks=(1,))  # each query points at a wrong item
    assert r["r@1"] == 0.0
    # two gallery items per key: chance@1 = 2/4; a query whose key is absent is dropped
    r = T.retrieval_recall(torch.eye(4)[:3], torch.eye(4), torch.tensor([[0], [1], [9]]),
                           torch.tensor([[0], [0], [1], [1]]), ks=(1, 3))
    assert r["r@1"] == 0.5 and r["chance@1"] == pytest.approx(0.5) and r["chance@3"] == 1.0


def test_arithmetic_finds_the_crossing_with_additive_embeddings():
    # every (colour, shape) class once; embedding = one-hot colour + one-hot shape (perfectly additive)
    attrs = torch.tensor([[c, s, 0, 0] for c in range(8) for s in range(6)])
    emb = F.normalize(torch.cat([F.one_hot(attrs[:, 0], 8), F.one_hot(attrs[:, 1], 6)], 1).float(), dim=-1)
    r = T.arithmetic_retrieval(emb, emb, emb, attrs, pairs=64, generator=torch.Generator().manual_seed(0))
    assert r["pairs"] == 64 and r["sum@1"] == 1.0
    assert r["image@1"] < 0.5 and r["audio@1"] < 0.5 and r["chance@1"] == pytest.approx(2 / 46)


def test_quick_demo_end_to_end(tmp_path):
    from tatlas.demo import _builtin
    from tatlas.demo.imagebind import DEMO
    from tatlas.demo.spec import DemoOptions

    assert DEMO in _builtin.BUILTIN and DEMO.system == "imagebind"
    assert SYSTEM.train_task is T.train_task and SYSTEM.train_preset == "tiny-world"
    threads = torch.get_num_threads()
    result = DEMO.run(DemoOptions(out_dir=tmp_path, quick=True, progress=False))
    assert torch.get_num_threads() == threads
    assert result.system == "imagebind" and 0.0 <= result.value <= 1.0 and 0.0 <= result.baseline_value <= 1.0
    for name in ("audio->text r@1", "depth->text r@1", "imu->text r@1", "audio->depth r@1", "arithmetic sum@1",
                 "arithmetic image@1", "arithmetic audio@1", "headline_chance_r@1"):
        assert math.isfinite(result.details[name]), name
    for path in result.artifacts.values():
        assert (tmp_path / path).exists(), path
    assert "audio -> text (emergent)" in (tmp_path / "retrieval.txt").read_text()
