"""xlt calibrate: measured FLOP/s stored per device kind and threads, read by xlt estimate before
its assumed defaults and after a study's own `throughput:`."""

import json

import pytest
import yaml

from tests.helpers import run_cli, tiny_qa_study
from xlt import calibration
from xlt.spec import spec_from_dict
from xlt.study.estimate import DEFAULT_THROUGHPUT, estimate


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XLT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / calibration.FILE


def test_calibrate_measures_stores_and_estimate_uses_it(tmp_path, cache):
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump(tiny_qa_study(train=16, dev=4, max_steps=2)))
    before = estimate(spec_from_dict(yaml.safe_load(study.read_text())))
    assert before["throughput_source"] == "assumed" and before["throughput_flops_per_s"] == DEFAULT_THROUGHPUT["cpu"]

    code, out, err = run_cli("calibrate", str(study), "--steps", "2")
    assert code == 0, err
    entry = json.loads(cache.read_text())["cpu/1t"]
    assert entry["train_flops_per_s"] > 1e6 and entry["eval_flops_per_s"] > 1e6 and entry["threads"] == 1
    assert entry["model_shape"].startswith("1x32")  # the study's own model shape was timed

    after = estimate(spec_from_dict(yaml.safe_load(study.read_text())))
    assert after["throughput_source"] == "measured" and after["throughput_flops_per_s"] == entry["train_flops_per_s"]
    want = (after["flops_train"] / entry["train_flops_per_s"] + after["flops_eval"] / entry["eval_flops_per_s"]) / 3600
    assert after["device_hours"] == pytest.approx(want)
    code, out, _ = run_cli("estimate", str(study))
    assert "measured by xlt calibrate" in out

    # a study's own throughput wins; another thread count has no measurement
    own = spec_from_dict({**yaml.safe_load(study.read_text()), "throughput": {"cpu": 5e9}})
    assert estimate(own)["throughput_source"] == "study" and estimate(own)["throughput_flops_per_s"] == 5e9
    two = spec_from_dict({**yaml.safe_load(study.read_text()), "train": {**tiny_qa_study(train=16, dev=4, max_steps=2)["train"], "threads": 2}})
    assert estimate(two)["throughput_source"] == "assumed"


def test_a_broken_calibration_file_falls_back_to_the_assumption(cache):
    cache.parent.mkdir(parents=True)
    cache.write_text("{not json")
    assert calibration.measured("cpu", 1) is None
    cache.write_text(json.dumps({"cpu/1t": {"train_flops_per_s": -1, "eval_flops_per_s": 1e9}}))
    assert calibration.measured("cpu", 1) is None


def test_calibrate_rejects_bad_counts(tmp_path, cache):
    code, _, err = run_cli("calibrate", "--threads", "0")
    assert code == 2 and "--threads and --steps must be >= 1" in err
