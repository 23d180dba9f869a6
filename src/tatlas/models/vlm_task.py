"""Training LLaVA and InternVL on the embedded world: visual instruction tuning in miniature.

The recipe of the papers, as stages that say which parts learn and on what data:

- LLaVA (Liu et al. 2023, "Visual Instruction Tuning", §4.1): stage 1, *pre-training for feature
  alignment* (``"align"``): the vision encoder and the LLM frozen, only the projection trained, on
  image-caption pairs (the caption is the answer to the image); stage 2, *fine-tuning end-to-end*
  (``"instruct"``): the vision encoder frozen, projection and LLM trained on instruction data
  (multi-turn question-answer conversations about the image, loss on the answers only).
- InternVL (Chen et al. 2024, InternVL 1.5 §3.3 and InternVL 2.5 §4.2): stage 1, *MLP warm-up*
  (``"warmup"``): only the MLP connector (with its LayerNorm) trained, on captions; stage 2, *full
  model instruction tuning* (``"full"``): vision tower, connector and LLM all trained on
  question-answer data, images cut into dynamic tiles (1.5 §3.2).
- ``"scratch"`` (ours, both systems): everything trained, on captions and question-answer data
  mixed. The papers start from a pretrained CLIP/InternViT tower and a pretrained LLM; a tiny model
  trained from random weights in a minute has neither, so its tower must learn to see from the
  language loss. ``tatlas train llava`` / ``tatlas train internvl`` (:func:`train_task`) run this
  stage; the papers' stages are :func:`make_task` with ``stage=`` after :func:`freeze_for_stage`.

Sequences are byte tokens (:class:`~tatlas.data.ByteTokenizer`): ``BOS, <image> x n, q1, a1, EOS,
q2, a2, EOS, ...`` for question answering (each answer followed by ``EOS``), ``BOS, <image> x n,
caption, EOS`` for captions. Labels are the next tokens where they belong to an answer (or the
caption) and its ``EOS``, ``-100`` (ignored) everywhere else: the prompt, the image and the
questions are never targets (LLaVA §3, Eq. 3: the loss is on the assistant's answers).

Images: the world's scenes (:mod:`tatlas.data.world`, ``"train"`` split, whole colour-shape pairs held
out) resized to the tower's side and normalised with its statistics; LLaVA-NeXT through its anyres
views; InternVL through :func:`~tatlas.models.internvl.preprocess.tile_image` when tiling settings
are given. A *wide* scene (:func:`wide_image`) is a 2:1 image with the world's scene in one half and
empty background in the other, so its objects are small: squashed into one tile they lose half their
width, cut into tiles (plus the thumbnail) they keep it.

Evaluation (:func:`vqa_accuracy`): greedy exact-match accuracy on ``"test"`` scenes, whose main
object is a held-out colour-shape pair, per question kind (:data:`EVAL_KINDS`), decided by one
teacher-forced forward (:func:`exact_match`; the demos also decode through
:func:`tatlas.generate.generate`); :func:`baseline_accuracy` gives chance (each kind's most frequent
training answer) and the best a text-only model can do on the training data.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import ConcatDataset, Dataset

from ..data import BOS, EOS, PAD, ByteTokenizer, normalise, resize_square
from ..data.world import WorldConfig, WorldDataset
from .spec import TrainTask

IGNORE = -100  # label of a position that is not a target (F.cross_entropy's ignore_index)
PARTS = ("vision", "connector", "language_model")
DATA = ("captions", "qa", "both")
KINDS = ("colour", "shape", "count", "exists")  # see question_kind
EVAL_KINDS = ("colour", "shape", "count")


@dataclass(frozen=True)
class Stage:
    """One training stage: the parts that learn (the rest frozen) and its data."""

    name: str
    trains: tuple[str, ...]
    data: str
    summary: str


_SCRATCH = Stage("scratch", PARTS, "qa", "everything trained from random weights on QA (ours: no pretrained tower or LLM)")
STAGES: dict[str, dict[str, Stage]] = {
    "llava": {
        "align": Stage("align", ("connector",), "captions",
                       "Liu et al. 2023 §4.1 stage 1: feature alignment, projector only, on captions"),
        "instruct": Stage("instruct", ("connector", "language_model"), "qa",
                          "Liu et al. 2023 §4.1 stage 2: projector + LLM on QA, vision frozen"),
        "scratch": _SCRATCH,
    },
    "internvl": {
        "warmup": Stage("warmup", ("connector",), "captions",
                        "InternVL 2.5 §4.2 stage 1: MLP warm-up, connector only, on captions"),
        "full": Stage("full", PARTS, "qa", "InternVL 2.5 §4.2 stage 2: full model instruction tuning"),
        "scratch": _SCRATCH,
    },
}


def system_name(config: Any) -> str:
    """``"llava"`` or ``"internvl"`` for a model's config (the stage tables' key)."""
    from .internvl.config import InternVLConfig
    from .llava.config import LlavaConfig

    if isinstance(config, LlavaConfig):
        return "llava"
    if isinstance(config, InternVLConfig):
        return "internvl"
    raise ValueError(f"expected a LlavaConfig or InternVLConfig, got {type(config).__name__}")


def get_stage(config: Any, stage: str | Stage) -> Stage:
    if isinstance(stage, Stage):
        return stage
    table = STAGES[system_name(config)]
    if stage not in table:
        raise ValueError(f"unknown stage {stage!r} for {system_name(config)}; expected one of {tuple(table)}")
    return table[stage]


def model_parts(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The parameters of each part: ``vision`` (the tower), ``connector`` (LLaVA's projector and
    LLaVA-NeXT's ``image_newline``; InternVL's ``projector_norm`` and projector), ``language_model``."""
    connector = [*model.projector.parameters()]
    if getattr(model, "projector_norm", None) is not None:
        connector += [*model.projector_norm.parameters()]
    if getattr(model, "image_newline", None) is not None:
        connector.append(model.image_newline)
    return {"vision": [*model.vision.parameters()], "connector": connector,
            "language_model": [*model.language_model.parameters()]}


