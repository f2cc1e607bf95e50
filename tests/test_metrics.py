import json
import os
import random
import subprocess
import sys
import time
from functools import cache
from pathlib import Path

import pytest

from xlt import metrics
from xlt.errors import XltError
from xlt.metrics import answer_tokens, evaluate, exact_match, f1_score, normalize_answer

# ---------------------------------------------------------------- hand-written vectors


def test_guillemets_are_punctuation_in_xlt_but_not_in_squad_v1():
    assert exact_match("Война и мир", ["«Война и мир»"], "ru") == 1.0
    assert exact_match("Война и мир", ["«Война и мир»"], "ru", "squad_v1") == 0.0
    # Only "и" matches: the guillemets stay glued to their words.
    assert f1_score("Война и мир", ["«Война и мир»"], "ru", "squad_v1") == pytest.approx(1 / 3)


def test_chinese_character_f1():
    for mode in ("zh_char", "xlt", "mlqa"):
        assert f1_score("天主", ["天主教"], "zh", mode) == pytest.approx(0.8)
        assert exact_match("天主", ["天主教"], "zh", mode) == 0.0
    assert answer_tokens("天主教", "zh", "zh_char") == ["天", "主", "教"]


@pytest.mark.parametrize(
    ("lang", "gold", "prediction"),
    [
        ("en", "the Eiffel Tower", "Eiffel Tower"),
        ("en", "an apple", "a apple"),
        ("es", "los Países Bajos", "Países Bajos"),
        ("es", "unas casas", "casas"),
        ("de", "die Deutsche Bank", "Deutsche Bank"),
        ("de", "einem Haus", "Haus"),
        ("vi", "những con mèo", "con mèo"),
        ("ar", "الكتاب", "كتاب"),
    ],
)
def test_articles_per_language(lang, gold, prediction):
    assert exact_match(prediction, [gold], lang) == 1.0
    assert exact_match(prediction, [gold], lang, "mlqa") == 1.0


def test_no_articles_where_the_language_has_none():
    # Russian/Chinese/others keep every word, and English articles mean nothing in German.
    assert exact_match("Haus", ["the Haus"], "de") == 0.0
    assert exact_match("мир", ["a мир"], "ru") == 0.0
    assert normalize_answer("The Ring", "hi", "mlqa") == "the ring"
    assert normalize_answer("The Ring", "tr") == "the ring"
    # The MLQA Arabic rule strips ال anywhere, even mid-word; xlt keeps that on purpose.
    assert normalize_answer("مالك", "ar") == "م ك"


def test_cjk_ideographs_of_every_block_are_single_tokens():
    text = (
        "\u3400\u4e00\u9fa6\u9fff\uf900\U00020000\U0002a700\U0002b740\U0002b820\U0002ceb0\U00030000\U00031350"
    )
    assert answer_tokens(text, "zh") == list(text)
    assert answer_tokens("第〇號 abc々", "zh") == ["第", "〇", "號", "abc", "々"]
    assert answer_tokens("東京タワー", "ja") == ["東", "京", "タワー"]
    # The official scripts only split U+4E00..U+9FA5, so an extension-B character glues on.
    assert answer_tokens("\U00020000字", "zh", "mlqa") == ["\U00020000", "字"]
    assert answer_tokens("\U00020000a字", "zh", "mlqa") == ["\U00020000a", "字"]
    assert answer_tokens("\u9fa6字", "zh", "zh_char") == ["\u9fa6", "字"]


def test_unicode_punctuation_is_removed_in_xlt():
    assert normalize_answer("“Hello”, world!", "en") == "hello world"
    assert normalize_answer("北京，上海。", "zh") == "北 京 上 海"
    assert normalize_answer("¿Qué?", "es") == "qué"
    assert normalize_answer("\ufeffBOM\u200bhere", "en") == "bom here"
    assert normalize_answer("“Hello”", "en", "squad_v1") == "“hello”"


