"""The one trainer every system uses.

``Trainer(model, loss_fn, train_data, config).fit()`` runs ``config.steps`` optimizer steps of
AdamW (Loshchilov & Hutter 2019) with linear warm-up and cosine decay (Loshchilov & Hutter 2017),
gradient accumulation, global-norm clipping (Pascanu et al. 2013), bfloat16 autocast on CUDA, on
one process or under ``torchrun`` with DDP or FSDP2 (:mod:`.distributed`).

One optimizer step: ``grad_accum`` micro-batches, each ``loss = loss_fn(model, batch)``, backward
of ``loss / grad_accum`` (gradients synchronised across ranks on the last one only); the step's
loss (mean over micro-batches and ranks) is checked for NaN/inf, the gradient norm measured and
clipped, then AdamW and the schedule advance. A non-finite loss or gradient norm stops the run with
:class:`TrainingDiverged` before the optimizer touches the weights, so the last checkpoint stays good.

Reproducibility: Python, NumPy and torch are seeded with ``seed + rank``; the data order is a pure
function of ``seed`` and the step (:mod:`.sampler`); a checkpoint stores weights, optimizer,
schedule, data position and every RNG state, so an interrupted and resumed run follows the same
loss curve as an uninterrupted one. ``deterministic=True`` also turns on
``torch.use_deterministic_algorithms`` (restored when ``fit`` returns).

Ctrl-C (SIGINT) or SIGTERM during ``fit``: the current step finishes, a checkpoint is written (when
``out_dir`` is set), and ``fit`` returns normally with ``interrupted=True``. A second Ctrl-C raises
``KeyboardInterrupt`` at once.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, default_collate

from ..io import CheckpointError, check_output_dir
from ..nn.threads import NoTuner, ThreadTuner, tuned_threads
from . import distributed as D
from .checkpoint import (
    CheckpointStore,
    load_weights,
    resolve_checkpoint,
    rng_file_name,
    rng_state,
    save_weights,
    set_rng_state,
    torch_load,
    torch_save,
)
from .config import TrainConfig
from .metrics import MetricsLogger
from .optim import WarmupCosine, build_optimizer
from .runlock import RunLock
from .runtime import StopSignal, autocast, seed_everything, split_loss, to_device
from .sampler import InfiniteBatchSampler

log = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, Any], "Tensor | Mapping[str, Tensor]"]
EvalFn = Callable[[nn.Module], Mapping[str, float]]

# config fields that may change between a checkpoint and its resumption without a warning
_FREE_TO_CHANGE = {"steps", "eval_every", "checkpoint_every", "keep_checkpoints", "log_every", "out_dir",
                   "num_workers", "device", "strategy", "progress"}


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN or infinite at ``step`` (1-based optimizer step).
    The weights and the checkpoints are those from before that step."""

    def __init__(self, step: int, loss: float, grad_norm: float | None = None, last_checkpoint: Path | None = None):
        self.step, self.loss, self.grad_norm, self.last_checkpoint = step, loss, grad_norm, last_checkpoint
        what = f"loss is {loss}" if not math.isfinite(loss) else f"gradient norm is {grad_norm} (loss {loss:.4g})"
        where = f"; the newest checkpoint ({last_checkpoint}) is from before it" if last_checkpoint else ""
        super().__init__(f"training diverged at step {step}: {what}{where}; "
                         "try a lower lr, more warm-up, or grad_clip")


@dataclass(frozen=True, kw_only=True)
class TrainResult:
    """What :meth:`Trainer.fit` did. ``losses[i]`` is the loss of step ``start_step + i + 1``."""

    steps: int  # optimizer steps completed, counting those before a resume
    start_step: int  # 0, or the step of the checkpoint this run resumed from
    final_loss: float
    losses: tuple[float, ...]
    samples_per_s: float
    tokens_per_s: float | None
    elapsed_s: float  # wall time of the whole run, including time before a resume
    interrupted: bool = False
    resumed_from: Path | None = None
    checkpoint: Path | None = None  # the newest checkpoint written by this run
    metrics_path: Path | None = None
    plot_path: Path | None = None
    model_path: Path | None = None  # final weights (tatlas.load-able for registered systems)
    eval: dict[str, float] = field(default_factory=dict)  # the last evaluation


