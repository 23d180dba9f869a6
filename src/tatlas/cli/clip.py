"""``tatlas clip``: zero-shot classification of images and embeddings of images or texts.
Thin: arguments -> one call into :mod:`tatlas.jobs.clip` (imported when a command runs,
so ``tatlas --help`` never loads torch)."""

from __future__ import annotations

from pathlib import Path

import typer

from tatlas.cli.common import new_app

app = new_app("CLIP: zero-shot image classification and image/text embeddings.")

_MODEL = typer.Option(None, "--model", help="tatlas CLIP checkpoint, Hugging Face CLIP folder, or OpenAI/open_clip "
                                             "file (with --format); default: $TATLAS_CLIP_MODEL")
_FORMAT = typer.Option(None, "--format", help="foreign file format: open_clip | openai-clip")


@app.command("zero-shot")
def zero_shot_cmd(
    images: list[Path] = typer.Argument(..., help="image files"),
    labels: str = typer.Option(..., "--labels", help='comma-separated class names, e.g. "cat,dog,car"'),
    model: Path = _MODEL,
    format: str = _FORMAT,
    template: list[str] = typer.Option(None, "--template", help='prompt with {} for the class (repeatable; '
                                                                 'default "a photo of a {}.")'),
    top: int = typer.Option(5, "--top", min=1, help="classes shown per image"),
) -> None:
    """Rank the --labels for each image by CLIP's zero-shot probability."""
    from tatlas.jobs.clip import load_clip, split_labels, zero_shot
    from tatlas.models.clip.zeroshot import DEFAULT_TEMPLATES

    names = split_labels(labels)
    clip = load_clip(model, format=format)
    ranked = zero_shot(clip, images, names, templates=tuple(template) if template else DEFAULT_TEMPLATES)
    for r in ranked:
        typer.echo(r.image)
        for label, p in list(zip(r.labels, r.probabilities))[: max(1, top)]:
            typer.echo(f"  {p:7.2%}  {label}")


@app.command("embed")
def embed_cmd(
    inputs: list[str] = typer.Argument(..., help="image files and/or texts (an existing file is an image)"),
    out: Path = typer.Option(..., "--out", help="FILE.npy ([N, E] array) or FILE.safetensors (with the inputs)"),
    model: Path = _MODEL,
    format: str = _FORMAT,
    text: bool = typer.Option(False, "--text", help="treat every input as text, even if a file has its name"),
    normalise: bool = typer.Option(True, "--normalise/--no-normalise", help="unit-length embeddings"),
    truncate: bool = typer.Option(True, "--truncate/--no-truncate",
                                  help="cut texts over the context length (else: error)"),
) -> None:
    """Write CLIP embeddings of images and texts, in input order."""
    from tatlas.jobs.clip import classify_inputs, embed, load_clip, resolve_model, write_embeddings

    if out.suffix not in (".npy", ".safetensors"):
        raise ValueError(f"--out {out}: expected a .npy or .safetensors file name")
    from tatlas.io.paths import check_output_file

    check_output_file(out, "--out")
    classify_inputs(inputs, text=text)  # fail on a missing image before loading the model
    clip = load_clip(model, format=format)
    embeddings, kinds = embed(clip, inputs, text=text, normalise=normalise, truncate=truncate)
    path = write_embeddings(out, embeddings, inputs, kinds, str(resolve_model(model)))
    counts = {k: kinds.count(k) for k in ("image", "text") if k in kinds}
    typer.echo(f"wrote {embeddings.shape[0]} x {embeddings.shape[1]} embeddings "
               f"({', '.join(f'{n} {k}s' for k, n in counts.items())}) to {path}")
