"""`xlt predict` + `xlt eval` reproduce, to 1e-9, the F1/EM a trial recorded for its saved model."""

import json

import pytest

from tests.helpers import run_cli
from xlt import results
from xlt.data.squad import parse_squad, to_squad
from xlt.data.synthetic import make_squad

STUDY = """
name: tiny-predict
model: {{tiny: {{layers: 1, hidden: 32, heads: 2, intermediate: 64, vocab_size: 400, max_positions: 128}}}}
data:
  english: {{lang: en, synthetic: {{n: 120, seed: 0}}}}
  eval:
    - {{name: en-dev, lang: en, path: "{dev}"}}
    - {{name: ru-dev, lang: ru, path: "{ru}", evaluate: final}}
train: {{mode: validated, patience: 2, epochs: 3, batch_size: 16, lr: 2.0e-3, max_seq_length: 96, doc_stride: 32,
         eval_every: 4, eval_batch_size: 7, answer_rule: {rule}}}
"""


@pytest.mark.parametrize("rule", ["run_qa", "pipeline"])
def test_predict_then_eval_reproduces_the_recorded_scores(tmp_path, rule):
    files = {}
    for lang in ("en", "ru"):
        examples, _ = parse_squad(make_squad(lang, 40, 0, "dev"), "synthetic", lang)
        files[lang] = tmp_path / f"{lang}-dev.json"
        files[lang].write_text(json.dumps(to_squad(examples), ensure_ascii=False), encoding="utf-8")
    study = tmp_path / "s.yaml"
    study.write_text(STUDY.format(dev=files["en"], ru=files["ru"], rule=rule), encoding="utf-8")
    code, _, err = run_cli("trial", str(study), "--out", str(tmp_path / "run"))
    assert code == 0, err
    final = results.read_table(tmp_path / "run").query("stage == 'final'").set_index("eval_set")
    for name, lang in (("en-dev", "en"), ("ru-dev", "ru")):
        preds = tmp_path / f"{lang}.preds.json"
        code, _, err = run_cli("predict", str(tmp_path / "run/model"), str(files[lang]), "--out", str(preds))
        assert code == 0, err
        code, out, err = run_cli("eval", str(files[lang]), str(preds), "--lang", lang)
        assert code == 0, err
        scores = json.loads(out)
        assert abs(scores["f1"] - final.loc[name, "f1"]) < 1e-9
        assert abs(scores["exact_match"] - final.loc[name, "exact_match"]) < 1e-9


def test_predict_bad_model_dir_is_one_line(tmp_path):
    (tmp_path / "d.json").write_text('{"data": []}', encoding="utf-8")
    code, _, err = run_cli("predict", str(tmp_path / "nothing"), str(tmp_path / "d.json"))
    assert code == 2 and "not a saved model directory" in err and "Traceback" not in err
