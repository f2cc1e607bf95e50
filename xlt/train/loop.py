"""The training loop: pure torch, shared by QA fine-tuning and every adaptation step.

AdamW with linear warmup and decay, gradient accumulation, gradient clipping, bf16
autocast on CUDA. Two modes: `fixed` (run all steps) and `validated` (evaluate every
`eval_every` steps, stop after `patience` evaluations without improvement, restore the
best weights). Compute is metered per batch from the analytical model; the loop never
syncs with the device except at evaluation.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from xlt import compute


@dataclass
class Meter:
    """Cumulative counters of one trial; every result row carries a snapshot of them."""

    device_kind: str = "cpu"
    n_devices: int = 1
    tokens_real: int = 0
    tokens_padded: int = 0
    examples: int = 0
    flops_train: float = 0.0
    flops_train_real: float = 0.0
    flops_eval: float = 0.0
    flops_by_stage: dict[str, float] = field(default_factory=dict)
    pipeline_seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def add_train(self, stage: str, flops: dict[str, float], tokens_real: int, tokens_padded: int, examples: int) -> None:
        self.flops_train += flops["flops"]
        self.flops_train_real += flops["flops_real"]
        self.flops_by_stage[stage] = self.flops_by_stage.get(stage, 0.0) + flops["flops"]
        self.tokens_real += tokens_real
        self.tokens_padded += tokens_padded
        self.examples += examples

    def running(self) -> dict[str, Any]:
        """What the trial has computed and seen so far (a row's running totals)."""
        return {"tokens_real": self.tokens_real, "tokens_padded": self.tokens_padded, "examples_seen": self.examples,
                "flops_train": self.flops_train, "flops_eval": self.flops_eval}

    def clocks(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.started
        return {"wall_seconds": wall, "pipeline_seconds": self.pipeline_seconds or wall,
                "device_seconds": compute.device_seconds(wall, self.n_devices)}

    def snapshot(self, stage: str) -> dict[str, Any]:
        """A row's compute columns: the running totals, this stage's FLOPs, the clocks."""
        return {
            **self.running(),
            "flops_stage": self.flops_by_stage.get(stage, 0.0),
            "padding_share": 1 - self.flops_train_real / self.flops_train if self.flops_train else 0.0,
            **self.clocks(),
            "device_kind": self.device_kind,
            "n_devices": self.n_devices,
            "peak_memory_bytes": self.peak_memory_bytes(),
        }

    def peak_memory_bytes(self) -> int | None:
        """The process's peak CUDA memory so far (trial.start resets it); None off CUDA."""
        if not self.device_kind.startswith("cuda") or not torch.cuda.is_available():
            return None
        return int(torch.cuda.max_memory_allocated())

    def attribute(self, stage: str, flops: float) -> None:
        """A cached artifact's compute still counts towards this trial's cost (it may have been paid by
        another trial; the curve of a trial must not depend on the order trials ran in)."""
        self.add_train(stage, {"flops": flops, "flops_real": flops}, 0, 0, 0)


def batch_compute(shape: compute.EncoderShape, plan: compute.Plan, mask: torch.Tensor, train: bool,
                  mlm_positions: int | None = None) -> tuple[dict[str, float], int, int]:
    """(flops dict, real tokens, padded positions) of one batch; `mask` is the attention mask."""
    lengths = mask.sum(dim=1).tolist()
    flops = compute.batch_flops(shape, lengths, mask.shape[1], plan, train=train, mlm_positions=mlm_positions)
    return flops, int(sum(lengths)), mask.numel()


@dataclass
class LoopConfig:
    total_steps: int  # optimizer steps
    lr: float
    warmup: float = 0.1
    weight_decay: float = 0.01
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    eval_every: int | None = None  # optimizer steps; None: only at the end
    patience: int | None = None  # validated mode when set
    batch_key: str = "the batch size"  # the spec key that sets the micro-batch, for an out-of-memory error
    eval_batch_key: str = "train.eval_batch_size"


@dataclass
class LoopState:
    step: int = 0
    micro: int = 0
    last_loss: float = float("nan")
    best_score: float = -math.inf
    best_step: int = 0
    evals_since_best: int = 0
    stopped_early: bool = False
    finished: bool = False  # the last evaluation has run: a state restored from a checkpoint resumes after it
    best_weights: dict[str, torch.Tensor] | None = None  # validated mode; part of the state so a checkpoint keeps it


@dataclass
class Hooks:
    """What a caller runs inside the loop without changing it (levanter's `add_hook(fn, every=N)`):
    functions of the loop state every N optimizer steps, and just before and after each evaluation
    (the benchmark pauses its training clock there)."""

    every: list[tuple[int, Callable[[LoopState], None]]] = field(default_factory=list)
    eval_start: list[Callable[[LoopState], None]] = field(default_factory=list)
    eval_end: list[Callable[[LoopState], None]] = field(default_factory=list)

    def add_hook(self, fn: Callable[[LoopState], None], every: int = 1) -> None:
        self.every.append((every, fn))

    def step(self, state: LoopState) -> None:
        for n, fn in self.every:
            if state.step % n == 0:
                fn(state)

    @staticmethod
    def run(fns: list[Callable[[LoopState], None]], state: LoopState) -> None:
        for fn in fns:
            fn(state)


@dataclass
class Session:
    """How a pipeline runs when a launcher hosts it (xlt.train.worker under Ray Train); the default
    is one process without checkpoints. Plain values and callables, so pipelines stay launcher-free.

    Every rank runs the whole pipeline (the same evaluations, so early-stopping decisions agree
    without a collective) and trains on every `world_size`-th batch of one global batch order."""

    rank: int = 0
    world_size: int = 1
    wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None  # the module to train through (e.g. DDP)
    resume: dict[str, Any] | None = None  # the state `on_event` last saved, when restarting from a checkpoint
    # called after each evaluation, once the loop state is updated, with a getter of the state to save
    on_event: Callable[[Callable[[], dict[str, Any]]], None] | None = None
    trial_dir: str | None = None  # storage every rank and every restart of the trial sees
    barrier: Callable[[], None] | None = None  # waits for every rank
    broadcast: Callable[[Any], Any] | None = None  # rank 0's value, on every rank (decisions ranks must share)
    hooks: Hooks = field(default_factory=lambda: Hooks())  # run by every stage's loop

    def agree(self, value: Any) -> Any:
        return self.broadcast(value) if self.broadcast is not None else value


def resumes(session: Session, stage: str) -> dict[str, Any] | None:
    """The checkpoint `session` restarts from, when it was taken inside `stage`."""
    return session.resume if session.resume is not None and session.resume.get("stage") == stage else None


def shared(session: Session | None, name: str, make: Callable[[], Any], save: Callable[[Any, Path], None],
           load: Callable[[Path], Any]) -> Any:
    """An artifact every rank and every restart of a trial must use the same of, where making it
    twice need not give the same (a trained tokenizer): rank 0 makes it once into the trial
    directory, then every rank loads it. Without a trial directory it is just made."""
    if session is None or session.trial_dir is None:
        return make()
    path = Path(session.trial_dir) / name
    if session.rank == 0 and not path.exists():
        tmp = path.with_name(f".{name}.{os.getpid()}")
        save(make(), tmp)
        os.replace(tmp, path)
    if session.barrier is not None:
        session.barrier()
    return load(path)


class BatchCursor:
    """One global, resumable order of training batches: epoch e is `order(rng)` with the rng as it
    stood when e began, so a position (epoch, index, rng state) can be saved and resumed."""

    def __init__(self, order: Callable[[random.Random], list[Any]], seed: int):
        self.order, self.rng = order, random.Random(seed)
        self.epoch, self.index, self.rng_state = 0, 0, self.rng.getstate()

    def __iter__(self) -> Iterator[Any]:
        while True:
            self.rng.setstate(self.rng_state)
            items = self.order(self.rng)
            while self.index < len(items):
                self.index += 1
                yield items[self.index - 1]
            self.epoch, self.index, self.rng_state = self.epoch + 1, 0, self.rng.getstate()

    def state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "index": self.index, "rng_state": self.rng_state}

    def load(self, saved: dict[str, Any]) -> None:
        self.epoch, self.index = saved["epoch"], saved["index"]
        self.rng_state = _as_tuples(saved["rng_state"])


def _as_tuples(x: Any) -> Any:
    return tuple(_as_tuples(v) for v in x) if isinstance(x, list | tuple) else x


def shard(items: Iterable[Any], session: Session, skipped: Callable[[Any], None]) -> Iterator[Any]:
    """This rank's share of a global order: every world_size-th item; `skipped` sees the other
    ranks' items (so the meter counts the whole job's training)."""
    items = iter(items)
    while True:
        group = [next(items) for _ in range(session.world_size)]
        for rank, item in enumerate(group):
            if rank != session.rank:
                skipped(item)
        yield group[session.rank]


def capture(stage: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, state: LoopState,
            meter: Meter, **extra: Any) -> dict[str, Any]:
    """Everything a stage needs to resume after an evaluation (tensors and plain values only, so it
    loads with `torch.load(weights_only=True)`)."""
    m = {k: v for k, v in vars(meter).items() if k != "started"}
    return {"stage": stage, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "loop": dict(vars(state)), "meter": m,
            "wall": time.perf_counter() - meter.started, "torch_rng": torch.get_rng_state(), **extra}


def restore(saved: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
            meter: Meter) -> LoopState:
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    for k, v in saved["meter"].items():
        setattr(meter, k, v)
    meter.started = time.perf_counter() - saved["wall"]  # wall time goes on from the checkpoint
    torch.set_rng_state(saved["torch_rng"])
    return LoopState(**saved["loop"])


class Stage(Protocol):
    """What `run_stage` trains, and everything of it a checkpoint must hold besides the model,
    optimizer, schedule and meter: the stage owns its resume state, so `run_stage` alone restores
    and checkpoints it. `checkpoint`: whether the stage saves one at its evaluations."""

    name: str

    @property
    def checkpoint(self) -> bool: ...

    def batches(self, state: LoopState) -> Iterator[dict[str, torch.Tensor]]:
        """This rank's batches from where `state` stands (a fresh or a restored state)."""
        ...

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def on_batch(self, batch: dict[str, torch.Tensor]) -> None:
        """Sees every batch this rank trains on (the meter)."""
        ...

    def evaluate(self, state: LoopState) -> float | None:
        """The evaluation's validation score (None: nothing to validate on)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, saved: dict[str, Any]) -> None: ...


def run_stage(model: torch.nn.Module, stage: Stage, cfg: LoopConfig, *, session: Session, meter: Meter,
              device: torch.device) -> tuple[LoopState, dict[str, Any] | None]:
    """One resumable training stage: its optimizer and schedule, a restore when `session` resumes
    inside the stage (model, optimizer, schedule, meter, then the stage's own state), a checkpoint
    after each evaluation, and the loop. Returns the final state and the checkpoint the stage
    resumed from."""
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, device)
    scheduler = linear_schedule(optimizer, cfg.total_steps, cfg.warmup)
    state = LoopState()
    saved = resumes(session, stage.name)
    if saved is not None:
        state = restore(saved, model, optimizer, scheduler, meter)
        stage.load_state_dict(saved)
    after_eval = None
    if session.on_event is not None and stage.checkpoint:
        def after_eval(st: LoopState) -> None:
            extra = stage.state_dict()
            on_event = session.on_event
            assert on_event is not None
            on_event(lambda: capture(stage.name, model, optimizer, scheduler, st, meter, **extra))
    state = train_loop(session.wrap(model) if session.wrap else model, stage.batches(state), cfg, device=device,
                       loss_fn=stage.loss, on_batch=stage.on_batch, evaluate=stage.evaluate, state=state,
                       optimizer=optimizer, scheduler=scheduler, after_eval=after_eval, hooks=session.hooks)
    return state, saved


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over trainable parameters; no decay on biases and LayerNorm weights (as BERT)."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused kernels exist for CUDA and CPU (torch >= 2.4; 2.6x faster than foreach in a CPU step,
    # weights equal to 2.4e-7); other devices get the multi-tensor foreach path
    fast: dict[str, Any] = {"fused": True} if device.type in ("cuda", "cpu") else {"foreach": True}
    return torch.optim.AdamW(groups, lr=lr, **fast)


def linear_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup: float):
    warm = int(warmup * total_steps)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total_steps - step) / max(1, total_steps - warm))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def out_of_memory(where: str, key: str, batch: dict[str, torch.Tensor] | None) -> Exception:
    """The one-line failure of a step that did not fit in device memory (torch.OutOfMemoryError,
    which CUDA raises): where, the micro-batch's shape, and the key to lower."""
    from xlt.errors import OutOfDeviceMemory

    ids = batch.get("input_ids") if batch else None
    shape = f" (micro-batch of {ids.shape[0]} x {ids.shape[1]} tokens)" if ids is not None and ids.ndim == 2 else ""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    accum = " (and raise train.grad_accum to keep the effective batch)" if key == "train.batch_size" else ""
    return OutOfDeviceMemory(f"out of device memory {where}{shape}: lower {key}{accum}")


def train_loop(
    model: torch.nn.Module,
    batches: Iterator[dict[str, torch.Tensor]],
    cfg: LoopConfig,
    *,
    device: torch.device,
    loss_fn: Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor],
    on_batch: Callable[[dict[str, torch.Tensor]], None],
    evaluate: Callable[[LoopState], float | None],
    state: LoopState | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    after_eval: Callable[[LoopState], None] | None = None,
    hooks: Hooks | None = None,
) -> LoopState:
    """Run optimizer steps until `cfg.total_steps` (or early stop); `evaluate` runs every
    `eval_every` steps and at the end, returning the validation score (higher is better)
    or None. In validated mode the best weights are restored before returning. `after_eval` runs
    after each evaluation once the state is updated (a checkpoint taken there resumes exactly);
    a `state` that is `finished` (restored after the last evaluation) trains no further."""
    state = state or LoopState()
    hooks = hooks or Hooks()
    optimizer = optimizer or make_optimizer(model, cfg.lr, cfg.weight_decay, device)
    scheduler = scheduler or linear_schedule(optimizer, cfg.total_steps, cfg.warmup)
    params = [p for p in model.parameters() if p.requires_grad]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    loss_sum = torch.zeros((), device=device)
    model.train()
    # Divergence. A NaN/inf loss poisons the weights for good (clipping scales every gradient by
    # nan, AdamW spreads it), so training on wastes compute and evaluating would log rows of a
    # broken model. The loop syncs with the device only at evaluation and this keeps it so: each
    # micro-step records the first step whose loss is not finite with four tiny device ops queued
    # behind its backward pass (`bad_step`, `bad_loss` stay on the device; a `loss.item()` per step
    # would stall a GPU's launch queue every step). The host reads them at each evaluation, where
    # reading `loss_sum` syncs anyway, before the model is evaluated: a diverged trial logs no row
    # after its last good one. On CPU the tensors are host memory and reading them waits for
    # nothing, so there they are also read after every micro-step and a trial stops at once, not
    # at its next evaluation (which may be the end of the stage).
    from xlt.errors import TrainingDiverged

    bad_step = torch.full((), -1, dtype=torch.long, device=device)
    bad_loss = torch.zeros((), device=device)
    poll = device.type == "cpu"

    def diverged() -> None:
        step = int(bad_step)
        if step >= 0:
            raise TrainingDiverged(f"training diverged: loss is {float(bad_loss)} at step {step} (lr {cfg.lr:g})")

    def check(final: bool) -> bool:
        nonlocal loss_sum
        state.last_loss = float(loss_sum) / max(1, cfg.grad_accum * (cfg.eval_every or state.step or 1))
        diverged()
        loss_sum = torch.zeros((), device=device)
        Hooks.run(hooks.eval_start, state)
        model.eval()
        try:
            score = evaluate(state)
        except torch.OutOfMemoryError:
            raise out_of_memory(f"evaluating at step {state.step}", cfg.eval_batch_key, None) from None
        model.train()
        Hooks.run(hooks.eval_end, state)
        stop = False
        if score is not None and cfg.patience is not None:
            if score > state.best_score:
                state.best_score, state.best_step, state.evals_since_best = score, state.step, 0
                state.best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                state.evals_since_best += 1
            stop = not final and state.evals_since_best >= cfg.patience
        state.stopped_early = stop
        state.finished = final or stop
        if after_eval is not None:
            after_eval(state)
        return stop

    while not state.finished and state.step < cfg.total_steps:
        batch = next(batches)
        on_batch(batch)
        try:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with autocast:
                loss = loss_fn(model, batch) / cfg.grad_accum
            loss.backward()
        except torch.OutOfMemoryError:
            raise out_of_memory(f"training step {state.step + 1}", cfg.batch_key, batch) from None
        loss = loss.detach()
        loss_sum += loss
        first = torch.isfinite(loss).logical_not_().logical_and_(bad_step < 0)
        bad_step = torch.where(first, state.step + 1, bad_step)
        bad_loss = torch.where(first, loss, bad_loss)
        if poll:
            diverged()
        state.micro += 1
        if state.micro % cfg.grad_accum:
            continue
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm, foreach=True)
        try:
            optimizer.step()  # the first step allocates AdamW's two moments
        except torch.OutOfMemoryError:
            raise out_of_memory(f"in the optimizer step {state.step + 1}", cfg.batch_key, None) from None
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        hooks.step(state)
        if cfg.eval_every and state.step % cfg.eval_every == 0 and state.step < cfg.total_steps:
            if check(final=False):
                break
    if not state.finished:
        check(final=True)
    if state.best_weights is not None:
        model.load_state_dict(state.best_weights)
    model.eval()
    return state
