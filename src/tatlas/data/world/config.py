"""What the world draws: the vocabulary of shapes, colours, sizes and textures and how each
modality encodes them, :class:`WorldConfig`, and the colour-shape pairs held out of training."""

from __future__ import annotations

import functools
from dataclasses import dataclass



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
