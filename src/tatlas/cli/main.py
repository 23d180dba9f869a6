"""The ``tatlas`` command: thin; parses arguments, builds frozen options, calls one library function."""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer

from tatlas.cli.common import LazyConsole, freeze_imports, new_app

app = new_app("Transformer Atlas: landmark transformer systems on shared blocks.")
console = LazyConsole()


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", envvar="TATLAS_DEBUG",
                                     help="full Python tracebacks, for expected errors too")) -> None:
    app.pretty_exceptions_enable = not debug  # off: Python's own, complete traceback
    from tatlas._openmp import spin_setting
    from tatlas.nn.threads import apply_thread_setting

    apply_thread_setting()  # a bad TATLAS_THREADS: a one-line error
    spin_setting()  # and a bad TATLAS_SPIN


def _human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


@app.command("list")
def list_cmd() -> None:
    """Registered systems, their presets and parameter counts."""
    import torch
    from rich.table import Table

    from tatlas.explain import count_parameters
    from tatlas.models import systems

    table = Table(title="tatlas systems")
    for col in ("system", "preset", "parameters", "what it is"):
        table.add_column(col)
    for name, system in sorted(systems().items()):
        for i, (preset, config) in enumerate(system.presets.items()):
            with torch.device("meta"):
                n = count_parameters(system.model_cls(config))
            table.add_row(name if i == 0 else "", preset, _human(n), system.summary if i == 0 else "")
    console.print(table)


@app.command()
def explain(
    system: str = typer.Argument(..., help="a registered system (see `tatlas list`)"),
    preset: str = typer.Option("tiny", help="an exact preset name; big ones are traced on the meta device"),
    depth: int = typer.Option(3, help="module tree depth"),
    out: Path = typer.Option(None, help="folder for the diagram (SVG and PNG) and the pictures "
                                        "(default: reports/explain/SYSTEM)"),
    show: list[str] = typer.Option(None, "--show", help="pictures of what a small trained (or real) model of the "
                                                        "system does: a picture's name, or 'all' (repeatable)"),
) -> None:
    """How a system works, from the live code: a data-flow diagram of a traced forward pass,
    parameters and forward FLOPs per stage, the idea (with its paper) and the question it answers,
    the module tree and the shapes of the forward; with --show, pictures of what the model does."""
    from rich.table import Table
    from rich.tree import Tree

    from tatlas.explain import explain as run_explain
    from tatlas.explain import pictures, write_diagram

    wanted = pictures.resolve(system, show) if show else []  # bad names fail before the work
    ex = run_explain(system, preset, depth=depth)
    s = ex.system
    console.print(f"[bold]{s.name}[/bold] ({ex.preset}): {s.summary}")
    console.print(f"parameters: {ex.params:,}; forward FLOPs on the sample input "
                  f"({', '.join(f'{k} {list(v)}' for k, v in ex.inputs.items())}): {_human(ex.flops)}")
    for label, text in (("idea", s.idea), ("paper", s.paper), ("question", s.question)):
        if text:
            console.print(f"[bold]{label}:[/bold] {text}", highlight=False)
    table = Table(title=f"stages ({ex.device})")
    for col in ("stage", "kind", "parameters", "forward FLOPs", "share"):
        table.add_column(col)
    for st in ex.stages:
        if st.parent is None or any(p.id == st.parent and p.parent is None for p in ex.stages):
            indent = "" if st.parent is None else "  "
            repeat = f" × {st.repeat}" if st.repeat > 1 else ""
            table.add_row(indent + st.id + repeat, st.kind, _human(st.params), _human(st.flops),
                          f"{st.flops / max(ex.flops, 1):.1%}")
    console.print(table)

    def add(tree: Tree, node) -> None:
        for child in node.children:
            label = f"{child.name}: {child.kind} [dim]{_human(child.params)} params[/dim]"
            if child.extra:
                label += f" [dim]({child.extra})[/dim]"
            add(tree.add(label), child)

    root = Tree(f"{ex.tree.kind} [dim]{_human(ex.tree.params)} params[/dim]")
    add(root, ex.tree)
    console.print(root)
    table = Table(title=f"shape trace of one forward pass ({ex.device})")
    for col in ("module", "kind", "input", "output"):
        table.add_column(col)
    fmt = lambda shapes: ", ".join("[" + ", ".join(map(str, s)) + "]" for s in shapes)  # noqa: E731
    for row in ex.trace:
        table.add_row(row.name, row.kind, fmt(row.inputs), fmt(row.output))
    console.print(table)
    out = out or Path("reports") / "explain" / s.name
    paths = write_diagram(ex, out)
    for what in wanted:
        start = time.perf_counter()
        made = pictures.render(s.name, what, out)
        console.print(f"picture {what}: {', '.join(map(str, made))} ({time.perf_counter() - start:.1f} s)")
        paths += made
    console.print(f"diagram: {', '.join(map(str, paths[:2]))}")


