"""Question+context windows with offsets, answer labels, their storage (safetensors), batching, and
span decoding (exact over the whole band of valid spans, not a top-n_best approximation).

`doc_stride` follows the Hugging Face convention: the number of context tokens two
neighbouring windows share.
"""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from xlt.data.squad import Example


@dataclass
class Features:
    """Windows of all examples; row i belongs to example `example_index[i]`."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    offsets: list[list[tuple[int, int] | None]]  # char span in the context, None outside the context
    example_index: list[int]
    start_positions: list[int]  # 0 (CLS) when the answer is not inside the window
    end_positions: list[int]
    # evaluation windows: the pre-tokenizer word of each context token (-1 elsewhere), for answers
    # widened to whole words (answer_rule "pipeline"); None for training windows
    word_ids: list[list[int]] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> list[int]:
        return [len(x) for x in self.input_ids]

    @functools.cached_property
    def context_table(self) -> torch.Tensor:
        """(windows, longest) bool: which positions hold context. Built once per Features, so that
        decoding a batch indexes it instead of looping over every window's offsets (a trial
        evaluates the same windows many times)."""
        return self._flags_table([[o is not None for o in offs] for offs in self.offsets])

    def token_table(self, token_id: int) -> torch.Tensor:
        """(windows, longest) bool: where `token_id` is (e.g. [CLS]); cached per id."""
        cache = self.__dict__.setdefault("_token_tables", {})
        if token_id not in cache:
            cache[token_id] = self._flags_table([[i == token_id for i in ids] for ids in self.input_ids])
        return cache[token_id]

    def _flags_table(self, flags: list[list[bool]]) -> torch.Tensor:
        table = torch.zeros(len(self), max(self.lengths, default=0), dtype=torch.bool)
        for r, row in enumerate(flags):
            table[r, : len(row)] = torch.tensor(row, dtype=torch.bool)
        return table


def _truncate_questions(tokenizer, questions: list[str], max_query_length: int) -> list[str]:
    enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for q, offs in zip(questions, enc["offset_mapping"], strict=True):
        out.append(q[: offs[max_query_length - 1][1]] if len(offs) > max_query_length else q)
    return out


def build_features(tokenizer, examples: Sequence[Example], *, max_seq_length: int, doc_stride: int,
                   max_query_length: int = 64, train: bool = True) -> Features:
    """Tokenize every example into overlapping windows (no padding: batches pad dynamically)."""
    questions = _truncate_questions(tokenizer, [e.question.lstrip() for e in examples], max_query_length)
    pad_right = tokenizer.padding_side == "right"
    enc = tokenizer(
        questions if pad_right else [e.context for e in examples],
        [e.context for e in examples] if pad_right else questions,
        truncation="only_second" if pad_right else "only_first",
        max_length=max_seq_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding=False,
    )
    context_id = 1 if pad_right else 0
    feats = Features([], [] if "token_type_ids" in enc else None, [], [], [], [], None if train else [])
    for i, ids in enumerate(enc["input_ids"]):
        ex_i = enc["overflow_to_sample_mapping"][i]
        seq_ids = enc.sequence_ids(i)
        offs = [tuple(o) if s == context_id else None for o, s in zip(enc["offset_mapping"][i], seq_ids, strict=True)]
        feats.input_ids.append(ids)
        if feats.token_type_ids is not None:
            feats.token_type_ids.append(enc["token_type_ids"][i])
        feats.offsets.append(offs)
        if feats.word_ids is not None:
            feats.word_ids.append([-1 if w is None or o is None else w
                                   for w, o in zip(enc.word_ids(i), offs, strict=True)])
        feats.example_index.append(ex_i)
        start = end = 0
        ex = examples[ex_i]
        if train and ex.answers:
            text, char_start = ex.answers[0]
            char_end = char_start + len(text)
            spans = {j: o for j, o in enumerate(offs) if o is not None}  # the context's tokens
            ctx = list(spans)
            if ctx and spans[ctx[0]][0] <= char_start and spans[ctx[-1]][1] >= char_end:
                start = next(j for j in ctx if spans[j][1] > char_start)
                end = next(j for j in reversed(ctx) if spans[j][0] < char_end)
        feats.start_positions.append(start)
        feats.end_positions.append(end)
    return feats


# ---------------------------------------------------------------- storage

_NO_OFFSET = -1  # offsets outside the context (None); real character offsets are >= 0


def save_features(feats: Features, path: str | Path) -> None:
    """Write `feats` as safetensors (flat integer arrays, never a pickle): the windows
    concatenated, with their lengths to split them again. Offsets outside the context are
    stored as (-1, -1)."""
    from safetensors.numpy import save_file

    lengths = np.fromiter((len(x) for x in feats.input_ids), dtype=np.int64, count=len(feats))
    total = int(lengths.sum())
    flat_offsets = [o if o is not None else (_NO_OFFSET, _NO_OFFSET) for row in feats.offsets for o in row]
    arrays = {
        "lengths": lengths,
        "input_ids": _narrow(np.fromiter(itertools.chain.from_iterable(feats.input_ids), dtype=np.int64, count=total)),
        "offsets": _narrow(np.array(flat_offsets, dtype=np.int64).reshape(-1, 2)),
        "example_index": np.array(feats.example_index, dtype=np.int64),
        "start_positions": np.array(feats.start_positions, dtype=np.int64),
        "end_positions": np.array(feats.end_positions, dtype=np.int64),
    }
    for name in ("token_type_ids", "word_ids"):
        rows = getattr(feats, name)
        if rows is not None:
            arrays[name] = _narrow(np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=total))
    save_file(arrays, str(path))


def _narrow(a: np.ndarray) -> np.ndarray:
    """The smallest of int8/int32/int64 that holds `a` exactly (SQuAD dev's windows with MiniLM's
    tokenizer: 54 MB as int64, 22 MB narrowed)."""
    for t in (np.int8, np.int32):
        info = np.iinfo(t)
        if a.size == 0 or (a.min() >= info.min and a.max() <= info.max):
            return a.astype(t)
    return a


def load_features(path: str | Path) -> Features:
    """The inverse of `save_features`; raises ValueError when the file does not hold consistent
    features (a damaged file must not pass for a cache hit)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        a = load_file(str(path))
    except SafetensorError as e:
        raise ValueError(f"{path}: {e}") from None
    required = {"lengths", "input_ids", "offsets", "example_index", "start_positions", "end_positions"}
    if not required <= a.keys():
        raise ValueError(f"{path}: missing arrays {sorted(required - a.keys())}")
    lengths = a["lengths"]
    n, total = len(lengths), int(lengths.sum())
    types, words = a.get("token_type_ids"), a.get("word_ids")
    if (lengths.ndim != 1 or (lengths < 0).any() or a["input_ids"].shape != (total,)
            or a["offsets"].shape != (total, 2) or any(x is not None and x.shape != (total,) for x in (types, words))
            or not a["example_index"].shape == a["start_positions"].shape == a["end_positions"].shape == (n,)):
        raise ValueError(f"{path}: array sizes do not agree")
    bounds = np.concatenate([[0], np.cumsum(lengths)]).tolist()

    def split(flat: list) -> list[list]:
        return [flat[bounds[i]: bounds[i + 1]] for i in range(n)]

    starts, ends = a["offsets"][:, 0].tolist(), a["offsets"][:, 1].tolist()
    offsets = [None if s == _NO_OFFSET else (s, e) for s, e in zip(starts, ends, strict=True)]
    return Features(
        input_ids=split(a["input_ids"].tolist()),
        token_type_ids=split(types.tolist()) if types is not None else None,
        offsets=split(offsets),
        example_index=a["example_index"].tolist(),
        start_positions=a["start_positions"].tolist(),
        end_positions=a["end_positions"].tolist(),
        word_ids=split(words.tolist()) if words is not None else None,
    )