def test_empty_and_punctuation_only_answers():
    assert exact_match("", [""], "en") == 1.0
    assert f1_score("", [""], "en") == 1.0
    assert f1_score("", [""], "en", "squad_v1") == 0.0  # the official scripts' quirk, kept
    assert exact_match("the", ["a"], "en", "squad_v1") == 1.0
    assert f1_score("the", ["a"], "en", "squad_v1") == 0.0
    assert f1_score("the", ["a"], "en") == 1.0
    assert exact_match("!!", ["?"], "en") == 1.0
    assert exact_match("", ["Paris"], "en") == 0.0
    assert f1_score("", ["Paris"], "en") == 0.0
    assert f1_score("。", ["。"], "zh", "zh_char") == 0.0
    assert exact_match("。", ["。"], "zh", "zh_char") == 1.0


def test_f1_takes_the_best_gold():
    golds = ["Denver Broncos", "the Broncos", "Broncos win"]
    assert exact_match("Broncos", golds, "en") == 1.0
    assert f1_score("Denver", golds, "en") == pytest.approx(2 / 3)
    assert f1_score("a b c d", ["a b", "c d e"], "en") == pytest.approx(max(2 / 3, 4 / 7))


def test_zh_char_uses_the_longest_common_contiguous_run():
    # Order matters: "主天" shares two characters with "天主" but only a 1-long run.
    assert f1_score("主天", ["天主"], "zh", "zh_char") == pytest.approx(0.5)
    assert f1_score("主天", ["天主"], "zh", "xlt") == 1.0
    # Non-Chinese runs are word-tokenized the way nltk does it.
    assert answer_tokens("1998年(約10.5%)", "zh", "zh_char") == ["1998", "年", "(", "約", "10.5", "%", ")"]
    assert answer_tokens("約翰·史密斯 “U.S.”", "zh", "zh_char") == ["約", "翰", "史", "密", "斯", "u.s", "."]
    # CMRC's EM strips punctuation but does not collapse inner whitespace.
    assert exact_match("a  b", ["a b"], "zh", "zh_char") == 0.0
    assert exact_match(" 《天主》 ", ["天主"], "zh", "zh_char") == 1.0


def test_evaluate_counts_missing_predictions_as_zero_and_ignores_unknown_ids():
    gold = {"q1": ["Paris"], "q2": ["London"], "q3": ["Rome", "Roma"], "q4": ["Oslo"]}
    result = evaluate(gold, {"q1": "Paris", "q3": "the Roma", "q4": "Oslo city", "q9": "Berlin"}, "en")
    assert result == {
        "exact_match": 50.0,
        "f1": pytest.approx(100 * (1 + 0 + 1 + 2 / 3) / 4),
        "mode": "xlt",
        "n": 4,
    }
    assert evaluate(gold, {}, "en", "squad_v1") == {"exact_match": 0.0, "f1": 0.0, "mode": "squad_v1", "n": 4}


def test_language_tags_and_bad_modes():
    assert f1_score("天主", ["天主教"], "zh-TW", "zh_char") == pytest.approx(0.8)
    assert f1_score("天主", ["天主教"], "zh_Hans", "mlqa") == pytest.approx(0.8)
    with pytest.raises(XltError, match="unknown metric mode"):
        exact_match("a", ["a"], "en", "squad_v2")
    with pytest.raises(XltError, match="mlqa"):
        f1_score("a", ["a"], "ru", "mlqa")
    with pytest.raises(XltError, match="zh_char"):
        normalize_answer("a", "en", "zh_char")
    with pytest.raises(XltError, match="gold answer"):
        exact_match("a", [], "en")
    with pytest.raises(XltError, match="no gold questions"):
        evaluate({}, {}, "en")
    with pytest.raises(XltError, match="'q7' has no gold answer") as info:
        evaluate({"q7": []}, {}, "en")
    assert "\n" not in str(info.value)


