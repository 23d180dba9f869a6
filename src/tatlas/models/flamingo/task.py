"""Training Flamingo on the embedded world: fast concept binding, the paper's few-shot prompts in
miniature (Alayrac et al. 2022, §3 and Figure 1; the task is Tsimpoukelli et al. 2021, "Frozen", §4.2).

An *episode* is an interleaved sequence of chunks, one image each (byte tokens,
:class:`~tatlas.data.ByteTokenizer`, with ``<image>`` and ``<|endofchunk|>``)::

    <image>dax.<|endofchunk|><image>blick.<|endofchunk|> ... <image>___

The names are nonsense words drawn fresh per episode, each bound to one *kind* of object (a
colour-shape pair; the kinds of one episode differ in colour and in shape) only inside that
episode: ``n_way`` kinds, ``shots`` support images of each, in a random order, then a query image
of one of them. The answer can only come from matching the query image to a support image and
copying that support's word, so the model must (a) see and (b) copy in context.

The LM is frozen, so the copying has to be its own: :class:`CopyText` pretrains it on the text
corpus (and world captions) mixed with *text* episodes of the same layout in which a key letter
stands where the image will (``"Qdax.<|endofchunk|>Kblick.<|endofchunk|>Q"``), and on random strings repeated,
which teaches it to copy the name bound to a repeated key (an induction circuit). The gated
cross-attention layers then learn to make an ``<image>`` read like a key, one per kind.

Splits (:class:`SceneBank`): training episodes use ``"train"`` scenes and :func:`nonsense_words`
``("train")``; evaluation uses ``"test"`` scenes, whose objects are the world's held-out colour-shape
pairs, and ``"test"`` words, which no training episode (text or image) ever uses: both the pictures
and the words are new, only the task's form is not. :class:`FewShotEpisodes` mixes in captioning
episodes (``<image>a small red circle.<|endofchunk|><image>...``), as Flamingo trains on
interleaved image-text data. Loss (:func:`fewshot_loss`): next-token cross-entropy on the targets
only (names already bound earlier in the episode, and captions); ``-100`` everywhere else.

Evaluation (:func:`few_shot_accuracy`): greedy exact match of the query's name (and its period) at
0, 1, 2, 4 shots per kind on the same queries (the supports nested: the 1-shot supports are among
the 2-shot ones), decided in one teacher-forced forward (greedy decoding reproduces the answer
exactly when the argmax at every answer position is the answer's next token); chance is ``1 /
n_way`` once there are supports, and 0-shot is near zero because the word is new.
:func:`gates_closed` runs the same model with ``tanh(gate) = 0``: the frozen LM alone, blind.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from ...data import ByteTokenizer, TextDataset, normalise
from ...data.world import WorldConfig, WorldDataset, combinations, held_out_pairs, train_pairs
from ..spec import TrainTask
from ..vlm_task import IGNORE, pad_tokens
from .config import FlamingoConfig

WORLD = WorldConfig(max_objects=1, modalities=("image", "caption"))  # one object: the picture is its kind
BINDING = ""  # between a chunk's key and its name (" is a " was tried first: a longer hop for the LM)
KEYS = tuple(range(ord("A"), ord("Z") + 1))  # the text episodes' key letters
SHOTS = (0, 1, 2, 4)
_CONSONANTS, _VOWELS = "bdfgklmnprstvz", "aeiou"
_TEST_WORDS = 120

Kind = tuple[str, str]  # (colour, shape)


def check_tokens(config: FlamingoConfig) -> None:
    """The world task's byte tokens are ids 0..258; ``<image>`` and ``<|endofchunk|>`` must be others."""
    ids = (config.media_token_id, config.eoc_token_id)
    if any(i is None or i < ByteTokenizer().vocab_size for i in ids) or len(set(ids)) != 2:
        raise ValueError(f"the world task needs byte tokens 0..258 and <image>/<|endofchunk|> ids outside them; got "
                         f"media_token_id={ids[0]}, eoc_token_id={ids[1]} (use the 'tiny-world' preset)")