@app.command()
def docs(
    out: Path = typer.Option(..., help="folder for the static site (index.html and the rest)"),
    system: list[str] = typer.Option(None, "--system", help="only these systems' pages (repeatable; default: all)"),
    pictures: list[str] = typer.Option(None, "--pictures", help="render pictures for these systems only (repeatable)"),
    no_pictures: bool = typer.Option(False, "--no-pictures", "--fast", help="no pictures: the quick build"),
    root: Path = typer.Option(None, help="the source checkout to read (default: the one tatlas is installed from)"),
) -> None:
    """Build the documentation site from the live code: the systems table, a page per system (diagram,
    stages, idea, pictures, checkpoints, examples executed during the build), the architecture, the
    recorded benchmarks and the API reference from the docstrings. Local files only."""
    from tatlas.explain.site import SiteOptions, build_site
    from tatlas.explain.site.examples import ExampleError
    from tatlas.io.paths import check_output_dir

    wanted = () if no_pictures else tuple(pictures) if pictures else None
    options = SiteOptions(out=check_output_dir(out, "--out"), systems=tuple(system or ()), pictures=wanted, root=root)
    try:
        report = build_site(options, progress=lambda step: console.print(f"[dim]{step}[/dim]", highlight=False))
    except ExampleError as e:
        raise ValueError(str(e)) from e
    console.print(f"site: {report.out / 'index.html'} ({len(report.pages)} pages, {report.seconds:.0f} s)")


@app.command()
def demo(
    systems: list[str] = typer.Argument(None, help="systems to demo (default: every registered demo)"),
    out: Path = typer.Option(None, help="report folder (default: reports/demo-<time>)"),
    seed: int = typer.Option(0),
    quick: bool = typer.Option(False, help="a shorter run"),
    jobs: int = typer.Option(None, help="demos side by side, each in its own process with its share of the "
                                        "cores (default: one per core); 1 runs them one after another here"),
) -> None:
    """Train each system on embedded data and show the paper's headline phenomenon beside a baseline.
    Several demos run side by side, one per core, longest first; each one's training log is in the
    report's <system>/log.txt. A demo that fails becomes a row of the table and the others still run.
    Exit status: 0 every demo beat its baseline, 1 a demo failed, 3 none failed but one missed its
    baseline (--quick runs are too short for some to learn)."""
    from tatlas.demo import DemoFailure, run_demos

    out = out or Path("reports") / time.strftime("demo-%Y%m%d-%H%M%S")

    def finished(r) -> None:
        state = "[red]failed[/red]" if isinstance(r, DemoFailure) else (
            "[green]beats its baseline[/green]" if r.beats_baseline else "[red]misses its baseline[/red]")
        console.print(f"{r.system}: {state} ({r.seconds:.0f} s)")

    def planned(count: int, threads: int) -> None:
        if count > 1:
            console.print(f"{count} demos at a time, {threads} thread{'s' * (threads > 1)} each; "
                          f"training logs in {out}/<system>/log.txt")

    try:
        results = run_demos(list(systems or []), out, seed=seed, quick=quick, on_result=finished, jobs=jobs,
                            on_plan=planned)
    except LookupError as e:
        console.print(f"{e}: systems register their demos as they are built; see `tatlas list`.")
        raise typer.Exit(code=0) from None
    from rich.table import Table  # (here: rich's import is ~25 ms of every command's start)

    table = Table(title="tatlas demo")
    for col in ("system", "claim", "result", "baseline", "time"):
        table.add_column(col)
    for r in results:
        if isinstance(r, DemoFailure):
            table.add_row(r.system, "", f"[red]✗ failed: {r.error}[/red]", f"see {out / r.system / 'error.txt'}",
                          f"{r.seconds:.0f} s")
            continue
        mark = "[green]✓[/green]" if r.beats_baseline else "[red]✗[/red]"
        table.add_row(r.system, r.claim, f"{mark} {r.metric} = {r.value:.4g}", f"{r.baseline} = {r.baseline_value:.4g}",
                      f"{r.seconds:.0f} s")
    console.print(table)
    for r in results:  # the figures beside the headline one (e.g. Whisper: the real tiny.en's WER)
        if not isinstance(r, DemoFailure) and r.details:
            console.print(f"{r.system}: " + ", ".join(f"{k} = {v:.4g}" for k, v in list(r.details.items())[:4]))
    console.print(f"report: {out}")
    failed = [r.system for r in results if isinstance(r, DemoFailure)]
    missed = [r.system for r in results if not isinstance(r, DemoFailure) and not r.beats_baseline]
    if failed:
        console.print(f"[red]failed: {', '.join(failed)} (tracebacks in {out}/<system>/error.txt)[/red]")
    if missed:
        console.print(f"[red]missed the baseline: {', '.join(missed)}[/red]")
    if failed or missed:
        raise typer.Exit(code=1 if failed else 3)


