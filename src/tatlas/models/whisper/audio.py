"""Whisper's audio front end (Radford et al. 2022, "Robust Speech Recognition via Large-Scale Weak
Supervision", §2.2: "All audio is re-sampled to 16,000 Hz, and an 80-channel log-magnitude Mel
spectrogram representation is computed on 25-millisecond windows with a stride of 10
milliseconds. For feature normalization, we globally scale the input to be between -1 and 1 with
approximately zero mean"; large-v3 uses 128 channels), equal to openai-whisper's
``whisper.audio``.

- :func:`load_audio`: any file ``soundfile`` (libsndfile) reads (WAV, FLAC, OGG/Vorbis, MP3, AIFF
  …), or an array and its rate, mixed to mono (channel mean, as ffmpeg's ``-ac 1``) and
  resampled by ``soxr`` (high quality) to 16 kHz float32. openai-whisper decodes through an
  ``ffmpeg`` subprocess instead; a 16-bit mono 16 kHz WAV reads identically either way.
- :func:`log_mel_spectrogram`: STFT (Hann window of 400 samples, hop 160, reflect-padded at both
  ends, the last frame dropped) -> power -> Mel filters (:func:`mel_filters`: Slaney's scale and
  area normalisation, librosa's ``filters.mel``; computed here, bit-identical to openai's
  ``mel_filters.npz``) -> ``log10(max(x, 1e-10))`` -> floored at (maximum - 8) -> ``(x + 4) / 4``.
  The maximum is over the whole input (per example in a batch).
- Long files in bounded memory: :func:`stream_audio` yields fixed-size 16 kHz blocks, and
  :class:`AudioWindows` gives any run of Mel frames of a file equal to slicing the whole file's
  spectrogram (frames see their true neighbours, and the whole-file maximum comes from a first
  streaming pass) without ever holding the whole file or its spectrogram.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ...data.speech import resample as _resample_hq
from ...data.speech import wav_frames

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
N_FFT = 400  # 25 ms windows
HOP_LENGTH = 160  # 10 ms stride
CHUNK_LENGTH = 30  # seconds of audio per encoder window
N_SAMPLES = CHUNK_LENGTH * SAMPLE_RATE  # 480,000 samples in a window
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3,000 Mel frames in a window
N_SAMPLES_PER_TOKEN = 2 * HOP_LENGTH  # the encoder's second convolution has stride 2
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100: 10 ms per Mel frame
TOKENS_PER_SECOND = SAMPLE_RATE // N_SAMPLES_PER_TOKEN  # 50: 20 ms per encoder position

AudioSource = str | os.PathLike | np.ndarray | Tensor


class AudioError(ValueError):
    """Audio that cannot be used: a missing, empty, unreadable or non-finite file or array."""


# ---------------------------------------------------------------------------------------------
# Reading and resampling
# ---------------------------------------------------------------------------------------------


def _check_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    return path


_TRUNCATION_WARNED: set[tuple[str, int, int]] = set()


def _warn_if_truncated(path: Path) -> None:
    """One warning per file (and version of it) whose WAV header declares more frames than it holds."""
    try:
        frames = wav_frames(path)
    except OSError:
        return
    if frames is None or frames[1] >= frames[0]:
        return
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _TRUNCATION_WARNED:
        _TRUNCATION_WARNED.add(key)
        log.warning("%s: truncated WAV: its header declares %d frames, the file holds %d; transcribing those",
                    path, frames[0], frames[1])


def _open(path: Path):
    import soundfile

    _warn_if_truncated(path)
    try:
        return soundfile.SoundFile(path)
    except (soundfile.SoundFileError, RuntimeError, TypeError, ValueError) as e:
        reason = getattr(e, "error_string", None) or str(e)
        raise AudioError(f"{path}: not a readable audio file ({reason})") from None


def audio_duration(path: str | os.PathLike) -> float:
    """Seconds of audio in a file, from its header (nothing decoded); :class:`AudioError` naming
    the file if it is missing, empty, unreadable or holds no samples."""
    path = _check_file(path)
    with _open(path) as f:
        if f.frames <= 0:
            raise AudioError(f"{path}: no audio samples (0 frames)")
        return f.frames / f.samplerate


def _mono(frames: np.ndarray) -> np.ndarray:
    """``[S, C]`` -> ``[S]`` float32: the channel mean."""
    return frames[:, 0].copy() if frames.shape[1] == 1 else frames.mean(axis=1, dtype=np.float64).astype(np.float32)


def _check_finite(samples: np.ndarray, name: str, rate: int, offset: int = 0) -> None:
    finite = np.isfinite(samples)
    if not finite.all():
        first = offset + int(np.argmin(finite.all(axis=-1) if samples.ndim > 1 else finite))
        raise AudioError(f"{name}: NaN or infinite samples (the first at {first / rate:.2f} s)")


def resample(audio: np.ndarray, orig_rate: int, new_rate: int = SAMPLE_RATE) -> np.ndarray:
    """float ``[S]`` at ``orig_rate`` -> float32 ``[round(S * new_rate / orig_rate)]`` at ``new_rate``
    (libsoxr, high quality: :func:`tatlas.data.speech.resample`)."""
    return _resample_hq(audio, orig_rate, new_rate)


def _array(audio: np.ndarray | Tensor) -> np.ndarray:
    """An in-memory signal -> float32 ``[S, C]``; integer PCM is scaled to [-1, 1) by its type."""
    if isinstance(audio, Tensor):
        audio = audio.detach().cpu().numpy()
    audio = np.asarray(audio)
    if np.issubdtype(audio.dtype, np.integer):
        info = np.iinfo(audio.dtype)
        audio = (audio.astype(np.float64) - (info.max + 1 + info.min) / 2) / ((info.max + 1 - info.min) / 2)
    elif not np.issubdtype(audio.dtype, np.floating):
        raise AudioError(f"audio array: expected float or integer PCM samples, got dtype {audio.dtype}")
    if audio.ndim == 1:
        audio = audio[:, None]
    elif audio.ndim != 2 or audio.shape[1] > audio.shape[0] or audio.shape[1] == 0:
        raise AudioError(
            f"audio array: expected [samples] or [samples, channels] (channels last, as soundfile reads), "
            f"got shape {list(audio.shape)}"
        )
    return audio.astype(np.float32, copy=False)


def load_audio(source: AudioSource, sr: int = SAMPLE_RATE, *, source_rate: int | None = None) -> np.ndarray:
    """An audio file (path) or an array -> mono float32 ``[S]`` at ``sr`` Hz.

    An array is ``[samples]`` or ``[samples, channels]``, float in [-1, 1] (or integer PCM), at
    ``source_rate`` Hz (default: already ``sr``). Raises :class:`AudioError` naming the file for
    a missing, empty, unreadable or non-finite input."""
    if isinstance(source, np.ndarray | Tensor):
        name, rate, frames = "audio array", source_rate if source_rate is not None else sr, _array(source)
    else:
        if source_rate is not None:
            raise ValueError("source_rate: only for arrays; a file's rate is read from the file")
        path = _check_file(source)
        name = str(path)
        with _open(path) as f:
            rate = f.samplerate
            try:
                frames = f.read(dtype="float32", always_2d=True)
            except (RuntimeError, ValueError) as e:
                raise AudioError(f"{path}: cannot decode the audio ({e})") from None
    if frames.shape[0] == 0:
        raise AudioError(f"{name}: no audio samples (0 frames)")
    _check_finite(frames, name, rate)
    return _check_magnitude(resample(_mono(frames), rate, sr), name)


def _check_magnitude(samples: np.ndarray, name: str) -> np.ndarray:
    """Samples that overflowed float32 on the way (finite values near 3e38 mixed or resampled)."""
    if not np.isfinite(samples).all():
        raise AudioError(f"{name}: samples of absurd magnitude (float PCM is in [-1, 1]); they overflow float32")
    return samples


def stream_audio(
    path: str | os.PathLike, sr: int = SAMPLE_RATE, *, block_seconds: float = float(CHUNK_LENGTH),
) -> Iterator[np.ndarray]:
    """A file as consecutive mono float32 blocks ``[round(block_seconds * sr)]`` at ``sr`` Hz (the
    last one shorter), decoding and resampling (``soxr.ResampleStream``) one block at a time, so
    memory stays bounded for hours of audio. Concatenated, equal to :func:`load_audio`."""
    import soxr

    path = _check_file(path)
    block = round(block_seconds * sr)
    if block < 1:
        raise ValueError(f"block_seconds: expected at least one sample at {sr} Hz, got {block_seconds}")
    with _open(path) as f:
        rate = f.samplerate
        stream = soxr.ResampleStream(rate, sr, 1, dtype="float32", quality="HQ") if rate != sr else None
        per_read = max(1, round(block * rate / sr))
        pending: list[np.ndarray] = []
        n_pending = read = 0
        while True:
            try:
                frames = f.read(per_read, dtype="float32", always_2d=True)
            except (RuntimeError, ValueError) as e:
                raise AudioError(f"{path}: cannot decode the audio ({e})") from None
            last = frames.shape[0] < per_read
            _check_finite(frames, str(path), rate, offset=read)
            read += frames.shape[0]
            mono = _mono(frames)
            out = _check_magnitude(stream.resample_chunk(mono, last=last) if stream is not None else mono, str(path))
            if len(out):
                pending.append(out)
                n_pending += len(out)
            if n_pending >= block or (last and n_pending):
                joined = np.concatenate(pending)
                cut = len(joined) if last else len(joined) - len(joined) % block
                yield from (joined[i : i + block] for i in range(0, cut, block))
                pending, n_pending = ([joined[cut:]], len(joined) - cut) if cut < len(joined) else ([], 0)
            if last:
                break
    if read == 0:
        raise AudioError(f"{path}: no audio samples (0 frames)")


def pad_or_trim(array: np.ndarray | Tensor, length: int = N_SAMPLES, *, axis: int = -1) -> np.ndarray | Tensor:
    """Zero-pad or cut ``array`` (numpy or torch) along ``axis`` to ``length`` (the encoder takes
    exactly 30 s: 480,000 samples or 3,000 Mel frames)."""
    size = array.shape[axis]
    if isinstance(array, Tensor):
        if size > length:
            return array.narrow(axis, 0, length)
        if size < length:
            pad = [0, 0] * array.ndim
            pad[2 * (array.ndim - 1 - axis % array.ndim) + 1] = length - size  # F.pad lists the last dim first
            return F.pad(array, pad)
        return array
    if size > length:
        return np.take(array, np.arange(length), axis=axis)
    if size < length:
        widths = [(0, 0)] * array.ndim
        widths[axis] = (0, length - size)
        return np.pad(array, widths)
    return array


# ---------------------------------------------------------------------------------------------
# Log-Mel spectrogram
# ---------------------------------------------------------------------------------------------


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's Mel scale (librosa ``htk=False``): linear below 1 kHz, logarithmic above."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    logstep = np.log(6.4) / 27.0
    hz = np.asarray(hz, dtype=np.float64)
    log_part = min_log_hz / f_sp + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep
    return np.where(hz >= min_log_hz, log_part, hz / f_sp)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    logstep, min_log_mel = np.log(6.4) / 27.0, min_log_hz / f_sp
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


@functools.lru_cache(maxsize=8)
def mel_filterbank(n_mels: int, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT) -> np.ndarray:
    """float32 ``[n_mels, n_fft // 2 + 1]``: triangles on Slaney's Mel scale from 0 Hz to Nyquist,
    each scaled to unit area (``2 / (upper - lower)``), computed as librosa's
    ``filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)`` does; read-only."""
    if n_mels < 1:
        raise ValueError(f"n_mels: expected a positive number of Mel bins, got {n_mels}")
    fft_hz = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)  # [F]
    edges_hz = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2))  # [M + 2]
    widths = np.diff(edges_hz)
    ramps = np.subtract.outer(edges_hz, fft_hz)  # [M + 2, F]
    weights = np.zeros((n_mels, len(fft_hz)), dtype=np.float32)
    for i in range(n_mels):
        rising, falling = -ramps[i] / widths[i], ramps[i + 2] / widths[i + 1]
        weights[i] = np.maximum(0, np.minimum(rising, falling))
    weights *= (2.0 / (edges_hz[2 : n_mels + 2] - edges_hz[:n_mels]))[:, None]
    weights.setflags(write=False)
    return weights


@functools.lru_cache(maxsize=8)
def _filters_on(n_mels: int, device: torch.device) -> Tensor:
    return torch.from_numpy(mel_filterbank(n_mels).copy()).to(device)


def mel_filters(n_mels: int = 80, *, device: torch.device | str | None = None) -> Tensor:
    """Whisper's Mel filterbank, float32 ``[n_mels, 201]`` (80 or 128 bins for real models; any
    positive count works), on ``device``; cached and shared, so not to be modified in place."""
    return _filters_on(n_mels, torch.device(device) if device is not None else torch.device("cpu"))


def _log10_mel(power: Tensor, n_mels: int) -> Tensor:
    """``[*, 201, T]`` STFT power -> ``[*, n_mels, T]`` ``log10(max(mel, 1e-10))``."""
    mel = mel_filters(n_mels, device=power.device) @ power
    return torch.clamp(mel, min=1e-10).log10()


def _normalise(log_mel: Tensor, log_max: Tensor | float) -> Tensor:
    """Floor at ``log_max - 8`` (80 dB of dynamic range), then ``(x + 4) / 4``."""
    return (torch.maximum(log_mel, torch.as_tensor(log_max, dtype=log_mel.dtype) - 8.0) + 4.0) / 4.0


@functools.lru_cache(maxsize=4)
def _hann(device: torch.device) -> Tensor:
    return torch.hann_window(N_FFT, device=device)


def log_mel_spectrogram(
    audio: AudioSource, n_mels: int = 80, padding: int = 0, device: torch.device | str | None = None,
) -> Tensor:
    """16 kHz audio ``[S]`` (or a batch ``[B, S]``; or a file path) -> float32 log-Mel
    ``[n_mels, (S + padding) // 160]`` (``[B, n_mels, ...]``), computed on ``device`` (default:
    where the audio is). ``padding`` zeros are appended first (``transcribe`` appends 30 s so the
    last window is whole). The 80 dB floor is set by each example's own maximum."""
    if isinstance(audio, str | os.PathLike):
        audio = load_audio(audio)
    x = torch.as_tensor(audio)
    if x.ndim not in (1, 2):
        raise ValueError(f"audio: expected samples [S] or a batch [B, S], got shape {list(x.shape)}")
    if padding < 0:
        raise ValueError(f"padding: expected >= 0 samples, got {padding}")
    if x.shape[-1] + padding <= N_FFT // 2:
        raise ValueError(f"audio: expected more than {N_FFT // 2} samples with padding, got {x.shape[-1] + padding}")
    x = x.to(device=device or x.device, dtype=torch.float32)
    frames = (x.shape[-1] + padding) // HOP_LENGTH
    # Frames from `silent` on are centred so far into the appended zeros that their whole window (and
    # the reflection at the end) is zeros: power 0, log-Mel log10(1e-10) exactly. Only the frames
    # before are computed, from the audio and one window of the zeros (a 5-s clip padded with 30 s:
    # 8.5-12.6 -> ~1.5 ms), the rest filled with that floor; the result is bit-identical.
    silent = -(-(x.shape[-1] + N_FFT // 2) // HOP_LENGTH)
    computed = max(silent, 256)  # (at least 256 frames: the Mel product of a few took another summation order)
    if frames > computed:
        head = _log10_mel(_power(F.pad(x, (0, computed * HOP_LENGTH + N_FFT - x.shape[-1]))), n_mels)[..., :silent]
        floor = _log10_mel(head.new_zeros(*head.shape[:-2], N_FFT // 2 + 1, 1), n_mels)
        log_mel = torch.cat([head, floor.expand(*head.shape[:-1], frames - silent)], dim=-1)
    else:
        log_mel = _log10_mel(_power(F.pad(x, (0, padding)) if padding else x), n_mels)
    return _normalise(log_mel, log_mel.amax(dim=(-2, -1), keepdim=True))


def _power(x: Tensor) -> Tensor:
    """16 kHz samples ``[*, S]`` -> STFT power ``[*, 201, S // 160]`` (Hann window of 400, hop 160,
    centred with reflection; the last frame, centred past the end, dropped)."""
    spec = torch.stft(x, N_FFT, HOP_LENGTH, window=_hann(x.device), center=True, pad_mode="reflect",
                      return_complex=True)
    return spec[..., :-1].abs() ** 2


# ---------------------------------------------------------------------------------------------
# Long files: Mel windows in bounded memory
# ---------------------------------------------------------------------------------------------


class _Samples:
    """Forward-only access to ``y`` = a file's 16 kHz samples followed by ``padding`` zeros,
    holding only what lies at or after the last requested start."""

    def __init__(self, path: Path, padding: int, block_seconds: float) -> None:
        self.path, self.padding, self.block_seconds = path, padding, block_seconds
        self._rewind()

    def _rewind(self) -> None:
        self._blocks = stream_audio(self.path, block_seconds=self.block_seconds)
        self._buf = np.zeros(0, dtype=np.float32)  # y[_end - len(_buf) : _end]
        self._end = 0
        self.total: int | None = None  # len(y), once the stream has ended

    def get(self, start: int, stop: int) -> np.ndarray:
        """``y[start:stop]`` (shorter if ``y`` ends first; then :attr:`total` is known). Samples
        before ``start`` are let go; a later ``start`` before this one rereads the file."""
        first = self._end - len(self._buf)  # index in y of pieces[0][0]
        if start < first:
            self._rewind()
            first = 0
        pieces = [self._buf]
        while self.total is None and self._end < stop:
            block = next(self._blocks, None)
            if block is None:
                block = np.zeros(self.padding, dtype=np.float32)
                self.total = self._end + self.padding
            self._end += len(block)
            if self._end <= start:
                pieces, first = [], self._end  # wholly before the start: never held
            else:
                pieces.append(block)
        kept = []
        for piece in pieces:
            if first + len(piece) > start:
                kept.append(piece[max(start - first, 0) :])
            first += len(piece)
        self._buf = np.concatenate(kept) if kept else np.zeros(0, dtype=np.float32)  # a fresh array: no views
        return self._buf[: stop - start]


class AudioWindows:
    """Log-Mel frames of a long audio file, equal to slicing
    ``log_mel_spectrogram(load_audio(path), n_mels, padding)``, in memory bounded by the frames
    asked for (plus one decoding block), for any file length.

    The file is read twice: a first streaming pass finds the spectrogram's maximum (which sets
    the 80 dB floor) and the length; :meth:`mel` then streams forward to each requested run of
    frames, computing it with its true neighbours (and the reflect padding at the file's ends),
    so windows match the whole-file spectrogram frame for frame. Asking for frames before the
    last request restarts the stream (correct, but rereads the file)."""

    def __init__(
        self, path: str | os.PathLike, *, n_mels: int = 80, padding: int = N_SAMPLES,
        device: torch.device | str | None = None, block_seconds: float = float(CHUNK_LENGTH),
    ) -> None:
        if padding < 0:
            raise ValueError(f"padding: expected >= 0 samples, got {padding}")
        mel_filterbank(n_mels)  # validates n_mels
        self.path, self.n_mels, self.padding = _check_file(path), n_mels, padding
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self._samples = _Samples(self.path, padding, block_seconds)
        self._log_max: float | None = None
        self._num_samples = 0

    def _scan(self) -> None:
        """First pass: the whole spectrogram's maximum of ``log10`` Mel power, and the length."""
        best, start = -np.inf, 0
        while True:
            log_mel = self._log10_frames(start, N_FRAMES)
            if log_mel.shape[-1]:
                best = max(best, float(log_mel.max()))
            if log_mel.shape[-1] < N_FRAMES:
                break
            start += N_FRAMES
        self._log_max, self._num_samples = best, self._samples.total - self.padding

    @property
    def num_samples(self) -> int:
        """Samples of the audio at 16 kHz (without the padding)."""
        if self._log_max is None:
            self._scan()
        return self._num_samples

    @property
    def num_frames(self) -> int:
        """Frames of the whole (padded) spectrogram: ``(num_samples + padding) // 160``."""
        return (self.num_samples + self.padding) // HOP_LENGTH

    @property
    def content_frames(self) -> int:
        """Frames that hold audio rather than padding: ``num_samples // 160`` (what
        ``transcribe`` loops over)."""
        return self.num_samples // HOP_LENGTH

    @property
    def log_max(self) -> float:
        """The whole spectrogram's maximum of ``log10`` Mel power (before normalisation)."""
        if self._log_max is None:
            self._scan()
        return self._log_max

    def _log10_frames(self, start: int, count: int) -> Tensor:
        """``log10`` Mel power of frames ``[start, start + count)`` (fewer at the end): frame ``t``
        sees samples ``y[160 t - 200 : 160 t + 200]``, reflected at either end of ``y``."""
        half = N_FFT // 2
        lo, hi = start * HOP_LENGTH - half, (start + count - 1) * HOP_LENGTH + half
        first = max(lo, 0)
        y = self._samples.get(first, max(hi, half + 1))  # the left reflection needs y[1 : 201]
        total = self._samples.total
        if total is not None:
            if total <= half:
                raise AudioError(f"{self.path}: expected more than {half} samples with padding, got {total}")
            count = min(count, total // HOP_LENGTH - start)
            if count <= 0:
                return torch.zeros(self.n_mels, 0, device=self.device)
            hi = (start + count - 1) * HOP_LENGTH + half
        left, right = first - lo, max(hi - total, 0) if total is not None else 0
        if left or right:
            y = np.pad(y, (left, right), mode="reflect")  # y starts at 0 / ends at total when padded there
        signal = torch.from_numpy(np.ascontiguousarray(y[: hi - lo])).to(self.device)
        spec = torch.stft(signal, N_FFT, HOP_LENGTH, window=_hann(self.device), center=False, return_complex=True)
        return _log10_mel(spec.abs() ** 2, self.n_mels)  # [n_mels, count]

    def mel(self, start: int, frames: int = N_FRAMES) -> Tensor:
        """Frames ``[start, start + frames)`` of the whole spectrogram, ``[n_mels, <= frames]``
        (fewer past its end, as slicing gives; :func:`pad_or_trim` them to a full window)."""
        if start < 0 or frames < 0:
            raise ValueError(f"frames: expected start >= 0 and count >= 0, got start {start}, count {frames}")
        log_max = self.log_max
        if frames == 0 or start >= self.num_frames:
            return torch.zeros(self.n_mels, 0, device=self.device)
        return _normalise(self._log10_frames(start, frames), log_max)

    def __iter__(self) -> Iterator[tuple[int, Tensor]]:
        """``(start frame, mel [n_mels, <= 3000])`` for consecutive 30-s windows over the audio."""
        for start in range(0, self.content_frames, N_FRAMES):
            yield start, self.mel(start, N_FRAMES)
