"""The study spec: one typed, frozen description of a study, loaded from YAML.

Every error is one line naming the file and the key path, e.g.
``studies/x.yaml: train.lr: must be > 0, got -1``. Command-line overrides use the same
key paths (``train.lr=3e-5``), and so does the search space, so a trial is just the
study's spec with a few keys set.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from xlt.errors import XltError

MetricMode = Literal["xlt", "squad_v1", "mlqa", "zh_char"]


_INT_MAX = 2**63 - 1  # what torch, numpy and parquet can hold


def _too_big(value: Any) -> bool:
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) > _INT_MAX
    if isinstance(value, tuple | list):
        return any(_too_big(v) for v in value)
    if isinstance(value, dict):
        return any(_too_big(v) for v in value.values())
    return False


class _Strict(BaseModel):
    # inf and nan (e.g. `lr: 1e400`) are not numbers a study can mean
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _fits_64_bits(cls, value: Any) -> Any:
        if _too_big(value):
            raise ValueError(f"integer too large (more than {_INT_MAX})")
        return value


class TinyModel(_Strict):
    """A BERT built from a config with random weights (tests, the embedded default)."""

    layers: int = Field(4, ge=1)
    hidden: int = Field(128, ge=8)
    heads: int = Field(4, ge=1)
    intermediate: int = Field(512, ge=8)
    vocab_size: int = Field(4000, ge=100)
    max_positions: int = Field(256, ge=16)

    @model_validator(mode="after")
    def _heads_divide(self) -> TinyModel:
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        return self


class ModelSpec(_Strict):
    name: str | None = None  # hub name or local path
    tiny: TinyModel | None = None
    tokenizer: str | None = None  # default: the model's own; a tiny model trains one on the training text
    trust_remote_code: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.name is None) == (self.tiny is None):
            raise ValueError("set exactly one of model.name (hub name or path) and model.tiny")
        return self


class Synthetic(_Strict):
    n: int = Field(1000, ge=1)
    seed: int = 0
    split: str = "train"


class ArticleSplit(_Strict):
    """A seeded split of a file's articles: `fraction` of them in part "train", the rest "held_out"."""

    fraction: float = Field(gt=0, lt=1)
    seed: int = 0
    part: Literal["train", "held_out"]


class DataSource(_Strict):
    """One QA dataset: a local SQuAD-format JSON file, a `datasets` hub name, or generated."""

    name: str | None = None
    lang: str = "en"
    path: str | None = None
    hub: str | None = None
    hub_config: str | None = None
    split: str = "train"
    synthetic: Synthetic | None = None
    metric_mode: MetricMode | None = None  # eval sets: default is the study's metric_mode
    # a seeded sample of the questions, across all articles (nested: for one seed, a smaller
    # max_questions keeps a subset of a larger one)
    max_questions: int | None = Field(None, ge=1)
    seed: int = 0  # of the max_questions sample
    split_by_article: ArticleSplit | None = None  # applied before max_questions
    # eval sets: "every" evaluation during training, or only the trial's final model (the kept
    # one in validated mode): a large test set need not be scored at every validation point
    evaluate: Literal["every", "final"] = "every"

    @property
    def selection(self) -> dict[str, Any]:
        """Keyword arguments of `xlt.data.squad.select` for this source."""
        s = self.split_by_article
        return {"max_questions": self.max_questions, "seed": self.seed,
                "split": (s.fraction, s.seed, s.part) if s is not None else None}

    @model_validator(mode="after")
    def _one_source(self) -> DataSource:
        given = [k for k in ("path", "hub", "synthetic") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"set exactly one of path, hub, synthetic (got {given or 'none'})")
        return self

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.path:
            return f"{Path(self.path).stem}"
        if self.hub:
            return f"{self.hub}:{self.split}"
        return f"synthetic-{self.lang}-{self.synthetic.split}"  # type: ignore[union-attr]


class DataSpec(_Strict):
    english: DataSource | None = None  # the source-language training set
    target: DataSource | None = None  # target-language training set (subsampled by count/fraction)
    target_count: int | None = Field(None, ge=0)
    target_fraction: float | None = Field(None, gt=0, le=1)
    with_english: bool = True
    # how +English trials use the English set: "joint" trains on the mix of both; "sequential"
    # fine-tunes on English first and then on the target subset, and the English model is cached
    # (cache_dir) so a study's +English trials pay for it once, whatever their target size
    english_mix: Literal["joint", "sequential"] = "joint"
    eval: tuple[DataSource, ...] = Field(min_length=1)
    validation: str | None = None  # eval set (by label) used in validated mode; default: the first
    leak_filter: bool = True
    seed: int = 0

    @model_validator(mode="after")
    def _consistent(self) -> DataSpec:
        if self.target_count is not None and self.target_fraction is not None:
            raise ValueError("set at most one of target_count and target_fraction")
        if self.english is None and self.target is None:
            raise ValueError("no training data: set data.english or data.target")
        labels = [e.label for e in self.eval]
        if len(set(labels)) != len(labels):
            raise ValueError(f"eval set names must be unique, got {labels}")
        if self.validation is not None and self.validation not in labels:
            raise ValueError(f"validation '{self.validation}' is not an eval set name (have {labels})")
        if self.validation_set.evaluate != "every":
            raise ValueError(f"validation set '{self.validation_set.label}' must have evaluate: every"
                             " (validated mode watches it during training)")
        return self

    @property
    def validation_set(self) -> DataSource:
        name = self.validation or self.eval[0].label
        return next(e for e in self.eval if e.label == name)


