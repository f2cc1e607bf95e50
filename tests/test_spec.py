from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.helpers import ROOT, run_cli
from xlt.errors import XltError
from xlt.spec import load_spec, parse_override, spec_from_dict, trial_spec

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
            "data": {"english": {"synthetic": {}}, "eval": [{"lang": "en", "synthetic": {}},
                                                             {"name": "ru", "lang": "ru", "synthetic": {}}]},
            "adapt": {"target_text": {"ru": ["a/{lang}.txt"], "zh": ["b.txt", "c.txt"]}}}
    a = spec_from_dict(tree).adapt
    assert a.target_patterns("ru") == ("a/{lang}.txt",) and a.target_patterns("zh") == ("b.txt", "c.txt")
    with pytest.raises(XltError, match="adapt.target_text: no files given for target language 'de' \\(have ru, zh\\)"):
        a.target_patterns("de")
    tree["adapt"]["target_text"] = ["x/{lang}.txt"]
    assert spec_from_dict(tree).adapt.target_patterns("de") == ("x/{lang}.txt",)


CLAIMS = MINIMAL + """
claims:
  - kind: order
    text: "+English beats target-only at <= 1,000 target questions"
    source: DeepPavlov 2020, Fig. 3
    eval_set: dev
    where: {data.target_count: {gt: 0, le: 1000}}
    better: {where: {data.with_english: true}, label: +English}
    worse: {where: {data.with_english: false}}
    margin: 0.5
  - kind: ratio
    text: MiniJoint reaches 95% of BaseLarge's final F1 with at most 1/2 of its step-2 FLOPs
    eval_set: dev
    subject: {where: {adapt.method: [mini_joint]}}
    reference: {where: {adapt.method: base_large}}
    quality: 0.95
    compute: 0.5
  - kind: lift
    text: step 2 lifts F1 by >= 5 over the step-0 baseline
    eval_set: dev
    metric: exact_match
    delta: 5
    pair_by: [adapt.method]
"""


def test_claims_load(tmp_path):
    spec = load_spec(write(tmp_path, CLAIMS))
    order, ratio, lift = spec.claims
    assert order.kind == "order" and order.better.where == {"data.with_english": True}
    bounds = order.where["data.target_count"]
    assert (bounds.gt, bounds.le, bounds.lt, bounds.ge) == (0, 1000, None, None)
    assert order.better.stage == "final" and order.pair_by == "auto" and order.require == "all"
    assert ratio.subject.where["adapt.method"] == ("mini_joint",) and ratio.compute == 0.5
    assert ratio.stage == "step2" and ratio.cost == "flops_stage" and ratio.reference_cost == "final"
    assert (lift.baseline.stage, lift.baseline.step, lift.final.stage) == ("step2", 0, "final")
    assert lift.pair_by == ("adapt.method",)
    # claims judge rows and change nothing a trial does: editing them keeps the hash (and --resume)
    assert spec.hash() == load_spec(write(tmp_path, MINIMAL)).hash()
    # spec.json round trip (the dashboard reads the claims back from it)
    assert spec_from_dict(spec.model_dump(mode="json")).claims == spec.claims


