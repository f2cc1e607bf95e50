"""Part qa_eval: evaluation throughput (windowing + forward + span decoding) and agreement.

Contenders, on the same trained model, questions, max_seq_length / doc_stride /
max_answer_length and batch size:

    xlt          xlt.train.qa.predict: dynamic padding, length-sorted batches, exact banded argmax,
                 answer_rule "run_qa" (compared with hf_run_qa)
    xlt_pipeline_rule  the same with answer_rule "pipeline" (compared with hf_pipeline)
    hf_run_qa    run_qa.py's evaluation: windows padded to max_length, Trainer.predict, then
                 postprocess_qa_predictions (top-20 starts x top-20 ends per window, raw logit sums)
    hf_pipeline  pipeline("question-answering"); transformers 5 removed that task, so there the
                 contender is a port of transformers 4.53's QuestionAnsweringPipeline (per-question
                 tokenisation, windows batched and padded to the batch's longest, the same
                 decision rule); `implementation` says which one ran.

The pipeline's inputs differ from xlt's (it always passes token_type_ids, even when the tokenizer's
default output, which xlt and run_qa.py use, has none; it neither strips nor truncates the
question), and its decision rule differs in three ways; `pipeline_rule_stages` adds one
difference at a time to xlt's rule: scores are start x end probabilities softmax-normalised per window
(the [CLS] logit inside the normaliser, [CLS] then zeroed) instead of raw logit sums comparable
across windows; answers with the same text (case-insensitive) from different windows add their
scores; and spans are widened to whole pre-tokenizer words (align_to_words). xlt's
answer_rule "pipeline" makes all three; its answers are compared with the pipeline's.

The forward pass is nearly all of the time, so speed-ups come from computing fewer positions:
each contender reports the positions its batches compute and the real (non-pad) tokens;
`padding_ceiling_vs_*` is the speed-up a contender with no padding at all would have from that
alone.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from xlt.bench.common import Rounds, medians, quiet
from xlt.bench.qa_data import QASetup, hf_eval_features
from xlt.data.squad import Example

KEYS = ("seconds", "cpu_seconds", "examples_per_s", "windows_per_s", "f1", "exact_match")


# ---------------------------------------------------------------- agreement


def compare_predictions(a: dict[str, str], b: dict[str, str], *, show: int = 5) -> dict[str, Any]:
    """Share of questions (a's ids, and any only in b) whose answer strings are identical."""
    ids = list(a) + [i for i in b if i not in a]
    diff = [i for i in ids if a.get(i) != b.get(i)]
    n = len(ids)
    return {"n": n, "identical": n - len(diff), "identical_share": (n - len(diff)) / n if n else 1.0,
            "differences": [{"id": i, "a": a.get(i), "b": b.get(i)} for i in diff[:show]]}


def attribute_differences(reference: dict[str, str], stages: Sequence[tuple[str, dict[str, str]]]) -> dict[str, int]:
    """For every question whose last stage differs from `reference`, the first stage at which it
    departed (stages add one rule change each, so this names the change responsible)."""
    counts = {name: 0 for name, _ in stages}
    final = stages[-1][1]
    for qid, ans in reference.items():
        if final.get(qid) == ans:
            continue
        for name, preds in stages:
            if preds.get(qid) != ans:
                counts[name] += 1
                break
    return counts


# ---------------------------------------------------------------- xlt


def padded_positions(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> int:
    """Positions a forward pass computes: every row of a batch padded to its longest."""
    return sum(len(b) * max(lengths[i] for i in b) for b in batches)


def run_xlt(s: QASetup, model, examples: list[Example], rule: str = "run_qa") -> tuple[dict[str, str], dict[str, int]]:
    import torch

    from xlt.data import features as F
    from xlt.train.evaluation import EvalSet, predict

    feats = F.build_features(s.tokenizer, examples, train=False, **s.window)
    ev = EvalSet("bench", s.lang, "xlt", examples, feats)
    preds = predict(model, ev, batch_size=s.cfg.eval_batch_size, max_answer_length=s.cfg.max_answer_length,
                    pad_id=s.tokenizer.pad_token_id or 0, device=torch.device("cpu"), answer_rule=rule,
                    cls_token_id=s.tokenizer.cls_token_id)
    lengths = feats.lengths
    return preds, {"windows": len(feats), "tokens_real": sum(lengths),
                   "positions": padded_positions(lengths, list(F.sorted_batches(lengths, s.cfg.eval_batch_size)))}


# ---------------------------------------------------------------- run_qa.py


def run_qa_postprocess(examples: list[Example], features, start_logits, end_logits, *, n_best: int = 20,
                       max_answer_length: int = 30) -> dict[str, str]:
    """The answer postprocess_qa_predictions (SQuAD v1, no null answer) returns: over every window
    of a question, the top-`n_best` start x top-`n_best` end positions, valid spans only, best raw
    logit sum first (the first such span on ties); "empty" when there is none."""
    import numpy as np

    by_example: dict[str, list[int]] = {}
    for i, qid in enumerate(features["example_id"]):
        by_example.setdefault(qid, []).append(i)
    offsets_all = features["offset_mapping"]
    out = {}
    for ex in examples:
        best, text = None, "empty"
        for f in by_example.get(ex.id, []):
            start, end, offs = start_logits[f], end_logits[f], offsets_all[f]
            starts = np.argsort(start)[-1:-n_best - 1:-1].tolist()
            ends = np.argsort(end)[-1:-n_best - 1:-1].tolist()
            for a in starts:
                for b in ends:
                    if a >= len(offs) or b >= len(offs) or offs[a] is None or offs[b] is None:
                        continue
                    if b < a or b - a + 1 > max_answer_length:
                        continue
                    sc = start[a] + end[b]
                    if best is None or sc > best:
                        best, text = sc, ex.context[offs[a][0]: offs[b][1]]
        out[ex.id] = text
    return out


def run_hf_run_qa(s: QASetup, model, examples: list[Example],
                  keep: dict[str, Any] | None = None) -> tuple[dict[str, str], dict[str, int]]:
    from transformers import Trainer, TrainingArguments, default_data_collator

    _, feats = hf_eval_features(s.tokenizer, examples, s.cfg)
    with tempfile.TemporaryDirectory(prefix="xlt-bench-") as tmp:
        args = TrainingArguments(output_dir=tmp, per_device_eval_batch_size=s.cfg.eval_batch_size, use_cpu=True,
                                 report_to=[], dataloader_num_workers=0, disable_tqdm=True, log_level="error")
        trainer = Trainer(model=model, args=args, data_collator=default_data_collator, processing_class=s.tokenizer)
        out = trainer.predict(feats.remove_columns(["example_id", "offset_mapping"]))
    logits: Any = out.predictions  # (start, end): transformers types it a 1-tuple
    start, end = logits[0], logits[1]
    preds = run_qa_postprocess(examples, feats, start, end, max_answer_length=s.cfg.max_answer_length)
    if keep is not None:
        keep["run_qa"] = (feats, start, end)
    real = sum(sum(m) for m in feats["attention_mask"])
    return preds, {"windows": len(feats), "tokens_real": real, "positions": len(feats) * len(feats[0]["input_ids"])}


# ---------------------------------------------------------------- the question-answering pipeline


@dataclass(frozen=True)
class PipelineRule:
    """The pipeline's span choice, with each of its differences from xlt switchable."""

    softmax: bool = True  # per-window probabilities ([CLS] in the normaliser) instead of raw logit sums
    merge: bool = True  # equal answer texts (case-insensitive) from several windows add their scores
    align_to_words: bool = True  # widen the span to whole pre-tokenizer words


@dataclass
class _Window:
    example: int
    ids: list[int]
    types: list[int]
    p_mask: list[int]  # 1: cannot be in the answer
    encoding: Any
    start: Any = None
    end: Any = None


def pipeline_windows(tokenizer, examples: list[Example], *, max_seq_len: int, doc_stride: int) -> list[_Window]:
    """One tokenizer call per question, as the pipeline's preprocess (question not stripped or
    truncated: its max_question_len only applies to slow tokenizers)."""
    right = tokenizer.padding_side == "right"
    out = []
    for i, ex in enumerate(examples):
        enc = tokenizer(ex.question if right else ex.context, ex.context if right else ex.question,
                        padding="do_not_pad", truncation="only_second" if right else "only_first",
                        max_length=max_seq_len, stride=doc_stride, return_token_type_ids=True,
                        return_overflowing_tokens=True, return_offsets_mapping=True, return_special_tokens_mask=True)
        for k, ids in enumerate(enc["input_ids"]):
            p_mask = [int(t != 1) if right else 0 for t in enc.sequence_ids(k)]
            for j, t in enumerate(ids):
                if t == tokenizer.cls_token_id:
                    p_mask[j] = 0  # kept for the null answer; it still enters the softmax
            out.append(_Window(i, ids, enc["token_type_ids"][k], p_mask, enc[k]))
    return out


def pipeline_forward(model, tokenizer, windows: list[_Window], batch_size: int) -> None:
    """Consecutive windows in batches, padded to the batch's longest (the pipeline's pad_collate)."""
    import torch

    pad = tokenizer.pad_token_id or 0
    with torch.no_grad():
        for k in range(0, len(windows), batch_size):
            chunk = windows[k:k + batch_size]
            width = max(len(w.ids) for w in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            types = torch.zeros((len(chunk), width), dtype=torch.long)
            for b, w in enumerate(chunk):
                n = len(w.ids)
                ids[b, :n], mask[b, :n], types[b, :n] = torch.tensor(w.ids), 1, torch.tensor(w.types)
            out = model(input_ids=ids, attention_mask=mask, token_type_ids=types)
            for b, w in enumerate(chunk):
                w.start, w.end = out.start_logits[b].float().numpy(), out.end_logits[b].float().numpy()


def pipeline_decide(tokenizer, examples: list[Example], windows: list[_Window], *, max_answer_len: int,
                    rule: PipelineRule = PipelineRule()) -> dict[str, str]:
    import numpy as np

    seq_index = 1 if tokenizer.padding_side == "right" else 0
    answers: dict[int, list[dict[str, Any]]] = {}
    for w in windows:
        n = len(w.ids)
        allowed = np.zeros(len(w.start), dtype=bool)
        allowed[:n] = np.asarray(w.p_mask) == 0  # padded positions are never allowed
        start = np.where(allowed, w.start, -10000.0)
        end = np.where(allowed, w.end, -10000.0)
        if rule.softmax:
            start = np.exp(start - start.max())
            start /= start.sum()
            end = np.exp(end - end.max())
            end /= end.sum()
            start[0] = end[0] = 0.0
            cand = np.tril(np.triu(np.outer(start, end)), max_answer_len - 1)
        else:
            start[0] = end[0] = -np.inf
            cand = start[:, None] + end[None, :]
            L = len(start)
            band = np.tril(np.triu(np.ones((L, L), dtype=bool)), max_answer_len - 1)
            cand = np.where(band, cand, -np.inf)
        flat = int(np.argmax(cand))
        a, b = divmod(flat, cand.shape[1])
        if not (allowed[a] and allowed[b]):
            continue
        score = float(cand[a, b])
        lo, hi = _char_span(w.encoding, a, b, seq_index, rule.align_to_words)
        text = examples[w.example].context[lo:hi]
        found = answers.setdefault(w.example, [])
        same = next((x for x in found if x["answer"].lower() == text.lower()), None) if rule.merge else None
        if same is not None:
            same["score"] += score
        else:
            found.append({"score": score, "answer": text})
    out = {}
    for i, ex in enumerate(examples):
        ranked = sorted(answers.get(i, []), key=lambda x: x["score"], reverse=True)
        out[ex.id] = ranked[0]["answer"] if ranked else ""
    return out


def _char_span(enc, s: int, e: int, seq_index: int, align: bool) -> tuple[int, int]:
    if align:
        try:
            lo = enc.word_to_chars(enc.token_to_word(s), sequence_index=seq_index)[0]
            hi = enc.word_to_chars(enc.token_to_word(e), sequence_index=seq_index)[1]
            return lo, hi
        except Exception:  # the pipeline falls back to token offsets when words are unavailable
            pass
    return enc.offsets[s][0], enc.offsets[e][1]


def real_pipeline(model, tokenizer) -> tuple[Any, str | None]:
    """transformers' own pipeline when this version still has it, else the reason it does not."""
    try:
        from transformers import pipeline

        # transformers 5's stubs no longer list the task (it raises at run time: caught below)
        return pipeline("question-answering", model=model, tokenizer=tokenizer, device=-1), None  # type: ignore[call-overload]
    except Exception as e:  # transformers 5: KeyError "The task question-answering has been removed"
        return None, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"


def run_pipeline(s: QASetup, model, examples: list[Example], pipe,
                 keep: dict[str, Any] | None = None) -> tuple[dict[str, str], dict[str, int] | None]:
    c = s.cfg
    if pipe is not None:
        out = pipe(question=[e.question for e in examples], context=[e.context for e in examples],
                   max_seq_len=c.max_seq_length, doc_stride=c.doc_stride, max_answer_len=c.max_answer_length,
                   batch_size=c.eval_batch_size, top_k=1)
        out = out if isinstance(out, list) else [out]
        return {e.id: o["answer"] for e, o in zip(examples, out, strict=True)}, None
    windows = pipeline_windows(s.tokenizer, examples, max_seq_len=c.max_seq_length, doc_stride=c.doc_stride)
    pipeline_forward(model, s.tokenizer, windows, c.eval_batch_size)
    if keep is not None:
        keep["windows"] = windows
    lengths = [len(w.ids) for w in windows]
    batches = [range(k, min(k + c.eval_batch_size, len(windows))) for k in range(0, len(windows), c.eval_batch_size)]
    counts = {"windows": len(windows), "tokens_real": sum(lengths), "positions": padded_positions(lengths, batches)}
    return pipeline_decide(s.tokenizer, examples, windows, max_answer_len=c.max_answer_length), counts


def rule_stages(s: QASetup, model, examples: list[Example],
                windows: list[_Window] | None = None) -> list[tuple[str, dict[str, str]]]:
    """The pipeline's windows and logits decided by xlt's rule (stage `pipeline_inputs`: what differs
    there comes from the model inputs: token_type_ids, which the pipeline always passes, the question
    neither stripped nor truncated, padding), then with one pipeline rule added at a time; the last
    stage is the pipeline's own rule."""
    c = s.cfg
    if windows is None:
        windows = pipeline_windows(s.tokenizer, examples, max_seq_len=c.max_seq_length, doc_stride=c.doc_stride)
        pipeline_forward(model, s.tokenizer, windows, c.eval_batch_size)
    stages = [("pipeline_inputs", PipelineRule(softmax=False, merge=False, align_to_words=False)),
              ("per_window_softmax", PipelineRule(softmax=True, merge=False, align_to_words=False)),
              ("merge_equal_answers", PipelineRule(softmax=True, merge=True, align_to_words=False)),
              ("align_to_words", PipelineRule(softmax=True, merge=True, align_to_words=True))]
    return [(name, pipeline_decide(s.tokenizer, examples, windows, max_answer_len=c.max_answer_length, rule=r))
            for name, r in stages]


# ---------------------------------------------------------------- the part


def run(s: QASetup, model, log) -> dict[str, Any]:
    from xlt import metrics

    model.eval()
    examples = s.eval
    gold = {e.id: e.answer_texts for e in examples}
    pipe, missing = real_pipeline(model, s.tokenizer)
    preds: dict[str, dict[str, str]] = {}
    keep: dict[str, Any] = {}

    def contender(name, fn):
        def go(r: int) -> dict[str, Any]:
            with quiet():
                t0, c0 = time.perf_counter(), time.process_time()
                p, counts = fn()
                dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            preds[name] = p
            m = metrics.evaluate(gold, p, s.lang, "xlt")
            counts = counts or {}
            windows = counts.get("windows")
            return {"seconds": dt, "cpu_seconds": cpu, "examples": len(examples), **counts,
                    "examples_per_s": len(examples) / dt, "windows_per_s": windows / dt if windows else None,
                    "f1": m["f1"], "exact_match": m["exact_match"]}
        return go

    rounds = Rounds(s.cfg.eval_rounds, log).run({
        "xlt": contender("xlt", lambda: run_xlt(s, model, examples)),
        "xlt_pipeline_rule": contender("xlt_pipeline_rule", lambda: run_xlt(s, model, examples, "pipeline")),
        "hf_run_qa": contender("hf_run_qa", lambda: run_hf_run_qa(s, model, examples, keep)),
        "hf_pipeline": contender("hf_pipeline", lambda: run_pipeline(s, model, examples, pipe, keep)),
    })
    med = {name: medians(rows, KEYS) for name, rows in rounds.items()}
    best = {name: max(r["examples_per_s"] for r in rows) for name, rows in rounds.items()}
    counts = {name: {k: rows[0].get(k) for k in ("windows", "tokens_real", "positions")} for name, rows in rounds.items()}
    with quiet():
        stages = rule_stages(s, model, examples, keep.get("windows"))
    feats, start, end = keep["run_qa"]
    # run_qa's own logits with n_best covering every position: the exact best span, as xlt takes it
    run_qa_exact = run_qa_postprocess(examples, feats, start, end, n_best=start.shape[1],
                                      max_answer_length=s.cfg.max_answer_length)
    xp, xpp = preds["xlt"], preds["xlt_pipeline_rule"]
    impl = ("transformers.pipeline('question-answering')" if pipe is not None else
            "port of transformers 4.53 QuestionAnsweringPipeline (transformers "
            f"{_tf_version()} has no question-answering pipeline: {missing})")

    def ceiling(name: str) -> float | None:
        c, real = counts[name], counts["xlt"]["tokens_real"]
        return c["positions"] / real if c.get("positions") and real else None

    return {
        "settings": {"questions": len(examples), "batch_size": s.cfg.eval_batch_size,
                     "max_seq_length": s.cfg.max_seq_length, "doc_stride": s.cfg.doc_stride,
                     "max_answer_length": s.cfg.max_answer_length, "rounds": s.cfg.eval_rounds,
                     "tokenizer_returns_token_type_ids": "token_type_ids" in s.tokenizer.model_input_names},
        "contenders": {name: {**med[name], **counts[name], "rounds": rows} for name, rows in rounds.items()},
        "hf_pipeline_implementation": impl,
        "speedup_vs_hf_pipeline": med["xlt_pipeline_rule"]["examples_per_s"] / med["hf_pipeline"]["examples_per_s"],
        "speedup_vs_hf_run_qa": med["xlt"]["examples_per_s"] / med["hf_run_qa"]["examples_per_s"],
        "speedup_best_vs_hf_pipeline": best["xlt_pipeline_rule"] / best["hf_pipeline"],
        "speedup_best_vs_hf_run_qa": best["xlt"] / best["hf_run_qa"],
        "speedup_cpu_vs_hf_pipeline": med["hf_pipeline"]["cpu_seconds"] / med["xlt_pipeline_rule"]["cpu_seconds"],
        "speedup_cpu_vs_hf_run_qa": med["hf_run_qa"]["cpu_seconds"] / med["xlt"]["cpu_seconds"],
        "padding_ceiling_vs_hf_pipeline": ceiling("hf_pipeline"),
        "padding_ceiling_vs_hf_run_qa": ceiling("hf_run_qa"),
        "agreement": {
            "xlt_pipeline_rule_vs_hf_pipeline": compare_predictions(xpp, preds["hf_pipeline"]),
            "xlt_vs_hf_run_qa": compare_predictions(xp, preds["hf_run_qa"]),
            "xlt_vs_hf_run_qa_exact": compare_predictions(xp, run_qa_exact),
            "xlt_vs_hf_pipeline": compare_predictions(xp, preds["hf_pipeline"], show=0),
            "pipeline_rule_stages": {name: compare_predictions(xp, p, show=0)["identical_share"] for name, p in stages},
            "pipeline_differences_by_cause": attribute_differences(xp, stages),
        },
    }


def _tf_version() -> str:
    from importlib import metadata

    return metadata.version("transformers")
