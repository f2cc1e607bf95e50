"""SQuAD v1.1-format QA data: load, check every answer, subsample, mix, filter leaks.

Contexts stay raw: XQuAD contexts carry BOMs and edge whitespace and their offsets are
only right on the raw string, so nothing here strips or normalises text.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xlt.errors import XltError

# how far (characters) a shifted answer_start may be from where the text really is
REPAIR_WINDOW = 64


@dataclass(frozen=True)
class Example:
    id: str
    title: str
    context: str
    question: str
    answers: tuple[tuple[str, int], ...]  # (text, char start) pairs, all verified
    lang: str

    @property
    def answer_texts(self) -> list[str]:
        return [t for t, _ in self.answers]


@dataclass
class LoadReport:
    source: str
    questions: int = 0
    answers: int = 0
    repaired: int = 0
    dropped_answers: int = 0
    dropped_questions: int = 0
    first_problem: str | None = None
    extra: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        s = f"{self.source}: {self.questions} questions, {self.answers} answers"
        if self.repaired or self.dropped_answers or self.dropped_questions:
            s += (f"; repaired {self.repaired} shifted offsets, dropped {self.dropped_answers} answers"
                  f" and {self.dropped_questions} questions with no valid answer")
        return s


def locate_answer(context: str, text: str, start: Any) -> tuple[int | None, bool]:
    """(verified start or None, whether it was repaired)."""
    if not text:
        return None, False
    if isinstance(start, int) and not isinstance(start, bool) and 0 <= start and context[start:start + len(text)] == text:
        return start, False
    guess = start if isinstance(start, int) and start >= 0 else None
    if guess is None:
        return None, False
    best = None
    i = context.find(text, max(0, guess - REPAIR_WINDOW))
    while i != -1 and i <= guess + REPAIR_WINDOW:
        if best is None or abs(i - guess) < abs(best - guess):
            best = i
        i = context.find(text, i + 1)
    return best, best is not None


def parse_squad(tree: Any, source: str, lang: str, *, require_answers: bool = True) -> tuple[list[Example], LoadReport]:
    """Examples from a SQuAD v1.1-shaped tree; malformed structure is an error naming the place."""
    report = LoadReport(source)
    if not isinstance(tree, dict) or not isinstance(tree.get("data"), list):
        raise XltError(f"{source}: not SQuAD-shaped: expected an object with a 'data' list")
    out: list[Example] = []
    for ai, article in enumerate(tree["data"]):
        where = f"data[{ai}]"
        paragraphs = _get(article, "paragraphs", list, source, where)
        title = article.get("title", "") if isinstance(article, dict) else ""
        for pi, para in enumerate(paragraphs):
            pwhere = f"{where}.paragraphs[{pi}]"
            context = _get(para, "context", str, source, pwhere)
            for qi, qa in enumerate(_get(para, "qas", list, source, pwhere)):
                qwhere = f"{pwhere}.qas[{qi}]"
                qid = str(_get(qa, "id", (str, int), source, qwhere))
                question = _get(qa, "question", str, source, qwhere)
                answers = []
                raw_answers = _get(qa, "answers", list, source, qwhere)
                for ni, ans in enumerate(raw_answers):
                    awhere = f"{qwhere}.answers[{ni}]"
                    text = _get(ans, "text", str, source, awhere)
                    start = _get(ans, "answer_start", int, source, awhere)
                    report.answers += 1
                    pos, repaired = locate_answer(context, text, start)
                    if pos is None:
                        report.dropped_answers += 1
                        report.first_problem = report.first_problem or (
                            f"{awhere}: answer {text[:30]!r} not found at {start} (context length {len(context)})")
                        continue
                    report.repaired += repaired
                    answers.append((text, pos))
                report.questions += 1
                if not answers and (require_answers or raw_answers):
                    report.dropped_questions += 1
                    continue
                out.append(Example(qid, str(title), context, question, tuple(answers), lang))
    return out, report


def _get(node: Any, key: str, kind: Any, source: str, where: str) -> Any:
    if not isinstance(node, dict):
        raise XltError(f"{source}: {where}: expected an object, got {type(node).__name__}")
    if key not in node:
        raise XltError(f"{source}: {where}: missing key '{key}'")
    value = node[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise XltError(f"{source}: {where}.{key}: expected {names}, got {type(value).__name__}")
    return value


def read_squad_file(path: str | Path, lang: str, *, require_answers: bool = True) -> tuple[list[Example], LoadReport]:
    p = Path(path)
    if not p.is_file():
        raise XltError(f"{path}: no such file")
    raw = p.read_bytes()
    if not raw.strip():
        raise XltError(f"{path}: empty file (expected SQuAD JSON)")
    try:
        tree = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise XltError(f"{path}: not UTF-8 (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise XltError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise XltError(f"{path}: invalid JSON: nested too deeply") from None
    return parse_squad(tree, str(path), lang, require_answers=require_answers)


def read_hub(name: str, config: str | None, split: str, lang: str) -> tuple[list[Example], LoadReport]:
    """A `datasets` hub dataset with SQuAD columns (id, title, context, question, answers)."""
    import datasets

    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # hub/network/unknown-name errors come in many types
        raise XltError(f"hub dataset {name}:{split}: cannot load ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    missing = {"id", "context", "question", "answers"} - set(ds.column_names)
    if missing:
        raise XltError(f"hub dataset {name}:{split}: not SQuAD-shaped, missing columns {sorted(missing)}")
    tree = {"data": [{"title": "", "paragraphs": [
        {"context": r["context"], "qas": [{"id": r["id"], "question": r["question"], "answers": [
            {"text": t, "answer_start": int(s)} for t, s in zip(r["answers"]["text"], r["answers"]["answer_start"], strict=False)
        ]}]} for r in ds]}]}
    return parse_squad(tree, f"{name}:{split}", lang)


def log_report(report: LoadReport) -> None:
    print(f"xlt: warning: data {report.line()}", file=sys.stderr)


# ---------------------------------------------------------------- subsampling, mixing, leaks


def _rank(seed: int, qid: str) -> str:
    return hashlib.sha256(f"{seed}\0{qid}".encode()).hexdigest()


def subsample(examples: list[Example], *, count: int | None = None, fraction: float | None = None,
              seed: int = 0) -> list[Example]:
    """Nested by construction: every example has a seed-dependent rank and the first n are kept,
    so for one seed the 1,000-example subset lies inside the 5,000-example one."""
    if count is None and fraction is None:
        return list(examples)
    n = count if count is not None else round(fraction * len(examples))  # type: ignore[operator]
    if n > len(examples):
        raise XltError(f"asked for {n} examples but only {len(examples)} are available")
    ranked = sorted(range(len(examples)), key=lambda i: _rank(seed, examples[i].id))
    keep = set(ranked[:n])
    return [e for i, e in enumerate(examples) if i in keep]


def split_by_article(examples: list[Example], *, fraction: float, seed: int, part: str) -> list[Example]:
    """One part of a seeded split of a file's articles (by title): `fraction` of the articles go to
    part "train", the rest to "held_out", so a held-out part shares no paragraph with its train part.
    The same (fraction, seed) gives the same split on every machine (a hash, not an RNG)."""
    titles = list(dict.fromkeys(e.title for e in examples))
    if len(titles) < 2:
        raise XltError(f"split_by_article: needs at least 2 articles (distinct titles), found {len(titles)}")
    ranked = sorted(titles, key=lambda t: _rank(seed, f"article\0{t}"))
    n_train = min(len(titles) - 1, max(1, round(fraction * len(titles))))
    chosen = set(ranked[:n_train] if part == "train" else ranked[n_train:])
    return [e for e in examples if e.title in chosen]


def select(examples: list[Example], *, max_questions: int | None, seed: int,
           split: tuple[float, int, str] | None = None) -> list[Example]:
    """What a data source keeps of its file: an article split part (fraction, seed, part), then at
    most `max_questions` questions, a seeded sample across all articles (a file's first N questions
    would be a handful of articles on a few topics), nested for one seed as `subsample` is."""
    if split is not None:
        fraction, split_seed, part = split
        examples = split_by_article(examples, fraction=fraction, seed=split_seed, part=part)
    if max_questions is not None and max_questions < len(examples):
        examples = subsample(examples, count=max_questions, seed=seed)
    return examples


def leak_filter(train: list[Example], evals: list[list[Example]]) -> tuple[list[Example], int]:
    """Drop training questions whose paragraph (or question id) appears in any evaluation set.

    XQuAD is a subset of SQuAD dev, so training on SQuAD dev and testing on XQuAD would
    otherwise test on training paragraphs. Contexts are compared with edge whitespace and
    BOMs stripped (only for the comparison; the stored text stays raw)."""
    contexts = {_key(e.context) for ev in evals for e in ev}
    ids = {e.id for ev in evals for e in ev}
    kept = [e for e in train if _key(e.context) not in contexts and e.id not in ids]
    return kept, len(train) - len(kept)


def _key(context: str) -> str:
    return context.strip().lstrip("\ufeff").strip()


def to_squad(examples: list[Example]) -> dict[str, Any]:
    """Back to the SQuAD v1.1 tree (one paragraph per question keeps it simple and exact)."""
    return {"version": "1.1", "data": [{"title": e.title, "paragraphs": [{"context": e.context, "qas": [
        {"id": e.id, "question": e.question, "answers": [{"text": t, "answer_start": s} for t, s in e.answers]}
    ]}]} for e in examples]}