@app.command()
def train(
    system: str = typer.Argument(..., help="a registered system"),
    preset: str = typer.Option(None, help="an exact preset name (default: the system's training preset, e.g. "
                                          "tiny; tiny-speech for whisper)"),
    steps: int = typer.Option(200, help="optimizer steps"),
    out: Path = typer.Option(..., help="run folder: checkpoints, metrics.jsonl, metrics.png, model.safetensors"),
    resume: bool = typer.Option(False, help="continue from the newest complete checkpoint in --out"),
    batch_size: int = typer.Option(16, help="global batch (summed over ranks and accumulation)"),
    lr: float = typer.Option(3e-4),
    warmup_steps: int = typer.Option(None, help="default: 5% of steps"),
    grad_accum: int = typer.Option(1),
    grad_clip: float = typer.Option(1.0),
    checkpoint_every: int = typer.Option(50),
    eval_every: int = typer.Option(None),
    seed: int = typer.Option(0),
    strategy: str = typer.Option("auto", help="auto|single|ddp|fsdp (auto: ddp under torchrun)"),
    config: list[str] = typer.Option(None, "--config", help="model config override KEY=VALUE (repeatable)"),
    progress: bool = typer.Option(True),
) -> None:
    """Train a system on its embedded data (under `torchrun`, the same command trains distributed)."""
    from tatlas.models import get_system
    from tatlas.train import TrainConfig
    from tatlas.train.run import parse_overrides, train_system

    overrides = parse_overrides(list(config or []), get_system(system).config_cls)
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=warmup_steps, grad_accum=grad_accum,
                      grad_clip=grad_clip, checkpoint_every=checkpoint_every, eval_every=eval_every, seed=seed,
                      out_dir=out, strategy=strategy, progress=progress)
    result = train_system(system, cfg, preset=preset, overrides=overrides, resume=resume)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    console.print(f"trained {system} ({preset or get_system(system).train_preset}) to step {result.steps}: loss {result.final_loss:.4f}"
                  + "".join(f", {k} {v:.4g}" for k, v in result.eval.items()))
    for label, path in (("weights", result.model_path), ("metrics", result.metrics_path), ("plot", result.plot_path)):
        if path is not None:
            console.print(f"{label}: {path}")