def freeze_for_stage(model: nn.Module, stage: str | Stage) -> Stage:
    """Set ``requires_grad`` for ``stage``: its parts learn, the others are frozen (tower blocks
    after the one read stay frozen in every stage). Call before the trainer builds its optimizer."""
    stage = get_stage(model.config, stage)
    for name, params in model_parts(model).items():
        for p in params:
            p.requires_grad_(name in stage.trains)
    if "vision" in stage.trains:
        model.freeze_unread_blocks()
    return stage


def check_stage(model: nn.Module, stage: Stage) -> None:
    """A one-line error unless the trainable parts are exactly ``stage.trains``."""
    for name, params in model_parts(model).items():
        grads = {p.requires_grad for p in params}
        if (True in grads) != (name in stage.trains):
            raise ValueError(f"stage {stage.name!r} trains {stage.trains}, but the {name} is "
                             f"{'trainable' if True in grads else 'frozen'}; call freeze_for_stage(model, "
                             f"{stage.name!r}) before building the trainer")


# ---------------------------------------------------------------------------------------------
# Images -> views, views -> image tokens
# ---------------------------------------------------------------------------------------------


def tiling_settings(config: Any, max_tiles: int) -> Any:
    """InternVL's dynamic tiling (1.5 §3.2) for the world: ``tile`` the tower's side, up to
    ``max_tiles`` tiles plus the thumbnail, the tower's statistics; ``max_tiles=1``: the whole image
    squashed into one tile."""
    from .internvl.preprocess import TilingSettings

    v = config.vision
    return TilingSettings(tile=v.image_size, min_tiles=1, max_tiles=max_tiles, mean=v.image_mean, std=v.image_std)


