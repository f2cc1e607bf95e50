"""Part qa_train: QA fine-tuning throughput and F1, xlt's loop vs two transformers.Trainer set-ups.

Contenders (same initial weights, data, windows, AdamW lr / warmup / weight decay, batch size,
epochs, seed and threads; no evaluation during training):

    xlt         xlt.train.qa.finetune_qa: dynamic padding, length-grouped batches
    hf_padded   Trainer + run_qa.py preprocessing: every window padded to max_length
    hf_dynamic  Trainer + unpadded windows, DataCollatorWithPadding, length-grouped sampling
                (transformers 5: train_sampling_strategy="group_by_length", formerly group_by_length=True)

F1 of every contender is measured the same way (xlt's predict and metrics on the eval set), so it
compares training only.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

from xlt.bench.common import Rounds, medians, quiet
from xlt.bench.qa_data import QASetup, hf_train_features

EVAL_NAME = "bench-eval"
KEYS = ("train_seconds", "train_cpu_seconds", "prep_seconds", "tokens_real_per_s", "tokens_padded_per_s", "windows_per_s",
        "examples_per_s", "padding_share", "f1", "exact_match")


def spec_for(s: QASetup, seed: int, *, eval_every: int | None = None):
    from xlt.spec import spec_from_dict

    c = s.cfg
    return spec_from_dict({
        "name": "bench", "task": "qa",
        "model": {"tiny": {}},  # unused: the benchmark passes its own model and tokenizer
        "data": {"english": {"lang": "en", "synthetic": {"n": 1}},
                 "eval": [{"name": EVAL_NAME, "lang": s.lang, "synthetic": {"n": 1}}]},
        "train": {"mode": "fixed", "epochs": c.epochs, "lr": c.lr, "batch_size": c.batch_size,
                  "eval_batch_size": c.eval_batch_size, "warmup": c.warmup, "weight_decay": c.weight_decay,
                  "dropout": c.dropout, "max_seq_length": c.max_seq_length, "doc_stride": c.doc_stride,
                  "max_query_length": c.max_query_length, "max_answer_length": c.max_answer_length,
                  "seed": seed, "threads": c.threads, "checkpoint": False,
                  **({"eval_every": eval_every} if eval_every else {})},
    }, "bench")


def eval_set(s: QASetup):
    from xlt.data import features as F
    from xlt.train.qa import EvalSet

    return EvalSet(EVAL_NAME, s.lang, "xlt", s.eval, F.build_features(s.tokenizer, s.eval, train=False, **s.window))


def score(s: QASetup, model, ev) -> dict[str, float]:
    import torch

    from xlt import metrics
    from xlt.train.qa import predict

    model.eval()
    preds = predict(model, ev, batch_size=s.cfg.eval_batch_size, max_answer_length=s.cfg.max_answer_length,
                    pad_id=s.tokenizer.pad_token_id or 0, device=torch.device("cpu"))
    m = metrics.evaluate(ev.gold, preds, ev.lang, "xlt")
    return {"f1": m["f1"], "exact_match": m["exact_match"]}


def _figures(seconds: float, cpu: float, prep: float, real: int, padded: int, windows: int,
             questions: int) -> dict[str, Any]:
    return {"train_seconds": seconds, "train_cpu_seconds": cpu, "prep_seconds": prep, "tokens_real": real, "tokens_padded": padded,
            "windows": windows, "examples": questions, "tokens_real_per_s": real / seconds,
            "tokens_padded_per_s": padded / seconds, "windows_per_s": windows / seconds,
            "examples_per_s": questions / seconds, "padding_share": 1 - real / padded if padded else 0.0}


def train_xlt(s: QASetup, seed: int) -> tuple[dict[str, Any], Any]:
    import torch

    from xlt.train.loop import Meter, Session
    from xlt.train.qa import finetune_qa

    model = s.fresh_model()
    spec = spec_for(s, seed, eval_every=10**9)  # more than the run's steps: no evaluation during training
    marks: dict[str, float] = {}

    # finetune_qa runs its one (final) evaluation on a single question; the clock stops when it
    # reports, and the clock starts when the loop asks for the module to train through.
    def wrap(m):
        marks["start"], marks["cpu_start"] = time.perf_counter(), time.process_time()
        return m

    def report(rows) -> None:
        if "end" not in marks:
            marks["end"], marks["cpu_end"] = time.perf_counter(), time.process_time()

    src = spec.data.eval[0]
    meter = Meter()
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    with quiet():
        finetune_qa(model, s.tokenizer, spec, s.train, {EVAL_NAME: (src, s.eval[:1])}, report, {}, meter,
                    device=torch.device("cpu"), stage="qa", session=Session(wrap=wrap))
    out = _figures(marks["end"] - marks["start"], marks["cpu_end"] - marks["cpu_start"], marks["start"] - t0, meter.tokens_real, meter.tokens_padded,
                   meter.examples, len(s.train) * s.cfg.epochs)
    return out, model


def _trainer_args(s: QASetup, seed: int, out_dir: str, *, grouped: bool):
    from transformers import TrainingArguments

    c = s.cfg
    return TrainingArguments(
        output_dir=out_dir, per_device_train_batch_size=c.batch_size, num_train_epochs=c.epochs,
        learning_rate=c.lr, weight_decay=c.weight_decay, warmup_steps=c.warmup, lr_scheduler_type="linear",
        max_grad_norm=1.0, seed=seed, eval_strategy="no", save_strategy="no", logging_strategy="no",
        report_to=[], use_cpu=True, dataloader_num_workers=0, disable_tqdm=True, log_level="error",
        train_sampling_strategy="group_by_length" if grouped else "random",
    )


def train_hf(s: QASetup, seed: int, *, padded: bool) -> tuple[dict[str, Any], Any]:
    import torch
    from transformers import DataCollatorWithPadding, Trainer, default_data_collator

    model = s.fresh_model()
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    with quiet():
        feats = hf_train_features(s.tokenizer, s.train, s.cfg, pad=padded)
    real = sum(sum(m) for m in feats["attention_mask"])
    collator = Counting(default_data_collator if padded else DataCollatorWithPadding(s.tokenizer))
    with tempfile.TemporaryDirectory(prefix="xlt-bench-") as tmp, quiet():
        trainer = Trainer(model=model, args=_trainer_args(s, seed, tmp, grouped=not padded), train_dataset=feats,
                          data_collator=collator, processing_class=s.tokenizer)
        t1, c1 = time.perf_counter(), time.process_time()
        trainer.train()
        t2, c2 = time.perf_counter(), time.process_time()
    e = s.cfg.epochs
    return _figures(t2 - t1, c2 - c1, t1 - t0, real * e, collator.positions, len(feats) * e, len(s.train) * e), model


class Counting:
    """A data collator that counts the positions (real + pad) of the batches it builds."""

    def __init__(self, inner):
        self.inner, self.positions = inner, 0

    def __call__(self, features):
        batch = self.inner(features)
        self.positions += batch["input_ids"].numel()
        return batch


def warm_up(s: QASetup) -> None:
    """One untimed forward and backward pass, so that the first contender of the first round does
    not pay the process's one-time costs (thread pool, allocator, lazy initialisation)."""
    import torch

    from xlt.data import features as F

    feats = F.build_features(s.tokenizer, s.train[: s.cfg.batch_size], train=True, **s.window)
    batch = F.collate(feats, list(range(min(len(feats), s.cfg.batch_size))), s.tokenizer.pad_token_id or 0, train=True)
    model = s.fresh_model()
    model.train()
    model(**batch).loss.backward()
    torch.optim.AdamW(model.parameters(), fused=True).step()
    torch.optim.AdamW(model.parameters(), foreach=True).step()