class TrainSpec(_Strict):
    mode: Literal["fixed", "validated"] = "fixed"
    epochs: float = Field(3.0, gt=0)
    max_steps: int | None = Field(None, ge=1)
    eval_every: int | None = Field(None, ge=1)  # steps; fixed mode default: once per epoch
    patience: int = Field(10, ge=1)
    lr: float = Field(5e-5, gt=0)
    batch_size: int = Field(8, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    grad_accum: int = Field(1, ge=1)
    warmup: float = Field(0.1, ge=0, lt=1)  # fraction of optimizer steps
    weight_decay: float = Field(0.01, ge=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    # dropout on the attention probabilities; None: `dropout`. 0 lets attention on CPU take
    # PyTorch's fused (flash) kernel: with dropout > 0 SDPA falls back to its unfused math path,
    # which was 1.6x the e5-small training step here (CUDA's fused kernels apply dropout)
    attention_dropout: float | None = Field(None, ge=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)
    max_seq_length: int = Field(384, ge=32)
    doc_stride: int = Field(128, ge=8)
    max_query_length: int = Field(64, ge=4)
    max_answer_length: int = Field(30, ge=1)
    # run_qa: best raw start+end logit over all windows (run_qa.py, how SQuAD/XQuAD results are
    # reported); pipeline: the answers transformers' question-answering pipeline gives
    answer_rule: Literal["run_qa", "pipeline"] = "run_qa"
    seed: int = 0
    threads: int | None = Field(None, ge=1)  # torch CPU threads; default: what the worker is given
    save_model: bool = True  # the trained model into the trial's directory (resume checkpoints are always on)

    @model_validator(mode="after")
    def _lengths(self) -> TrainSpec:
        if self.doc_stride >= self.max_seq_length:
            raise ValueError(f"doc_stride ({self.doc_stride}) must be < max_seq_length ({self.max_seq_length})")
        return self


class AdaptStep(_Strict):
    steps: int = Field(200, ge=1)
    lr: float = Field(5e-4, gt=0)
    batch_size: int = Field(32, ge=1)
    max_seq_length: int = Field(128, ge=16)


BUILDERS = ("text", "json", "parquet", "csv", "arrow")  # `datasets`' packaged builders: they read data_files


class TextCorpus(_Strict):
    """Adaptation text read through `datasets` by streaming: a hub dataset (``wikimedia/wikipedia``
    with config ``20231101.{lang}``) or a packaged builder over files or URLs (``text`` with
    ``data_files``: local files, or CC-100's ``https://data.statmt.org/cc-100/{lang}.txt.xz``).
    ``{lang}`` works in dataset, config and data_files (through ``lang_codes`` where the source
    names a language its own way). Rows are split into non-empty lines, as local files are; a
    seeded shuffle buffer mixes them; the budget (lines, or tokens counted as `xlt estimate` counts
    them: words x 1.3 + one per CJK character) says where reading stops, so a study reads the same
    text whatever the tokenizer and the number of workers."""

    dataset: str = Field(min_length=1)  # load_dataset's path: a hub id, or a builder (text, json, parquet, csv)
    config: str | None = None  # load_dataset's name
    data_files: str | tuple[str, ...] | None = None  # ${VAR}, {lang}; paths or URLs
    split: str = "train"
    revision: str | None = None  # a hub dataset's git revision (part of the text's identity)
    text_field: str = Field("text", min_length=1)
    lang_codes: dict[str, str] = {}  # what {lang} becomes per language (CC-100 names Simplified Chinese zh-Hans)
    max_lines: int | None = Field(None, ge=1)
    max_tokens: int | None = Field(None, ge=1)
    shuffle_buffer: int = Field(10_000, ge=0)  # lines mixed by IterableDataset.shuffle; 0: stream order
    seed: int = 0

    @model_validator(mode="after")
    def _budget_and_files(self) -> TextCorpus:
        if self.max_lines is None and self.max_tokens is None:
            raise ValueError("give a budget: max_lines or max_tokens (a streamed corpus may be endless)")
        if self.dataset in BUILDERS and not self.data_files:
            raise ValueError(f"the '{self.dataset}' builder reads data_files: set data_files")
        return self

    def resolved(self, lang: str) -> dict[str, Any]:
        """The corpus for one language: {lang} filled in everywhere it may appear."""
        code = self.lang_codes.get(lang, lang)
        fill = lambda s: s.replace("{lang}", code) if isinstance(s, str) else s  # noqa: E731
        files = self.data_files
        files = (fill(files) if isinstance(files, str) else tuple(fill(f) for f in files)) if files else None
        return {**self.model_dump(mode="json"), "dataset": fill(self.dataset), "config": fill(self.config),
                "data_files": files, "lang": lang}


def _text_kind(value: Any) -> str:
    if isinstance(value, TextCorpus) or (isinstance(value, dict) and "dataset" in value):
        return "corpus"
    return "per_language" if isinstance(value, dict) else "files"


_TEXT_TAGS = ("corpus", "files", "per_language")
SourceText = Annotated[
    Annotated[TextCorpus, Tag("corpus")] | Annotated[tuple[str, ...], Tag("files")], Discriminator(_text_kind)]
TargetText = Annotated[
    Annotated[TextCorpus, Tag("corpus")] | Annotated[tuple[str, ...], Tag("files")]
    | Annotated[dict[str, tuple[str, ...]], Tag("per_language")], Discriminator(_text_kind)]


class AdaptSpec(_Strict):
    """Mini-model adaptation (Marchisio et al. 2023): new-language embeddings over a frozen body."""

    method: Literal["base_large", "mini_joint", "mini_post", "base_small"] = "mini_joint"
    depth: int = Field(4, ge=1)  # k: layers in the mini-model
    target_lang: str = "ru"
    # English text (step 1): files (patterns and globs), or a corpus read through `datasets` (TextCorpus)
    source_text: SourceText = ()
    # target-language text (step 2): file patterns with "{lang}" and globs, per language
    # ({ru: [...], zh: [...]}) where the files are not named alike, or a corpus (TextCorpus, "{lang}")
    target_text: TargetText = ()
    target_text_fraction: float = Field(1.0, gt=0, le=1)  # share of the target lines step 2 may use
    synthetic_lines: int | None = Field(None, ge=1)  # generate text instead of reading files
    vocab_size: int = Field(4000, ge=100)
    tokenizer_kind: Literal["wordpiece", "unigram"] = "wordpiece"
    # random (the paper's), copy_shared (tokens both vocabularies hold keep their rows), or
    # source_pieces: copy_shared, and every other token the mean of the rows of the source
    # pieces its text splits into (Gee et al. 2022, "Fast Vocabulary Transfer")
    embedding_init: Literal["random", "copy_shared", "source_pieces"] = "copy_shared"
    mlm_probability: float = Field(0.15, gt=0, lt=1)
    # step 1 of BaseLarge's (and MiniPost's) primary when the checkpoint has no MLM head (MiniLM, e5):
    # `head` fits a new head over the frozen body, so the primary stays the pretrained checkpoint as a
    # BaseLarge with its own head does; `all` continues MLM pretraining of the whole model. Measured
    # on MiniLM (studies/minimodel_swap_cpu.yaml): 200 steps of `all` at lr 2e-4 took step 3's
    # English F1 from 37.6 to 10.9 (a random head's gradients distort the pretrained body)
    primary_step1: Literal["head", "all"] = "head"
    # lines of each text held out of steps 1 and 2 (at most a tenth): the held-out masked-LM loss
    # and accuracy on step-2 rows say how well each step learned; 0: none
    mlm_heldout_lines: int = Field(400, ge=0)
    step1: AdaptStep = AdaptStep()
    step2: AdaptStep = AdaptStep(steps=400, lr=1e-3)
    eval_every: int = Field(100, ge=1)  # step-2 steps between downstream evaluations

    def target_patterns(self, lang: str) -> tuple[str, ...] | TextCorpus:
        """Step 2's text for `lang`: file patterns, or the corpus."""
        if isinstance(self.target_text, dict):
            if lang not in self.target_text:
                raise XltError(f"adapt.target_text: no files given for target language '{lang}'"
                               f" (have {', '.join(self.target_text) or 'none'})")
            return self.target_text[lang]
        return self.target_text


class Param(_Strict):
    """One search dimension. Exactly one of the fields."""

    range: tuple[float, float] | None = None
    log_range: tuple[float, float] | None = None
    int_range: tuple[int, int] | None = None
    choice: tuple[Any, ...] | None = None

    @model_validator(mode="before")
    @classmethod
    def _list_is_choice(cls, v: Any) -> Any:
        return {"choice": v} if isinstance(v, list) else v

    @model_validator(mode="after")
    def _one(self) -> Param:
        given = [k for k in ("range", "log_range", "int_range", "choice") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of range, log_range, int_range, choice (got {given or 'none'})")
        for k in ("range", "log_range", "int_range"):
            lo_hi = getattr(self, k)
            if lo_hi is not None and not lo_hi[0] < lo_hi[1]:
                raise ValueError(f"{k}: low must be < high, got {list(lo_hi)}")
        if self.log_range is not None and self.log_range[0] <= 0:
            raise ValueError(f"log_range: bounds must be > 0, got {list(self.log_range)}")
        if self.choice is not None and not self.choice:
            raise ValueError("choice: give at least one value")
        return self


class Objective(_Strict):
    metric: str = "f1"  # f1 | exact_match | flops_train | device_seconds
    eval_set: str | None = None  # f1/exact_match: the eval set (default: the validation set)
    mode: Literal["max", "min"] = "max"


class Budget(_Strict):
    """Compute a study may spend (`search.budget`): one of device-hours or training FLOPs. The
    study starts no trial whose estimated cost, added to what finished trials spent and what
    running ones are estimated to cost, would exceed it (xlt.study.budget)."""

    device_hours: float | None = Field(None, gt=0)
    flops: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one(self) -> Budget:
        if (self.device_hours is None) == (self.flops is None):
            raise ValueError("give exactly one of device_hours, flops")
        return self

    @property
    def unit(self) -> str:
        return "device_hours" if self.device_hours is not None else "flops"

    @property
    def limit(self) -> float:
        return float(self.device_hours if self.device_hours is not None else self.flops)  # type: ignore[arg-type]


class SearchSpec(_Strict):
    algorithm: Literal["tpe", "nsga2", "grid", "random"] = "tpe"
    space: dict[str, Param] = {}
    objectives: tuple[Objective, ...] = (Objective(),)
    num_samples: int = Field(4, ge=1)  # optuna/random; grid: repeats come from seeds
    # grid, or nothing to search: every point runs once per seed (as train.seed); unset: once,
    # with train.seed as the study file gives it
    seeds: tuple[int, ...] | None = None
    points: tuple[dict[str, Any], ...] = ()  # tried first (e.g. the paper's settings)
    asha: bool = False
    asha_grace: int = Field(1, ge=1)
    asha_reduction: float = Field(2.0, gt=1)
    budget: Budget | None = None  # stop starting trials once this much compute is spent or committed


class Resources(_Strict):
    workers: int = Field(1, ge=1)
    cpus_per_worker: float = Field(1, gt=0)
    gpus_per_worker: float = Field(0, ge=0)
    max_concurrent_trials: int = Field(1, ge=1)
    max_failures: int = Field(1, ge=0)


class Expected(_Strict):
    """A published number the study reproduces (shown with a verdict in the dashboard)."""

    label: str
    metric: Literal["f1", "exact_match"] = "f1"
    eval_set: str
    value: float
    tolerance: float = Field(1.0, ge=0)
    where: dict[str, Any] = {}  # trial parameters that select the rows
    source: str = ""


# ---------------------------------------------------------------- claims: qualitative findings judged from the rows
# A claim's `where` selects trials like Expected.where, and a value may also be a list (any of these values)
# or numeric bounds ({le: 1000}, {gt: 0, lt: 5000}). xlt.dashboards.claims judges them.

Scalar = bool | int | float | str | None
BOUND_KEYS = ("lt", "le", "gt", "ge")


class Bounds(_Strict):
    """Numeric bounds on a trial parameter; every bound given must hold."""

    lt: float | None = None
    le: float | None = None
    gt: float | None = None
    ge: float | None = None

    @model_validator(mode="after")
    def _some(self) -> Bounds:
        if all(getattr(self, k) is None for k in BOUND_KEYS):
            raise ValueError("give at least one of lt, le, gt, ge")
        return self


def _condition(value: Any) -> Any:
    """A `where` value: a scalar (equal), a list (one of), or a mapping of bounds."""
    if isinstance(value, Bounds):
        return value
    if isinstance(value, dict):
        unknown = [k for k in value if k not in BOUND_KEYS]
        if unknown:
            raise ValueError(f"unknown bound '{unknown[0]}' (use lt, le, gt, ge)")
        for k, v in value.items():
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                raise ValueError(f"bound {k} must be a number, got {v!r}")
        return Bounds.model_validate(value)
    if isinstance(value, list | tuple):
        if not value:
            raise ValueError("a list of values must not be empty")
        bad = [v for v in value if isinstance(v, dict | list | tuple)]
        if bad:
            raise ValueError(f"a list of values holds plain values only, got {bad[0]!r}")
        return tuple(value)
    return value


Condition = Annotated[Bounds | tuple[Scalar, ...] | Scalar, BeforeValidator(_condition)]
Where = dict[str, Condition]


class RowPick(_Strict):
    """Which row of each trial: its final row (stage `final`, the default), or an evaluation of a
    stage at a step (`first`, `last` or a step number; default `last`)."""

    stage: str = "final"
    step: int | Literal["first", "last"] | None = None

    @model_validator(mode="after")
    def _step_needs_stage(self) -> RowPick:
        if self.stage == "final" and self.step is not None:
            raise ValueError("step picks an evaluation of a stage (e.g. stage: step2); final rows have no step")
        return self


class ClaimGroup(RowPick):
    """One side of a comparison: the trials `where` selects, at the row `stage`/`step` picks."""

    where: Where = {}
    label: str = ""  # default: the where text


class _ClaimBase(_Strict):
    text: str = Field(min_length=1)
    source: str = ""
    metric: Literal["f1", "exact_match"] = "f1"
    eval_set: str
    where: Where = {}  # applies to every side
    # Cells judged separately: "auto" = every searched parameter but the seed that varies within a side
    # (e.g. target_count); a side on which a key does not vary joins every cell. [] pools each side.
    pair_by: Literal["auto"] | tuple[str, ...] = "auto"
    require: Literal["all", "any"] = "all"  # the claim holds when all (any) cells hold


class OrderClaim(_ClaimBase):
    """`better` beats `worse`: mean(better) - mean(worse) > margin in each cell."""

    kind: Literal["order"]
    better: ClaimGroup
    worse: ClaimGroup
    margin: float = 0.0


class RatioClaim(_ClaimBase):
    """`subject` reaches `quality` x the reference's score (its `stage`/`step` row, default final),
    at a cost at most `compute` x the reference's: the subject's cost at the first evaluation of its
    mean `stage` curve at that score (the subject's own stage/step are not used)."""

    kind: Literal["ratio"]
    subject: ClaimGroup
    reference: ClaimGroup
    quality: float = Field(gt=0)
    compute: float | None = Field(None, gt=0)
    stage: str = "step2"  # the curve rows that measure the cost
    cost: Literal["flops_stage", "flops_train", "device_seconds"] = "flops_stage"
    # the reference's cost: its final row's (all of its stage), or its own first evaluation at `quality` x its final
    reference_cost: Literal["final", "reach"] = "final"


class LiftClaim(_ClaimBase):
    """The metric rises by at least `delta` from each trial's `baseline` row to its `final` row."""

    kind: Literal["lift"]
    delta: float
    baseline: RowPick = RowPick(stage="step2", step=0)  # adaptation: the un-adapted step-0 evaluation
    final: RowPick = RowPick()


CLAIM_KINDS: dict[str, type[BaseModel]] = {"order": OrderClaim, "ratio": RatioClaim, "lift": LiftClaim}
Claim = Annotated[OrderClaim | RatioClaim | LiftClaim, Field(discriminator="kind")]


class ReportedCost(_Strict):
    """A cost a paper reports for some of a study's trials, printed by `xlt estimate` beside the
    estimate of the same trials: in GPU-days, or as a share of BaseLarge's (adaptation studies)."""

    label: str
    where: dict[str, Any] = {}  # trial parameters (dotted search keys) that select the trials
    stage: Literal["step2", "all"] = "all"  # the cost of step 2 alone, or of the whole trial
    gpu_days: float | None = Field(None, gt=0)
    share_of_base_large: float | None = Field(None, gt=0)  # the paper's cost / BaseLarge's
    source: str = ""

    @model_validator(mode="after")
    def _one(self) -> ReportedCost:
        if (self.gpu_days is None) == (self.share_of_base_large is None):
            raise ValueError("give exactly one of gpu_days and share_of_base_large")
        return self


# ---------------------------------------------------------------- tracking: experiment trackers for `xlt run`
# Ray Tune's own logger callbacks (xlt.study.tracking). They log what trials report and change
# nothing a trial computes, so the section is no part of the hash; nothing is sent anywhere but
# where a tracker here names.


def mlflow_file_store(uri: str) -> str | None:
    """Why an MLflow tracking URI cannot take a study's metrics, or None. MLflow's file store (a
    file:// URI or a plain path) keeps a metric in a file named after it, and `f1` beside
    `f1/<set>` would be one name as a file and a directory (MLflow 3 also refuses that store
    unless MLFLOW_ALLOW_FILE_STORE is set)."""
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*):", uri)
    if (scheme and scheme.group(1) != "file") or uri == "databricks":
        return None
    return ("MLflow's file store cannot hold both f1 and f1/<set> (a file and a directory of one name): "
            "give a database or server URI, e.g. sqlite:///path/mlflow.db")


class MLflowTracking(_Strict):
    # an MLflow tracking URI (${VAR} expanded): a database (sqlite:///...) or a server (http(s)://);
    # default: a SQLite store in the run directory, sqlite:///<run dir>/mlflow.db
    tracking_uri: str | None = Field(None, min_length=1)
    experiment: str | None = Field(None, min_length=1)  # default: the study's name

    @field_validator("tracking_uri")
    @classmethod
    def _not_a_file_store(cls, value: str | None) -> str | None:
        # with ${VAR} unexpanded, xlt.study.tracking.check judges the URI when the study runs
        problem = mlflow_file_store(value) if value is not None and "$" not in value else None
        if problem:
            raise ValueError(problem)
        return value


class WandbTracking(_Strict):
    project: str | None = Field(None, min_length=1, max_length=128)  # default: the study's name
    # offline: run files in <run dir>/wandb (`wandb sync` uploads them later);
    # online: sent to the W&B server (needs an API key); disabled: nothing
    mode: Literal["offline", "online", "disabled"] = "offline"

    @field_validator("project")
    @classmethod
    def _project_name(cls, value: str | None) -> str | None:
        bad = sorted({c for c in value or "" if c in "/\\#?%:"})
        if bad:  # W&B refuses them
            raise ValueError(f"a W&B project name cannot contain {' '.join(bad)}")
        return value


class Tracking(_Strict):
    mlflow: MLflowTracking | None = None
    wandb: WandbTracking | None = None
    tensorboard: bool = False  # TensorBoard event files in each trial's Tune directory (RUN/ray/tune)


class StudySpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    task: Literal["qa", "adapt"] = "qa"
    scale: Literal["cpu", "gpu"] = "cpu"
    model: ModelSpec
    data: DataSpec
    train: TrainSpec = TrainSpec()
    metric_mode: MetricMode = "xlt"
    adapt: AdaptSpec | None = None
    search: SearchSpec = SearchSpec()
    resources: Resources = Resources()
    # what trials share, content-addressed: trained tokenizers, tokenized QA features, adaptation
    # steps 1 and 3 (<cache_dir>/<kind>/<key>). `xlt run` and `xlt trial` default it to
    # <run dir>/artifacts; unset (the library), nothing is cached. Where it lives is no part of
    # any content key, nor of the spec's hash.
    cache_dir: str | None = None
    expected: tuple[Expected, ...] = ()
    claims: tuple[Claim, ...] = ()  # qualitative findings, judged from the rows (not part of the hash)
    throughput: dict[str, float] = {}  # device kind -> FLOP/s achieved, for `xlt estimate`
    reported_cost: tuple[ReportedCost, ...] = ()  # the paper's costs, beside `xlt estimate`'s (not part of the hash)
    tracking: Tracking | None = None  # experiment trackers (not part of the hash)

    @model_validator(mode="after")
    def _cross(self) -> StudySpec:
        if self.task == "adapt" and self.adapt is None:
            raise ValueError("task 'adapt' needs an adapt section")
        if self.task == "adapt" and self.adapt is not None:
            langs = {e.lang for e in self.data.eval}
            # step 3 is validated on English; step 4 scores the target language
            if "en" not in langs:
                raise ValueError("data.eval: no English evaluation set (adaptation step 3 is validated on one)")
            if self.adapt.target_lang not in langs:
                raise ValueError(f"data.eval: no evaluation set in the target language '{self.adapt.target_lang}'")
        for key in self.search.space:
            _check_path(self, key)
        labels = [e.label for e in self.data.eval]
        for i, claim in enumerate(self.claims):
            if claim.eval_set not in labels:
                raise ValueError(f"claims.{i}.eval_set: '{claim.eval_set}' is not an eval set name (have {labels})")
        return self

    def hash(self) -> str:
        """What the trial is, not where it ran: identical trials in two run directories hash alike.
        Claims judge the rows and trackers log them, neither changes anything a trial does, so a
        study's claims and tracking can be edited without losing `--resume`."""
        return hashlib.sha256(json.dumps(self._hashed(), sort_keys=True).encode()).hexdigest()[:16]

    def _hashed(self) -> dict[str, Any]:
        tree = self.model_dump(mode="json", exclude={"cache_dir", "claims", "reported_cost", "tracking"})
        for section, key in _LATER_KEYS:  # unset, they leave a trial as it was before they existed
            if tree.get(section, {}).get(key, _MISSING) is None:
                del tree[section][key]
        return tree

    def first_difference(self, other: StudySpec) -> str | None:
        """The first key (dotted, in the spec's order) whose value differs in what `hash` covers:
        `train.lr: 0.0001 -> 0.0003`; None when the two hash alike."""
        return _first_difference(self._hashed(), other._hashed(), "")

    def resolve_path(self, path: str) -> Path:
        return Path(expand_vars(path))


# Keys added after runs and shipped results were hashed, whose None default changes nothing a
# trial does: left out of the hash while None, so those runs still resume and still verify.
_LATER_KEYS = (("train", "attention_dropout"), ("search", "budget"))


def _first_difference(a: Any, b: Any, at: str) -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            found = _first_difference(a.get(key, _MISSING), b.get(key, _MISSING), f"{at}.{key}" if at else key)
            if found:
                return found
        return None
    if a == b:
        return None
    def show(v: Any) -> str:
        if isinstance(v, dict):  # a model's unset fields say nothing
            v = {k: x for k, x in v.items() if x is not None}
        return "(absent)" if v is _MISSING else json.dumps(v, default=str)[:80]
    return f"{at or '(the spec)'}: {show(a)} -> {show(b)}"


def _check_path(spec: StudySpec, dotted: str) -> None:
    node: Any = spec
    for part in dotted.split("."):
        fields = type(node).model_fields if isinstance(node, BaseModel) else None
        if fields is None or part not in fields:
            raise ValueError(f"search.space: unknown key '{dotted}'")
        node = getattr(node, part)
        if node is None:  # an optional section not set in the file: its fields still exist
            break


_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)")


def expand_vars(text: str) -> str:
    """${VAR}, ${VAR:-default} and $VAR; an unset variable without default is an error."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        if name in os.environ:
            return os.environ[name]
        if m.group(2) is not None:
            return m.group(2)
        raise XltError(f"{text}: environment variable {name} is not set")

    return _VAR.sub(sub, text)


# ---------------------------------------------------------------- loading and overrides


def parse_override(item: str) -> tuple[str, Any]:
    """``train.lr=3e-5`` -> ("train.lr", 3e-5); the value is parsed as YAML."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise XltError(f"override '{item}': expected key.path=value")
    try:
        value = yaml.safe_load(raw) if raw else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise XltError(f"override {dotted}: '{part}' is not a section")
        node = nxt
    node[parts[-1]] = value


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise XltError(f"{path}: no such file")
    try:
        tree = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise XltError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except RecursionError:
        raise XltError(f"{path}: invalid YAML: nested too deeply") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise XltError(f"{path}: invalid YAML{where}: {problem}") from None
    if tree is None:
        raise XltError(f"{path}: empty study file")
    if _expanded_size(tree, {}) > _MAX_VALUES:
        raise XltError(f"{path}: expands to more than {_MAX_VALUES:,} values"
                       " (an alias inside itself, or aliases repeating aliases)")
    if not isinstance(tree, dict):
        raise XltError(f"{path}: a study must be a mapping of keys, got {type(tree).__name__}")
    return tree


_MAX_VALUES = 1_000_000  # a study is a page of settings; YAML aliases can multiply it exponentially


def _expanded_size(node: Any, memo: dict[int, int]) -> int:
    """How many values `node` holds with every alias expanded (shared nodes are counted once
    per use but visited once, so this is linear in the file even when the expansion is not)."""
    if not isinstance(node, dict | list):
        return 1
    if id(node) not in memo:
        memo[id(node)] = _MAX_VALUES + 1  # a cycle (`&a [*a]`) counts as too big
        children = node.values() if isinstance(node, dict) else node
        memo[id(node)] = min(_MAX_VALUES + 1, 1 + sum(_expanded_size(c, memo) for c in children))
    return memo[id(node)]


# keys a study may still carry from an earlier xlt: what to write instead
RETIRED = {
    "train.checkpoint": "renamed to train.save_model (it only ever controlled saving the final model)",
    "train.n_best": "removed: span decoding is exact over the whole band, so nothing bounds it",
}
# what a retired key became (None: nothing), for specs an earlier xlt saved in a run directory
RETIRED_TO = {"train.checkpoint": "train.save_model", "train.n_best": None}


def migrate_saved(tree: dict[str, Any]) -> dict[str, Any]:
    """A spec an earlier xlt wrote (a run directory's spec.json) as this version writes it: a
    user's study file with a retired key is an error, but a run made before the rename must still
    resume (its trials ran with the same settings under the old names)."""
    tree = copy.deepcopy(tree)
    for dotted, new in RETIRED_TO.items():
        *parents, leaf = dotted.split(".")
        node: Any = tree
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node:
            value = node.pop(leaf)
            if new is not None:
                set_path(tree, new, value)
    # search.seeds defaulted to [0] before it defaulted to train.seed: [0] with train.seed 0 is
    # today's default (a run that set another train.seed ran with seed 0: its spec keeps [0])
    search, train = tree.get("search"), tree.get("train")
    if isinstance(search, dict) and search.get("seeds") == [0] and (train or {}).get("seed", 0) == 0:
        search["seeds"] = None
    return tree


def _retired(tree: dict[str, Any]) -> str | None:
    for dotted, why in RETIRED.items():
        node: Any = tree
        for part in dotted.split("."):
            node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
        if node is not _MISSING:
            return f"{dotted}: {why}"
    return None


_MISSING = object()


def spec_from_dict(tree: dict[str, Any], origin: str = "<spec>") -> StudySpec:
    retired = _retired(tree)
    if retired:
        raise XltError(f"{origin}: {retired}")
    try:
        return StudySpec.model_validate(tree)
    except ValidationError as e:
        raise XltError(f"{origin}: {_first_error(e, tree)}") from None


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> StudySpec:
    tree = read_yaml(path)
    tree = apply_overrides(tree, overrides)
    return spec_from_dict(tree, str(path))


def apply_overrides(tree: dict[str, Any], overrides: list[str] | tuple[str, ...] | dict[str, Any]) -> dict[str, Any]:
    tree = copy.deepcopy(tree)
    items = overrides.items() if isinstance(overrides, dict) else (parse_override(o) for o in overrides)
    for key, value in items:
        set_path(tree, key, value)
    return tree


def _first_error(e: ValidationError, tree: dict[str, Any]) -> str:
    err = e.errors()[0]
    loc = [str(p) for p in err["loc"]]
    # pydantic puts a tagged union's tag into loc (claims.0.order.margin): drop it, and look up keys
    # for suggestions in the claim kind's own model
    root: type[BaseModel] = StudySpec
    start = 0
    if len(loc) > 2 and loc[0] == "claims" and loc[2] in CLAIM_KINDS:
        root, start = CLAIM_KINDS[loc[2]], 2
        loc = loc[:2] + loc[3:]
    for i in range(1, len(loc)):  # adapt.target_text.corpus.max_lines -> adapt.target_text.max_lines
        if loc[i] in _TEXT_TAGS and loc[i - 1] in ("source_text", "target_text"):
            loc = loc[:i] + loc[i + 1:]
            break
    path = ".".join(loc)
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        parent, key = loc[start:-1], loc[-1]
        hint = _suggest(key, _fields_at(parent, root))
        return f"{path}: unknown key{hint}"
    if err["type"] == "missing":
        return f"{path}: required key is missing"
    if err["type"] in ("union_tag_not_found", "union_tag_invalid"):
        tags = ", ".join(CLAIM_KINDS) if loc[:1] == ["claims"] else err.get("ctx", {}).get("expected_tags", "")
        got = err.get("ctx", {}).get("tag")
        return f"{path}.kind: " + (f"must be one of {tags}, got {got!r}" if got is not None
                                    else f"required key is missing (one of {tags})")
    got = err.get("input")
    shown = "" if isinstance(got, dict | list) or got is None else f", got {got!r}"
    bound = {"greater_than": "must be > {gt}", "greater_than_equal": "must be >= {ge}",
             "less_than": "must be < {lt}", "less_than_equal": "must be <= {le}"}.get(err["type"])
    if bound is not None:
        ctx = {k: f"{v:g}" if isinstance(v, float) else v for k, v in err.get("ctx", {}).items()}
        msg = bound.format(**ctx)
    return f"{path}: {msg}{shown}" if path else f"{msg}{shown}"


def _fields_at(loc: list[str], root: type[BaseModel] | None = None) -> list[str]:
    model: Any = root or StudySpec
    for part in loc:
        if part.isdigit():
            continue
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return []
        model = _model_in(field.annotation)
        if model is None:
            return []
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _suggest(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def trial_spec(spec: StudySpec, params: dict[str, Any]) -> StudySpec:
    """The study's spec with a trial's parameters (dotted keys) set."""
    tree = apply_overrides(spec.model_dump(mode="json", exclude_none=True), params)
    return spec_from_dict(tree, f"trial {params}")


# ---------------------------------------------------------------- what adaptation trials share
# Trials that agree on these share one adaptation step 1 / step 3 through the artifact cache:
# xlt.train.adapt keys the cache with them, xlt.study.estimate prices each once.


def step1_identity(spec: StudySpec, method: str) -> dict[str, Any]:
    """What step 1 of `method` depends on, the source text's content aside."""
    a, t = spec.adapt, spec.train
    assert a is not None
    return {"model": spec.model.model_dump(mode="json"), "method": method,
            "primary_step1": a.primary_step1 if method in ("base_large", "mini_post") else None,
            "depth": a.depth if method != "base_large" else None, "step1": a.step1.model_dump(mode="json"),
            "seed": t.seed, "mlm": a.mlm_probability, "dropout": t.dropout,
            # only when set, so step-1 artifacts cached before the key existed still match
            **({"attention_dropout": t.attention_dropout} if t.attention_dropout is not None else {})}


def primary_method(method: str) -> str:
    """Whose step-1 primary a method fine-tunes in step 3: MiniPost's is BaseLarge's (its English
    phase does not depend on k), so the two share step 3."""
    return "base_large" if method == "mini_post" else method


def step3_identity(spec: StudySpec) -> dict[str, Any]:
    """What step 3 depends on besides its primary: the QA training and the non-target data."""
    return {"train": spec.train.model_dump(mode="json"),
            "data": spec.data.model_dump(mode="json", exclude={"target", "target_count", "target_fraction"})}