def as_uint8(image: Tensor) -> np.ndarray:
    """``[3, H, W]`` in [0, 1] -> ``uint8 [H, W, 3]`` (what the PIL-based processors read)."""
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def image_views(config: Any, image: Tensor, tiling: Any = None) -> Tensor:
    """One world image ``[3, H, W]`` in [0, 1] -> the tower's views ``[n, 3, S, S]``: LLaVA-NeXT's
    base view and anyres tiles; with InternVL ``tiling`` (``TilingSettings``), its tiles (and
    thumbnail); otherwise the image resized to ``S x S`` and normalised (LLaVA-1.5, one InternVL tile)."""
    v = config.vision
    if getattr(config, "grid_pinpoints", None) is not None:
        from .llava.preprocess import AnyresSettings, anyres_tiles

        s = AnyresSettings(size=v.image_size, crop=(v.image_size, v.image_size), grid_pinpoints=config.grid_pinpoints,
                           mean=v.image_mean, std=v.image_std)
        return anyres_tiles(as_uint8(image), s)
    if tiling is not None:
        from .internvl.preprocess import tile_image

        return tile_image(as_uint8(image), tiling)
    return normalise(resize_square(image, v.image_size), v.image_mean, v.image_std)[None]


def image_token_count(config: Any, views: int, image_hw: tuple[int, int]) -> int:
    """How many image placeholders ``views`` views of an image of ``image_hw`` become."""
    if getattr(config, "grid_pinpoints", None) is not None:
        from .llava.preprocess import anyres_token_count

        v = config.vision
        return anyres_token_count(image_hw, tile=v.image_size, patch=v.patch, pinpoints=config.grid_pinpoints)
    return views * config.tokens_per_tile


def wide_image(image: Tensor, *, background: float, noise: float, slot: int, slots: int = 2,
               generator: np.random.Generator) -> Tensor:
    """A wide scene ``[3, H, slots * W]``: ``image`` in the ``slot``-th of ``slots`` side-by-side
    squares, the others the scene's empty background (its grey level and pixel noise)."""
    if not 0 <= slot < slots:
        raise ValueError(f"slot: expected 0..{slots - 1}, got {slot}")
    _, h, w = image.shape
    empty = np.clip(background + generator.normal(0.0, noise, (3, h, w * (slots - 1))), 0.0, 1.0).astype(np.float32)
    empty = torch.from_numpy(empty)
    return torch.cat([empty[..., : slot * w], image, empty[..., slot * w :]], dim=2)


# ---------------------------------------------------------------------------------------------
# Questions
# ---------------------------------------------------------------------------------------------


def question_kind(question: str, objects: Sequence[dict] | None = None) -> str | None:
    """The kind of one of the world's questions (:data:`KINDS`), or ``None`` for the others (size,
    texture, position, relations, per-colour counts). With the scene's ``objects``, only questions
    about the main object (``objects[0]``) and the object count have a kind."""
    if question == "how many objects are there?":
        return "count"
    if question.startswith("is there a "):
        return "exists"
    main = objects[0] if objects else None
    if question.startswith("what colour is the "):
        return "colour" if main is None or question == f"what colour is the {main['shape']}?" else None
    if question.startswith("what shape is the "):
        return "shape" if main is None or question == f"what shape is the {main['colour']} object?" else None
    return None


def check_tokens(config: Any) -> None:
    """The world task's byte tokens use ids 0..258; the image placeholder must be another id."""
    tok = ByteTokenizer()
    if config.image_token_id < tok.vocab_size or config.text.vocab_size <= config.image_token_id:
        raise ValueError(f"the world task needs byte tokens 0..{tok.vocab_size - 1} and an image token outside them "
                         f"(< vocab_size); got image_token_id={config.image_token_id}, vocab_size="
                         f"{config.text.vocab_size} (use the 'tiny-world' preset)")


# ---------------------------------------------------------------------------------------------
# What is asked about which scenes
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Questions:
    """Scenes drawn from ``world`` and the kinds of question (:data:`KINDS`) asked about them."""

    world: WorldConfig = field(default_factory=WorldConfig)
    kinds: tuple[str, ...] = EVAL_KINDS

    def __post_init__(self) -> None:
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise ValueError(f"Questions.kinds: expected some of {KINDS}, got {self.kinds}")


