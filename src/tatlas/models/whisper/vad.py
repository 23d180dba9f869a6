"""Voice-activity detection without a model: where in 16 kHz audio someone may be speaking, so
that long-form transcription (:mod:`tatlas.jobs.whisper`) decodes only there and silence or
steady noise gives no text (Whisper hallucinates "you" into silence; Radford et al. 2022 §4.5 use
a no-speech probability instead, which tiny models get wrong). faster-whisper's ``vad_filter``
runs the Silero network for this; here two classic cues, computed per 25-ms frame every 10 ms
(Whisper's own STFT grid), decide instead:

1. **Energy above an adaptive noise floor.** Frame log-energy (dBFS) is smoothed over 50 ms; the
   noise floor at each frame is the minimum of that over a centred ``noise_window`` (minimum
   statistics, Martin 2001: pauses between words reach the floor, speech does not), never below
   ``min_floor_db``. A frame can be speech only ``threshold_db`` or more above its floor, so any
   stationary sound, however loud, is not speech. (A noise that starts abruptly after silence is
   above the floor for up to half a ``noise_window``; the next cue rejects it.)
2. **Spectral flatness** (Gray & Markel 1974; Moattar & Homayounpour 2009 use it for VAD):
   geometric over arithmetic mean of the power spectrum in 100-4,000 Hz. Voiced speech is a
   comb of harmonics (flatness ~0.01-0.1); white noise is ~0.55 and pink ~0.35 per frame. A frame
   can be speech only where the median flatness over 50 ms is ``max_flatness`` or below, so noise
   bursts do not count. (Noise with as steep a spectrum as voiced speech, e.g. brown noise or hum,
   is left to the first cue: steady, it is rejected; starting abruptly, it is not.)

Frames passing both are voiced; regions grow from them as Silero's ``get_speech_timestamps`` does
(thresholds differ, the logic is the usual one): a region ends once no voiced frame has come for
``min_silence_duration`` (the hangover that keeps unvoiced consonants and pauses between words),
regions shorter than ``min_speech_duration`` are dropped (clicks), and each kept region is widened
by ``speech_pad`` on both sides and merged with any it then overlaps.

The features stream block by block (:func:`frame_features`), so hours of audio need memory only
for 2 floats per 10 ms.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from .audio import HOP_LENGTH, N_FFT, SAMPLE_RATE

__all__ = ["VadOptions", "detect_speech", "frame_features", "running_min", "speech_regions", "voiced_frames"]

_BAND = (100.0, 4000.0)  # Hz, where voiced speech has its harmonics
_SMOOTH_FRAMES = 5  # 50 ms: energy is averaged, flatness median-filtered over this many frames
_SILENT_DB = -120.0  # the energy of a frame of zeros


@dataclass(frozen=True, kw_only=True)
class VadOptions:
    """The detector's thresholds (see the module docstring); seconds for durations."""

    threshold_db: float = 12.0  # above the noise floor
    max_flatness: float = 0.25  # of the 100-4,000 Hz power spectrum
    min_floor_db: float = -70.0  # dBFS: the floor of digital silence
    noise_window: float = 10.0  # the floor is the minimum over this many seconds, centred
    min_speech_duration: float = 0.25
    min_silence_duration: float = 1.0  # the hangover
    speech_pad: float = 0.2  # faster-whisper pads 0.4 s; measured on tiny.en, words then start
    # up to 0.4 s early (Whisper's first word starts where the audio does), at no gain in accuracy

    def __post_init__(self) -> None:
        checks = {
            "threshold_db": ("> 0 dB", lambda v: v > 0),
            "max_flatness": ("in (0, 1]", lambda v: 0 < v <= 1),
            "min_floor_db": ("in [-120, 0] dBFS", lambda v: -120 <= v <= 0),
            "noise_window": (">= 0.1 s", lambda v: v >= 0.1),
            "min_speech_duration": (">= 0 s", lambda v: v >= 0),
            "min_silence_duration": (">= 0 s", lambda v: v >= 0),
            "speech_pad": (">= 0 s", lambda v: v >= 0),
        }
        for name, (expected, ok) in checks.items():
            value = getattr(self, name)
            number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            if not number or not ok(value):
                raise ValueError(f"VadOptions.{name}: expected a number {expected}, got {value!r}")