@functools.lru_cache(maxsize=2)
def nonsense_words(split: str = "train") -> tuple[str, ...]:
    """Consonant-vowel-consonant nonsense words ("dax", "bik" ...), shuffled once with a fixed seed:
    the first 120 are ``"test"``, the rest (~860) ``"train"``; no word is in both."""
    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    words = ["".join(w) for w in itertools.product(_CONSONANTS, _VOWELS, _CONSONANTS)]
    words = [words[i] for i in np.random.default_rng(1234).permutation(len(words))]
    return tuple(words[:_TEST_WORDS] if split == "test" else words[_TEST_WORDS:])


# ---------------------------------------------------------------------------------------------
# Pictures by kind
# ---------------------------------------------------------------------------------------------


class SceneBank:
    """One-object scenes of ``split``, rendered once and grouped by kind: ``images [n, 3, S, S]``
    (normalised with ``mean``/``std``), ``captions``, and ``by_kind`` (kind -> scene indices). Scenes
    are drawn until each kind has ``per_kind`` of them (or ``per_kind * kinds * 4`` were drawn)."""

    def __init__(self, split: str, *, seed: int = 0, per_kind: int = 16, image_size: int = 32,
                 mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5)) -> None:
        world = replace(WORLD, image_size=image_size)
        scenes = WorldDataset(split, world, seed=seed, length=10**6)
        self.split = split
        by_kind: dict[Kind, list[int]] = {}
        images, captions = [], []
        kinds = len({"train": train_pairs, "test": held_out_pairs, "all": combinations}[split](world))
        for i in range(per_kind * kinds * 4):
            scene = scenes.scene(i)
            o = scene.objects[0]
            slot = by_kind.setdefault((o.colour, o.shape), [])
            if len(slot) >= per_kind:
                continue
            slot.append(len(images))
            images.append(scene.image())
            captions.append(scene.caption())
            if len(images) >= per_kind * kinds:
                break
        self.images = normalise(torch.stack(images), mean, std)
        self.captions = captions
        self.by_kind = {k: v for k, v in sorted(by_kind.items()) if len(v) >= 2}
        self.kinds = tuple(self.by_kind)

    def __len__(self) -> int:
        return len(self.images)

    def pick_kinds(self, rng: np.random.Generator, n: int) -> list[Kind]:
        """``n`` kinds that differ pairwise in colour and in shape."""
        for _ in range(1000):
            idx = rng.choice(len(self.kinds), size=n, replace=False)
            kinds = [self.kinds[int(i)] for i in idx]
            if len({c for c, _ in kinds}) == n and len({s for _, s in kinds}) == n:
                return kinds
        raise ValueError(f"cannot pick {n} kinds differing in colour and shape from {self.kinds}")


# ---------------------------------------------------------------------------------------------
# Episodes
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Episode:
    """One few-shot episode: the supports' kinds, names and scene indices (in prompt order), the
    query's. ``keys`` stand for the kinds in a text episode (one letter each) and are ``None`` with
    images."""

    support_kinds: tuple[int, ...]  # index into names (0..n_way-1)
    support_scenes: tuple[int, ...]
    names: tuple[str, ...]
    query_kind: int
    query_scene: int
    keys: tuple[int, ...] | None = None

    def with_shots(self, shots: int) -> Episode:
        """The same episode with the first ``shots`` supports of each kind (order kept)."""
        seen: dict[int, int] = {}
        keep = []
        for j, k in enumerate(self.support_kinds):
            seen[k] = seen.get(k, 0) + 1
            if seen[k] <= shots:
                keep.append(j)
        return replace(self, support_kinds=tuple(self.support_kinds[j] for j in keep),
                       support_scenes=tuple(self.support_scenes[j] for j in keep))


