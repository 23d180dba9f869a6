"""Long-form transcription (Radford et al. 2022, §4.5 "Strategies for Reliable Long-form
Transcription"), decision for decision openai-whisper's ``whisper.transcribe``:

- the audio is cut into 30-s windows by *seeking*: a window's last complete timestamp pair (or its
  end, when its text ends with a lone timestamp or has none) is where the next window starts, and
  the window's text, cut into segments at its timestamp pairs, is the next window's prompt
  (``condition_on_previous_text``);
- temperature fallback: a window whose text compresses too well (``compression_ratio_threshold``,
  a repetition loop) or whose average log-probability is too low (``logprob_threshold``) is
  decoded again at the next temperature, unless it is silence (``no_speech_threshold``);
- voice-activity: a window whose no-speech probability is high *and* whose text is improbable is
  skipped;
- word-level timestamps (:mod:`.timing`) move the seek to the last word's end, and
  ``hallucination_silence_threshold`` skips long silences around anomalous words;
- ``clip_timestamps`` restrict the transcription to clips of the audio;
- ``vad`` (faster-whisper's ``vad_filter``, :mod:`.vad`): only the speech a voice-activity detector
  finds is transcribed, joined, with every time carried back to the original audio.

Decoding a batch of windows (temperature fallback, language identification) is :mod:`.windows`.

Many files are transcribed together (:func:`transcribe_batch`): each round decodes the next
window of up to ``batch_size`` files in one batch (one encoder call, one decoder batch with each
file's own prompt and language), then every file seeks on by itself. Audio files are read window
by window (:class:`~tatlas.models.whisper.audio.AudioWindows`) in bounded memory.
"""

from __future__ import annotations

import dataclasses
import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ...models.whisper.audio import (
    FRAMES_PER_SECOND,
    HOP_LENGTH,
    SAMPLE_RATE,
    AudioSource,
    AudioWindows,
    audio_duration,
    load_audio,
    log_mel_spectrogram,
)
from ...models.whisper.decoding import DecodingResult, Segment, Word, audio_features, tokenizer_for
from ...models.whisper.timing import add_word_timestamps

if TYPE_CHECKING:
    from ...models.whisper.model import Whisper
    from ...models.whisper.tokenizer import WhisperTokenizer

from .options import INPUT_STRIDE, STREAM_ABOVE_SECONDS, TIME_PRECISION, Transcript, TranscribeOptions
from .vad import SpeechTimeline, speech_audio
from .windows import decode_with_fallback, detect_languages, language_of

_PUNCTUATION = "\"'“¿([{-\"'.。,，!！?？:：”)]}、"


# ------------------------------------------------------------------------------------------ audio


class _MelArray:
    """The whole (padded) spectrogram of audio held in memory."""

    def __init__(self, mel: Tensor, content_frames: int) -> None:
        self._mel, self.content_frames = mel, content_frames

    def mel(self, start: int, frames: int) -> Tensor:
        return self._mel[:, start : start + frames]


def mel_source(audio: AudioSource, *, n_mels: int, window_frames: int, device=None):
    """Log-Mel frames of ``audio`` (a file, or 16 kHz samples) padded with one window of silence:
    ``.content_frames`` and ``.mel(start, frames)``. Files longer than ``STREAM_ABOVE_SECONDS``
    are read window by window (bounded memory)."""
    padding = window_frames * HOP_LENGTH
    if isinstance(audio, str | os.PathLike) and audio_duration(audio) > STREAM_ABOVE_SECONDS:
        return AudioWindows(audio, n_mels=n_mels, padding=padding, device=device)
    samples = torch.from_numpy(load_audio(audio))
    mel = log_mel_spectrogram(samples, n_mels, padding=padding, device=device)
    return _MelArray(mel, mel.shape[-1] - window_frames)


def _pad_frames(mel: Tensor, frames: int) -> Tensor:
    return torch.nn.functional.pad(mel, (0, frames - mel.shape[-1])) if mel.shape[-1] < frames else mel[:, :frames]


# ------------------------------------------------------------------------------------------ one file


@dataclass
class _Window:
    seek: int
    size: int  # Mel frames holding audio (the rest of the window is zero padding)
    mel: Tensor  # [mels, window_frames]
    prompt: list[int]


def _word_anomaly(word: Word) -> float:
    duration = word.end - word.start
    score = 1.0 if word.probability < 0.15 else 0.0
    if duration < 0.133:
        score += (0.133 - duration) * 15
    if duration > 2.0:
        score += duration - 2.0
    return score


def _is_anomaly(segment: Segment | None) -> bool:
    if segment is None or not segment.words:
        return False
    words = [w for w in segment.words if w.word not in _PUNCTUATION][:8]
    score = sum(_word_anomaly(w) for w in words)
    return score >= 3 or score + 0.01 >= len(words)


