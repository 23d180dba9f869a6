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

Files: :mod:`.config` (vocabulary, :class:`WorldConfig`, held-out pairs), :mod:`.scene` (objects,
scenes, their modalities), :mod:`.draw` (drawing helpers), :mod:`.dataset` (the ``Dataset``).
"""

from .config import (
    COLOURS, HARMONICS, MODALITIES, NUMBER_WORDS, OPPOSITE, PLURAL, RGB, SHAPE_HEAT, SHAPES, SIZES, SPLITS, TEMPERATURE,
    TEXTURES, WorldConfig, combinations, held_out_pairs, train_pairs,
)
from .scene import Scene, WorldObject, make_scene, relation
from .dataset import WorldDataset, collate_scenes

__all__ = [
    "COLOURS",
    "HARMONICS",
    "MODALITIES",
    "NUMBER_WORDS",
    "OPPOSITE",
    "PLURAL",
    "RGB",
    "SHAPES",
    "SHAPE_HEAT",
    "SIZES",
    "SPLITS",
    "Scene",
    "TEMPERATURE",
    "TEXTURES",
    "WorldConfig",
    "WorldDataset",
    "WorldObject",
    "collate_scenes",
    "combinations",
    "held_out_pairs",
    "make_scene",
    "relation",
    "train_pairs",
]
