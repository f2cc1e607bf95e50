"""Analytical FLOPs on hand-computed cases, curve helpers, plan parsing and config errors."""

import math
import subprocess
import sys

import pytest

from xlt.compute import (
    EncoderShape,
    Plan,
    analytical_for,
    batch_flops,
    device_seconds,
    forward_flops,
    frontier,
    plan_for,
    step_breakdown,
    time_to_near_max,
    train_step_flops,
)
from xlt.errors import XltError

# A 1-layer encoder: hidden 4, FFN 8, vocabulary 10.
TINY = EncoderShape(layers=1, hidden=4, heads=2, intermediate=8, vocab=10, max_positions=16)

# Forward matmul FLOPs for batch 1, seq_len 3 (T = 3 tokens), by hand, 2 FLOPs per multiply-add:
QKV = 3 * (2 * 3 * 4 * 4)  # 288: three h x h projections over 3 tokens
ATT = 2 * (2 * 1 * 3 * 3 * 4)  # 144: Q K^T and P V, 2 * batch * seq^2 * h each
OUT = 2 * 3 * 4 * 4  # 96: output projection
FFN = 2 * (2 * 3 * 4 * 8)  # 384: h -> f and f -> h
LAYER = QKV + ATT + OUT + FFN  # 912
QA = 2 * 3 * 4 * 2  # 48: h -> 2 span logits on every position
MLM_DENSE = 2 * 3 * 4 * 4  # 96
MLM_DECODER = 2 * 3 * 4 * 10  # 240
SCATTER = 3 * 4  # the embedding gradient's scatter-add: T * h


def test_bert_config_shape():
    cfg = {
        "model_type": "bert",
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "vocab_size": 119547,
        "max_position_embeddings": 512,
    }
    shape = EncoderShape.from_config(cfg)
    assert shape == EncoderShape(12, 768, 12, 3072, 119547, 512, model_type="bert")
    assert shape.emb == 768


def test_distilbert_roberta_electra_configs():
    distil = EncoderShape.from_config(
        {
            "model_type": "distilbert",
            "dim": 64,
            "n_layers": 6,
            "n_heads": 4,
            "hidden_dim": 256,
            "vocab_size": 500,
            "max_position_embeddings": 512,
        }
    )
    assert (distil.layers, distil.hidden, distil.heads, distil.intermediate) == (6, 64, 4, 256)
    xlmr = EncoderShape.from_config(
        {
            "model_type": "xlm-roberta",
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 128,
            "vocab_size": 250002,
            "max_position_embeddings": 514,
            "pad_token_id": 1,
        }
    )
    assert xlmr.max_positions == 512  # positions start after the padding index
    electra = EncoderShape.from_config(
        {
            "model_type": "electra",
            "hidden_size": 256,
            "embedding_size": 128,
            "num_hidden_layers": 12,
            "num_attention_heads": 4,
            "intermediate_size": 1024,
            "vocab_size": 30522,
            "max_position_embeddings": 512,
        }
    )
    assert electra.emb == 128


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"model_type": "gpt2", "n_layer": 12}, "not an encoder config (model_type=gpt2)"),
        ({"hidden_size": 4}, "no model_type"),
        ({"model_type": "bert", "hidden_size": 4}, "missing key(s) num_hidden_layers"),
        ({"model_type": "distilbert", "dim": 4}, "missing key(s) n_layers"),
        (
            {
                "model_type": "bert",
                "hidden_size": 6,
                "num_hidden_layers": 1,
                "num_attention_heads": 4,
                "intermediate_size": 8,
                "vocab_size": 10,
                "max_position_embeddings": 8,
            },
            "not a multiple",
        ),
        (
            {
                "model_type": "bert",
                "hidden_size": 0,
                "num_hidden_layers": 1,
                "num_attention_heads": 4,
                "intermediate_size": 8,
                "vocab_size": 10,
                "max_position_embeddings": 8,
            },
            "config hidden_size",
        ),
        (
            {
                "model_type": "electra",
                "hidden_size": 8,
                "num_hidden_layers": 1,
                "num_attention_heads": 4,
                "intermediate_size": 8,
                "vocab_size": 10,
                "max_position_embeddings": 8,
            },
            "embedding_size",
        ),
        ("not a dict", "expected a dict"),
    ],
)
def test_bad_configs(cfg, message):
    with pytest.raises(XltError) as err:
        EncoderShape.from_config(cfg)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_forward_by_hand():
    plan = plan_for("all", 1)
    assert LAYER == 912
    assert forward_flops(TINY, 1, 3, plan) == LAYER + QA == 960
    # Forward cost does not depend on what is trainable, and is linear in the batch.
    assert forward_flops(TINY, 1, 3, plan_for("none", 1)) == 960
    assert forward_flops(TINY, 2, 3, plan) == 2 * 960


