"""Fuzzing the audio and image readers (issue #22): WAV, FLAC and OGG files mutated byte by byte
(truncated, bit-flipped, headers stating 2**32 frames), arrays of any dtype, shape and value (NaN,
infinities) through Whisper's ``load_audio``, ``stream_audio`` and ``audio_duration``; PNG, JPEG,
GIF, BMP, TIFF and WebP files mutated the same way, and headers declaring 2**31-pixel sides, through
``open_image`` and ``read_rgb``. The property and the budgets: ``tests/_fuzz.py``."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from _fuzz import fuzz, mutated, refuses_cleanly, rss_budget
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tatlas.data.images import open_image, read_rgb
from tatlas.models.whisper.audio import (
    AudioWindows,
    audio_duration,
    load_audio,
    stream_audio,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sounds() -> dict[str, bytes]:
    import soundfile

    rng = np.random.default_rng(0)
    samples = (0.3 * rng.standard_normal((800, 2))).astype(np.float32)  # 0.1 s of stereo at 8 kHz
    out = {}
    for fmt, subtype in (("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("WAV", "FLOAT")):
        buf = io.BytesIO()
        soundfile.write(buf, samples, 8000, format=fmt, subtype=subtype)
        out[f"{fmt}-{subtype}"] = buf.getvalue()
    return out


_SUFFIX = {"WAV": ".wav", "FLAC": ".flac", "OGG": ".ogg"}


@given(data=st.data())
@fuzz(80)
def test_audio_file_mutated_decodes_or_refuses(sounds, tmp_path_factory, data):
    kind = data.draw(st.sampled_from(sorted(sounds)))
    raw = sounds[kind]
    path = tmp_path_factory.mktemp("case") / f"clip{_SUFFIX[kind.split('-')[0]]}"
    path.write_bytes(data.draw(mutated(raw, hot=64)))
    with rss_budget():
        refuses_cleanly(lambda: audio_duration(path), names=path)
        audio = refuses_cleanly(lambda: load_audio(path), names=path)
        if audio is not None:
            assert audio.dtype == np.float32 and np.isfinite(audio).all()
        refuses_cleanly(lambda: list(stream_audio(path, block_seconds=0.05)), names=path)
        refuses_cleanly(lambda: AudioWindows(path).mel(0, 10), names=path)


@st.composite
def wav_header(draw) -> bytes:
    """A RIFF/WAVE file whose fmt chunk states any channels, rate, bits and block size, and whose data
    chunk declares up to 2**32 - 1 bytes while holding a few."""
    channels = draw(st.sampled_from([0, 1, 2, 255, 65535]))
    rate = draw(st.sampled_from([0, 1, 8000, 16000, 2**31 - 1, 2**32 - 1]))
    bits = draw(st.sampled_from([0, 8, 16, 24, 32, 64, 65535]))
    fmt_tag = draw(st.sampled_from([1, 3, 0, 0xFFFE, 0x55]))
    align = draw(st.sampled_from([0, 2, 4, 65535]))
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, rate * align % 2**32, align, bits)
    payload = draw(st.binary(max_size=64))
    declared = draw(st.sampled_from([len(payload), 0, 2**31, 2**32 - 1]))
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", declared) + payload
    return b"RIFF" + struct.pack("<I", draw(st.sampled_from([len(body), 2**32 - 1]))) + body


@given(raw=wav_header())
@fuzz(60)
def test_wav_header_stating_anything_is_refused_or_read(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("case") / "lying.wav"
    path.write_bytes(raw)
    with rss_budget():
        refuses_cleanly(lambda: load_audio(path), names=path)
        refuses_cleanly(lambda: list(stream_audio(path)), names=path)


_DTYPES = st.sampled_from([np.float32, np.float64, np.float16, np.int16, np.int32, np.uint8, np.int8, np.bool_,
                           np.complex64, np.dtype("U3")])


@given(array=hnp.arrays(_DTYPES, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=40)),
       rate=st.one_of(st.none(), st.integers(-5, 200_000)))
@fuzz(80)
def test_audio_array_of_any_dtype_shape_and_value_is_refused_or_resampled(array, rate):
    audio = refuses_cleanly(lambda: load_audio(array, source_rate=rate))
    if audio is not None:
        assert audio.dtype == np.float32 and audio.ndim == 1 and np.isfinite(audio).all()


@pytest.fixture(scope="module")
def pictures() -> dict[str, bytes]:
    from PIL import Image

    rng = np.random.default_rng(0)
    img = Image.fromarray((rng.random((12, 10, 3)) * 255).astype("uint8"))
    out = {}
    for fmt, mode in (("PNG", "RGBA"), ("JPEG", "RGB"), ("GIF", "P"), ("BMP", "RGB"), ("TIFF", "RGB"), ("WEBP", "RGB"),
                      ("PNG", "L")):
        buf = io.BytesIO()
        img.convert(mode).save(buf, format=fmt)
        out[f"{fmt}-{mode}"] = buf.getvalue()
    return out


@given(data=st.data())
@fuzz(100)
def test_image_file_mutated_decodes_or_refuses(pictures, tmp_path_factory, data):
    kind = data.draw(st.sampled_from(sorted(pictures)))
    path = tmp_path_factory.mktemp("case") / f"picture.{kind.split('-')[0].lower()}"
    path.write_bytes(data.draw(mutated(pictures[kind], hot=96)))
    with rss_budget():
        refuses_cleanly(lambda: open_image(path), names=path)
        pixels = refuses_cleanly(lambda: read_rgb(path), names=path)
        if pixels is not None:
            assert pixels[0].shape[0] == 3 and bool(pixels[0].isfinite().all())


def _png(width: int, height: int, depth: int, color: int, data: bytes) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0))
            + chunk(b"IDAT", data) + chunk(b"IEND", b""))


@given(width=st.sampled_from([0, 1, 7, 30_000, 2**31 - 1, 2**32 - 1]),
       height=st.sampled_from([0, 1, 9, 30_000, 2**31 - 1, 2**32 - 1]),
       depth=st.sampled_from([1, 8, 16, 0, 3]), color=st.sampled_from([0, 2, 3, 4, 6, 1, 7]),
       data=st.one_of(st.binary(max_size=40), st.integers(1, 4_000_000).map(lambda n: zlib.compress(b"\0" * n, 9))))
@fuzz(60)
def test_png_declaring_any_size_with_a_bomb_of_zeros_is_refused_within_budget(tmp_path_factory, width, height, depth,
                                                                              color, data):
    """A PNG header with any side up to 2**32 - 1 over a zlib stream that inflates to megabytes: refused
    by the pixel budget before decoding, or read within the memory budget."""
    path = tmp_path_factory.mktemp("case") / "bomb.png"
    path.write_bytes(_png(width, height, depth, color, data))
    with rss_budget():
        refuses_cleanly(lambda: read_rgb(path), names=path)
