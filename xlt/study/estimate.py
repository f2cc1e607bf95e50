"""Price a study before launching it: planned trials, training/evaluation FLOPs, device-hours.

Torch-free and offline: model shapes come from a local config.json, a tiny spec, or a table
of well-known hub models; data sizes from local files, generated data, or a table of
well-known hub datasets. Token counts are estimated from text (words x 1.3, one token per
CJK character), so figures are estimates, typically within tens of percent.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlt import compute
from xlt.data.squad import read_squad_file, select
from xlt.errors import XltError
from xlt.spec import (
    DataSource,
    StudySpec,
    expand_vars,
    primary_method,
    step1_identity,
    step3_identity,
    trial_spec,
)

# device kind -> sustained FLOP/s of a whole trial (training, evaluation, data loading). These are
# assumptions, not measurements: for GPUs ~16% of an A100's 312 TFLOP/s bf16 peak, what BERT-base
# SQuAD fine-tuning typically sustains end to end; for CPUs, 2 cores. A study sets its own in
# `throughput` (e.g. from `xlt bench` on its hardware).
DEFAULT_THROUGHPUT = {"gpu": 5.0e13, "cpu": 1.0e10}

_BERT = {"model_type": "bert", "num_hidden_layers": 12, "hidden_size": 768, "num_attention_heads": 12,
         "intermediate_size": 3072, "max_position_embeddings": 512}
KNOWN_MODELS: dict[str, dict[str, Any]] = {
    "bert-base-multilingual-cased": {**_BERT, "vocab_size": 119547},
    "google-bert/bert-base-multilingual-cased": {**_BERT, "vocab_size": 119547},
    "bert-base-cased": {**_BERT, "vocab_size": 28996},
    "bert-base-uncased": {**_BERT, "vocab_size": 30522},
    "DeepPavlov/rubert-base-cased": {**_BERT, "vocab_size": 119547},
    "bert-base-chinese": {**_BERT, "vocab_size": 21128},
    "roberta-base": {**_BERT, "model_type": "roberta", "vocab_size": 50265, "max_position_embeddings": 514},
    "xlm-roberta-base": {**_BERT, "model_type": "xlm-roberta", "vocab_size": 250002, "max_position_embeddings": 514},
}

# hub dataset -> (questions per split, mean question+context tokens); public dataset cards
KNOWN_DATASETS: dict[str, tuple[dict[str, int], float]] = {
    "squad": ({"train": 87599, "validation": 10570}, 160.0),
    "rajpurkar/squad": ({"train": 87599, "validation": 10570}, 160.0),
    "sberquad": ({"train": 45328, "validation": 5036, "test": 23936}, 140.0),
    "kuznetsoffandrey/sberquad": ({"train": 45328, "validation": 5036, "test": 23936}, 140.0),
    "drcd": ({"train": 26936, "validation": 3524, "test": 3493}, 460.0),
    "xquad": ({"validation": 1190}, 170.0),
}


def _count_tokens(text: str) -> float:
    cjk = sum(1 for ch in text if "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff")
    return len(text.split()) * 1.3 + cjk


@dataclass
class DataSize:
    questions: int
    mean_tokens: float  # question + context, before windowing


def data_size(src: DataSource, spec: StudySpec) -> DataSize:
    if src.synthetic is not None:
        from xlt.data.synthetic import make_squad

        tree = make_squad(src.lang, min(src.synthetic.n, 300), src.synthetic.seed, src.synthetic.split)
        qas = [(p["context"], q["question"]) for a in tree["data"] for p in a["paragraphs"] for q in p["qas"]]
        n = src.synthetic.n
    elif src.path is not None:
        examples, _ = read_squad_file(spec.resolve_path(src.path), src.lang, require_answers=False)
        examples = select(examples, **src.selection)
        qas = [(e.context, e.question) for e in examples]
        n = len(qas)
    else:
        known = KNOWN_DATASETS.get(src.hub or "")
        if known is None or src.split not in known[0]:
            raise XltError(f"{src.label}: size of hub dataset {src.hub}:{src.split} unknown offline; "
                           f"set max_questions on it to estimate")
        n = known[0][src.split]
        size = DataSize(min(n, src.max_questions or n), known[1])
        return size
    mean = sum(_count_tokens(c) + _count_tokens(q) for c, q in qas) / max(1, len(qas))
    return DataSize(min(n, src.max_questions or n), mean)


def model_config(spec: StudySpec) -> dict[str, Any]:
    m = spec.model
    if m.tiny is not None:
        t = m.tiny
        return {"model_type": "bert", "num_hidden_layers": t.layers, "hidden_size": t.hidden,
                "num_attention_heads": t.heads, "intermediate_size": t.intermediate,
                "vocab_size": t.vocab_size, "max_position_embeddings": t.max_positions}
    name = m.name or ""
    if name in KNOWN_MODELS:
        return KNOWN_MODELS[name]
    name = expand_vars(name)
    path = Path(name)
    if name.startswith("pkg:"):
        module, _, sub = name[4:].partition("/")
        found = importlib.util.find_spec(module)
        if found is None or not found.submodule_search_locations:
            raise XltError(f"model {name}: package '{module}' is not installed")
        path = Path(next(iter(found.submodule_search_locations))) / sub
    if (path / "config.json").is_file():
        return json.loads((path / "config.json").read_text())
    raise XltError(f"model {name}: shape unknown offline (not a local path and not in xlt's table of hub models)")


def planned_trials(spec: StudySpec, max_trials: int = 10_000) -> list[dict[str, Any]]:
    """The trials a study will run. Grid: the listed points, then every combination of the space's
    values, each once per seed; a point's keys override the combination's. Samplers: the points,
    then `num_samples` draws in all, here uniform as a stand-in for what TPE or NSGA-II will pick."""
    s = spec.search
    if s.algorithm == "grid":
        trials = [{**g, "train.seed": seed} for g in grid_points(spec) for seed in s.seeds]
    else:
        rng = random.Random(0)
        trials = [dict(p) for p in s.points][: s.num_samples]
        while len(trials) < s.num_samples:
            trials.append({k: _draw(p, rng) for k, p in s.space.items()})
    if len(trials) > max_trials:
        raise XltError(f"search: {len(trials)} trials planned; more than {max_trials}")
    return trials


def grid_points(spec: StudySpec) -> list[dict[str, Any]]:
    """Grid mode's points (without seeds), as the runner plans them: each of `search.points`
    crossed with the product of the space's keys it leaves open, then the space's product
    (the study's own settings when the space is empty)."""
    s = spec.search
    keys = list(s.space)
    values = [list(p.choice) if p.choice is not None else _corners(p) for p in s.space.values()]
    product = [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)] if keys else []
    points = [dict(p) for p in s.points]
    if points:  # a point fixes some keys and runs at every combination of the space's other keys
        points = [{**combo, **p} for p in points for combo in _product_without(s, set(p))]
    return _unique(points + (product or [{}]))