def draw_episode(rng: np.random.Generator, bank: SceneBank | None, words: Sequence[str], *, n_way: int, shots: int,
                 keys: bool = False) -> Episode:
    """An episode of ``n_way`` kinds with ``shots`` supports each, in a random order; ``bank=None``
    (or ``keys``) draws a text episode (key letters instead of pictures, no scenes)."""
    names = tuple(words[int(i)] for i in rng.choice(len(words), size=n_way, replace=False))
    support_kinds = [k for k in range(n_way) for _ in range(shots)]
    support_kinds = [support_kinds[int(i)] for i in rng.permutation(len(support_kinds))]
    query = int(rng.integers(n_way))
    if bank is None or keys:
        letters = tuple(KEYS[int(i)] for i in rng.choice(len(KEYS), size=n_way, replace=False))
        return Episode(tuple(support_kinds), (-1,) * len(support_kinds), names, query, -1, letters)
    kinds = bank.pick_kinds(rng, n_way)
    pools = [[int(i) for i in rng.permutation(bank.by_kind[k])] for k in kinds]
    query_scene = pools[query].pop(0)  # never among the supports
    scenes = []
    for k in support_kinds:  # each picture once per episode while there are enough, then repeats
        others = [i for i in bank.by_kind[kinds[k]] if i != query_scene]
        scenes.append(pools[k].pop() if pools[k] else int(rng.choice(others)))
    return Episode(tuple(support_kinds), tuple(scenes), names, query, query_scene)


def episode_tokens(config: FlamingoConfig, episode: Episode, *, answer: bool = True, label_repeats: bool = True
                   ) -> tuple[list[int], list[int]]:
    """``(tokens, labels)`` of an episode: per support ``<key><name>.<|endofchunk|>``, then the
    query ``<key>`` (and its ``<name>.`` with ``answer``). ``labels[t]`` is the token ``t``
    must predict where that is a target (the query's name and period; with ``label_repeats`` also
    every support's whose name the episode bound before), :data:`IGNORE` elsewhere."""
    tok = ByteTokenizer()
    tokens: list[int] = []
    targets: list[int] = []  # targets[t]: is tokens[t] a target (as a label it sits at t - 1)
    bound: set[int] = set()

    def key(k: int) -> int:
        return config.media_token_id if episode.keys is None else episode.keys[k]

    chunks = [(k, True) for k in episode.support_kinds] + [(episode.query_kind, False)]
    for k, support in chunks:
        head = [key(k)] + tok.encode(BINDING)
        tokens += head
        targets += [False] * len(head)
        if not support and not answer:
            break
        name = tok.encode(episode.names[k] + ".")
        tokens += name
        targets += [not support or (label_repeats and k in bound)] * len(name)
        bound.add(k)
        if support:
            tokens.append(config.eoc_token_id)
            targets.append(False)
    labels = [t if is_target else IGNORE for t, is_target in zip(tokens[1:], targets[1:], strict=True)] + [IGNORE]
    return tokens, labels


def caption_tokens(config: FlamingoConfig, captions: Sequence[str]) -> tuple[list[int], list[int]]:
    """``<image>caption.<|endofchunk|>`` per caption; every caption's bytes and period are targets."""
    tok = ByteTokenizer()
    tokens, labels = [], []
    for caption in captions:
        text = tok.encode(caption + ".")
        tokens += [config.media_token_id] + text + [config.eoc_token_id]
        labels += text + [IGNORE, IGNORE]  # labels[t] = tokens[t + 1] where a target
    return tokens, labels


def collate(items: list[dict[str, Any]]) -> dict[str, Tensor]:
    """Right-pad ``tokens`` (``PAD``) and ``labels`` (``IGNORE``) to ``[B, L]``; ``pixels`` to
    ``[B, N_max, 3, S, S]`` with zero images (no ``<image>`` token points at them)."""
    batch = pad_tokens(items)
    if "pixels" in items[0]:
        n = max(len(it["pixels"]) for it in items)
        pixels = items[0]["pixels"].new_zeros(len(items), n, *items[0]["pixels"].shape[1:])
        for i, it in enumerate(items):
            pixels[i, : len(it["pixels"])] = it["pixels"]
        batch["pixels"] = pixels
    return batch