#: The world task's questions: the main object's colour and shape in one-object scenes (no other
#: object to tell it from, so a question names the held-out pair's other half only), and the object
#: count of scenes with one to three objects.
WORLD_QUESTIONS: tuple[Questions, ...] = (
    Questions(WorldConfig(max_objects=1), ("colour", "shape")),
    Questions(WorldConfig(max_objects=3), ("count",)),
)


# ---------------------------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------------------------


class WorldVLMData(Dataset):
    """World scenes as vision-language samples for ``data`` (``"captions"``, ``"qa"`` or ``"both"``:
    every other scene a caption). A sample: ``tokens [L]``, ``labels [L]`` (the next token where it is
    a target, :data:`IGNORE` elsewhere), ``pixels [n, 3, S, S]`` (the image's views) and
    ``image_size`` (its height, width).

    QA samples are multi-turn conversations (LLaVA §3, Table 2): up to ``turns`` of the scene's
    questions of ``questions.kinds``, in a random order, the image with the first; ``question_first``
    is the probability that the first question precedes the image (LLaVA §4.1 draws either order).
    ``wide``: the fraction of scenes made ``slots``:1 wide (:func:`wide_image`); ``tilings``: InternVL
    tiling settings, one drawn per scene (``None``: one resized view). ``blind``: no image at all (the
    placeholders left out, no pixels), the text-only baseline's data. Each index is a fixed draw;
    ``cache`` keeps every sample once made."""

    def __init__(self, config: Any, questions: Questions = Questions(), *, split: str = "train", seed: int = 0,
                 length: int = 4096, data: str = "qa", turns: int = 3, question_first: float = 0.0,
                 wide: float = 0.0, slots: int = 2, tilings: Sequence[Any] | None = None, blind: bool = False,
                 cache: bool = True) -> None:
        check_tokens(config)
        if data not in DATA:
            raise ValueError(f"data: expected one of {DATA}, got {data!r}")
        if turns < 1:
            raise ValueError(f"turns: expected >= 1, got {turns}")
        if not 0.0 <= question_first <= 1.0:
            raise ValueError(f"question_first: expected a probability in [0, 1], got {question_first}")
        if not 0.0 <= wide <= 1.0 or slots < 2:
            raise ValueError(f"wide: expected a fraction in [0, 1] and slots >= 2, got {wide} and {slots}")
        self.config, self.questions, self.data, self.turns = config, questions, data, turns
        self.question_first, self.wide, self.slots, self.blind, self.seed = question_first, wide, slots, blind, seed
        self.tilings = tuple(tilings) if tilings else None
        world = replace(questions.world, modalities=("image", "caption", "qa"))
        self.scenes = WorldDataset(split, world, seed=seed, length=length)
        self.tok = ByteTokenizer()
        self._cache: dict[int, dict[str, Any]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.scenes)

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng((self.seed, 7, index))

    def views(self, index: int, rng: np.random.Generator) -> tuple[Tensor, tuple[int, int], dict]:
        """Scene ``index``'s image views, the image's (height, width) and the rendered scene."""
        scene = self.scenes.scene(index)
        sample = scene.render()
        image = sample["image"]
        if self.wide and rng.random() < self.wide:
            image = wide_image(image, background=scene.background, noise=scene.config.noise,
                               slot=int(rng.integers(self.slots)), slots=self.slots, generator=rng)
        tiling = self.tilings[int(rng.integers(len(self.tilings)))] if self.tilings else None
        return image_views(self.config, image, tiling), tuple(image.shape[1:]), sample

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        rng = self.rng(index)
        pixels, hw, scene = self.views(index, rng)
        caption = self.data == "captions" or (self.data == "both" and index % 2 == 1)
        if caption:
            turns = [("", scene["caption"])]
        else:
            qa = [(q, a) for q, a in scene["qa"] if question_kind(q) in self.questions.kinds]
            turns = [qa[i] for i in rng.permutation(len(qa))[: self.turns]]
        image = [] if self.blind else [self.config.image_token_id] * image_token_count(self.config, len(pixels), hw)
        after = bool(rng.random() < self.question_first) and not caption
        tokens, targets = [BOS], [IGNORE]
        for i, (question, answer) in enumerate(turns):
            q, a = self.tok.encode(question), self.tok.encode(answer) + [EOS]
            if i == 0:  # the image comes with the first turn, before or after its question
                q = q + image if after else image + q
            tokens += q + a
            targets += [IGNORE] * len(q) + a
        # labels[t] is what position t must predict: the next token, where that one is a target
        item = {"tokens": torch.tensor(tokens), "labels": torch.tensor(targets[1:] + [IGNORE])}
        if not self.blind:
            item["pixels"], item["image_size"] = pixels, torch.tensor(hw)
        if self._cache is not None:
            self._cache[index] = item
        return item


