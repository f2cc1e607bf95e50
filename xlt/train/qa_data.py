"""QA data of a trial: every source loaded and checked, the target subsampled, English mixed
in, training questions whose paragraph is in an eval set dropped. Shared by QA fine-tuning and
adaptation step 3.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

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
    if src.max_questions is not None:
        examples = examples[: src.max_questions]
    return examples


@dataclass
class QAData:
    train: list[Example]
    evals: dict[str, tuple[DataSource, list[Example]]]
    target_count: int
    leaked: int


def prepare_data(spec: StudySpec) -> QAData:
    d = spec.data
    evals = {src.label: (src, load_source(src, spec)) for src in d.eval}
    train: list[Example] = []
    target_count = 0
    if d.target is not None:
        target = load_source(d.target, spec)
        target = squad.subsample(target, count=d.target_count, fraction=d.target_fraction, seed=d.seed)
        target_count = len(target)
        train += target
    if d.english is not None and (d.with_english or d.target is None):
        train += load_source(d.english, spec)
    leaked = 0
    if d.leak_filter:
        train, leaked = squad.leak_filter(train, [ex for _, ex in evals.values()])
        if leaked:
            print(f"xlt: leak filter dropped {leaked} training questions whose paragraph is in an eval set",
                  file=sys.stderr)
    if not train:
        raise XltError("data: the training set is empty after subsampling and leak filtering"
                       + (" (data.target_count is 0 and data.with_english is false)" if d.target_count == 0 else ""))
    return QAData(train, evals, target_count, leaked)
