"""Training ImageBind (Girdhar et al. 2023, §3.2 "Binding modalities with images"): every other
modality is aligned to *images* only. For each pair (image ``I``, modality ``M``) the loss is the
symmetric InfoNCE

    L(I, M) = ( CE(q_I k_M^T / tau_M) + CE(k_M q_I^T / tau_M) ) / 2     (the paper's Eq. 1, both ways)

over the batch, and the pairs are (image, text), (image, audio), (image, depth), (image, thermal),
(image, IMU) (:data:`PAIRS`) -- never two non-image modalities together. Alignment between, say,
audio and text is then *emergent* (§4.1): it exists only because both were bound to images.

Temperatures: the model's own postprocessor scales, which are the paper's per-modality
temperatures (App. B): ``1/tau`` = 20 audio, 5 depth, 10 thermal, 5 IMU (fixed), and the text
tower's learnable scale (initialised at 1/0.07, capped at ``max_logit_scale``).

Recipe in miniature (chosen for a one-minute CPU budget): all six encoders are trained *jointly*
from random initialisation. The paper instead starts from a frozen OpenCLIP image/text pair; with
no pretrained tiny CLIP for the world, the image and text towers learn here alongside the others.
To follow the paper after a first image-text run, ``model.encoders["vision"].requires_grad_(False)``
(and ``["text"]``) before training: the trainer's optimiser skips frozen parameters and the loss is
unchanged. The five pair losses are averaged (each pair its own InfoNCE, none between non-image
modalities).

Data: single-object scenes of the embedded world (:mod:`tatlas.data.world`), ``"train"`` split,
rendered once into model inputs (:class:`BindDataset`): CLIP-normalised images, CLIP BPE captions,
64-bin Kaldi log-mel spectrograms of the 1-s sound (:func:`~.preprocess.kaldi_fbank`, zero-padded
to 100 frames), depth, thermal and IMU normalised with fixed statistics measured on the world.
Pairs whose scenes have the same main-object attributes (colour, shape, size, texture) count as
positives of each other (``keys``), as CLIP's task does for repeated captions.

Evaluation (:func:`bind_report`): retrieval between modality pairs on fresh scenes, where a hit is
a gallery item that agrees with the query on every attribute *both* modalities can sense
(:data:`SENSES`: depth shows shape and size, thermal colour and size, the rest all four), with the
exact chance level of that definition; and the embedding arithmetic of §4.4
(:func:`arithmetic_retrieval`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from ...data.world import COLOURS, SHAPES, SIZES, TEXTURES, WorldConfig, WorldDataset
from ...nn import contrastive_accuracy, info_nce
from ...nn.threads import tuned_threads
from ..clip.preprocess import normalise
from ..clip.tokenizer import CLIPTokenizer
from ..spec import TrainTask
from .config import ImageBindConfig
from .preprocess import kaldi_fbank

ANCHOR = "vision"
PAIRS: tuple[tuple[str, str], ...] = tuple((ANCHOR, m) for m in ("text", "audio", "depth", "thermal", "imu"))
BOUND: tuple[str, ...] = tuple(m for _, m in PAIRS)  # the modalities bound to images
ATTRIBUTES: tuple[str, ...] = ("colour", "shape", "size", "texture")
_VOCAB = {"colour": COLOURS, "shape": SHAPES, "size": SIZES, "texture": TEXTURES}
# which main-object attributes each modality's input shows (tatlas.data.world's renderers)
SENSES: dict[str, tuple[str, ...]] = {
    "vision": ATTRIBUTES, "text": ATTRIBUTES, "audio": ATTRIBUTES, "imu": ATTRIBUTES,
    "depth": ("shape", "size"), "thermal": ("colour", "size"),
}
# emergent pairs (never trained together) reported by bind_report: (query, gallery)
EMERGENT: tuple[tuple[str, str], ...] = (("audio", "text"), ("depth", "text"), ("imu", "text"), ("audio", "depth"),
                                         ("thermal", "text"))

# Fixed input statistics, measured on 300 single-object "train" scenes of the default world.
AUDIO_MEAN, AUDIO_STD = -4.65, 3.83  # 64-bin log-mel, padded frames included
DEPTH_MEAN, DEPTH_STD = 0.90, 0.12
THERMAL_MEAN, THERMAL_STD = 0.18, 0.09
IMU_MEAN = (0.0, 0.0, 1.0, 0.0, 0.0, 0.0)  # gravity on the accelerometer's z axis
IMU_STD = (0.24, 0.24, 0.045, 0.13, 0.17, 0.69)

WORLD = WorldConfig(max_objects=1)  # one object a scene: its attributes are the scene's


@functools.lru_cache(maxsize=1)
def world_tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer()


def shared_attributes(a: str, b: str) -> tuple[str, ...]:
    """The attributes both modalities sense: what a match between them must agree on."""
    return tuple(x for x in ATTRIBUTES if x in SENSES[a] and x in SENSES[b])


def audio_features(audio: Tensor, config: ImageBindConfig, sample_rate: int = 16_000) -> Tensor:
    """A sound ``[S]`` -> ``[1, mel_bins, audio_frames]``: mean removed, Kaldi log-mel
    (:func:`kaldi_fbank`), zero-padded at the end or cut to ``audio_frames``, then normalised."""
    fbank = kaldi_fbank(audio - audio.mean(), sample_rate, num_mel_bins=config.mel_bins).T  # [M, T]
    fbank = F.pad(fbank, (0, max(0, config.audio_frames - fbank.shape[1])))[:, :config.audio_frames]
    return ((fbank - AUDIO_MEAN) / AUDIO_STD)[None]


class BindDataset(Dataset):
    """World scenes as ImageBind inputs, one dict per scene: ``vision [3, S, S]``, ``text [T]``,
    ``audio [1, mel_bins, audio_frames]``, ``depth [1, S, S]``, ``thermal [1, S, S]``, ``imu [6, steps]``
    (only the modalities the model has) and ``attributes [4]`` (indices of the main object's colour,
    shape, size, texture). ``cache=True`` keeps every rendered scene (about 60 KB each)."""

    def __init__(self, config: ImageBindConfig, *, split: str = "train", seed: int = 0, length: int = 4096,
                 world: WorldConfig | None = None, cache: bool = True) -> None:
        if config.vocab_size < 49_408:
            raise ValueError(f"the world's captions use the CLIP BPE (49,408 tokens); vocab_size={config.vocab_size}")
        sizes = {"image_size": config.image_size, "depth_size": config.depth_size,
                 "thermal_size": config.thermal_size}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"the world renders image, depth and thermal at one size; got {sizes}")
        world = world or WORLD
        keep = {"vision": "image", "text": "caption", "audio": "audio", "depth": "depth", "thermal": "thermal",
                "imu": "imu"}
        self.modalities = tuple(m for m in config.modalities)
        world = replace(world, image_size=config.image_size, imu_steps=config.imu_steps,
                        modalities=tuple(keep[m] for m in self.modalities))
        self.scenes = WorldDataset(split, world, seed=seed, length=length)
        self.config = config
        self._imu_mean = torch.tensor(IMU_MEAN)[:, None]
        self._imu_std = torch.tensor(IMU_STD)[:, None]
        self._cache: dict[int, dict[str, Tensor]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.scenes)

    def prerender(self) -> BindDataset:
        """Render every scene into the cache now (each op is tiny: with two threads on a busy machine
        every op waits for a time slice and preprocessing was ~100x slower, on a quiet one the second
        thread helps; the loop times itself to pick, :mod:`tatlas.nn.threads`)."""
        if self._cache is None:
            raise ValueError("prerender: this dataset was built with cache=False")
        with tuned_threads("cpu") as tuner:
            for i in range(len(self)):
                tuner.tick()
                self[i]
        return self

    @functools.lru_cache(maxsize=4096)  # noqa: B019  (a few hundred captions, tokenised once)
    def _tokens(self, caption: str) -> Tensor:
        return world_tokenizer()(caption, context_length=self.config.context_length)[0]

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        scene = self.scenes[index]
        main = scene["objects"][0]
        c = self.config
        item: dict[str, Tensor] = {"attributes": torch.tensor([_VOCAB[a].index(main[a]) for a in ATTRIBUTES])}
        for m in self.modalities:
            if m == "vision":
                item[m] = normalise(scene["image"], c.image_mean, c.image_std)
            elif m == "text":
                item[m] = self._tokens(scene["caption"])
            elif m == "audio":
                item[m] = audio_features(scene["audio"], c, self.scenes.config.sample_rate)
            elif m == "depth":
                item[m] = (scene["depth"] - DEPTH_MEAN) / DEPTH_STD
            elif m == "thermal":
                item[m] = (scene["thermal"] - THERMAL_MEAN) / THERMAL_STD
            else:
                item[m] = (scene["imu"] - self._imu_mean) / self._imu_std
        if self._cache is not None:
            self._cache[index] = item
        return item


def collate(items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Stack every key to ``[B, ...]``."""
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def imagebind_loss(model: nn.Module, batch: dict[str, Tensor], *, pairs: tuple[tuple[str, str], ...] = PAIRS
                   ) -> dict[str, Tensor]:
    """The mean over ``pairs`` of symmetric InfoNCE(image, M) with ``M``'s temperature
    (:func:`tatlas.nn.info_nce`: negatives from the global batch under ``torchrun``); scenes with
    equal ``attributes`` are positives of each other. Returns ``loss`` plus ``loss_<M>`` and
    ``acc_<M>`` (in-batch top-1, both directions) per pair. Modalities absent from the batch or the
    model are skipped; every pair has the image as one side."""
    for a, _ in pairs:
        if a != ANCHOR:
            raise ValueError(f"pairs: ImageBind binds every modality to {ANCHOR!r} only, got {a!r} as an anchor")
    keys = batch.get("attributes")
    image = model.encode(ANCHOR, batch[ANCHOR], scale=False).float()  # [B, E] unit
    out: dict[str, Tensor] = {}
    losses = []
    for _, m in pairs:
        if m not in batch or m not in model.encoders:
            continue
        emb = model.encode(m, batch[m], scale=False).float()  # [B, E] unit
        scale = model.logit_scale(m).float()  # 1 / tau_M
        loss = info_nce(image, emb, scale, keys=keys)
        losses.append(loss)
        out[f"loss_{m}"] = loss.detach()
        out[f"acc_{m}"] = contrastive_accuracy(image, emb, scale, keys=keys)
    if not losses:
        raise ValueError(f"batch: expected {ANCHOR!r} and at least one of {BOUND}, got {sorted(batch)}")
    return {"loss": torch.stack(losses).mean(), **out}


