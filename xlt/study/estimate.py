"""Price a study before launching it: planned trials, training/evaluation FLOPs, device-hours.

Torch-free and offline: model shapes come from a local config.json, a tiny spec, or a table
of well-known hub models; data sizes from local files, generated data, or a table of
well-known hub datasets. Token counts are estimated from text (words x 1.3, one token per
CJK character), so figures are estimates, typically within tens of percent.
"""

from __future__ import annotations

import functools
import glob
import itertools
import json
import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlt import breakeven, calibration, compute, derived
from xlt.data.squad import read_squad_file, select
from xlt.errors import XltError
from xlt.spec import (
    DataSource,
    StudySpec,
    TextCorpus,
    primary_method,
    step1_identity,
    step3_identity,
    trial_spec,
)
from xlt.study.resources import TrialResources

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
    "google/xquad": ({"validation": 1190}, 170.0),
    # MLQA (Lewis et al. 2020) as google/xtreme's parquet configs MLQA.<context lang>.<question lang>:
    # per-config sizes from the dataset cards; MLQA contexts are whole Wikipedia paragraphs (an assumed
    # 200 tokens of question + context)
    "google/xtreme:MLQA.en.en": ({"validation": 1148, "test": 11590}, 200.0),
    "google/xtreme:MLQA.de.de": ({"validation": 512, "test": 4517}, 200.0),
    "google/xtreme:MLQA.ar.ar": ({"validation": 517, "test": 5335}, 200.0),
    "google/xtreme:MLQA.zh.zh": ({"validation": 504, "test": 5137}, 200.0),
    "google/xtreme:MLQA.es.es": ({"validation": 500, "test": 5253}, 200.0),
    "google/xtreme:MLQA.hi.hi": ({"validation": 507, "test": 4918}, 200.0),
    "google/xtreme:MLQA.vi.vi": ({"validation": 511, "test": 5495}, 200.0),
}


_count_tokens = derived.text_tokens


@functools.lru_cache(maxsize=8)
def _tokenizer(name: str) -> Any | None:
    """The model's own fast tokenizer when its directory is on this machine (`tokenizers`, no
    torch), without the truncation or padding its file may set; else None (a hub name offline, a
    tiny model: tokens are estimated from the text)."""
    try:
        path = Path(derived.resolve_name(name, must_exist=False)) / "tokenizer.json"
    except XltError:
        return None
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.no_truncation()
    tok.no_padding()
    return tok


def token_counter(spec: StudySpec, vocabulary: str = "model") -> tuple[Callable[[list[str]], list[float]], str]:
    """(texts -> token counts, where they come from): the model's tokenizer, else (or for
    `vocabulary` "new": an adapted model's own target vocabulary, which does not exist before
    step 2 builds it) derived.text_tokens.
    Windows depend on the tokenizer: MiniLM's English WordPiece cuts Russian into ~2x the tokens
    words x 1.3 says (xlt estimate --against the shipped xquad_transfer_cpu)."""
    tok = _tokenizer(spec.model.name) if vocabulary == "model" and spec.model.tiny is None and spec.model.name else None
    if tok is None:
        return (lambda texts: [_count_tokens(x) for x in texts]), "estimated from text (words x 1.3, 1 per CJK character)"
    return (lambda texts: [float(len(e.ids)) for e in tok.encode_batch(texts, add_special_tokens=False)]), \
        "counted by the model's tokenizer"


@dataclass
class DataSize:
    questions: int
    windows: float  # per question
    window_tokens: float  # mean window length, special tokens included


