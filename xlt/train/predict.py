"""A saved QA model answers any SQuAD-format file (`xlt predict`).

A model directory written by `xlt trial`/`xlt run` (`<trial>/model`) keeps, beside its safetensors
weights and tokenizer, the evaluation settings its trial scored it with (`xlt.json`: windows,
answer rule, batch size): the same windows in the same batches give the same logits, so its
predictions on one of the study's own eval sets reproduce the F1/EM the study recorded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from xlt.data import features as F
from xlt.data.squad import read_squad_file
from xlt.errors import XltError
from xlt.spec import TrainSpec

SETTINGS = "xlt.json"
_KEYS = ("max_seq_length", "doc_stride", "max_query_length", "max_answer_length", "answer_rule", "eval_batch_size")


def save_settings(path: Path, train: TrainSpec) -> None:
    (path / SETTINGS).write_text(json.dumps({k: getattr(train, k) for k in _KEYS}, indent=1) + "\n", encoding="utf-8")


def load_settings(path: Path) -> dict[str, Any]:
    """The saved settings; a model directory from elsewhere gets TrainSpec's defaults."""
    defaults = {k: getattr(TrainSpec(), k) for k in _KEYS}
    f = path / SETTINGS
    if not f.is_file():
        return defaults
    try:
        saved = json.loads(f.read_text(encoding="utf-8"))
        return {**defaults, **TrainSpec(**{k: saved[k] for k in _KEYS if k in saved}).model_dump(include=set(_KEYS))}
    except (ValueError, TypeError) as e:
        raise XltError(f"{f}: not xlt's evaluation settings ({str(e).splitlines()[0][:160]})") from None


def predict_file(model_dir: str | Path, data: str | Path, *, device: torch.device | None = None) -> dict[str, str]:
    """{question id: answer text} for every question of `data`, answered by the model in `model_dir`."""
    from transformers import AutoModelForQuestionAnswering

    from xlt.tokenization import load_tokenizer
    from xlt.train.evaluation import EvalSet, predict
    from xlt.train.trial import pick_device

    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise XltError(f"{model_dir}: not a saved model directory (no config.json)")
    s = load_settings(path)
    tokenizer = load_tokenizer(str(path))
    device = device or pick_device()
    try:
        model = AutoModelForQuestionAnswering.from_pretrained(path, attn_implementation="sdpa").to(device).eval()
    except (OSError, ValueError) as e:
        raise XltError(f"{model_dir}: cannot load the QA model ({str(e).splitlines()[0][:160]})") from None
    examples, _ = read_squad_file(data, "xx", require_answers=False)  # decoding needs no language
    if not examples:
        raise XltError(f"{data}: no questions")
    feats = F.build_features(tokenizer, examples, train=False, max_seq_length=s["max_seq_length"],
                             doc_stride=s["doc_stride"], max_query_length=s["max_query_length"])
    ev = EvalSet(str(data), "xx", "xlt", examples, feats)
    return predict(model, ev, batch_size=s["eval_batch_size"], max_answer_length=s["max_answer_length"],
                   pad_id=tokenizer.pad_token_id or 0, device=device, answer_rule=s["answer_rule"],
                   cls_token_id=tokenizer.cls_token_id)
