"""Objects and scenes: :class:`WorldObject`, :class:`Scene` (each modality rendered on demand) and
:func:`make_scene`, a pure function of ``(seed, split, index)``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .config import (
    COLOURS,
    HARMONICS,
    NUMBER_WORDS,
    OPPOSITE,
    PLURAL,
    RGB,
    SHAPES,
    SHAPE_HEAT,
    SIZES,
    SPLITS,
    TEMPERATURE,
    TEXTURES,
    WorldConfig,
    _GRID,
    _IMU_RATE,
    _MODALITY_STREAM,
    _RADIUS,
    _SPLIT_STREAM,
    _pairs,
)

from .draw import _blur_matrix, _envelope, _sdf, _texture


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
