import json

import pytest

from xlt.data.squad import (
    Example,
    leak_filter,
    locate_answer,
    parse_squad,
    read_squad_file,
    select,
    split_by_article,
    subsample,
)
from xlt.errors import XltError


def tree(context, answers, qid="q1"):
    return {"data": [{"title": "T", "paragraphs": [{"context": context, "qas": [
        {"id": qid, "question": "?", "answers": [{"text": t, "answer_start": s} for t, s in answers]}]}]}]}


def test_locate_keeps_raw_offsets_and_repairs_shifts():
    ctx = "\ufeff  Moscow is big. Moscow is old."
    assert locate_answer(ctx, "Moscow", 3) == (3, False)
    assert locate_answer(ctx, "Moscow", 5) == (3, True)  # shifted by 2: repaired to the nearest occurrence
    assert locate_answer(ctx, "Moscow", 17) == (18, True)
    assert locate_answer(ctx, "Paris", 3) == (None, False)
    assert locate_answer(ctx, "Moscow", -1) == (None, False)  # CMRC's -1: not repaired, dropped


def test_parse_reports_repairs_and_drops():
    t = tree("abc def", [("def", 4), ("de", 5), ("zzz", 0)])
    t["data"][0]["paragraphs"][0]["qas"].append({"id": "q2", "question": "?", "answers": [{"text": "x", "answer_start": 99}]})
    examples, rep = parse_squad(t, "f.json", "en")
    assert [e.id for e in examples] == ["q1"]
    assert examples[0].answers == (("def", 4), ("de", 4))
    assert (rep.questions, rep.answers, rep.repaired, rep.dropped_answers, rep.dropped_questions) == (2, 4, 1, 2, 1)
    assert "answers[2]: answer 'zzz' not found at 0" in rep.first_problem


@pytest.mark.parametrize("bad, message", [
    ([], "not SQuAD-shaped"),
    ({"data": [{"title": "x"}]}, "data[0]: missing key 'paragraphs'"),
    ({"data": [{"paragraphs": [{"context": 3, "qas": []}]}]}, "data[0].paragraphs[0].context: expected str, got int"),
    ({"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "1", "question": "q", "answers": [{"text": "c"}]}]}]}]},
     "data[0].paragraphs[0].qas[0].answers[0]: missing key 'answer_start'"),
])
def test_malformed_structure_names_the_place(bad, message):
    with pytest.raises(XltError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_squad(bad, "f.json", "en")


def test_file_errors(tmp_path):
    (tmp_path / "bin.json").write_bytes(b'{"data": "\xff"}')
    (tmp_path / "broken.json").write_text('{"data": [', encoding="utf-8")
    with pytest.raises(XltError, match="not UTF-8"):
        read_squad_file(tmp_path / "bin.json", "en")
    with pytest.raises(XltError, match="invalid JSON at line 1"):
        read_squad_file(tmp_path / "broken.json", "en")
    with pytest.raises(XltError, match="no such file"):
        read_squad_file(tmp_path / "none.json", "en")


def test_subsample_is_nested_and_deterministic():
    t = {"data": [{"paragraphs": [{"context": "a b", "qas": [
        {"id": f"q{i}", "question": "?", "answers": [{"text": "a", "answer_start": 0}]} for i in range(500)]}]}]}
    ex, _ = parse_squad(t, "f", "en")
    small, big = subsample(ex, count=50, seed=1), subsample(ex, count=200, seed=1)
    assert {e.id for e in small} <= {e.id for e in big}
    assert [e.id for e in subsample(ex, count=50, seed=1)] == [e.id for e in small]
    assert {e.id for e in subsample(ex, count=50, seed=2)} != {e.id for e in small}
    assert len(subsample(ex, fraction=0.1, seed=0)) == 50
    with pytest.raises(XltError, match="only 500 are available"):
        subsample(ex, count=501)


def test_real_data_traps(data_dir):
    """XQuAD: BOMs and edge whitespace survive; CMRC: -1 offsets dropped and counted;
    SQuAD dev minus XQuAD paragraphs leaves 9380 questions (data/README.md)."""
    ru, rep = read_squad_file(data_dir / "qa/xquad/xquad.ru.json", "ru")
    assert len(ru) == 1190 and rep.dropped_answers == 0
    assert any(e.context.startswith("\ufeff") for e in ru)
    assert all(e.context[s:s + len(t)] == t for e in ru for t, s in e.answers)
    cmrc, rep = read_squad_file(data_dir / "qa/cmrc2018/cmrc2018_dev.json", "zh")
    assert rep.dropped_answers >= 193 and rep.dropped_questions == 0 and len(cmrc) == 3219
    assert rep.repaired >= 1
    squad, _ = read_squad_file(data_dir / "qa/squad/squad-v1.1-dev.reconstructed.json", "en")
    en, _ = read_squad_file(data_dir / "qa/xquad/xquad.en.json", "en")
    kept, dropped = leak_filter(squad, [en, ru])
    assert (len(kept), dropped) == (9380, 1190)


def test_squad_json_roundtrip(tmp_path):
    from xlt.data.squad import to_squad

    ex, _ = parse_squad(tree("\ufeff x y", [("y", 4)]), "f", "en")
    (tmp_path / "d.json").write_text(json.dumps(to_squad(ex)), encoding="utf-8")
    again, _ = read_squad_file(tmp_path / "d.json", "en")
    assert again == ex


def _articles(n_articles, per_article):
    return [Example(f"a{a}q{q}", f"article {a}", f"context {a}", "?", (("c", 0),), "en")
            for a in range(n_articles) for q in range(per_article)]


def test_split_by_article_parts_are_disjoint_complete_and_seeded():
    ex = _articles(50, 4)
    train = split_by_article(ex, fraction=0.8, seed=3, part="train")
    held = split_by_article(ex, fraction=0.8, seed=3, part="held_out")
    titles = lambda part: {e.title for e in part}  # noqa: E731
    assert titles(train).isdisjoint(titles(held)) and len(train) + len(held) == len(ex)
    assert len(titles(train)) == 40 and len(held) == 40  # by articles, every question of an article together
    assert split_by_article(ex, fraction=0.8, seed=3, part="train") == train  # the same on every call
    assert titles(split_by_article(ex, fraction=0.8, seed=4, part="train")) != titles(train)
    assert [e.id for e in train] == [e.id for e in ex if e in set(train)]  # file order kept
    with pytest.raises(XltError, match="at least 2 articles"):
        split_by_article(_articles(1, 5), fraction=0.5, seed=0, part="train")


def test_max_questions_is_a_nested_sample_across_articles():
    ex = _articles(100, 20)  # a file's first 100 questions would be 5 articles
    small = select(ex, max_questions=100, seed=0)
    large = select(ex, max_questions=500, seed=0)
    assert len(small) == 100 and len({e.title for e in small}) > 50
    assert set(small) <= set(large)  # nested for one seed
    assert select(ex, max_questions=100, seed=1) != small
    assert select(ex, max_questions=5000, seed=0) == ex  # more than there are: all of them
    part = select(ex, max_questions=100, seed=0, split=(0.5, 7, "held_out"))
    assert {e.title for e in part} <= {e.title for e in split_by_article(ex, fraction=0.5, seed=7, part="held_out")}


def test_drcd_split_sizes(data_dir):
    ex, _ = read_squad_file(data_dir / "qa/drcd/DRCD_dev.json", "zh")
    train = split_by_article(ex, fraction=0.79, seed=0, part="train")
    held = split_by_article(ex, fraction=0.79, seed=0, part="held_out")
    assert len(train) + len(held) == 3524 and 650 <= len(held) <= 850
