"""Adaptation text through `datasets` (xlt.data.corpus): one global, seeded, budgeted order of
lines, rank shards of it, the spec section, and a trial that reads it as it reads files."""

import json

import pytest

from xlt.errors import XltError
from xlt.spec import TextCorpus, spec_from_dict

pytest.importorskip("datasets")


def _text_file(path, n=600):
    lines = [f"line {i} of the corpus with a few words" for i in range(n)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lines


def test_one_global_order_and_disjoint_rank_shards(tmp_path):
    from xlt.data.corpus import corpus_lines

    lines = _text_file(tmp_path / "a.txt")
    args = dict(data_files=str(tmp_path / "a.txt"), shuffle_buffer=64, seed=3, max_lines=400)
    whole = corpus_lines("text", **args)
    assert len(whole) == 400 and set(whole) <= set(lines)
    assert whole != lines[:400]  # the shuffle buffer mixed the stream ...
    assert corpus_lines("text", **args) == whole  # ... the same way for the same seed
    assert corpus_lines("text", **{**args, "seed": 4}) != whole
    for world in (2, 3):
        shards = [corpus_lines("text", rank=r, world=world, **args) for r in range(world)]
        seen = [ln for s in shards for ln in s]
        assert len(seen) == len(set(seen)) == 400  # disjoint, and together the whole budget
        # each rank holds every world-th line of the one order: the order does not depend on W
        for r, s in enumerate(shards):
            assert s == whole[r::world]
    with pytest.raises(ValueError, match="rank 2 is not in a world of 2"):
        corpus_lines("text", rank=2, world=2, **args)


def test_stream_order_budgets_and_builders(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from xlt import derived
    from xlt.data.corpus import corpus_lines

    lines = _text_file(tmp_path / "a.txt", 50)
    assert corpus_lines("text", data_files=str(tmp_path / "a.txt"), max_lines=1000) == lines  # no shuffle: file order
    by_tokens = corpus_lines("text", data_files=str(tmp_path / "a.txt"), max_tokens=100)
    assert sum(map(derived.text_tokens, by_tokens[:-1])) < 100 <= sum(map(derived.text_tokens, by_tokens))
    # rows holding paragraphs are split into their non-empty lines, as text files are
    rows = [{"body": "first line\n\nsecond line", "id": 1}, {"body": "third", "id": 2}]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    assert corpus_lines("json", data_files=str(tmp_path / "a.jsonl"), text_field="body", max_lines=10) == [
        "first line", "second line", "third"]
    pq.write_table(pa.table({"text": ["x y", "z"]}), tmp_path / "a.parquet")
    assert corpus_lines("parquet", data_files=str(tmp_path / "a.parquet"), max_lines=10) == ["x y", "z"]
    with pytest.raises(XltError, match="no column 'text' \\(has body, id\\); set text_field"):
        corpus_lines("json", data_files=str(tmp_path / "a.jsonl"), max_lines=10)
    with pytest.raises(XltError, match="text corpus text:train: cannot open"):
        corpus_lines("text", data_files=str(tmp_path / "missing.txt"), max_lines=10)


BASE = {"name": "s", "task": "adapt", "model": {"tiny": {}},
        "data": {"english": {"lang": "en", "synthetic": {}},
                 "eval": [{"name": "en", "lang": "en", "synthetic": {}}, {"name": "ru", "lang": "ru", "synthetic": {}}]}}


def _adapt(**adapt):
    return spec_from_dict({**BASE, "adapt": adapt}, "s.yaml").adapt


def test_spec_corpus_section():
    a = _adapt(source_text={"dataset": "text", "data_files": "https://data.statmt.org/cc-100/en.txt.xz",
                            "max_tokens": 1000},
               target_text={"dataset": "wikimedia/wikipedia", "config": "20231101.{lang}", "max_lines": 10,
                            "lang_codes": {"zh": "zh-Hans"}})
    assert isinstance(a.source_text, TextCorpus) and isinstance(a.target_patterns("ru"), TextCorpus)
    assert a.target_patterns("zh").resolved("zh")["config"] == "20231101.zh-Hans"
    assert a.target_patterns("ru").resolved("ru")["config"] == "20231101.ru"
    # files keep working beside it
    assert _adapt(source_text=["a.txt"], target_text={"ru": ["b.txt"]}).target_patterns("ru") == ("b.txt",)


@pytest.mark.parametrize("adapt, message", [
    ({"target_text": {"dataset": "cc100", "lang_codes": {}}},
     "s.yaml: adapt.target_text: give a budget: max_lines or max_tokens"),
    ({"source_text": {"dataset": "text", "max_lines": 5}},
     "s.yaml: adapt.source_text: the 'text' builder reads data_files: set data_files"),
    ({"target_text": {"dataset": "cc100", "max_line": 5}},
     "s.yaml: adapt.target_text.max_line: unknown key (did you mean 'max_lines'?)"),
    ({"target_text": {"dataset": "cc100", "max_lines": 0}}, "s.yaml: adapt.target_text.max_lines: must be >= 1"),
    ({"source_text": {"dataset": "cc100", "max_lines": 5, "shuffle_buffer": -1}},
     "s.yaml: adapt.source_text.shuffle_buffer: must be >= 0"),
])
def test_spec_corpus_errors_name_the_key(adapt, message):
    with pytest.raises(XltError) as e:
        _adapt(**adapt)
    assert str(e.value).startswith(message), str(e.value)


def tiny_study() -> dict:
    """test_adapt's tiny adaptation study, one thread (rows comparable bitwise), 20 held-out lines."""
    import yaml

    from tests.test_adapt import TINY_ADAPT

    tree = yaml.safe_load(TINY_ADAPT)
    return dict(tree, name="tiny-corpus", train={**tree["train"], "threads": 1},
                adapt={**tree["adapt"], "mlm_heldout_lines": 20})


def test_trial_reads_a_corpus_as_it_reads_the_same_files(tmp_path):
    """Steps 1 and 2 through the `text` builder give the rows the same text gives from files (same
    seed, one thread); the step-1 cache knows which text it read (a second entry, not a hit)."""
    import yaml

    from tests.helpers import run_cli
    from xlt import results
    from xlt.data.synthetic import make_text

    for lang, seed in (("en", 0), ("ru", 1)):
        (tmp_path / f"{lang}.txt").write_text("\n".join(make_text(lang, 300, seed)) + "\n", encoding="utf-8")
    tree = tiny_study()
    files = dict(tree, adapt={**tree["adapt"], "source_text": [str(tmp_path / "en.txt")],
                              "target_text": [str(tmp_path / "{lang}.txt")]})
    corpus = {"dataset": "text", "max_lines": 100_000, "shuffle_buffer": 0}
    streamed = dict(tree, adapt={**tree["adapt"], "source_text": {**corpus, "data_files": str(tmp_path / "en.txt")},
                                 "target_text": {**corpus, "data_files": str(tmp_path / "{lang}.txt")}})
    cache = tmp_path / "cache"
    tables = {}
    for name, study in (("files", files), ("corpus", streamed)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(study), encoding="utf-8")
        code, _, err = run_cli("trial", str(path), "--out", str(tmp_path / name), f"cache_dir={cache}")
        assert code == 0, err
        tables[name] = results.read_table(tmp_path / name)
    assert len(list((cache / "step1").iterdir())) == 2  # the corpus is part of step 1's key
    cols = ["stage", "step", "eval_set", "f1", "exact_match", "train_loss", "mlm_loss", "mlm_accuracy",
            "source_mlm_loss", "flops_train", "tokens_real"]
    a, b = (t.sort_values(["event", "stage", "eval_set"])[cols].reset_index(drop=True) for t in tables.values())
    assert len(a) > 5 and (a.stage == "step2").any()
    assert a.equals(b), (a.compare(b) if a.shape == b.shape else (a.shape, b.shape))


def test_gpu_studies_read_corpora_not_the_shared_ud_files_and_estimate_prices_them():
    from tests.helpers import ROOT, run_cli
    from xlt.spec import load_spec

    for path in sorted((ROOT / "studies").glob("*.yaml")):
        spec = load_spec(path)
        if spec.scale != "gpu" or spec.adapt is None:
            continue
        assert isinstance(spec.adapt.source_text, TextCorpus), path.name
        assert isinstance(spec.adapt.target_text, TextCorpus), path.name
        assert "/text/" not in path.read_text(encoding="utf-8"), path.name  # no ${XLT_DATA_DIR}/text/...
    code, out, err = run_cli("estimate", str(ROOT / "studies/minimodel_depth.yaml"))
    assert code == 0, err
    # the budget priced without reading the corpus, and the paper's cost beside the estimate's
    assert "step1 text (en) text https://data.statmt.org/cc-100/en.txt.xz: budget 5e+07 tokens" in out
    assert "cc-100/zh-Hans.txt.xz" in out and "52 passes" in out
    assert "MiniJoint k=4 step 2 vs BaseLarge: estimated" in out and "the paper reports 37.2%" in out