@dataclass(frozen=True, kw_only=True)
class _StepStats:
    """What one optimizer step reports for logging: the loss and the loss dict's other scalars
    (``extras``, in sorted key order), each the mean over micro-batches and ranks; the gradient norm
    before clipping; the learning rate the step used; the tokens of all ranks' micro-batches."""

    loss: float
    extras: dict[str, float]
    grad_norm: float
    lr: float
    tokens: int


class Trainer:
    """Train ``model`` by minimising ``loss_fn(model, batch)`` over ``train_data``.

    - ``loss_fn(model, batch) -> Tensor | dict[str, Tensor]``: a scalar loss, or a dict holding it
      under ``"loss"``; the dict's other scalar entries are averaged like the loss and logged.
      ``model`` is always the unwrapped model (also under DDP).
    - ``train_data``: a map-style dataset (``__len__`` and ``__getitem__``); batches are made by
      ``collate_fn`` (default ``torch.utils.data.default_collate``) and moved to the device
      (tensors inside dicts, lists and tuples too).
    - ``eval_fn(model) -> dict[str, float]``: every ``eval_every`` steps and after the last one, in
      ``eval()`` mode under ``torch.no_grad()`` and the run's autocast; every rank calls it (FSDP
      needs all ranks in a forward), rank 0's numbers are logged as ``eval/<name>``.
    - ``tokens_fn(batch) -> int``: tokens in a micro-batch, to report tokens/s as well as samples/s.

    Errors that can be known before training (empty dataset, batch larger than the dataset, a
    batch that does not split over ranks and micro-batches, not a map-style dataset) are raised here.
    """

    def __init__(
        self, model: nn.Module, loss_fn: LossFn, train_data: Any, config: TrainConfig, *,
        eval_fn: EvalFn | None = None, collate_fn: Callable[[list[Any]], Any] | None = None,
        tokens_fn: Callable[[Any], int] | None = None,
    ) -> None:
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
        try:
            n = len(train_data)
        except TypeError:
            raise TypeError(
                "train_data: expected a map-style dataset with __len__ and __getitem__, "
                f"got {type(train_data).__name__}"
            ) from None
        self.strategy = D.resolve_strategy(config)
        self.world_size = D.planned_world_size(self.strategy)
        InfiniteBatchSampler(n, batch_size=config.batch_size, seed=config.seed, world_size=self.world_size,
                             grad_accum=config.grad_accum)  # validates
        self.model, self.loss_fn, self.train_data, self.config = model, loss_fn, train_data, config
        self.eval_fn, self.collate_fn, self.tokens_fn = eval_fn, collate_fn or default_collate, tokens_fn
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: WarmupCosine | None = None

    # ------------------------------------------------------------------ public

    def fit(self, *, resume: bool | str | os.PathLike[str] = False) -> TrainResult:
        """Train to ``config.steps``. ``resume=True`` continues from the newest complete
        checkpoint under ``out_dir`` (starting afresh, with a log line, when there is none); a path
        names a checkpoint folder (or a run folder) to continue from. A run that does not resume
        refuses an ``out_dir`` that already holds an earlier run's checkpoints, weights or metrics;
        the run owns ``out_dir`` while it trains (:class:`tatlas.train.runlock.RunLock`: a second
        run on it fails with :class:`~tatlas.train.runlock.RunFolderBusy`)."""
        cfg = self.config
        if resume is True and cfg.out_path is None:
            raise ValueError("fit(resume=True): expected TrainConfig.out_dir to look for checkpoints in, got None")
        if cfg.out_path is not None:
            check_output_dir(cfg.out_path, "out_dir")
        env = D.setup(cfg)
        det = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
               torch.backends.cudnn.benchmark)
        metrics: MetricsLogger | None = None
        lock: RunLock | None = None
        unit: nn.Module | None = None
        clean = False
        try:
            if cfg.deterministic:
                if env.device.type == "cuda":
                    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS determinism
                torch.use_deterministic_algorithms(True)
                torch.backends.cudnn.benchmark = False
            seed_everything(cfg.seed + env.rank)
            model = self.model.to(env.device)
            unit = D.wrap(model, self.loss_fn, env)
            self.optimizer = optimizer = build_optimizer(model, cfg)
            self.scheduler = scheduler = WarmupCosine.from_config(optimizer, cfg)
            store = None
            if cfg.out_path is not None:
                store = CheckpointStore(cfg.out_path / "checkpoints", keep=cfg.keep_checkpoints,
                                        is_main=env.is_main, barrier=env.barrier)

            if cfg.out_path is not None and env.is_main:  # this run owns out_dir until fit returns
                lock = RunLock(cfg.out_path).acquire()
            start_step, batches, elapsed_before, resumed_from = 0, 0, 0.0, None
            folder = self._find_resume(resume, store, env)
            if folder is not None:
                start_step, batches, elapsed_before = self._load(folder, model, optimizer, scheduler, env)
                resumed_from = folder
                log.info("resumed from %s (step %d)", folder, start_step)
            elif store is not None and env.is_main:
                _refuse_earlier_run(cfg.out_path, store, resumed=resume is not False)

            sampler = InfiniteBatchSampler(
                len(self.train_data), batch_size=cfg.batch_size, seed=cfg.seed, rank=env.rank,
                world_size=env.world_size, grad_accum=cfg.grad_accum, start=batches,
            )
            loader = DataLoader(
                self.train_data, batch_sampler=sampler, collate_fn=self.collate_fn, num_workers=cfg.num_workers,
                pin_memory=env.device.type == "cuda", worker_init_fn=_ignore_interrupts,
                # worker seeds from the run's seed, rank and position, never from the global RNG
                generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + batches * 1009 + env.rank),
            )
            metrics = MetricsLogger(cfg.out_path, total_steps=cfg.steps, start_step=start_step,
                                    progress=cfg.progress, enabled=env.is_main)
            # 1 or all threads, whichever runs these steps faster now; restored however the loop ends
            with StopSignal() as stop, tuned_threads(env.device) as tuner:
                result = self._loop(
                    env=env, model=model, unit=unit, optimizer=optimizer, scheduler=scheduler, store=store,
                    sampler=sampler, batches=iter(loader), metrics=metrics, stop=stop, start_step=start_step,
                    elapsed_before=elapsed_before, resumed_from=resumed_from, tuner=tuner,
                )
            clean = True
            return result
        finally:
            if metrics is not None:
                if not clean:  # a diverged or failed run: still draw what it logged
                    with contextlib.suppress(Exception):
                        metrics.plot()
                metrics.close()
            torch.use_deterministic_algorithms(det[0], warn_only=det[1])
            torch.backends.cudnn.benchmark = det[2]
            if env.distributed:  # free the DDP wrapper (its reducer holds the process group) first
                del unit
                gc.collect()
            D.teardown(env, clean=clean)
            if lock is not None:
                lock.release()

    # ------------------------------------------------------------------ the loop

    def _loop(
        self, *, env: D.DistEnv, model: nn.Module, unit: nn.Module, optimizer: torch.optim.Optimizer,
        scheduler: WarmupCosine, store: CheckpointStore | None, sampler: InfiniteBatchSampler,
        batches: Iterator[Any], metrics: MetricsLogger, stop: StopSignal, start_step: int,
        elapsed_before: float, resumed_from: Path | None, tuner: ThreadTuner | NoTuner,
    ) -> TrainResult:
        """Steps ``start_step + 1`` .. ``config.steps``: each one :meth:`_step`, then its log line, the
        evaluation and the checkpoint when due; a SIGINT/SIGTERM (on any rank) ends the run after the
        step with a checkpoint. Then the final weights and the plot."""
        cfg = self.config
        params = [p for g in optimizer.param_groups for p in g["params"]]
        t_start = time.perf_counter()
        losses: list[float] = []
        extra_keys: list[str] | None = None
        train_time, samples_done, tokens_done = 0.0, 0, 0
        window = {"time": 0.0, "samples": 0, "tokens": 0}
        last_eval: dict[str, float] = {}
        checkpoint: Path | None = None
        interrupted = False
        step = start_step
        unit.train()
        while step < cfg.steps:
            tuner.tick()
            t0 = time.perf_counter()
            report = self._step(
                env=env, model=model, unit=unit, optimizer=optimizer, scheduler=scheduler, params=params,
                batches=batches, step=step, extra_keys=extra_keys, metrics=metrics,
                last_checkpoint=checkpoint or resumed_from,
            )
            extra_keys = list(report.extras)  # every later step must return the same entries
            step += 1

            dt = time.perf_counter() - t0  # throughput, and the log line every log_every steps
            losses.append(report.loss)
            train_time += dt
            samples_done += cfg.batch_size
            tokens_done += report.tokens
            window["time"] += dt
            window["samples"] += cfg.batch_size
            window["tokens"] += report.tokens
            metrics.advance(step, report.loss, cfg.batch_size / max(dt, 1e-9))
            if step % cfg.log_every == 0 or step == cfg.steps:
                record = {
                    "step": step, "loss": report.loss, "lr": report.lr, "grad_norm": report.grad_norm,
                    "samples_per_s": window["samples"] / max(window["time"], 1e-9),
                    **({"tokens_per_s": window["tokens"] / max(window["time"], 1e-9)} if self.tokens_fn else {}),
                    "elapsed": elapsed_before + time.perf_counter() - t_start,
                    **report.extras,
                }
                metrics.log(record)
                window = {"time": 0.0, "samples": 0, "tokens": 0}
            if self.eval_fn is not None and (
                step == cfg.steps or (cfg.eval_every is not None and step % cfg.eval_every == 0)
            ):
                tuner.pause()
                last_eval = self._evaluate(model, env, cfg)
                metrics.log({"step": step, "elapsed": elapsed_before + time.perf_counter() - t_start,
                             **{f"eval/{k}": v for k, v in last_eval.items()}})
            interrupted = stop.signum is not None
            if env.distributed:  # every rank stops at the same step
                flag = torch.tensor([float(interrupted)], device=env.device)
                interrupted = bool(env.all_reduce(flag, "max").item())
            due = cfg.checkpoint_every is not None and (step % cfg.checkpoint_every == 0 or step == cfg.steps)
            if store is not None and (due or interrupted):
                tuner.pause()
                checkpoint = self._save(store, step, sampler.position(sampler.start + step - start_step), model,
                                        optimizer, scheduler, env, elapsed_before + time.perf_counter() - t_start)
            if interrupted:
                if env.is_main:
                    log.warning("interrupted at step %d%s", step, f"; checkpoint saved to {checkpoint}"
                                if checkpoint else " (no out_dir: nothing saved)")
                break

        model_path = None
        if not interrupted and cfg.out_path is not None:
            state = D.full_state_dict(model, env)
            if state is not None:
                model_path = save_weights(model, {k: v.detach().cpu() for k, v in state.items()},
                                          cfg.out_path / "model.safetensors")
            env.barrier()
        plot_path = metrics.plot()
        return TrainResult(
            steps=step, start_step=start_step, final_loss=losses[-1] if losses else math.nan,
            losses=tuple(losses), samples_per_s=samples_done / max(train_time, 1e-9),
            tokens_per_s=tokens_done / max(train_time, 1e-9) if self.tokens_fn else None,
            elapsed_s=elapsed_before + time.perf_counter() - t_start, interrupted=interrupted,
            resumed_from=resumed_from, checkpoint=checkpoint, metrics_path=metrics.path, plot_path=plot_path,
            model_path=model_path, eval=last_eval,
        )

    def _step(
        self, *, env: D.DistEnv, model: nn.Module, unit: nn.Module, optimizer: torch.optim.Optimizer,
        scheduler: WarmupCosine, params: list[Tensor], batches: Iterator[Any], step: int,
        extra_keys: list[str] | None, metrics: MetricsLogger, last_checkpoint: Path | None,
    ) -> _StepStats:
        """Optimizer step ``step + 1``: ``grad_accum`` micro-batches of forward (the run's autocast)
        and backward of ``loss / grad_accum`` (gradients synchronised across ranks on the last only),
        one all-reduce of everything logged, the NaN/inf checks, clipping, AdamW and the schedule.
        ``extra_keys``: the loss dict's other entries every earlier step returned (``None`` before
        the first step). A non-finite loss or gradient norm is logged and raises
        :class:`TrainingDiverged` (naming ``last_checkpoint``) before the optimizer touches the weights."""
        cfg = self.config
        sums: Tensor | None = None
        tokens = 0
        for micro in range(cfg.grad_accum):
            batch = next(batches)
            if self.tokens_fn is not None:
                tokens += int(self.tokens_fn(batch))
            batch = to_device(batch, env.device)
            with D.gradient_sync(unit, model, env, enabled=micro == cfg.grad_accum - 1):
                with autocast(cfg.precision, env.device):
                    out = unit(batch)
                loss, extras = split_loss(out, step + 1)
                (loss / cfg.grad_accum).backward()
            if extra_keys is None:
                extra_keys = sorted(extras)
            elif sorted(extras) != extra_keys:
                raise ValueError(f"loss_fn returned entries {sorted(extras)} at step {step + 1}, "
                                 f"expected the same entries as before: {extra_keys}")
            values = torch.stack([loss.detach().float(), *(extras[k].detach().float() for k in extra_keys)])
            sums = values if sums is None else sums + values
        assert sums is not None and extra_keys is not None
        # one all-reduce for everything logged: [loss, extras..., tokens]
        totals = torch.cat([sums.double() / cfg.grad_accum, sums.new_tensor([tokens], dtype=torch.float64)])
        reduced = env.all_reduce(totals)
        reduced[:-1] /= env.world_size
        stats = reduced.tolist()
        loss_value, tokens = stats[0], int(stats[-1])
        if not math.isfinite(loss_value):
            metrics.log({"step": step + 1, "loss": loss_value})
            raise TrainingDiverged(step + 1, loss_value, last_checkpoint=last_checkpoint)
        grad_norm = float(D.clip_grad_norm(params, cfg.grad_clip))
        if not math.isfinite(grad_norm):
            metrics.log({"step": step + 1, "loss": loss_value, "grad_norm": grad_norm})
            raise TrainingDiverged(step + 1, loss_value, grad_norm, last_checkpoint=last_checkpoint)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        return _StepStats(loss=loss_value, extras=dict(zip(extra_keys, stats[1:-1], strict=True)),
                          grad_norm=grad_norm, lr=lr, tokens=tokens)

    def _evaluate(self, model: nn.Module, env: D.DistEnv, cfg: TrainConfig) -> dict[str, float]:
        assert self.eval_fn is not None
        model.eval()
        try:
            with torch.no_grad(), autocast(cfg.precision, env.device):
                results = self.eval_fn(model)
        finally:
            model.train()
        if not isinstance(results, Mapping):
            raise TypeError(f"eval_fn: expected a dict of name -> float, got {type(results).__name__}")
        return {k: float(v) for k, v in results.items()}

    # ------------------------------------------------------------------ checkpoints

    def _save(
        self, store: CheckpointStore, step: int, data_position: dict[str, int], model: nn.Module,
        optimizer: torch.optim.Optimizer, scheduler: WarmupCosine, env: D.DistEnv, elapsed: float,
    ) -> Path:
        staging = store.begin(step)
        if env.strategy == "fsdp":
            D.save_sharded(model, optimizer, staging / "dcp")
        elif env.is_main:
            save_weights(model, {k: v.detach().cpu() for k, v in model.state_dict().items()},
                         staging / "model.safetensors")
        if env.is_main:
            torch_save({
                "format": 1, "step": step, "data": data_position,
                "scheduler": scheduler.state_dict(),
                **({} if env.strategy == "fsdp" else {"optimizer": optimizer.state_dict()}),
                "config": self.config.to_dict(), "strategy": env.strategy, "world_size": env.world_size,
                "elapsed": elapsed,
            }, staging / "trainer.pt")
        torch_save(rng_state(), staging / rng_file_name(env.rank))
        return store.commit(step, staging, {"strategy": env.strategy, "world_size": env.world_size})

    def _find_resume(self, resume: Any, store: CheckpointStore | None, env: D.DistEnv) -> Path | None:
        if resume is False or resume is None:
            return None
        found: Path | None
        if env.is_main:  # rank 0 looks (and warns about bad checkpoints), then tells the others
            if resume is True:
                assert store is not None
                found = store.newest_complete(set_aside=True)  # this run owns the folder
                if found is None:
                    log.info("no complete checkpoint under %s: starting afresh", store.root)
            else:
                found = resolve_checkpoint(resume)
                newer = [] if store is None else [d.name for s, d in store.step_dirs() if s > _step_of(found)]
                if newer:
                    log.warning("resuming from %s while %s holds later checkpoints (%s) of another timeline; "
                                "fit(resume=True) would pick those later", found, store.root, ", ".join(newer))
        else:
            found = None
        if env.distributed:
            box = [None if found is None else str(found)]
            torch.distributed.broadcast_object_list(box, src=0)
            found = None if box[0] is None else Path(box[0])
        return found

    def _load(
        self, folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: WarmupCosine,
        env: D.DistEnv,
    ) -> tuple[int, int, float]:
        state = torch_load(folder / "trainer.pt")
        sharded = (folder / "dcp").is_dir()
        if sharded != (env.strategy == "fsdp"):
            raise CheckpointError(
                f"{folder}: written with strategy {state.get('strategy')!r} "
                f"({'sharded DCP' if sharded else 'full safetensors'} weights); resuming it with strategy "
                f"{env.strategy!r} is not supported: resume with {'fsdp' if sharded else 'single or ddp'}"
            )
        hyper = [(g["weight_decay"], g["betas"]) for g in optimizer.param_groups]
        if sharded:
            D.load_sharded(model, optimizer, folder / "dcp")
        else:
            load_weights(model, folder / "model.safetensors")
            optimizer.load_state_dict(state["optimizer"])
        for group, (wd, betas) in zip(optimizer.param_groups, hyper, strict=True):  # the config is the truth
            group["weight_decay"], group["betas"] = wd, betas
        scheduler.load_state_dict(state["scheduler"])
        changed = sorted(k for k, v in self.config.to_dict().items()
                         if k not in _FREE_TO_CHANGE and state["config"].get(k, v) != v)
        if changed and env.is_main:
            log.warning("resuming %s with a different config: %s", folder,
                        ", ".join(f"{k} {state['config'].get(k)!r} -> {self.config.to_dict()[k]!r}" for k in changed))
        rng_path = folder / rng_file_name(env.rank)
        if rng_path.is_file():
            set_rng_state(torch_load(rng_path))
        else:
            log.warning("%s has no RNG state for rank %d (saved by %d ranks): RNGs stay seeded afresh",
                        folder, env.rank, state.get("world_size", 1))
        data = state["data"]
        if (data["dataset_len"], data["batch_size"]) != (len(self.train_data), self.config.batch_size) and env.is_main:
            log.warning("%s: the dataset or batch size changed (%d samples in batches of %d, now %d in %d); "
                        "the data order will not continue as before", folder, data["dataset_len"],
                        data["batch_size"], len(self.train_data), self.config.batch_size)
        return int(state["step"]), int(data["batches"]), float(state.get("elapsed", 0.0))


