"""The tokenized-features cache: exact round trips, hits across trials, keys, damaged entries."""

import dataclasses
import json

import pytest

from tests.test_features import make_examples
from xlt.data import features as F
from xlt.data import squad
from xlt.data.synthetic import make_squad
from xlt.tokenization import load_tokenizer, train_tokenizer
from xlt.train import features_cache as FC
from xlt.train.artifacts import ArtifactCache

WINDOW = dict(max_seq_length=64, doc_stride=16, max_query_length=12)


def synthetic(lang: str, n: int = 60, split: str = "train"):
    return squad.parse_squad(make_squad(lang, n, 0, split), f"syn-{lang}", lang)[0]


@pytest.fixture(scope="module")
def examples():
    # BOMs and edge whitespace (test_features), Cyrillic and CJK offsets (synthetic)
    return make_examples(12) + synthetic("ru") + synthetic("zh")


@pytest.fixture(scope="module")
def tokenizer(examples):
    return train_tokenizer(list({e.context for e in examples}) + [e.question for e in examples], 300)


@pytest.fixture
def counted(monkeypatch):
    """How many times the windows are really built."""
    calls = []
    build = F.build_features

    def counting(*args, **kwargs):
        calls.append(kwargs.get("train"))
        return build(*args, **kwargs)

    monkeypatch.setattr(F, "build_features", counting)
    return calls


def assert_same(got: F.Features, want: F.Features) -> None:
    for f in dataclasses.fields(F.Features):
        a, b = getattr(got, f.name), getattr(want, f.name)
        assert a == b, f.name
        # the same Python types too, not numpy scalars: collate, decode and json see no difference
        flat = [x for row in a for x in row] if a and isinstance(a[0], list) else (a or [])
        assert all(x is None or type(x) in (int, tuple) for x in flat), f.name
    assert got.lengths == want.lengths


@pytest.mark.parametrize("train", [True, False])
def test_round_trip_is_exact(tmp_path, tokenizer, examples, train):
    feats = F.build_features(tokenizer, examples, train=train, **WINDOW)
    assert any(o is None for row in feats.offsets for o in row) and any(feats.start_positions) == train
    F.save_features(feats, tmp_path / "f.safetensors")
    assert_same(F.load_features(tmp_path / "f.safetensors"), feats)


def test_round_trip_without_token_types_and_empty(tmp_path, tokenizer, examples):
    feats = F.build_features(tokenizer, examples[:5], train=True, **WINDOW)
    feats.token_type_ids = None  # tokenizers that return none (RoBERTa-style)
    F.save_features(feats, tmp_path / "a.safetensors")
    assert_same(F.load_features(tmp_path / "a.safetensors"), feats)
    empty = F.Features([], [], [], [], [], [])
    F.save_features(empty, tmp_path / "b.safetensors")
    assert_same(F.load_features(tmp_path / "b.safetensors"), empty)


def test_load_refuses_files_that_are_not_consistent_features(tmp_path, tokenizer, examples):
    import numpy as np
    from safetensors.numpy import load_file, save_file

    F.save_features(F.build_features(tokenizer, examples[:5], train=True, **WINDOW), tmp_path / "f.safetensors")
    good = load_file(str(tmp_path / "f.safetensors"))
    bad = [{k: v for k, v in good.items() if k != "offsets"},
           {**good, "offsets": good["offsets"][:-1]},
           {**good, "lengths": good["lengths"] + 1},
           {**good, "start_positions": good["start_positions"][:-1]},
           {**good, "lengths": np.concatenate([good["lengths"][:-2], [-1, good["lengths"][-2] + good["lengths"][-1] + 1]])}]
    for i, arrays in enumerate(bad):
        save_file(arrays, str(tmp_path / f"bad{i}.safetensors"))
        with pytest.raises(ValueError):
            F.load_features(tmp_path / f"bad{i}.safetensors")
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "f.safetensors").read_bytes()[:-10])
    with pytest.raises(ValueError):
        F.load_features(tmp_path / "cut.safetensors")


def test_round_trip_real_xquad_with_minilm(tmp_path, data_dir, minilm_path):
    tok = load_tokenizer(minilm_path)
    en, _ = squad.read_squad_file(data_dir / "qa/xquad/xquad.en.json", "en")
    zh, _ = squad.read_squad_file(data_dir / "qa/xquad/xquad.zh.json", "zh")
    for ex, train in ((en, True), (zh[:300], False)):
        feats = F.build_features(tok, ex, train=train, max_seq_length=384, doc_stride=128)
        cache = ArtifactCache(tmp_path)
        FC.cached_features(cache, tok, ex, train=train, max_seq_length=384, doc_stride=128, max_query_length=64)
        hit = FC.cached_features(cache, tok, ex, train=train, max_seq_length=384, doc_stride=128, max_query_length=64)
        assert_same(hit, feats)


