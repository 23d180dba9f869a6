"""The world: a seeded procedural scene generator rendered in seven modalities.

Every scene holds 1-4 objects placed in distinct cells of a 2x2 layout (so they never overlap).
An object has a shape (:data:`SHAPES`), a colour (:data:`COLOURS`), a size (small/large), a
texture (plain/striped/dotted), a position (its cell, plus jitter) and a depth. One scene is
rendered, lazily and each modality on its own, as

- ``image``   float32 ``[3, H, W]`` in [0, 1]: the objects on a dark noisy background;
- ``depth``   float32 ``[1, H, W]`` in [0, 1]: background far (0.85-1.0, a receding floor),
  objects nearer (0.2-0.65) and domed towards their middle;
- ``thermal`` float32 ``[1, H, W]`` in [0, 1]: a "temperature" per colour plus an offset per shape
  (texture is invisible), Gaussian-blurred, over a cool ambient background;
- ``caption`` ``str``: "a small red circle left of a large striped blue square" (the first two
  objects and their spatial relation; one object: "a small red circle");
- ``qa``      ``list[tuple[str, str]]``: unambiguous questions and answers about the scene;
- ``audio``   float32 ``[sample_rate * audio_seconds]`` at 16 kHz: one tone per object in scene
  order; pitch encodes colour, harmonics (timbre) encode shape, loudness size, tremolo texture;
- ``imu``     float32 ``[6, imu_steps]``: accelerometer (x, y, z in g) and gyroscope (x, y, z) of a
  motion whose direction encodes the main object's colour, its frequency the shape, its
  amplitude the size and a gyro wobble the texture (other objects add weaker components), plus
  noise.

Splits hold out whole colour-shape combinations (:func:`held_out_pairs`): no object of a
``"train"`` scene, and no word of its caption or questions, uses a held-out pair; the first (main,
captioned) object of every ``"test"`` scene does. Scene ``i`` of a dataset is a pure function of
``(seed, split, i)``; each modality draws its noise from its own generator seeded from the same
triple, so the order in which modalities are rendered does not matter.

Spoken sentences come from :mod:`tatlas.data.speech`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "cross")
COLOURS: tuple[str, ...] = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")
SIZES: tuple[str, ...] = ("small", "large")
TEXTURES: tuple[str, ...] = ("plain", "striped", "dotted")
MODALITIES: tuple[str, ...] = ("image", "depth", "thermal", "caption", "qa", "audio", "imu")
SPLITS: tuple[str, ...] = ("train", "test", "all")

RGB: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.12, 0.12),
    "orange": (0.96, 0.55, 0.10),
    "yellow": (0.95, 0.92, 0.15),
    "green": (0.15, 0.75, 0.22),
    "cyan": (0.15, 0.85, 0.92),
    "blue": (0.15, 0.25, 0.92),
    "purple": (0.58, 0.20, 0.82),
    "pink": (0.98, 0.58, 0.78),
}
# Thermal "temperature" in [0, 1]: warm colours hot, cool colours cold; shapes shift it a little.
TEMPERATURE: dict[str, float] = {
    "red": 0.95, "orange": 0.85, "yellow": 0.75, "pink": 0.65,
    "purple": 0.5, "green": 0.42, "blue": 0.3, "cyan": 0.22,
}
SHAPE_HEAT: dict[str, float] = {
    "circle": 0.0, "square": 0.04, "triangle": -0.04, "star": 0.06, "diamond": -0.06, "cross": 0.02,
}
# Timbre: amplitudes of harmonics 1..8 for each shape.
HARMONICS: dict[str, tuple[float, ...]] = {
    "circle": (1.0,),                                                  # pure sine
    "square": (1.0, 0.0, 1 / 3, 0.0, 1 / 5, 0.0, 1 / 7),               # odd harmonics, 1/n
    "triangle": (1.0, 0.0, -1 / 9, 0.0, 1 / 25, 0.0, -1 / 49),         # odd harmonics, 1/n^2
    "star": (1.0, 1 / 2, 1 / 3, 1 / 4, 1 / 5, 1 / 6, 1 / 7, 1 / 8),   # sawtooth: all harmonics
    "diamond": (1.0, 0.7, 0.0, 0.4),                                   # strong 2nd and 4th
    "cross": (0.4, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.6),                 # bright, hollow middle
}
PLURAL: dict[str, str] = {s: s + ("es" if s.endswith(("s", "x", "ch", "sh")) else "s") for s in SHAPES}
NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four")
OPPOSITE: dict[str, str] = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}

_GRID = 2  # objects sit in distinct cells of a _GRID x _GRID layout
_RADIUS = {"small": 0.11, "large": 0.18}  # fraction of the image side
_TEXTURE_SHADE = 0.45  # striped/dotted pattern pixels are this fraction of the colour
_MODALITY_STREAM = {name: k + 1 for k, name in enumerate(MODALITIES)}
_SPLIT_STREAM = {name: k for k, name in enumerate(SPLITS)}
_IMU_RATE = 100.0  # Hz


def _check_names(what: str, got: tuple[str, ...], known: tuple[str, ...], minimum: int) -> None:
    if not isinstance(got, tuple):
        raise ValueError(f"{what}: expected a tuple of names from {known}, got {got!r}")
    unknown = [g for g in got if g not in known]
    if unknown or len(set(got)) != len(got) or len(got) < minimum:
        raise ValueError(
            f"{what}: expected at least {minimum} distinct names from {known}, got {got}"
        )


@dataclass(frozen=True, kw_only=True)
class WorldConfig:
    """What the world draws and which modalities a :class:`WorldDataset` sample carries.

    ``image_size`` is the side ``H = W`` of image, depth and thermal maps (32..224). Scenes hold
    ``min_objects..max_objects`` objects (1..4). ``modalities`` chooses the keys a sample dict
    carries (a CLIP loop passes ``("image", "caption")`` and pays for nothing else).
    """

    image_size: int = 32
    min_objects: int = 1
    max_objects: int = 4
    colours: tuple[str, ...] = COLOURS
    shapes: tuple[str, ...] = SHAPES
    modalities: tuple[str, ...] = MODALITIES
    noise: float = 0.02
    sample_rate: int = 16_000
    audio_seconds: float = 1.0
    imu_steps: int = 200

    def __post_init__(self) -> None:
        if not isinstance(self.image_size, int) or not 32 <= self.image_size <= 224:
            raise ValueError(f"image_size: expected an int in [32, 224], got {self.image_size!r}")
        if not 1 <= self.min_objects <= _GRID * _GRID:
            raise ValueError(f"min_objects: expected 1..{_GRID * _GRID}, got {self.min_objects}")
        if not self.min_objects <= self.max_objects <= _GRID * _GRID:
            raise ValueError(
                f"max_objects: expected {self.min_objects}..{_GRID * _GRID} (>= min_objects), "
                f"got {self.max_objects}"
            )
        _check_names("colours", self.colours, COLOURS, 2)
        _check_names("shapes", self.shapes, SHAPES, 2)
        _check_names("modalities", self.modalities, MODALITIES, 0)
        if not self.noise >= 0:
            raise ValueError(f"noise: expected >= 0, got {self.noise}")
        if not (self.sample_rate > 0 and self.audio_seconds > 0):
            raise ValueError(
                f"audio: expected sample_rate > 0 and audio_seconds > 0, "
                f"got {self.sample_rate} and {self.audio_seconds}"
            )
        if self.imu_steps < 2:
            raise ValueError(f"imu_steps: expected >= 2, got {self.imu_steps}")

    @property
    def audio_samples(self) -> int:
        return int(round(self.sample_rate * self.audio_seconds))


# ---------------------------------------------------------------------------------------------
# Colour-shape combinations and the held-out split
# ---------------------------------------------------------------------------------------------


def combinations(config: WorldConfig | None = None) -> list[tuple[str, str]]:
    """Every (colour, shape) pair, colour-major; a scene's ``label`` indexes this list."""
    return list(_pairs(config or WorldConfig())[0])


