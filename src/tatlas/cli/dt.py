"""``tatlas dt``: Decision Transformer from offline data: collect episodes of a gymnasium environment
with policies of mixed quality (saved as .npz or as a Minari dataset), train on them, and evaluate
asked for target returns. Thin: arguments -> calls into :mod:`tatlas.data.offline_rl` and
:mod:`tatlas.jobs.decision_transformer` (imported when a command runs)."""

from __future__ import annotations

from pathlib import Path

import typer

from tatlas.cli.common import new_app

app = new_app("Decision Transformer: collect offline episodes, train, evaluate at target returns.")

_MIX = "random=1,scripted=1,expert=1,noisy=3"


def _targets(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--targets: expected comma-separated numbers, e.g. \"100,300,500\", got {text!r}") from None
    if not values:
        raise ValueError("--targets: expected at least one target return")
    return values


@app.command("collect")
def collect_cmd(
    env: str = typer.Argument(..., help="a gymnasium environment: CartPole-v1, Pendulum-v1, MountainCar-v0 or "
                                        "MountainCarSparse-v0 (reward 1 at the flag, else 0)"),
    out: Path = typer.Option(..., "--out", help="where to write: a .npz file, or a Minari dataset folder named "
                                                "NAME-v<VERSION> (data/main_data.hdf5 + data/metadata.json)"),
    dataset_id: str = typer.Option(None, "--dataset-id", help="the Minari dataset id, (NAMESPACE/)NAME-v<VERSION> "
                                                              "(default: the --out folder's name)"),
    episodes: int = typer.Option(200, help="episodes to roll out"),
    mix: str = typer.Option(_MIX, help="policy weights: random, scripted, expert, noisy (expert + random actions)"),
    seed: int = typer.Option(0),
) -> None:
    """Roll out episodes of ENV with policies of mixed quality and save them as an offline dataset."""
    from tatlas.data.offline_rl import describe
    from tatlas.jobs.decision_transformer import collect_dataset

    path, data = collect_dataset(env, out, episodes=episodes, mix=mix, seed=seed, dataset_id=dataset_id)
    typer.echo(describe(data))
    typer.echo(f"wrote {path}")


@app.command("info")
def info_cmd(dataset: Path = typer.Argument(..., help="an offline dataset: .npz, a Minari dataset folder, a folder "
                                                     "of .npy, or D4RL arrays")) -> None:
    """Describe an offline dataset: episodes, steps, returns per policy."""
    from tatlas.data.offline_rl import describe, load_dataset

    data = load_dataset(dataset)
    typer.echo(describe(data))
    space = data.action_space
    typer.echo(f"states: {data.state_dim} dims; actions: "
               + (f"{space.n} discrete" if space.discrete else f"box of {space.dim} in [{space.low}, {space.high}]"))


@app.command("train")
def train_cmd(
    dataset: Path = typer.Argument(..., help="an offline dataset (from `tatlas dt collect`, a Minari dataset folder, "
                                             "or in their layouts)"),
    out: Path = typer.Option(..., "--out", help="run folder: metrics.jsonl, metrics.png, model.safetensors"),
    preset: str = typer.Option("tiny", help="model preset; its state/action sizes come from the data"),
    steps: int = typer.Option(1000),
    batch_size: int = typer.Option(32),
    lr: float = typer.Option(1e-3),
    context: int = typer.Option(None, help="K, timesteps per window (default: the preset's)"),
    eval_episodes: int = typer.Option(5, help="episodes rolled out at the data's best return after training"),
    checkpoint_every: int = typer.Option(None),
    resume: bool = typer.Option(False, help="continue from the newest checkpoint in --out"),
    seed: int = typer.Option(0),
    progress: bool = typer.Option(True),
) -> None:
    """Train a Decision Transformer on an offline dataset."""
    from tatlas.jobs.decision_transformer import DTTrainOptions, train_on_dataset

    options = DTTrainOptions(preset=preset, overrides={} if context is None else {"context": context}, steps=steps,
                             batch_size=batch_size, lr=lr, seed=seed, eval_episodes=eval_episodes,
                             checkpoint_every=checkpoint_every, progress=progress)
    result = train_on_dataset(dataset, out, options, resume=resume)
    typer.echo(f"trained to step {result.steps}: loss {result.final_loss:.4f}"
               + "".join(f", {k} {v:.4g}" for k, v in result.eval.items()))
    typer.echo(f"weights: {result.model_path}")


@app.command("evaluate")
def evaluate_cmd(
    checkpoint: Path = typer.Argument(..., help="a tatlas Decision Transformer checkpoint or a Hugging Face folder"),
    env: str = typer.Option(..., "--env", help="the gymnasium environment to act in"),
    targets: str = typer.Option(..., "--targets", help='target returns, comma-separated, e.g. "100,300,500"'),
    episodes: int = typer.Option(10, help="episodes per target"),
    seed: int = typer.Option(0),
    recompute: bool = typer.Option(False, "--recompute", help="re-encode the context every step (no KV cache)"),
    argmax: bool = typer.Option(False, "--argmax", help="discrete actions by argmax instead of sampling"),
    context: int = typer.Option(None, help="act from K timesteps (default: the model's)"),
    dataset: Path = typer.Option(None, help="show this dataset's average and best return beside"),
    plot: Path = typer.Option(None, help="write a PNG of target vs achieved return"),
) -> None:
    """Roll the model out in ENV asked for each target return; print the returns it achieves."""
    from tatlas.data.offline_rl import load_dataset
    from tatlas.jobs.decision_transformer import evaluate_checkpoint, plot_returns

    wanted = _targets(targets)
    if plot is not None:
        from tatlas.io.paths import check_output_file

        check_output_file(plot, "--plot")  # before the episodes are rolled out
    data = load_dataset(dataset) if dataset is not None else None
    results = evaluate_checkpoint(checkpoint, env, wanted, episodes=episodes, seed=seed, cached=not recompute,
                                  sample=not argmax, context=context)
    mean = best = None
    if data is not None:
        mean, best = float(data.returns().mean()), float(data.returns().max())
    if plot is not None:
        plot_returns(results, plot, data_mean=mean, data_best=best, title=f"{env}, {checkpoint.name}")
    typer.echo(f"{'target':>10} {'achieved':>10} {'± std':>8} {'min':>8} {'max':>8} {'length':>7}")
    for r in results:
        typer.echo(f"{r.target:10.1f} {r.mean:10.1f} {r.std:8.1f} {r.returns.min():8.1f} {r.returns.max():8.1f} "
                   f"{r.lengths.mean():7.1f}")
    if data is not None:
        typer.echo(f"data: average return {mean:.1f}, best {best:.1f} ({len(data.episodes)} episodes)")
    if plot is not None:
        typer.echo(f"plot: {plot}")