@pytest.mark.parametrize("override, message", [
    ("claims.0.kind=rank", "claims.0.kind: must be one of order, ratio, lift, got 'rank'"),
    ("claims.0.margn=1", "claims.0.margn: unknown key (did you mean 'margin'?)"),
    ("claims.0.better.wher={}", "claims.0.better.wher: unknown key (did you mean 'where'?)"),
    ("claims.0.where={data.target_count: {lee: 3}}", "claims.0.where.data.target_count: unknown bound 'lee'"),
    ("claims.0.where={data.target_count: {le: many}}", "claims.0.where.data.target_count: bound le must be a number"),
    ("claims.0.where={data.target_count: {}}", "claims.0.where.data.target_count: give at least one of lt, le"),
    ("claims.0.where={data.target_count: []}", "claims.0.where.data.target_count: a list of values must not be"),
    ("claims.0.eval_set=nope", "claims.0.eval_set: 'nope' is not an eval set name"),
    ("claims.0.require=most", "claims.0.require: Input should be 'all' or 'any'"),
    ("claims.0.better.step=3", "claims.0.better: step picks an evaluation of a stage"),
    ("claims.1.quality=0", "claims.1.quality: must be > 0, got 0"),
    ("claims.1.cost=tokens", "claims.1.cost: Input should be"),
    ("claims.2.delta=null", "claims.2.delta: Input should be a valid number"),
    ("claims.2.baseline={stage: step2, step: middle}", "claims.2.baseline.step"),
    ("claims.2.text=", "claims.2.text"),
])
def test_claim_errors_name_the_key(override, message):
    import yaml

    tree = yaml.safe_load(CLAIMS)
    key, value = parse_override(override)  # overrides have no list indices: set claims.N.key by hand
    *parents, last = key.split(".")
    node = tree
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[last] = value
    with pytest.raises(XltError) as e:
        spec_from_dict(tree, "s.yaml")
    assert message in str(e.value)
    assert str(e.value).startswith("s.yaml: claims.") and "\n" not in str(e.value)


def test_claim_needs_a_kind(tmp_path):
    text = MINIMAL + "claims: [{text: x, eval_set: dev}]\n"
    with pytest.raises(XltError, match=r"claims.0.kind: required key is missing \(one of order, ratio, lift\)"):
        load_spec(write(tmp_path, text))


def test_the_readme_claims_example_validates():
    import re

    import yaml

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"^### Claims.*?```yaml\n(.*?)```", text, re.M | re.S)
    assert block, "README.md has no claims example"
    tree = yaml.safe_load(MINIMAL)
    tree["data"]["eval"] = [{"name": n, "lang": n[-2:], "synthetic": {"n": 5}} for n in ("xquad-zh", "xquad-ru")]
    tree.update(yaml.safe_load(block.group(1)))
    spec = spec_from_dict(tree, "README.md")
    assert [c.kind for c in spec.claims] == ["order", "ratio", "lift"]


def test_keys_added_later_leave_the_hash_alone_until_set():
    """Runs and shipped results hashed before train.attention_dropout and search.budget existed
    still resume and verify (tests/test_published.py checks a shipped one)."""
    from xlt.spec import load_spec

    study = ROOT / "studies" / "quickstart.yaml"
    plain = load_spec(study, [])
    assert "attention_dropout" not in plain._hashed()["train"] and "budget" not in plain._hashed()["search"]
    assert load_spec(study, ["train.attention_dropout=0"]).hash() != plain.hash()
    assert load_spec(study, ["search.budget.flops=1e15"]).hash() != plain.hash()


def test_tracking_is_no_part_of_the_hash(tmp_path):
    """Trackers log what trials report and change nothing a trial computes: adding, changing or
    removing them keeps the hash (and --resume), and a resume names no difference."""
    plain = load_spec(write(tmp_path, MINIMAL))
    tracked = load_spec(write(tmp_path, MINIMAL), ["tracking.tensorboard=true", "tracking.mlflow={}",
                                                   "tracking.wandb={project: p, mode: disabled}"])
    assert tracked.tracking.wandb.mode == "disabled" and tracked.tracking.mlflow.tracking_uri is None
    assert "tracking" not in tracked._hashed()
    assert tracked.hash() == plain.hash() and plain.first_difference(tracked) is None
    # the spec.json round trip keeps it (a resumed run reads the study file's, not the saved one)
    assert spec_from_dict(tracked.model_dump(mode="json")).tracking == tracked.tracking


def test_the_readme_tracking_example_validates():
    import re

    import yaml

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"^### Trackers.*?```yaml\n(.*?)```", text, re.M | re.S)
    assert block, "README.md has no tracking example"
    tree = {**yaml.safe_load(MINIMAL), **yaml.safe_load(block.group(1))}
    t = spec_from_dict(tree, "README.md").tracking
    assert t.mlflow and t.wandb and t.tensorboard
