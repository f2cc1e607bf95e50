"""train.attention_dropout: the attention-probability dropout apart from the hidden one, and why it
exists: on CPU, PyTorch's attention takes its fused kernel only without dropout."""

import pytest
import torch

from tests.helpers import tiny_qa_study
from xlt.models.load import dropout_overrides, load_qa_model
from xlt.spec import spec_from_dict, step1_identity
from xlt.train.qa import build_model


def _spec(**train):
    d = tiny_qa_study(train=8, dev=4, max_steps=2)
    d["train"].update(train)
    return spec_from_dict(d, "test")


def _dropouts(model) -> tuple[float, float]:
    return model.config.hidden_dropout_prob, model.config.attention_probs_dropout_prob


def test_unset_it_follows_dropout_set_it_applies_to_attention_alone():
    class Tok:
        def __len__(self):
            return 300

    assert _dropouts(build_model(_spec(dropout=0.2), Tok())) == (0.2, 0.2)
    assert _dropouts(build_model(_spec(dropout=0.2, attention_dropout=0.0), Tok())) == (0.2, 0.0)
    assert dropout_overrides("distilbert", 0.1, 0.0) == {"dropout": 0.1, "attention_dropout": 0.0}
    assert dropout_overrides("bert", None, None) == {}  # a pretrained primary keeps its checkpoint's


def test_a_pretrained_model_gets_it_on_top_of_train_dropout(minilm_path):
    model = load_qa_model(minilm_path, dropout=0.1, attention_dropout=0.0)
    assert _dropouts(model) == (0.1, 0.0)


def test_out_of_range_is_refused_naming_the_key():
    with pytest.raises(Exception, match="attention_dropout"):
        _spec(attention_dropout=1.5)


def test_step1_cache_key_carries_it_only_when_set():
    from pathlib import Path

    from xlt.spec import load_spec

    study = Path(__file__).parents[1] / "studies" / "minimodel_quickstart.yaml"
    plain = step1_identity(load_spec(study, []), "mini_joint")
    set_ = step1_identity(load_spec(study, ["train.attention_dropout=0"]), "mini_joint")
    assert "attention_dropout" not in plain and set_["attention_dropout"] == 0.0


@pytest.mark.parametrize(("p", "kernel"), [(0.1, "aten::_scaled_dot_product_attention_math"),
                                           (0.0, "aten::_scaled_dot_product_flash_attention_for_cpu")])
def test_cpu_attention_is_fused_only_without_dropout(p, kernel):
    """The fact the option rests on (torch 2.13, CPU, training mode): SDPA with dropout falls back
    to its unfused math path (1.6x the e5-small training step here, `xlt bench`)."""
    class Tok:
        def __len__(self):
            return 300

    model = build_model(_spec(attention_dropout=p), Tok()).train()
    ids = torch.randint(1, 300, (2, 16))
    with torch.profiler.profile() as prof:
        model(input_ids=ids, attention_mask=torch.ones_like(ids)).start_logits.sum().backward()
    ops = {e.key for e in prof.key_averages()}
    assert kernel in ops