def _product_without(s, fixed: set[str]) -> list[dict[str, Any]]:
    keys = [k for k in s.space if k not in fixed]
    values = [list(s.space[k].choice) if s.space[k].choice is not None else _corners(s.space[k]) for k in keys]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]


def _unique(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen, out = set(), []
    for p in points:
        key = json.dumps(p, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def _corners(p) -> list[Any]:
    lo_hi = p.range or p.log_range or p.int_range
    return list(lo_hi)


def _draw(p, rng: random.Random) -> Any:
    if p.choice is not None:
        return rng.choice(list(p.choice))
    if p.int_range is not None:
        return rng.randint(*p.int_range)
    if p.log_range is not None:
        lo, hi = p.log_range
        return math.exp(rng.uniform(math.log(lo), math.log(hi)))
    return rng.uniform(*p.range)


def _qa_flops(spec: StudySpec, shape: compute.EncoderShape, train_q: int, mean_tokens: float,
              evals: list[DataSize], embeddings_trainable: bool = True) -> tuple[float, float, int]:
    t = spec.train
    seq = min(t.max_seq_length, max(16, round(mean_tokens)))
    stride_step = t.max_seq_length - t.doc_stride
    windows = 1 + max(0, math.ceil((mean_tokens - t.max_seq_length) / stride_step))
    examples = train_q * windows
    steps_per_epoch = math.ceil(examples / t.batch_size)
    steps = t.max_steps or math.ceil(t.epochs * steps_per_epoch / t.grad_accum)
    plan = compute.Plan(embeddings=embeddings_trainable, layers=(True,) * shape.layers, head=True, head_kind="qa")
    train = steps * t.grad_accum * compute.train_step_flops(shape, t.batch_size, seq, plan)
    n_evals = math.ceil(steps / (t.eval_every or max(1, steps_per_epoch // t.grad_accum))) + 1
    per_eval = sum(compute.forward_flops(shape, e.questions * windows, min(t.max_seq_length, round(e.mean_tokens)), plan)
                   for e in evals)
    return train, per_eval * n_evals, steps


def _mlm_flops(shape: compute.EncoderShape, layers: tuple[bool, ...], step, *, embeddings: bool, head: bool,
               extra=()) -> float:
    plan = compute.Plan(embeddings=embeddings, layers=layers, head=head, head_kind="mlm", head_tied=True,
                        extra_heads=extra)
    masked = round(0.15 * step.batch_size * step.max_seq_length)
    return step.steps * compute.train_step_flops(shape, step.batch_size, step.max_seq_length, plan, mlm_positions=masked)


def trial_cost(spec: StudySpec) -> dict[str, Any]:
    cfg = model_config(spec)
    shape = compute.EncoderShape.from_config(cfg)
    d = spec.data
    evals = [data_size(e, spec) for e in d.eval]
    train_q, tokens = 0, 0.0
    if d.target is not None:
        size = data_size(d.target, spec)
        n = d.target_count if d.target_count is not None else round((d.target_fraction or 1.0) * size.questions)
        train_q += min(n, size.questions)
        tokens += min(n, size.questions) * size.mean_tokens
    english = None
    if d.english is not None and (d.with_english or d.target is None):
        english = data_size(d.english, spec)
    # sequential +English (xlt.train.qa.english_model): an English stage cached once per study
    # (model, English set, training settings), then the target subset alone
    if spec.task == "qa" and english is not None and d.english_mix == "sequential" and train_q > 0:
        fixed = spec.model_copy(update={"train": spec.train.model_copy(update={"mode": "fixed", "eval_every": 10**9})})
        first, first_eval, _ = _qa_flops(fixed, shape, english.questions, english.mean_tokens, evals[:1])
        train, evals_flops, steps = _qa_flops(spec, shape, train_q, tokens / train_q, evals)
        key = json.dumps([spec.model.model_dump(mode="json"), d.english.model_dump(mode="json"),  # type: ignore[union-attr]
                          fixed.train.model_dump(mode="json")], sort_keys=True)
        return {"flops_train": first + train, "flops_eval": first_eval + evals_flops, "steps": steps,
                "stages": {"english": first, "qa": train}, "shared": [("english", key, first)]}
    if english is not None:
        train_q += english.questions
        tokens += english.questions * english.mean_tokens
    mean = tokens / max(1, train_q)
    if spec.task == "qa":
        train, evals_flops, steps = _qa_flops(spec, shape, train_q, mean, evals)
        return {"flops_train": train, "flops_eval": evals_flops, "steps": steps, "stages": {"qa": train}}
    a = spec.adapt
    assert a is not None
    n, k = shape.layers, a.depth
    if not 1 <= k < n:
        raise XltError(f"adapt.depth: must be between 1 and {n - 1} for a {n}-layer model, got {k}")
    small = compute.EncoderShape(**{**vars(shape), "layers": k}) if a.method == "base_small" else shape
    step1 = {
        # BaseLarge's primary is trained unless the checkpoint is a masked LM already (xlt.train.adapt.run_step1)
        "base_large": _mlm_flops(shape, (True,) * n, a.step1, embeddings=True, head=True)
        if spec.model.tiny or not _has_mlm_head(spec) else 0.0,
        "mini_joint": _mlm_flops(shape, (True,) * n, a.step1, embeddings=True, head=True, extra=((k, "mlm"),)),
        "mini_post": _mlm_flops(compute.EncoderShape(**{**vars(shape), "layers": k + 1}), (False,) * k + (True,),
                                a.step1, embeddings=False, head=True),
        "base_small": _mlm_flops(small, (True,) * k, a.step1, embeddings=True, head=True),
    }
    run = {"base_large": n, "mini_joint": k, "mini_post": k + 1, "base_small": k}[a.method]
    vocab_shape = compute.EncoderShape(**{**vars(shape), "layers": run, "vocab": a.vocab_size})
    step2 = _mlm_flops(vocab_shape, (False,) * run, a.step2, embeddings=True, head=False)
    step3, evals_flops, _ = _qa_flops(spec, small, train_q, mean, evals, embeddings_trainable=False)
    # what trials share through the artifact cache (xlt.train.adapt): step 1 per method and
    # depth, MiniPost's on top of BaseLarge's primary, and step 3 per primary
    primary = primary_method(a.method)
    shared = [("step1", _step1_key(spec, m), step1[m]) for m in dict.fromkeys([a.method, primary])]
    shared.append(("step3", json.dumps([_step1_key(spec, primary), step3_identity(spec)], sort_keys=True), step3))
    s1 = sum(f for stage, _, f in shared if stage == "step1")
    return {"flops_train": s1 + step2 + step3, "flops_eval": evals_flops,
            "stages": {"step1": s1, "step2": step2, "step3": step3}, "shared": shared}


def _has_mlm_head(spec: StudySpec) -> bool:
    """Whether the checkpoint carries a pretrained MLM head. Offline: a local directory's config names
    a *ForMaskedLM architecture; a hub model is assumed to (the hub MLMs xlt's tables list do)."""
    cfg = model_config(spec)
    archs = cfg.get("architectures") or []
    if not archs:
        return spec.model.name in KNOWN_MODELS
    return any("MaskedLM" in a or "ForPreTraining" in a for a in archs)


def _step1_key(spec: StudySpec, method: str) -> str:
    a = spec.adapt
    assert a is not None
    # the source text by its patterns (xlt.train.adapt hashes the files' content)
    return json.dumps({**step1_identity(spec, method), "text": list(a.source_text), "lines": a.synthetic_lines},
                      sort_keys=True)


def estimate(spec: StudySpec) -> dict[str, Any]:
    """Every planned trial's cost (each charged all it uses, shared steps included) and the
    study's: a step that trials share through the artifact cache is computed once."""
    kind = "gpu" if spec.scale == "gpu" or spec.resources.gpus_per_worker > 0 else "cpu"
    throughput = spec.throughput.get(kind, DEFAULT_THROUGHPUT[kind])
    rows, once = [], {}
    for params in planned_trials(spec):
        cost = trial_cost(trial_spec(spec, params))
        shared = cost.pop("shared", [])
        for stage, key, flops in shared:
            once.setdefault((stage, key), flops)
        hours = (cost["flops_train"] + cost["flops_eval"] / 3) / throughput / 3600  # inference runs ~3x faster
        rows.append({"params": params, **cost, "device_hours": hours,
                     "_own": cost["flops_train"] - sum(f for _, _, f in shared)})
    attributed = sum(r["flops_train"] for r in rows)
    paid = sum(r.pop("_own") for r in rows) + sum(once.values())
    evals = sum(r["flops_eval"] for r in rows)
    return {"study": spec.name, "task": spec.task, "device_kind": kind, "throughput_flops_per_s": throughput,
            "trials": rows, "n_trials": len(rows), "flops_train": paid, "flops_train_attributed": attributed,
            "flops_eval": evals, "device_hours": (paid + evals / 3) / throughput / 3600,
            "device_hours_attributed": sum(r["device_hours"] for r in rows)}


def format_estimate(est: dict[str, Any]) -> str:
    lines = [f"study {est['study']}: {est['n_trials']} trials on {est['device_kind']} "
             f"(throughput {est['throughput_flops_per_s']:.2g} FLOP/s; set `throughput` in the study to change)"]
    for i, r in enumerate(est["trials"][:50]):
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["params"].items())
        lines.append(f"  trial {i:>3}  {r['flops_train']:9.3g} train FLOPs  {r['device_hours']:8.3g} "
                     f"{est['device_kind']}-hours  {params}")
    if est["n_trials"] > 50:
        lines.append(f"  ... {est['n_trials'] - 50} more")
    lines.append(f"total: {est['flops_train']:.3g} training FLOPs, {est['flops_eval']:.3g} evaluation FLOPs, "
                 f"{est['device_hours']:.3g} {est['device_kind']}-hours")
    if est["flops_train_attributed"] > est["flops_train"] * (1 + 1e-9):
        lines.append(f"  (trials share cached steps: the per-trial figures add up to {est['device_hours_attributed']:.3g} "
                     f"{est['device_kind']}-hours, {est['flops_train_attributed']:.3g} training FLOPs)")
    return "\n".join(lines)
