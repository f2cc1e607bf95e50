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

Each step is measured on its own, so a trial that shows no lift says which step failed: step-2
rows carry the held-out masked-LM loss and accuracy on the target text (mlm_*) and, before the
swap, on English through the same model (source_mlm_*: step 1's); step-3 rows are English F1;
one `source_vocab` event scores the English QA model on the target sets with its own vocabulary,
the score the swap must beat (the step-0 step-2 row is the swapped model before step 2).

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
import json
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from xlt import compute, derived, layout
from xlt.data import corpus, mlm
from xlt.data import features as F
from xlt.errors import XltError
from xlt.models.load import config_from_dict, dropout_overrides, load_config, resolve_name
from xlt.models.minimodel import (
    Encoder,
    MaskedLM,
    MLMHead,
    freeze,
    layer_list,
    mini_body,
    mlm_score,
    new_head,
    pretrained_head,
    set_token_embedding,
    token_embedding,
    without_pooler,
)
from xlt.spec import (
    AdaptStep,
    StudySpec,
    TextCorpus,
    expand_vars,
    primary_method,
    step1_identity,
    step3_identity,
)
from xlt.tokenization import load_tokenizer
from xlt.train import trial
from xlt.train.artifacts import ArtifactCache, Cached, content_key, file_fingerprint, trained_tokenizer
from xlt.train.evaluation import Events, Scorer, eval_sets, summary
from xlt.train.loop import (
    LoopConfig,
    LoopState,
    Meter,
    Session,
    batch_compute,
    resumes,
    run_stage,
    shard,
    shared,
)
from xlt.train.qa import finetune_qa
from xlt.train.qa_data import QAData, prepare_data
from xlt.train.trial import Report, TrialInfo


@dataclass
class Step1:
    """What step 1 leaves: the primary body, the heads, and MiniPost's extra layer."""

    body: Encoder  # the primary encoder (base_small: the k-layer model)
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


def corpus_args(spec: StudySpec, source: TextCorpus, lang: str) -> dict[str, Any]:
    """Keyword arguments of `xlt.data.corpus.corpus_lines` for `lang` (${VAR}s expanded)."""
    c = source.resolved(lang)
    files = c["data_files"]
    if files is not None:
        files = expand_vars(files) if isinstance(files, str) else [expand_vars(f) for f in files]
    return {"dataset": c["dataset"], "config": c["config"], "data_files": files, "split": c["split"],
            "revision": c["revision"], "text_field": c["text_field"], "seed": c["seed"],
            "shuffle_buffer": c["shuffle_buffer"], "max_lines": c["max_lines"], "max_tokens": c["max_tokens"]}


def text_identity(spec: StudySpec, source: tuple[str, ...] | TextCorpus, lang: str) -> Any:
    """What a text source is, for cache keys: local files by their content, a corpus by what it
    reads (dataset, config, files, split, revision, field, budget, shuffle) and its local files' content."""
    a = spec.adapt
    assert a is not None
    if isinstance(source, TextCorpus):
        args = corpus_args(spec, source, lang)
        return {"corpus": args, "files": file_fingerprint(corpus.corpus_files(args["data_files"]))}
    return file_fingerprint(text_files(spec, source, lang)) or ("synthetic", a.synthetic_lines)


def _lines(spec: StudySpec, source: tuple[str, ...] | TextCorpus, lang: str, seed: int, fraction: float = 1.0,
           session: Session | None = None) -> list[str]:
    a = spec.adapt
    assert a is not None
    if isinstance(source, TextCorpus):
        args = corpus_args(spec, source, lang)
        # one global order for the whole trial: rank 0 streams it once into the trial directory and
        # every rank (and every restart) reads that copy; train_mlm gives each rank its batches of it
        def save(v: list[str], path: Path) -> None:
            path.write_text(json.dumps(v, ensure_ascii=False), encoding="utf-8")

        lines = shared(session, f"text-{lang}-{content_key(kind='text', **args)}.json",
                       lambda: corpus.corpus_lines(**args), save,
                       lambda path: json.loads(path.read_text(encoding="utf-8")))
    elif source:
        lines = mlm.read_lines(text_files(spec, source, lang))
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


@dataclass
class MLMStage:
    """Masked-LM training as a loop stage (loop.Stage): packed text masked by a seeded stream
    (this rank's share of one global order), metered per batch. The stream is replayed to a
    restored state's position (making masked batches is cheap); `evaluate` and the events it
    records (`extra_state`/`load_extra`) are step 2's, and only then does it checkpoint."""

    name: str
    stream: Iterator[dict[str, torch.Tensor]]
    shape: compute.EncoderShape
    plan: compute.Plan
    meter: Meter
    session: Session
    evaluator: Callable[[LoopState], float | None] | None = None
    extra_state: Callable[[], dict[str, Any]] = dict
    load_extra: Callable[[dict[str, Any]], None] = lambda saved: None

    @property
    def checkpoint(self) -> bool:
        return self.evaluator is not None

    def batches(self, state: LoopState) -> Iterator[dict[str, torch.Tensor]]:
        stream = itertools.islice(self.stream, state.micro * self.session.world_size, None)
        return shard(stream, self.session, self.on_batch)

    def loss(self, model, b: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(b["input_ids"], b["attention_mask"], b["labels"])

    def on_batch(self, batch: dict[str, torch.Tensor]) -> None:
        masked = int((batch["labels"] != -100).sum())
        flops, real, padded = batch_compute(self.shape, self.plan, batch["attention_mask"], train=True,
                                            mlm_positions=max(1, masked))
        self.meter.add_train(self.name, flops, real, padded, len(batch["input_ids"]))

    def evaluate(self, state: LoopState) -> float | None:
        return self.evaluator(state) if self.evaluator is not None else None

    def state_dict(self) -> dict[str, Any]:
        return self.extra_state()

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.load_extra(saved)


def train_mlm(model: MaskedLM, tokenizer, lines: list[str], step: AdaptStep, *, plan: compute.Plan, stage: str,
              meter: Meter, device: torch.device, seed: int, mlm_probability: float,
              evaluate=None, eval_every: int | None = None, session: Session | None = None,
              extra_state: Callable[[], dict[str, Any]] = dict,
              load_extra: Callable[[dict[str, Any]], None] = lambda saved: None) -> None:
    """MLM steps on packed `lines`. The spec's `steps` count batches of `batch_size`: with W ranks,
    each optimizer step takes W of them from one global stream, so the data seen, and the
    evaluation points, do not depend on W. With `evaluate`, the stage checkpoints at each
    evaluation, `extra_state()` beside the weights (`load_extra` restores it)."""
    session = session or Session()
    world = session.world_size
    rows = mlm.pack(tokenizer, lines, step.max_seq_length)
    stream = mlm.mlm_batches(rows, tokenizer, batch_size=step.batch_size, probability=mlm_probability, seed=seed)
    shape = compute.EncoderShape.from_config(model.body.config.to_dict())
    cfg = LoopConfig(total_steps=derived.mlm_steps(step.steps, world), lr=step.lr, warmup=0.05, weight_decay=0.0,
                     eval_every=derived.mlm_steps(eval_every, world) if eval_every else None,
                     batch_key=f"adapt.{stage}.batch_size")
    run_stage(model, MLMStage(stage, stream, shape, plan, meter, session, evaluate, extra_state, load_extra), cfg,
              session=session, meter=meter, device=device)


def _mlm_plan(n_layers: int, trainable_layers: tuple[bool, ...], *, embeddings: bool, head: bool,
              extra_heads: tuple[tuple[int, str], ...] = ()) -> compute.Plan:
    assert len(trainable_layers) == n_layers
    return compute.Plan(embeddings=embeddings, layers=trainable_layers, head=head, head_kind="mlm", head_tied=True,
                        extra_heads=extra_heads)


# ---------------------------------------------------------------- step 1


def source_body(spec: StudySpec, tokenizer) -> tuple[Encoder, MLMHead | None]:
    """The primary encoder before step 1, and its own pretrained MLM head if it has one."""
    from transformers import AutoModel

    m = spec.model
    if m.tiny is not None:
        cfg = config_from_dict(derived.tiny_config(m.tiny, vocab_size=len(tokenizer), dropout=spec.train.dropout,
                                                   attention_dropout=spec.train.attention_dropout))
        return without_pooler(AutoModel.from_config(cfg)), None
    from safetensors.torch import load_file

    path = Path(resolve_name(m.name))  # type: ignore[arg-type]
    cfg = load_config(m.name, m.trust_remote_code)  # type: ignore[arg-type]
    # a pretrained primary keeps its checkpoint's dropout unless train.attention_dropout is set
    for k, v in dropout_overrides(cfg.model_type, None, spec.train.attention_dropout).items():
        setattr(cfg, k, v)
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
    common: dict[str, Any] = dict(meter=meter, device=device, seed=seed, mlm_probability=a.mlm_probability, stage="step1",
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
    # English MLM (pre)training of the whole primary: a model from scratch, or MiniJoint's with both
    # heads (joint by definition). A pretrained primary without an MLM head (MiniLM, e5) gets one:
    # fitted over its frozen body (adapt.primary_step1 = head, the default), or with the whole model
    # trained (all). A head over a frozen body is the weaker masked LM (on all-MiniLM-L6-v2, 10.8%
    # of held-out masked English tokens after 300 steps, against 17.4% after 100 for the whole
    # model), but training the whole model under a random head cost step 3 most of its English F1
    # (37.6 -> 10.9, minimodel_swap_cpu), and the English task model is what step 4 transfers.
    if scratch or joint or (head is None and a.primary_step1 == "all"):
        model = MaskedLM(body, {n: heads["top"], **({k: heads["k"]} if joint else {})})
        freeze(model, True)
        extra = ((k, "mlm"),) if joint else ()
        train_mlm(model, tokenizer, lines, a.step1,
                  plan=_mlm_plan(n, (True,) * n, embeddings=True, head=True, extra_heads=extra), **common)
    elif head is None:  # the head alone; its decoder is the (frozen) token embeddings, tied
        model = MaskedLM(body, {n: heads["top"]})
        freeze(model)
        freeze(heads["top"], True)
        train_mlm(model, tokenizer, lines, a.step1,
                  plan=_mlm_plan(n, (False,) * n, embeddings=False, head=True), **common)

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


def qa_from_body(body: Encoder) -> Any:
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
    """New token embeddings for the target vocabulary: random; or with the rows of tokens that
    both vocabularies share copied from the source (special tokens included); or, in addition,
    each other token the mean of its source pieces' rows (`source_pieces`, Fast Vocabulary
    Transfer: the English task model then reads the new vocabulary about as it read the old one
    from step 0 on, where random rows leave it reading noise until step 2 has trained them)."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(len(target_tok), source_weight.shape[1], generator=g) * std
    if how == "random":
        return weight
    src, source = source_tok.get_vocab(), source_weight.detach().cpu()
    new: list[tuple[int, str]] = []
    for token, i in target_tok.get_vocab().items():
        j = src.get(token)
        if j is not None and j < source.shape[0]:
            weight[i] = source[j]
        else:
            new.append((i, token))
    if how == "source_pieces" and new:
        prefix = "##"  # WordPiece's continuation mark: "##ова" is the text "ова" inside a word
        texts = [t.removeprefix(prefix) or t for _, t in new]
        pieces = source_tok(texts, add_special_tokens=False)["input_ids"]
        unk = source_tok.unk_token_id
        for (i, token), ids in zip(new, pieces, strict=True):
            if token.startswith(prefix) and ids:  # inside a word: its first piece is a continuation too
                first = src.get(prefix + source_tok.convert_ids_to_tokens(ids[0]))
                ids = [first, *ids[1:]] if first is not None else ids
            ids = [k for k in ids if k != unk and k < source.shape[0]]
            if ids:
                weight[i] = source[ids].mean(0)
    return weight


# ---------------------------------------------------------------- the pipeline


def run_adapt(spec: StudySpec, report: Report, info: TrialInfo, *, out_dir: str | Path | None = None,
              device: torch.device | None = None, session: Session | None = None) -> dict[str, Any]:
    """One adaptation trial; returns the final target scores per eval set. Under a launcher
    (`session`), every step is data-parallel over the ranks, steps 3 and 2 checkpoint at each
    evaluation, and tokenizers are made once per trial (their training is not deterministic)."""
    a = spec.adapt
    assert a is not None
    session = session or Session()
    device, meter = trial.start(spec, device, session)
    cache = trial.artifact_cache(spec) or ArtifactCache(Path(out_dir or ".") / layout.ARTIFACTS_DIR)
    t0 = time.perf_counter()
    data = prepare_data(spec)
    text = AdaptText.read(spec, session)
    base = trial.trial_columns(spec, info, method=a.method, target_count=data.target_count)

    step1 = Cached(cache, "step1", step1_key(spec, a.method, text.id), session.agree)
    source_tok = source_tokenizer(spec, cache, step1, text, data)
    s1 = cached_step1(spec, step1, cache, source_tok, text, meter, device, session)
    qa = cached_step3(spec, cache, s1, source_tok, data, text, report, base, meter, device, session)
    # before the swap: step 1's English masked LM through the model step 2 trains, and the English
    # QA model with its own vocabulary on the target sets (what adaptation has to beat)
    source_mlm = prefixed("source_", mlm_score(step2_model(s1, a.method, a.depth),
                                               heldout_batches(source_tok, text.source_heldout, spec)))
    if resumes(session, "step2") is None:
        Events("source_vocab", base, meter, report).record(
            LoopState(), target_scorer(spec, qa, source_tok, data, meter, device)(), epoch=None)
    # one target vocabulary per target text: trials comparing methods or depths share it
    target_tok = trained_tokenizer(cache, text.target, a.vocab_size, kind=a.tokenizer_kind)
    model = step2_trainable(spec, s1, source_tok, target_tok, device)
    scorer = step4_scorer(spec, qa, model, target_tok, data, meter, device)
    events = Events("step2", base, meter, report)
    target_heldout = heldout_batches(target_tok, text.target_heldout, spec)
    run_step2(spec, model, target_tok, text.target, events, scorer, meter, device, session,
              columns=lambda: {**source_mlm, **mlm_score(model, target_heldout)})

    final = events.final(-1)
    report(final)
    print(f"xlt: adapt {a.method} k={a.depth}: done in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    trial.save_model(spec, qa, target_tok, out_dir, session)
    return summary(final)


@dataclass
class AdaptText:
    """The English text of step 1 and the target text of step 2 (without their held-out lines),
    the held-out lines, and the source text's identity."""

    source: list[str]
    target: list[str]
    id: Any  # what the step-1 cache key knows of the source text: its files' fingerprint, the hold-out
    source_heldout: list[str] = field(default_factory=list)
    target_heldout: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, spec: StudySpec, session: Session | None = None) -> AdaptText:
        a, seed = spec.adapt, spec.train.seed
        assert a is not None
        text_id = text_identity(spec, a.source_text, "en")
        # held out before anything trains on the text (the target tokenizer too); a fixed seed, not
        # the trial's: trials with other seeds are scored on the same lines
        source, source_heldout = mlm.hold_out(_lines(spec, a.source_text, "en", seed, session=session),
                                              a.mlm_heldout_lines, 0)
        target, target_heldout = mlm.hold_out(
            _lines(spec, a.target_patterns(a.target_lang), a.target_lang, seed + 1, a.target_text_fraction,
                   session=session),
            a.mlm_heldout_lines, 1)
        return cls(source, target, (text_id, len(source_heldout)) if source_heldout else text_id,
                   source_heldout, target_heldout)


def heldout_batches(tokenizer, lines: list[str], spec: StudySpec) -> list[dict[str, torch.Tensor]]:
    """The held-out lines as masked batches of step 2's shape, masked once (empty: no lines)."""
    a = spec.adapt
    assert a is not None
    if not lines:
        return []
    try:
        rows = mlm.pack(tokenizer, lines, a.step2.max_seq_length)
    except XltError:  # fewer held-out tokens than one sequence: nothing to score
        return []
    return mlm.fixed_masked(rows, tokenizer, batch_size=a.step2.batch_size, probability=a.mlm_probability)


def source_tokenizer(spec: StudySpec, cache: ArtifactCache, step1: Cached, text: AdaptText, data: QAData):
    """The model's own tokenizer; a tiny model's is trained on English text and QA data (once per
    cache: every rank, restart and trial gets the same), and kept with step 1, whose embeddings index it."""
    m = spec.model
    if m.name:
        return load_tokenizer(m.tokenizer or m.name, m.trust_remote_code)
    if step1.hit:
        return load_tokenizer(str(step1.path / "tokenizer"))
    assert m.tiny is not None
    texts = text.source + list(dict.fromkeys(e.context for e in data.train)) + [e.question for e in data.train]
    return trained_tokenizer(cache, texts, m.tiny.vocab_size)


def step1_key(spec: StudySpec, method: str, text_id) -> str:
    return content_key(kind="step1", layout=3, text=text_id, **step1_identity(spec, method))


def cached_step1(spec: StudySpec, entry: Cached, cache: ArtifactCache, tokenizer, text: AdaptText, meter: Meter,
                 device: torch.device, session: Session) -> Step1:
    """Step 1 from the cache, or trained and cached. MiniPost's starts from BaseLarge's primary,
    itself from the cache when a trial made it."""
    a = spec.adapt
    assert a is not None

    def build() -> tuple[Step1, dict[str, Any]]:
        torch.manual_seed(spec.train.seed)  # the same step 1 whatever the trial did before
        before = meter.flops_by_stage.get("step1", 0.0)
        if a.method != primary_method(a.method):
            bl = spec.model_copy(update={"adapt": a.model_copy(update={"method": primary_method(a.method)})})
            primary_entry = Cached(cache, "step1", step1_key(bl, primary_method(a.method), text.id), session.agree)
            primary = cached_step1(bl, primary_entry, cache, tokenizer, text, meter, device, session)
            s1 = train_post_layer(spec, primary, tokenizer, text.source, meter, device, session)
        else:
            s1 = run_step1(spec, tokenizer, text.source, meter, device, session)
        return s1, {"flops": meter.flops_by_stage.get("step1", 0.0) - before, "heads": list(s1.heads)}

    def write(s1: Step1, tmp: Path) -> None:
        save_model(s1.bundle(), str(tmp / "model.safetensors"))
        s1.body.config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp / "tokenizer")

    def load(path: Path, meta: dict[str, Any]) -> Step1:
        from transformers import AutoConfig, AutoModel

        body = without_pooler(AutoModel.from_config(AutoConfig.from_pretrained(path)))
        heads = nn.ModuleDict({name: new_head(body.config) for name in meta["heads"]})
        post = copy.deepcopy(layer_list(body)[a.depth]) if "post" in meta["heads"] else None
        s1 = Step1(body, heads, post)
        load_model(s1.bundle(), str(path / "model.safetensors"))
        s1.bundle().to(device)
        meter.attribute("step1", meta["flops"])
        return s1

    return entry.get_or_build(build, write, load, writer=session.rank == 0)


def cached_step3(spec: StudySpec, cache: ArtifactCache, s1: Step1, tokenizer, data: QAData, text: AdaptText,
                 report: Report, base: dict[str, Any], meter: Meter, device: torch.device, session: Session):
    """English QA fine-tuning of the primary, token embeddings frozen; from the cache, or trained
    and cached. Validated on the first English eval set (the spec makes sure there is one)."""
    from transformers import AutoModelForQuestionAnswering

    a = spec.adapt
    assert a is not None
    key = content_key(kind="step3", step1=step1_key(spec, primary_method(a.method), text.id), **step3_identity(spec))
    english = {n: v for n, v in data.evals.items() if v[0].lang == "en"}

    def build():
        # seeded here, not by what ran before: a step 3 built after a cached step 1 (or rebuilt
        # after damage) is the step 3 any trial would have built
        torch.manual_seed(spec.train.seed)
        qa = qa_from_body(s1.body).to(device)
        freeze(qa.get_input_embeddings())  # step 4 swaps them out: the body must not co-adapt with them
        before, start = meter.flops_by_stage.get("step3", 0.0), meter.running()
        events: list[list[dict[str, Any]]] = []
        finetune_qa(qa, tokenizer, spec, data.train, english, report, base, meter, device=device, stage="step3",
                    validation=next(iter(english)), emit_final=False, session=session, events=events)
        return qa, {"flops": meter.flops_by_stage.get("step3", 0.0) - before, "events": events, "start": start}

    def load(path: Path, meta: dict[str, Any]):
        start = meter.running()
        meter.attribute("step3", meta["flops"])
        # the English curve this step 3 drew, as this trial's rows: an objective or a dashboard
        # reading step 3 must not depend on which trial happened to train it (a resumed trial
        # reported its step-3 rows before it stopped). Running totals go on from this trial's
        # own (its step 1 may differ: MiniPost shares BaseLarge's step 3); times are its own.
        now = meter.clocks()
        for rows in meta.get("events", []) if session.resume is None and "start" in meta else []:
            report([{**r, **base, **{k: start[k] + r[k] - meta["start"][k] for k in start}, **now, "time": time.time()}
                    for r in rows])
        return AutoModelForQuestionAnswering.from_pretrained(path, attn_implementation="sdpa").to(device)

    entry = Cached(cache, "step3", key, session.agree)
    return entry.get_or_build(build, lambda qa, tmp: qa.save_pretrained(tmp, safe_serialization=True), load,
                              writer=session.rank == 0, barrier=session.barrier)  # a rank restarted into step 2 must find it


def step2_trainable(spec: StudySpec, s1: Step1, source_tok, target_tok, device: torch.device) -> MaskedLM:
    """The step-2 model of the trial, with its target-language embeddings initialised."""
    a, t = spec.adapt, spec.train
    assert a is not None
    std = getattr(s1.body.config, "initializer_range", 0.02)
    weight = init_embeddings(source_tok, target_tok, token_embedding(s1.body).weight, a.embedding_init, std, t.seed)
    return with_new_embeddings(s1, weight.to(device), a.method, a.depth)


def with_new_embeddings(s1: Step1, weight: torch.Tensor, method: str, k: int) -> MaskedLM:
    """The model step 2 trains (step2_model) with `weight` as its token embeddings, everything
    frozen but them and the heads' vocabulary-sized bias (new with the vocabulary). The embeddings
    are set on the primary body, so every mini-body built on it shares them. The benchmark times
    this same model."""
    emb = set_token_embedding(s1.body, weight)
    for h in s1.heads.values():
        h.bias = nn.Parameter(torch.zeros(weight.shape[0], device=weight.device))
    model = step2_model(s1, method, k)
    freeze(model)
    freeze(emb, True)
    for h in model.heads.values():
        h.bias.requires_grad_(True)
    return model


def step2_plan(model: MaskedLM) -> compute.Plan:
    """What step 2 trains, for the FLOPs meter: the token embeddings under a frozen body and head."""
    n = len(layer_list(model.body))
    return _mlm_plan(n, (False,) * n, embeddings=True, head=False)


def step4_scorer(spec: StudySpec, qa, step2: MaskedLM, target_tok, data: QAData, meter: Meter,
                 device: torch.device) -> Scorer:
    """Step 4: the QA model reading the embeddings step 2 trains, scored on the target eval sets."""
    qa.base_model.set_input_embeddings(step2.body.get_input_embeddings())
    qa.config.vocab_size = len(target_tok)
    return target_scorer(spec, qa, target_tok, data, meter, device)


def target_scorer(spec: StudySpec, qa, tokenizer, data: QAData, meter: Meter, device: torch.device) -> Scorer:
    """The QA model scored on the target-language eval sets, read with `tokenizer`."""
    a, t = spec.adapt, spec.train
    assert a is not None
    qa.eval()
    window = dict(max_seq_length=t.max_seq_length, doc_stride=t.doc_stride, max_query_length=t.max_query_length)
    target = {n: v for n, v in data.evals.items() if v[0].lang == a.target_lang}  # the spec makes sure of one
    sets = eval_sets(spec, target, lambda ex: F.build_features(tokenizer, ex, train=False, **window))
    shape = compute.EncoderShape.from_config(qa.config.to_dict())
    plan = compute.Plan(embeddings=False, layers=(False,) * shape.layers, head=False, head_kind="qa")
    return Scorer(qa, sets, t, tokenizer, device, meter, shape, plan)


def prefixed(prefix: str, d: dict[str, Any]) -> dict[str, Any]:
    return {prefix + k: v for k, v in d.items()}


def run_step2(spec: StudySpec, model: MaskedLM, target_tok, lines: list[str], events: Events, scorer: Scorer,
              meter: Meter, device: torch.device, session: Session,
              columns: Callable[[], dict[str, Any]] = dict) -> None:
    """Step 2 by MLM on target text, with a step-4 evaluation at step 0 (the un-adapted baseline:
    target tokenizer, initial embeddings), every `adapt.eval_every` steps and at the end;
    `columns()` adds to each evaluation's rows (the held-out masked-LM scores)."""
    a, t = spec.adapt, spec.train
    assert a is not None

    def evaluate(state: LoopState) -> float:
        return events.record(state, scorer(), epoch=None, columns=columns())[0]["f1"]

    torch.manual_seed(t.seed + 2)  # dropout's stream: the same whether steps 1 and 3 were built or loaded
    if resumes(session, "step2") is None:
        evaluate(LoopState())
    train_mlm(model, target_tok, lines, a.step2, plan=step2_plan(model),
              stage="step2", meter=meter, device=device, seed=t.seed + 2, mlm_probability=a.mlm_probability,
              evaluate=evaluate, eval_every=a.eval_every, session=session, extra_state=events.state_dict,
              load_extra=events.load_state_dict)
