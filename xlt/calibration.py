"""Measured throughput (`xlt calibrate`) as `xlt estimate` reads it: plain JSON, torch-free.

`${XLT_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/xlt}/throughput.json` holds, per device kind and
threads per worker (`cpu/1t`, `gpu/1t`), the train and evaluation FLOP/s `xlt calibrate`
measured and where. The estimate's throughput comes from, in order: the study's `throughput:`,
this file, the assumed defaults; it says which.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

FILE = "throughput.json"


def path() -> Path:
    root = os.environ.get("XLT_CACHE_DIR") or str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "xlt")
    return Path(root) / FILE


def key(kind: str, threads: int) -> str:
    return f"{kind}/{threads}t"


def study_threads(spec: Any) -> int:
    """Threads one worker of the study trains with: `train.threads`, else its CPUs per worker."""
    if spec is None:
        return 1
    return int(spec.train.threads or max(1, round(spec.resources.cpus_per_worker)))


def device_name(kind: str) -> str:
    if kind == "cuda":
        import torch

        return f"cuda:{torch.cuda.get_device_name()}"
    return f"cpu:{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def load() -> dict[str, Any]:
    try:
        data = json.loads(path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def store(kind: str, threads: int, measured: dict[str, Any]) -> Path:
    data = load()
    data[key(kind, threads)] = measured
    p = path()
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{FILE}.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, p)
    return p


def measured(kind: str, threads: int) -> dict[str, Any] | None:
    entry = load().get(key(kind, threads))
    ok = isinstance(entry, dict) and all(isinstance(entry.get(k), int | float) and entry[k] > 0
                                         for k in ("train_flops_per_s", "eval_flops_per_s"))
    return entry if ok else None
