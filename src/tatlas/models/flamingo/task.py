"""Training Flamingo on the embedded world: few-shot prompts that *define the task*, the paper's
headline in miniature (Alayrac et al. 2022, §3 and Figure 1: one model, a handful of interleaved
examples, and it does the task they show).

An *episode* is an interleaved sequence of chunks, one picture each (byte tokens,
:class:`~tatlas.data.ByteTokenizer`, with ``<image>`` and ``<|endofchunk|>``)::

    <image>red.<|endofchunk|><image>blue.<|endofchunk|><image>___        (the task: colour)
    <image>striped.<|endofchunk|><image>plain.<|endofchunk|><image>___   (the task: texture)

Each picture holds one object; an episode's task (:data:`TASKS`: its colour, its size or its texture)
is never named, only shown by the examples. With no example (0 shots) the model can only guess which
attribute is wanted; with examples it must read the task off the earlier answers (through the frozen
LM's own attention), and the answer off the query picture (through the gated cross-attention). The
blind LM (:func:`gates_closed`) can read the task but not the picture.

Splits (:class:`SceneBank`): training episodes use ``"train"`` scenes; evaluation uses ``"test"``
scenes, whose objects are the world's held-out colour-shape pairs (each colour and shape seen in
training, never together; the shape is not among the tasks because the tiny world-trained tower
does not tell shapes apart on pairs it never saw: 0.02 exact match when tried). Loss (:func:`fewshot_loss`): next-token cross-entropy on the answers
only (the query's and, in training, every support's: each support is itself a query with fewer
shots); ``-100`` everywhere else.

Evaluation (:func:`few_shot_accuracy`): greedy exact match of the query's answer (and its period) at
0, 1, 2, 4 shots on the same queries (the supports nested: the 1-shot support is the 2-shot
prompt's first), decided in one teacher-forced forward (greedy decoding reproduces the answer
exactly when the argmax at every answer position is the answer's next token).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from ...data import ByteTokenizer, normalise
from ...data.world import WorldConfig, WorldDataset, combinations, held_out_pairs, train_pairs
from ..spec import TrainTask
from ..vlm_task import IGNORE, pad_tokens
from .config import FlamingoConfig

WORLD = WorldConfig(max_objects=1, modalities=("image", "caption"))  # one object: the picture's attributes
TASKS = ("colour", "size", "texture")  # what an episode asks of its pictures (shown, never named)
SHOTS = (0, 1, 2, 4)

Kind = tuple[str, str]  # (colour, shape)


def check_tokens(config: FlamingoConfig) -> None:
    """The world task's byte tokens are ids 0..258; ``<image>`` and ``<|endofchunk|>`` must be others."""
    ids = (config.media_token_id, config.eoc_token_id)
    if any(i is None or i < ByteTokenizer().vocab_size for i in ids) or len(set(ids)) != 2:
        raise ValueError(f"the world task needs byte tokens 0..258 and <image>/<|endofchunk|> ids outside them; got "
                         f"media_token_id={ids[0]}, eoc_token_id={ids[1]} (use the 'tiny-world' preset)")


# ---------------------------------------------------------------------------------------------
# Pictures by kind
# ---------------------------------------------------------------------------------------------


class SceneBank:
    """One-object scenes of ``split``, rendered once: ``images [n, 3, S, S]`` (normalised with
    ``mean``/``std``), ``answers`` (per scene, the word each of :data:`TASKS` asks for), and
    ``by_kind`` (colour-shape pair -> scene indices). Scenes are drawn until each kind has
    ``per_kind`` of them (or ``per_kind * kinds * 4`` were drawn)."""

    def __init__(self, split: str, *, seed: int = 0, per_kind: int = 16, image_size: int = 32,
                 mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5)) -> None:
        world = replace(WORLD, image_size=image_size)
        scenes = WorldDataset(split, world, seed=seed, length=10**6)
        self.split = split
        by_kind: dict[Kind, list[int]] = {}
        images, answers = [], []
        kinds = len({"train": train_pairs, "test": held_out_pairs, "all": combinations}[split](world))
        for i in range(per_kind * kinds * 4):
            scene = scenes.scene(i)
            o = scene.objects[0]
            slot = by_kind.setdefault((o.colour, o.shape), [])
            if len(slot) >= per_kind:
                continue
            slot.append(len(images))
            images.append(scene.image())
            answers.append({"colour": o.colour, "shape": o.shape, "size": o.size, "texture": o.texture})
            if len(images) >= per_kind * kinds:
                break
        self.images = normalise(torch.stack(images), mean, std)
        self.answers = answers
        self.by_kind = dict(sorted(by_kind.items()))
        self.kinds = tuple(self.by_kind)

    def __len__(self) -> int:
        return len(self.images)

    def answer(self, scene: int, task: str) -> str:
        """The word ``task`` asks for about ``scene``'s object."""
        return self.answers[scene][task]


# ---------------------------------------------------------------------------------------------
# Episodes
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Episode:
    """One few-shot episode: its task (one of :data:`TASKS`), the supports' scenes (in prompt order)
    and the query's (never among the supports)."""

    task: str
    support_scenes: tuple[int, ...]
    query_scene: int

    def with_shots(self, shots: int) -> Episode:
        """The same episode with its first ``shots`` supports."""
        return replace(self, support_scenes=self.support_scenes[:shots])


