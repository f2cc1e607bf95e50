"""Part qa_train: QA fine-tuning throughput and F1, xlt's loop vs two transformers.Trainer set-ups.

Contenders (same initial weights, data, windows, AdamW lr / warmup / weight decay, batch size,
epochs, seed and threads):

    xlt         xlt.train.qa.finetune_qa: dynamic padding, length-grouped batches
    hf_padded   Trainer + run_qa.py preprocessing: every window padded to max_length
    hf_dynamic  Trainer + unpadded windows, DataCollatorWithPadding, length-grouped sampling
                (transformers 5: train_sampling_strategy="group_by_length", formerly group_by_length=True)

F1 of every contender is measured the same way (xlt.train.qa's predict and score on one shared
EvalSet: the same eval examples, windows and decoding), so it compares training only.

Time to a fixed F1. Each run is evaluated during training at every ceil(steps / curve_points)-th
optimizer step and at its last step (xlt: the loop's `evaluate` hook, through the report it calls;
Trainer: a TrainerCallback's on_step_end), always with that shared evaluation. Evaluation is kept
off the training clock by *pausing* it (common.Clock, wall and process-CPU time alike): xlt's clock
pauses when the loop switches the module it trains through to eval mode (before its evaluation)
and resumes when the loop switches it back; the Trainer's clock pauses and resumes inside the
callback around the evaluation. So train_seconds, train_cpu_seconds and every throughput figure
exclude evaluation for every contender, and a curve point's seconds are the training seconds
before it. Evaluation in eval mode under no_grad draws no random numbers, so the weights trained
are the same as without it; the last point's F1 is the contender's final F1.

The target is `config.target_f1` when set; otherwise derived after all rounds as
start + target_f1_fraction x (lowest final F1 of any contender in any round - start), start being
the F1 of the initial weights (all contenders start from them): above where everyone starts, and
reached by every run of every contender. Time to target = training seconds at the first
evaluation point with F1 >= target (so its resolution is one evaluation interval).
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from typing import Any

from xlt.bench.common import Clock, Rounds, medians, quiet, ratio
from xlt.bench.qa_data import QASetup, hf_train_features

EVAL_NAME = "bench-eval"
KEYS = ("train_seconds", "train_cpu_seconds", "prep_seconds", "eval_seconds", "tokens_real_per_s", "tokens_padded_per_s",
        "windows_per_s", "examples_per_s", "padding_share", "f1", "exact_match")
CLOCK = ("paused during evaluations (wall and process CPU): xlt's while the loop holds its module in eval "
         "mode, the Trainer's inside the evaluating callback")


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
                  "seed": seed, "threads": c.threads, "save_model": False,
                  **({"eval_every": eval_every} if eval_every else {})},
    }, "bench")


def eval_set(s: QASetup):
    from xlt.data import features as F
    from xlt.train.evaluation import EvalSet

    return EvalSet(EVAL_NAME, s.lang, "xlt", s.eval, F.build_features(s.tokenizer, s.eval, train=False, **s.window))


def score(s: QASetup, model, ev) -> dict[str, float]:
    """The one evaluation every contender gets (xlt.train.qa's predict and score); the model's
    train/eval mode is left as it was."""
    import torch

    from xlt.train import evaluation as qa

    was_training = model.training
    model.eval()
    preds = qa.predict(model, ev, batch_size=s.cfg.eval_batch_size, max_answer_length=s.cfg.max_answer_length,
                       pad_id=s.tokenizer.pad_token_id or 0, device=torch.device("cpu"))
    model.train(was_training)
    m = qa.score(ev, preds)
    return {"f1": m["f1"], "exact_match": m["exact_match"]}


def eval_every(total_steps: int, points: int) -> int:
    """Optimizer steps between evaluations: at most `points` of them, the last at the last step."""
    return max(1, math.ceil(total_steps / max(1, points)))


class Curve:
    """The evaluations of one training run: each pauses `clock`, scores the model with the shared
    evaluation and resumes."""

    def __init__(self, s: QASetup, ev, clock: Clock):
        self.s, self.ev, self.clock = s, ev, clock
        self.points: list[dict[str, Any]] = []  # {step, seconds, cpu_seconds, windows_seen, f1, exact_match}

    def record(self, model, step: int, windows_seen: int) -> None:
        self.clock.pause()  # idempotent: xlt's clock is already paused here
        self.points.append({"step": step, "seconds": self.clock.seconds, "cpu_seconds": self.clock.cpu_seconds,
                            "windows_seen": windows_seen, **score(self.s, model, self.ev)})

    def figures(self, windows_total: int, questions_total: int, f1_start: float) -> dict[str, Any]:
        """examples_seen in questions (x epochs), as examples_per_s: windows seen / all windows
        trained x questions trained; the curve starts at the initial weights (0 s, 0, f1_start)."""
        last = self.points[-1]
        curve = [[0.0, 0.0, f1_start]] + [[p["seconds"], p["windows_seen"] / windows_total * questions_total, p["f1"]]
                                          for p in self.points]
        return {"f1": last["f1"], "exact_match": last["exact_match"], "eval_seconds": self.clock.paused_seconds,
                "curve": curve, "curve_steps": [0] + [p["step"] for p in self.points]}


def _figures(seconds: float, cpu: float, prep: float, real: int, padded: int, windows: int,
             questions: int) -> dict[str, Any]:
    return {"train_seconds": seconds, "train_cpu_seconds": cpu, "prep_seconds": prep, "tokens_real": real, "tokens_padded": padded,
            "windows": windows, "examples": questions, "tokens_real_per_s": real / seconds,
            "tokens_padded_per_s": padded / seconds, "windows_per_s": windows / seconds,
            "examples_per_s": questions / seconds, "padding_share": 1 - real / padded if padded else 0.0}


def train_xlt(s: QASetup, seed: int, ev, f1_start: float, windows: int,
              attention_dropout: float | None = None) -> tuple[dict[str, Any], Any]:
    """`windows`: how many training windows xlt's features make (for the evaluation interval);
    `attention_dropout`: train.attention_dropout (None: the model's)."""
    import torch

    from xlt import derived
    from xlt.train.loop import Hooks, Meter, Session
    from xlt.train.qa import finetune_qa

    c = s.cfg
    model = s.fresh_model(attention_dropout)
    total = derived.qa_schedule(windows, spec_for(s, seed).train).total_steps  # finetune_qa's own count
    spec = spec_for(s, seed, eval_every=eval_every(total, c.curve_points))
    clock = Clock()
    curve = Curve(s, ev, clock)
    marks: dict[str, float] = {}
    meter = Meter()

    # The clock starts when the loop asks for the module to train through, pauses from the loop's
    # evaluation-start hook to its evaluation-end hook (its own evaluation, on a single question,
    # and the curve's in `report`) and stops at the final rows finetune_qa reports after its last
    # evaluation.
    def wrap(m):
        marks["start"] = time.perf_counter()
        clock.start()
        return m

    hooks = Hooks(eval_start=[lambda state: clock.pause()], eval_end=[lambda state: clock.resume()])

    def report(rows) -> None:
        if rows[0]["stage"] == "final":
            clock.stop()
        else:
            curve.record(model, rows[0]["step"], meter.examples)

    src = spec.data.eval[0]
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    with quiet():
        finetune_qa(model, s.tokenizer, spec, s.train, {EVAL_NAME: (src, s.eval[:1])}, report, {}, meter,
                    device=torch.device("cpu"), stage="qa", session=Session(wrap=wrap, hooks=hooks))
    out = _figures(clock.seconds, clock.cpu_seconds, marks["start"] - t0, meter.tokens_real, meter.tokens_padded,
                   meter.examples, len(s.train) * c.epochs)
    return {**out, **curve.figures(meter.examples, len(s.train) * c.epochs, f1_start)}, model


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


def train_hf(s: QASetup, seed: int, ev, f1_start: float, *, padded: bool) -> tuple[dict[str, Any], Any]:
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, default_data_collator

    c = s.cfg
    model = s.fresh_model()
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    with quiet():
        feats = hf_train_features(s.tokenizer, s.train, c, pad=padded)
    real = sum(sum(m) for m in feats["attention_mask"])
    n = len(feats)
    collator = Counting(default_data_collator if padded else DataCollatorWithPadding(s.tokenizer))
    clock = Clock()
    curve = Curve(s, ev, clock)
    per_epoch = math.ceil(n / c.batch_size)

    class Evaluate(TrainerCallback):
        """Evaluates at every eval_every(max_steps)-th optimizer step and the last, clock paused."""

        def on_step_end(self, args, state, control, **kwargs):
            step = state.global_step
            if step % eval_every(state.max_steps, c.curve_points) == 0 or step == state.max_steps:
                # windows trained so far (the collator's count runs a batch ahead: accelerate prefetches)
                seen = (step // per_epoch) * n + min((step % per_epoch) * c.batch_size, n)
                curve.record(model, step, seen)
                clock.resume()

    with tempfile.TemporaryDirectory(prefix="xlt-bench-") as tmp, quiet():
        trainer = Trainer(model=model, args=_trainer_args(s, seed, tmp, grouped=not padded), train_dataset=feats,
                          data_collator=collator, processing_class=s.tokenizer, callbacks=[Evaluate()])
        t1 = time.perf_counter()
        clock.start()
        trainer.train()
        clock.stop()
    e = c.epochs
    out = _figures(clock.seconds, clock.cpu_seconds, t1 - t0, real * e, collator.positions, n * e, len(s.train) * e)
    return {**out, **curve.figures(n * e, len(s.train) * e, f1_start)}, model


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


def target_f1(cfg, f1_start: float, finals: list[float]) -> tuple[float | None, str]:
    """The F1 every contender is timed to, and how it was chosen (see the module docstring)."""
    if cfg.target_f1 is not None:
        return cfg.target_f1, "fixed (config.target_f1)"
    lowest = min(finals)
    rule = (f"derived: start + {cfg.target_f1_fraction:g} x (lowest final F1 of any contender in any round - start)"
            f" = {f1_start:.3g} + {cfg.target_f1_fraction:g} x ({lowest:.3g} - {f1_start:.3g})")
    if lowest <= f1_start:
        return None, rule + ": none, some run ended no better than the initial weights"
    return f1_start + cfg.target_f1_fraction * (lowest - f1_start), rule


def to_target(curve: list[list[float]], target: float | None) -> tuple[float | None, float | None]:
    """(training seconds, examples seen) at the first point with F1 >= target; None: never reached."""
    if target is not None:
        for seconds, examples, f1 in curve:
            if f1 >= target:
                return seconds, examples
    return None, None


def median_reached(xs: list[float | None]) -> float | None:
    """Median over rounds, a round that never reached the target counting as infinitely long."""
    m = statistics.median([math.inf if x is None else x for x in xs])
    return None if math.isinf(m) else m


def median_curve(rows: list[dict[str, Any]]) -> list[list[float]]:
    """Pointwise medians over rounds (a contender evaluates at the same steps in every round)."""
    points = zip(*(r["curve"] for r in rows), strict=True)
    return [[statistics.median(col) for col in zip(*same, strict=True)] for same in points]


def summarise(cfg, f1_start: float, rounds: dict[str, list[dict[str, Any]]]
              ) -> tuple[float | None, str, dict[str, dict[str, Any]]]:
    """The target, its rule and each contender's medians; adds seconds_to_target_f1 and
    examples_to_target_f1 to every round."""
    target, rule = target_f1(cfg, f1_start, [r["f1"] for rows in rounds.values() for r in rows])
    for rows in rounds.values():
        for r in rows:
            r["seconds_to_target_f1"], r["examples_to_target_f1"] = to_target(r["curve"], target)
    med = {name: {**medians(rows, KEYS),
                  "seconds_to_target_f1": median_reached([r["seconds_to_target_f1"] for r in rows]),
                  "examples_to_target_f1": median_reached([r["examples_to_target_f1"] for r in rows]),
                  "curve": median_curve(rows), "curve_steps": rows[0]["curve_steps"]}
           for name, rows in rounds.items()}
    return target, rule, med


def _padding_ratio(xlt: dict[str, Any], other: dict[str, Any]) -> float:
    return (1 - xlt["padding_share"]) / (1 - other["padding_share"])


def run(s: QASetup, log) -> tuple[dict[str, Any], Any]:
    """Returns the part's figures and the model xlt trained in the last round (for qa_eval)."""
    from xlt.data import features as F

    ev = eval_set(s)
    warm_up(s)
    f1_start = score(s, s.fresh_model(), ev)["f1"]  # every contender starts from these weights
    windows = len(F.build_features(s.tokenizer, s.train, train=True, **s.window))  # what xlt's loop will build
    kept: dict[str, Any] = {}

    def xlt(s_: QASetup, seed: int):
        out, kept["model"] = train_xlt(s_, seed, ev, f1_start, windows)
        return out

    rounds = Rounds(s.cfg.train_rounds, log).run({
        "xlt": lambda r: xlt(s, s.cfg.seed + r),
        "hf_padded": lambda r: train_hf(s, s.cfg.seed + r, ev, f1_start, padded=True)[0],
        "hf_dynamic": lambda r: train_hf(s, s.cfg.seed + r, ev, f1_start, padded=False)[0],
        # train.attention_dropout: 0: on CPU, SDPA takes its fused kernel only without dropout
        "xlt_attn0": lambda r: train_xlt(s, s.cfg.seed + r, ev, f1_start, windows, attention_dropout=0.0)[0],
    })
    c = s.cfg
    target, rule, med = summarise(c, f1_start, rounds)
    x = med["xlt"]["tokens_real_per_s"]
    best = {name: max(r["tokens_real_per_s"] for r in rows) for name, rows in rounds.items()}
    part = {
        "data": s.source,
        "model": c.model or f"tiny BERT {c.tiny.layers}x{c.tiny.hidden} (random init), tokenizer trained on the data",
        "settings": {"train_questions": len(s.train), "eval_questions": len(s.eval), "epochs": c.epochs,
                     "batch_size": c.batch_size, "lr": c.lr, "warmup": c.warmup, "weight_decay": c.weight_decay,
                     "max_seq_length": c.max_seq_length, "doc_stride": c.doc_stride, "rounds": c.train_rounds,
                     "seeds": [c.seed + r for r in range(c.train_rounds)], "curve_points": c.curve_points,
                     "training_clock": CLOCK},
        "f1_start": f1_start,
        "target_f1": target,
        "target_f1_rule": rule,
        "contenders": {name: {**med[name], "rounds": rows} for name, rows in rounds.items()},
        "speedup_tokens_vs_hf_padded": x / med["hf_padded"]["tokens_real_per_s"],
        "speedup_tokens_vs_hf_dynamic": x / med["hf_dynamic"]["tokens_real_per_s"],
        # the least-disturbed round of each: load from other work only ever adds time
        "speedup_tokens_best_vs_hf_padded": best["xlt"] / best["hf_padded"],
        "speedup_tokens_best_vs_hf_dynamic": best["xlt"] / best["hf_dynamic"],
        # process CPU seconds move less with other work's load than wall seconds do
        "speedup_cpu_vs_hf_padded": med["hf_padded"]["train_cpu_seconds"] / med["xlt"]["train_cpu_seconds"],
        "speedup_cpu_vs_hf_dynamic": med["hf_dynamic"]["train_cpu_seconds"] / med["xlt"]["train_cpu_seconds"],
        # time to the target F1: ratios of the contenders' medians over rounds (None when one never reached it)
        "speedup_time_to_f1_vs_hf_padded": ratio(med["hf_padded"]["seconds_to_target_f1"],
                                                 med["xlt"]["seconds_to_target_f1"]),
        "speedup_time_to_f1_vs_hf_dynamic": ratio(med["hf_dynamic"]["seconds_to_target_f1"],
                                                  med["xlt"]["seconds_to_target_f1"]),
        "speedup_tokens_attn0_vs_hf_dynamic": med["xlt_attn0"]["tokens_real_per_s"] / med["hf_dynamic"]["tokens_real_per_s"],
        "speedup_tokens_attn0_vs_xlt": med["xlt_attn0"]["tokens_real_per_s"] / x,
        "f1_attn0_minus_xlt": med["xlt_attn0"]["f1"] - med["xlt"]["f1"],
        "f1_minus_hf_padded": med["xlt"]["f1"] - med["hf_padded"]["f1"],
        "f1_minus_hf_dynamic": med["xlt"]["f1"] - med["hf_dynamic"]["f1"],
        # the speed-up padding alone allows: the contender's computed positions per real token
        # against xlt's (training is compute-bound, so beyond this only lighter steps count)
        "padding_ceiling_vs_hf_padded": _padding_ratio(med["xlt"], med["hf_padded"]),
        "padding_ceiling_vs_hf_dynamic": _padding_ratio(med["xlt"], med["hf_dynamic"]),
    }
    return part, kept.get("model")
