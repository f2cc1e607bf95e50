"""Mini-model adaptation of one trial (Marchisio et al., 2023), in-process and Ray-free.

    step 1  English alignment: the primary encoder and the mini-model that step 2 trains
              base_large  the primary itself (its MLM head trained if it has none)
              mini_joint  one model with a second MLM head after layer k (loss = top + layer k)
              mini_post   the primary's bottom k layers, frozen, under one new layer + MLM head
              base_small  a k-layer model trained alone (and then used as the primary)
    step 3  English QA fine-tuning of the primary, token embeddings frozen (positions and the
            embedding LayerNorm train: step-1 text may be shorter than QA windows)
    step 2  target-language token embeddings by MLM on target text, everything else frozen,
            through the primary (base_large) or only through the mini-model (mini_*)
    step 4  the step-2 embeddings and the target tokenizer swapped into the step-3 model,
            evaluated zero-shot on target QA: every `eval_every` step-2 steps and at the end

Steps 1 and 3 do not depend on the target language or on step 2, so they are cached by a
hash of what produced them and shared by every trial that needs them. MiniPost's primary is
BaseLarge's (its English phase does not depend on k): one primary and one step 3 serve
BaseLarge and MiniPost at every depth. Step 3 runs before step 2 so that each step-2
evaluation can score the current embeddings downstream.
"""

from __future__ import annotations

import copy
import glob
import itertools
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from xlt import compute
from xlt.data import mlm
from xlt.data.squad import Example
from xlt.errors import XltError
from xlt.models.load import load_config, resolve_name, tiny_config
from xlt.models.minimodel import (
    MaskedLM,
    MLMHead,
    freeze,
    layer_list,
    mini_body,
    new_head,
    pretrained_head,
    set_token_embedding,
    token_embedding,
    without_pooler,
)
from xlt.spec import AdaptStep, StudySpec, primary_method, step1_identity, step3_identity
from xlt.tokenization import load_tokenizer
from xlt.train.artifacts import ArtifactCache, content_key, file_fingerprint, trained_tokenizer
from xlt.train.loop import (
    LoopConfig,
    LoopState,
    Meter,
    Session,
    batch_compute,
    run_stage,
    shard,
)
from xlt.train.qa import (
    EvalSet,
    Report,
    TrialInfo,
    artifact_cache,
    device_kind,
    finetune_qa,
    pick_device,
    predict,
    prepare_data,
    trial_columns,
)
from xlt.train.qa import save_model as save_qa_model
from xlt.train.qa import score as qa_score


@dataclass
class Step1:
    """What step 1 leaves: the primary body, the heads, and MiniPost's extra layer."""

    body: nn.Module  # the primary encoder (base_small: the k-layer model)
    heads: nn.ModuleDict  # "top" (after the last layer), "k" (MiniJoint), "post" (MiniPost)
    post_layer: nn.Module | None

    def bundle(self) -> nn.ModuleDict:
        parts = {"body": self.body, "heads": self.heads}
        if self.post_layer is not None:
            parts["post_layer"] = self.post_layer
        return nn.ModuleDict(parts)


def text_files(spec: StudySpec, patterns: tuple[str, ...], lang: str) -> list[str]:
    """Paths from patterns with `{lang}` and shell globs (`${XLT_DATA_DIR}/text/{lang}/*.txt`)."""
    files: list[str] = []
    for pattern in patterns:
        path = str(spec.resolve_path(pattern.replace("{lang}", lang)))
        matches = sorted(glob.glob(path)) if glob.has_magic(path) else [path]
        if not matches:
            raise XltError(f"adapt text {pattern}: no file matches {path}")
        files += matches
    return files


def _lines(spec: StudySpec, patterns: tuple[str, ...], lang: str, seed: int, fraction: float = 1.0) -> list[str]:
    a = spec.adapt
    assert a is not None
    if patterns:
        lines = mlm.read_lines(text_files(spec, patterns, lang))
    elif a.synthetic_lines:
        from xlt.data.synthetic import make_text

        lines = make_text(lang, a.synthetic_lines, seed)
    else:
        raise XltError(f"adapt.{'source' if lang == 'en' else 'target'}_text: no text files given "
                       "(or set adapt.synthetic_lines)")
    if fraction < 1.0:  # nested: a smaller fraction keeps a prefix of the same seeded order
        order = list(range(len(lines)))
        random.Random(seed).shuffle(order)
        lines = [lines[i] for i in sorted(order[: max(1, round(fraction * len(lines)))])]
    return lines


