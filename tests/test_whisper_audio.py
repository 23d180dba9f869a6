"""Whisper's audio front end: the Mel filters and log-Mel spectrogram equal openai-whisper's (and
transformers' feature extractor), on noise, tones, silence and espeak-ng speech, single and
batched; files in WAV/FLAC/OGG, stereo, resampled; one-line errors; and long files in bounded
memory whose Mel windows equal slices of the whole file's spectrogram."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from tatlas.models.whisper.audio import (
    CHUNK_LENGTH, FRAMES_PER_SECOND, HOP_LENGTH, N_FFT, N_FRAMES, N_SAMPLES, N_SAMPLES_PER_TOKEN, SAMPLE_RATE,
    TOKENS_PER_SECOND, AudioError, AudioWindows, audio_duration, load_audio, log_mel_spectrogram, mel_filters,
    pad_or_trim, resample, stream_audio,
)

import soundfile as sf
SENTENCE = "The quick brown fox jumps over the lazy dog, and then it sleeps."
ESPEAK_RATE = 22_050  # espeak-ng's own output rate


def openai_audio():
    import whisper.audio

    return whisper.audio


@pytest.fixture(scope="module")
def spoken() -> np.ndarray:
    """The sentence as espeak-ng speaks it: float32 at 22,050 Hz, exactly its 16-bit samples."""
    from tatlas.data.speech import speech

    return speech(SENTENCE, sample_rate=ESPEAK_RATE).numpy()


def _signals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    chirp = np.sin(2 * np.pi * (100 + 1500 * t) * t) * np.linspace(0, 1, len(t))
    tones = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.sin(2 * np.pi * 3000 * t)
    quiet = np.concatenate([np.zeros(8000), 1e-3 * rng.standard_normal(8000)])  # the 80 dB floor matters here
    return {
        "noise": (0.1 * rng.standard_normal(3 * SAMPLE_RATE)).astype(np.float32),
        "tones": tones.astype(np.float32),
        "chirp": chirp.astype(np.float32),
        "silence": np.zeros(SAMPLE_RATE, dtype=np.float32),
        "quiet": quiet.astype(np.float32),
        "short": (0.1 * rng.standard_normal(1234)).astype(np.float32),
    }


def test_constants_match_openai():
    wa = openai_audio()
    assert (SAMPLE_RATE, N_FFT, HOP_LENGTH, CHUNK_LENGTH, N_SAMPLES, N_FRAMES) == (16000, 400, 160, 30, 480000, 3000)
    assert (N_SAMPLES_PER_TOKEN, FRAMES_PER_SECOND, TOKENS_PER_SECOND) == (320, 100, 50)
    assert (wa.N_SAMPLES, wa.N_FRAMES, wa.FRAMES_PER_SECOND, wa.TOKENS_PER_SECOND) == (
        N_SAMPLES, N_FRAMES, FRAMES_PER_SECOND, TOKENS_PER_SECOND)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_mel_filters_equal_openai_npz(n_mels):
    import os

    wa = openai_audio()
    with np.load(os.path.join(os.path.dirname(wa.__file__), "assets", "mel_filters.npz")) as f:
        expected = f[f"mel_{n_mels}"]
    ours = mel_filters(n_mels)
    assert ours.dtype == torch.float32 and tuple(ours.shape) == expected.shape == (n_mels, N_FFT // 2 + 1)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize("padding", [0, N_SAMPLES])
def test_log_mel_equals_openai(n_mels, padding, spoken):
    wa = openai_audio()
    signals = {**_signals(), "speech": resample(spoken, ESPEAK_RATE)}
    for name, x in signals.items():
        ours = log_mel_spectrogram(x, n_mels, padding=padding)
        ref = wa.log_mel_spectrogram(torch.from_numpy(x), n_mels, padding=padding)
        assert ours.shape == ref.shape == (n_mels, (len(x) + padding) // HOP_LENGTH), name
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5, msg=name)


@pytest.mark.parametrize("seconds", [0.03, 0.06, 2.0, 5.3, 29.99, 31.0])
def test_log_mel_of_appended_silence_is_filled_not_computed_and_bit_identical(seconds, monkeypatch):
    """With 30 s of zeros appended (as transcription does) only the frames the audio reaches are
    computed; the rest are the floor, exactly what computing them gives (the zeros passed in as audio)."""
    from tatlas.models.whisper import audio as audio_module

    gen = torch.Generator().manual_seed(int(seconds * 100))
    x = torch.randn(2, int(seconds * 16_000) + 7, generator=gen) * 0.1
    computed = []
    real_power = audio_module._power
    monkeypatch.setattr(audio_module, "_power", lambda y: computed.append(y.shape[-1]) or real_power(y))
    got = log_mel_spectrogram(x, 80, padding=N_SAMPLES)
    assert max(computed) < x.shape[-1] + N_SAMPLES // 2  # not the whole padded length
    want = log_mel_spectrogram(torch.nn.functional.pad(x, (0, N_SAMPLES)), 80)
    assert got.shape == want.shape == (2, 80, (x.shape[-1] + N_SAMPLES) // HOP_LENGTH)
    assert torch.equal(got, want)
    assert torch.equal(log_mel_spectrogram(x[0], 80, padding=N_SAMPLES), want[0])


def test_log_mel_batch_floors_each_example_by_its_own_maximum():
    wa = openai_audio()
    s = _signals()
    n = len(s["tones"])
    batch = np.stack([s["noise"][:n], s["tones"], s["silence"].repeat(2), pad_or_trim(s["quiet"], n)])
    ours = log_mel_spectrogram(batch, 80, padding=HOP_LENGTH * 10)
    assert ours.shape == (4, 80, (n + HOP_LENGTH * 10) // HOP_LENGTH)
    for i, x in enumerate(batch):
        ref = wa.log_mel_spectrogram(torch.from_numpy(x), 80, padding=HOP_LENGTH * 10)
        torch.testing.assert_close(ours[i], ref, rtol=0, atol=1e-5, msg=f"example {i}")
    # a shared maximum would lift the quiet example's floor: the per-example floor is what is tested
    assert ours[3].min() < ours[0].max() - 1.5


@pytest.mark.parametrize("n_mels", [80, 128])
def test_log_mel_equals_transformers_feature_extractor(n_mels, spoken):
    import transformers
    x = load_audio(spoken, source_rate=ESPEAK_RATE)
    features = transformers.WhisperFeatureExtractor(feature_size=n_mels)(
        x, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features[0]
    ours = log_mel_spectrogram(pad_or_trim(x), n_mels)
    assert ours.shape == features.shape == (n_mels, N_FRAMES)
    np.testing.assert_allclose(ours.numpy(), features, rtol=0, atol=1e-5)


def test_log_mel_inputs_and_errors(tmp_path):
    x = _signals()["tones"]
    ref = log_mel_spectrogram(x)
    torch.testing.assert_close(log_mel_spectrogram(torch.from_numpy(x).double(), device="cpu"), ref)
    path = tmp_path / "tones.wav"
    sf.write(path, x, SAMPLE_RATE, subtype="FLOAT")
    torch.testing.assert_close(log_mel_spectrogram(str(path)), ref)
    with pytest.raises(ValueError, match=r"expected samples \[S\] or a batch \[B, S\], got shape \[1, 2, 500\]"):
        log_mel_spectrogram(np.zeros((1, 2, 500), np.float32))
    with pytest.raises(ValueError, match="more than 200 samples"):
        log_mel_spectrogram(np.zeros(150, np.float32), padding=50)


def test_pad_or_trim_numpy_and_torch_match_openai():
    wa = openai_audio()
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    for axis, length in [(-1, 2), (-1, 7), (0, 5), (1, 1), (1, 3), (2, 6)]:
        ours, ref = pad_or_trim(a, length, axis=axis), wa.pad_or_trim(a, length, axis=axis)
        np.testing.assert_array_equal(ours, ref)
        ours_t = pad_or_trim(torch.from_numpy(a), length, axis=axis)
        torch.testing.assert_close(ours_t, wa.pad_or_trim(torch.from_numpy(a), length, axis=axis))
        assert isinstance(ours_t, torch.Tensor) and ours_t.shape[axis] == length
    assert pad_or_trim(np.ones(10)).shape == (N_SAMPLES,)


# ---------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------


def test_spoken_wav_through_load_audio_equals_openai_pipeline(tmp_path, spoken):
    wa = openai_audio()
    path = tmp_path / "speech.wav"
    sf.write(path, spoken, ESPEAK_RATE, subtype="PCM_16")
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.shape == (round(len(spoken) * SAMPLE_RATE / ESPEAK_RATE),)
    np.testing.assert_array_equal(audio, resample(spoken, ESPEAK_RATE, SAMPLE_RATE))  # 16-bit samples read exactly
    mel = log_mel_spectrogram(pad_or_trim(audio), 80)
    torch.testing.assert_close(mel, wa.log_mel_spectrogram(pad_or_trim(torch.from_numpy(audio)), 80), rtol=0, atol=1e-5)
    # the speech is there: loud frames, not the floor
    assert mel[:, : len(audio) // HOP_LENGTH].mean() > mel[:, -100:].mean() + 0.3


@pytest.mark.parametrize("rate", [8_000, 44_100, 48_000])
def test_resampling_keeps_pitch_and_length(tmp_path, rate):
    t = np.arange(int(1.5 * rate)) / rate
    path = tmp_path / f"tone{rate}.wav"
    sf.write(path, 0.5 * np.sin(2 * np.pi * 440.0 * t), rate, subtype="FLOAT")
    audio = load_audio(path)
    assert len(audio) == round(len(t) * SAMPLE_RATE / rate)
    assert audio_duration(path) == len(t) / rate == 1.5
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / len(audio)
    assert abs(peak_hz - 440.0) < 1.0
    assert abs(np.abs(audio[1000:-1000]).max() - 0.5) < 0.01  # amplitude kept in the passband


def test_stereo_mixes_to_mono(tmp_path):
    rng = np.random.default_rng(1)
    left, right = 0.3 * rng.standard_normal(16000), 0.2 * np.sin(np.arange(16000) * 0.05)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), SAMPLE_RATE, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), (left + right) / 2, atol=1e-7)
    from_array = load_audio(np.stack([left, right], axis=1).astype(np.float32))
    np.testing.assert_allclose(from_array, (left + right) / 2, atol=1e-7)


def test_flac_and_ogg_read(tmp_path, spoken):
    reference = load_audio(spoken, source_rate=ESPEAK_RATE)
    flac, ogg = tmp_path / "speech.flac", tmp_path / "speech.ogg"
    sf.write(flac, spoken, ESPEAK_RATE, subtype="PCM_16")  # lossless: exactly the same samples
    sf.write(ogg, spoken, ESPEAK_RATE, format="OGG", subtype="VORBIS")  # lossy: close
    np.testing.assert_array_equal(load_audio(flac), reference)
    from_ogg = load_audio(ogg)
    assert abs(len(from_ogg) - len(reference)) <= 2
    n = min(len(from_ogg), len(reference))
    assert np.corrcoef(from_ogg[:n], reference[:n])[0, 1] > 0.95


def test_in_memory_arrays(spoken):
    pcm = np.round(spoken * 32768).astype(np.int16)
    np.testing.assert_array_equal(load_audio(pcm, source_rate=ESPEAK_RATE), load_audio(spoken, source_rate=ESPEAK_RATE))
    at_16k = resample(spoken, ESPEAK_RATE)
    np.testing.assert_array_equal(load_audio(torch.from_numpy(at_16k)), at_16k)  # default: already 16 kHz
    assert len(load_audio(spoken, 8000, source_rate=ESPEAK_RATE)) == round(len(spoken) * 8000 / ESPEAK_RATE)


def test_errors_name_the_file(tmp_path):
    with pytest.raises(AudioError, match=r"missing\.wav: no such audio file"):
        load_audio(tmp_path / "missing.wav")
    (tmp_path / "zero_bytes.wav").write_bytes(b"")
    with pytest.raises(AudioError, match=r"zero_bytes\.wav: empty file \(0 bytes\)"):
        load_audio(tmp_path / "zero_bytes.wav")
    sf.write(tmp_path / "no_frames.wav", np.zeros((0, 1), np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match=r"no_frames\.wav: no audio samples \(0 frames\)"):
        load_audio(tmp_path / "no_frames.wav")
    with pytest.raises(AudioError, match=r"no_frames\.wav: no audio samples \(0 frames\)"):
        audio_duration(tmp_path / "no_frames.wav")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunkjunkjunk" + bytes(range(200)))
    with pytest.raises(AudioError, match=r"corrupt\.wav: not a readable audio file"):
        load_audio(tmp_path / "corrupt.wav")
    with pytest.raises(AudioError, match=r"corrupt\.wav: not a readable audio file"):
        AudioWindows(tmp_path / "corrupt.wav").num_frames
    (tmp_path / "notes.txt").write_text("these are not samples\n" * 20)
    with pytest.raises(AudioError, match=r"notes\.txt: not a readable audio file"):
        load_audio(tmp_path / "notes.txt")
    bad = np.zeros(32000, np.float32)
    bad[24000] = np.nan
    sf.write(tmp_path / "nan.wav", bad, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav: NaN or infinite samples \(the first at 1\.50 s\)"):
        load_audio(tmp_path / "nan.wav")
    with pytest.raises(AudioError, match=r"nan\.wav: NaN or infinite samples \(the first at 1\.50 s\)"):
        list(stream_audio(tmp_path / "nan.wav", block_seconds=0.5))
    with pytest.raises(AudioError, match="audio array: NaN or infinite"):
        load_audio(np.array([0.0, np.inf, 0.0]))
    with pytest.raises(AudioError, match="audio array: no audio samples"):
        load_audio(np.zeros(0, np.float32))
    with pytest.raises(AudioError, match=r"channels last.*got shape \[2, 16000\]"):
        load_audio(np.zeros((2, 16000), np.float32))
    assert issubclass(AudioError, ValueError)


# ---------------------------------------------------------------------------------------------
# Long files
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_file(tmp_path_factory):
    """75 s of stereo at 22,050 Hz: noise with a loud burst and a silent stretch."""
    rng = np.random.default_rng(2)
    y = (0.05 * rng.standard_normal(75 * ESPEAK_RATE)).astype(np.float32)
    y[10 * ESPEAK_RATE : 12 * ESPEAK_RATE] *= 10
    y[40 * ESPEAK_RATE : 50 * ESPEAK_RATE] = 0
    path = tmp_path_factory.mktemp("long") / "long.wav"
    sf.write(path, np.stack([y, 0.5 * y], axis=1), ESPEAK_RATE, subtype="FLOAT")
    return path


def test_stream_audio_blocks_concatenate_to_load_audio(long_file):
    whole = load_audio(long_file)
    blocks = list(stream_audio(long_file, block_seconds=7.3))
    size = round(7.3 * SAMPLE_RATE)
    assert all(len(b) == size for b in blocks[:-1]) and 0 < len(blocks[-1]) <= size
    np.testing.assert_allclose(np.concatenate(blocks), whole, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("padding", "block_seconds"), [(N_SAMPLES, 4.0), (0, 1.0), (1000, 30.0)])
def test_audio_windows_equal_slices_of_the_whole_spectrogram(long_file, padding, block_seconds):
    whole = log_mel_spectrogram(load_audio(long_file), 80, padding=padding)
    windows = AudioWindows(long_file, padding=padding, block_seconds=block_seconds)
    assert windows.num_frames == whole.shape[-1]
    assert windows.content_frames == len(load_audio(long_file)) // HOP_LENGTH
    starts = []
    for start, mel in windows:
        starts.append(start)
        torch.testing.assert_close(mel, whole[:, start : start + N_FRAMES], rtol=0, atol=1e-6)
    assert starts == list(range(0, windows.content_frames, N_FRAMES))
    # transcribe-style seeks (forward by any amount), the file's last frames, and a step back
    for start, count in [(0, 1), (1, 7), (2, 10), (777, N_FRAMES), (3001, 2500), (whole.shape[-1] - 5, N_FRAMES),
                         (whole.shape[-1] - 1, 1), (whole.shape[-1], 10), (5, N_FRAMES)]:
        torch.testing.assert_close(windows.mel(start, count), whole[:, start : start + count], rtol=0, atol=1e-6,
                                   msg=f"frames {start}+{count}")


def test_audio_windows_memory_stays_bounded(tmp_path):
    """The memory the windows hold does not grow with the file: 2 and 10 minutes at 16 kHz peak
    alike (a window, a block and the padding), far below the 10-minute signal's 38 MB, whether
    reading window after window or jumping from the first frames to the last."""
    rng = np.random.default_rng(3)
    peaks = {}
    for minutes in (2, 10):
        path = tmp_path / f"{minutes}_minutes.wav"
        sf.write(path, (0.1 * rng.standard_normal(minutes * 60 * SAMPLE_RATE)).astype(np.float32), SAMPLE_RATE,
                 subtype="PCM_16")
        windows = AudioWindows(path, block_seconds=5.0)
        tracemalloc.start()
        try:
            assert sum(1 for _ in windows) == minutes * 2
            assert windows.mel(0, 10).shape == (80, 10)  # back to the start: the file is read again
            assert windows.mel(windows.num_frames - N_FRAMES).shape == (80, N_FRAMES)  # then a jump to the end
            peaks[minutes] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    signal_bytes = 10 * 60 * SAMPLE_RATE * 4
    assert peaks[10] < 1.2 * peaks[2], f"peak grew with the file: {peaks}"
    assert peaks[10] < signal_bytes / 3, f"peak {peaks[10] / 1e6:.1f} MB for a {signal_bytes / 1e6:.1f} MB signal"
