"""The analytical count agrees with torch's FlopCounterMode on real transformers models.

The contract is agreement within 5%. In fact the forward counts are equal, and the training-step
counts differ only by the embedding gradient's scatter-add, which xlt.compute counts and
FlopCounterMode (matmuls only) does not; both are checked exactly too.
"""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from xlt.compute import EncoderShape, plan_for, step_breakdown  # noqa: E402
from xlt.errors import XltError  # noqa: E402
from xlt.models.flops import apply_plan, build_model, encoder_layers, measure_train_step  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """FLOP counts do not depend on threads; tiny matmuls on a busy 2-core box run ~20x faster
    on one intra-op thread than with OpenMP threads contending."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def bert(layers, hidden, heads, intermediate, vocab=64, positions=64, **extra):
    return {
        "model_type": "bert",
        "num_hidden_layers": layers,
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "intermediate_size": intermediate,
        "vocab_size": vocab,
        "max_position_embeddings": positions,
        **extra,
    }


ROBERTA = {
    "model_type": "xlm-roberta",
    "num_hidden_layers": 2,
    "hidden_size": 24,
    "num_attention_heads": 3,
    "intermediate_size": 40,
    "vocab_size": 300,
    "max_position_embeddings": 66,  # 64 usable positions after the padding offset
    "pad_token_id": 1,
}
DISTILBERT = {
    "model_type": "distilbert",
    "n_layers": 3,
    "dim": 32,
    "n_heads": 4,
    "hidden_dim": 48,
    "vocab_size": 120,
    "max_position_embeddings": 64,
}
ELECTRA = {
    "model_type": "electra",
    "num_hidden_layers": 2,
    "hidden_size": 32,
    "embedding_size": 16,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "vocab_size": 100,
    "max_position_embeddings": 64,
}

CASES = [
    # id, config, seq_len, batch, trainable, head
    ("deep-narrow top:3 qa", bert(8, 16, 2, 32), 32, 2, "top:3", "qa"),
    ("shallow-wide all qa", bert(1, 256, 4, 1024), 16, 2, "all", "qa"),
    ("long-seq-512 embeddings mlm", bert(2, 16, 2, 32, positions=512), 512, 1, "embeddings", "mlm"),
    ("big-vocab all mlm", bert(2, 32, 4, 64, vocab=30000), 32, 2, "all", "mlm"),
    ("xlm-roberta head qa", ROBERTA, 64, 2, "head", "qa"),
    ("xlm-roberta none mlm", ROBERTA, 48, 2, "none", "mlm"),
    ("distilbert embeddings mlm", DISTILBERT, 24, 3, "embeddings", "mlm"),
    ("distilbert top:1 qa", DISTILBERT, 24, 3, "top:1", "qa"),
    ("electra all mlm", ELECTRA, 20, 2, "all", "mlm"),
    ("bert body qa", bert(3, 32, 4, 64), 16, 2, "body", "qa"),
    (
        "bert untied embeddings+head mlm",
        bert(2, 32, 4, 64, tie_word_embeddings=False),
        16,
        2,
        "embeddings+head",
        "mlm",
    ),
]


@pytest.mark.parametrize(
    ("config", "seq_len", "batch", "trainable", "head"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_analytical_matches_flop_counter(config, seq_len, batch, trainable, head):
    out = measure_train_step(config, seq_len, batch, trainable, head)
    assert out["head_tied"] == out["head_tied_analytical"]
    assert abs(out["ratio"] - 1) < 0.05, out
    # Exact up to the scatter-add, which FlopCounterMode does not see.
    assert out["analytical_forward_flops"] == out["measured_forward_flops"]
    embedding_grad = out["analytical_breakdown"]["embedding_grad"]
    assert out["analytical_flops"] - embedding_grad == out["measured_flops"]
    if trainable == "none":
        assert out["measured_flops"] == out["measured_forward_flops"]


def test_minijoint_extra_head_matches_flop_counter():
    """A second tied MLM head after layer 1 of 3 (MiniJoint pretraining), everything trainable."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers.models.bert.modeling_bert import BertOnlyMLMHead

    config = bert(3, 32, 4, 64)
    model = build_model(config, "mlm")
    extra = BertOnlyMLMHead(model.config)
    extra.predictions.decoder.weight = model.get_input_embeddings().weight
    plan = plan_for("all", 3, head_kind="mlm", head_tied=True, extra_heads=((1, "mlm"),))
    apply_plan(model, plan)
    ids = torch.randint(2, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as counter:
        out = model(input_ids=ids, labels=ids, output_hidden_states=True)
        logits = extra(out.hidden_states[1])
        loss = out.loss + torch.nn.functional.cross_entropy(logits.view(-1, 64), ids.view(-1))
        loss.backward()
    expected = step_breakdown(EncoderShape.from_config(config), 2, 16, plan)
    assert counter.get_total_flops() == expected["total"] - expected["embedding_grad"]


def test_apply_plan_sets_requires_grad():
    model = build_model(bert(3, 16, 2, 32), "mlm")
    apply_plan(model, plan_for("top:1", 3, head_kind="mlm", head_tied=True))
    layers = encoder_layers(model)
    assert not any(p.requires_grad for p in layers[0].parameters())
    assert all(p.requires_grad for p in layers[2].parameters())
    assert not model.get_input_embeddings().weight.requires_grad  # tied decoder follows the embeddings
    assert model.cls.predictions.transform.dense.weight.requires_grad
    apply_plan(model, plan_for("embeddings", 3, head_kind="mlm", head_tied=True))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["bert.embeddings.word_embeddings.weight"]


@pytest.mark.parametrize(
    ("seq_len", "batch", "flag"),
    [(65, 1, "--seq-len"), (0, 1, "--seq-len"), (8, 0, "--batch")],
)
def test_measure_validates_flags(seq_len, batch, flag):
    with pytest.raises(XltError, match=f"^{flag}"):
        measure_train_step(bert(1, 16, 2, 32), seq_len, batch, "all")


def test_measure_rejects_bad_config_and_head():
    with pytest.raises(XltError, match="not an encoder config"):
        measure_train_step({"model_type": "gpt2"}, 8, 1, "all")
    with pytest.raises(XltError, match="--head"):
        measure_train_step(bert(1, 16, 2, 32), 8, 1, "all", head_kind="ner")