# ---------------------------------------------------------------- MLM training with metering


def train_mlm(model: MaskedLM, tokenizer, lines: list[str], step: AdaptStep, *, plan: compute.Plan, stage: str,
              meter: Meter, device: torch.device, seed: int, mlm_probability: float,
              evaluate=None, eval_every: int | None = None, session: Session | None = None,
              checkpoint_extra=None) -> None:
    """MLM steps on packed `lines`. The spec's `steps` count batches of `batch_size`: with W ranks,
    each optimizer step takes W of them from one global stream, so the data seen, and the
    evaluation points, do not depend on W. `checkpoint_extra()` is saved with each checkpoint
    (evaluations are the checkpoint points)."""
    session = session or Session()
    world = session.world_size
    rows = mlm.pack(tokenizer, lines, step.max_seq_length)
    stream = mlm.mlm_batches(rows, tokenizer, batch_size=step.batch_size, probability=mlm_probability, seed=seed)
    shape = compute.EncoderShape.from_config(model.body.config.to_dict())

    def on_batch(batch: dict[str, torch.Tensor]) -> None:
        masked = int((batch["labels"] != -100).sum())
        flops, real, padded = batch_compute(shape, plan, batch["attention_mask"], train=True, mlm_positions=max(1, masked))
        meter.add_train(stage, flops, real, padded, len(batch["input_ids"]))

    cfg = LoopConfig(total_steps=math.ceil(step.steps / world), lr=step.lr, warmup=0.05, weight_decay=0.0,
                     eval_every=math.ceil(eval_every / world) if eval_every else None)
    def resumed(saved, state):
        # replay the seeded stream to where the checkpoint stood: making masked batches is cheap
        return shard(itertools.islice(stream, state.micro * world, None) if saved else stream, session, on_batch)

    run_stage(model, resumed, cfg, stage=stage, session=session, meter=meter, device=device,
              loss_fn=lambda m, b: m(b["input_ids"], b["attention_mask"], b["labels"]), on_batch=on_batch,
              evaluate=evaluate or (lambda state: None), checkpoint=evaluate is not None,
              checkpoint_extra=checkpoint_extra)


def _mlm_plan(n_layers: int, trainable_layers: tuple[bool, ...], *, embeddings: bool, head: bool,
              extra_heads: tuple[tuple[int, str], ...] = ()) -> compute.Plan:
    assert len(trainable_layers) == n_layers
    return compute.Plan(embeddings=embeddings, layers=trainable_layers, head=head, head_kind="mlm", head_tied=True,
                        extra_heads=extra_heads)


# ---------------------------------------------------------------- step 1


def source_body(spec: StudySpec, tokenizer) -> tuple[nn.Module, MLMHead | None]:
    """The primary encoder before step 1, and its own pretrained MLM head if it has one."""
    from transformers import AutoModel

    m = spec.model
    if m.tiny is not None:
        t = m.tiny
        cfg = tiny_config(vocab_size=len(tokenizer), layers=t.layers, hidden=t.hidden, heads=t.heads,
                          intermediate=t.intermediate, max_positions=t.max_positions, dropout=spec.train.dropout)
        return without_pooler(AutoModel.from_config(cfg)), None
    from safetensors.torch import load_file

    path = Path(resolve_name(m.name))  # type: ignore[arg-type]
    cfg = load_config(m.name, m.trust_remote_code)  # type: ignore[arg-type]
    body = without_pooler(AutoModel.from_pretrained(path, config=cfg, trust_remote_code=m.trust_remote_code))
    weights = path / "model.safetensors"
    head = pretrained_head(load_file(weights), cfg) if weights.exists() else None
    return body, head