def data_size(src: DataSource, spec: StudySpec, vocabulary: str = "model") -> DataSize:
    """How many questions a source holds and how they window (token_counter's tokens, of
    `vocabulary`). Memoised: a study's trials price the same sources again and again."""
    t = spec.train
    key: tuple[Any, ...] = (src.model_dump_json(), spec.model.model_dump_json(), t.max_seq_length, t.doc_stride,
                            t.max_query_length, vocabulary)
    if src.path is not None:  # the file itself, as it is now
        path = spec.resolve_path(src.path)
        stat = path.stat() if path.is_file() else None
        key += (str(path), *((stat.st_mtime_ns, stat.st_size) if stat else ()))
    if key not in _SIZES:
        _SIZES[key] = _data_size(src, spec, vocabulary)
    return _SIZES[key]


_SIZES: dict[tuple[Any, ...], DataSize] = {}


def _data_size(src: DataSource, spec: StudySpec, vocabulary: str) -> DataSize:
    t = spec.train
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
        known = KNOWN_DATASETS.get(f"{src.hub}:{src.hub_config}") or KNOWN_DATASETS.get(src.hub or "")
        if known is None or src.split not in known[0]:
            raise XltError(f"{src.label}: size of hub dataset {src.hub}:{src.split} unknown offline; "
                           f"set max_questions on it to estimate")
        n, mean = known[0][src.split], known[1]
        windows, length = derived.qa_windows(_QUESTION_SHARE * mean, (1 - _QUESTION_SHARE) * mean, t)
        return DataSize(min(n, src.max_questions or n), windows, length)
    count, _ = token_counter(spec, vocabulary)
    cut = [derived.qa_windows(q, c, t) for c, q in zip(count([c for c, _ in qas]), count([q for _, q in qas]), strict=True)]
    windows = sum(w for w, _ in cut)
    return DataSize(min(n, src.max_questions or n), windows / max(1, len(cut)),
                    sum(w * length for w, length in cut) / max(1, windows))


_QUESTION_SHARE = 0.08  # of a hub dataset's question + context tokens (SQuAD: ~12 of ~160)


# mean tokens per line of a streamed corpus: an assumption (xlt estimate does not read a corpus):
# CC-100 and Wikipedia lines are paragraphs of a few sentences
CORPUS_LINE_TOKENS = 40.0


def text_line_tokens(spec: StudySpec, patterns: tuple[str, ...] | TextCorpus, lang: str) -> float:
    """Mean tokens per line of adaptation text (its first 2,000 lines; generated text when none is
    given; a corpus read through `datasets` is not read: CORPUS_LINE_TOKENS)."""
    a = spec.adapt
    assert a is not None
    if isinstance(patterns, TextCorpus):
        return CORPUS_LINE_TOKENS
    if patterns:
        lines: list[str] = []
        for pattern in patterns:
            for path in sorted(glob.glob(str(spec.resolve_path(pattern.replace("{lang}", lang))))):
                with open(path, encoding="utf-8", errors="replace") as f:
                    lines += [ln for ln in itertools.islice(f, 2000) if ln.strip()]
                if len(lines) >= 2000:
                    break
    else:
        from xlt.data.synthetic import make_text

        lines = make_text(lang, min(a.synthetic_lines or 1, 2000), 0)
    return sum(_count_tokens(ln) for ln in lines) / max(1, len(lines)) or 1.0


def text_budget(source: tuple[str, ...] | TextCorpus, lang: str, step, stage: str) -> dict[str, Any] | None:
    """What a corpus's budget buys a step, priced without reading it: the tokens the budget admits
    (max_tokens, or max_lines x CORPUS_LINE_TOKENS), the tokens the step trains on (steps x batch x
    length: packed rows hold no padding) and how many passes over the text that is."""
    if not isinstance(source, TextCorpus):
        return None
    c = source.resolved(lang)
    budget = float(c["max_tokens"] if c["max_tokens"] is not None else c["max_lines"] * CORPUS_LINE_TOKENS)
    if c["max_tokens"] is not None and c["max_lines"] is not None:
        budget = min(budget, c["max_lines"] * CORPUS_LINE_TOKENS)
    files = c["data_files"]
    label = c["dataset"] + (f":{c['config']}" if c["config"] else "") + (
        f" {files if isinstance(files, str) else ','.join(files)}" if files else "")
    read = float(step.steps * step.batch_size * step.max_seq_length)
    return {"stage": stage, "lang": lang, "source": label, "budget_tokens": budget, "trained_tokens": read,
            "passes": read / budget}


