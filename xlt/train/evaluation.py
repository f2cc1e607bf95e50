"""Evaluation, shared by QA fine-tuning and adaptation: eval sets, `predict`, scoring, and the
result rows of evaluation and final events (one builder for both pipelines).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from xlt import compute, metrics
from xlt.data import features as F
from xlt.data.squad import Example
from xlt.errors import TrainingDiverged
from xlt.spec import DataSource, StudySpec, TrainSpec
from xlt.train.loop import LoopState, Meter, batch_compute


@dataclass
class EvalSet:
    name: str
    lang: str
    mode: str
    examples: list[Example]
    feats: F.Features

    @property
    def gold(self) -> dict[str, list[str]]:
        return {e.id: e.answer_texts for e in self.examples}


def eval_sets(spec: StudySpec, evals: dict[str, tuple[DataSource, list[Example]]],
              features: Callable[[list[Example]], F.Features]) -> list[EvalSet]:
    """One EvalSet per named eval set; `features(examples)` windows them (cached or not)."""
    return [EvalSet(name, src.lang, src.metric_mode or spec.metric_mode, ex, features(ex))
            for name, (src, ex) in evals.items()]


@torch.no_grad()
def predict(model, ev: EvalSet, *, batch_size: int, max_answer_length: int, pad_id: int,
            device: torch.device, meter: Meter | None = None, shape=None, plan=None,
            answer_rule: str = "run_qa", cls_token_id: int | None = None) -> dict[str, str]:
    """Answer text per question id: windows in length-sorted batches, decoded by `answer_rule`
    (features.SpanDecoder)."""
    decoder = F.SpanDecoder(ev.examples, ev.feats, max_answer_length=max_answer_length, rule=answer_rule,
                            cls_token_id=cls_token_id)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    for rows in F.sorted_batches(ev.feats.lengths, batch_size):
        batch = F.collate(ev.feats, rows, pad_id, train=False)
        if meter is not None and shape is not None:
            flops, _, _ = batch_compute(shape, plan, batch["attention_mask"], train=False)
            meter.flops_eval += flops["flops"]
        with autocast:
            out = model(**{k: v.to(device) for k, v in batch.items()})
        start, end = out.start_logits.float().cpu(), out.end_logits.float().cpu()
        if not (torch.isfinite(start).all() and torch.isfinite(end).all()):
            # a model one huge update wrecked can keep a finite loss yet give NaN logits
            raise TrainingDiverged(f"training diverged: non-finite logits evaluating {ev.name}")
        decoder.add(rows, start, end)
    return decoder.answers()


def score(ev: EvalSet, predictions: dict[str, str]) -> dict[str, Any]:
    return metrics.evaluate(ev.gold, predictions, ev.lang, ev.mode)


@dataclass
class Scorer:
    """Scores a QA model on its eval sets, metering the evaluation's FLOPs."""

    model: Any
    sets: list[EvalSet]
    train: TrainSpec
    tokenizer: Any
    device: torch.device
    meter: Meter
    shape: compute.EncoderShape
    plan: compute.Plan

    def __call__(self) -> list[tuple[EvalSet, dict[str, Any]]]:
        t = self.train
        out = []
        for ev in self.sets:
            preds = predict(self.model, ev, batch_size=t.eval_batch_size, max_answer_length=t.max_answer_length,
                            pad_id=self.tokenizer.pad_token_id or 0, device=self.device, meter=self.meter,
                            shape=self.shape, plan=self.plan, answer_rule=t.answer_rule,
                            cls_token_id=self.tokenizer.cls_token_id)
            out.append((ev, score(ev, preds)))
        return out


@dataclass
class Events:
    """The evaluation events of one stage: their rows (a list per event), reported as they come;
    part of the stage's resume state."""

    stage: str
    base: dict[str, Any]  # the trial's columns (trial.trial_columns)
    meter: Meter
    report: Callable[[list[dict[str, Any]]], None]
    rows: list[list[dict[str, Any]]] = field(default_factory=list)

    def record(self, state: LoopState, scores: list[tuple[EvalSet, dict[str, Any]]],
               epoch: float | None, columns: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """One evaluation event's rows (a row per eval set, `columns` added to each), reported."""
        snap = self.meter.snapshot(self.stage)
        rows = [{**self.base, **snap, "stage": self.stage, "event": len(self.rows), "step": state.step,
                 "epoch": epoch, "eval_set": ev.name, "eval_lang": ev.lang, "metric_mode": s["mode"],
                 "exact_match": s["exact_match"], "f1": s["f1"], "n_examples": s["n"],
                 "train_loss": state.last_loss, "is_best": False, "is_final": False, "time": time.time(),
                 **(columns or {})}
                for ev, s in scores]
        self.rows.append(rows)
        self.report(rows)
        return rows

    def final(self, kept: int, late: list[tuple[EvalSet, dict[str, Any]]] = ()) -> list[dict[str, Any]]:  # type: ignore[assignment]
        """The trial's final rows: a copy of event `kept` with the totals as they stand now, and the
        scores of the final-only eval sets (`late`, scored on the kept model) at its step."""
        snap = self.meter.snapshot(self.stage)
        like = self.rows[kept][0]
        rows = self.rows[kept] + [{**like, "eval_set": ev.name, "eval_lang": ev.lang, "metric_mode": s["mode"],
                                   "exact_match": s["exact_match"], "f1": s["f1"], "n_examples": s["n"]}
                                  for ev, s in late]
        return [{**r, **snap, "stage": "final", "event": len(self.rows), "is_best": True, "is_final": True,
                 "time": time.time()} for r in rows]

    def state_dict(self) -> dict[str, Any]:
        return {"events": self.rows}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.rows[:] = saved["events"]


def f1_of(rows: list[dict[str, Any]], eval_set: str) -> float:
    return next(r["f1"] for r in rows if r["eval_set"] == eval_set)


def summary(final: list[dict[str, Any]]) -> dict[str, Any]:
    """What a pipeline returns: the final scores per eval set."""
    return {r["eval_set"]: {"f1": r["f1"], "exact_match": r["exact_match"], "step": r["step"]} for r in final}
