"""``tatlas imagebind``: embed files of six modalities into one space, and search them with a file or
a text. Thin: arguments -> one call into :mod:`tatlas.jobs.imagebind` (imported when a command runs,
so ``tatlas --help`` never loads torch)."""

from __future__ import annotations

from pathlib import Path

import typer

from tatlas.cli.common import new_app

app = new_app("ImageBind: embed audio, images, depth, thermal, IMU and text into one space; search it.")

_MODEL = typer.Option(None, "--model", help="the official imagebind_huge.pth or a tatlas ImageBind checkpoint "
                                             "(.safetensors); default: $TATLAS_IMAGEBIND_MODEL")
_PRESET = typer.Option(None, "--preset", help="instead of --model: a preset with random weights (seed 0), "
                                               "only to try the command (tiny, tiny-world, imagebind_huge)")
_MODALITY = typer.Option(None, "--modality", help="vision|text|audio|depth|thermal|imu for every file "
                                                   "(default: from the suffix; .npy/.csv is imu)")


@app.command("embed")
def embed_cmd(
    files: list[Path] = typer.Argument(None, help="audio (.wav .flac .mp3 ...), images (.png .jpg ...), IMU "
                                                  "(.npy/.csv [6, T]), texts (.txt); depth/thermal with --modality"),
    out: Path = typer.Option(..., "--out", help="FILE.npy: [N, E] unit embeddings; the rows' sources and "
                                                "modalities go to FILE.json beside it"),
    text: list[str] = typer.Option(None, "--text", help="a text to embed (repeatable), after the files"),
    model: Path = _MODEL,
    preset: str = _PRESET,
    modality: str = _MODALITY,
) -> None:
    """Write ImageBind embeddings of files and texts, in input order (files first, then --text)."""
    from tatlas.jobs.imagebind import classify_inputs, embed, load_imagebind, resolve_model, write_index

    if out.suffix != ".npy":
        raise ValueError(f"--out {out}: expected a .npy file name")
    from tatlas.io.paths import check_output_file

    check_output_file(out, "--out")
    items = classify_inputs(list(files or []), list(text or []), modality=modality)  # before loading the model
    name = resolve_model(model, preset)
    embeddings = embed(load_imagebind(name), items)
    npy, side = write_index(out, embeddings, items, name)
    counts = {m: sum(it.modality == m for it in items) for m in dict.fromkeys(it.modality for it in items)}
    typer.echo(f"wrote {embeddings.shape[0]} x {embeddings.shape[1]} embeddings "
               f"({', '.join(f'{n} {m}' for m, n in counts.items())}) to {npy} (rows: {side})")


@app.command("search")
def search_cmd(
    query: str = typer.Argument(..., help="a file (any type `embed` takes) or a text"),
    index: Path = typer.Option(..., "--in", help="an index written by `tatlas imagebind embed --out FILE.npy`"),
    top: int = typer.Option(5, "--top", min=1, help="rows shown"),
    model: Path = _MODEL,
    preset: str = _PRESET,
    modality: str = _MODALITY,
) -> None:
    """Rank the index's rows (any modality) by cosine similarity to the query's embedding. The model
    is the one the index records unless --model/--preset names another."""
    from tatlas.jobs.imagebind import classify_query, embed, load_imagebind, read_index, resolve_model, search

    item = classify_query(query, modality=modality)
    array, meta = read_index(index)
    name = resolve_model(model, preset) if model is not None or preset is not None else meta.get("model")
    name = name or resolve_model(None)
    hits = search(embed(load_imagebind(name), [item])[0], array, meta, top=top)
    typer.echo(f"query ({item.modality}): {item.source}")
    for h in hits:
        typer.echo(f"  {h.score:+.4f}  {h.modality:<7}  {h.source}")