# ---------------------------------------------------------------------- helpers


def _refuse_earlier_run(out: Path, store: CheckpointStore, *, resumed: bool) -> None:
    """A run that starts afresh never overwrites another run's work: refuse an ``out`` folder that
    holds checkpoints, final weights or metrics, naming what is there and the way on."""
    held = [name for name in ("metrics.jsonl", "model.safetensors") if (out / name).exists()]
    corrupt = store.corrupt()
    if resumed and corrupt and not store.has_checkpoints():
        raise CheckpointError(
            f"{store.root}: no complete checkpoint to resume from; {len(corrupt)} incomplete or corrupt ones are "
            f"set aside as *.corrupt ({', '.join(p.name for p in corrupt[:3])}{', ...' if len(corrupt) > 3 else ''}); "
            "restore a good copy, or train into another out folder")
    if store.has_checkpoints():
        raise ValueError(f"{out} already holds checkpoints of an earlier run ({len(store.step_dirs())} checkpoints"
                         f"{''.join(', ' + h for h in held)}); resume it (the --resume option, or fit(resume=True)) "
                         "or choose another out folder")
    if held:
        raise ValueError(f"{out} already holds an earlier run ({', '.join(held)}) with no checkpoint to resume from; "
                         "choose another out folder, or delete it to start over")


def _ignore_interrupts(worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C to the main process, which finishes the step and saves."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _step_of(folder: Path) -> int:
    return int(torch_load(folder / "trainer.pt")["step"])
