import json
import re

import pytest

from xlt.data import synthetic
from xlt.data.synthetic import LANGS, make_squad, make_text
from xlt.errors import XltError

LATIN = re.compile(r"[A-Za-z]")
CYRILLIC = re.compile(r"[\u0400-\u04FF]")
CJK = re.compile(r"[\u4E00-\u9FFF]")


def qas(data):
    return [(p["context"], qa) for art in data["data"] for p in art["paragraphs"] for qa in p["qas"]]


def contexts(data):
    return [p["context"] for art in data["data"] for p in art["paragraphs"]]


def test_languages_and_templates_are_parallel():
    assert {"en", "ru", "zh", "de"} <= set(LANGS)
    synthetic._self_check()


@pytest.mark.parametrize("lang", LANGS)
def test_deterministic(lang):
    a = json.dumps(make_squad(lang, 60, seed=3, split="dev"), ensure_ascii=False)
    b = json.dumps(make_squad(lang, 60, seed=3, split="dev"), ensure_ascii=False)
    assert a == b
    assert make_text(lang, 50, seed=3) == make_text(lang, 50, seed=3)
    assert a != json.dumps(make_squad(lang, 60, seed=4, split="dev"), ensure_ascii=False)


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_shape_and_answer_offsets(lang, split):
    data = make_squad(lang, 200, seed=1, split=split)
    assert data["version"] == "synthetic-1"
    rows = qas(data)
    assert len(rows) == 200
    for context, qa in rows:
        assert qa["question"] and qa["id"].startswith("syn-1-")
        assert len(qa["answers"]) == 1
        ans = qa["answers"][0]
        s = ans["answer_start"]
        assert isinstance(s, int) and 0 <= s
        assert ans["text"] and ans["text"] == ans["text"].strip()
        assert context[s : s + len(ans["text"])] == ans["text"]
    for art in data["data"]:
        assert isinstance(art["title"], str) and len(art["paragraphs"]) == 1


def test_ids_parallel_across_languages():
    by_lang = {lang: make_squad(lang, 120, seed=7, split="test") for lang in LANGS}
    shapes = {lang: [(qa["id"], len(qa["answers"])) for _, qa in qas(d)] for lang, d in by_lang.items()}
    assert len({tuple(v) for v in shapes.values()}) == 1
    ids = [i for i, _ in shapes["en"]]
    assert len(set(ids)) == len(ids) == 120
    # same paragraph structure everywhere, and year answers are literally the same fact
    for d in by_lang.values():
        assert [len(p["qas"]) for a in d["data"] for p in a["paragraphs"]] == [
            len(p["qas"]) for a in by_lang["en"]["data"] for p in a["paragraphs"]
        ]
        for (_, en_qa), (_, qa) in zip(qas(by_lang["en"]), qas(d), strict=True):
            if en_qa["answers"][0]["text"].isdigit():
                assert qa["answers"][0]["text"] == en_qa["answers"][0]["text"]


def test_prefix_stable_and_exact_count():
    small = qas(make_squad("ru", 17, seed=2))
    big = qas(make_squad("ru", 40, seed=2))
    assert len(small) == 17 and len(big) == 40
    assert small == big[:17]


def test_splits_disjoint():
    ctx = {
        split: set(contexts(make_squad("en", 300, seed=0, split=split))) for split in ("train", "dev", "test")
    }
    assert not ctx["train"] & ctx["dev"]
    assert not ctx["train"] & ctx["test"]
    assert not ctx["dev"] & ctx["test"]
    # disjoint across seeds too (the split is a property of a paragraph's facts)
    assert not ctx["test"] & set(contexts(make_squad("en", 300, seed=5, split="train")))
    assert make_squad("en", 30, split="validation")["data"] == make_squad("en", 30, split="dev")["data"]


def test_zh_is_cjk_without_latin_letters():
    data = make_squad("zh", 150, seed=0)
    for context, qa in qas(data):
        assert CJK.search(context) and not LATIN.search(context) and " " not in context
        assert CJK.search(qa["question"]) and not LATIN.search(qa["question"])
    assert all(CJK.search(line) and not LATIN.search(line) for line in make_text("zh", 100))


def test_ru_is_cyrillic():
    data = make_squad("ru", 150, seed=0)
    for context, qa in qas(data):
        assert CYRILLIC.search(context) and not LATIN.search(context)
        assert CYRILLIC.search(qa["question"]) and not LATIN.search(qa["question"])
    assert all(CYRILLIC.search(line) and not LATIN.search(line) for line in make_text("ru", 100))


def test_en_contexts_modest_length():
    lengths = [len(c.split()) for c in contexts(make_squad("en", 400, seed=0))]
    assert 30 <= min(lengths) and max(lengths) <= 150
    assert 40 <= sum(lengths) / len(lengths) <= 100


@pytest.mark.parametrize("lang", LANGS)
def test_text_lines(lang):
    lines = make_text(lang, 300, seed=0)
    assert len(lines) == 300
    assert all(line and line == line.strip() and "\n" not in line for line in lines)
    other = make_text(lang, 300, seed=1)
    assert lines != other
    assert len(set(lines)) > 200


def test_text_is_parallel_across_languages():
    assert [len(s) > 0 for s in make_text("en", 40, seed=9)] == [
        len(s) > 0 for s in make_text("zh", 40, seed=9)
    ]
    en, ru = make_text("en", 40, seed=9), make_text("ru", 40, seed=9)
    years = [re.findall(r"\d{4}", s) for s in en]
    assert years == [re.findall(r"\d{4}", s) for s in ru]


@pytest.mark.parametrize(
    "call",
    [
        lambda: make_squad("xx", 10),
        lambda: make_squad("en", 0),
        lambda: make_squad("en", -1),
        lambda: make_squad("en", 10, split="holdout"),
        lambda: make_text("xx", 10),
        lambda: make_text("en", 0),
    ],
)
def test_errors(call):
    with pytest.raises(XltError) as err:
        call()
    assert "\n" not in str(err.value)