def held_out_pairs(config: WorldConfig | None = None) -> tuple[tuple[str, str], ...]:
    """The (colour, shape) pairs that only ``"test"`` scenes show: one per colour.

    Colour ``k`` (in ``config.colours`` order) is held out with shape ``(5 k + 2) mod S``, so
    every colour and every shape still appears in training with other partners. With the
    default 8 colours x 6 shapes this holds out 8 of 48 pairs (16.7 %).
    """
    return _pairs(config or WorldConfig())[1]


def train_pairs(config: WorldConfig | None = None) -> tuple[tuple[str, str], ...]:
    """The (colour, shape) pairs that ``"train"`` scenes may use: all but :func:`held_out_pairs`."""
    return _pairs(config or WorldConfig())[2]


@functools.lru_cache(maxsize=64)
def _pairs(config: WorldConfig) -> tuple[tuple[tuple[str, str], ...], ...]:
    """(all pairs, held-out pairs, training pairs) for ``config``; cached, immutable."""
    every = tuple((c, s) for c in config.colours for s in config.shapes)
    n_shapes = len(config.shapes)
    held = tuple((c, config.shapes[(5 * k + 2) % n_shapes]) for k, c in enumerate(config.colours))
    return every, held, tuple(p for p in every if p not in held)


# ---------------------------------------------------------------------------------------------
# Objects and scenes
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class WorldObject:
    """One object. ``x``, ``y`` (centre) and ``radius`` are fractions of the image side;
    ``row``/``col`` its cell in the 2x2 layout; ``depth`` in [0.2, 0.65] (smaller is nearer)."""

    shape: str
    colour: str
    size: str
    texture: str
    x: float
    y: float
    radius: float
    depth: float
    row: int
    col: int
    rgb: tuple[float, float, float]
    phase: float

    @property
    def horizontal(self) -> str:
        return "left" if self.col == 0 else "right"

    @property
    def vertical(self) -> str:
        return "top" if self.row == 0 else "bottom"

    def as_dict(self) -> dict[str, Any]:
        return {
            "shape": self.shape, "colour": self.colour, "size": self.size, "texture": self.texture,
            "x": self.x, "y": self.y, "radius": self.radius, "depth": self.depth,
            "row": self.row, "col": self.col, "horizontal": self.horizontal,
            "vertical": self.vertical, "rgb": self.rgb,
        }

    def phrase(self) -> str:
        """``"a small striped red circle"``: size, texture (unless plain), colour, shape."""
        words = [self.size] + ([self.texture] if self.texture != "plain" else []) + [self.colour, self.shape]
        return "a " + " ".join(words)