class FewShotEpisodes(Dataset):
    """Training episodes with pictures: a ``captions`` fraction of captioning episodes (2-4 images),
    the rest binding episodes of ``n_way`` kinds and 1..``max_shots`` shots each. Sample ``index`` is
    a fixed draw: ``tokens [L]``, ``labels [L]``, ``pixels [N_images, 3, S, S]``."""

    def __init__(self, config: FlamingoConfig, bank: SceneBank, *, seed: int = 0, length: int = 100_000,
                 n_way: int = 2, max_shots: int = 4, captions: float = 0.25, words: str = "train") -> None:
        check_tokens(config)
        self.config, self.bank, self.seed, self.length = config, bank, seed, length
        self.n_way, self.max_shots, self.captions = n_way, max_shots, captions
        self.words = nonsense_words(words)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        rng = np.random.default_rng((self.seed, 11, index))
        if rng.random() < self.captions:
            scenes = [int(i) for i in rng.choice(len(self.bank), size=int(rng.integers(2, 5)), replace=False)]
            tokens, labels = caption_tokens(self.config, [self.bank.captions[i] for i in scenes])
        else:
            episode = draw_episode(rng, self.bank, self.words, n_way=self.n_way,
                                   shots=int(rng.integers(1, self.max_shots + 1)))
            tokens, labels = episode_tokens(self.config, episode)
            scenes = [*episode.support_scenes, episode.query_scene]
        return {"tokens": torch.tensor(tokens), "labels": torch.tensor(labels), "pixels": self.bank.images[scenes]}


