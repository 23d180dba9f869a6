"""Speech: sentences spoken by eSpeak NG, in-process, from a wheel.

:func:`speech` drives ``libespeak-ng`` 1.52 as shipped by the PyPI package ``espeakng-loader``
(the shared library plus ``espeak-ng-data``: the English dictionary, the eight English accents and
the voice variants of ``voices/!v``) through ``ctypes``: ``espeak_Initialize`` in synchronous mode
(22,050 Hz), voice and prosody set explicitly for every call, ``espeak_Synth`` delivering 16-bit PCM
to a callback. Nothing runs outside the process and nothing needs a system package.

Determinism: the synthesiser keeps static state between utterances (the pitch flutter phase, the
wave generator's phase and sample counters, its noise generator), so the same sentence spoken
twice in one process differs by a few samples. Every call therefore loads a fresh copy of the
library (``dlopen`` after ``dlclose``; about 4 ms, the synthesis itself ~2 ms a sentence): a
sentence's samples depend on its arguments alone, as with one ``espeak-ng`` process per sentence.
The library is global state, so calls are serialised by a lock.

:func:`resample` (libsoxr, high quality) brings the audio to the rate a model hears.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["ESPEAK_RATE", "resample", "speech", "synthesize", "voices"]

ESPEAK_RATE = 22_050  # Hz, libespeak-ng's native output rate
WORDS_PER_MINUTE = (80, 450)  # what eSpeak NG accepts without its speed-up stage
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # return errors instead of calling exit()
_CHARS_UTF8, _ENDPAUSE = 1, 0x1000  # espeak_Synth flags; the espeak-ng program pauses at the end
_EE_OK, _EE_NOT_FOUND = 0, 2
_RATE, _VOLUME, _PITCH, _RANGE, _WORDGAP = 1, 2, 3, 4, 7  # espeak_PARAMETER
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
_LOCK = threading.Lock()


class _Voice(ctypes.Structure):  # espeak_VOICE
    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_void_p), ("identifier", ctypes.c_char_p),
                ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte),
                ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]


@functools.cache
def _paths() -> tuple[str, str]:
    """(library path, data folder) of the ``espeakng-loader`` wheel."""
    try:
        import espeakng_loader
    except ImportError:
        raise RuntimeError("speech needs the package 'espeakng-loader' (pip install espeakng-loader)") from None
    return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()


@contextmanager
def _fresh_library() -> Iterator[ctypes.CDLL]:
    """A newly loaded, initialised ``libespeak-ng`` (its static state at its defaults); unloaded on
    exit. The caller holds :data:`_LOCK`."""
    import _ctypes

    library, data = _paths()
    lib = ctypes.CDLL(library)
    try:
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data.encode(), _INITIALIZE_DONT_EXIT)
        if rate != ESPEAK_RATE:
            raise RuntimeError(f"libespeak-ng did not initialise from {data} (returned {rate}, expected {ESPEAK_RATE})")
        yield lib
    finally:
        lib.espeak_Terminate()
        handle = lib._handle
        del lib
        _ctypes.dlclose(handle)


@functools.cache
def voices() -> dict[str, str]:
    """Voice name -> voice file, for every voice eSpeak NG offers: each file by its own name
    (``"en"``, ``"en-us"``, ``"en-gb-scotland"``, as ``espeak-ng -v`` takes them) and each
    language code by the voice that lists it first (``"en-gb"`` -> ``"gmw/en"``)."""
    by_language: dict[str, tuple[int, str]] = {}
    files: dict[str, str] = {}
    with _LOCK, _fresh_library() as lib:
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        listed = lib.espeak_ListVoices(None)
        i = 0
        while listed[i]:
            v = listed[i].contents
            identifier = v.identifier.decode()
            files[identifier.rsplit("/", 1)[-1].lower()] = identifier
            pos = v.languages  # (priority byte, code, NUL) repeated, then a zero byte
            while (priority := ctypes.string_at(pos, 1)[0]) != 0:
                code = ctypes.string_at(pos + 1)
                by_language[code.decode()] = min(by_language.get(code.decode(), (256, "")), (priority, identifier))
                pos += len(code) + 2
            i += 1
    return {**{code: ident for code, (_, ident) in by_language.items()}, **files}


def _voice_name(voice: str) -> bytes:
    """``"en-gb+f2"`` -> the name ``espeak_SetVoiceByName`` loads (``"gmw/en+f2"``); an unknown
    language or variant is a ``ValueError``."""
    base, _, variant = voice.partition("+")
    known = voices()
    if base not in known:
        raise ValueError(f"voice: expected a language from {sorted(known)[:12]}... (e.g. 'en-us', 'en-gb+f2'), "
                         f"got {voice!r}")
    if variant and not (Path(_paths()[1]) / "voices" / "!v" / variant).is_file():
        variants = sorted(p.name for p in (Path(_paths()[1]) / "voices" / "!v").iterdir())
        raise ValueError(f"voice variant: expected one of {variants}, got {variant!r} in {voice!r}")
    return (known[base] + (f"+{variant}" if variant else "")).encode()


def synthesize(text: str, *, voice: str = "en-us", words_per_minute: int = 175, pitch: int = 50,
               pitch_range: int = 50, volume: int = 100) -> np.ndarray:
    """``text`` spoken by eSpeak NG: int16 ``[S]`` at :data:`ESPEAK_RATE`. ``voice`` is a language
    code with an optional variant (``"en-us"``, ``"en-gb-scotland+m3"``, ``"en+klatt"``);
    ``pitch``/``pitch_range`` 0..99 (50 is the voice's own), ``volume`` 0..200."""
    lo, hi = WORDS_PER_MINUTE
    if not lo <= words_per_minute <= hi:
        raise ValueError(f"words_per_minute: expected {lo}..{hi}, got {words_per_minute}")
    for name, value, top in (("pitch", pitch, 99), ("pitch_range", pitch_range, 99), ("volume", volume, 200)):
        if not 0 <= value <= top:
            raise ValueError(f"{name}: expected 0..{top}, got {value}")
    name = _voice_name(voice)
    chunks: list[np.ndarray] = []

    def receive(samples, n, _events):  # noqa: ANN001  (ctypes callback)
        if n > 0:
            chunks.append(np.ctypeslib.as_array(samples, (n,)).copy())
        return 0  # continue

    callback = _SYNTH_CALLBACK(receive)
    encoded = text.encode("utf-8")
    with _LOCK, _fresh_library() as lib:
        lib.espeak_SetSynthCallback(callback)
        if lib.espeak_SetVoiceByName(name) != _EE_OK:
            raise ValueError(f"voice: eSpeak NG could not load {voice!r}")
        for param, value in ((_RATE, words_per_minute), (_PITCH, pitch), (_RANGE, pitch_range),
                             (_VOLUME, volume), (_WORDGAP, 0)):
            lib.espeak_SetParameter(param, value, 0)
        status = lib.espeak_Synth(encoded, len(encoded) + 1, 0, 0, 0, _CHARS_UTF8 | _ENDPAUSE, None, None)
        if status != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed with status {status} on {text[:60]!r}")
    return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


def speech(text: str, *, sample_rate: int = 16_000, voice: str = "en-us", words_per_minute: int = 160,
           pitch: int = 50) -> Tensor:
    """``text`` spoken by eSpeak NG (:func:`synthesize`), float32 ``[S]`` in [-1, 1] at
    ``sample_rate`` Hz."""
    pcm = synthesize(text, voice=voice, words_per_minute=words_per_minute, pitch=pitch)
    return torch.from_numpy(resample(pcm.astype(np.float32) / 32768.0, ESPEAK_RATE, sample_rate))


def resample(x: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Resample float ``[S]`` from ``orig_rate`` to ``new_rate`` Hz with libsoxr's high-quality
    band-limited resampler (``soxr.resample``, "HQ"). Returns float32 ``[round(S * new / orig)]``.

    (A cheaper windowed-sinc + linear-interpolation resampler left images of the speech band that
    cost Whisper tiny.en whole words on espeak-ng speech.)"""
    import soxr

    if orig_rate <= 0 or new_rate <= 0:
        raise ValueError(f"sample rates: expected positive, got {orig_rate} -> {new_rate}")
    x = np.asarray(x, dtype=np.float32)
    if orig_rate == new_rate or len(x) == 0:
        return x.copy()
    return np.ascontiguousarray(soxr.resample(x, orig_rate, new_rate, quality="HQ"), dtype=np.float32)


def wav_frames(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """``(declared, present)`` frames of a RIFF/WAVE file: what its ``data`` chunk header declares
    and what the file's bytes hold; ``None`` for another format or a header that declares no size
    (streamed WAVs write 0 or 0xFFFFFFFF)."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block_align = 0
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            kind, size = chunk[:4], int.from_bytes(chunk[4:], "little")
            if kind == b"fmt ":
                fmt = f.read(min(size, 64))  # a corrupt size field may state gigabytes: never read it whole
                block_align = int.from_bytes(fmt[12:14], "little") if len(fmt) >= 14 else 0
                f.seek(size - len(fmt) + size % 2, os.SEEK_CUR)
            elif kind == b"data":
                if not block_align or size in (0, 0xFFFFFFFF):
                    return None
                present = os.fstat(f.fileno()).st_size - f.tell()
                return size // block_align, min(size, present) // block_align
            else:
                f.seek(size + size % 2, os.SEEK_CUR)


def noise(kind: str, seconds: float, rms: float, *, seed: int = 0, sample_rate: int = 16_000) -> np.ndarray:
    """``seconds`` of ``"white"`` or ``"pink"`` (1/f power: white noise shaped by 1/sqrt(f) in the
    frequency domain) float32 noise at root-mean-square level ``rms``, seeded: the backgrounds the
    voice-activity tests and benchmark play speech over."""
    if kind not in ("white", "pink"):
        raise ValueError(f"noise kind: expected 'white' or 'pink', got {kind!r}")
    n = int(seconds * sample_rate)
    x = np.random.default_rng(seed).standard_normal(n)
    if kind == "white":
        return (x * rms).astype(np.float32)
    spectrum = np.fft.rfft(x)
    f = np.fft.rfftfreq(n, 1 / sample_rate)
    f[0] = f[1]
    shaped = np.fft.irfft(spectrum / np.sqrt(f), n)
    return (shaped / shaped.std() * rms).astype(np.float32)