def model_config(spec: StudySpec) -> dict[str, Any]:
    m = spec.model
    if m.tiny is not None:
        return derived.tiny_config(m.tiny)
    name = m.name or ""
    if name in KNOWN_MODELS:
        return KNOWN_MODELS[name]
    path = Path(derived.resolve_name(name, must_exist=False))
    if (path / "config.json").is_file():
        return json.loads((path / "config.json").read_text())
    raise XltError(f"model {name}: shape unknown offline (not a local path and not in xlt's table of hub models)")


def has_mlm_head(spec: StudySpec, cfg: dict[str, Any]) -> bool:
    """Whether the study's pretrained model brings its own MLM head (hub models in xlt's table do;
    a local checkpoint says so in its weights); a tiny model has nothing pretrained."""
    m = spec.model
    if m.tiny is not None:
        return False
    if m.name in KNOWN_MODELS:
        return True
    return derived.checkpoint_has_mlm_head(derived.resolve_name(m.name or "", must_exist=False), cfg["model_type"])


def planned_trials(spec: StudySpec, max_trials: int = 10_000) -> list[dict[str, Any]]:
    """The trials a study will run. Grid: as the runner plans them (derived.grid_trials). Samplers:
    the points, then `num_samples` draws in all, here uniform as a stand-in for what TPE or
    NSGA-II will pick."""
    s = spec.search
    if derived.searches_grid(s):
        trials = derived.grid_trials(s, spec.train.seed)
    else:
        rng = random.Random(0)
        trials = [dict(p) for p in s.points][: s.num_samples]
        while len(trials) < s.num_samples:
            trials.append({k: _draw(p, rng) for k, p in s.space.items()})
    if len(trials) > max_trials:
        raise XltError(f"search: {len(trials)} trials planned; more than {max_trials}")
    return trials


def _draw(p, rng: random.Random) -> Any:
    if p.choice is not None:
        return rng.choice(list(p.choice))
    if p.int_range is not None:
        return rng.randint(*p.int_range)
    if p.log_range is not None:
        lo, hi = p.log_range
        return math.exp(rng.uniform(math.log(lo), math.log(hi)))
    return rng.uniform(*p.range)


def _eval_flops(shape: compute.EncoderShape, evals: list[DataSize], plan: compute.Plan) -> float:
    """Forward FLOPs of one evaluation of each of `evals`."""
    return sum(compute.forward_flops(shape, round(e.questions * e.windows), round(e.window_tokens), plan) for e in evals)


def _qa_flops(spec: StudySpec, shape: compute.EncoderShape, train: list[tuple[int, DataSize]],
              evals: list[tuple[DataSource, DataSize]], embeddings_trainable: bool = True) -> tuple[float, float, int]:
    """(training FLOPs, evaluation FLOPs, steps) of a QA stage on `train` ((questions, their size) per
    source): eval sets scored at every evaluation, and those with `evaluate: final` once."""
    t = spec.train
    windows = sum(n * size.windows for n, size in train)
    seq = sum(n * size.windows * size.window_tokens for n, size in train) / max(1.0, windows)
    schedule = derived.qa_schedule(round(windows), t)
    steps = schedule.total_steps
    plan = compute.Plan(embeddings=embeddings_trainable, layers=(True,) * shape.layers, head=True, head_kind="qa")
    flops = steps * t.grad_accum * compute.train_step_flops(shape, t.batch_size, max(1, round(seq)), plan)
    n_evals = derived.n_evaluations(steps, schedule.eval_every)
    every = _eval_flops(shape, [size for src, size in evals if src.evaluate == "every"], plan)
    final = _eval_flops(shape, [size for src, size in evals if src.evaluate == "final"], plan)
    return flops, every * n_evals + final, steps


