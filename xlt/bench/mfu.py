"""Part mfu: achieved FLOP/s of xlt's training step against the device's measured fp32 matmul peak.

Model FLOPs utilisation = analytical matmul FLOPs of one step (xlt.compute.train_step_flops)
/ measured step seconds / measured matmul FLOP/s. A step is everything xlt's train_loop does per
optimizer step (forward, backward, gradient clipping, AdamW, scheduler). The peak is a square
fp32 torch.mm timed with the same threads, alternating with the steps (A, B, A, B, ...), so both
see the same machine load; `mfu` is the median over rounds of each round's own ratio, `mfu_best`
the fastest step against the fastest product (the better estimate on a machine shared with
other work).
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable
from typing import Any

from xlt.bench.common import BenchConfig, Shape, median


def mfu(flops_per_step: float, step_seconds: float, peak_flops_per_s: float) -> float:
    """Share of the peak a step achieves: (FLOPs / seconds) / peak FLOP/s."""
    if step_seconds <= 0 or peak_flops_per_s <= 0:
        raise ValueError("mfu: step seconds and peak FLOP/s must be > 0")
    return flops_per_step / step_seconds / peak_flops_per_s


def matmul_flops_per_s(n: int, reps: int) -> float:
    """fp32 FLOP/s of an n x n x n torch.mm (2 n^3 FLOPs), the best of `reps` timed products
    after one warm-up (the best, because load from other work only ever slows a product down)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


def time_steps(model, batch: dict[str, Any], loss_fn: Callable, steps: int, warmup: int = 1) -> list[float]:
    """Seconds of each of `steps` optimizer steps of xlt's train_loop on one fixed batch, after
    `warmup` steps (the first step allocates and is slower)."""
    import torch

    from xlt.train.loop import LoopConfig, train_loop

    marks: list[float] = []
    cfg = LoopConfig(total_steps=warmup + steps, lr=1e-5, warmup=0.0)
    train_loop(model, itertools.repeat(batch), cfg, device=torch.device("cpu"), loss_fn=loss_fn,
               on_batch=lambda b: marks.append(time.perf_counter()), evaluate=lambda st: None)
    marks.append(time.perf_counter())
    return [b - a for a, b in zip(marks, marks[1:], strict=False)][warmup:]


def phases(model, batch: dict[str, Any], loss_fn: Callable) -> dict[str, float]:
    """Seconds of forward, backward and clip + AdamW of one step, run the way train_loop runs them."""
    import torch

    from xlt.train.loop import make_optimizer

    opt = make_optimizer(model, 1e-5, 0.01, torch.device("cpu"))
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    t0 = time.perf_counter()
    loss = loss_fn(model, batch)
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
    opt.step()
    opt.zero_grad(set_to_none=True)
    t3 = time.perf_counter()
    return {"forward": t1 - t0, "backward": t2 - t1, "optimizer": t3 - t2}


def qa_batch(shape: Shape, seq: int, batch: int, seed: int = 0) -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, shape.vocab, (batch, seq), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
            "start_positions": torch.randint(1, seq, (batch,), generator=g),
            "end_positions": torch.randint(1, seq, (batch,), generator=g)}


def qa_model(shape: Shape, dropout: float = 0.1):
    from xlt.models.load import qa_model_from_config, tiny_config

    return qa_model_from_config(tiny_config(vocab_size=shape.vocab, layers=shape.layers, hidden=shape.hidden,
                                            heads=shape.heads, intermediate=shape.intermediate,
                                            max_positions=shape.max_positions, dropout=dropout))


def run(cfg: BenchConfig, log) -> dict[str, Any]:
    import torch

    from xlt import compute

    torch.manual_seed(cfg.seed)
    shape, seq, bs = cfg.mfu_shape, cfg.mfu_seq, cfg.mfu_batch
    model = qa_model(shape)
    batch = qa_batch(shape, seq, bs, cfg.seed)
    eshape = compute.EncoderShape.from_config(model.config.to_dict())
    plan = compute.Plan(embeddings=True, layers=(True,) * shape.layers, head=True, head_kind="qa")
    br = compute.step_breakdown(eshape, bs, seq, plan, train=True)
    flops = br["total"]

    def loss_fn(m, b):
        return m(**b).loss

    rows = []
    for r in range(cfg.mfu_rounds):
        t0 = time.perf_counter()
        peak = matmul_flops_per_s(cfg.matmul_size, cfg.matmul_reps)
        secs = time_steps(model, batch, loss_fn, cfg.mfu_steps, warmup=1)
        ph = phases(model, batch, loss_fn)
        step = statistics.median(secs)
        rows.append({"matmul_flops_per_s": peak, "step_seconds": secs, "step_seconds_median": step,
                     "achieved_flops_per_s": flops / step, "mfu": mfu(flops, step, peak), "phases_seconds": ph})
        log(f"  round {r + 1}/{cfg.mfu_rounds}: {time.perf_counter() - t0:.1f}s")
    peak_best = max(r["matmul_flops_per_s"] for r in rows)
    step_med = median([r["step_seconds_median"] for r in rows])
    # the least-disturbed step against the least-disturbed product: on a shared machine, load
    # from other work only ever adds time, so best-vs-best is what the device can do
    step_best = min(min(r["step_seconds"]) for r in rows)
    ph = {k: median([r["phases_seconds"][k] for r in rows]) for k in ("forward", "backward", "optimizer")}
    return {
        "shape": {**shape.__dict__, "seq_len": seq, "batch": bs, "params": sum(p.numel() for p in model.parameters())},
        "flops_per_step": flops,
        "flops_forward": br["forward"],
        "flops_backward": br["backward_input"] + br["backward_weight"] + br["embedding_grad"],
        "matmul_size": cfg.matmul_size,
        "matmul_flops_per_s": median([r["matmul_flops_per_s"] for r in rows]),
        "matmul_flops_per_s_best": peak_best,
        "step_seconds": step_med,
        "achieved_flops_per_s": flops / step_med,
        "mfu": median([r["mfu"] for r in rows]),
        "mfu_vs_best_peak": flops / step_med / peak_best,
        "step_seconds_best": step_best,
        "mfu_best": mfu(flops, step_best, peak_best),
        "phases_seconds": ph,
        "forward_flops_per_s": br["forward"] / ph["forward"],
        "backward_flops_per_s": (br["backward_input"] + br["backward_weight"]) / ph["backward"],
        "rounds": rows,
    }
