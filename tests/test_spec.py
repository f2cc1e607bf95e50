from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.helpers import ROOT, run_cli
from xlt.errors import XltError
from xlt.spec import load_spec, spec_from_dict, trial_spec

MINIMAL = """
name: t
model: {tiny: {layers: 2}}
data:
  english: {lang: en, synthetic: {n: 10}}
  eval: [{name: dev, lang: en, synthetic: {n: 5, split: dev}}]
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_every_shipped_study_loads():
    studies = sorted((ROOT / "studies").glob("*.yaml"))
    assert studies
    for path in studies:
        spec = load_spec(path)
        assert spec.name


def test_overrides_and_defaults(tmp_path):
    spec = load_spec(write(tmp_path, MINIMAL), ["train.lr=3e-5", "train.mode=validated", "data.target_count=7"])
    assert spec.train.lr == 3e-5 and spec.train.mode == "validated" and spec.data.target_count == 7
    assert spec.model.trust_remote_code is False
    assert spec.data.validation_set.label == "dev"


def test_spec_is_frozen(tmp_path):
    spec = load_spec(write(tmp_path, MINIMAL))
    with pytest.raises(ValidationError):
        spec.train.lr = 1.0  # type: ignore[misc]


def test_trial_spec_sets_dotted_params(tmp_path):
    spec = load_spec(write(tmp_path, MINIMAL))
    t = trial_spec(spec, {"train.lr": 0.01, "train.seed": 3})
    assert (t.train.lr, t.train.seed) == (0.01, 3)
    assert t.hash() != spec.hash()


@pytest.mark.parametrize("override, message", [
    ("train.lr=-1", "s.yaml: train.lr: must be > 0, got -1"),
    ("train.lrr=1", "s.yaml: train.lrr: unknown key (did you mean 'lr'?)"),
    ("train.batch_size=abc", "s.yaml: train.batch_size: Input should be a valid integer"),
    ("train.mode=sometimes", "s.yaml: train.mode: Input should be 'fixed' or 'validated'"),
    ("train.answer_rule=squad", "s.yaml: train.answer_rule: Input should be 'run_qa' or 'pipeline'"),
    ("data.target_fraction=2", "s.yaml: data.target_fraction: must be <= 1, got 2"),
    ("modle.name=x", "s.yaml: modle: unknown key (did you mean 'model'?)"),
    ("train.doc_stride=500", "doc_stride (500) must be < max_seq_length (384)"),
])
def test_errors_name_file_and_key(tmp_path, override, message):
    with pytest.raises(XltError) as e:
        load_spec(write(tmp_path, MINIMAL), [override])
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_search_key(tmp_path):
    text = MINIMAL + "search: {space: {train.lrr: {range: [0, 1]}}}\n"
    with pytest.raises(XltError, match="search.space: unknown key 'train.lrr'"):
        load_spec(write(tmp_path, text))


def test_param_forms():
    spec = spec_from_dict({
        "name": "p", "model": {"tiny": {}},
        "data": {"english": {"synthetic": {"n": 3}}, "eval": [{"synthetic": {"n": 3, "split": "dev"}}]},
        "search": {"space": {"train.lr": {"log_range": [1e-5, 1e-3]}, "adapt.depth": [1, 2, 3]}},
    })
    assert spec.search.space["adapt.depth"].choice == (1, 2, 3)
    with pytest.raises(XltError, match="log_range: bounds must be > 0"):
        spec_from_dict({**spec.model_dump(mode="json"), "search": {"space": {"train.lr": {"log_range": [0, 1]}}}})


@pytest.mark.parametrize("text, message", [
    ("", "empty study file"),
    ("name: [unclosed", "invalid YAML at line 1"),
    ("- a\n- b\n", "a study must be a mapping"),
])
def test_broken_files_via_cli(tmp_path, text, message):
    code, out, err = run_cli("validate", str(write(tmp_path, text)))
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_missing_file_via_cli(tmp_path):
    code, _, err = run_cli("validate", str(tmp_path / "nope.yaml"))
    assert code == 2 and "no such file" in err


def test_env_vars_in_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("XLT_DATA_DIR", "/data")
    spec = load_spec(write(tmp_path, MINIMAL))
    assert str(spec.resolve_path("${XLT_DATA_DIR}/qa/x.json")) == "/data/qa/x.json"
    monkeypatch.delenv("XLT_DATA_DIR")
    with pytest.raises(XltError, match="XLT_DATA_DIR is not set"):
        spec.resolve_path("${XLT_DATA_DIR}/qa/x.json")


def test_target_text_per_language():
    from xlt.spec import spec_from_dict

    tree = {"name": "t", "task": "adapt", "model": {"tiny": {}},
            "data": {"english": {"synthetic": {}}, "eval": [{"lang": "ru", "synthetic": {}}]},
            "adapt": {"target_text": {"ru": ["a/{lang}.txt"], "zh": ["b.txt", "c.txt"]}}}
    a = spec_from_dict(tree).adapt
    assert a.target_patterns("ru") == ("a/{lang}.txt",) and a.target_patterns("zh") == ("b.txt", "c.txt")
    with pytest.raises(XltError, match="adapt.target_text: no files given for target language 'de' \\(have ru, zh\\)"):
        a.target_patterns("de")
    tree["adapt"]["target_text"] = ["x/{lang}.txt"]
    assert spec_from_dict(tree).adapt.target_patterns("de") == ("x/{lang}.txt",)