def _mlm_flops(shape: compute.EncoderShape, layers: tuple[bool, ...], step, *, embeddings: bool, head: bool,
               probability: float, line_tokens: float, extra=()) -> float:
    plan = compute.Plan(embeddings=embeddings, layers=layers, head=head, head_kind="mlm", head_tied=True,
                        extra_heads=extra)
    share = derived.masked_share(step.max_seq_length, line_tokens)
    masked = round(probability * share * step.batch_size * step.max_seq_length)
    return step.steps * compute.train_step_flops(shape, step.batch_size, step.max_seq_length, plan, mlm_positions=masked)


def trial_cost(spec: StudySpec) -> dict[str, Any]:
    cfg = model_config(spec)
    shape = compute.EncoderShape.from_config(cfg)
    d = spec.data
    evals = [(e, data_size(e, spec)) for e in d.eval]
    train: list[tuple[int, DataSize]] = []
    if d.target is not None:
        size = data_size(d.target, spec)
        n = d.target_count if d.target_count is not None else round((d.target_fraction or 1.0) * size.questions)
        train.append((min(n, size.questions), size))
    english = None
    if d.english is not None and (d.with_english or d.target is None):
        english = data_size(d.english, spec)
    # sequential +English (xlt.train.qa.english_model): an English stage cached once per study
    # (model, English set, training settings), then the target subset alone
    if spec.task == "qa" and english is not None and d.english_mix == "sequential" and train and train[0][0] > 0:
        fixed = spec.model_copy(update={"train": spec.train.model_copy(update={"mode": "fixed", "eval_every": 10**9})})
        validation = [(src, size) for src, size in evals if src.label == d.validation_set.label]
        first, first_eval, _ = _qa_flops(fixed, shape, [(english.questions, english)], validation)
        flops, evals_flops, steps = _qa_flops(spec, shape, train, evals)
        key = json.dumps([spec.model.model_dump(mode="json"), d.english.model_dump(mode="json"),  # type: ignore[union-attr]
                          fixed.train.model_dump(mode="json")], sort_keys=True)
        return {"flops_train": first + flops, "flops_eval": first_eval + evals_flops, "steps": steps,
                "stages": {"english": first, "qa": flops}, "shared": [("english", key, first)]}
    if english is not None:
        train.append((english.questions, english))
    if spec.task == "qa":
        flops, evals_flops, steps = _qa_flops(spec, shape, train, evals)
        return {"flops_train": flops, "flops_eval": evals_flops, "steps": steps, "stages": {"qa": flops}}
    a = spec.adapt
    assert a is not None
    n, k = shape.layers, a.depth
    if not 1 <= k < n:
        raise XltError(f"adapt.depth: must be between 1 and {n - 1} for a {n}-layer model, got {k}")
    small = compute.EncoderShape(**{**vars(shape), "layers": k}) if a.method == "base_small" else shape
    p = a.mlm_probability
    en = dict(probability=p, line_tokens=text_line_tokens(spec, a.source_text, "en"))
    target = dict(probability=p, line_tokens=text_line_tokens(spec, a.target_patterns(a.target_lang), a.target_lang))
    # BaseLarge's step 1 (as xlt.train.adapt.run_step1): the whole primary MLM-trained (a tiny model
    # from scratch; a pretrained one without an MLM head, e.g. MiniLM, with primary_step1: all), a
    # new head over its frozen body (primary_step1: head), or nothing for a checkpoint that is a
    # masked LM already
    if spec.model.tiny is not None or (not has_mlm_head(spec, cfg) and a.primary_step1 == "all"):
        base_large = _mlm_flops(shape, (True,) * n, a.step1, embeddings=True, head=True, **en)
    elif not has_mlm_head(spec, cfg):  # a new head fitted over the frozen body
        base_large = _mlm_flops(shape, (False,) * n, a.step1, embeddings=False, head=True, **en)
    else:
        base_large = 0.0
    step1 = {
        "base_large": base_large,
        "mini_joint": _mlm_flops(shape, (True,) * n, a.step1, embeddings=True, head=True, **en,
                                 extra=((k, "mlm"),)),
        "mini_post": _mlm_flops(compute.EncoderShape(**{**vars(shape), "layers": k + 1}), (False,) * k + (True,),
                                a.step1, embeddings=False, head=True, **en),
        "base_small": _mlm_flops(small, (True,) * k, a.step1, embeddings=True, head=True, **en),
    }
    run = {"base_large": n, "mini_joint": k, "mini_post": k + 1, "base_small": k}[a.method]
    vocab_shape = compute.EncoderShape(**{**vars(shape), "layers": run, "vocab": a.vocab_size})
    step2 = _mlm_flops(vocab_shape, (False,) * run, a.step2, embeddings=True, head=False, **target)
    # step 3 scores the English sets at its evaluations; step 4 the target sets once with the source
    # vocabulary (the source_vocab event), and with the new one at step 0, every eval_every step-2
    # steps and at the end
    step3, step3_evals, _ = _qa_flops(spec, small, train, [(src, size) for src, size in evals if src.lang == "en"],
                                      embeddings_trainable=False)
    frozen = compute.Plan(embeddings=False, layers=(False,) * small.layers, head=False, head_kind="qa")
    targets = [src for src, _ in evals if src.lang == a.target_lang]
    source_vocab = _eval_flops(small, [data_size(src, spec) for src in targets], frozen)
    new_vocab = _eval_flops(small, [data_size(src, spec, "new") for src in targets], frozen)
    evals_flops = step3_evals + source_vocab + new_vocab * (1 + derived.n_evaluations(a.step2.steps, a.eval_every))
    # what trials share through the artifact cache (xlt.train.adapt): step 1 per method and
    # depth, MiniPost's on top of BaseLarge's primary, and step 3 per primary
    primary = primary_method(a.method)
    shared = [("step1", _step1_key(spec, m), step1[m]) for m in dict.fromkeys([a.method, primary])]
    shared.append(("step3", json.dumps([_step1_key(spec, primary), step3_identity(spec)], sort_keys=True), step3))
    s1 = sum(f for stage, _, f in shared if stage == "step1")
    texts = [b for b in (text_budget(a.source_text, "en", a.step1, "step1"),
                         text_budget(a.target_patterns(a.target_lang), a.target_lang, a.step2, "step2")) if b]
    return {"flops_train": s1 + step2 + step3, "flops_eval": evals_flops,
            "stages": {"step1": s1, "step2": step2, "step3": step3}, "shared": shared, "text": texts}


