"""Extractive QA fine-tuning of one trial, in-process and Ray-free.

    spec -> data (load, check, subsample, mix, leak-filter) -> tokenizer + model
         -> windows -> train_loop (fixed | validated) -> evaluate every eval set -> rows
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from xlt import compute, metrics
from xlt.data import features as F
from xlt.data import squad
from xlt.data.squad import Example
from xlt.errors import TrainingDiverged, XltError
from xlt.models.load import load_qa_model, qa_model_from_config, tiny_config
from xlt.spec import DataSource, StudySpec, TrainSpec
from xlt.tokenization import load_tokenizer
from xlt.train.artifacts import ArtifactCache, trained_tokenizer
from xlt.train.features_cache import cached_features, tokenizer_fingerprint
from xlt.train.loop import (
    BatchCursor,
    LoopConfig,
    Meter,
    Session,
    batch_compute,
    run_stage,
    shard,
    shared,
)

Report = Callable[[list[dict[str, Any]]], None]


@dataclass
class TrialInfo:
    """Who a trial is: copied into every row."""

    study: str
    run_id: str
    trial_id: str
    params: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def device_kind(device: torch.device) -> str:
    return f"cuda:{torch.cuda.get_device_name(device)}" if device.type == "cuda" else device.type


# ---------------------------------------------------------------- data


def load_source(src: DataSource, spec: StudySpec, *, require_answers: bool = True) -> list[Example]:
    if src.path is not None:
        examples, report = squad.read_squad_file(spec.resolve_path(src.path), src.lang, require_answers=require_answers)
    elif src.hub is not None:
        examples, report = squad.read_hub(src.hub, src.hub_config, src.split, src.lang)
    else:
        from xlt.data.synthetic import make_squad

        syn = src.synthetic
        assert syn is not None
        examples, report = squad.parse_squad(make_squad(src.lang, syn.n, syn.seed, syn.split), src.label, src.lang)
    if report.dropped_answers or report.repaired:
        squad.log_report(report)
    if not examples:
        detail = f" (first problem: {report.first_problem})" if report.first_problem else ""
        raise XltError(f"{src.label}: no usable questions after checking answers{detail}")
    examples = squad.select(examples, **src.selection)
    if not examples:
        raise XltError(f"{src.label}: no questions left after split_by_article")
    return examples


@dataclass
class QAData:
    train: list[Example]  # what a trial trains on (joint: target + English)
    evals: dict[str, tuple[DataSource, list[Example]]]
    target_count: int
    leaked: int
    english_first: list[Example] = field(default_factory=list)  # sequential: the English stage's set
    target_pool: list[Example] = field(default_factory=list)  # the target set before subsampling

    @property
    def tokenizer_texts(self) -> list[Example]:
        """What a trained (tiny-model) tokenizer learns from. Sequential: the English set and the
        whole target pool, so trials of every target size share one tokenizer and one English model."""
        return self.english_first + self.target_pool if self.english_first else self.train


def prepare_data(spec: StudySpec) -> QAData:
    d = spec.data
    evals = {src.label: (src, load_source(src, spec)) for src in d.eval}
    train: list[Example] = []
    pool: list[Example] = []
    target_count = 0
    if d.target is not None:
        pool = target = load_source(d.target, spec)
        target = squad.subsample(target, count=d.target_count, fraction=d.target_fraction, seed=d.seed)
        target_count = len(target)
        train += target
    english: list[Example] = []
    if d.english is not None and (d.with_english or d.target is None):
        english = load_source(d.english, spec)
    # (an empty target subset is the English-only trial, the lower bound: trained as usual)
    sequential = d.english_mix == "sequential" and bool(english) and bool(train)
    if not sequential:
        train, english = train + english, []
    leaked = 0
    if d.leak_filter:
        held_out = [ex for _, ex in evals.values()]
        train, leaked = squad.leak_filter(train, held_out)
        english, leaked_en = squad.leak_filter(english, held_out)
        leaked += leaked_en
        if leaked:
            print(f"xlt: leak filter dropped {leaked} training questions whose paragraph is in an eval set",
                  file=sys.stderr)
    if not train:
        raise XltError("data: the training set is empty after subsampling and leak filtering"
                       + (" (data.target_count is 0 and data.with_english is false)" if d.target_count == 0 else ""))
    return QAData(train, evals, target_count, leaked, english, pool if sequential else [])


def build_tokenizer(spec: StudySpec, train: list[Example]):
    m = spec.model
    if m.tokenizer or m.name:
        return load_tokenizer(m.tokenizer or m.name, m.trust_remote_code)  # type: ignore[arg-type]
    assert m.tiny is not None
    texts = list(dict.fromkeys(e.context for e in train)) + [e.question for e in train]  # ordered: a cache key
    return trained_tokenizer(artifact_cache(spec), texts, m.tiny.vocab_size)


def build_model(spec: StudySpec, tokenizer):
    m, t = spec.model, spec.train
    if m.name:
        return load_qa_model(m.name, dropout=t.dropout, trust_remote_code=m.trust_remote_code)
    assert m.tiny is not None
    cfg = tiny_config(vocab_size=len(tokenizer), layers=m.tiny.layers, hidden=m.tiny.hidden, heads=m.tiny.heads,
                      intermediate=m.tiny.intermediate, max_positions=m.tiny.max_positions, dropout=t.dropout)
    return qa_model_from_config(cfg)


# ---------------------------------------------------------------- evaluation


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


# ---------------------------------------------------------------- the pipeline


def trial_columns(spec: StudySpec, info: TrialInfo, *, method: str, target_count: int | None) -> dict[str, Any]:
    d = spec.data
    target_lang = d.target.lang if d.target else (spec.adapt.target_lang if spec.adapt else None)
    return {
        "study": spec.name, "run_id": info.run_id, "trial_id": info.trial_id, "task": spec.task,
        "params": json.dumps(info.params, sort_keys=True, default=str),
        "model": spec.model.name or "tiny", "method": method,
        "depth": spec.adapt.depth if spec.adapt and method != "finetune" else None,
        "lr": spec.train.lr, "train_mode": spec.train.mode, "target_lang": target_lang,
        "target_count": target_count, "target_fraction": d.target_fraction,
        "with_english": d.with_english if d.english is not None else False,
        "seed": spec.train.seed, "spec_hash": spec.hash(), **info.provenance,
    }


def run_qa(spec: StudySpec, report: Report, info: TrialInfo, *, out_dir: str | Path | None = None,
           device: torch.device | None = None, session: Session | None = None) -> dict[str, Any]:
    """Fine-tune and evaluate one trial; returns the final scores per eval set."""
    device = device or pick_device()
    if spec.train.threads:
        torch.set_num_threads(spec.train.threads)
    torch.manual_seed(spec.train.seed)
    data = prepare_data(spec)
    tokenizer = shared(session, "tokenizer", lambda: build_tokenizer(spec, data.tokenizer_texts),
                       lambda tok, path: tok.save_pretrained(path), lambda path: load_tokenizer(str(path)))
    meter = Meter(device_kind=device_kind(device), n_devices=session.world_size if session else 1)
    if data.english_first:
        model = english_model(spec, tokenizer, data, meter, device=device, session=session)
    else:
        model = build_model(spec, tokenizer).to(device)
    base = trial_columns(spec, info, method="finetune", target_count=data.target_count)
    result = finetune_qa(model, tokenizer, spec, data.train, data.evals, report, base, meter, device=device,
                         stage="qa", session=session)
    if out_dir is not None and spec.train.checkpoint and (session is None or session.rank == 0):
        save_model(model, tokenizer, Path(out_dir) / "model", spec.train)
    return result


def english_model(spec: StudySpec, tokenizer, data: QAData, meter: Meter, *, device: torch.device,
                  session: Session | None) -> torch.nn.Module:
    """Sequential +English: the model fine-tuned on the English set alone (fixed mode, the study's
    training settings, scored once on the validation set), from the artifact cache when a trial
    of the study made it. Its FLOPs count towards every trial that starts from it (stage
    "english"), so a trial's cost does not depend on the order trials ran in; its rows are none
    (the trial's curve is its target stage)."""
    from transformers import AutoModelForQuestionAnswering

    from xlt.train.artifacts import content_key

    session = session or Session()
    cache = artifact_cache(spec)
    fixed = spec.model_copy(update={"train": spec.train.model_copy(update={"mode": "fixed", "eval_every": 10**9})})
    key = content_key(kind="english", model=spec.model.model_dump(mode="json"), tokenizer=tokenizer_fingerprint(tokenizer),
                      english=[e.id for e in data.english_first], train=fixed.train.model_dump(mode="json"))
    hit = session.agree(cache is not None and cache.get("english", key) is not None)
    if hit:
        path, meta = cache.get("english", key)  # type: ignore[union-attr,misc]
        meter.add_train("english", {"flops": meta["flops"], "flops_real": meta["flops"]}, 0, 0, 0)
        return AutoModelForQuestionAnswering.from_pretrained(path, attn_implementation="sdpa").to(device)
    model = build_model(spec, tokenizer).to(device)
    val = spec.data.validation_set.label
    finetune_qa(model, tokenizer, fixed, data.english_first, {val: data.evals[val]}, lambda rows: None, {}, meter,
                device=device, stage="english", validation=val, emit_final=False, session=session)
    if cache is not None and session.rank == 0:
        flops = meter.flops_by_stage["english"]
        cache.put("english", key, lambda tmp: (model.save_pretrained(tmp, safe_serialization=True), {"flops": flops})[1])
    if session.barrier is not None:
        session.barrier()
    return model


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
    window = dict(max_seq_length=t.max_seq_length, doc_stride=t.doc_stride, max_query_length=t.max_query_length)
    cache = artifact_cache(spec)
    tok_id = tokenizer_fingerprint(tokenizer) if cache is not None else None
    feats = cached_features(cache, tokenizer, train, train=True, tokenizer_id=tok_id, **window)
    def eval_set(name: str, src: DataSource, ex: list[Example]) -> EvalSet:
        return EvalSet(name, src.lang, src.metric_mode or spec.metric_mode, ex,
                       cached_features(cache, tokenizer, ex, train=False, tokenizer_id=tok_id, **window))

    eval_sets = [eval_set(name, src, ex) for name, (src, ex) in evals.items() if src.evaluate == "every"]
    final_only = [(name, src, ex) for name, (src, ex) in evals.items() if src.evaluate == "final"] if emit_final else []
    validation = validation or spec.data.validation_set.label
    shape = compute.EncoderShape.from_config(model.config.to_dict())
    plan = compute.Plan(embeddings=any(p.requires_grad for p in model.get_input_embeddings().parameters()),
                        layers=(True,) * shape.layers, head=True, head_kind="qa")
    pad_id = tokenizer.pad_token_id or 0
    batches_per_epoch = math.ceil(len(feats) / t.batch_size)
    total = t.max_steps or max(1, math.ceil(t.epochs * batches_per_epoch / (t.grad_accum * world)))
    eval_every = t.eval_every or max(1, math.ceil(batches_per_epoch / (t.grad_accum * world)))
    cfg = LoopConfig(total_steps=total, lr=t.lr, warmup=t.warmup, weight_decay=t.weight_decay, grad_accum=t.grad_accum,
                     max_grad_norm=t.max_grad_norm, eval_every=eval_every,
                     patience=t.patience if t.mode == "validated" else None)
    cursor = BatchCursor(lambda rng: F.length_grouped_batches(feats.lengths, t.batch_size, rng), t.seed)

    def on_batch(batch: dict[str, torch.Tensor]) -> None:
        flops, real, padded = batch_compute(shape, plan, batch["attention_mask"], train=True)
        meter.add_train(stage, flops, real, padded, len(batch["input_ids"]))

    def batches() -> Iterator[dict[str, torch.Tensor]]:
        for rows in shard(cursor, session, lambda rows: on_batch(F.collate(feats, rows, pad_id, train=True))):
            yield F.collate(feats, rows, pad_id, train=True)

    events = [] if events is None else events

    def scored(state, sets: list[EvalSet]) -> list[dict[str, Any]]:
        rows = []
        for ev in sets:
            preds = predict(model, ev, batch_size=t.eval_batch_size, max_answer_length=t.max_answer_length,
                            pad_id=pad_id, device=device, meter=meter, shape=shape, plan=plan,
                            answer_rule=t.answer_rule, cls_token_id=tokenizer.cls_token_id)
            s = score(ev, preds)
            rows.append({**base, **meter.snapshot(stage), "stage": stage, "event": len(events), "step": state.step,
                         "epoch": state.micro * world / batches_per_epoch, "eval_set": ev.name, "eval_lang": ev.lang,
                         "metric_mode": s["mode"], "exact_match": s["exact_match"], "f1": s["f1"],
                         "n_examples": s["n"], "train_loss": state.last_loss, "is_best": False, "is_final": False,
                         "time": time.time()})
        return rows

    def evaluate(state) -> float:
        rows = scored(state, eval_sets)
        events.append(rows)
        report(rows)
        return next(r["f1"] for r in rows if r["eval_set"] == validation)

    def loss_fn(m, batch):
        return m(**batch).loss

    def stream(saved, state) -> Iterator[dict[str, torch.Tensor]]:
        if saved is not None:
            events[:] = saved["events"]
            cursor.load(saved["cursor"])
        return batches()

    state, _ = run_stage(model, stream, cfg, stage=stage, session=session, meter=meter, device=device, loss_fn=loss_fn,
                         on_batch=on_batch, evaluate=evaluate,
                         checkpoint_extra=lambda: {"events": events, "cursor": cursor.state()})
    kept = max(range(len(events)), key=lambda i: _val_f1(events[i], validation)) if t.mode == "validated" else len(events) - 1
    # final-only sets are scored now, on the model the loop returns (validated mode: the kept one)
    late = scored(state, [eval_set(*f) for f in final_only]) if final_only else []
    final = [{**r, **meter.snapshot(stage), "stage": "final", "event": len(events), "is_best": True, "is_final": True,
              "time": time.time()} for r in events[kept] + [{**r, "step": events[kept][0]["step"], "epoch": events[kept][0]["epoch"]} for r in late]]
    if emit_final:
        report(final)
    print(f"xlt: {stage}: {state.step} steps in {time.perf_counter() - t0:.1f}s"
          + (f", stopped early at step {state.step} (best step {state.best_step})" if state.stopped_early else ""),
          file=sys.stderr)
    return {r["eval_set"]: {"f1": r["f1"], "exact_match": r["exact_match"], "step": r["step"]} for r in final}


def artifact_cache(spec: StudySpec) -> ArtifactCache | None:
    """Where trials share artifacts (`cache_dir`); None: nothing is cached."""
    return ArtifactCache(spec.resolve_path(spec.cache_dir)) if spec.cache_dir else None


def _val_f1(rows: list[dict[str, Any]], validation: str) -> float:
    return next(r["f1"] for r in rows if r["eval_set"] == validation)


def save_model(model, tokenizer, path: Path, train: TrainSpec) -> None:
    """safetensors weights + config + tokenizer (never pickle) + the settings `xlt predict` evaluates with."""
    from xlt.train.predict import save_settings

    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    save_settings(path, train)
