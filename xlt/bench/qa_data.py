"""The QA model, tokenizer and data every QA contender shares, and the HF-example preprocessing."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlt.bench.common import BenchConfig, quiet
from xlt.data.squad import Example
from xlt.errors import XltError


@dataclass
class QASetup:
    cfg: BenchConfig
    tokenizer: Any
    model0: Any  # initial weights: every contender trains a deep copy
    train: list[Example]
    eval: list[Example]
    lang: str
    source: str

    def fresh_model(self, attention_dropout: float | None = None):
        """A copy of the initial weights; `attention_dropout` set: the same weights in a model whose
        config has that attention dropout (the rest of the config as it was)."""
        if attention_dropout is None:
            return copy.deepcopy(self.model0)
        from transformers import AutoModelForQuestionAnswering

        from xlt.models.load import dropout_overrides

        cfg = copy.deepcopy(self.model0.config)
        for k, v in dropout_overrides(cfg.model_type, None, attention_dropout).items():
            setattr(cfg, k, v)
        model = AutoModelForQuestionAnswering.from_config(cfg, attn_implementation="sdpa")
        model.load_state_dict(self.model0.state_dict())
        return model

    @property
    def window(self) -> dict[str, int]:
        c = self.cfg
        return {"max_seq_length": c.max_seq_length, "doc_stride": c.doc_stride, "max_query_length": c.max_query_length}


def data_dir() -> Path:
    d = os.environ.get("XLT_DATA_DIR")
    if not d or not Path(d).is_dir():
        raise XltError("xlt bench (full): set XLT_DATA_DIR to the shared data directory (../shared/data); "
                       "or use --quick (synthetic data)")
    return Path(d)


def load_examples(cfg: BenchConfig) -> tuple[list[Example], list[Example], str]:
    from xlt.data import squad

    if cfg.data == "synthetic":
        from xlt.data.synthetic import make_squad

        train, _ = squad.parse_squad(make_squad("en", cfg.train_questions, cfg.seed, "train"), "synthetic-train", "en")
        ev, _ = squad.parse_squad(make_squad("en", cfg.eval_questions, cfg.seed, "dev"), "synthetic-dev", "en")
        return train, ev, "synthetic en (xlt.data.synthetic): train split for training, dev split for evaluation"
    if cfg.data != "squad":
        raise XltError(f"bench data {cfg.data!r}: expected synthetic or squad")
    root = data_dir()
    dev, _ = squad.read_squad_file(root / "qa/squad/squad-v1.1-dev.reconstructed.json", "en")
    xquad, _ = squad.read_squad_file(root / "qa/xquad/xquad.en.json", "en")
    train, leaked = squad.leak_filter(dev, [xquad])
    train = squad.subsample(train, count=min(cfg.train_questions, len(train)), seed=cfg.seed)
    ev = xquad[: cfg.eval_questions]
    return train, ev, (f"SQuAD v1.1 dev minus XQuAD paragraphs ({leaked} questions dropped), {len(train)} sampled "
                       f"for training; XQuAD-en first {len(ev)} for evaluation")


def setup(cfg: BenchConfig) -> QASetup:
    import torch

    from xlt.models.load import load_qa_model, qa_model_from_config, tiny_config
    from xlt.tokenization import load_tokenizer, train_tokenizer

    train, ev, source = load_examples(cfg)
    torch.manual_seed(cfg.seed)
    if cfg.model:
        tok = load_tokenizer(cfg.model)
        with quiet():  # the load report: a sentence encoder has no QA head, so it is new, as expected
            model = load_qa_model(cfg.model, dropout=cfg.dropout)
    else:
        t = cfg.tiny
        # in first-seen order, as qa.build_tokenizer: a set's order changes between processes
        texts = list(dict.fromkeys(e.context for e in train)) + [e.question for e in train]
        tok = train_tokenizer(texts, t.vocab)
        model = qa_model_from_config(tiny_config(
            vocab_size=len(tok), layers=t.layers, hidden=t.hidden, heads=t.heads, intermediate=t.intermediate,
            max_positions=t.max_positions, dropout=cfg.dropout))
    return QASetup(cfg, tok, model, train, ev, "en", source)


def as_dataset(examples: list[Example]):
    """SQuAD examples in the `datasets` layout the HF question-answering example reads."""
    import datasets

    return datasets.Dataset.from_dict({
        "id": [e.id for e in examples],
        "question": [e.question for e in examples],
        "context": [e.context for e in examples],
        "answers": [{"text": [t for t, _ in e.answers], "answer_start": [s for _, s in e.answers]} for e in examples],
    })


# The two functions below follow prepare_train_features / prepare_validation_features of
# transformers' examples/pytorch/question-answering/run_qa.py (the reference HF recipe), so the
# HF contenders pay exactly what that recipe pays.


def _hf_windows(tokenizer, batch, cfg: BenchConfig, *, pad: bool):
    """The recipe's tokenizer call: questions left-stripped, overflowing windows with offsets."""
    right = tokenizer.padding_side == "right"
    batch["question"] = [q.lstrip() for q in batch["question"]]
    return tokenizer(
        batch["question" if right else "context"], batch["context" if right else "question"],
        truncation="only_second" if right else "only_first", max_length=min(cfg.max_seq_length, tokenizer.model_max_length),
        stride=cfg.doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True,
        padding="max_length" if pad else False,
    )


