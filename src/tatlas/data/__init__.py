"""The embedded data: generated on the fly, deterministic by seed, nothing downloaded.

- :mod:`.world`  procedural scenes rendered as image, depth, thermal, caption, question/answer,
  sound and motion, with splits that hold out whole colour-shape combinations;
- :mod:`.text`   a byte-level tokenizer and a language-modelling corpus that ships with CPython;
- :mod:`.digits` scikit-learn's bundled 8x8 handwritten digits;
- :mod:`.speech` sentences spoken by eSpeak NG (the ``espeakng-loader`` wheel, in-process);
- :mod:`.proteins` protein families: self-avoiding Cα chains, a Potts model coupled on their contacts,
  Gibbs-sampled alignments in AlphaFold's alphabet (import it as ``tatlas.data.proteins``).
"""

from .digits import DigitsDataset, split_indices
from .text import BOS, EOS, PAD, ByteTokenizer, TextDataset, corpus_text, corpus_tokens, unigram_cross_entropy
from .world import (
    COLOURS,
    MODALITIES,
    SHAPES,
    SIZES,
    SPLITS,
    TEXTURES,
    Scene,
    WorldConfig,
    WorldDataset,
    WorldObject,
    collate_scenes,
    combinations,
    held_out_pairs,
    make_scene,
    relation,
    train_pairs,
)

from .images import ImageReadError, normalise, open_image, open_rgb, pixel_budget, read_rgb, resize_square, to_rgb

__all__ = [
    "ImageReadError", "normalise", "open_image", "open_rgb", "pixel_budget", "read_rgb", "resize_square", "to_rgb",
    "BOS", "EOS", "PAD", "COLOURS", "MODALITIES", "SHAPES", "SIZES", "SPLITS", "TEXTURES", "ByteTokenizer", "DigitsDataset",
    "Scene", "TextDataset", "WorldConfig", "WorldDataset", "WorldObject", "collate_scenes", "combinations",
    "corpus_text", "corpus_tokens", "held_out_pairs", "make_scene", "relation", "split_indices", "train_pairs",
    "unigram_cross_entropy",
]