def _sampling(max_new_tokens, temperature, top_k, top_p, min_p, repetition_penalty, beams, seed, compile_):
    from tatlas.generate import GenerationConfig

    return GenerationConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                            min_p=min_p, repetition_penalty=repetition_penalty, num_beams=beams, seed=seed,
                            compile=compile_)


_MODEL = typer.Option(..., "--model", help="a tatlas checkpoint, a Hugging Face folder (with tokenizer.json), a GGUF file, or a named real model: smollm2")
_MAX_NEW = typer.Option(128, "--max-new-tokens")
_TEMP = typer.Option(0.0, help="0 = greedy")
_TOP_K = typer.Option(None, "--top-k")
_TOP_P = typer.Option(None, "--top-p")
_MIN_P = typer.Option(None, "--min-p")
_REP = typer.Option(1.0, "--repetition-penalty")
_BEAMS = typer.Option(1, "--beams")
_SEED = typer.Option(None)
_INT8 = typer.Option(False, "--int8", help="int8 weight-only quantisation")
_DEQUANT = typer.Option(False, "--dequantize", help="a GGUF file's weights dequantised to float32 (default: its "
                                                    "quantised layers run on their blocks)")
_COMPILE = typer.Option(False, "--compile", help="compile the decode step (static cache)")


@app.command("generate")
def generate_cmd(
    model: Path = _MODEL,
    prompt: str = typer.Option(..., help="the text to continue"),
    image: list[Path] = typer.Option(None, help="an image, for image-text models (repeat for several; the prompt's "
                                                "<image> marks mark where each goes, else they go first)"),
    max_new_tokens: int = _MAX_NEW, temperature: float = _TEMP, top_k: int = _TOP_K, top_p: float = _TOP_P,
    min_p: float = _MIN_P, repetition_penalty: float = _REP, beams: int = _BEAMS, seed: int = _SEED,
    int8: bool = _INT8, compile_: bool = _COMPILE, dequantize: bool = _DEQUANT,
) -> None:
    """Continue a prompt, streaming tokens as they come."""
    from tatlas.jobs.llm import generate_text, load_text_model

    freeze_imports()
    config = _sampling(max_new_tokens, temperature, top_k, top_p, min_p, repetition_penalty, beams, seed, compile_)
    tm = load_text_model(model, int8=int8, dequantize=dequantize)
    generate_text(tm, prompt, config, images=image or (), on_text=lambda piece: print(piece, end="", flush=True))
    print()
    for note in tm.notes:
        console.print(f"[dim]note: {note}[/dim]", soft_wrap=True)


