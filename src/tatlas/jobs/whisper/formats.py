"""Transcripts as text: plain lines (optionally timed per segment or per word), SubRip (``.srt``)
and WebVTT (``.vtt``) subtitles, one cue per segment, timed by its words when it has them (as
openai-whisper's ``WriteSRT``/``WriteVTT`` do)."""

from __future__ import annotations

from .options import Transcript


def format_timestamp(seconds: float, *, always_include_hours: bool = False, decimal_marker: str = ".") -> str:
    """``3725.5`` -> ``"01:02:05.500"`` (hours only when needed, unless ``always_include_hours``)."""
    ms = round(max(0.0, seconds) * 1000.0)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1_000)
    head = f"{hours:02d}:" if always_include_hours or hours else ""
    return f"{head}{minutes:02d}:{secs:02d}{decimal_marker}{ms:03d}"


def _cues(transcript: Transcript) -> list[tuple[float, float, str]]:
    """One subtitle per segment with text; timed by its words when it has them."""
    cues = []
    for s in transcript.segments:
        if s.words:
            cues.append((s.words[0].start, s.words[-1].end, "".join(w.word for w in s.words).strip()))
        elif s.text.strip():
            cues.append((s.start, s.end, s.text.strip()))
    return [(a, b, text.replace("-->", "->")) for a, b, text in cues]


def to_srt(transcript: Transcript) -> str:
    def ts(x: float) -> str:
        return format_timestamp(x, always_include_hours=True, decimal_marker=",")

    return "".join(f"{i}\n{ts(a)} --> {ts(b)}\n{text}\n\n" for i, (a, b, text) in enumerate(_cues(transcript), 1))


def to_vtt(transcript: Transcript) -> str:
    return "WEBVTT\n\n" + "".join(f"{format_timestamp(a)} --> {format_timestamp(b)}\n{text}\n\n"
                                   for a, b, text in _cues(transcript))


def to_txt(transcript: Transcript, *, timestamps: bool = False, words: bool = False) -> str:
    """The text, one segment a line; ``timestamps``: each line ``[start --> end] text``; ``words``:
    one line per word with its times."""
    lines = []
    for s in transcript.segments:
        if words and s.words:
            lines += [f"[{format_timestamp(w.start)} --> {format_timestamp(w.end)}] {w.word.strip()}" for w in s.words]
        elif s.text.strip():
            lines.append(f"[{format_timestamp(s.start)} --> {format_timestamp(s.end)}] {s.text.strip()}"
                         if timestamps or words else s.text.strip())
    return "".join(line + "\n" for line in lines)