def relation(a: WorldObject, b: WorldObject) -> str:
    """Where ``a`` is relative to ``b``: "left of", "right of", "above" or "below" (the axis
    with the larger centre offset wins; ties go to the horizontal axis)."""
    dx, dy = a.x - b.x, a.y - b.y
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


@dataclass(frozen=True, kw_only=True, eq=False)
class Scene:
    """One scene: its objects (main object first) and the recipe for every modality.

    Each modality is a method computed on demand; :meth:`render` gathers several into a dict.
    """

    objects: tuple[WorldObject, ...]
    config: WorldConfig
    entropy: tuple[int, ...]
    background: float
    negative: tuple[str, str] | None  # a (colour, shape) absent from the scene, for a "no" question
    label: int
    _masks: dict = field(default_factory=dict, init=False, repr=False)  # per-object coverage, filled on first use

    def _rng(self, modality: str) -> np.random.Generator:
        return np.random.default_rng((*self.entropy, _MODALITY_STREAM[modality]))

    # -- geometry shared by image, depth and thermal ---------------------------------------

    def _coverage(self) -> list[tuple[slice, slice, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Per object: (rows, cols, alpha [h, w], sdf/radius [h, w], local x [w], local y [h, 1])."""
        if "coverage" in self._masks:
            return self._masks["coverage"]
        size = self.config.image_size
        out = []
        for o in self.objects:
            cx, cy, r = o.x * size, o.y * size, o.radius * size
            x0, x1 = max(int(cx - r) - 2, 0), min(int(cx + r) + 3, size)
            y0, y1 = max(int(cy - r) - 2, 0), min(int(cy + r) + 3, size)
            xs = np.arange(x0, x1, dtype=np.float32) + (0.5 - cx)
            ys = (np.arange(y0, y1, dtype=np.float32) + (0.5 - cy))[:, None]
            sdf = _sdf(o.shape, xs, ys, r)
            alpha = np.clip(0.5 - sdf, 0.0, 1.0)
            out.append((slice(y0, y1), slice(x0, x1), alpha, sdf / r, xs, ys))
        self._masks["coverage"] = out
        return out

    # -- modalities ------------------------------------------------------------------------

    def image(self) -> Tensor:
        """RGB image, float32 ``[3, H, W]`` in [0, 1]."""
        size = self.config.image_size
        img = np.empty((3, size, size), dtype=np.float32)
        img[:] = self.background
        for o, (rows, cols, alpha, _, xs, ys) in zip(self.objects, self._coverage()):
            colour = np.asarray(o.rgb, dtype=np.float32)[:, None, None]
            if o.texture != "plain":
                colour = colour * _texture(o.texture, xs, ys, o.radius * size)
            win = img[:, rows, cols]
            win += alpha * (colour - win)
        if self.config.noise > 0:
            img += self._rng("image").normal(0.0, self.config.noise, img.shape).astype(np.float32)
            np.clip(img, 0.0, 1.0, out=img)
        return torch.from_numpy(img)

    def depth(self) -> Tensor:
        """Depth, float32 ``[1, H, W]`` in [0, 1]: 1 is far (background), objects 0.2-0.65."""
        size = self.config.image_size
        floor = np.linspace(1.0, 0.85, size, dtype=np.float32)[:, None]  # top of the image is farther
        dep = np.repeat(floor, size, axis=1)
        for o, (rows, cols, alpha, sdf_r, _, _) in sorted(
            zip(self.objects, self._coverage()), key=lambda t: -t[0].depth
        ):
            surface = o.depth - 0.08 * np.clip(-sdf_r, 0.0, 1.0)  # domed: nearer in the middle
            win = dep[rows, cols]
            win += alpha * (surface - win)
        noise = self._rng("depth").normal(0.0, 0.005, dep.shape).astype(np.float32)
        return torch.from_numpy(np.clip(dep + noise, 0.0, 1.0)[None])

    def thermal(self) -> Tensor:
        """Thermal map, float32 ``[1, H, W]`` in [0, 1]: per-colour/shape heat, blurred."""
        size = self.config.image_size
        ambient = np.linspace(0.12, 0.2, size, dtype=np.float32)[:, None]  # warmer floor nearby
        heat = np.repeat(ambient, size, axis=1)
        for o, (rows, cols, alpha, _, _, _) in zip(self.objects, self._coverage()):
            t = TEMPERATURE[o.colour] + SHAPE_HEAT[o.shape] + (0.03 if o.size == "large" else 0.0)
            win = heat[rows, cols]
            win += alpha * (np.float32(t) - win)
        g = _blur_matrix(size, max(0.75, 0.04 * size))
        heat = g @ heat @ g.T
        heat += self._rng("thermal").normal(0.0, 0.01, heat.shape).astype(np.float32)
        return torch.from_numpy(np.clip(heat, 0.0, 1.0)[None])

    def caption(self) -> str:
        """"a small red circle" or "<main phrase> <relation> <second phrase>"."""
        first = self.objects[0]
        if len(self.objects) == 1:
            return first.phrase()
        second = self.objects[1]
        return f"{first.phrase()} {relation(first, second)} {second.phrase()}"

    def qa(self) -> list[tuple[str, str]]:
        """Question-answer pairs, each unambiguous given the scene (deterministic order)."""
        objs = self.objects
        shapes = [o.shape for o in objs]
        colours = [o.colour for o in objs]
        pairs_in_scene = [(o.colour, o.shape) for o in objs]
        qa = [("how many objects are there?", NUMBER_WORDS[len(objs)])]
        for o in objs:
            if shapes.count(o.shape) == 1:
                qa.append((f"what colour is the {o.shape}?", o.colour))
            if colours.count(o.colour) == 1:
                qa.append((f"what shape is the {o.colour} object?", o.shape))
            if pairs_in_scene.count((o.colour, o.shape)) == 1:
                name = f"{o.colour} {o.shape}"
                qa.append((f"what size is the {name}?", o.size))
                qa.append((f"what texture is the {name}?", o.texture))
                qa.append((f"where is the {name}?", f"{o.vertical} {o.horizontal}"))
        main = objs[0]
        qa.append((f"is there a {main.colour} {main.shape}?", "yes"))
        if self.negative is not None:
            qa.append((f"is there a {self.negative[0]} {self.negative[1]}?", "no"))
        for c in dict.fromkeys(colours):
            qa.append((f"how many {c} objects are there?", NUMBER_WORDS[colours.count(c)]))
        for s in dict.fromkeys(shapes):
            qa.append((f"how many {PLURAL[s]} are there?", NUMBER_WORDS[shapes.count(s)]))
        if len(objs) >= 2 and all(pairs_in_scene.count(p) == 1 for p in pairs_in_scene[:2]):
            a, b = objs[0], objs[1]
            rel = relation(a, b)
            an, bn = f"{a.colour} {a.shape}", f"{b.colour} {b.shape}"
            qa.append((f"is the {an} {rel} the {bn}?", "yes"))
            qa.append((f"is the {an} {OPPOSITE[rel]} the {bn}?", "no"))
        return qa

    def audio(self) -> Tensor:
        """Sound, float32 ``[sample_rate * audio_seconds]`` in [-1, 1]: one tone per object."""
        cfg = self.config
        n_total = cfg.audio_samples
        out = np.zeros(n_total, dtype=np.float32)
        seg = n_total // len(self.objects)
        t = np.arange(seg, dtype=np.float32) / cfg.sample_rate
        env = _envelope(seg, cfg.sample_rate)
        for k, o in enumerate(self.objects):
            f0 = 220.0 * 2.0 ** (3 * COLOURS.index(o.colour) / 12)  # minor thirds from A3
            amps = np.asarray(HARMONICS[o.shape], dtype=np.float32)
            h = np.arange(1, len(amps) + 1, dtype=np.float32)
            amps = np.where(h * f0 < 0.45 * cfg.sample_rate, amps, 0.0)  # nothing above Nyquist
            phase = (2 * np.pi * f0) * t + o.phase
            tone = amps @ np.sin(h[:, None] * phase[None, :])
            tone /= np.abs(amps).sum()
            if o.texture == "striped":  # tremolo
                tone *= 0.6 + 0.4 * np.sin(2 * np.pi * 8.0 * t)
            elif o.texture == "dotted":  # pulses
                tone *= (np.sin(2 * np.pi * 6.0 * t) > -0.3).astype(np.float32)
            loud = 0.8 if o.size == "large" else 0.4
            out[k * seg:(k + 1) * seg] = loud * env * tone
        out += self._rng("audio").normal(0.0, 0.003, n_total).astype(np.float32)
        return torch.from_numpy(np.clip(out, -1.0, 1.0))

    def imu(self) -> Tensor:
        """Motion, float32 ``[6, imu_steps]`` at 100 Hz: accelerometer x, y, z (g), gyro x, y, z."""
        cfg = self.config
        t = np.arange(cfg.imu_steps, dtype=np.float32) / _IMU_RATE
        sig = np.zeros((6, cfg.imu_steps), dtype=np.float32)
        sig[2] = 1.0  # gravity
        for k, o in enumerate(self.objects):
            w = 1.0 if k == 0 else 0.25
            theta = 2 * np.pi * COLOURS.index(o.colour) / len(COLOURS)  # direction: colour
            freq = 0.5 + 0.5 * SHAPES.index(o.shape)  # Hz: shape
            amp = w * (0.6 if o.size == "large" else 0.3)  # amplitude: size
            phase = 2 * np.pi * freq * t + o.phase
            s = np.sin(phase)
            sig[0] += amp * np.cos(theta) * s
            sig[1] += amp * np.sin(theta) * s
            sig[2] += 0.1 * amp * np.cos(2 * phase)
            sig[5] += amp * freq * np.cos(phase)
            if o.texture == "striped":  # roll wobble
                sig[3] += w * 0.3 * np.sin(2 * np.pi * 3.0 * t)
            elif o.texture == "dotted":  # pitch jerks
                sig[4] += w * 0.3 * np.sign(np.sin(2 * np.pi * 2.0 * t))
        sig += self._rng("imu").normal(0.0, 0.03, sig.shape).astype(np.float32)
        return torch.from_numpy(sig)

    def render(self, modalities: tuple[str, ...] | None = None) -> dict[str, Any]:
        """A sample dict: the chosen modalities (default: the config's) plus ``objects`` (list of
        :meth:`WorldObject.as_dict`) and ``label`` (index of the main object's pair in
        :func:`combinations`)."""
        mods = self.config.modalities if modalities is None else modalities
        sample: dict[str, Any] = {m: getattr(self, m)() for m in mods}
        sample["objects"] = [o.as_dict() for o in self.objects]
        sample["label"] = self.label
        return sample


def make_scene(config: WorldConfig, *, seed: int, split: str, index: int) -> Scene:
    """Scene ``index`` of ``split``: a pure function of ``(seed, split, index)`` and ``config``."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    entropy = (int(seed) & 0xFFFFFFFFFFFFFFFF, _SPLIT_STREAM[split], int(index))
    rng = np.random.default_rng(entropy)
    combos, held, seen = _pairs(config)
    if split == "all":
        main_pool = other_pool = combos
    else:
        other_pool = seen
        main_pool = seen if split == "train" else held

    n = int(rng.integers(config.min_objects, config.max_objects + 1))
    cells = rng.permutation(_GRID * _GRID)[:n]
    u = rng.random((n, 7))
    jitter = rng.uniform(-0.05, 0.05, (n, 3))
    extra = rng.random(2)

    cell = 1.0 / _GRID
    objects = []
    for k in range(n):
        pool = main_pool if k == 0 else other_pool
        colour, shape = pool[int(u[k, 0] * len(pool))]
        size = SIZES[int(u[k, 1] * len(SIZES))]
        texture = TEXTURES[int(u[k, 2] * len(TEXTURES))]
        row, col = divmod(int(cells[k]), _GRID)
        radius = _RADIUS[size]
        slack = max(cell / 2 - radius - 1.0 / config.image_size, 0.0)  # stay inside the cell
        rgb = tuple(float(v) for v in np.clip(np.asarray(RGB[colour]) + jitter[k], 0.0, 1.0))
        objects.append(WorldObject(
            shape=shape, colour=colour, size=size, texture=texture,
            x=float((col + 0.5) * cell + (2 * u[k, 3] - 1) * slack),
            y=float((row + 0.5) * cell + (2 * u[k, 4] - 1) * slack),
            radius=radius, depth=float(0.2 + 0.45 * u[k, 5]), row=row, col=col,
            rgb=rgb, phase=float(2 * np.pi * u[k, 6]),
        ))
    present = {(o.colour, o.shape) for o in objects}
    absent = [p for p in other_pool if p not in present]
    negative = absent[int(extra[0] * len(absent))] if absent else None
    main = objects[0]
    return Scene(
        objects=tuple(objects), config=config, entropy=entropy,
        background=float(0.06 + 0.14 * extra[1]), negative=negative,
        label=combos.index((main.colour, main.shape)),
    )


# ---------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------


class WorldDataset(Dataset):
    """Procedural scenes of the world, generated on the fly.

    ``split``: ``"train"`` (no held-out pair anywhere), ``"test"`` (main object always a
    held-out pair, the others training pairs) or ``"all"`` (any pair). ``length`` scenes.

    Sample (a dict; only the modalities in ``config.modalities`` are present)::

        image    float32 [3, H, W] in [0, 1]
        depth    float32 [1, H, W] in [0, 1]
        thermal  float32 [1, H, W] in [0, 1]
        caption  str
        qa       list[tuple[str, str]]
        audio    float32 [sample_rate * audio_seconds]
        imu      float32 [6, imu_steps]
        objects  list[dict]   shape, colour, size, texture, x, y, radius, depth, row, col,
                              horizontal, vertical, rgb  (main object first)
        label    int          index of (main colour, main shape) in :func:`combinations`

    Batch with :func:`collate_scenes` (objects and qa vary in length per scene).
    """

    def __init__(
        self, split: str = "train", config: WorldConfig | None = None, seed: int = 0, length: int = 10_000
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
        if length < 1:
            raise ValueError(f"length: expected >= 1 scenes, got {length}")
        self.split = split
        self.config = config or WorldConfig()
        self.seed = seed
        self.length = length

    def __len__(self) -> int:
        return self.length

    def scene(self, index: int) -> Scene:
        if not -self.length <= index < self.length:
            raise IndexError(f"scene index: expected in [{-self.length}, {self.length}), got {index}")
        return make_scene(self.config, seed=self.seed, split=self.split, index=index % self.length)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.scene(index).render()

    @property
    def classes(self) -> list[tuple[str, str]]:
        """The (colour, shape) pair of each label."""
        return combinations(self.config)

    @property
    def class_names(self) -> list[str]:
        """``"red circle"`` etc., one per label (for zero-shot prompts)."""
        return [f"{c} {s}" for c, s in self.classes]


def collate_scenes(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors to ``[B, ...]``, ``label`` to a LongTensor ``[B]``; keep the rest as lists."""
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [b[key] for b in batch]
        if isinstance(values[0], Tensor):
            out[key] = torch.stack(values)
        elif key == "label":
            out[key] = torch.tensor(values, dtype=torch.long)
        else:
            out[key] = values
    return out


# ---------------------------------------------------------------------------------------------
# Rendering helpers
# ---------------------------------------------------------------------------------------------


def _sdf(shape: str, x: np.ndarray, y: np.ndarray, r: float) -> np.ndarray:
    """Signed distance in pixels (negative inside) of ``shape`` with outer radius ``r``.

    ``x`` is ``[w]`` and ``y`` is ``[h, 1]`` (pixel centres relative to the object's centre;
    y grows downwards); the result is ``[h, w]``. Exact for circle, square, diamond and cross,
    close enough near the edge for triangle and star (used only for 1-pixel antialiasing).
    """
    ax, ay = np.abs(x), np.abs(y)
    if shape == "circle":
        return np.sqrt(x * x + y * y) - r
    if shape == "square":
        return np.maximum(ax, ay) - 0.8 * r
    if shape == "diamond":
        return (ax + ay - r) * np.float32(np.sqrt(0.5))
    if shape == "cross":
        w, d = 0.32 * r, 0.92 * r
        return np.minimum(np.maximum(ax - w, ay - d), np.maximum(ax - d, ay - w))
    if shape == "triangle":  # equilateral, pointing up, centred vertically
        yy = y - 0.2 * r
        return np.maximum(yy, 0.8660254 * ax - 0.5 * yy) - 0.55 * r
    if shape == "star":  # five points, one pointing up (Inigo Quilez's exact sdStar5)
        return _star_sdf(x, y, r, inner=0.45)
    raise ValueError(f"shape: expected one of {SHAPES}, got {shape!r}")


def _star_sdf(x: np.ndarray, y: np.ndarray, r: float, *, inner: float) -> np.ndarray:
    """Exact signed distance of a regular five-pointed star (outer radius ``r``, inner
    radius ratio ``inner``): fold the plane into one tenth by two reflections, then measure
    to one edge segment."""
    k1x, k1y = 0.809016994375, -0.587785252292  # (cos 36, -sin 36)
    px = np.abs(np.broadcast_to(x, np.broadcast_shapes(x.shape, y.shape))).astype(np.float32)
    py = np.broadcast_to(-y, px.shape).astype(np.float32)  # y up
    for kx in (k1x, -k1x):
        d = 2.0 * np.maximum(kx * px + k1y * py, 0.0)
        px, py = px - d * kx, py - d * k1y
    px = np.abs(px)
    py = py - r
    bax, bay = -inner * k1y, inner * k1x - 1.0
    h = np.clip((px * bax + py * bay) / (bax * bax + bay * bay), 0.0, r)
    return np.hypot(px - bax * h, py - bay * h) * np.sign(py * bax - px * bay)


def _texture(texture: str, x: np.ndarray, y: np.ndarray, r: float) -> np.ndarray:
    """Shade factor ``[h, w]`` in {_TEXTURE_SHADE, 1} for a striped or dotted pattern."""
    period = max(3.0, 0.6 * r)
    if texture == "striped":  # diagonal bands
        dark = ((x + y) / period) % 1.0 < 0.5
    elif texture == "dotted":  # a lattice of dots
        dx = (x / period) % 1.0 - 0.5
        dy = (y / period) % 1.0 - 0.5
        dark = dx * dx + dy * dy < 0.09
    else:
        raise ValueError(f"texture: expected one of {TEXTURES}, got {texture!r}")
    return np.where(dark, np.float32(_TEXTURE_SHADE), np.float32(1.0))


@functools.lru_cache(maxsize=16)
def _blur_matrix(size: int, sigma: float) -> np.ndarray:
    """``[size, size]`` row-normalised Gaussian blur: ``G @ X @ G.T`` blurs an image ``X``."""
    i = np.arange(size, dtype=np.float32)
    g = np.exp(-0.5 * ((i[:, None] - i[None, :]) / sigma) ** 2)
    g /= g.sum(axis=1, keepdims=True)
    g.setflags(write=False)
    return g


@functools.lru_cache(maxsize=16)
def _envelope(n: int, sample_rate: int) -> np.ndarray:
    """Attack-sustain-release envelope ``[n]`` (10 ms attack, 50 ms release), read-only."""
    env = np.ones(n, dtype=np.float32)
    attack, release = min(int(0.01 * sample_rate), n // 4), min(int(0.05 * sample_rate), n // 4)
    env[:attack] = np.linspace(0.0, 1.0, attack, dtype=np.float32)
    env[n - release:] = np.linspace(1.0, 0.0, release, dtype=np.float32)
    env.setflags(write=False)
    return env