# ---------------------------------------------------------------------------------------------
# Evaluation: retrieval and embedding arithmetic
# ---------------------------------------------------------------------------------------------


def _recall(scores: Tensor, matches: Tensor, valid: Tensor, ks: tuple[int, ...]) -> dict[str, float]:
    """Recall@k of ranking each row's ``valid`` columns by ``scores [Q, G]`` (hits: ``matches``),
    and ``chance@k``: a random ranking's expected recall, ``1 - C(V - m, k) / C(V, k)`` per row
    (``V`` valid columns, ``m`` of them hits), averaged. Rows without a valid hit are dropped."""
    matches = matches & valid
    keep = matches.any(1)
    scores, matches, valid = scores[keep].float(), matches[keep], valid[keep]
    order = scores.masked_fill(~valid, -math.inf).argsort(dim=1, descending=True, stable=True)
    ranked = matches.gather(1, order)
    v, m = valid.sum(1).double(), matches.sum(1).double()
    out = {}
    for k in ks:
        miss = torch.ones(len(m), dtype=torch.float64)
        for i in range(k):
            miss = miss * ((v - m - i) / (v - i)).clamp(min=0, max=1).nan_to_num(0.0)
        out[f"r@{k}"] = float(ranked[:, :k].any(1).float().mean()) if len(ranked) else math.nan
        out[f"chance@{k}"] = float(1 - miss.mean()) if len(ranked) else math.nan
    return out