def _step1_key(spec: StudySpec, method: str) -> str:
    a = spec.adapt
    assert a is not None
    # the source text by its patterns (xlt.train.adapt hashes the files' content)
    text = a.source_text.model_dump(mode="json") if isinstance(a.source_text, TextCorpus) else list(a.source_text)
    return json.dumps({**step1_identity(spec, method), "text": text, "lines": a.synthetic_lines}, sort_keys=True)


@dataclass(frozen=True)
class Throughput:
    train: float  # FLOP/s of training
    eval: float  # FLOP/s of evaluation (forward only)
    source: str  # "study" | "measured" | "assumed"
    detail: str = ""

    def hours(self, train_flops: float, eval_flops: float) -> float:
        return (train_flops / self.train + eval_flops / self.eval) / 3600


def throughput(spec: StudySpec, kind: str) -> Throughput:
    """The study's `throughput:` (evaluation assumed 3x faster), else what `xlt calibrate` measured
    on this machine for the study's threads per worker, else the assumed default."""
    if kind in spec.throughput:
        return Throughput(spec.throughput[kind], 3 * spec.throughput[kind], "study")
    threads = calibration.study_threads(spec)
    m = calibration.measured(kind, threads)
    if m is not None:
        return Throughput(m["train_flops_per_s"], m["eval_flops_per_s"], "measured",
                          f"{m.get('device', kind)}, {threads} thread(s), {m.get('model_shape', '?')}")
    return Throughput(DEFAULT_THROUGHPUT[kind], 3 * DEFAULT_THROUGHPUT[kind], "assumed")