def test_second_build_hits_across_tokenizer_objects(tmp_path, tokenizer, examples, counted):
    cache = ArtifactCache(tmp_path)
    first = FC.cached_features(cache, tokenizer, examples, train=True, **WINDOW)
    tokenizer.save_pretrained(tmp_path / "tok")
    again = load_tokenizer(str(tmp_path / "tok"))  # another object with the same content
    second = FC.cached_features(cache, again, examples, train=True, **WINDOW)
    assert counted == [True]
    assert_same(second, first)
    assert len(list((tmp_path / "features").iterdir())) == 1


def test_no_cache_builds_every_time(tokenizer, examples, counted):
    for _ in range(2):
        FC.cached_features(None, tokenizer, examples[:5], train=False, **WINDOW)
    assert counted == [False, False]


def test_key_follows_everything_the_windows_depend_on(tokenizer, examples):
    tid = FC.tokenizer_fingerprint(tokenizer)
    key = FC.features_key(tid, examples, train=True, **WINDOW)
    assert FC.features_key(tid, list(examples), train=True, **WINDOW) == key
    # a call leaves truncation/stride settings on the backend tokenizer: not part of who it is
    F.build_features(tokenizer, examples[:3], train=True, max_seq_length=48, doc_stride=8)
    assert FC.tokenizer_fingerprint(tokenizer) == tid
    other_tok = train_tokenizer([e.context for e in examples], 250)
    moved = dataclasses.replace(examples[3], answers=((examples[3].answers[0][0], examples[3].answers[0][1] + 1),))
    variants = [
        FC.features_key(FC.tokenizer_fingerprint(other_tok), examples, train=True, **WINDOW),
        FC.features_key(tid, examples, train=False, **WINDOW),
        FC.features_key(tid, examples, train=True, **{**WINDOW, "max_seq_length": 96}),
        FC.features_key(tid, examples, train=True, **{**WINDOW, "doc_stride": 24}),
        FC.features_key(tid, examples, train=True, **{**WINDOW, "max_query_length": 20}),
        FC.features_key(tid, examples[:-1], train=True, **WINDOW),
        FC.features_key(tid, examples[1:] + examples[:1], train=True, **WINDOW),
        FC.features_key(tid, examples[:3] + [moved] + examples[4:], train=True, **WINDOW),
    ]
    assert len({key, *variants}) == len(variants) + 1
    tokenizer.padding_side = "left"  # questions go second: other windows
    try:
        assert FC.tokenizer_fingerprint(tokenizer) != tid
    finally:
        tokenizer.padding_side = "right"


def _entry(tmp_path):
    (entry,) = (tmp_path / "features").iterdir()
    return entry


def test_a_torn_temporary_directory_is_ignored(tmp_path, tokenizer, examples, counted):
    """A writer killed mid-way leaves `.<key>.*` without meta.json under the final name's parent."""
    cache = ArtifactCache(tmp_path)
    key = FC.features_key(FC.tokenizer_fingerprint(tokenizer), examples, train=True, **WINDOW)
    torn = tmp_path / "features" / f".{key}.abc123"
    torn.mkdir(parents=True)
    (torn / FC.FILE).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{\"half")
    feats = FC.cached_features(cache, tokenizer, examples, train=True, **WINDOW)
    assert counted == [True]
    assert_same(feats, F.build_features(tokenizer, examples, train=True, **WINDOW))
    assert (tmp_path / "features" / key / "meta.json").exists()
    assert torn.exists()  # a recent one may belong to a writer still at work: kept


def test_old_temporary_directories_are_swept_recent_ones_kept(tmp_path, tokenizer, examples, counted):
    import os
    import time

    from xlt.train.artifacts import STALE_SECONDS

    (tmp_path / "features").mkdir()
    old, recent = tmp_path / "features" / ".k1.dead", tmp_path / "features" / ".k2.busy"
    for d in (old, recent):
        d.mkdir()
        (d / "x").write_text("partial")
    then = time.time() - STALE_SECONDS - 60
    os.utime(old, (then, then))
    FC.cached_features(ArtifactCache(tmp_path), tokenizer, examples, train=True, **WINDOW)
    assert not old.exists() and recent.exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "no_meta", "meta_disagrees", "missing_file"])
