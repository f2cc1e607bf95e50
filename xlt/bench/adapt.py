"""Part adapt_step2: step-2 speed of mini-model adaptation (k-layer mini-model) vs BaseLarge (the
full model), measured against the analytical FLOPs ratio.

Step 2 is timed through the pipeline's own step-2 model (xlt.train.adapt.with_new_embeddings:
MaskedLM over MiniJoint's `mini_body(primary, k)` or BaseLarge's whole primary, frozen but for
the embeddings and the heads' vocabulary-sized bias, the MLM decoder tied to the embeddings, the
loss on masked positions only) and metered with its own plan (step2_plan). A step is one optimizer step of
xlt's train_loop. Full model and mini-models alternate within every round.
"""

from __future__ import annotations

import time
from typing import Any

from xlt.bench.common import BenchConfig, median
from xlt.bench.mfu import phases, time_steps


def mlm_batch(vocab: int, seq: int, batch: int, probability: float, seed: int) -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, seq), generator=g)
    labels = torch.where(torch.rand(batch, seq, generator=g) < probability, ids, torch.full_like(ids, -100))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def run(cfg: BenchConfig, log) -> dict[str, Any]:
    import torch
    from torch import nn
    from transformers import AutoModel

    from xlt import compute
    from xlt.models.load import tiny_config
    from xlt.models.minimodel import new_head, without_pooler
    from xlt.train.adapt import Step1, step2_plan, with_new_embeddings

    torch.manual_seed(cfg.seed)
    sh = cfg.adapt_shape
    body = without_pooler(AutoModel.from_config(tiny_config(
        vocab_size=sh.vocab, layers=sh.layers, hidden=sh.hidden, heads=sh.heads, intermediate=sh.intermediate,
        max_positions=sh.max_positions), attn_implementation="sdpa"))
    heads = nn.ModuleDict({"top": new_head(body.config), "k": new_head(body.config)})
    s1 = Step1(body, heads, None)
    weight = body.get_input_embeddings().weight.detach().clone()
    batch = mlm_batch(sh.vocab, cfg.adapt_seq, cfg.adapt_batch, cfg.mlm_probability, cfg.seed)
    masked = int((batch["labels"] != -100).sum())
    depths = [*cfg.adapt_depths, sh.layers]
    models, flops = {}, {}
    for k in depths:
        # the pipeline's own step-2 model: BaseLarge through the whole primary, MiniJoint's k-layer mini-model
        m = with_new_embeddings(s1, weight, "base_large" if k == sh.layers else "mini_joint", k)
        models[k] = m
        shape = compute.EncoderShape.from_config(m.body.config.to_dict())
        flops[k] = compute.train_step_flops(shape, cfg.adapt_batch, cfg.adapt_seq, step2_plan(m), mlm_positions=masked)

    def loss_fn(m, b):
        return m(**b)

    step: dict[int, list[float]] = {k: [] for k in depths}
    fb: dict[int, list[float]] = {k: [] for k in depths}
    for r in range(cfg.adapt_rounds):
        t0 = time.perf_counter()
        for k in depths:
            step[k] += time_steps(models[k], batch, loss_fn, cfg.adapt_steps, warmup=1)
            ph = phases(models[k], batch, loss_fn)
            fb[k].append(ph["forward"] + ph["backward"])
        log(f"  round {r + 1}/{cfg.adapt_rounds}: {time.perf_counter() - t0:.1f}s")
    full = sh.layers
    t_full, fb_full = median(step[full]), median(fb[full])
    minis = {}
    for k in cfg.adapt_depths:
        measured = t_full / median(step[k])
        analytical = flops[full] / flops[k]
        minis[str(k)] = {
            "step_seconds": median(step[k]), "flops_per_step": flops[k],
            "speedup_measured": measured, "speedup_analytical": analytical,
            "measured_over_analytical": measured / analytical,
            "speedup_measured_forward_backward": fb_full / median(fb[k]),
            # fastest step of each: load from other work only ever adds time
            "speedup_measured_best": min(step[full]) / min(step[k]),
        }
    return {
        "shape": {**sh.__dict__, "seq_len": cfg.adapt_seq, "batch": cfg.adapt_batch, "masked_positions": masked},
        "full": {"layers": full, "step_seconds": t_full, "flops_per_step": flops[full],
                 "achieved_flops_per_s": flops[full] / t_full},
        "mini": minis,
        "step_seconds_all": {str(k): v for k, v in step.items()},
    }
