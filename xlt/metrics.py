"""Exact match and F1 for extractive QA, language-aware.

``xlt`` is the project's own normalizer. The other modes reproduce an official script exactly,
so that numbers can be compared with published ones:

* ``squad_v1``: SQuAD v1.1 ``evaluate-v1.1.py`` (ASCII punctuation, English articles).
* ``mlqa``: MLQA ``mlqa_evaluation_v1.py``, for its languages only.
* ``zh_char``: CMRC 2018 ``cmrc2018_evaluate.py`` (DRCD ships no script and is commonly scored
  with this one): Chinese characters as segments, the script's own punctuation list, and F1
  from the longest common *contiguous* run of segments.

``normalize_answer`` gives the string compared for EM, ``answer_tokens`` the units F1 counts.
Standard library only: this module runs where torch is not installed.
"""

from __future__ import annotations

import re
import string
import sys
import unicodedata
from functools import cache, lru_cache

from xlt.errors import XltError

MODES = ("xlt", "squad_v1", "mlqa", "zh_char")
MLQA_LANGS = ("en", "es", "de", "ar", "hi", "vi", "zh")

# The MLQA script's article patterns. It writes Arabic as '\sال^|ال'; the first branch can
# never match (^ after consumed text), so it strips every ال, even inside words.
_ARTICLES = {
    "en": re.compile(r"\b(a|an|the)\b"),
    "es": re.compile(r"\b(un|una|unos|unas|el|la|los|las)\b"),
    "de": re.compile(r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b"),
    "vi": re.compile(r"\b(của|là|cái|chiếc|những)\b"),
    "ar": re.compile("ال"),
}
_ASCII_PUNCT = str.maketrans("", "", string.punctuation)

# Ideographs of every CJK block (planes 2 and 3 hold only ideographs: extensions B-I and the
# compatibility supplement), radicals, and the ideograph-like marks 々〆〇, the Hangzhou
# numerals and 〻. Kana and Hangul are not ideographs and stay whitespace-split.
_CJK = re.compile(
    "[\u2e80-\u2fdf\u3005-\u3007\u3021-\u3029\u3038-\u303b\u3400-\u4dbf\u4e00-\u9fff"
    "\uf900-\ufaff\U00020000-\U0003ffff]"
)
# The official scripts only know the original URO block.
_CJK_LEGACY = re.compile("[\u4e00-\u9fa5]")
_CMRC_SEGMENTS = re.compile("([\u4e00-\u9fa5])|([^\u4e00-\u9fa5]+)")

# CMRC 2018's list. Its '……' is two characters and so never matches one; '…' survives.
_CMRC_PUNCT = str.maketrans("", "", "-:_*^/\\~`+=，。：？！“”；’《》·、「」（）－～『』")


@cache
def _mlqa_punct() -> dict[int, None]:
    # Built on first use: scanning all of Unicode takes a fraction of a second.
    punct = {c for c in range(sys.maxunicode) if unicodedata.category(chr(c)).startswith("P")}
    return dict.fromkeys(punct | {ord(c) for c in string.punctuation})


@cache
def _xlt_punct() -> dict[int, str | None]:
    # Invisible characters found in real answers (a BOM in SQuAD, zero-width spaces in
    # XQuAD-es) must not make two identical-looking answers differ.
    return {**_mlqa_punct(), 0xFEFF: " ", 0x200B: " ", 0x00AD: None}


# CMRC 2018 hands each non-Chinese run to nltk.word_tokenize. These are nltk's Treebank
# rules (as of nltk 3.10), without those for characters _CMRC_PUNCT already removed,
# so the mode needs no nltk. Punkt sentence splitting is not reproduced: on lower-cased
# answer-length text it almost never splits.
_TREEBANK = [
    (re.compile(p), r)
    for p, r in (
        ("([«‘„])", r" \1 "),
        (r'^"', " `` "),
        (r"([ (\[{<])(\"|'')", r"\1 `` "),
        (r"(?i)(?<!\w)(')(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)", r"\1 "),
        (r"([^.])(\.)([\])}>\"'» ]*)\s*$", r"\1 \2 \3 "),
        (r",([^\d])", r" , \1"),
        (r",$", " , "),
        (r"\.{2,}", r" \g<0> "),
        ("[;@#$%&\u2012-\u2015?!]", r" \g<0> "),
        (r"([^'])' ", r"\1 ' "),
        (r"[\][(){}<>]", r" \g<0> "),
        (r"^|$", " "),  # the rules below need a space at both ends
        ("»", " » "),
        ("''", " '' "),
        ('"', " '' "),
        (r"\s+", " "),
        (r"([^' ])('[sS]|'[mM]|'[dD]|') ", r"\1 \2 "),
        (r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) ", r"\1 \2 "),
        (r"(?i)\b(can)(not)\b", r" \1 \2 "),
        (r"(?i)\b(d)('ye)\b", r" \1 \2 "),
        (r"(?i)\b(gim)(me)\b", r" \1 \2 "),
        (r"(?i)\b(gon)(na)\b", r" \1 \2 "),
        (r"(?i)\b(got)(ta)\b", r" \1 \2 "),
        (r"(?i)\b(lem)(me)\b", r" \1 \2 "),
        (r"(?i)\b(more)('n)\b", r" \1 \2 "),
        (r"(?i)\b(wan)(na)(?=\s)", r" \1 \2 "),
        (r"(?i) ('t)(is)\b", r" \1 \2 "),
        (r"(?i) ('t)(was)\b", r" \1 \2 "),
    )
]


@lru_cache(maxsize=1 << 16)  # the same runs (years, numbers, names) come back across answers
def _treebank(text: str) -> tuple[str, ...]:
    for regex, replacement in _TREEBANK:
        text = regex.sub(replacement, text)
    return tuple(text.split())


def _check(lang: str, mode: str) -> str:
    """The primary language subtag ('zh' for 'zh-TW'), once the mode accepts it."""
    if mode not in MODES:
        raise XltError(f"unknown metric mode {mode!r}: expected one of {', '.join(MODES)}")
    primary = str(lang).lower().replace("_", "-").split("-")[0]
    if mode == "mlqa" and primary not in MLQA_LANGS:
        raise XltError(f"mode 'mlqa' has no rules for language {lang!r}: it covers {', '.join(MLQA_LANGS)}")
    if mode == "zh_char" and primary != "zh":
        raise XltError(f"mode 'zh_char' is for Chinese only, not language {lang!r}")
    return primary


def _analyze(text: str, lang: str, mode: str) -> tuple[str, list[str]]:
    """The string EM compares and the tokens F1 counts."""
    text = text.lower()
    if mode == "squad_v1":
        tokens = _ARTICLES["en"].sub(" ", text.translate(_ASCII_PUNCT)).split()
    elif mode == "zh_char":
        text = text.strip().translate(_CMRC_PUNCT)
        segments = _CMRC_SEGMENTS.findall(text)
        return text, [token for char, run in segments for token in ([char] if char else _treebank(run))]
    else:
        text = text.translate(_xlt_punct() if mode == "xlt" else _mlqa_punct())
        if lang in _ARTICLES:
            text = _ARTICLES[lang].sub(" ", text)
        cjk = _CJK if mode == "xlt" else _CJK_LEGACY if lang == "zh" else None
        if cjk and not text.isascii():
            text = cjk.sub(r" \g<0> ", text)
        tokens = text.split()
    return " ".join(tokens), tokens


def _longest_common_run(a: list[str], b: list[str]) -> int:
    # CMRC's dynamic programme over all pairs, visiting only the pairs that match.
    where: dict[str, list[int]] = {}
    for j, token in enumerate(b):
        where.setdefault(token, []).append(j)
    best, ending_at = 0, dict[int, int]()
    for token in a:
        ending_at = {j: ending_at.get(j - 1, 0) + 1 for j in where.get(token, ())}
        best = max(best, *ending_at.values()) if ending_at else best
    return best


def _f1(pred: list[str], gold: list[str], mode: str) -> float:
    if mode == "zh_char":
        same = _longest_common_run(gold, pred)
    elif not pred and not gold and mode == "xlt":
        # Both normalize to nothing (e.g. "the" vs "a"): EM is 1, so F1 is too. The
        # official scripts give 0 here, which the compatibility modes keep.
        return 1.0
    else:
        # The size of Counter(pred) & Counter(gold), without Counter's overhead.
        unmatched: dict[str, int] = {}
        for token in gold:
            unmatched[token] = unmatched.get(token, 0) + 1
        same = 0
        for token in pred:
            if unmatched.get(token):
                unmatched[token] -= 1
                same += 1
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def _scores(prediction: str, gold_answers: list[str], lang: str, mode: str) -> tuple[float, float]:
    if not gold_answers:
        raise XltError("a question needs at least one gold answer to be scored")
    pred_norm, pred_tokens = _analyze(prediction, lang, mode)
    em = f1 = 0.0
    for gold_norm, gold_tokens in (_analyze(g, lang, mode) for g in gold_answers):
        em = max(em, float(gold_norm == pred_norm))
        f1 = max(f1, _f1(pred_tokens, gold_tokens, mode))
    return em, f1


def normalize_answer(text: str, lang: str, mode: str = "xlt") -> str:
    """The string that exact match compares."""
    return _analyze(text, _check(lang, mode), mode)[0]


def answer_tokens(text: str, lang: str, mode: str = "xlt") -> list[str]:
    """The units that F1 counts (characters for Chinese, words elsewhere)."""
    return _analyze(text, _check(lang, mode), mode)[1]


def exact_match(prediction: str, gold_answers: list[str], lang: str, mode: str = "xlt") -> float:
    return _scores(prediction, gold_answers, _check(lang, mode), mode)[0]


def f1_score(prediction: str, gold_answers: list[str], lang: str, mode: str = "xlt") -> float:
    return _scores(prediction, gold_answers, _check(lang, mode), mode)[1]


def evaluate(gold: dict[str, list[str]], predictions: dict[str, str], lang: str, mode: str = "xlt") -> dict:
    """EM and F1 in percent over the gold questions; an unanswered question scores 0."""
    primary = _check(lang, mode)
    if not gold:
        raise XltError("no gold questions to evaluate")
    em_total = f1_total = 0.0
    for qid, answers in gold.items():
        if not answers:
            raise XltError(f"question {qid!r} has no gold answer")
        if qid in predictions:
            em, f1 = _scores(predictions[qid], answers, primary, mode)
            em_total += em
            f1_total += f1
    return {
        "exact_match": 100.0 * em_total / len(gold),
        "f1": 100.0 * f1_total / len(gold),
        "mode": mode,
        "n": len(gold),
    }