def test_a_damaged_entry_is_rebuilt_not_used(tmp_path, tokenizer, examples, counted, damage, capsys):
    cache = ArtifactCache(tmp_path)
    want = FC.cached_features(cache, tokenizer, examples, train=True, **WINDOW)
    entry = _entry(tmp_path)
    data = entry / FC.FILE
    if damage == "truncated":
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    elif damage == "garbage":
        blob = bytearray(data.read_bytes())
        blob[-len(blob) // 3] ^= 0x01  # a flipped bit inside an array: the checksum catches it
        data.write_bytes(bytes(blob))
    elif damage == "no_meta":
        (entry / "meta.json").unlink()
    elif damage == "meta_disagrees":
        meta = json.loads((entry / "meta.json").read_text())
        (entry / "meta.json").write_text(json.dumps({**meta, "windows": meta["windows"] + 1}))
    else:
        data.unlink()
    got = FC.cached_features(cache, tokenizer, examples, train=True, **WINDOW)
    assert_same(got, want)
    assert counted == [True, True]
    if damage != "no_meta":
        assert "damaged" in capsys.readouterr().err
    # the rebuilt entry replaced the damaged one and serves the next trial
    FC.cached_features(cache, tokenizer, examples, train=True, **WINDOW)
    assert counted == [True, True]
    assert [p.name for p in (tmp_path / "features").iterdir()] == [entry.name]


def test_an_unwritable_cache_costs_only_the_reuse(tmp_path, tokenizer, examples, capsys):
    (tmp_path / "features").write_text("a file where the cache's directory should be")
    feats = FC.cached_features(ArtifactCache(tmp_path), tokenizer, examples[:5], train=True, **WINDOW)
    assert len(feats) and "not stored" in capsys.readouterr().err


TINY = {
    "name": "cache-qa",
    "model": {"tiny": {"layers": 1, "hidden": 32, "heads": 2, "intermediate": 64, "max_positions": 128}},
    "data": {"english": {"lang": "en", "synthetic": {"n": 40}},
             "eval": [{"name": "en-dev", "lang": "en", "synthetic": {"n": 12, "split": "dev"}},
                      {"name": "ru-dev", "lang": "ru", "synthetic": {"n": 12, "split": "dev"}}]},
    "train": {"max_steps": 2, "eval_every": 2, "batch_size": 8, "max_seq_length": 96, "doc_stride": 32,
              "save_model": False},
}


def test_a_second_trial_with_the_same_data_hits_the_cache(tmp_path, counted):
    from xlt.spec import spec_from_dict, trial_spec
    from xlt.train.trial import run_trial_local

    # a tiny model trains its tokenizer per trial, and tokenizer training is not deterministic:
    # a saved tokenizer stands for a pretrained one here
    ex = synthetic("en", 40) + synthetic("ru", 12, "dev")
    train_tokenizer([e.context for e in ex] + [e.question for e in ex], 300).save_pretrained(tmp_path / "tok")
    spec = spec_from_dict({**TINY, "model": {**TINY["model"], "tokenizer": str(tmp_path / "tok")}})
    run_trial_local(trial_spec(spec, {"train.lr": 1e-3}), tmp_path / "run", {"train.lr": 1e-3})
    assert sorted(counted) == [False, False, True]  # the training set and both eval sets
    assert len(list((tmp_path / "run/artifacts/features").iterdir())) == 3
    run_trial_local(trial_spec(spec, {"train.lr": 3e-3, "train.seed": 1}), tmp_path / "run", {"train.lr": 3e-3})
    assert sorted(counted) == [False, False, True]  # nothing rebuilt (other windows: other keys, tested above)


def test_runs_and_trials_default_to_their_artifacts_directory(tmp_path):
    from xlt.spec import spec_from_dict
    from xlt.study.driver import StudyContext, trial_spec_for
    from xlt.train.trial import artifact_cache

    spec = spec_from_dict(TINY)
    assert spec.cache_dir is None and artifact_cache(spec) is None  # the library caches nothing unasked
    ctx = StudyContext(spec=spec.model_dump(mode="json"), run_dir=str(tmp_path), run_id="r")
    t = trial_spec_for(ctx, {"train.lr": 1e-4})
    assert artifact_cache(t).root == tmp_path / "artifacts"
    ctx = StudyContext(spec={**spec.model_dump(mode="json"), "cache_dir": "/elsewhere"}, run_dir=str(tmp_path),
                       run_id="r")
    assert trial_spec_for(ctx, {}).cache_dir == "/elsewhere"  # a study's own choice stands
    a = spec.model_dump(mode="json")
    assert spec_from_dict({**a, "cache_dir": "/x"}).hash() == spec.hash()  # where it ran is not what it is


def test_the_benchmark_times_its_own_feature_building():
    """bench qa_train's xlt contender must pay for tokenization like the HF contenders do."""
    from xlt.bench.common import BenchConfig
    from xlt.bench.qa_data import QASetup
    from xlt.bench.qa_train import spec_for
    from xlt.train.trial import artifact_cache

    s = QASetup(BenchConfig(), None, None, [], [], "en", "")
    assert artifact_cache(spec_for(s, 0)) is None