def _first_with_words(segments: Sequence[Segment]) -> Segment | None:
    return next((s for s in segments if s.words), None)


def _last_end(segments: Sequence[Segment]) -> float | None:
    ends = [w.end for s in segments for w in (s.words or ())]
    return ends[-1] if ends else (segments[-1].end if segments else None)


class FileTranscription:
    """The seek state of one file: :meth:`next_window` gives the window to decode (None when the
    file is done), :meth:`add` takes its decoding and seeks on."""

    def __init__(self, model: Whisper, source, options: TranscribeOptions, *, language: str | None,
                 progress: Callable[[int], None] | None = None, timeline: SpeechTimeline | None = None) -> None:
        self.model, self.source, self.options, self.progress = model, source, options, progress
        self.timeline = timeline  # with voice-activity filtering: where the joined speech came from
        c = model.config
        self.window_frames = c.n_frames
        self.content_frames = source.content_frames
        self.content_duration = float(self.content_frames * HOP_LENGTH / SAMPLE_RATE)
        self.language = language if c.multilingual else "en"
        self.clips = options.clips(self.content_frames)
        self.clip, self.seek = 0, self.clips[0][0]
        self.segments: list[Segment] = []
        self.all_tokens: list[int] = []
        self.prompt_reset_since = 0
        self.last_speech_timestamp = 0.0
        self.reported = 0
        tok = self.tokenizer
        self.initial_prompt = tok.encode(" " + options.initial_prompt.strip()) if options.initial_prompt else []
        self.all_tokens.extend(self.initial_prompt)
        self.remaining_prompt_length = c.text_ctx // 2 - 1 - len(self.initial_prompt)

    @property
    def tokenizer(self) -> WhisperTokenizer:
        return tokenizer_for(self.model, language=self.language, task=self.options.decode.task)

    def language_window(self) -> Tensor:
        """What language identification looks at: the first window of the padded spectrogram."""
        return _pad_frames(self.source.mel(0, self.window_frames), self.window_frames)

    def next_window(self) -> _Window | None:
        while self.clip < len(self.clips):
            start, end = self.clips[self.clip]
            self.seek = max(self.seek, start)
            size = min(self.window_frames, self.content_frames - self.seek, end - self.seek)
            if size <= 0:
                self.clip += 1
                if self.clip < len(self.clips):
                    self.seek = self.clips[self.clip][0]
                continue
            mel = _pad_frames(self.source.mel(self.seek, size), self.window_frames)
            if self.options.carry_initial_prompt:
                ignored = max(len(self.initial_prompt), self.prompt_reset_since)
                prompt = self.initial_prompt + self.all_tokens[ignored:][-self.remaining_prompt_length:]
            else:
                prompt = self.all_tokens[self.prompt_reset_since :]
            return _Window(self.seek, size, mel, prompt)
        return None

    def _segment(self, *, start: float, end: float, tokens: list[int], result: DecodingResult, seek: int) -> Segment:
        text = self.tokenizer.decode([t for t in tokens if t < self.tokenizer.eot])
        return Segment(id=0, seek=seek, start=start, end=end, text=text, tokens=list(tokens),
                       temperature=result.temperature, avg_logprob=result.avg_logprob,
                       compression_ratio=result.compression_ratio, no_speech_prob=result.no_speech_prob)

    def add(self, window: _Window, result: DecodingResult, audio: Tensor) -> None:
        """Take the decoding of ``window`` (``audio [1, S, C]``: its encoder output) and seek on."""
        o, tok = self.options, self.tokenizer
        seek, size = window.seek, window.size
        if o.no_speech_threshold is not None and result.no_speech_prob > o.no_speech_threshold and not (
            o.logprob_threshold is not None and result.avg_logprob > o.logprob_threshold
        ):
            self.seek += size  # silence: on to the next window
            self._report()
            return
        time_offset = float(seek * HOP_LENGTH / SAMPLE_RATE)
        window_end_time = float((seek + self.window_frames) * HOP_LENGTH / SAMPLE_RATE)
        segment_duration = size * HOP_LENGTH / SAMPLE_RATE
        tokens, tb = result.tokens, tok.timestamp_begin
        is_ts = [t >= tb for t in tokens]
        single_timestamp_ending = is_ts[-2:] == [False, True]
        pairs = [i + 1 for i in range(len(tokens) - 1) if is_ts[i] and is_ts[i + 1]]
        current: list[Segment] = []
        if pairs:  # segments between consecutive timestamp pairs
            if single_timestamp_ending:
                pairs.append(len(tokens))
            last = 0
            for cut in pairs:
                piece = tokens[last:cut]
                current.append(self._segment(start=time_offset + (piece[0] - tb) * TIME_PRECISION,
                                             end=time_offset + (piece[-1] - tb) * TIME_PRECISION,
                                             tokens=piece, result=result, seek=seek))
                last = cut
            if single_timestamp_ending:
                self.seek += size  # nothing after the last timestamp: the whole window is done
            else:
                self.seek += (tokens[last - 1] - tb) * INPUT_STRIDE  # resume at the last complete segment's end
        else:
            duration = segment_duration
            stamps = [t for t in tokens if t >= tb]
            if stamps and stamps[-1] != tb:
                duration = (stamps[-1] - tb) * TIME_PRECISION
            current.append(self._segment(start=time_offset, end=time_offset + duration, tokens=tokens, result=result,
                                         seek=seek))
            self.seek += size

        if o.word_timestamps:
            add_word_timestamps(segments=current, model=self.model, tokenizer=tok, audio=audio, num_frames=size,
                                time_offset=time_offset, last_speech_timestamp=self.last_speech_timestamp,
                                prepend_punctuations=o.prepend_punctuations, append_punctuations=o.append_punctuations)
            if not single_timestamp_ending:
                end = _last_end(current)
                if end is not None and end > time_offset:
                    self.seek = round(end * FRAMES_PER_SECOND)
            if o.hallucination_silence_threshold is not None:
                if not self._skip_hallucinations(current, seek, size, single_timestamp_ending, time_offset,
                                                 window_end_time, segment_duration):
                    self._report()
                    return  # the window's text is dropped: decode again after the silence
            end = _last_end(current)
            if end is not None:
                self.last_speech_timestamp = end

        for segment in current:  # instantaneous or empty segments keep no text
            if segment.start == segment.end or segment.text.strip() == "":
                segment.text, segment.tokens, segment.words = "", [], []
        for segment in current:
            segment.id = len(self.segments)
            self.segments.append(segment)
            self.all_tokens.extend(segment.tokens)
        if not o.condition_on_previous_text or result.temperature > 0.5:
            self.prompt_reset_since = len(self.all_tokens)  # a high temperature's text is no prompt
        self._report()

    def _skip_hallucinations(self, current: list[Segment], previous_seek: int, size: int, single_ending: bool,
                             time_offset: float, window_end_time: float, segment_duration: float) -> bool:
        """``hallucination_silence_threshold``: seek past silences around anomalous segments (and drop
        them). Returns False when the whole window is to be decoded again from a later point."""
        threshold = self.options.hallucination_silence_threshold
        if not single_ending:
            end = _last_end(current)
            if end is not None and end > time_offset:
                remaining = window_end_time - end
                self.seek = round(end * FRAMES_PER_SECOND) if remaining > threshold else previous_seek + size
        first = _first_with_words(current)
        if first is not None and _is_anomaly(first):
            gap = first.start - time_offset
            if gap > threshold:
                self.seek = previous_seek + round(gap * FRAMES_PER_SECOND)
                return False
        last_end = self.last_speech_timestamp
        for i, segment in enumerate(current):
            if not segment.words:
                continue
            if _is_anomaly(segment):
                following = _first_with_words(current[i + 1 :])
                next_start = following.words[0].start if following is not None else time_offset + segment_duration
                silence_before = (segment.start - last_end > threshold or segment.start < threshold
                                  or segment.start - time_offset < 2.0)
                silence_after = (next_start - segment.end > threshold or _is_anomaly(following)
                                 or window_end_time - segment.end < 2.0)
                if silence_before and silence_after:
                    self.seek = round(max(time_offset + 1, segment.start) * FRAMES_PER_SECOND)
                    if self.content_duration - segment.end < threshold:
                        self.seek = self.content_frames
                    del current[i:]
                    break
            last_end = segment.end
        return True

    def _report(self) -> None:
        done = min(self.content_frames, self.seek)
        if self.progress is not None and done > self.reported:
            self.progress(done - self.reported)
        self.reported = max(self.reported, done)

    def result(self) -> Transcript:
        if self.progress is not None and self.content_frames > self.reported:
            self.progress(self.content_frames - self.reported)
        text = self.tokenizer.decode(self.all_tokens[len(self.initial_prompt) :])
        transcript = Transcript(text=text, segments=self.segments, language=self.language)
        return transcript if self.timeline is None else self.timeline.restore(transcript)