def test_import_is_torch_free():
    code = (
        "import sys, xlt.metrics; print(sorted({'torch', 'numpy', 'transformers', 'ray'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------- real data, official numbers


def _data_dir() -> Path:
    root = os.environ.get("XLT_DATA_DIR")
    if not root:
        pytest.skip("XLT_DATA_DIR not set: real data tests need ../shared/data")
    return Path(root)


@cache
def load_questions(path: Path) -> list[tuple[str, str, list[str]]]:
    """(id, context, answer texts) for every question of a SQuAD-shaped file, in file order."""
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    return [
        (qa["id"], paragraph["context"], [a["text"] for a in qa["answers"]])
        for article in data
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    ]


_NOISE = '".,«»()。，、？!”“¿؟।《》…-%'  # one character each
_PREFIXES = ["the ", "a ", "The ", "la ", "el ", "los ", "der ", "die ", "ein ", "ال", "của ", "những "]


def perturbed_predictions(questions: list[tuple[str, str, list[str]]], seed: int) -> dict[str, str]:
    """Predictions a QA model could make, drawn deterministically from the golds and contexts."""
    rng = random.Random(seed)
    predictions = {}
    for qid, context, answers in questions:
        gold = rng.choice(answers)
        kind = rng.randrange(12)
        start = max(context.find(gold), 0)
        if kind == 0:
            continue  # unanswered
        elif kind == 1:
            prediction = gold
        elif kind == 2:
            prediction = answers[-1]
        elif kind == 3:  # one word too few, or one character for unspaced scripts
            words = gold.split()
            prediction = " ".join(words[:-1]) if len(words) > 1 else gold[rng.randrange(2) : len(gold) - 1]
        elif kind == 4:
            prediction = rng.choice(_NOISE) + gold + rng.choice(_NOISE)
        elif kind == 5:  # the gold span widened inside its context
            prediction = context[max(start - rng.randrange(12), 0) : start + len(gold) + rng.randrange(12)]
        elif kind == 6:  # a span from elsewhere
            begin = rng.randrange(len(context))
            prediction = context[begin : begin + rng.randrange(1, 40)]
        elif kind == 7:
            prediction = "  " + gold.upper() + " \t"
        elif kind == 8:
            prediction = rng.choice(_PREFIXES) + gold
        elif kind == 9:
            prediction = rng.choice(["", " ", "…", "。", "the", "--"])
        elif kind == 10:  # the gold span shifted
            shift = rng.randrange(1, 6)
            prediction = context[start + shift : start + shift + len(gold)]
        else:
            prediction = gold.replace(" ", "  ") + rng.choice(["", ".", " ."])
        predictions[qid] = prediction
    return predictions


# Predictions from perturbed_predictions(questions, seed=13) above, scored (Python 3.11) by the
# official scripts' logic, run outside the repo: SQuAD evaluate-v1.1.py, MLQA mlqa_evaluation_v1.py
# and CMRC 2018 cmrc2018_evaluate.py (ported to Python 3; nltk 3.10.4 word_tokenize with
# preserve_line=True, as no punkt model can be loaded offline). xlt has no official script:
# its rows are this implementation's own figures, kept to catch regressions.
GOLDEN = {
    ("qa/squad/squad-v1.1-dev.reconstructed.json", "en", "squad_v1"): (37.540208136234625, 56.7937441607746),
    ("qa/xquad/xquad.en.json", "en", "squad_v1"): (35.63025210084034, 55.693098552210465),
    ("qa/xquad/xquad.es.json", "es", "squad_v1"): (35.21008403361345, 57.57100757736116),
    ("qa/xquad/xquad.de.json", "de", "squad_v1"): (34.87394957983193, 54.89900973081778),
    ("qa/xquad/xquad.ar.json", "ar", "squad_v1"): (35.12605042016807, 55.48733212506975),
    ("qa/xquad/xquad.hi.json", "hi", "squad_v1"): (35.378151260504204, 56.09663759863014),
    ("qa/xquad/xquad.vi.json", "vi", "squad_v1"): (35.54621848739496, 60.363752694852295),
    ("qa/xquad/xquad.zh.json", "zh", "squad_v1"): (34.705882352941174, 43.711356337406805),
    ("qa/xquad/xquad.ru.json", "ru", "squad_v1"): (35.378151260504204, 57.05420497890548),
    ("qa/xquad/xquad.en.json", "en", "mlqa"): (43.61344537815126, 61.114447964044246),
    ("qa/xquad/xquad.es.json", "es", "mlqa"): (44.20168067226891, 62.61801345256953),
    ("qa/xquad/xquad.de.json", "de", "mlqa"): (43.529411764705884, 60.74933037122399),
    ("qa/xquad/xquad.ar.json", "ar", "mlqa"): (42.016806722689076, 62.09340209124495),
    ("qa/xquad/xquad.hi.json", "hi", "mlqa"): (40.924369747899156, 61.032221846895965),
    ("qa/xquad/xquad.vi.json", "vi", "mlqa"): (43.27731092436975, 64.28167920262186),
    ("qa/xquad/xquad.zh.json", "zh", "mlqa"): (40.50420168067227, 62.52652891368466),
    ("qa/cmrc2018/cmrc2018_dev.json", "zh", "zh_char"): (29.45013979496738, 62.91964495562217),
    ("qa/drcd/DRCD_dev.json", "zh", "zh_char"): (29.82406356413167, 59.90256830429396),
    ("qa/xquad/xquad.zh.json", "zh", "zh_char"): (29.327731092436974, 60.3848212769526),
    ("qa/squad/squad-v1.1-dev.reconstructed.json", "en", "xlt"): (44.654683065279094, 61.70759238025049),
    ("qa/xquad/xquad.en.json", "en", "xlt"): (43.61344537815126, 61.114447964044246),
    ("qa/xquad/xquad.es.json", "es", "xlt"): (44.20168067226891, 62.61801345256953),
    ("qa/xquad/xquad.de.json", "de", "xlt"): (43.529411764705884, 60.74933037122399),
    ("qa/xquad/xquad.ar.json", "ar", "xlt"): (42.016806722689076, 62.09340209124495),
    ("qa/xquad/xquad.hi.json", "hi", "xlt"): (40.924369747899156, 61.088244255859536),
    ("qa/xquad/xquad.vi.json", "vi", "xlt"): (43.27731092436975, 64.28167920262186),
    ("qa/xquad/xquad.zh.json", "zh", "xlt"): (40.50420168067227, 62.52652891368466),
    ("qa/xquad/xquad.ru.json", "ru", "xlt"): (40.924369747899156, 61.73470046836103),
    ("qa/xquad/xquad.el.json", "el", "xlt"): (41.260504201680675, 61.66828354887734),
    ("qa/xquad/xquad.ro.json", "ro", "xlt"): (41.1764705882353, 61.33894973099917),
    ("qa/xquad/xquad.th.json", "th", "xlt"): (40.7563025210084, 55.10807959547452),
    ("qa/xquad/xquad.tr.json", "tr", "xlt"): (38.48739495798319, 59.799973474552075),
    ("qa/cmrc2018/cmrc2018_dev.json", "zh", "xlt"): (42.218080149114634, 64.618287293005),
    ("qa/drcd/DRCD_dev.json", "zh", "xlt"): (41.77071509648127, 62.133636003874905),
}


@pytest.mark.parametrize(("path", "lang", "mode"), list(GOLDEN))
def test_agrees_with_official_scripts_on_real_data(path, lang, mode):
    questions = load_questions(_data_dir() / path)
    gold = {qid: answers for qid, _, answers in questions}
    result = evaluate(gold, perturbed_predictions(questions, seed=13), lang, mode)
    em, f1 = GOLDEN[path, lang, mode]
    assert result["n"] == len(questions)
    assert result["exact_match"] == pytest.approx(em, abs=1e-9)
    assert result["f1"] == pytest.approx(f1, abs=1e-9)


@pytest.mark.parametrize(
    ("path", "lang"),
    [
        ("qa/squad/squad-v1.1-dev.reconstructed.json", "en"),
        ("qa/drcd/DRCD_dev.json", "zh"),
        ("qa/xquad/xquad.ar.json", "ar"),
        ("qa/xquad/xquad.th.json", "th"),
    ],
)
def test_gold_predictions_score_100_in_xlt(path, lang):
    # Not trivial: golds that normalize to nothing must still get F1 100.
    questions = load_questions(_data_dir() / path)
    gold = {qid: answers for qid, _, answers in questions}
    result = evaluate(gold, {qid: answers[-1] for qid, answers in gold.items()}, lang)
    assert (result["exact_match"], result["f1"]) == (100.0, 100.0)


def test_ten_thousand_questions_well_under_a_second():
    questions = load_questions(_data_dir() / "qa/squad/squad-v1.1-dev.reconstructed.json")
    gold = {qid: answers for qid, _, answers in questions}
    predictions = perturbed_predictions(questions, seed=1)
    metrics.normalize_answer("warm up", "en")  # builds the Unicode punctuation table once
    for mode in ("xlt", "squad_v1"):
        began = time.perf_counter()
        evaluate(gold, predictions, "en", mode)
        assert time.perf_counter() - began < 1.0