# ---------------------------------------------------------------- batching


def collate(feats: Features, rows: Sequence[int], pad_id: int, train: bool) -> dict[str, torch.Tensor]:
    """Pad a batch to its own longest window (dynamic padding)."""
    width = max(len(feats.input_ids[r]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    types = torch.zeros((len(rows), width), dtype=torch.long) if feats.token_type_ids is not None else None
    for b, r in enumerate(rows):
        n = len(feats.input_ids[r])
        ids[b, :n] = torch.tensor(feats.input_ids[r])
        mask[b, :n] = 1
        if types is not None:
            types[b, :n] = torch.tensor(feats.token_type_ids[r])  # type: ignore[index]
    batch = {"input_ids": ids, "attention_mask": mask}
    if types is not None:
        batch["token_type_ids"] = types
    if train:
        batch["start_positions"] = torch.tensor([feats.start_positions[r] for r in rows])
        batch["end_positions"] = torch.tensor([feats.end_positions[r] for r in rows])
    return batch


def length_grouped_batches(lengths: Sequence[int], batch_size: int, rng: random.Random,
                           group: int = 50) -> list[list[int]]:
    """Shuffle, then sort within groups of `group` batches by length, so batches hold similar
    lengths (little padding) while the order stays random across groups."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    span = batch_size * group
    batches = []
    for g in range(0, len(order), span):
        chunk = sorted(order[g:g + span], key=lambda i: lengths[i], reverse=True)
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Evaluation: longest first, so padding is minimal and memory peaks early."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for i in range(0, len(order), batch_size):
        yield order[i:i + batch_size]


# ---------------------------------------------------------------- decoding


def best_spans(start_logits: torch.Tensor, end_logits: torch.Tensor, context_mask: torch.Tensor,
               max_answer_length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best (start, end) per window over all valid spans: start <= end < start + max_answer_length,
    both inside the context. Exact over the whole band (a superset of top-n_best pairs), in one
    batched op over the band alone: (B, L, A) sums, not (B, L, L) (A = max_answer_length; at L 384,
    A 30, 13x less to build and scan). Ties go to the earliest start, then the earliest end, as
    an argmax over the (start, end) matrix in row order would.
        start/end_logits, context_mask: (B, L) -> scores, starts, ends: (B,)"""
    B, L = start_logits.shape
    A = max(1, min(max_answer_length, L))
    neg = torch.finfo(start_logits.dtype).min
    s = start_logits.masked_fill(~context_mask, neg)
    e = end_logits.masked_fill(~context_mask, neg)
    e = torch.cat([e, e.new_full((B, A - 1), neg)], dim=1).unfold(1, A, 1)  # (B, L, A): [b, i, d] = end i + d
    scores = (s[:, :, None] + e).view(B, -1)  # [b, i * A + d]: start i, end i + d
    flat = scores.argmax(dim=1)
    return scores.gather(1, flat[:, None])[:, 0], flat // A, flat // A + flat % A


ANSWER_RULES = ("run_qa", "pipeline")


class SpanDecoder:
    """One answer per example from its windows' logits, fed batch by batch in any order; the
    windows are folded in their own order at the end, so batch order never decides a tie.

    rule "run_qa": the valid span with the highest raw start + end logit over all windows of the
        example, the earlier window on ties (run_qa.py's postprocess_qa_predictions, but exact over
        the band rather than over its top-20 starts x top-20 ends).
    rule "pipeline": what transformers' question-answering pipeline (4.x, top_k=1) answers: each
        window's best span scored by start x end probability (a softmax per window over the
        context and [CLS]), equal answers (case-insensitive) from several windows adding their
        scores, the span widened to whole pre-tokenizer words (align_to_words).
    """

    def __init__(self, examples: Sequence[Example], feats: Features, *, max_answer_length: int,
                 rule: str = "run_qa", cls_token_id: int | None = None) -> None:
        if rule not in ANSWER_RULES:
            raise ValueError(f"answer rule {rule!r}: expected one of {', '.join(ANSWER_RULES)}")
        if rule == "pipeline" and feats.word_ids is None:
            raise ValueError("answer rule 'pipeline' needs evaluation features (built with train=False)")
        self.examples, self.feats, self.rule = examples, feats, rule
        self.max_answer_length, self.cls_token_id = max_answer_length, cls_token_id
        self.scores: list[float | None] = [None] * len(feats)  # per window; None: no context token
        self._context = feats.context_table
        # [CLS] positions, which the pipeline's softmax includes
        self._cls = feats.token_table(cls_token_id) if rule == "pipeline" and cls_token_id is not None else None
        self.texts: list[str] = [""] * len(feats)

    def add(self, rows: Sequence[int], start_logits: torch.Tensor, end_logits: torch.Tensor) -> None:
        """start/end_logits: (B, L) for windows `rows`, anything beyond a window's length ignored."""
        B, L = start_logits.shape
        context = self._table(self._context, rows, L)  # (B, L)
        start, end = start_logits.float(), end_logits.float()
        scores, starts, ends = best_spans(start, end, context, self.max_answer_length)
        if self.rule == "pipeline":
            scores = self._probabilities(rows, context, start, end, starts, ends)
        # plain lists from here: indexing a tensor element by element costs microseconds each
        for r, has, score, s, e in zip(rows, context.any(1).tolist(), scores.tolist(), starts.tolist(), ends.tolist(),
                                       strict=True):
            if not has:
                continue
            if self.rule == "pipeline":
                s, e = _whole_words(self.feats.word_ids[r], s, e)  # type: ignore[index]
            offs = self.feats.offsets[r]
            self.scores[r] = score
            self.texts[r] = self.examples[self.feats.example_index[r]].context[offs[s][0]: offs[e][1]]  # type: ignore[index]

    @staticmethod
    def _table(table: torch.Tensor, rows: Sequence[int], L: int) -> torch.Tensor:
        """Rows `rows` of a per-window table, cut or padded (False) to L positions."""
        out = table[list(rows), :L]
        return out if out.shape[1] == L else torch.cat([out, out.new_zeros(len(rows), L - out.shape[1])], dim=1)

    def _probabilities(self, rows, context, start, end, starts, ends) -> torch.Tensor:
        """p_start(s) x p_end(e), each a softmax over the window's context and [CLS] positions."""
        norm = context | self._table(self._cls, rows, context.shape[1]) if self._cls is not None else context
        log_s = start.gather(1, starts[:, None])[:, 0] - start.masked_fill(~norm, -torch.inf).logsumexp(1)
        log_e = end.gather(1, ends[:, None])[:, 0] - end.masked_fill(~norm, -torch.inf).logsumexp(1)
        return log_s.exp() * log_e.exp()

    def answers(self) -> dict[str, str]:
        """Answer text per example id ("" when no window held any context)."""
        candidates: dict[int, list[list]] = {}
        for r, score in enumerate(self.scores):
            if score is None:
                continue
            found = candidates.setdefault(self.feats.example_index[r], [])
            text = self.texts[r]
            same = next((c for c in found if c[1].lower() == text.lower()), None) if self.rule == "pipeline" else None
            if same is not None:
                same[0] += score  # the first window's spelling stays, as in the pipeline
            else:
                found.append([score, text])
        # max() keeps the first of equal scores: the earliest window wins a tie
        return {ex.id: max(candidates[i], key=lambda c: c[0])[1] if i in candidates else ""
                for i, ex in enumerate(self.examples)}


def _whole_words(words: Sequence[int], s: int, e: int) -> tuple[int, int]:
    """Widen token span [s, e] to whole words (tokens of one word are contiguous; -1: no word)."""
    if words[s] >= 0:
        while s > 0 and words[s - 1] == words[s]:
            s -= 1
    if words[e] >= 0:
        while e + 1 < len(words) and words[e + 1] == words[e]:
            e += 1
    return s, e