def run(s: QASetup, log) -> tuple[dict[str, Any], Any]:
    """Returns the part's figures and the model xlt trained in the last round (for qa_eval)."""
    ev = eval_set(s)
    warm_up(s)
    kept: dict[str, Any] = {}

    def contender(name, fn):
        def go(r: int) -> dict[str, Any]:
            out, model = fn(s, s.cfg.seed + r)
            out.update(score(s, model, ev))
            if name == "xlt":
                kept["model"] = model
            return out
        return go

    rounds = Rounds(s.cfg.train_rounds, log).run({
        "xlt": contender("xlt", train_xlt),
        "hf_padded": contender("hf_padded", lambda s_, seed: train_hf(s_, seed, padded=True)),
        "hf_dynamic": contender("hf_dynamic", lambda s_, seed: train_hf(s_, seed, padded=False)),
    })
    c = s.cfg
    med = {name: medians(rows, KEYS) for name, rows in rounds.items()}
    x = med["xlt"]["tokens_real_per_s"]
    best = {name: max(r["tokens_real_per_s"] for r in rows) for name, rows in rounds.items()}
    part = {
        "data": s.source,
        "model": c.model or f"tiny BERT {c.tiny.layers}x{c.tiny.hidden} (random init), tokenizer trained on the data",
        "settings": {"train_questions": len(s.train), "eval_questions": len(s.eval), "epochs": c.epochs,
                     "batch_size": c.batch_size, "lr": c.lr, "warmup": c.warmup, "weight_decay": c.weight_decay,
                     "max_seq_length": c.max_seq_length, "doc_stride": c.doc_stride, "rounds": c.train_rounds,
                     "seeds": [c.seed + r for r in range(c.train_rounds)]},
        "contenders": {name: {**med[name], "rounds": rows} for name, rows in rounds.items()},
        "speedup_tokens_vs_hf_padded": x / med["hf_padded"]["tokens_real_per_s"],
        "speedup_tokens_vs_hf_dynamic": x / med["hf_dynamic"]["tokens_real_per_s"],
        # the least-disturbed round of each: load from other work only ever adds time
        "speedup_tokens_best_vs_hf_padded": best["xlt"] / best["hf_padded"],
        "speedup_tokens_best_vs_hf_dynamic": best["xlt"] / best["hf_dynamic"],
        # process CPU seconds move less with other work's load than wall seconds do
        "speedup_cpu_vs_hf_padded": med["hf_padded"]["train_cpu_seconds"] / med["xlt"]["train_cpu_seconds"],
        "speedup_cpu_vs_hf_dynamic": med["hf_dynamic"]["train_cpu_seconds"] / med["xlt"]["train_cpu_seconds"],
        "f1_minus_hf_padded": med["xlt"]["f1"] - med["hf_padded"]["f1"],
        "f1_minus_hf_dynamic": med["xlt"]["f1"] - med["hf_dynamic"]["f1"],
    }
    return part, kept.get("model")
