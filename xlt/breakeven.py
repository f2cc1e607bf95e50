"""Break-even across target languages: after how many languages a mini-model method's cheaper
step 2 pays for its one-off cost (its own step 1 and step 3), against BaseLarge.

Plain arithmetic over per-method costs, shared by the dashboard (costs measured from the rows,
xlt.dashboards.breakeven) and `xlt estimate` (costs priced before a study runs): one rule, two
sources of numbers.

    one_off        step 1 + step 3 FLOPs, paid once whatever the number of languages (step 3
                   serves every target language; MiniPost's includes BaseLarge's primary)
    per_language   step-2 FLOPs for one new language (measured: to tau x the curve's maximum)
    total(N)       one_off + N x per_language
    break-even     the fewest languages N at which the method's total is below BaseLarge's
"""

from __future__ import annotations

import math
from dataclasses import dataclass

REFERENCE = "base_large"
# Marchisio et al. 2023 as DESIGN.md reports it: MiniJoint keeps 98.7% of BaseLarge's quality at
# 37.2% of its cost (the paper's cost is GPU time to near-maximal quality, i.e. step 2)
PAPER_METHOD = "mini_joint"
PAPER_QUALITY_SHARE = 0.987
PAPER_COST_SHARE = 0.372
PAPER_SOURCE = "Marchisio et al. 2023 (DESIGN.md): MiniJoint keeps 98.7% of BaseLarge's quality at 37.2% of its cost"


@dataclass(frozen=True)
class Verdict:
    kind: str  # always | never | from | up_to | no_reference
    languages: int | None  # from: the first N at which it is cheaper; up_to: the last N at which it is

    def text(self) -> str:
        return {"always": "cheaper from the first language",
                "never": "never cheaper",
                "from": f"cheaper from {self.languages} languages on",
                "up_to": f"cheaper only up to {self.languages} language{'' if self.languages == 1 else 's'}",
                "no_reference": "no BaseLarge to compare with"}[self.kind]


def total(one_off: float, per_language: float, n: int) -> float:
    return one_off + n * per_language


def break_even(one_off: float, per_language: float, ref_one_off: float, ref_per_language: float) -> Verdict:
    """When `one_off + N per_language < ref_one_off + N ref_per_language` holds, for N >= 1
    (strictly cheaper: a tie is not cheaper)."""
    d0, d1 = one_off - ref_one_off, per_language - ref_per_language
    if any(math.isnan(v) for v in (d0, d1)):
        return Verdict("no_reference", None)
    cheaper_at_one = d0 + d1 < 0
    if d1 < 0:  # cheaper per language: once cheaper, cheaper for good
        if cheaper_at_one:
            return Verdict("always", 1)
        # d0 + N d1 < 0  <=>  N > d0 / -d1
        return Verdict("from", math.floor(d0 / -d1) + 1)
    if d1 == 0:
        return Verdict("always", 1) if d0 < 0 else Verdict("never", None)
    if not cheaper_at_one:
        return Verdict("never", None)
    # dearer per language but cheaper once: cheaper while N < -d0 / d1
    return Verdict("up_to", math.ceil(-d0 / d1) - 1)