def _options(options: TranscribeOptions | None, kwargs: dict) -> TranscribeOptions:
    if options is None:
        return TranscribeOptions.create(**kwargs)
    if kwargs:
        return TranscribeOptions.create(**{**{f.name: getattr(options, f.name) for f in dataclasses.fields(options)},
                                          **kwargs})
    return options


@torch.inference_mode()
def transcribe_batch(
    model: Whisper, audios: Sequence[AudioSource], options: TranscribeOptions | None = None, *,
    batch_size: int = 8, progress: Callable[[int], None] | None = None,
    generator: torch.Generator | None = None, seed: int | None = None, compile: bool = False, **kwargs,
) -> list[Transcript]:
    """Transcribe many files (paths or 16 kHz sample arrays), up to ``batch_size`` windows per
    decoding batch; ``progress`` receives the Mel frames (10 ms) transcribed as they go.
    Fallback sampling draws from ``generator`` (None: torch's global one, as openai-whisper), or,
    with ``seed``, from one generator per window: reproducible and the same for any batch size.
    ``kwargs``: :class:`TranscribeOptions` / :class:`DecodingOptions` fields by name (``vad=True``:
    only the speech is transcribed, times still in the original audio's seconds)."""
    options = _options(options, kwargs)
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    device = model.decoder.embed.weight.device
    language = options.decode.language
    pending = deque(enumerate(audios))
    active: list[tuple[int, FileTranscription]] = []
    done: list[Transcript | None] = [None] * len(audios)
    decode_tokenizer = tokenizer_for(model, language=language, task=options.decode.task)

    while pending or active:
        windows: list[tuple[int, FileTranscription, _Window]] = []
        while True:
            while len(active) < batch_size and pending:
                i, audio = pending.popleft()
                state = _open(model, audio, options, language=language, progress=progress, device=device)
                if isinstance(state, Transcript):
                    done[i] = state  # voice-activity filtering found no speech
                else:
                    active.append((i, state))
            ready = {id(st) for _, st, _ in windows}
            fresh = [(i, st) for i, st in active if id(st) not in ready]
            if not fresh:
                break
            for i, st in fresh:
                window = st.next_window()
                if window is None:
                    active.remove((i, st))
                    done[i] = st.result()
                else:
                    windows.append((i, st, window))
        if not windows:
            continue
        mel = torch.stack([w.mel for _, _, w in windows]).to(device)
        features = audio_features(model, mel)  # [B, S, C]
        detect_languages(model, windows, features, decode_tokenizer)
        results = decode_with_fallback(
            model, features, options, prompts=[w.prompt for _, _, w in windows],
            languages=[st.language for _, st, _ in windows], tokenizer=decode_tokenizer, generator=generator,
            seeds=None if seed is None else [seed * 1_000_003 + w.seek for _, _, w in windows],
            compile=compile)
        for row, ((_, st, window), result) in enumerate(zip(windows, results, strict=True)):
            st.add(window, result, features[row : row + 1])
    return done  # type: ignore[return-value]


