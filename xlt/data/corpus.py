"""Adaptation text from `datasets`, by streaming: a hub corpus (CC-100, Wikipedia) or a packaged
builder (`text`, `json`, `parquet` with data_files), one code path for both.

One global order of lines: the stream (rows split into non-empty lines, as local text files are)
through `IterableDataset.shuffle(seed, buffer_size)`, cut at a line or token budget. Rank r of W
keeps the lines whose index in that order is r mod W. `datasets`' own sharding is not used for
this: `split_dataset_by_node` and `IterableDataset.shard` hand out whole file shards when the
corpus has enough of them, so which lines a rank sees (and their order) would change with W, and
the budget would be spent per rank. Striding one global order keeps the union of the ranks' lines,
and the budget, the same for every W.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from xlt import derived
from xlt.errors import XltError


def open_stream(dataset: str, *, config: str | None = None, data_files: str | list[str] | tuple[str, ...] | None = None,
                split: str = "train", revision: str | None = None, text_field: str = "text", seed: int = 0,
                shuffle_buffer: int = 0) -> Iterator[str]:
    """The corpus's rows' `text_field`, streamed (shuffled with a seeded buffer when asked)."""
    import datasets

    where = f"{dataset}" + (f":{config}" if config else "") + f":{split}"
    kwargs: dict[str, Any] = {"split": split, "streaming": True}
    if data_files:
        kwargs["data_files"] = list(data_files) if isinstance(data_files, list | tuple) else data_files
    if revision:
        kwargs["revision"] = revision
    try:
        ds = datasets.load_dataset(dataset, config, **kwargs)
    except Exception as e:  # hub, network, unknown-name and missing-file errors come in many types
        raise XltError(f"text corpus {where}: cannot open ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})") from None
    if shuffle_buffer:
        ds = ds.shuffle(seed=seed, buffer_size=shuffle_buffer)
    first = True
    for row in ds:
        if first and text_field not in row:
            raise XltError(f"text corpus {where}: no column '{text_field}' (has {', '.join(row) or 'none'}); "
                           "set text_field")
        first = False
        value = row[text_field]
        if value is not None:
            yield str(value)


def budget_lines(rows: Iterator[str], *, max_lines: int | None = None, max_tokens: int | None = None) -> Iterator[str]:
    """Non-empty lines of the rows, in order, until the budget is spent: `max_lines` lines, or the
    line that brings the estimated tokens (derived.text_tokens) to `max_tokens`."""
    n, tokens = 0, 0.0
    for row in rows:
        for line in row.splitlines():
            if not line.strip():
                continue
            yield line
            n += 1
            tokens += derived.text_tokens(line)
            if (max_lines is not None and n >= max_lines) or (max_tokens is not None and tokens >= max_tokens):
                return


def corpus_lines(dataset: str, *, rank: int = 0, world: int = 1, max_lines: int | None = None,
                 max_tokens: int | None = None, **stream: Any) -> list[str]:
    """Rank `rank`'s share (every `world`-th line) of the corpus's one global, budgeted order."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in a world of {world}")
    if max_lines is None and max_tokens is None:
        raise XltError(f"text corpus {dataset}: no budget (max_lines or max_tokens)")
    lines = budget_lines(open_stream(dataset, **stream), max_lines=max_lines, max_tokens=max_tokens)
    out = [ln for i, ln in enumerate(lines) if i % world == rank]
    if not out and rank == 0:
        raise XltError(f"text corpus {dataset}: no non-empty lines to train on")
    return out


def corpus_files(data_files: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """The local files among a corpus's data_files (globs expanded), for its content fingerprint;
    URLs and hub paths are named, not read."""
    import glob

    if not data_files:
        return []
    items = [data_files] if isinstance(data_files, str) else list(data_files)
    out: list[str] = []
    for item in items:
        if "://" in item:
            continue
        matches = sorted(glob.glob(item)) if glob.has_magic(item) else [item]
        if not matches:
            raise XltError(f"text corpus data_files {item}: no file matches")
        out += matches
    return out