def test_train_step_by_hand():
    # all: embeddings trainable, so the layer's input requires grad: every matmul 3x; + scatter-add.
    assert train_step_flops(TINY, 1, 3, plan_for("all", 1)) == 3 * LAYER + 3 * QA + SCATTER == 2892
    # top:1 with frozen embeddings: Q, K, V skip grad-input (2x); the rest 3x.
    assert (
        train_step_flops(TINY, 1, 3, plan_for("top:1", 1)) == 2 * QKV + 3 * (ATT + OUT + FFN) + 3 * QA == 2592
    )
    # head only: body forward only (1x), head forward + weight grad (2x).
    assert train_step_flops(TINY, 1, 3, plan_for("head", 1)) == LAYER + 2 * QA == 1008
    # embeddings only: projections and FFN 2x (grad-input), attention products 3x (both operands
    # are activations), frozen head 2x (grad-input), plus the scatter-add.
    expected = 2 * (QKV + OUT + FFN) + 3 * ATT + 2 * QA + SCATTER
    assert train_step_flops(TINY, 1, 3, plan_for("embeddings", 1)) == expected == 2076
    # nothing trainable: a step is a forward pass.
    assert train_step_flops(TINY, 1, 3, plan_for("none", 1)) == 960


def test_mlm_head_by_hand():
    tied = plan_for("all", 1, head_kind="mlm", head_tied=True)
    assert forward_flops(TINY, 1, 3, tied) == LAYER + MLM_DENSE + MLM_DECODER
    # Only 1 masked position in the batch: the head runs on one row.
    assert forward_flops(TINY, 1, 3, tied, mlm_positions=1) == LAYER + (MLM_DENSE + MLM_DECODER) / 3
    # Tied decoder with only the embeddings trainable: the decoder gets its weight gradient
    # (it is the embedding matrix), the dense transform only grad-input.
    emb = plan_for("embeddings", 1, head_kind="mlm", head_tied=True)
    expected = 2 * (QKV + OUT + FFN) + 3 * ATT + 2 * MLM_DENSE + 3 * MLM_DECODER + SCATTER
    assert train_step_flops(TINY, 1, 3, emb) == expected
    # Untied: the decoder is frozen with the head.
    untied = plan_for("embeddings", 1, head_kind="mlm", head_tied=False)
    assert train_step_flops(TINY, 1, 3, untied) == expected - MLM_DECODER
    # Head trainable but tied and embeddings frozen: the decoder weight is frozen.
    head = plan_for("head", 1, head_kind="mlm", head_tied=True)
    assert train_step_flops(TINY, 1, 3, head) == LAYER + 2 * MLM_DENSE + 2 * MLM_DECODER


def test_extra_head_and_no_head():
    # Two layers, a second MLM head after layer 1 (MiniJoint), everything trainable.
    shape = EncoderShape(layers=2, hidden=4, heads=2, intermediate=8, vocab=10, max_positions=16)
    plain = plan_for("all", 2, head_kind="mlm", head_tied=True)
    joint = plan_for("all", 2, head_kind="mlm", head_tied=True, extra_heads=((1, "mlm"),))
    extra = step_breakdown(shape, 1, 3, joint)["components"]["extra_head1"]
    assert extra == 3 * (MLM_DENSE + MLM_DECODER)
    assert train_step_flops(shape, 1, 3, joint) == train_step_flops(shape, 1, 3, plain) + extra
    # No head and no loss: nothing to differentiate, a step is a forward.
    bare = Plan(embeddings=True, layers=(True, True), head=True, head_kind="none")
    assert train_step_flops(shape, 1, 3, bare) == forward_flops(shape, 1, 3, bare) == 2 * LAYER
    # No top head but an extra one after layer 1: layer 2 runs forward only.
    mini = Plan(
        embeddings=True, layers=(False, False), head=False, head_kind="none", extra_heads=((1, "qa"),)
    )
    expected = (2 * (QKV + OUT + FFN) + 3 * ATT + SCATTER) + LAYER + 2 * QA
    assert train_step_flops(shape, 1, 3, mini) == expected