def hf_train_features(tokenizer, examples: list[Example], cfg: BenchConfig, *, pad: bool):
    ds = as_dataset(examples)
    right = tokenizer.padding_side == "right"

    def prepare(batch):
        enc = _hf_windows(tokenizer, batch, cfg, pad=pad)
        sample_map = enc.pop("overflow_to_sample_mapping")
        offsets_all = enc.pop("offset_mapping")
        enc["start_positions"], enc["end_positions"] = [], []
        for i, offsets in enumerate(offsets_all):
            ids = enc["input_ids"][i]
            cls = ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids else 0
            seq = enc.sequence_ids(i)
            answers = batch["answers"][sample_map[i]]
            if not answers["answer_start"]:
                enc["start_positions"].append(cls)
                enc["end_positions"].append(cls)
                continue
            start_char = answers["answer_start"][0]
            end_char = start_char + len(answers["text"][0])
            ctx = 1 if right else 0
            first = 0
            while seq[first] != ctx:
                first += 1
            last = len(ids) - 1
            while seq[last] != ctx:
                last -= 1
            if not (offsets[first][0] <= start_char and offsets[last][1] >= end_char):
                enc["start_positions"].append(cls)
                enc["end_positions"].append(cls)
                continue
            while first < len(offsets) and offsets[first][0] <= start_char:
                first += 1
            enc["start_positions"].append(first - 1)
            while offsets[last][1] >= end_char:
                last -= 1
            enc["end_positions"].append(last + 1)
        return enc

    return ds.map(prepare, batched=True, remove_columns=ds.column_names)


def hf_eval_features(tokenizer, examples: list[Example], cfg: BenchConfig):
    ds = as_dataset(examples)
    right = tokenizer.padding_side == "right"

    def prepare(batch):
        enc = _hf_windows(tokenizer, batch, cfg, pad=True)
        sample_map = enc.pop("overflow_to_sample_mapping")
        enc["example_id"] = []
        ctx = 1 if right else 0
        for i in range(len(enc["input_ids"])):
            seq = enc.sequence_ids(i)
            enc["example_id"].append(batch["id"][sample_map[i]])
            enc["offset_mapping"][i] = [o if seq[k] == ctx else None for k, o in enumerate(enc["offset_mapping"][i])]
        return enc

    return ds, ds.map(prepare, batched=True, remove_columns=ds.column_names)