def draw_episode(rng: np.random.Generator, bank: SceneBank, *, shots: int, task: str | None = None) -> Episode:
    """An episode of ``task`` (drawn when ``None``) with ``shots`` distinct supports and a query."""
    if task is None:
        task = TASKS[int(rng.integers(len(TASKS)))]
    elif task not in TASKS:
        raise ValueError(f"task: expected one of {TASKS}, got {task!r}")
    scenes = [int(i) for i in rng.choice(len(bank), size=shots + 1, replace=False)]
    return Episode(task, tuple(scenes[1:]), scenes[0])


def episode_tokens(config: FlamingoConfig, bank: SceneBank, episode: Episode, *, answer: bool = True,
                   label_supports: bool = False) -> tuple[list[int], list[int]]:
    """``(tokens, labels)`` of an episode: per support ``<image><answer>.<|endofchunk|>``, then the
    query's ``<image>`` (and its ``<answer>.`` with ``answer``). ``labels[t]`` is the token ``t``
    must predict where that is a target (the query's answer and period; with ``label_supports`` also
    every support's), :data:`IGNORE` elsewhere."""
    tok = ByteTokenizer()
    tokens: list[int] = []
    targets: list[bool] = []  # targets[t]: is tokens[t] a target (as a label it sits at t - 1)
    for j, scene in enumerate([*episode.support_scenes, episode.query_scene]):
        support = j < len(episode.support_scenes)
        tokens.append(config.media_token_id)
        targets.append(False)
        if not support and not answer:
            break
        text = tok.encode(bank.answer(scene, episode.task) + ".")
        tokens += text
        targets += [not support or label_supports] * len(text)
        if support:
            tokens.append(config.eoc_token_id)
            targets.append(False)
    labels = [t if target else IGNORE for t, target in zip(tokens[1:], targets[1:], strict=True)] + [IGNORE]
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
    """Training episodes: a task from :data:`TASKS` and 0..``max_shots`` supports, every answer a
    target. Sample ``index`` is a fixed draw: ``tokens [L]``, ``labels [L]``, ``pixels [N_images, 3, S, S]``."""

    def __init__(self, config: FlamingoConfig, bank: SceneBank, *, seed: int = 0, length: int = 100_000,
                 max_shots: int = 4) -> None:
        check_tokens(config)
        self.config, self.bank, self.seed, self.length, self.max_shots = config, bank, seed, length, max_shots

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        rng = np.random.default_rng((self.seed, 11, index))
        episode = draw_episode(rng, self.bank, shots=int(rng.integers(0, self.max_shots + 1)))
        tokens, labels = episode_tokens(self.config, self.bank, episode, label_supports=True)
        scenes = [*episode.support_scenes, episode.query_scene]
        return {"tokens": torch.tensor(tokens), "labels": torch.tensor(labels), "pixels": self.bank.images[scenes]}


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


def eval_episodes(bank: SceneBank, *, seed: int = 0, n: int = 200, max_shots: int = 4) -> list[Episode]:
    """``n`` fixed episodes, the tasks in turn, with ``max_shots`` supports (cut with :meth:`Episode.with_shots`)."""
    rng = np.random.default_rng((seed, 17))
    return [draw_episode(rng, bank, shots=max_shots, task=TASKS[i % len(TASKS)]) for i in range(n)]


@torch.no_grad()
def exact_match(model: nn.Module, bank: SceneBank, episodes: Sequence[Episode], *, batch_size: int = 100
                ) -> list[bool]:
    """Whether greedy decoding from the query's ``<image>`` gives its answer and period exactly,
    decided in one teacher-forced forward per batch (the argmax at every answer position)."""
    config = model.config
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[bool] = []
    for start in range(0, len(episodes), batch_size):
        items = []
        for ep in episodes[start : start + batch_size]:
            tokens, labels = episode_tokens(config, bank, ep)
            items.append({"tokens": torch.tensor(tokens), "labels": torch.tensor(labels),
                          "pixels": bank.images[[*ep.support_scenes, ep.query_scene]]})
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


def make_task(config: FlamingoConfig, seed: int = 0, *, bank: SceneBank | None = None, eval_n: int = 99,
              **kwargs: Any) -> TrainTask:
    """Few-shot episodes on ``"train"`` scenes (:class:`FewShotEpisodes`, ``kwargs`` go to it) with
    :func:`fewshot_loss`; evaluation: :func:`few_shot_accuracy` on ``eval_n`` ``"test"`` episodes
    (held-out colour-shape pairs)."""
    check_tokens(config)
    v = config.vision
    stats = {"image_size": v.image_size, "mean": v.image_mean, "std": v.image_std}
    bank = bank or SceneBank("train", seed=seed, **stats)
    test = functools.lru_cache(maxsize=1)(lambda: SceneBank("test", seed=seed + 1, **stats))
    data = FewShotEpisodes(config, bank, seed=seed, **kwargs)

    def evaluate(model: nn.Module) -> dict[str, float]:
        accs = few_shot_accuracy(model, test(), eval_episodes(test(), seed=seed + 1, n=eval_n))
        return {f"acc_{k}shot": a for k, a in accs.items()}

    return TrainTask(train_data=data, loss_fn=fewshot_loss, eval_fn=evaluate, collate_fn=collate)


def train_task(config: FlamingoConfig, seed: int = 0) -> TrainTask:
    """``tatlas train flamingo``: :func:`make_task` with its defaults (what learns is what the model
    leaves trainable: built afresh, everything but the LM; the demo freezes the tower too, after
    pretraining LM and tower, :mod:`tatlas.demo.flamingo`)."""
    return make_task(config, seed)