def _frames_of(signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Energy (dBFS) and band flatness of the frames ``signal[160 t : 160 t + 400]`` (Whisper's
    STFT grid, without its centring)."""
    x = torch.from_numpy(np.ascontiguousarray(signal, dtype=np.float32))
    frames = x.unfold(0, N_FFT, HOP_LENGTH)  # [T, 400]
    energy = 10 * torch.log10(frames.square().mean(dim=1).clamp_min(10 ** (_SILENT_DB / 10)))
    spec = torch.stft(x, N_FFT, HOP_LENGTH, window=torch.hann_window(N_FFT), center=False, return_complex=True)
    freqs = torch.fft.rfftfreq(N_FFT, 1 / SAMPLE_RATE)
    band = spec[(freqs >= _BAND[0]) & (freqs <= _BAND[1])].abs().square() + 1e-20  # [F, T]
    flatness = torch.exp(band.log().mean(dim=0)) / band.mean(dim=0)
    return energy.double().numpy(), flatness.double().numpy()


def frame_features(blocks: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray, int]:
    """``(energy_db [T], flatness [T], samples)`` of 16 kHz audio given as consecutive blocks:
    frame ``t`` covers samples ``[160 t, 160 t + 400)`` (the last frames zero-padded)."""
    energies, flatnesses = [], []
    carry = np.zeros(0, dtype=np.float32)
    total = 0
    for block in blocks:
        total += len(block)
        carry = np.concatenate([carry, np.asarray(block, dtype=np.float32)])
        if len(carry) < N_FFT:
            continue
        n = (len(carry) - N_FFT) // HOP_LENGTH + 1
        e, f = _frames_of(carry[: (n - 1) * HOP_LENGTH + N_FFT])
        energies.append(e)
        flatnesses.append(f)
        carry = carry[n * HOP_LENGTH :]
    if len(carry):  # frames that reach past the end
        n = math.ceil(len(carry) / HOP_LENGTH)
        e, f = _frames_of(np.pad(carry, (0, (n - 1) * HOP_LENGTH + N_FFT - len(carry))))
        energies.append(e)
        flatnesses.append(f)
    if not energies:
        return np.zeros(0), np.zeros(0), total
    return np.concatenate(energies), np.concatenate(flatnesses), total


def running_min(x: np.ndarray, width: int) -> np.ndarray:
    """The minimum of ``x [T]`` over a centred window of ``width`` frames, the ends extended by
    their edge values; O(T) whatever the width (van Herk 1992 / Gil & Werman 1993: minima running
    forward and backward within blocks of ``width``, combined at each window)."""
    n = len(x)
    padded = np.pad(x, ((width - 1) // 2, width // 2 + (-(n + width - 1) % width)), mode="edge")
    blocks = padded.reshape(-1, width)
    forward = np.minimum.accumulate(blocks, axis=1).ravel()  # min from its block's start to i
    backward = np.minimum.accumulate(blocks[:, ::-1], axis=1)[:, ::-1].ravel()  # min from i to its block's end
    return np.minimum(backward[:n], forward[width - 1 : width - 1 + n])


def voiced_frames(energy_db: np.ndarray, flatness: np.ndarray, options: VadOptions) -> np.ndarray:
    """Per frame: loud enough above the adaptive noise floor and harmonic enough (bool ``[T]``)."""
    if len(energy_db) == 0:
        return np.zeros(0, dtype=bool)
    kernel = np.ones(_SMOOTH_FRAMES) / _SMOOTH_FRAMES
    smooth = np.convolve(np.pad(energy_db, _SMOOTH_FRAMES // 2, mode="edge"), kernel, mode="valid")  # [T]
    width = max(1, round(options.noise_window * SAMPLE_RATE / HOP_LENGTH))
    floor = np.maximum(running_min(smooth, width), options.min_floor_db)
    half = _SMOOTH_FRAMES // 2
    window = np.lib.stride_tricks.sliding_window_view(np.pad(flatness, half, mode="edge"), _SMOOTH_FRAMES)
    harmonic = np.median(window, axis=1) <= options.max_flatness  # the median over 50 ms
    return (energy_db >= floor + options.threshold_db) & harmonic


def speech_regions(energy_db: np.ndarray, flatness: np.ndarray, samples: int,
                   options: VadOptions) -> list[tuple[int, int]]:
    """Speech as sorted, disjoint ``(start, end)`` sample ranges of audio ``samples`` long, from its
    :func:`frame_features`."""
    voiced = np.flatnonzero(voiced_frames(energy_db, flatness, options))
    if len(voiced) == 0:
        return []
    fps = SAMPLE_RATE / HOP_LENGTH
    gap = max(1, round(options.min_silence_duration * fps))
    breaks = np.flatnonzero(np.diff(voiced) > gap)  # a pause longer than the hangover ends a region
    firsts = voiced[np.concatenate([[0], breaks + 1])]
    lasts = voiced[np.concatenate([breaks, [len(voiced) - 1]])]
    pad = round(options.speech_pad * SAMPLE_RATE)
    regions: list[tuple[int, int]] = []
    for first, last in zip(firsts.tolist(), lasts.tolist(), strict=True):
        start, end = first * HOP_LENGTH, min(last * HOP_LENGTH + N_FFT, samples)
        if end - start < options.min_speech_duration * SAMPLE_RATE:
            continue  # a click, not speech
        start, end = max(0, start - pad), min(samples, end + pad)
        if regions and start <= regions[-1][1]:
            regions[-1] = (regions[-1][0], end)
        else:
            regions.append((start, end))
    return regions


def detect_speech(samples: np.ndarray, options: VadOptions | None = None) -> list[tuple[int, int]]:
    """Speech regions of 16 kHz mono ``samples [S]`` as ``(start, end)`` sample ranges."""
    options = options or VadOptions()
    energy, flatness, total = frame_features([np.asarray(samples, dtype=np.float32)])
    return speech_regions(energy, flatness, total, options)
