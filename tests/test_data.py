"""The embedded data layer: the world, the text corpus and the digits."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from tatlas.data import (
    COLOURS,
    MODALITIES,
    SHAPES,
    ByteTokenizer,
    DigitsDataset,
    TextDataset,
    WorldConfig,
    WorldDataset,
    collate_scenes,
    combinations,
    corpus_text,
    corpus_tokens,
    held_out_pairs,
    relation,
    train_pairs,
    unigram_cross_entropy,
)
from tatlas.data.world import RGB, WorldObject

FAST = WorldConfig(modalities=("caption", "qa"))  # structure only, no rendering


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b


# ---------------------------------------------------------------------------------------------
# World: determinism and splits
# ---------------------------------------------------------------------------------------------


def test_world_is_a_pure_function_of_seed_split_index():
    a, b = WorldDataset("train", seed=3), WorldDataset("train", seed=3)
    for i in (0, 7, 123):
        sa, sb = a[i], b[i]
        assert set(sa) == set(MODALITIES) | {"objects", "label"}
        assert all(_same(sa[k], sb[k]) for k in sa), i
    other_seed = WorldDataset("train", seed=4)
    other_split = WorldDataset("all", seed=3)
    assert not torch.equal(a[0]["image"], other_seed[0]["image"])
    assert not torch.equal(a[0]["image"], other_split[0]["image"])
    assert not torch.equal(a[0]["image"], a[1]["image"])
    # rendering order does not matter: each modality has its own noise stream
    scene_1, scene_2 = a.scene(5), a.scene(5)
    audio_first = scene_1.audio()
    assert torch.equal(scene_1.image(), scene_2.image())
    assert torch.equal(audio_first, scene_2.audio())


def test_held_out_pairs_never_in_train_and_always_main_in_test():
    held = set(held_out_pairs())
    combos = combinations()
    assert 0.15 <= len(held) / len(combos) <= 0.2
    assert {c for c, _ in held} <= set(COLOURS) and len(train_pairs()) == len(combos) - len(held)
    # every colour and every shape is still seen in training
    assert {c for c, _ in train_pairs()} == set(COLOURS) and {s for _, s in train_pairs()} == set(SHAPES)
    held_phrases = [f"{c} {s}" for c, s in held]

    train = WorldDataset("train", FAST, seed=0, length=1500)
    seen = set()
    for i in range(len(train)):
        sample = train[i]
        pairs = {(o["colour"], o["shape"]) for o in sample["objects"]}
        seen |= pairs
        assert not pairs & held, (i, pairs & held)
        text = sample["caption"] + " " + " ".join(q + " " + a for q, a in sample["qa"])
        assert not any(p in text for p in held_phrases), (i, text)
    assert seen == set(train_pairs())  # the training split does use every other pair

    test = WorldDataset("test", FAST, seed=0, length=500)
    mains = set()
    for i in range(len(test)):
        sample = test[i]
        main = (sample["objects"][0]["colour"], sample["objects"][0]["shape"])
        mains.add(main)
        assert main in held
        assert sample["label"] == combos.index(main)
        assert all((o["colour"], o["shape"]) not in held for o in sample["objects"][1:])
    assert mains == held


def test_labels_index_the_main_pair_in_all_split():
    ds = WorldDataset("all", FAST, seed=1, length=300)
    combos = combinations()
    labels = set()
    for i in range(len(ds)):
        s = ds[i]
        assert combos[s["label"]] == (s["objects"][0]["colour"], s["objects"][0]["shape"])
        labels.add(s["label"])
    assert any(combos[k] in set(held_out_pairs()) for k in labels)


# ---------------------------------------------------------------------------------------------
# World: caption and questions agree with the attributes
# ---------------------------------------------------------------------------------------------


def _obj(d: dict) -> WorldObject:
    keys = ("shape", "colour", "size", "texture", "x", "y", "radius", "depth", "row", "col", "rgb")
    return WorldObject(**{k: d[k] for k in keys}, phase=0.0)


def test_caption_names_the_attributes_and_the_true_relation():
    ds = WorldDataset("all", FAST, seed=2, length=300)
    n_two = 0
    for i in range(len(ds)):
        s = ds[i]
        objs = s["objects"]
        cap = s["caption"]
        words = cap.split()
        first = objs[0]
        expected = ["a", first["size"]] + ([first["texture"]] if first["texture"] != "plain" else [])
        expected += [first["colour"], first["shape"]]
        assert words[: len(expected)] == expected, cap
        if len(objs) == 1:
            assert words == expected
            continue
        n_two += 1
        second = objs[1]
        rel = relation(_obj(first), _obj(second))
        assert cap.endswith(f"{second['colour']} {second['shape']}"), cap
        assert f" {rel} a {second['size']} " in cap, cap
        dx, dy = first["x"] - second["x"], first["y"] - second["y"]
        truth = {"left of": dx < 0, "right of": dx > 0, "above": dy < 0, "below": dy > 0}
        assert truth[rel], (cap, dx, dy)
    assert n_two > 100


def _answer(question: str, objs: list[dict]) -> str | None:
    """Answer ``question`` from the attributes alone (None for an unknown form)."""
    words = ("zero", "one", "two", "three", "four")
    plural = {"cross": "crosses"}
    if question == "how many objects are there?":
        return words[len(objs)]
    if m := re.fullmatch(r"what colour is the (\w+)\?", question):
        (o,) = [o for o in objs if o["shape"] == m[1]]
        return o["colour"]
    if m := re.fullmatch(r"what shape is the (\w+) object\?", question):
        (o,) = [o for o in objs if o["colour"] == m[1]]
        return o["shape"]
    if m := re.fullmatch(r"what (size|texture) is the (\w+) (\w+)\?", question):
        (o,) = [o for o in objs if (o["colour"], o["shape"]) == (m[2], m[3])]
        return o[m[1]]
    if m := re.fullmatch(r"where is the (\w+) (\w+)\?", question):
        (o,) = [o for o in objs if (o["colour"], o["shape"]) == (m[1], m[2])]
        return ("top" if o["y"] < 0.5 else "bottom") + " " + ("left" if o["x"] < 0.5 else "right")
    if m := re.fullmatch(r"is there a (\w+) (\w+)\?", question):
        return "yes" if any((o["colour"], o["shape"]) == (m[1], m[2]) for o in objs) else "no"
    if m := re.fullmatch(r"how many (\w+) objects are there\?", question):
        return words[sum(o["colour"] == m[1] for o in objs)]
    if m := re.fullmatch(r"how many (\w+) are there\?", question):
        return words[sum(plural.get(o["shape"], o["shape"] + "s") == m[1] for o in objs)]
    if m := re.fullmatch(r"is the (\w+) (\w+) (left of|right of|above|below) the (\w+) (\w+)\?", question):
        (a,) = [o for o in objs if (o["colour"], o["shape"]) == (m[1], m[2])]
        (b,) = [o for o in objs if (o["colour"], o["shape"]) == (m[4], m[5])]
        return "yes" if relation(_obj(a), _obj(b)) == m[3] else "no"
    return None


def test_questions_are_answered_by_the_attributes():
    ds = WorldDataset("all", FAST, seed=3, length=300)
    answers = set()
    for i in range(len(ds)):
        s = ds[i]
        assert len(s["qa"]) >= 4
        assert any(a == "no" for _, a in s["qa"]) and any(a == "yes" for _, a in s["qa"])
        for q, a in s["qa"]:
            expected = _answer(q, s["objects"])
            assert expected is not None, f"unparsed question {q!r}"
            assert a == expected, (q, a, expected, s["objects"])
            answers.add(a)
    assert set(COLOURS) <= answers and set(SHAPES) <= answers and {"two", "small", "striped"} <= answers


# ---------------------------------------------------------------------------------------------
# World: rendered modalities
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 64])
def test_modalities_shapes_ranges_and_finiteness(size):
    cfg = WorldConfig(image_size=size, audio_seconds=0.5, imu_steps=120)
    ds = WorldDataset("all", cfg, seed=0, length=8)
    batch = collate_scenes([ds[i] for i in range(4)])
    expected = {
        "image": (4, 3, size, size), "depth": (4, 1, size, size), "thermal": (4, 1, size, size),
        "audio": (4, 8000), "imu": (4, 6, 120),
    }
    for key, shape in expected.items():
        x = batch[key]
        assert x.shape == shape and x.dtype == torch.float32 and torch.isfinite(x).all(), key
    for key in ("image", "depth", "thermal"):
        assert 0.0 <= batch[key].min() and batch[key].max() <= 1.0, key
    assert batch["audio"].abs().max() <= 1.0 and batch["audio"].std() > 0.01
    assert batch["label"].dtype == torch.long and batch["label"].shape == (4,)
    assert len(batch["caption"]) == len(batch["qa"]) == len(batch["objects"]) == 4
    # the thermal map is not a copy or a channel of the image
    grey = batch["image"].mean(1, keepdim=True)
    assert (batch["thermal"] - grey).abs().mean() > 0.05


def test_modalities_are_switchable():
    ds = WorldDataset("train", WorldConfig(modalities=("image", "caption")), seed=0, length=4)
    assert set(ds[0]) == {"image", "caption", "objects", "label"}


def test_image_shows_each_object_colour_at_its_position():
    ds = WorldDataset("all", WorldConfig(modalities=("image",), image_size=64), seed=5, length=60)
    checked = 0
    for i in range(len(ds)):
        s = ds[i]
        img = s["image"].numpy()
        size = img.shape[-1]
        for o in s["objects"]:
            rgb = np.asarray(o["rgb"], dtype=np.float32)[:, None, None]
            cx, cy, half = int(o["x"] * size), int(o["y"] * size), max(2, int(0.3 * o["radius"] * size))
            patch = img[:, cy - half:cy + half, cx - half:cx + half]
            close = np.abs(patch - rgb).max(axis=0) < 0.1  # pixels of the object's own colour
            assert close.mean() > (0.6 if o["texture"] == "plain" else 0.15), (i, o)
            checked += 1
        corner = img[:, :2, :2].reshape(3, -1)  # corners are background in a 2x2 layout
        assert corner.max() < 0.35
    assert checked > 100


def test_depth_and_thermal_follow_the_objects():
    ds = WorldDataset("all", WorldConfig(modalities=("depth", "thermal")), seed=6, length=200)
    pairs = 0
    for i in range(len(ds)):
        s = ds[i]
        depth, heat = s["depth"][0].numpy(), s["thermal"][0].numpy()
        size = depth.shape[-1]
        centre = {}
        for o in s["objects"]:
            cx, cy = int(o["x"] * size), int(o["y"] * size)
            assert depth[cy, cx] < 0.75 < depth[0, 0]  # objects are nearer than the background
            assert abs(depth[cy, cx] - o["depth"]) < 0.1
            centre.setdefault(o["colour"], []).append(heat[cy, cx])
        if "red" in centre and "blue" in centre:  # warm colours glow hotter than cool ones
            assert min(centre["red"]) > max(centre["blue"])
            pairs += 1
    assert pairs > 5


def test_audio_pitch_encodes_the_main_colour():
    cfg = WorldConfig(modalities=("audio",))
    ds = WorldDataset("all", cfg, seed=7, length=40)
    candidates = np.asarray([220.0 * 2 ** (3 * k / 12) for k in range(len(COLOURS))])
    for i in range(len(ds)):
        s = ds[i]
        seg = s["audio"].numpy()[: cfg.audio_samples // len(s["objects"])]
        spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
        freqs = np.fft.rfftfreq(len(seg), 1 / cfg.sample_rate)
        power = [spec[np.abs(freqs - f).argmin()] for f in candidates]
        assert COLOURS[int(np.argmax(power))] == s["objects"][0]["colour"], i


def test_imu_direction_encodes_the_main_colour():
    cfg = WorldConfig(min_objects=1, max_objects=1, modalities=("imu",))
    ds = WorldDataset("all", cfg, seed=8, length=30)
    for i in range(len(ds)):
        s = ds[i]
        acc = s["imu"][:2].numpy()  # (2, T) horizontal acceleration
        axis = np.linalg.svd(acc - acc.mean(1, keepdims=True))[0][:, 0]
        theta = 2 * np.pi * COLOURS.index(s["objects"][0]["colour"]) / len(COLOURS)
        assert abs(axis @ np.array([np.cos(theta), np.sin(theta)])) > 0.95, i
        assert abs(s["imu"][2].mean() - 1.0) < 0.05  # gravity


def test_world_object_colours_are_named_and_distinct():
    assert len(SHAPES) >= 4 and len(COLOURS) >= 6 and set(RGB) == set(COLOURS)
    rgb = np.asarray([RGB[c] for c in COLOURS])
    gaps = np.abs(rgb[:, None] - rgb[None]).max(-1) + np.eye(len(COLOURS))
    assert gaps.min() > 0.15


# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------


def test_byte_tokenizer_round_trip():
    tok = ByteTokenizer()
    assert tok.vocab_size == 259 and (tok.bos_id, tok.eos_id, tok.pad_id) == (256, 257, 258)
    for text in ("", "hello, world", "naïve café — 東京 😀", "tabs\tand\nnewlines"):
        ids = tok.encode(text, bos=True, eos=True)
        assert ids[0] == 256 and ids[-1] == 257 and all(0 <= i < 256 for i in ids[1:-1])
        assert tok.decode(ids) == text
    assert len(tok.encode("é")) == 2  # bytes, not characters
    assert tok.decode([0xE6, 0x9D]) == "\ufffd"  # a truncated character is replaced, not raised
    with pytest.raises(ValueError):
        tok.decode([300])


def test_text_windows_shift_by_one_and_tile_the_corpus():
    ds = TextDataset("train", block_size=64)
    tokens = corpus_tokens("train")
    assert len(ds) == (len(tokens) - 65) // 64 + 1 and len(ds) > 1000
    for i in (0, 1, 500, len(ds) - 1):
        w = ds[i]["tokens"]
        assert w.shape == (65,) and w.dtype == torch.long
        inputs, targets = w[:-1], w[1:]
        assert np.array_equal(inputs.numpy(), tokens[i * 64:i * 64 + 64])
        assert np.array_equal(targets.numpy(), tokens[i * 64 + 1:i * 64 + 65])
        if i + 1 < len(ds):
            assert w[-1] == ds[i + 1]["tokens"][0]  # consecutive windows share one token
    assert torch.equal(ds[3]["tokens"], TextDataset("train", block_size=64)[3]["tokens"])
    overlapping = TextDataset("val", block_size=32, stride=8)
    assert torch.equal(overlapping[1]["tokens"][:-8], overlapping[0]["tokens"][8:])
    prose = ByteTokenizer().decode(torch.cat([ds[i]["tokens"][:-1] for i in range(10, 20)]).tolist())
    assert " the " in prose and prose.isprintable() is False  # English text with newlines


def test_text_splits_are_disjoint_documents_and_captions_mix_in():
    train, val = corpus_tokens("train"), corpus_tokens("val")
    assert 0.08 < len(val) / (len(train) + len(val)) < 0.2
    from pydoc_data.topics import topics

    assert (train == 257).sum() == len(corpus_text("train")) and (val == 257).sum() == len(corpus_text("val"))
    assert len(corpus_text("train")) + len(corpus_text("val")) == len(topics)
    text_val = ByteTokenizer().decode(val[:2000].tolist())
    assert text_val not in ByteTokenizer().decode(train.tolist())
    mixed = corpus_tokens("train", world_captions=50, seed=1)
    assert len(mixed) > len(train) and np.array_equal(mixed[: len(train)], train)
    tail = ByteTokenizer().decode(mixed[len(train):].tolist())
    assert tail.count("a ") >= 50 and any(c in tail for c in COLOURS)


def test_unigram_baseline():
    h = unigram_cross_entropy()
    assert 2.5 < h < math.log(259)
    # exact on a toy example: train counts (+1 smoothing over 4 symbols) = [3, 2, 1, 1] / 7
    assert unigram_cross_entropy([0, 0, 1], [0, 2], vocab_size=4) == pytest.approx(
        -(math.log(3 / 7) + math.log(1 / 7)) / 2
    )


# ---------------------------------------------------------------------------------------------
# Digits
# ---------------------------------------------------------------------------------------------


def test_digits_shapes_labels_and_split():
    from sklearn.datasets import load_digits

    target = load_digits().target
    train, test = DigitsDataset("train"), DigitsDataset("test")
    assert len(train) + len(test) == 1797 and abs(len(train) / 1797 - 0.8) < 0.01
    assert not set(train.indices) & set(test.indices)
    s = train[0]
    assert s["image"].shape == (1, 8, 8) and s["image"].dtype == torch.float32
    assert 0.0 <= float(train.images.min()) and float(train.images.max()) <= 1.0
    assert float(train.images.max()) == 1.0
    assert all(train[i]["label"] == target[train.indices[i]] for i in range(0, len(train), 50))
    assert set(train.labels.tolist()) == set(range(10))
    big = DigitsDataset("test", size=32, mode="bilinear")
    assert big[0]["image"].shape == (1, 32, 32) and float(big.images.max()) <= 1.0
    nearest = DigitsDataset("test", size=16)
    assert torch.equal(nearest.images[:, :, ::2, ::2], test.images)  # 2x nearest repeats pixels
    assert np.array_equal(DigitsDataset("test", seed=0).indices, test.indices)
    assert not np.array_equal(DigitsDataset("test", seed=1).indices, test.indices)


# ---------------------------------------------------------------------------------------------
# Bad inputs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: WorldConfig(image_size=16),
        lambda: WorldConfig(image_size=256),
        lambda: WorldConfig(min_objects=3, max_objects=2),
        lambda: WorldConfig(max_objects=5),
        lambda: WorldConfig(min_objects=0),
        lambda: WorldConfig(colours=("red", "mauve")),
        lambda: WorldConfig(shapes=("circle",)),
        lambda: WorldConfig(modalities=("image", "smell")),
        lambda: WorldConfig(colours=["red", "blue"]),
        lambda: WorldDataset("validation"),
        lambda: WorldDataset("train", length=0),
        lambda: TextDataset("test"),
        lambda: TextDataset("val", block_size=10**7),
        lambda: TextDataset("train", block_size=0),
        lambda: DigitsDataset("val"),
        lambda: DigitsDataset("train", size=4),
        lambda: DigitsDataset("train", size=16, mode="bicubic"),
    ],
)
def test_bad_inputs_raise_value_error_naming_expected_and_got(make):
    with pytest.raises(ValueError, match="expected .* got"):
        make()


def test_small_configs_still_split_correctly():
    cfg = WorldConfig(colours=("red", "blue"), shapes=("circle", "square"), max_objects=2, modalities=("qa",))
    held = set(held_out_pairs(cfg))
    assert len(held) == 2
    train, test = WorldDataset("train", cfg, length=50), WorldDataset("test", cfg, length=50)
    for i in range(50):
        assert not {(o["colour"], o["shape"]) for o in train[i]["objects"]} & held
        main = test[i]["objects"][0]
        assert (main["colour"], main["shape"]) in held