def estimate(spec: StudySpec) -> dict[str, Any]:
    """Every planned trial's cost (each charged all it uses, shared steps included) and the
    study's: a step that trials share through the artifact cache is computed once."""
    kind = device_kind(spec)
    rate = throughput(spec, kind)
    rows, paid, texts = price(spec, planned_trials(spec), rate)
    attributed = sum(r["flops_train"] for r in rows)
    evals = sum(r["flops_eval"] for r in rows)
    reported = [_reported(spec, r, rows, rate) for r in spec.reported_cost]
    hours_paid = rate.hours(paid, evals)
    return {"resources": resources_here(spec, hours_paid), "study": spec.name, "task": spec.task, "device_kind": kind, "throughput_flops_per_s": rate.train,
            "eval_throughput_flops_per_s": rate.eval, "throughput_source": rate.source,
            "throughput_detail": rate.detail, "reported": [r for r in reported if r is not None],
            "tokens": token_counter(spec)[1], "trials": rows, "n_trials": len(rows), "flops_train": paid, "flops_train_attributed": attributed,
            "flops_eval": evals, "device_hours": rate.hours(paid, evals),
            "device_hours_attributed": sum(r["device_hours"] for r in rows), "text": list(texts.values()),
            "breakeven": priced_breakeven(spec, rows) if spec.task == "adapt" else []}


def device_kind(spec: StudySpec) -> str:
    return "gpu" if spec.scale == "gpu" or spec.resources.gpus_per_worker > 0 else "cpu"


def price(spec: StudySpec, trials: list[dict[str, Any]], rate: Throughput
          ) -> tuple[list[dict[str, Any]], float, dict[tuple[str, str], dict[str, Any]]]:
    """(a row per trial, the training FLOPs the trials compute, the text budgets) of `trials`
    (parameters) in the order they start: the first trial to need a shared step computes it."""
    rows: list[dict[str, Any]] = []
    once: dict[tuple[str, str], float] = {}
    paid = 0.0
    texts: dict[tuple[str, str], dict[str, Any]] = {}
    for params in trials:
        cost = trial_cost(trial_spec(spec, params))
        shared = cost.pop("shared", [])
        for b in cost.pop("text", []):
            texts.setdefault((b["stage"], b["source"]), b)
        own, first = cost["flops_train"] - sum(f for _, _, f in shared), 0.0
        for stage, key, flops in shared:
            if (stage, key) not in once:
                once[(stage, key)] = flops
                first += flops
        # device_hours: all the trial uses; paid_device_hours: what it computes itself, in plan order
        rows.append({"params": params, **cost, "device_hours": rate.hours(cost["flops_train"], cost["flops_eval"]),
                     "paid_device_hours": rate.hours(own + first, cost["flops_eval"])})
        paid += own + first
    return rows, paid, texts


def resources_here(spec: StudySpec, device_hours: float) -> dict[str, Any]:
    """What one trial reserves (as `xlt run` counts it: xlt.study.resources) and how many trials
    run at once on this machine's CPUs (the embedded Ray of `xlt run` offers them all); the
    study's wall hours here, its device-hours spread over its trials' workers and those slots."""
    tr = TrialResources.of(spec.resources)
    cpus = float(os.cpu_count() or 1)
    slots = tr.slots({"CPU": cpus}) if tr.fit({"CPU": cpus}) else 0
    return {"trial_host": tr.host, "per_trial": tr.need(), "reservation": tr.describe(), "local_cpus": cpus,
            "local_slots": slots,
            "local_wall_hours": device_hours / spec.resources.workers / slots if slots and "GPU" not in tr.need() else None}