@app.command()
def chat(
    model: Path = _MODEL,
    system: str = typer.Option(None, help="a system message"),
    image: list[Path] = typer.Option(None, help="an image the conversation is about (repeat for several)"),
    max_new_tokens: int = _MAX_NEW, temperature: float = _TEMP, top_k: int = _TOP_K, top_p: float = _TOP_P,
    min_p: float = _MIN_P, repetition_penalty: float = _REP, seed: int = _SEED, int8: bool = _INT8,
    dequantize: bool = _DEQUANT,
) -> None:
    """Multi-turn chat through the chat template stored with the model (an empty line or EOF ends);
    ``--image`` files join the first user turn (image-text models: llava, internvl, Gemma 3)."""
    import sys

    from tatlas.jobs.llm import fit_chat, generate_text, load_text_model

    freeze_imports()
    config = _sampling(max_new_tokens, temperature, top_k, top_p, min_p, repetition_penalty, 1, seed, False)
    tm = load_text_model(model, int8=int8, dequantize=dequantize)
    images = list(image or ())
    if images:
        from tatlas.jobs.llm import prepare_images

        prepare_images(tm, images)  # unreadable files fail now, before the first turn
    messages = [{"role": "system", "content": system}] if system else []
    told = False
    while True:
        print("you> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line.strip():
            break
        messages.append({"role": "user", "content": line.strip()})
        messages, dropped = fit_chat(tm, messages, config, images=images)  # the oldest turns give way
        if dropped and not told:
            told = True
            console.print(f"[dim]note: the conversation outgrew the model's positions: its oldest turns are "
                          f"dropped from now on{' (the system message stays)' if system else ''}[/dim]", soft_wrap=True)
        print("model> ", end="", flush=True)
        reply = generate_text(tm, "", config, chat=messages, images=images,
                              on_text=lambda p: print(p, end="", flush=True))
        print()
        messages.append({"role": "assistant", "content": reply})


imagegpt_app = new_app("ImageGPT: complete images pixel by pixel.")
app.add_typer(imagegpt_app, name="imagegpt")


@imagegpt_app.command("complete")
def imagegpt_complete(
    image: Path = typer.Argument(..., help="an image file (PNG, or any format Pillow reads), any mode and size"),
    out: Path = typer.Option(..., help="the PNG grid to write: original, masked input, samples"),
    model: Path = typer.Option(None, help="a tatlas ImageGPT checkpoint or a Hugging Face ImageGPT folder"),
    top_half: bool = typer.Option(False, "--top-half", help="keep the top half of the image (the default)"),
    fraction: float = typer.Option(None, help="keep the first F of the pixels, in raster order"),
    samples: int = typer.Option(4, help="completions to sample"),
    temperature: float = typer.Option(1.0, help="0 = greedy"),
    top_k: int = typer.Option(None, "--top-k", help="sample among the k most likely colours"),
    seed: int = typer.Option(0),
) -> None:
    """Complete an image from its top half (or its first fraction of pixels) with ImageGPT."""
    from tatlas.jobs.imagegpt import complete_image_file

    report = complete_image_file(image, out=out, model=model, fraction=fraction, top_half=top_half,
                                 samples=samples, temperature=temperature, top_k=top_k, seed=seed)
    for note in report.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    console.print(f"kept {report.kept} of {report.total} pixels; grid: {report.out}", soft_wrap=True)


@app.command()
def fold(
    msa: Path = typer.Argument(..., help="an alignment: A3M, aligned FASTA or Stockholm (query first)"),
    model: Path = typer.Option(..., "--model", help="a tatlas evoformer checkpoint, or AlphaFold2 parameters "
                                                     "(params_model_*.npz) with --weights alphafold2"),
    out: Path = typer.Option(..., "--out", help="folder for prediction.npz, contacts.png, distogram.png, ca.pdb"),
    weights: str = typer.Option(None, "--weights", help="the model file's format: alphafold2 (default: ours)"),
    msa_format: str = typer.Option(None, "--format", help="a3m | fasta | stockholm (default: from the suffix)"),
    recycles: int = typer.Option(None, help="recycling passes (default: the model's)"),
    chunk_size: int = typer.Option(None, "--chunk-size", help="rows per chunk in attention (less memory)"),
) -> None:
    """Predict the distogram, contacts and Cα trace of the alignment's query with an Evoformer."""
    from tatlas.jobs.evoformer import fold as run_fold, load_model

    if recycles is not None and recycles < 0 or chunk_size is not None and chunk_size < 1:
        raise ValueError(f"--recycles >= 0 and --chunk-size >= 1 expected, got {recycles} and {chunk_size}")
    from tatlas.io.paths import check_output_dir

    check_output_dir(out, "--out")  # before the model runs
    result = run_fold(msa, load_model(model, format=weights), out, format=msa_format, recycles=recycles,
                      chunk_size=chunk_size)
    console.print(f"{result.length} residues, {result.depth} sequences; wrote {result.npz}, {result.contacts_png}, "
                  f"{result.distogram_png}" + (f", {result.pdb}" if result.pdb else ""), soft_wrap=True)


from tatlas.cli.clip import app as _clip_app
app.add_typer(_clip_app, name="clip")


from tatlas.cli.dt import app as dt_app
app.add_typer(dt_app, name="dt")

from tatlas.cli.imagebind import app as _imagebind_app
app.add_typer(_imagebind_app, name="imagebind")

from tatlas.cli.transcribe import transcribe_cmd as _transcribe_cmd
app.command("transcribe")(_transcribe_cmd)

from tatlas.cli.serve import serve_cmd as _serve_cmd  # tatlas.serve itself is imported when it runs
app.command("serve")(_serve_cmd)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
