"""The results table: the contract between training and dashboards.

One row per evaluation event and evaluation set (long format, so a study may have any
number of eval sets). Training appends rows to an append-only JSON-lines log
(``rows.jsonl``: one fsync'ed line per row, so a crash loses at most the line being
written); ``results.parquet`` is compacted from the log with a temp file and a rename, so
a reader always sees a complete table.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from xlt import layout
from xlt.errors import DiskFull, XltError

SCHEMA_VERSION = 1
ROWS_LOG, TABLE = layout.ROWS_LOG, layout.TABLE

# name -> type ("str", "int", "float", "bool"); every row has all of them (None where unknown)
COLUMNS: dict[str, str] = {
    "schema_version": "int",
    # who
    "study": "str",
    "run_id": "str",
    "trial_id": "str",
    "task": "str",
    "params": "str",  # JSON of the trial's searched parameters (dotted keys)
    "model": "str",
    "method": "str",  # QA: "finetune"; adaptation: base_large | mini_joint | mini_post | base_small
    "depth": "int",
    "lr": "float",
    "train_mode": "str",  # fixed | validated
    "target_lang": "str",
    "target_count": "int",  # target-language training questions actually used
    "target_fraction": "float",
    "with_english": "bool",
    "seed": "int",
    # when
    "stage": "str",  # qa | step3 | step2 (step-4 evaluations of the step-2 embeddings) | final
    "event": "int",  # evaluation event index within the trial
    "step": "int",  # optimizer steps within the stage
    "epoch": "float",
    "examples_seen": "int",
    "tokens_real": "int",  # non-pad tokens through training so far (all stages)
    "tokens_padded": "int",  # positions computed, padding included
    "flops_train": "float",  # analytical training FLOPs so far, all stages
    "flops_stage": "float",  # analytical training FLOPs so far in this stage
    "flops_eval": "float",  # analytical FLOPs of evaluation so far
    "padding_share": "float",  # share of training FLOPs spent on padding so far
    "wall_seconds": "float",  # trial wall time so far
    "pipeline_seconds": "float",  # time inside the pipeline (training + evaluation)
    "device_seconds": "float",  # wall seconds x devices
    "device_kind": "str",  # cpu | cuda:<name> | mps
    "n_devices": "int",
    # peak accelerator memory of the trial's process so far (torch.cuda.max_memory_allocated, bytes);
    # None on CPU
    "peak_memory_bytes": "int",
    # what
    "eval_set": "str",
    "eval_lang": "str",
    "metric_mode": "str",
    "exact_match": "float",
    "f1": "float",
    "n_examples": "int",
    "is_best": "bool",  # the point validated mode keeps
    "is_final": "bool",  # the trial's final score for this eval set
    "train_loss": "float",
    # adaptation, step-2 rows: masked-LM loss / top-1 accuracy (%) on held-out text through the
    # model step 2 trains; on the target text as it stands, and on English before the swap (step 1's)
    "mlm_loss": "float",
    "mlm_accuracy": "float",
    "source_mlm_loss": "float",
    "source_mlm_accuracy": "float",
    # provenance
    "spec_hash": "str",
    "xlt_version": "str",
    "git_commit": "str",
    "packages": "str",  # JSON {name: version}
    "hardware": "str",
    "time": "float",  # unix time of the event
}


# columns added within schema version 1: a table written before them reads with them empty
ADDED = ("mlm_loss", "mlm_accuracy", "source_mlm_loss", "source_mlm_accuracy")


def normalize_row(row: dict[str, Any]) -> dict[str, Any]:
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise ValueError(f"result row has unknown columns {sorted(unknown)}")
    out = {k: row.get(k) for k in COLUMNS}
    out["schema_version"] = SCHEMA_VERSION
    return out


def is_disk_full(e: BaseException) -> bool:
    """ENOSPC or a quota, as the OS says it or as pyarrow (Tune's checkpoint copy) words it."""
    return isinstance(e, OSError) and (e.errno in (errno.ENOSPC, errno.EDQUOT) or any(
        w in str(e) for w in ("No space left on device", "Disk quota exceeded")))


def append_rows(run_dir: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Append rows to the log, fsync'ed. A write that fails (a full disk) is cut back off, so no
    torn line is left for the next append to run into; a line torn by a crash is ended first."""
    path = Path(run_dir) / ROWS_LOG
    data = "".join(json.dumps(normalize_row(r), ensure_ascii=False) + "\n" for r in rows).encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as e:
            os.ftruncate(fd, size)
            if is_disk_full(e):
                raise DiskFull(f"disk full: {e.strerror or e} appending {len(data)} bytes of rows to {path}") from None
            raise
    finally:
        os.close(fd)


def read_log(run_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of the log; a torn line (crash mid-write, maybe inside a UTF-8 character) or any other
    line that is not a JSON object is ignored."""
    path = Path(run_dir) / ROWS_LOG
    if not path.exists():
        return []
    rows = []
    for line in path.read_bytes().splitlines():
        try:
            row = json.loads(line.decode("utf-8"))
        except ValueError:  # JSONDecodeError, UnicodeDecodeError
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_table(run_dir: str | Path, rows: list[dict[str, Any]] | None = None) -> Path:
    """Compact the row log (or the given rows) into results.parquet, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = read_log(run_dir) if rows is None else rows
    types = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}
    schema = pa.schema([(k, types[t]) for k, t in COLUMNS.items()])
    table = pa.Table.from_pylist([normalize_row(r) for r in rows], schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    out = Path(run_dir) / TABLE
    atomic_write_bytes(out, sink.getvalue().to_pybytes())
    return out


def read_table(path: str | Path):  # -> pandas.DataFrame
    """Read results.parquet (or a run directory holding one); errors are one line."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if path.is_dir():
        if not (path / TABLE).exists() and (path / ROWS_LOG).exists():
            try:
                write_table(path)
            except (ValueError, TypeError, pa.ArrowException) as e:  # rows of another schema or types
                raise XltError(f"{path / ROWS_LOG}: cannot build the results table ({str(e).splitlines()[0]})") from None
        path = path / TABLE
    if not path.exists():
        raise XltError(f"{path}: no results table (has the study run?)")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        log = path.with_name(ROWS_LOG)
        if not log.exists():
            raise XltError(f"{path}: not a readable parquet file ({str(e).splitlines()[0]})") from None
        # the table is compacted from the log: a torn or corrupt copy is rebuilt, nothing is lost
        import sys

        print(f"xlt: {path}: not a readable parquet file ({str(e).splitlines()[0]}); rebuilt from {ROWS_LOG}",
              file=sys.stderr)
        write_table(path.parent)
        table = pq.read_table(path)
    for c in ADDED:
        if c not in table.column_names:
            table = table.append_column(c, pa.nulls(len(table), pa.float64()))
    missing = [c for c in COLUMNS if c not in table.column_names]
    version = table.column("schema_version")[0].as_py() if "schema_version" in table.column_names and len(table) else None
    if missing or (version is not None and version != SCHEMA_VERSION):
        raise XltError(
            f"{path}: results schema version {version} is not {SCHEMA_VERSION}"
            + (f" (missing columns: {', '.join(missing[:5])})" if missing else "")
        )
    return table.to_pandas()


# ---------------------------------------------------------------- provenance


def provenance() -> dict[str, Any]:
    """Columns that say what produced a row; computed once per trial."""
    from importlib import metadata

    import xlt

    versions = {}
    for name in ("torch", "transformers", "ray", "optuna", "datasets", "tokenizers"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {
        "xlt_version": xlt.__version__,
        "git_commit": _git_commit(),
        "packages": json.dumps(versions, sort_keys=True),
        "hardware": f"{platform.machine()} {os.cpu_count()} cpus, {platform.system()} {platform.release()}",
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