def test_electra_projection():
    shape = EncoderShape(1, 4, 2, 8, 10, 16, embedding_size=2, model_type="electra")
    proj = 2 * 3 * 2 * 4
    assert forward_flops(shape, 1, 3, plan_for("none", 1)) == proj + LAYER + QA
    # all: projection weight and input grad; scatter-add over the 2-wide embeddings.
    assert train_step_flops(shape, 1, 3, plan_for("all", 1)) == 3 * proj + 3 * LAYER + 3 * QA + 3 * 2
    # embeddings only: the projection is frozen (grad-input only).
    emb = train_step_flops(shape, 1, 3, plan_for("embeddings", 1))
    assert emb == 2 * proj + 2 * (QKV + OUT + FFN) + 3 * ATT + 2 * QA + 3 * 2


def test_breakdown_adds_up():
    plan = plan_for("top:1", 1)
    b = step_breakdown(TINY, 1, 3, plan)
    assert b["forward"] == 960
    assert b["forward"] + b["backward_input"] + b["backward_weight"] + b["embedding_grad"] == b["total"]
    assert b["backward_weight"] == LAYER - ATT + QA  # the attention products have no weights
    assert sum(b["components"].values()) == b["total"]


def test_batch_flops_padding():
    plan = plan_for("all", 1)
    # forward at batch 1: seq 1 costs 96 + 16 + 32 + 128 + 16 = 288; seq 3 costs 960.
    out = batch_flops(TINY, [1, 3], 3, plan, train=False)
    assert out["flops"] == 2 * 960
    assert out["flops_real"] == 288 + 960
    assert out["padding_share"] == pytest.approx(1 - 1248 / 1920)
    full = batch_flops(TINY, [3, 3], 3, plan)
    assert full["flops"] == full["flops_real"] and full["padding_share"] == 0
    # MLM positions are real tokens: the head costs the same padded or not.
    mlm = plan_for("all", 1, head_kind="mlm", head_tied=True)
    out = batch_flops(TINY, [1, 3], 3, mlm, mlm_positions=2)
    body_only = batch_flops(TINY, [1, 3], 3, mlm, mlm_positions=0)
    head_cost = out["flops"] - body_only["flops"]
    assert out["flops_real"] - body_only["flops_real"] == pytest.approx(head_cost)
    with pytest.raises(XltError, match="longer than the padded length"):
        batch_flops(TINY, [4], 3, plan)
    with pytest.raises(XltError, match="empty batch"):
        batch_flops(TINY, [], 3, plan)
    with pytest.raises(XltError, match="real tokens"):
        batch_flops(TINY, [1, 1], 3, mlm, mlm_positions=3)


def test_attention_grows_quadratically():
    plan = plan_for("none", 1)
    f1, f2 = forward_flops(TINY, 1, 8, plan), forward_flops(TINY, 1, 16, plan)
    # Per-token terms cancel in f(16) - 2 f(8); the seq_len^2 attention terms do not.
    assert f2 - 2 * f1 == 2 * (2 * 16 * 16 * 4) - 2 * 2 * (2 * 8 * 8 * 4)


def test_plan_parsing():
    assert plan_for("all", 3) == Plan(True, (True, True, True), True)
    assert plan_for("none", 3) == Plan(False, (False, False, False), False)
    assert plan_for("head", 3) == Plan(False, (False, False, False), True)
    assert plan_for("embeddings", 3) == Plan(True, (False, False, False), False)
    assert plan_for("body", 3) == Plan(False, (True, True, True), True)
    assert plan_for("top:2", 3) == Plan(False, (False, True, True), True)
    assert plan_for("top:0", 3) == plan_for("head", 3)
    assert plan_for("embeddings+head", 2) == Plan(True, (False, False), True)
    assert plan_for("Embeddings + top:1", 2, head_kind="mlm", head_tied=True) == Plan(
        True, (False, True), True, "mlm", True
    )
    assert not plan_for("none", 2).trainable and plan_for("head", 2).trainable


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("top:x", "whole number"),
        ("top:4", "only 3 layers"),
        ("bottom", "unknown part 'bottom'"),
        ("none+head", "cannot be combined"),
        ("", "expected all, none"),
    ],
)
def test_plan_parsing_errors(value, message):
    with pytest.raises(XltError, match="--trainable") as err:
        plan_for(value, 3)
    assert message in str(err.value)