def run_step1(spec: StudySpec, tokenizer, lines: list[str], meter: Meter, device: torch.device,
              session: Session | None = None) -> Step1:
    a, seed = spec.adapt, spec.train.seed
    assert a is not None
    if a.method == "mini_post":
        raise ValueError("run_step1: MiniPost's step 1 is BaseLarge's and then train_post_layer")
    body, head = source_body(spec, tokenizer)
    body.to(device)
    n, k, scratch = len(layer_list(body)), a.depth, spec.model.tiny is not None
    if not 1 <= k < n:
        raise XltError(f"adapt.depth: must be between 1 and {n - 1} for a {n}-layer model, got {k}")
    common = dict(meter=meter, device=device, seed=seed, mlm_probability=a.mlm_probability, stage="step1",
                  session=session)
    heads = nn.ModuleDict({"top": head or new_head(body.config)}).to(device)
    post_layer = None

    if a.method == "base_small":
        body = mini_body(body, k) if not scratch else body
        if scratch:  # a k-layer model of the same width, trained from scratch
            from transformers import AutoModel

            cfg = copy.deepcopy(body.config)
            cfg.num_hidden_layers = k
            body = without_pooler(AutoModel.from_config(cfg)).to(device)
        body = copy.deepcopy(body)  # its own weights, not the primary's
        heads["top"] = new_head(body.config).to(device)
        model = MaskedLM(body, {k: heads["top"]})
        freeze(model, True)
        train_mlm(model, tokenizer, lines, a.step1, plan=_mlm_plan(k, (True,) * k, embeddings=True, head=True), **common)
        return Step1(body, heads, None)

    joint = a.method == "mini_joint"
    if joint:
        heads["k"] = new_head(body.config).to(device)
    # (Continued) English MLM pretraining of the whole primary, MiniJoint's with both heads. An
    # encoder without an MLM head (MiniLM, e5) is not a masked LM, and a head over its frozen body
    # stays a poor one: on all-MiniLM-L6-v2 it predicted 10.8% of held-out masked English tokens
    # after 300 steps (loss 6.96), where training the whole model reached 17.4% (loss 5.90) after
    # 100 and was still rising. Step 2 learns the target embeddings through that head, so a head
    # alone left BaseLarge and MiniPost a weaker primary than MiniJoint's. Only a checkpoint with
    # its own pretrained MLM head is BaseLarge's primary as it is.
    if scratch or joint or head is None:
        model = MaskedLM(body, {n: heads["top"], **({k: heads["k"]} if joint else {})})
        freeze(model, True)
        extra = ((k, "mlm"),) if joint else ()
        train_mlm(model, tokenizer, lines, a.step1,
                  plan=_mlm_plan(n, (True,) * n, embeddings=True, head=True, extra_heads=extra), **common)

    return Step1(body, heads, post_layer)


def train_post_layer(spec: StudySpec, primary: Step1, tokenizer, lines: list[str], meter: Meter, device: torch.device,
                     session: Session | None = None) -> Step1:
    """MiniPost's step 1 after the primary's (BaseLarge's): the bottom k layers frozen with the
    embeddings, a new layer (initialised from layer k+1) and MLM head trained on top."""
    a, seed = spec.adapt, spec.train.seed
    assert a is not None
    k = a.depth
    torch.manual_seed(seed)  # the same start whether the primary was trained just now or loaded
    post_layer = copy.deepcopy(layer_list(primary.body)[k])
    heads = nn.ModuleDict({**primary.heads, "post": new_head(primary.body.config).to(device)})
    model = MaskedLM(mini_body(primary.body, k, [post_layer]), {k + 1: heads["post"]})
    freeze(model)
    freeze(post_layer, True)
    freeze(heads["post"], True)
    train_mlm(model, tokenizer, lines, a.step1, plan=_mlm_plan(k + 1, (False,) * k + (True,), embeddings=False, head=True),
              meter=meter, device=device, seed=seed, mlm_probability=a.mlm_probability, stage="step1", session=session)
    return Step1(primary.body, heads, post_layer)


def step2_model(s1: Step1, method: str, k: int) -> MaskedLM:
    """The model step 2 trains through: the whole primary or the mini-model (shared modules)."""
    n = len(layer_list(s1.body))
    if method == "base_large":
        return MaskedLM(s1.body, {n: s1.heads["top"]})
    if method == "mini_joint":
        return MaskedLM(mini_body(s1.body, k), {k: s1.heads["k"]})
    if method == "mini_post":
        return MaskedLM(mini_body(s1.body, k, [s1.post_layer]), {k + 1: s1.heads["post"]})
    return MaskedLM(s1.body, {n: s1.heads["top"]})  # base_small: the k-layer model is the primary


# ---------------------------------------------------------------- step 3