def priced_breakeven(spec: StudySpec, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Break-even across target languages as priced before the study runs (xlt.breakeven's rule
    on this cost model): per arm (method, depth), the one-off step 1 + step 3 FLOPs and the step-2
    FLOPs per language, mean over the planned trials and their languages. Step 2 is priced for its
    planned steps, not to near-maximal quality (which only the rows can tell)."""
    arms: dict[tuple[str, int | None], dict[str, Any]] = {}
    for r in rows:
        adapt = trial_spec(spec, r["params"]).adapt
        assert adapt is not None
        key = (adapt.method, None if adapt.method == breakeven.REFERENCE else adapt.depth)
        arm = arms.setdefault(key, {"method": adapt.method, "depth": key[1], "one_off": [], "per_language": {}})
        arm["one_off"].append(r["stages"]["step1"] + r["stages"]["step3"])
        arm["per_language"].setdefault(adapt.target_lang, []).append(r["stages"]["step2"])
    out = []
    for arm in arms.values():
        langs = {lang: sum(v) / len(v) for lang, v in arm["per_language"].items()}
        out.append({"arm": arm["method"] if arm["depth"] is None else f"{arm['method']} k={arm['depth']}",
                    "method": arm["method"], "depth": arm["depth"], "languages": sorted(langs),
                    "one_off": sum(arm["one_off"]) / len(arm["one_off"]),
                    "per_language": sum(langs.values()) / len(langs)})
    ref = next((a for a in out if a["method"] == breakeven.REFERENCE), None)
    for a in out:
        if ref is None or a is ref:
            a["verdict"], a["break_even"], a["cost_share"] = ("reference" if a is ref else "no BaseLarge planned"), None, None
            continue
        v = breakeven.break_even(a["one_off"], a["per_language"], ref["one_off"], ref["per_language"])
        a["verdict"], a["break_even"] = v.text(), v.languages
        a["cost_share"] = a["per_language"] / ref["per_language"] if ref["per_language"] else None
    return out


def format_breakeven(arms: list[dict[str, Any]]) -> list[str]:
    if not arms:
        return []
    lines = ["  break-even across target languages (priced: step 1 + step 3 once, step 2 per language for its"
             " planned steps, not to near-max quality):"]
    width = max(len(a["arm"]) for a in arms)
    for a in arms:
        share = f" ({100 * a['cost_share']:.3g}% of BaseLarge's)" if a.get("cost_share") is not None else ""
        lines.append(f"    {a['arm']:<{width}}  one-off {a['one_off']:9.3g}  per language {a['per_language']:9.3g}"
                     f" FLOPs{share}: {a['verdict']}")
    lines.append(f"    reference: {breakeven.PAPER_SOURCE} (a share of step-2 cost to near-maximal quality)")
    return lines

def _reported(spec: StudySpec, r, rows: list[dict[str, Any]], rate: Throughput) -> dict[str, Any] | None:
    """The estimate beside one of the paper's reported costs: the mean per-trial device-hours of the
    trials `r.where` selects (their step 2, or all of each trial), and for a share, BaseLarge's."""
    def hours(row: dict[str, Any]) -> float:
        if r.stage == "step2":
            return row.get("stages", {}).get("step2", 0.0) / rate.train / 3600
        return row["device_hours"]

    def select(where: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for row in rows:
            resolved = trial_spec(spec, row["params"])
            if all(_value(resolved, k) == v for k, v in where.items()):
                out.append(row)
        return out

    chosen = select(r.where)
    if not chosen:
        return None
    mean = sum(map(hours, chosen)) / len(chosen)
    out = {"label": r.label, "n": len(chosen), "hours": mean, "stage": r.stage, "source": r.source,
           "paper_gpu_days": r.gpu_days, "paper_share": r.share_of_base_large}
    if r.share_of_base_large is not None:
        base = select({**{k: v for k, v in r.where.items() if k not in ("adapt.method", "adapt.depth")},
                       "adapt.method": "base_large"})
        if not base:
            return None
        out["reference_hours"] = sum(map(hours, base)) / len(base)
        out["share"] = mean / out["reference_hours"] if out["reference_hours"] else float("nan")
    return out


def _value(spec: StudySpec, dotted: str) -> Any:
    node: Any = spec
    for part in dotted.split("."):
        node = getattr(node, part, None)
    return node


def format_estimate(est: dict[str, Any]) -> str:
    source = {"study": "the study's `throughput:`",
              "measured": f"measured by xlt calibrate: {est.get('throughput_detail', '')}",
              "assumed": "assumed: `xlt calibrate` measures it"}[est.get("throughput_source", "assumed")]
    lines = [f"study {est['study']}: {est['n_trials']} trial{'' if est['n_trials'] == 1 else 's'} on {est['device_kind']} "
             f"(throughput {est['throughput_flops_per_s']:.2g} FLOP/s training, "
             f"{est.get('eval_throughput_flops_per_s', 3 * est['throughput_flops_per_s']):.2g} evaluation; {source})"]
    if est.get("tokens"):
        lines.append(f"  QA tokens {est['tokens']}")
    for i, r in enumerate(est["trials"][:50]):
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["params"].items())
        lines.append(f"  trial {i:>3}  {r['flops_train']:9.3g} train FLOPs  {r['device_hours']:8.3g} "
                     f"{est['device_kind']}-hours  {params}")
    if est["n_trials"] > 50:
        lines.append(f"  ... {est['n_trials'] - 50} more")
    for b in est.get("text", []):
        lines.append(f"  {b['stage']} text ({b['lang']}) {b['source']}: budget {b['budget_tokens']:.3g} tokens, "
                     f"{b['stage']} trains on {b['trained_tokens']:.3g}: {b['passes']:.2g} passes over it")
    for r in est.get("reported", []):
        lines.append(f"  {r['label']}: " + (
            f"estimated {r['hours']:.3g} {est['device_kind']}-hours ({r['hours'] / 24:.3g} days) over {r['n']} trials;"
            f" the paper reports {r['paper_gpu_days']:g} GPU-days" if r.get("paper_gpu_days") is not None else
            f"estimated {100 * r['share']:.3g}% of BaseLarge's {r['stage']} cost ({r['hours']:.3g} of "
            f"{r['reference_hours']:.3g} {est['device_kind']}-hours per trial); the paper reports "
            f"{100 * r['paper_share']:.3g}%") + (f" ({r['source']})" if r["source"] else ""))
    lines += format_breakeven(est.get("breakeven", []))
    lines.append(f"total: {est['flops_train']:.3g} training FLOPs, {est['flops_eval']:.3g} evaluation FLOPs, "
                 f"{est['device_hours']:.3g} {est['device_kind']}-hours")
    if est["flops_train_attributed"] > est["flops_train"] * (1 + 1e-9):
        lines.append(f"  (trials share cached steps: the per-trial figures add up to {est['device_hours_attributed']:.3g} "
                     f"{est['device_kind']}-hours, {est['flops_train_attributed']:.3g} training FLOPs)")
    if res := est.get("resources"):
        here = (f"{res['local_slots']} at a time on this machine's {res['local_cpus']:g} CPUs"
                + (f", about {res['local_wall_hours']:.3g} hours wall" if res["local_wall_hours"] is not None else "")
                if res["local_slots"] else f"does not fit this machine's {res['local_cpus']:g} CPUs")
        lines.append(f"resources: {res['reservation']}; {here}")
    return "\n".join(lines)