def world_data(config: Any, questions: Sequence[Questions] = WORLD_QUESTIONS, *, length: int = 4096,
               **kwargs: Any) -> Dataset:
    """One :class:`WorldVLMData` per question set (``length`` scenes shared out evenly), concatenated;
    ``kwargs`` go to each."""
    if not questions:
        raise ValueError("questions: expected at least one question set")
    parts = [WorldVLMData(config, q, length=max(1, length // len(questions)), **kwargs) for q in questions]
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)


def pad_tokens(items: list[dict[str, Any]]) -> dict[str, Tensor]:
    """Right-pad each item's ``tokens`` (with ``PAD``) and ``labels`` (with :data:`IGNORE`) to ``[B, L]``."""
    width = max(len(it["tokens"]) for it in items)
    tokens = torch.full((len(items), width), PAD, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    for i, it in enumerate(items):
        tokens[i, : len(it["tokens"])] = it["tokens"]
        labels[i, : len(it["labels"])] = it["labels"]
    return {"tokens": tokens, "labels": labels}


def collate(items: list[dict[str, Any]]) -> dict[str, Tensor]:
    """:func:`pad_tokens`; concatenate the images' views ``[sum n_i, 3, S, S]`` in sample order;
    stack ``image_sizes [B, 2]``."""
    batch = pad_tokens(items)
    if "pixels" in items[0]:
        batch["pixels"] = torch.cat([it["pixels"] for it in items])
        batch["image_sizes"] = torch.stack([it["image_size"] for it in items])
    return batch


# ---------------------------------------------------------------------------------------------
# The loss
# ---------------------------------------------------------------------------------------------


def vlm_loss(model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Mean next-token cross-entropy over the target positions only (``labels != -100``: the answers
    and their ``EOS``, or the caption and its ``EOS``; LLaVA §3 Eq. 3), and the targets' token
    accuracy. A batch without ``pixels`` runs a text-only model (the blind baseline)."""
    tokens, labels = batch["tokens"], batch["labels"]
    if "pixels" in batch:
        sizes = batch["image_sizes"] if getattr(model.config, "grid_pinpoints", None) is not None else None
        logits = model(tokens, pixels=batch["pixels"], image_sizes=sizes)  # [B, L, V]
    else:
        logits = model(tokens)  # [B, L, V]
    target = labels != IGNORE
    loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE)
    correct = (logits.argmax(-1) == labels) & target
    return {"loss": loss, "target_acc": correct.sum().detach() / target.sum().clamp(min=1)}


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VQAItem:
    """One test question: its image's views, the image's (height, width), the question, the expected
    answer and its kind."""

    pixels: Tensor
    image_size: tuple[int, int]
    question: str
    answer: str
    kind: str


def vqa_items(config: Any, questions: Sequence[Questions] = WORLD_QUESTIONS, *, seed: int = 0, n: int = 100,
              split: str = "test", wide: bool = False, slots: int = 2, tiling: Any = None) -> list[VQAItem]:
    """Questions about ``n`` scenes of ``split`` per question set (``"test"``: the main object a
    held-out colour-shape pair): per scene, each question of the set's kinds about its main object
    or its object count. ``wide``: every scene made ``slots``:1 wide; ``tiling``: InternVL's tiling
    settings for its views."""
    items = []
    for qs in questions:
        data = WorldVLMData(config, qs, split=split, seed=seed, length=n, wide=float(wide), slots=slots,
                            tilings=None if tiling is None else [tiling], cache=False)
        for i in range(n):
            pixels, hw, scene = data.views(i, data.rng(i))
            for q, a in scene["qa"]:
                kind = question_kind(q, scene["objects"])
                if kind in qs.kinds:
                    items.append(VQAItem(pixels, hw, q, a, kind))
    return items


def training_answers(questions: Sequence[Questions] = WORLD_QUESTIONS, *, seed: int = 0, n: int = 2000
                     ) -> tuple[dict[str, str], dict[str, str]]:
    """The most frequent answer over ``n`` training scenes per question set: ``(by kind, by exact
    question)``. Answering each question with its kind's is the chance baseline; with its own
    (its kind's when never asked in training) is the best any text-only model can do on that data."""
    by_kind: dict[str, Counter] = {}
    by_question: dict[str, Counter] = {}
    for qs in questions:
        scenes = WorldDataset("train", replace(qs.world, modalities=("qa",)), seed=seed, length=n)
        for i in range(n):
            for q, a in scenes[i]["qa"]:
                kind = question_kind(q)
                if kind in qs.kinds:
                    by_kind.setdefault(kind, Counter())[a] += 1
                    by_question.setdefault(q, Counter())[a] += 1
    top = lambda table: {k: c.most_common(1)[0][0] for k, c in table.items()}  # noqa: E731
    return top(by_kind), top(by_question)


def baseline_accuracy(items: Sequence[VQAItem], questions: Sequence[Questions] = WORLD_QUESTIONS, *,
                      seed: int = 0) -> dict[str, dict[str, float]]:
    """``{"chance": ..., "blind_oracle": ...}``: :func:`score` of answering every item with its kind's
    most frequent training answer, and with its exact question's (:func:`training_answers`)."""
    kind, question = training_answers(questions, seed=seed)
    return {"chance": score(items, [kind[it.kind] == it.answer for it in items]),
            "blind_oracle": score(items, [question.get(it.question, kind[it.kind]) == it.answer for it in items])}


def score(items: Sequence[VQAItem], correct: Sequence[bool]) -> dict[str, float]:
    """Accuracy overall (``"accuracy"``) and per kind (``"<kind>_accuracy"``) of per-item ``correct``."""
    right = [bool(c) for c in correct]
    if len(right) != len(items):
        raise ValueError(f"correct: expected one flag per item ({len(items)}), got {len(right)}")
    out = {"accuracy": sum(right) / max(1, len(right))}
    for kind in dict.fromkeys(it.kind for it in items):
        mine = [r for r, it in zip(right, items, strict=True) if it.kind == kind]
        out[f"{kind}_accuracy"] = sum(mine) / len(mine)
    return out


def prompt_tokens(config: Any, item: VQAItem, *, blind: bool = False, question_first: bool = False) -> list[int]:
    """``BOS``, the image's placeholders and the question (the image after it with ``question_first``;
    none with ``blind``), as the training conversations' first turn."""
    q = ByteTokenizer().encode(item.question)
    if not blind:
        image = [config.image_token_id] * image_token_count(config, len(item.pixels), item.image_size)
        q = q + image if question_first else image + q
    return [BOS] + q


def image_inputs(config: Any, items: Sequence[VQAItem]) -> dict[str, Tensor]:
    """The model's image keywords for ``items`` in order: ``pixels`` (their views concatenated), and
    LLaVA-NeXT's ``image_sizes``."""
    out = {"pixels": torch.cat([it.pixels for it in items])}
    if getattr(config, "grid_pinpoints", None) is not None:
        out["image_sizes"] = torch.tensor([it.image_size for it in items])
    return out


@torch.no_grad()
def exact_match(model: nn.Module, items: Sequence[VQAItem], *, blind: bool = False, question_first: bool = False,
                batch_size: int = 64) -> list[bool]:
    """Whether greedy decoding answers each item exactly (its answer, then ``EOS``), decided in one
    teacher-forced forward: greedy decoding reproduces the answer exactly when, and only when, the
    argmax at every answer position is the answer's next token. (Decoding itself lives in
    :mod:`tatlas.generate`, above this layer; the demos answer through it.) ``blind``: a text-only
    model asked the question alone."""
    config = getattr(model, "config", None)
    tok = ByteTokenizer()
    was_training = model.training
    model.eval()
    out: list[bool] = []
    device = next(model.parameters()).device
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        prompts = [prompt_tokens(config, it, blind=blind, question_first=question_first) for it in chunk]
        answers = [tok.encode(it.answer) + [EOS] for it in chunk]
        batch = collate([{"tokens": torch.tensor(p + a), "labels": torch.tensor([IGNORE] * (len(p) - 1) + a + [IGNORE])}
                         for p, a in zip(prompts, answers, strict=True)])
        tokens, labels = batch["tokens"].to(device), batch["labels"].to(device)
        kwargs = {} if blind else {k: v.to(device) for k, v in image_inputs(config, chunk).items()}
        logits = model(tokens, **kwargs)  # [B, L, V]
        wrong = (logits.argmax(-1) != labels) & (labels != IGNORE)  # [B, L]
        out += (~wrong.any(dim=1)).tolist()
    model.train(was_training)
    return out


def vqa_accuracy(model: nn.Module, items: Sequence[VQAItem], *, blind: bool = False,
                 question_first: bool = False) -> dict[str, float]:
    """:func:`score` of :func:`exact_match`: greedy exact-match accuracy, overall and per kind."""
    return score(items, exact_match(model, items, blind=blind, question_first=question_first))


# ---------------------------------------------------------------------------------------------
# The task
# ---------------------------------------------------------------------------------------------


def make_task(config: Any, seed: int = 0, *, stage: str | Stage = "scratch", blind: bool = False,
              questions: Sequence[Questions] = WORLD_QUESTIONS, length: int = 4096, turns: int = 2,
              question_first: float = 0.0, wide: float = 0.0, slots: int = 2, tilings: Sequence[Any] | None = None,
              eval_n: int = 32, cache: bool = True) -> TrainTask:
    """``stage``'s task (:data:`STAGES`): its data (:func:`world_data`, training split) with
    :func:`vlm_loss`; the loss refuses a model whose trainable parts are not the stage's (call
    :func:`freeze_for_stage` first). ``blind``: the same data with the images left out, for a
    text-only :class:`~tatlas.models.llm.LLM` (the blind baseline). Evaluation: VQA accuracy on
    ``eval_n`` held-out test scenes per question set."""
    stage = get_stage(config, stage)
    data = world_data(config, questions, length=length, seed=seed, data=stage.data, turns=turns,
                      question_first=question_first, wide=wide, slots=slots, tilings=tilings, blind=blind,
                      cache=cache)
    items = functools.lru_cache(maxsize=1)(lambda: vqa_items(config, questions, seed=seed + 1, n=eval_n))
    checked: list[bool] = []

    def loss_fn(model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        if not blind and not checked:
            check_stage(model, stage)
            checked.append(True)
        return vlm_loss(model, batch)

    def evaluate(model: nn.Module) -> dict[str, float]:
        return {f"vqa_{k}": v for k, v in vqa_accuracy(model, items(), blind=blind).items()}

    return TrainTask(train_data=data, loss_fn=loss_fn, eval_fn=evaluate, collate_fn=collate)


def train_task(config: Any, seed: int = 0) -> TrainTask:
    """``tatlas train llava`` / ``tatlas train internvl``: the ``"scratch"`` stage (every part
    trained, as the model is built, on captions and :data:`WORLD_QUESTIONS` mixed)."""
    return make_task(config, seed, stage="scratch")
