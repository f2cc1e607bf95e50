"""`xlt calibrate [STUDY]`: the FLOP/s this device achieves, measured, for `xlt estimate`.

A few real training steps of the study's model shape (its QA head, its batch size and window
length, through xlt's own train_loop: forward, backward, clipping, AdamW), then forward passes
as evaluation runs them; achieved FLOP/s = analytical FLOPs (xlt.compute, the same count the
meter and the estimate use) / median seconds. Stored per device kind and thread count in
`throughput.json` (calibration.store), which `xlt estimate` reads before its assumed defaults.

A trial is more than its steps (loading, tokenizing, windowing, decoding, Ray): those seconds
are not in the figure, which is why the estimate still reports device-hours of compute, and the
README compares the calibrated estimate with measured `xlt run` wall times.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from xlt import calibration, compute
from xlt.spec import StudySpec


def _shape_config(spec: StudySpec | None) -> dict[str, Any]:
    from xlt.study.estimate import model_config

    if spec is None:  # BERT-base-sized default: what GPU studies train
        return {"model_type": "bert", "num_hidden_layers": 12, "hidden_size": 768, "num_attention_heads": 12,
                "intermediate_size": 3072, "max_position_embeddings": 512, "vocab_size": 30522}
    return model_config(spec)


def measure(spec: StudySpec | None, *, steps: int = 6, threads: int = 1, device: str | None = None,
            log=print) -> dict[str, Any]:
    """Train and evaluation FLOP/s of the study's model shape on this device."""
    import torch

    from xlt.bench.mfu import time_steps
    from xlt.models.load import config_from_dict, dropout_overrides, qa_model_from_config

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = dict(_shape_config(spec))
    t = spec.train if spec is not None else None
    if t is not None:  # the study's dropout: attention dropout decides CPU attention's kernel (spec.py)
        cfg.update(dropout_overrides(cfg["model_type"], t.dropout, t.attention_dropout))
    batch, seq = (t.batch_size, t.max_seq_length) if t is not None else (16, 256)
    eval_batch = t.eval_batch_size if t is not None else 64
    model = qa_model_from_config(config_from_dict(cfg)).to(dev)
    shape = compute.EncoderShape.from_config(model.config.to_dict())
    plan = compute.Plan(embeddings=True, layers=(True,) * shape.layers, head=True, head_kind="qa")
    g = torch.Generator().manual_seed(0)

    def qa_batch(n: int) -> dict[str, Any]:
        ids = torch.randint(5, shape.vocab, (n, seq), generator=g)
        return {"input_ids": ids.to(dev), "attention_mask": torch.ones_like(ids).to(dev),
                "start_positions": torch.randint(1, seq, (n,), generator=g).to(dev),
                "end_positions": torch.randint(1, seq, (n,), generator=g).to(dev)}

    log(f"xlt calibrate: {shape.layers} layers x {shape.hidden}, batch {batch} x {seq} tokens, "
        f"{threads} thread(s) on {dev.type}")
    train_secs = statistics.median(time_steps(model, qa_batch(batch), lambda m, b: m(**b).loss, steps, warmup=1))
    train_flops = compute.step_breakdown(shape, batch, seq, plan, train=True)["total"]

    eb = qa_batch(eval_batch)
    eb.pop("start_positions"), eb.pop("end_positions")
    model.eval()
    secs = []
    with torch.no_grad():
        for i in range(max(2, steps // 2) + 1):
            t0 = time.perf_counter()
            model(**eb)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if i:  # the first pass warms up
                secs.append(time.perf_counter() - t0)
    eval_flops = compute.step_breakdown(shape, eval_batch, seq, plan, train=False)["total"]
    out = {"train_flops_per_s": train_flops / train_secs, "eval_flops_per_s": eval_flops / statistics.median(secs),
           "threads": threads, "device": calibration.device_name(dev.type),
           "attention_dropout": model.config.to_dict().get("attention_probs_dropout_prob"), "model_shape":
           f"{shape.layers}x{shape.hidden} vocab {shape.vocab}", "batch": batch, "seq": seq, "measured_at": time.time()}
    log(f"  train {out['train_flops_per_s']:.3g} FLOP/s ({train_secs:.2f} s a step), "
        f"evaluation {out['eval_flops_per_s']:.3g} FLOP/s")
    return out


def calibrate(spec: StudySpec | None, *, steps: int = 6, threads: int | None = None, log=print) -> dict[str, Any]:
    """Measure and store; returns what was stored."""
    threads = threads or calibration.study_threads(spec)
    measured = measure(spec, steps=steps, threads=threads, log=log)
    kind = "gpu" if measured["device"].startswith("cuda") else "cpu"
    path = calibration.store(kind, threads, measured)
    log(f"  stored in {path} (xlt estimate uses it for {kind} studies with {threads} thread(s) per worker)")
    return measured