def test_plan_validation():
    with pytest.raises(XltError, match="head_kind"):
        Plan(False, (True,), True, head_kind="ner")
    with pytest.raises(XltError, match="outside 1..2"):
        Plan(False, (True, True), True, extra_heads=((3, "mlm"),))
    with pytest.raises(XltError, match="qa or mlm"):
        Plan(False, (True,), True, extra_heads=((1, "none"),))


def test_analytical_for_validates_flags():
    cfg = {
        "model_type": "roberta",
        "hidden_size": 8,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 16,
        "vocab_size": 20,
        "max_position_embeddings": 18,
        "pad_token_id": 1,
    }
    out = analytical_for(cfg, 16, 2, "all", "mlm")
    assert out["head_tied"] and out["analytical_flops"] > out["forward_flops"] > 0
    assert out["config"]["max_positions"] == 16
    with pytest.raises(XltError, match=r"^--seq-len 17 is longer than the 16 positions"):
        analytical_for(cfg, 17, 2, "all")
    with pytest.raises(XltError, match="^--seq-len"):
        analytical_for(cfg, 0, 2, "all")
    with pytest.raises(XltError, match="^--batch"):
        analytical_for(cfg, 8, 0, "all")
    with pytest.raises(XltError, match="^--trainable"):
        analytical_for(cfg, 8, 1, "top:3")
    with pytest.raises(XltError, match="mlm_positions"):
        forward_flops(TINY, 1, 3, plan_for("all", 1, head_kind="mlm"), mlm_positions=4)


def test_time_to_near_max():
    assert time_to_near_max([1, 2, 3], [0.5, 0.96, 1.0]) == (2.0, 0.96)
    assert time_to_near_max([1, 2, 3], [0.5, 0.96, 1.0], tau=1.0) == (3.0, 1.0)
    assert time_to_near_max([3, 1, 2], [1.0, 0.5, 0.96]) == (2.0, 0.96)  # ordered by x first
    assert time_to_near_max([1, 2, 3], [0.99, 0.5, 1.0]) == (1.0, 0.99)  # first, not last
    assert time_to_near_max([1, 2, 3], [0.2, float("nan"), 0.3], tau=0.9) == (3.0, 0.3)
    assert time_to_near_max([], []) is None
    assert time_to_near_max([1, 2], [0.0, 0.0]) is None
    assert time_to_near_max([1, 2], [-1.0, -0.5]) is None
    assert time_to_near_max([1], [float("nan")]) is None
    with pytest.raises(XltError, match="2 x values but 1 y"):
        time_to_near_max([1, 2], [1])
    with pytest.raises(XltError, match="tau"):
        time_to_near_max([1], [1], tau=0)


def test_frontier():
    pts = [(3, 0.5), (1, 0.4), (2, 0.3), (2, 0.6), (4, 0.6), (5, 0.7)]
    assert frontier(pts) == [(1.0, 0.4), (2.0, 0.6), (5.0, 0.7)]
    assert frontier([]) == []
    assert frontier([(1, 0.5), (1, 0.5)]) == [(1.0, 0.5)]
    assert frontier([(2, 0.1), (1, 0.9)]) == [(1.0, 0.9)]
    assert frontier([(1, float("nan")), (2, 0.1)]) == [(2.0, 0.1)]
    assert all(not math.isnan(y) for _, y in frontier([(0, -1.0)]))


def test_device_seconds():
    assert device_seconds(10.0, 4) == 40.0
    assert device_seconds(0, 1) == 0
    with pytest.raises(XltError):
        device_seconds(1.0, 0)
    with pytest.raises(XltError):
        device_seconds(-1.0, 1)


def test_compute_is_torch_free():
    code = "import sys, xlt.compute; bad = {'torch', 'transformers', 'numpy'} & set(sys.modules); assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True)