def retrieval_recall(query: Tensor, gallery: Tensor, query_keys: Tensor, gallery_keys: Tensor,
                     ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Recall@k of ranking ``gallery [G, E]`` by dot product with each ``query [Q, E]``, where a
    hit is a gallery item whose keys (``[G, A]``) all equal the query's (``[Q, A]``); queries
    without any matching item are dropped. Returns ``r@k`` and ``chance@k`` (a random ranking's
    expected recall under the same definition) for each ``k``."""
    matches = (query_keys[:, None, :] == gallery_keys[None, :, :]).all(-1)  # [Q, G]
    return _recall(query.float() @ gallery.float().T, matches, torch.ones_like(matches), ks)


def arithmetic_retrieval(image: Tensor, audio: Tensor, gallery: Tensor, attributes: Tensor, *,
                         pairs: int = 256, generator: torch.Generator | None = None,
                         ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Embedding arithmetic (§4.4): the image of scene ``i`` plus the sound of scene ``j`` (a
    different colour *and* a different shape) should retrieve images that combine a property of
    each: ``i``'s shape with ``j``'s colour, or ``i``'s colour with ``j``'s shape (a sum of two
    embeddings cannot say which property comes from which, so both crossings count). The two
    sources' own colour-shape classes are left out of the gallery (either embedding alone finds
    those). ``image, audio, gallery [N, E]`` unit embeddings of the same ``N`` scenes
    (``attributes [N, 4]``, :data:`ATTRIBUTES` order). Returns recall@k of the sum (``sum@k``), of
    the image alone (``image@k``), of the sound alone (``audio@k``) and ``chance@k``, over up to
    ``pairs`` random (i, j) with a target in the gallery."""
    colour, shape = attributes[:, 0], attributes[:, 1]
    differ = (colour[:, None] != colour[None, :]) & (shape[:, None] != shape[None, :])  # [N(i), N(j)]
    candidates = differ.nonzero()
    pick = candidates[torch.randperm(len(candidates), generator=generator)[:pairs]]
    i, j = pick.T if len(pick) else (pick[:, 0], pick[:, 1])
    gc, gs = colour[None, :], shape[None, :]  # gallery [1, G]
    ci, si, cj, sj = colour[i, None], shape[i, None], colour[j, None], shape[j, None]  # [P, 1]
    valid = ~(((gc == ci) & (gs == si)) | ((gc == cj) & (gs == sj)))  # [P, G] not a source class
    matches = ((gc == cj) & (gs == si)) | ((gc == ci) & (gs == sj))  # [P, G] a crossing
    queries = {"sum": F.normalize(image[i].float(), dim=-1) + F.normalize(audio[j].float(), dim=-1),
               "image": image[i].float(), "audio": audio[j].float()}
    out: dict[str, float] = {}
    for name, q in queries.items():
        r = _recall(q @ gallery.float().T, matches, valid, ks)
        for k in ks:
            out[f"{name}@{k}"] = r[f"r@{k}"]
            out[f"chance@{k}"] = r[f"chance@{k}"]
    out["pairs"] = float((matches & valid).any(1).sum())
    if out["pairs"] == 0:
        raise ValueError("arithmetic_retrieval: no (image, sound) pair has a target scene in the gallery")
    return out


@torch.no_grad()
def embed(model: nn.Module, data: BindDataset, *, batch_size: int = 256) -> tuple[dict[str, Tensor], Tensor]:
    """Unit embeddings ``{modality: [N, E]}`` of every scene of ``data``, and ``attributes [N, 4]``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    chunks: dict[str, list[Tensor]] = {}
    attrs = []
    for start in range(0, len(data), batch_size):
        batch = collate([data[i] for i in range(start, min(len(data), start + batch_size))])
        attrs.append(batch.pop("attributes"))
        for m, x in batch.items():
            chunks.setdefault(m, []).append(model.encode(m, x.to(device), scale=False).float().cpu())
    model.train(was_training)
    return {m: torch.cat(v) for m, v in chunks.items()}, torch.cat(attrs)


def _distinct(emb: Tensor, keys: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
    """Keep the first scene of each distinct caption (``tokens [N, T]``)."""
    _, inverse = torch.unique(tokens, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), len(inverse), dtype=torch.long)
    first = first.scatter_reduce(0, inverse, torch.arange(len(inverse)), reduce="amin")
    return emb[first], keys[first]


@dataclass(frozen=True)
class BindReport:
    """Retrieval on fresh scenes: ``retrieval[(query, gallery)] = {"r@1", "chance@1", "r@5", ...}``
    (text galleries hold distinct captions), ``emergent`` the pairs never trained together,
    ``arithmetic`` :func:`arithmetic_retrieval`'s numbers, ``n`` scenes."""

    retrieval: dict[tuple[str, str], dict[str, float]]
    emergent: tuple[tuple[str, str], ...]
    arithmetic: dict[str, float]
    n: int

    def mean_emergent(self, key: str = "r@1", pairs: tuple[tuple[str, str], ...] | None = None) -> float:
        pairs = pairs or self.emergent
        return sum(self.retrieval[p][key] for p in pairs) / len(pairs)


@torch.no_grad()
def bind_report(model: nn.Module, *, seed: int = 0, n: int = 512, split: str = "train",
                world: WorldConfig | None = None, emergent: tuple[tuple[str, str], ...] = EMERGENT,
                arithmetic_pairs: int = 256, data: BindDataset | None = None) -> BindReport:
    """Retrieval for every trained pair (image -> M) and every ``emergent`` pair on ``n`` fresh
    scenes (seed ``seed + 10_000``, never trained on), and the image + sound arithmetic."""
    data = data or BindDataset(model.config, split=split, seed=seed + 10_000, length=n, world=world).prerender()
    emb, attrs = embed(model, data)
    tokens = collate([data[i] for i in range(len(data))])["text"] if "text" in emb else None
    wanted = [(ANCHOR, m) for m in BOUND if m in emb] + [p for p in emergent if p[0] in emb and p[1] in emb]
    retrieval = {}
    for q, g in wanted:
        idx = torch.tensor([ATTRIBUTES.index(a) for a in shared_attributes(q, g)])
        gallery, gkeys = emb[g], attrs
        if g == "text":
            gallery, gkeys = _distinct(gallery, gkeys, tokens)
        retrieval[(q, g)] = retrieval_recall(emb[q], gallery, attrs[:, idx], gkeys[:, idx])
    arithmetic = {}
    if "audio" in emb:
        gen = torch.Generator().manual_seed(seed)
        arithmetic = arithmetic_retrieval(emb[ANCHOR], emb["audio"], emb[ANCHOR], attrs, pairs=arithmetic_pairs,
                                          generator=gen)
    return BindReport(retrieval=retrieval, emergent=tuple(p for p in emergent if p in retrieval),
                      arithmetic=arithmetic, n=len(data))


def report_metrics(report: BindReport) -> dict[str, float]:
    """A flat ``{name: value}`` view of :class:`BindReport` (R@1 and R@5 per pair, arithmetic)."""
    out = {}
    for (q, g), r in report.retrieval.items():
        for key, value in r.items():
            out[f"{q}->{g}_{key.replace('@', '')}"] = value
    if report.emergent:
        out["emergent_r1"] = report.mean_emergent("r@1")
        out["emergent_chance1"] = report.mean_emergent("chance@1")
    out.update({f"arith_{k.replace('@', '')}": v for k, v in report.arithmetic.items()})
    return out


def make_task(config: ImageBindConfig, seed: int = 0, *, length: int = 4096, world: WorldConfig | None = None,
              eval_n: int = 512, cache: bool = True, pairs: tuple[tuple[str, str], ...] = PAIRS) -> TrainTask:
    """Image-anchored training on ``length`` single-object world scenes (:func:`imagebind_loss`
    over ``pairs``); evaluation is :func:`bind_report` flattened (:func:`report_metrics`)."""
    data = BindDataset(config, split="train", seed=seed, length=length, world=world, cache=cache)

    def evaluate(model: nn.Module) -> dict[str, float]:
        return report_metrics(bind_report(model, seed=seed, n=eval_n, world=world))

    return TrainTask(train_data=data, loss_fn=functools.partial(imagebind_loss, pairs=pairs), eval_fn=evaluate,
                     collate_fn=collate)


def train_task(config: ImageBindConfig, seed: int = 0) -> TrainTask:
    """``tatlas train imagebind``: :func:`make_task` with its defaults."""
    return make_task(config, seed)
