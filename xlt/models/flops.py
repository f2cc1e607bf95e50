"""Measure one training step's FLOPs with ``torch.utils.flop_counter.FlopCounterMode`` and set
what is trainable on a transformers encoder from an :class:`xlt.compute.Plan`.

The model runs with ``attn_implementation="eager"``: on CPU, SDPA dispatches (in eval mode or
with attention dropout 0) to ``aten._scaled_dot_product_flash_attention_for_cpu``, which
FlopCounterMode (torch 2.13) has no formula for, so the attention ``seq_len^2`` terms would
silently go uncounted. Eager attention runs them as ``bmm``/``matmul``, which it counts.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoConfig, AutoModelForMaskedLM, AutoModelForQuestionAnswering

from xlt import derived
from xlt.compute import (
    EncoderShape,
    Plan,
    analytical_for,
    check_run_shape,
    embedding_extras_trainable,
    plan_for,
)
from xlt.errors import XltError

ATTN_IMPLEMENTATION = "eager"


def build_model(config: dict, head_kind: str = "qa") -> torch.nn.Module:
    """A randomly initialised transformers model for ``config`` with a QA or MLM head (eager attention)."""
    cfg = AutoConfig.for_model(**config)
    if head_kind == "qa":
        return AutoModelForQuestionAnswering.from_config(cfg, attn_implementation=ATTN_IMPLEMENTATION)
    if head_kind == "mlm":
        return AutoModelForMaskedLM.from_config(cfg, attn_implementation=ATTN_IMPLEMENTATION)
    raise XltError(f"--head: expected qa or mlm, got {head_kind!r}")


def encoder_layers(model: Any) -> torch.nn.ModuleList:
    """The transformer layers of a BERT-, RoBERTa-, ELECTRA- or DistilBERT-type model."""
    layers = derived.find_layers(model.base_model, lambda node: isinstance(node, torch.nn.ModuleList),
                                 ("encoder.layer", "transformer.layer"))
    if layers is not None:
        return layers
    raise XltError(
        f"{type(model).__name__}: cannot find its transformer layers (encoder.layer / transformer.layer)"
    )


def is_tied(model: Any) -> bool:
    """Whether the output (decoder) weight is the token embedding matrix."""
    out = model.get_output_embeddings()
    return out is not None and out.weight is model.get_input_embeddings().weight


def apply_plan(model: Any, plan: Plan) -> None:
    """Set ``requires_grad`` on every parameter as ``plan`` says (see xlt.compute's docstring):
    head parameters (everything outside the base model) follow ``plan.head``; layer i follows
    ``plan.layers[i]``; the rest of the embedding stage follows ``embedding_extras_trainable``;
    the token embedding matrix (and so a tied decoder weight) follows ``plan.embeddings``."""
    layers = encoder_layers(model)
    if len(layers) != len(plan.layers):
        raise XltError(f"plan has {len(plan.layers)} layer flags but the model runs {len(layers)} layers")
    prefix = model.base_model_prefix + "."
    for name, param in model.named_parameters():
        param.requires_grad_(not name.startswith(prefix) and plan.head)
    base = model.base_model
    extras = embedding_extras_trainable(plan)
    for module_name in ("embeddings", "embeddings_project"):
        module = getattr(base, module_name, None)
        if module is not None:
            module.requires_grad_(extras)
    for layer, flag in zip(layers, plan.layers, strict=True):
        layer.requires_grad_(flag)
    model.get_input_embeddings().weight.requires_grad_(plan.embeddings)


def _inputs(config: dict, shape: EncoderShape, seq_len: int, batch: int, head_kind: str) -> dict:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, shape.vocab, (batch, seq_len), generator=generator)
    pad = config.get("pad_token_id")
    if pad is not None and shape.vocab > 1:
        ids[ids == pad] = (pad + 1) % shape.vocab
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if head_kind == "qa":
        inputs["start_positions"] = torch.zeros(batch, dtype=torch.long)
        inputs["end_positions"] = torch.full((batch,), seq_len - 1, dtype=torch.long)
    else:
        inputs["labels"] = ids.clone()
    return inputs


def measure_train_step(config: dict, seq_len: int, batch: int, trainable: str, head_kind: str = "qa") -> dict:
    """Run one forward + backward (no optimizer step) of a model built from ``config`` under
    FlopCounterMode and compare it with :func:`xlt.compute.analytical_for`.

    With ``--trainable none`` only the forward runs. Returns analytical and measured FLOPs
    (also forward-only), their ratio analytical / measured, the shape, and the inputs."""
    if head_kind not in ("qa", "mlm"):
        raise XltError(f"--head: expected qa or mlm, got {head_kind!r}")
    analytical = analytical_for(config, seq_len, batch, trainable, head_kind)  # validates everything
    shape = EncoderShape.from_config(config)
    check_run_shape(shape, seq_len, batch)

    torch.manual_seed(0)
    model = build_model(config, head_kind)
    model.train()
    tied = head_kind == "mlm" and is_tied(model)
    plan = plan_for(trainable, len(encoder_layers(model)), head_kind=head_kind, head_tied=tied)
    apply_plan(model, plan)
    inputs = _inputs(config, shape, seq_len, batch, head_kind)
    needs_backward = any(p.requires_grad for p in model.parameters())

    with FlopCounterMode(display=False) as counter:
        if needs_backward:
            output = model(**inputs)
            forward = counter.get_total_flops()
            output.loss.backward()
        else:
            with torch.no_grad():
                model(**inputs)
            forward = counter.get_total_flops()
    measured = counter.get_total_flops()
    by_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}

    return {
        "analytical_flops": analytical["analytical_flops"],
        "measured_flops": float(measured),
        "ratio": analytical["analytical_flops"] / measured if measured else float("nan"),
        "analytical_forward_flops": analytical["forward_flops"],
        "measured_forward_flops": float(forward),
        "measured_by_op": by_op,
        "analytical_breakdown": analytical["breakdown"],
        "config": analytical["config"],
        "seq_len": seq_len,
        "batch": batch,
        "trainable": trainable,
        "head_kind": head_kind,
        "head_tied": tied,
        "head_tied_analytical": analytical["head_tied"],
        "attn_implementation": ATTN_IMPLEMENTATION,
    }
