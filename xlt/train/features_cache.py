"""Tokenized QA features, content-addressed, so trials over the same data and tokenizer share them.

The key is what `features.build_features` reads: the tokenizer's full serialized state (not its
name: tiny-model studies train a tokenizer per trial, and training need not be deterministic),
every field of every example, the train/eval flag, the window settings, the code that builds
the windows, and xlt's version. Entries live in an `ArtifactCache` under `features/<key>`; a
cache of None builds every time (library callers and the benchmark, which times preparation).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xlt.data import features as F
from xlt.data.squad import Example
from xlt.train.artifacts import ArtifactCache, content_key

KIND = "features"
FILE = "features.safetensors"


def tokenizer_fingerprint(tokenizer) -> str | None:
    """A hash of everything about a fast tokenizer that changes its output; None for a tokenizer
    without a serializable backend (nothing is cached for it)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    import tokenizers
    import transformers

    try:
        state = json.loads(backend.to_str())
    except Exception:  # a custom (Python) component cannot be serialized: no identity, so no caching
        return None
    # transformers sets these on the backend at every call from the call's arguments: they say how
    # the last call ran, not who the tokenizer is (and they differ before and after a first build)
    state.pop("truncation", None)
    state.pop("padding", None)
    h = hashlib.sha256(json.dumps(state, sort_keys=True, ensure_ascii=False).encode())
    # the Python wrapper decides the pair order, the returned fields (token_type_ids) and more
    h.update(json.dumps({
        "class": type(tokenizer).__name__, "padding_side": tokenizer.padding_side,
        "truncation_side": getattr(tokenizer, "truncation_side", None),
        "model_input_names": list(tokenizer.model_input_names),
        "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
    }, sort_keys=True).encode())
    return h.hexdigest()


def examples_fingerprint(examples: Sequence[Example]) -> str:
    """The ids and what the windows are made of; order matters (a window names its example by position)."""
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e.id, e.question, e.context, e.answers], ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def _code_fingerprint() -> str:
    # xlt's version alone does not change while features.py is being worked on
    return hashlib.sha256(Path(F.__file__).read_bytes()).hexdigest()[:16]


def features_key(tokenizer_id: str, examples: Sequence[Example], *, train: bool, max_seq_length: int,
                 doc_stride: int, max_query_length: int) -> str:
    return content_key(kind=KIND, code=_code_fingerprint(), tokenizer=tokenizer_id,
                       examples=examples_fingerprint(examples), n_examples=len(examples), train=train,
                       max_seq_length=max_seq_length, doc_stride=doc_stride, max_query_length=max_query_length)


def cached_features(cache: ArtifactCache | None, tokenizer, examples: Sequence[Example], *, train: bool,
                    max_seq_length: int, doc_stride: int, max_query_length: int,
                    tokenizer_id: str | None = None) -> F.Features:
    """`features.build_features`, through `cache` when there is one. `tokenizer_id`: the
    tokenizer's fingerprint when the caller already has it (hashing a large vocabulary is not free)."""
    window = dict(max_seq_length=max_seq_length, doc_stride=doc_stride, max_query_length=max_query_length)
    if cache is not None and tokenizer_id is None:
        tokenizer_id = tokenizer_fingerprint(tokenizer)
    if cache is None or tokenizer_id is None:
        return F.build_features(tokenizer, examples, train=train, **window)
    key = features_key(tokenizer_id, examples, train=train, **window)
    hit = cache.get(KIND, key)
    if hit is not None:
        feats = _load(hit[0], hit[1], len(examples))
        if feats is not None:
            return feats
        cache.discard(KIND, key)
    feats = F.build_features(tokenizer, examples, train=train, **window)

    def write(tmp: Path) -> dict[str, Any]:
        F.save_features(feats, tmp / FILE)
        return {"windows": len(feats), "tokens": sum(feats.lengths), "examples": len(examples), "train": train,
                **window}

    try:
        cache.put(KIND, key, write)
    except OSError as e:  # a full or read-only cache costs the reuse, not the trial
        print(f"xlt: features cache {cache.root}: not stored ({e})", file=sys.stderr)
    return feats


def _load(path: Path, meta: dict[str, Any], n_examples: int) -> F.Features | None:
    """The entry's features, or None (with a warning) when they do not match its metadata: an
    entry that fails to load is rebuilt, never half-used. (Its bytes were checked against the
    checksums written with it when the cache found it: a flipped bit would load as other ids.)"""
    try:
        feats = F.load_features(path / FILE)
        if (len(feats) != meta["windows"] or sum(feats.lengths) != meta["tokens"]
                or meta["examples"] != n_examples or any(not 0 <= i < n_examples for i in feats.example_index)):
            raise ValueError("contents do not match meta.json")
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"xlt: features cache entry {path} is damaged ({e}); rebuilding it", file=sys.stderr)
        return None
    return feats