def _open(model: Whisper, audio: AudioSource, options: TranscribeOptions, *, language: str | None,
          progress: Callable[[int], None] | None, device) -> FileTranscription | Transcript:
    """The transcription state of one file; with ``options.vad``, of its speech joined (the silence
    is reported to ``progress`` as done at once), or its empty transcript when it holds no speech."""
    c = model.config
    if options.vad_options is None:
        source = mel_source(audio, n_mels=c.mels, window_frames=c.n_frames, device=device)
        return FileTranscription(model, source, options, language=language, progress=progress)
    speech, timeline = speech_audio(audio, options)
    if progress is not None and timeline.samples > len(speech):
        progress(timeline.samples // HOP_LENGTH - len(speech) // HOP_LENGTH)
    if not timeline.regions:
        if not c.multilingual:
            language = "en"
        elif language is None:  # as without the filter: the language of the first window
            first = mel_source(audio, n_mels=c.mels, window_frames=c.n_frames, device=device).mel(0, c.n_frames)
            language = language_of(model, _pad_frames(first, c.n_frames))
        return Transcript(text="", segments=[], language=language)
    source = mel_source(speech, n_mels=c.mels, window_frames=c.n_frames, device=device)
    return FileTranscription(model, source, replace(options, clip_timestamps="0"), language=language,
                             progress=progress, timeline=timeline)


def transcribe(
    model: Whisper, audio: AudioSource, options: TranscribeOptions | None = None, *,
    progress: Callable[[int], None] | None = None, generator: torch.Generator | None = None,
    seed: int | None = None, compile: bool = False, **kwargs,
) -> Transcript:
    """Transcribe one file or 16 kHz sample array of any length (see the module docstring);
    ``kwargs``: :class:`TranscribeOptions` / :class:`DecodingOptions` fields by name, as
    openai-whisper's ``transcribe`` takes them."""
    return transcribe_batch(model, [audio], options, batch_size=1, progress=progress, generator=generator,
                            seed=seed, compile=compile, **kwargs)[0]
