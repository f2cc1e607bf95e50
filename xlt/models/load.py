"""Load a pretrained encoder by hub name or path, or build a tiny one from a config."""

from __future__ import annotations

from xlt import derived
from xlt.derived import resolve_name
from xlt.errors import XltError

__all__ = ["resolve_name", "load_config", "tiny_config", "config_from_dict", "load_qa_model", "qa_model_from_config"]


def load_config(name: str, trust_remote_code: bool = False, **overrides):
    from transformers import AutoConfig

    try:
        cfg = AutoConfig.from_pretrained(resolve_name(name), trust_remote_code=trust_remote_code, **overrides)
    except (OSError, ValueError) as e:
        raise XltError(f"model {name}: cannot load config ({str(e).splitlines()[0][:200]})") from None
    return cfg


def tiny_config(*, vocab_size: int, layers: int, hidden: int, heads: int, intermediate: int,
                max_positions: int, dropout: float = 0.1, attention_dropout: float | None = None):
    """A BERT config of this shape (derived.bert_config)."""
    from transformers import BertConfig

    cfg = derived.bert_config(vocab_size=vocab_size, layers=layers, hidden=hidden, heads=heads,
                              intermediate=intermediate, max_positions=max_positions, dropout=dropout,
                              attention_dropout=attention_dropout)
    cfg.pop("model_type")
    return BertConfig(**cfg)


def config_from_dict(cfg: dict):
    """A transformers config from a dict with its `model_type` (derived.tiny_config)."""
    from transformers import AutoConfig

    cfg = dict(cfg)
    return AutoConfig.for_model(cfg.pop("model_type"), **cfg)


def dropout_overrides(model_type: str, dropout: float | None,
                      attention_dropout: float | None = None) -> dict[str, float]:
    """Config keys for hidden and attention dropout (None: `dropout`); `dropout` None keeps the
    checkpoint's hidden dropout."""
    hidden_key, attention_key = (("dropout", "attention_dropout") if model_type == "distilbert"
                                 else ("hidden_dropout_prob", "attention_probs_dropout_prob"))
    attention = dropout if attention_dropout is None else attention_dropout
    return {k: v for k, v in ((hidden_key, dropout), (attention_key, attention)) if v is not None}


def load_qa_model(name: str, *, dropout: float, attention_dropout: float | None = None,
                  trust_remote_code: bool = False):
    """Any AutoModelForQuestionAnswering-compatible encoder; a checkpoint without a QA head
    (e.g. a sentence encoder) gets a freshly initialised one."""
    from transformers import AutoModelForQuestionAnswering

    cfg = load_config(name, trust_remote_code)
    for k, v in dropout_overrides(cfg.model_type, dropout, attention_dropout).items():
        setattr(cfg, k, v)
    try:
        return AutoModelForQuestionAnswering.from_pretrained(
            resolve_name(name), config=cfg, trust_remote_code=trust_remote_code, attn_implementation="sdpa")
    except (OSError, ValueError) as e:
        raise XltError(f"model {name}: cannot load ({str(e).splitlines()[0][:200]})") from None


def qa_model_from_config(config):
    from transformers import AutoModelForQuestionAnswering

    return AutoModelForQuestionAnswering.from_config(config, attn_implementation="sdpa")
