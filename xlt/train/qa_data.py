"""QA data of a trial: every source loaded and checked, the target subsampled, English mixed
in, training questions whose paragraph is in an eval set dropped. Shared by QA fine-tuning and
adaptation step 3.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from xlt.data import squad
from xlt.data.squad import Example
from xlt.errors import XltError
from xlt.spec import DataSource, StudySpec


def load_source(src: DataSource, spec: StudySpec, *, require_answers: bool = True) -> list[Example]:
    if src.path is not None:
        examples, report = squad.read_squad_file(spec.resolve_path(src.path), src.lang, require_answers=require_answers)
    elif src.hub is not None:
        examples, report = squad.read_hub(src.hub, src.hub_config, src.split, src.lang)
    else:
        from xlt.data.synthetic import make_squad

        syn = src.synthetic
        assert syn is not None
        examples, report = squad.parse_squad(make_squad(src.lang, syn.n, syn.seed, syn.split), src.label, src.lang)
    if report.dropped_answers or report.repaired:
        squad.log_report(report)
    if not examples:
        detail = f" (first problem: {report.first_problem})" if report.first_problem else ""
        raise XltError(f"{src.label}: no usable questions after checking answers{detail}")
    examples = squad.select(examples, **src.selection)
    if not examples:
        raise XltError(f"{src.label}: no questions left after split_by_article")
    return examples


@dataclass
class QAData:
    train: list[Example]  # what a trial trains on (joint: target + English)
    evals: dict[str, tuple[DataSource, list[Example]]]
    target_count: int
    leaked: int
    english_first: list[Example] = field(default_factory=list)  # sequential: the English stage's set
    target_pool: list[Example] = field(default_factory=list)  # sequential: the target set before subsampling

    @property
    def tokenizer_texts(self) -> list[Example]:
        """What a trained (tiny-model) tokenizer learns from. Sequential: the English set and the
        whole target pool, so trials of every target size share one tokenizer and one English model."""
        return self.english_first + self.target_pool if self.english_first else self.train


def prepare_data(spec: StudySpec) -> QAData:
    d = spec.data
    evals = {src.label: (src, load_source(src, spec)) for src in d.eval}
    train: list[Example] = []
    pool: list[Example] = []
    target_count = 0
    if d.target is not None:
        pool = load_source(d.target, spec)
        target = squad.subsample(pool, count=d.target_count, fraction=d.target_fraction, seed=d.seed)
        target_count = len(target)
        train += target
    english: list[Example] = []
    if d.english is not None and (d.with_english or d.target is None):
        english = load_source(d.english, spec)
    # sequential: English is a stage of its own (xlt.train.qa.english_model); an empty target
    # subset is the English-only trial, the lower bound, trained as usual
    sequential = d.english_mix == "sequential" and bool(english) and bool(train)
    if not sequential:
        train, english = train + english, []
    leaked = 0
    if d.leak_filter:
        held_out = [ex for _, ex in evals.values()]
        train, leaked = squad.leak_filter(train, held_out)
        english, leaked_en = squad.leak_filter(english, held_out)
        leaked += leaked_en
        if leaked:
            print(f"xlt: leak filter dropped {leaked} training questions whose paragraph is in an eval set",
                  file=sys.stderr)
    if not train:
        raise XltError("data: the training set is empty after subsampling and leak filtering"
                       + (" (data.target_count is 0 and data.with_english is false)" if d.target_count == 0 else ""))
    return QAData(train, evals, target_count, leaked, english, pool if sequential else [])