class CopyText(Dataset):
    """The LM's pretraining data: even indices are windows of the text corpus (with world captions
    as further documents; :class:`~tatlas.data.TextDataset`), odd ones *text* binding episodes
    (2..``max_way`` key letters, 1..``max_shots`` shots each, ``"train"`` words), every token a
    target. Sample: ``tokens [L]``, ``labels [L]`` (the next token; ``IGNORE`` at the end)."""

    def __init__(self, config: FlamingoConfig, *, seed: int = 0, block_size: int = 128, max_way: int = 3,
                 max_shots: int = 4, world_captions: int = 2000, text_fraction: float = 0.2,
                 repeats: float = 0.4) -> None:
        check_tokens(config)
        self.config, self.seed, self.max_way, self.max_shots = config, seed, max_way, max_shots
        self.text_fraction, self.repeats = text_fraction, repeats
        self.corpus = TextDataset("train", block_size, seed, world_captions=world_captions)
        self.words = nonsense_words("train")

    def __len__(self) -> int:
        return 2 * len(self.corpus)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        rng = np.random.default_rng((self.seed, 13, index))
        draw = rng.random()
        if draw < self.text_fraction:
            tokens = self.corpus[index // 2]["tokens"]
        elif draw < self.text_fraction + self.repeats:  # a random string, then again: copy it
            text = list(rng.integers(ord("a"), ord("z") + 1, size=int(rng.integers(8, 25))))
            tokens = text + [self.config.eoc_token_id] + text
            labels = [IGNORE] * len(text) + tokens[len(text) + 1 :] + [IGNORE]
            return {"tokens": torch.tensor(tokens), "labels": torch.tensor(labels)}
        else:
            episode = draw_episode(rng, None, self.words, n_way=int(rng.integers(2, self.max_way + 1)),
                                   shots=int(rng.integers(1, self.max_shots + 1)))
            tokens, labels = episode_tokens(self.config, episode)
            return {"tokens": torch.tensor(tokens), "labels": torch.tensor(labels)}
        return {"tokens": tokens, "labels": torch.cat([tokens[1:], tokens.new_tensor([IGNORE])])}


# ---------------------------------------------------------------------------------------------
# Loss, parts, evaluation
# ---------------------------------------------------------------------------------------------


def fewshot_loss(model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Mean next-token cross-entropy over the targets (``labels != -100``) and their token accuracy;
    a batch without ``pixels`` runs a text-only LM (the pretraining stage)."""
    tokens, labels = batch["tokens"], batch["labels"]
    logits = model(tokens, pixels=batch["pixels"]) if "pixels" in batch else model(tokens)  # [B, L, V]
    loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE)
    target = labels != IGNORE
    correct = (logits.argmax(-1) == labels) & target
    return {"loss": loss, "target_acc": correct.sum().detach() / target.sum().clamp(min=1)}


def freeze_for_fewshot(model: nn.Module) -> list[str]:
    """The paper's split: the vision tower and the LM frozen; the resampler and the gated
    cross-attention layers learn. Returns the trainable parameters' names."""
    model.requires_grad_(False)
    for part in (model.resampler, model.cross_layers):
        if part is not None:
            part.requires_grad_(True)
    return [n for n, p in model.named_parameters() if p.requires_grad]


@contextlib.contextmanager
def gates_closed(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` with every gate at 0 (``tanh(0) = 0``: the frozen LM alone, no image), restored after."""
    saved = [(g, g.detach().clone()) for layer in model.cross_layers for g in (layer.attn_gate, layer.mlp_gate)]
    try:
        with torch.no_grad():
            for g, _ in saved:
                g.zero_()
        yield model
    finally:
        with torch.no_grad():
            for g, value in saved:
                g.copy_(value)


def eval_episodes(bank: SceneBank, *, seed: int = 0, n: int = 200, n_way: int = 2, max_shots: int = 4,
                  words: str = "test") -> list[Episode]:
    """``n`` fixed episodes with ``max_shots`` supports per kind (cut with :meth:`Episode.with_shots`)."""
    rng = np.random.default_rng((seed, 17))
    return [draw_episode(rng, bank, nonsense_words(words), n_way=n_way, shots=max_shots) for _ in range(n)]


@torch.no_grad()
def exact_match(model: nn.Module, bank: SceneBank, episodes: Sequence[Episode], *, batch_size: int = 100
                ) -> list[bool]:
    """Whether greedy decoding from ``<key>`` gives each query's name and period exactly,
    decided in one teacher-forced forward per batch (the argmax at every answer position)."""
    config = model.config
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[bool] = []
    for start in range(0, len(episodes), batch_size):
        items = []
        for ep in episodes[start : start + batch_size]:
            tokens, labels = episode_tokens(config, ep, label_repeats=False)
            scenes = [*ep.support_scenes, ep.query_scene]
            items.append({"tokens": torch.tensor(tokens), "labels": torch.tensor(labels),
                          "pixels": bank.images[scenes]})
        batch = {k: v.to(device) for k, v in collate(items).items()}
        logits = model(batch["tokens"], pixels=batch["pixels"])  # [B, L, V]
        wrong = (logits.argmax(-1) != batch["labels"]) & (batch["labels"] != IGNORE)
        out += (~wrong.any(dim=1)).tolist()
    model.train(was_training)
    return out


def few_shot_accuracy(model: nn.Module, bank: SceneBank, episodes: Sequence[Episode],
                      shots: Sequence[int] = SHOTS) -> dict[int, float]:
    """Exact-match accuracy of the queries of ``episodes`` at each number of ``shots`` per kind."""
    out = {}
    for k in shots:
        right = exact_match(model, bank, [ep.with_shots(k) for ep in episodes])
        out[k] = sum(right) / max(1, len(right))
    return out


def make_task(config: FlamingoConfig, seed: int = 0, *, bank: SceneBank | None = None, n_way: int = 2,
              eval_n: int = 100, **kwargs: Any) -> TrainTask:
    """Few-shot binding and captioning episodes on ``"train"`` scenes (:class:`FewShotEpisodes`,
    ``kwargs`` go to it) with :func:`fewshot_loss`; evaluation: :func:`few_shot_accuracy` on
    ``eval_n`` ``"test"`` episodes (held-out pairs, unseen words)."""
    check_tokens(config)
    v = config.vision
    stats = {"image_size": v.image_size, "mean": v.image_mean, "std": v.image_std}
    bank = bank or SceneBank("train", seed=seed, **stats)
    test = functools.lru_cache(maxsize=1)(lambda: SceneBank("test", seed=seed + 1, **stats))
    data = FewShotEpisodes(config, bank, seed=seed, n_way=n_way, **kwargs)

    def evaluate(model: nn.Module) -> dict[str, float]:
        accs = few_shot_accuracy(model, test(), eval_episodes(test(), seed=seed + 1, n=eval_n, n_way=n_way))
        return {f"acc_{k}shot": a for k, a in accs.items()}

    return TrainTask(train_data=data, loss_fn=fewshot_loss, eval_fn=evaluate, collate_fn=collate)


def train_task(config: FlamingoConfig, seed: int = 0) -> TrainTask:
    """``tatlas train flamingo``: :func:`make_task` with its defaults (what learns is what the model
    leaves trainable: built afresh, everything but the LM; the demo freezes the tower too, after
    pretraining LM and tower, :mod:`tatlas.demo.flamingo`)."""
    return make_task(config, seed)