def qa_from_body(body: nn.Module):
    """A QA model whose encoder holds the body's weights (a copy: step 3 must not touch step 1)."""
    from transformers import AutoModelForQuestionAnswering

    qa = AutoModelForQuestionAnswering.from_config(copy.deepcopy(body.config), attn_implementation="sdpa")
    missing, _ = qa.base_model.load_state_dict(body.state_dict(), strict=False)
    if missing:
        raise XltError(f"step 3: encoder weights missing in the QA model: {missing[:3]}")
    return qa


# ---------------------------------------------------------------- step 2 embeddings


def init_embeddings(source_tok, target_tok, source_weight: torch.Tensor, how: str, std: float,
                    seed: int) -> torch.Tensor:
    """New token embeddings for the target vocabulary: random, or with the rows of tokens that
    both vocabularies share copied from the source (special tokens included)."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(len(target_tok), source_weight.shape[1], generator=g) * std
    if how == "copy_shared":
        src = source_tok.get_vocab()
        for token, i in target_tok.get_vocab().items():
            j = src.get(token)
            if j is not None and j < source_weight.shape[0]:
                weight[i] = source_weight[j].detach().cpu()
    return weight


# ---------------------------------------------------------------- the pipeline


def run_adapt(spec: StudySpec, report: Report, info: TrialInfo, *, out_dir: str | Path | None = None,
              device: torch.device | None = None, session: Session | None = None) -> dict[str, Any]:
    """One adaptation trial; returns the final target scores per eval set. Under a launcher
    (`session`), every step is data-parallel over the ranks, steps 3 and 2 checkpoint at each
    evaluation, and tokenizers are made once per trial (their training is not deterministic)."""
    a, t = spec.adapt, spec.train
    assert a is not None
    session = session or Session()
    device = device or pick_device()
    if t.threads:
        torch.set_num_threads(t.threads)
    torch.manual_seed(t.seed)
    meter = Meter(device_kind=device_kind(device), n_devices=session.world_size)
    cache = artifact_cache(spec) or ArtifactCache(Path(out_dir or ".") / "artifacts")
    t0 = time.perf_counter()

    data = prepare_data(spec)
    english_evals = {n: v for n, v in data.evals.items() if v[0].lang == "en"}
    target_evals = {n: v for n, v in data.evals.items() if v[0].lang == a.target_lang}
    if not target_evals:
        raise XltError(f"data.eval: no evaluation set in the target language '{a.target_lang}'")
    source_lines = _lines(spec, a.source_text, "en", t.seed)
    target_lines = _lines(spec, a.target_patterns(a.target_lang), a.target_lang, t.seed + 1, a.target_text_fraction)

    text_id = file_fingerprint(text_files(spec, a.source_text, "en")) or ("synthetic", a.synthetic_lines)
    key1 = step1_key(spec, a.method, text_id)
    key3 = content_key(kind="step3", step1=step1_key(spec, primary_method(a.method), text_id), **step3_identity(spec))
    # every rank must take the same branch (a cache miss trains, data-parallel): rank 0 decides
    hit1, hit3 = session.agree((cache.get("step1", key1) is not None, cache.get("step3", key3) is not None))

    # source tokenizer: the model's own; a tiny model's is trained on English text and QA data (once
    # per cache: every rank, restart and trial gets the same), and kept with step 1, whose embeddings index it
    if spec.model.name:
        source_tok = load_tokenizer(spec.model.tokenizer or spec.model.name, spec.model.trust_remote_code)
    elif hit1:
        source_tok = load_tokenizer(str(cache.path("step1", key1) / "tokenizer"))
    else:
        texts = source_lines + list(dict.fromkeys(e.context for e in data.train)) + [e.question for e in data.train]
        source_tok = trained_tokenizer(cache, texts, spec.model.tiny.vocab_size)  # type: ignore[union-attr]

    # ---- step 1 (cached)
    s1 = _cached_step1(spec, cache, key1, hit1, source_tok, source_lines, meter, device, session, text_id)

    # ---- step 3 (cached): English QA, token embeddings frozen
    base = trial_columns(spec, info, method=a.method, target_count=data.target_count)
    qa = _cached_step3(spec, cache, key3, hit3, s1, source_tok, data.train, english_evals, report, base, meter,
                       device, session)

    # ---- step 2 with step-4 evaluations
    # one target vocabulary per target text: trials comparing methods or depths share it
    target_tok = trained_tokenizer(cache, target_lines, a.vocab_size, kind=a.tokenizer_kind)
    std = getattr(s1.body.config, "initializer_range", 0.02)
    weight = init_embeddings(source_tok, target_tok, token_embedding(s1.body).weight, a.embedding_init, std, t.seed)
    emb = set_token_embedding(s1.body, weight.to(device))  # shared by every mini-body built on s1.body
    for h in s1.heads.values():
        h.bias = nn.Parameter(torch.zeros(len(target_tok), device=device))
    model = step2_model(s1, a.method, a.depth)
    freeze(model)
    freeze(emb, True)
    for h in model.heads.values():
        h.bias.requires_grad_(True)  # vocabulary-sized, so it is new with the vocabulary
    run_layers = len(layer_list(model.body))
    plan2 = _mlm_plan(run_layers, (False,) * run_layers, embeddings=True, head=False)

    qa.base_model.set_input_embeddings(emb)  # step 4: the QA model reads the embeddings step 2 trains
    qa.config.vocab_size = len(target_tok)
    qa.eval()
    window = dict(max_seq_length=t.max_seq_length, doc_stride=t.doc_stride, max_query_length=t.max_query_length)
    from xlt.data import features as F

    target_sets = [EvalSet(n, src.lang, src.metric_mode or spec.metric_mode, ex,
                           F.build_features(target_tok, ex, train=False, **window))
                   for n, (src, ex) in target_evals.items()]
    qa_shape = compute.EncoderShape.from_config(qa.config.to_dict())
    qa_plan = compute.Plan(embeddings=False, layers=(False,) * qa_shape.layers, head=False, head_kind="qa")
    events: list[list[dict[str, Any]]] = []

    def evaluate(state) -> float:
        rows = []
        for ev in target_sets:
            preds = predict(qa, ev, batch_size=t.eval_batch_size, max_answer_length=t.max_answer_length,
                            pad_id=target_tok.pad_token_id, device=device, meter=meter, shape=qa_shape, plan=qa_plan,
                            answer_rule=t.answer_rule, cls_token_id=target_tok.cls_token_id)
            s = qa_score(ev, preds)
            rows.append({**base, **meter.snapshot("step2"), "stage": "step2", "event": len(events), "step": state.step,
                         "epoch": None, "eval_set": ev.name, "eval_lang": ev.lang, "metric_mode": s["mode"],
                         "exact_match": s["exact_match"], "f1": s["f1"], "n_examples": s["n"],
                         "train_loss": state.last_loss, "is_best": False, "is_final": False, "time": time.time()})
        events.append(rows)
        report(rows)
        return rows[0]["f1"]

    resumed = session.resume is not None and session.resume.get("stage") == "step2"
    if resumed:
        events[:] = session.resume["events"]  # type: ignore[index]
    else:
        evaluate(LoopState())  # step 0: the un-adapted baseline (target tokenizer, initial embeddings)
    train_mlm(model, target_tok, target_lines, a.step2, plan=plan2, stage="step2", meter=meter, device=device,
              seed=t.seed + 2, mlm_probability=a.mlm_probability, evaluate=evaluate, eval_every=a.eval_every,
              session=session, checkpoint_extra=lambda: {"events": events})
    final = [{**r, **meter.snapshot("step2"), "stage": "final", "event": len(events), "is_best": True, "is_final": True,
              "time": time.time()} for r in events[-1]]
    report(final)
    print(f"xlt: adapt {a.method} k={a.depth}: done in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    if out_dir is not None and t.checkpoint:
        save_qa_model(qa, target_tok, Path(out_dir) / "model", t)
    return {r["eval_set"]: {"f1": r["f1"], "exact_match": r["exact_match"], "step": r["step"]} for r in final}


def step1_key(spec: StudySpec, method: str, text_id) -> str:
    return content_key(kind="step1", layout=3, text=text_id, **step1_identity(spec, method))


def _cached_step1(spec, cache: ArtifactCache, key: str, hit: bool, tokenizer, lines, meter: Meter, device,
                  session: Session, text_id) -> Step1:
    a = spec.adapt
    if not hit:
        before = meter.flops_by_stage.get("step1", 0.0)
        if a.method != primary_method(a.method):  # MiniPost: BaseLarge's primary, cached when a trial made it
            bl = spec.model_copy(update={"adapt": a.model_copy(update={"method": primary_method(a.method)})})
            key_bl = step1_key(bl, bl.adapt.method, text_id)
            hit_bl = session.agree(cache.get("step1", key_bl) is not None)
            primary = _cached_step1(bl, cache, key_bl, hit_bl, tokenizer, lines, meter, device, session, text_id)
            s1 = train_post_layer(spec, primary, tokenizer, lines, meter, device, session)
        else:
            s1 = run_step1(spec, tokenizer, lines, meter, device, session)
        if session.rank == 0:
            def write(tmp: Path) -> dict[str, Any]:
                save_model(s1.bundle(), str(tmp / "model.safetensors"))
                s1.body.config.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp / "tokenizer")
                return {"flops": meter.flops_by_stage.get("step1", 0.0) - before, "heads": list(s1.heads)}

            cache.put("step1", key, write)
        return s1
    found = cache.get("step1", key)
    if found is None:  # rank 0 saw it: this node does not share the cache directory
        raise XltError(f"cache_dir: {cache.root} is not shared by every node of the trial")
    path, meta = found
    from transformers import AutoConfig, AutoModel

    body = without_pooler(AutoModel.from_config(AutoConfig.from_pretrained(path)))
    heads = nn.ModuleDict({name: new_head(body.config) for name in meta["heads"]})
    post = copy.deepcopy(layer_list(body)[a.depth]) if "post" in meta["heads"] else None
    s1 = Step1(body, heads, post)
    load_model(s1.bundle(), str(path / "model.safetensors"))
    s1.bundle().to(device)
    _attribute(meter, "step1", meta["flops"])
    return s1


def _cached_step3(spec, cache: ArtifactCache, key: str, hit: bool, s1: Step1, tokenizer, train: list[Example], evals,
                  report, base, meter: Meter, device, session: Session):
    from transformers import AutoModelForQuestionAnswering

    if hit:
        found = cache.get("step3", key)
        if found is None:
            raise XltError(f"cache_dir: {cache.root} is not shared by every node of the trial")
        path, meta = found
        start = meter.snapshot("step3")
        _attribute(meter, "step3", meta["flops"])
        # the English curve this step 3 drew, as this trial's rows: an objective or a dashboard
        # reading step 3 must not depend on which trial happened to train it (a resumed trial
        # reported its step-3 rows before it stopped). Running totals go on from this trial's
        # own (its step 1 may differ: MiniPost shares BaseLarge's step 3); times are its own.
        now = meter.snapshot("step3")
        for rows in meta.get("events", []) if session.resume is None and "start" in meta else []:
            report([{**r, **base, **{k: start[k] + r[k] - meta["start"][k] for k in _RUNNING},
                     **{k: now[k] for k in _CLOCKS}, "time": time.time()} for r in rows])
        return AutoModelForQuestionAnswering.from_pretrained(path, attn_implementation="sdpa").to(device)
    qa = qa_from_body(s1.body).to(device)
    freeze(qa.get_input_embeddings())  # step 4 swaps them out: the body must not co-adapt with them
    before = meter.flops_by_stage.get("step3", 0.0)
    start = meter.snapshot("step3")
    events: list[list[dict[str, Any]]] = []
    finetune_qa(qa, tokenizer, spec, train, evals, report, base, meter, device=device, stage="step3",
                validation=next(iter(evals)), emit_final=False, session=session, events=events)
    if session.rank == 0:
        def write(tmp: Path) -> dict[str, Any]:
            qa.save_pretrained(tmp, safe_serialization=True)
            return {"flops": meter.flops_by_stage.get("step3", 0.0) - before, "events": events,
                    "start": {k: start[k] for k in _RUNNING}}

        cache.put("step3", key, write)
    if session.barrier is not None:
        session.barrier()  # a rank restarted into step 2 must find the cached step 3
    return qa


# a row's running totals (what the trial has computed and seen so far) and its clocks
_RUNNING = ("tokens_real", "tokens_padded", "examples_seen", "flops_train", "flops_eval")
_CLOCKS = ("wall_seconds", "pipeline_seconds", "device_seconds")


def _attribute(meter: Meter, stage: str, flops: float) -> None:
    """A cached artifact's compute still counts towards this trial's cost (it may have been paid by
    another trial; the curve of a trial must not depend on the order trials ran in)."""
    meter.add_train(stage, {"flops": flops, "flops_real": flops}, 0, 0, 0)
