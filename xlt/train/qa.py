"""Extractive QA fine-tuning of one trial, in-process and Ray-free.

    spec -> data (load, check, subsample, mix, leak-filter) -> tokenizer + model
         -> windows -> train_loop (fixed | validated) -> evaluate every eval set -> rows
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from xlt import compute, derived
from xlt.data import features as F
from xlt.data.squad import Example
from xlt.models.load import config_from_dict, load_qa_model, qa_model_from_config
from xlt.spec import DataSource, StudySpec
from xlt.tokenization import load_tokenizer
from xlt.train import trial
from xlt.train.artifacts import Cached, content_key, trained_tokenizer
from xlt.train.evaluation import Events, Scorer, eval_sets, f1_of, summary
from xlt.train.features_cache import cached_features, tokenizer_fingerprint
from xlt.train.loop import (
    BatchCursor,
    LoopConfig,
    LoopState,
    Meter,
    Session,
    batch_compute,
    run_stage,
    shard,
    shared,
)
from xlt.train.qa_data import QAData, prepare_data
from xlt.train.trial import Report, TrialInfo


def build_tokenizer(spec: StudySpec, train: list[Example]):
    m = spec.model
    if m.tokenizer or m.name:
        return load_tokenizer(m.tokenizer or m.name, m.trust_remote_code)  # type: ignore[arg-type]
    assert m.tiny is not None
    texts = list(dict.fromkeys(e.context for e in train)) + [e.question for e in train]  # ordered: a cache key
    return trained_tokenizer(trial.artifact_cache(spec), texts, m.tiny.vocab_size)


def build_model(spec: StudySpec, tokenizer):
    m, t = spec.model, spec.train
    if m.name:
        return load_qa_model(m.name, dropout=t.dropout, attention_dropout=t.attention_dropout,
                             trust_remote_code=m.trust_remote_code)
    assert m.tiny is not None
    return qa_model_from_config(config_from_dict(derived.tiny_config(m.tiny, vocab_size=len(tokenizer),
                                                                     dropout=t.dropout,
                                                                     attention_dropout=t.attention_dropout)))


def run_qa(spec: StudySpec, report: Report, info: TrialInfo, *, out_dir: str | Path | None = None,
           device: torch.device | None = None, session: Session | None = None) -> dict[str, Any]:
    """Fine-tune and evaluate one trial; returns the final scores per eval set."""
    device, meter = trial.start(spec, device, session)
    data = prepare_data(spec)
    tokenizer = shared(session, "tokenizer", lambda: build_tokenizer(spec, data.tokenizer_texts),
                       lambda tok, path: tok.save_pretrained(path), lambda path: load_tokenizer(str(path)))
    if data.english_first:
        model = english_model(spec, tokenizer, data, meter, device=device, session=session)
    else:
        model = build_model(spec, tokenizer).to(device)
    base = trial.trial_columns(spec, info, method="finetune", target_count=data.target_count)
    result = finetune_qa(model, tokenizer, spec, data.train, data.evals, report, base, meter, device=device,
                         stage="qa", session=session)
    trial.save_model(spec, model, tokenizer, out_dir, session)
    return result


def english_model(spec: StudySpec, tokenizer, data: QAData, meter: Meter, *, device: torch.device,
                  session: Session | None) -> torch.nn.Module:
    """Sequential +English: the model fine-tuned on the English set alone (fixed mode, the study's
    training settings, scored once on the validation set), from the artifact cache when a trial
    of the study made it. Its FLOPs count towards every trial that starts from it (stage
    "english"), so a trial's cost does not depend on the order trials ran in; it reports no rows
    (the trial's curve is its target stage)."""
    from transformers import AutoModelForQuestionAnswering

    session = session or Session()
    fixed = spec.model_copy(update={"train": spec.train.model_copy(update={"mode": "fixed", "eval_every": 10**9})})
    key = content_key(kind="english", model=spec.model.model_dump(mode="json"), tokenizer=tokenizer_fingerprint(tokenizer),
                      english=[e.id for e in data.english_first], train=fixed.train.model_dump(mode="json"))
    val = spec.data.validation_set.label

    def build() -> tuple[torch.nn.Module, dict[str, Any]]:
        model = build_model(spec, tokenizer).to(device)
        finetune_qa(model, tokenizer, fixed, data.english_first, {val: data.evals[val]}, lambda rows: None, {},
                    meter, device=device, stage="english", validation=val, emit_final=False, session=session)
        return model, {"flops": meter.flops_by_stage["english"]}

    def load(path: Path, meta: dict[str, Any]) -> torch.nn.Module:
        meter.attribute("english", meta["flops"])
        return AutoModelForQuestionAnswering.from_pretrained(path, attn_implementation="sdpa").to(device)

    cache = trial.artifact_cache(spec)
    if cache is None:
        return build()[0]
    return Cached(cache, "english", key, session.agree).get_or_build(
        build, lambda model, tmp: model.save_pretrained(tmp, safe_serialization=True), load,
        writer=session.rank == 0, barrier=session.barrier)


def qa_windows(spec: StudySpec, tokenizer, train: list[Example],
               *evals: dict[str, tuple[DataSource, list[Example]]]) -> tuple[Any, ...]:
    """The training windows, then the eval sets of each of `evals`, through the features cache
    when there is one."""
    t = spec.train
    window = dict(max_seq_length=t.max_seq_length, doc_stride=t.doc_stride, max_query_length=t.max_query_length)
    cache = trial.artifact_cache(spec)
    tok_id = tokenizer_fingerprint(tokenizer) if cache is not None else None

    def features(examples: list[Example], train: bool = False) -> F.Features:
        return cached_features(cache, tokenizer, examples, train=train, tokenizer_id=tok_id, **window)

    return (features(train, True), *(eval_sets(spec, e, features) for e in evals))


def qa_plan(model) -> tuple[compute.EncoderShape, compute.Plan]:
    """The model's shape and what trains: every layer and the head, the token embeddings unless frozen."""
    shape = compute.EncoderShape.from_config(model.config.to_dict())
    plan = compute.Plan(embeddings=any(p.requires_grad for p in model.get_input_embeddings().parameters()),
                        layers=(True,) * shape.layers, head=True, head_kind="qa")
    return shape, plan


@dataclass
class QAStage:
    """QA fine-tuning as a loop stage (loop.Stage): length-grouped windows from one resumable
    global order (this rank's share), the span loss, and the evaluation events on the eval sets;
    its resume state is the events so far and the order's position."""

    name: str
    feats: F.Features
    pad_id: int
    shape: compute.EncoderShape
    plan: compute.Plan
    meter: Meter
    session: Session
    log: Events
    cursor: BatchCursor
    scorer: Scorer
    validation: str
    epoch: Callable[[int], float]
    checkpoint: bool = True

    def batch(self, rows) -> dict[str, torch.Tensor]:
        return F.collate(self.feats, rows, self.pad_id, train=True)

    def batches(self, state: LoopState) -> Iterator[dict[str, torch.Tensor]]:
        for rows in shard(self.cursor, self.session, lambda rows: self.on_batch(self.batch(rows))):
            yield self.batch(rows)

    def loss(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(**batch).loss

    def on_batch(self, batch: dict[str, torch.Tensor]) -> None:
        flops, real, padded = batch_compute(self.shape, self.plan, batch["attention_mask"], train=True)
        self.meter.add_train(self.name, flops, real, padded, len(batch["input_ids"]))

    def evaluate(self, state: LoopState) -> float:
        return f1_of(self.log.record(state, self.scorer(), epoch=self.epoch(state.micro)), self.validation)

    def state_dict(self) -> dict[str, Any]:
        return {**self.log.state_dict(), "cursor": self.cursor.state()}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.log.load_state_dict(saved)
        self.cursor.load(saved["cursor"])


def finetune_qa(model, tokenizer, spec: StudySpec, train: list[Example],
                evals: dict[str, tuple[DataSource, list[Example]]], report: Report, base: dict[str, Any],
                meter: Meter, *, device: torch.device, stage: str, validation: str | None = None,
                emit_final: bool = True, session: Session | None = None,
                events: list[list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """The QA fine-tuning core, shared by `run_qa` and adaptation step 3. `validation` names the
    eval set validated mode watches; `emit_final` adds the trial's final rows (a copy of the kept
    evaluation, stage "final"). `session`: rank, world size, checkpoints (see loop.Session).
    `events`: filled with every evaluation's rows (a list per evaluation), resumed ones included."""
    t = spec.train
    session = session or Session()
    world = session.world_size
    t0 = time.perf_counter()
    # eval sets with `evaluate: final` are scored once, on the kept model, not at every evaluation
    every = {n: v for n, v in evals.items() if v[0].evaluate == "every"}
    late = {n: v for n, v in evals.items() if v[0].evaluate == "final"} if emit_final else {}
    feats, sets, late_sets = qa_windows(spec, tokenizer, train, every, late)
    shape, plan = qa_plan(model)
    schedule = derived.qa_schedule(len(feats), t, world)
    cfg = LoopConfig(total_steps=schedule.total_steps, lr=t.lr, warmup=t.warmup, weight_decay=t.weight_decay,
                     grad_accum=t.grad_accum, max_grad_norm=t.max_grad_norm, eval_every=schedule.eval_every,
                     patience=t.patience if t.mode == "validated" else None, batch_key="train.batch_size")
    validation = validation or spec.data.validation_set.label
    log = Events(stage, base, meter, report, [] if events is None else events)
    qa = QAStage(stage, feats, tokenizer.pad_token_id or 0, shape, plan, meter, session, log,
                 BatchCursor(lambda rng: F.length_grouped_batches(feats.lengths, t.batch_size, rng), t.seed),
                 Scorer(model, sets, t, tokenizer, device, meter, shape, plan), validation,
                 lambda micro: schedule.epoch(micro, world))
    state, _ = run_stage(model, qa, cfg, session=session, meter=meter, device=device)
    kept = (max(range(len(log.rows)), key=lambda i: f1_of(log.rows[i], validation)) if t.mode == "validated"
            else len(log.rows) - 1)
    final = log.final(kept, Scorer(model, late_sets, t, tokenizer, device, meter, shape, plan)())
    if emit_final:
        report(final)
    print(f"xlt: {stage}: {state.step} steps in {time.perf_counter() - t0:.1f}s"
          + (f", stopped early at step {state.step} (best step {state.best_step})" if state.stopped_early else ""),
          file=sys.stderr)
    return summary(final)
