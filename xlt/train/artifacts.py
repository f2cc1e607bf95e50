"""A content-addressed cache of pipeline artifacts (adaptation steps 1 and 3, tokenized QA features).

An artifact is a directory named by the hash of everything that produced it. It is built in
a temporary sibling and renamed into place, so a reader sees a complete artifact or none,
and two trials racing to build the same one both end up using one complete copy. The root
can be on shared storage so that every node of a cluster reuses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import xlt


def content_key(**parts: Any) -> str:
    blob = json.dumps({"xlt": xlt.__version__, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def file_fingerprint(paths: list[str]) -> list[tuple[str, int, str]]:
    """Path, size and a hash of the head of each file: cheap, and changes when the text does."""
    out = []
    for p in paths:
        with open(p, "rb") as f:
            head = f.read(1 << 20)
        out.append((str(p), os.path.getsize(p), hashlib.sha256(head).hexdigest()[:16]))
    return out


def _digests(root: Path) -> dict[str, list[Any]]:
    """Relative path -> [size, sha256] of every file under `root` but meta.json."""
    out: dict[str, list[Any]] = {}
    for f in sorted(root.rglob("*")):
        if f.is_file() and f.name != "meta.json":
            h = hashlib.sha256()
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 22), b""):
                    h.update(chunk)
            out[str(f.relative_to(root))] = [f.stat().st_size, h.hexdigest()]
    return out


def damage(path: Path, meta: dict[str, Any]) -> str | None:
    """What is wrong with an artifact against the checksums written with it (None: nothing). An
    entry from before checksums were written has none to check."""
    want = meta.get("_files")
    if want is None:
        return None
    have = _digests(path)
    for name, (size, digest) in want.items():
        if name not in have:
            return f"{name} is missing"
        if have[name][0] != size:
            return f"{name} has {have[name][0]} bytes, {size} were written"
        if have[name][1] != digest:
            return f"{name} does not match its checksum"
    return None


# A writer holds its temporary directory only while it writes the files (seconds to minutes;
# training happens before): one untouched this long belongs to a killed writer.
STALE_SECONDS = 6 * 3600


class ArtifactCache:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._verified: set[tuple[str, int]] = set()

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def get(self, kind: str, key: str) -> tuple[Path, dict[str, Any]] | None:
        """The artifact and its metadata; None when there is none, or when it is damaged (a torn
        meta.json, a file truncated or changed since it was written): then it is moved aside with
        a line saying so, and the caller builds it again. Verified once per process and entry."""
        p = self.path(kind, key)
        meta_file = p / "meta.json"
        if not meta_file.exists():
            return None
        try:
            meta = json.loads(meta_file.read_text())
            if not isinstance(meta, dict):
                raise ValueError("not an object")
        except (OSError, ValueError) as e:
            self._damaged(kind, key, f"meta.json is unreadable ({str(e).splitlines()[0]})")
            return None
        stamp = (str(p), meta_file.stat().st_mtime_ns)
        if stamp not in self._verified:
            why = damage(p, meta)
            if why:
                self._damaged(kind, key, why)
                return None
            self._verified.add(stamp)
        return p, meta

    def _damaged(self, kind: str, key: str, why: str) -> None:
        print(f"xlt: cache: {kind}/{key} is damaged ({why}): moved aside, building it again", file=sys.stderr)
        self.discard(kind, key)

    def put(self, kind: str, key: str, write: Callable[[Path], dict[str, Any]]) -> tuple[Path, dict[str, Any]]:
        """`write(tmp_dir)` fills the directory and returns its metadata."""
        final = self.path(kind, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        self.sweep(kind)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key}."))
        try:
            meta = {**write(tmp)}
            meta["_files"] = _digests(tmp)  # checked on every first read: a damaged copy is rebuilt
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            for _ in range(2):
                try:
                    os.rename(tmp, final)
                    break
                except OSError:
                    if (final / "meta.json").exists():  # another trial finished the same artifact first: use theirs
                        shutil.rmtree(tmp, ignore_errors=True)
                        break
                    # what is there is no artifact (a torn copy of the cache, say): replace it
                    self.discard(kind, key)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final, json.loads((final / "meta.json").read_text())

    def sweep(self, kind: str, older_than: float = STALE_SECONDS) -> list[Path]:
        """Remove the temporary directories killed writers left under `kind`; returns them."""
        gone = []
        now = time.time()
        for p in (self.root / kind).glob(".*"):
            try:
                stale = p.is_dir() and now - p.stat().st_mtime > older_than
            except OSError:  # another sweeper was first
                continue
            if stale:
                shutil.rmtree(p, ignore_errors=True)
                gone.append(p)
        return gone

    def discard(self, kind: str, key: str) -> None:
        """Remove an artifact found damaged, so the next `put` can replace it. It is first renamed
        aside (atomic: a trial reading it meanwhile keeps its open files, and of two trials that
        found it damaged one moves it and the other sees it gone)."""
        final = self.path(kind, key)
        aside = final.with_name(f".{key}.discarded.{os.getpid()}")
        try:
            os.rename(final, aside)
        except OSError:
            return
        shutil.rmtree(aside, ignore_errors=True)


class Cached:
    """One artifact of a cache, decided once: `hit` is rank 0's view of whether it exists, shared
    with every rank (`agree`), since a miss trains, data-parallel, on every rank."""

    def __init__(self, cache: ArtifactCache, kind: str, key: str, agree: Callable[[bool], bool] = lambda v: v):
        self.cache, self.kind, self.key = cache, kind, key
        self.hit = agree(cache.get(kind, key) is not None)

    @property
    def path(self) -> Path:
        return self.cache.path(self.kind, self.key)

    def get_or_build(self, build: Callable[[], tuple[Any, dict[str, Any]]], write: Callable[[Any, Path], None],
                     load: Callable[[Path, dict[str, Any]], Any], *, writer: bool = True,
                     barrier: Callable[[], None] | None = None) -> Any:
        """`load(path, meta)` on a hit; on a miss `build()` gives (value, meta), and the `writer`
        rank stores it (`write(value, tmp_dir)`, then meta.json); `barrier` then waits for every
        rank (one restarted later must find the artifact)."""
        if self.hit:
            found = self.cache.get(self.kind, self.key)
            if found is None:  # rank 0 saw it: this node does not share the cache directory
                from xlt.errors import XltError

                raise XltError(f"cache_dir: {self.cache.root} is not shared by every node of the trial")
            return load(*found)
        value, meta = build()
        if writer:
            def fill(tmp: Path) -> dict[str, Any]:
                write(value, tmp)
                return meta

            self.cache.put(self.kind, self.key, fill)
        if barrier is not None:
            barrier()
        return value


def trained_tokenizer(cache: ArtifactCache | None, texts: list[str], vocab_size: int, kind: str = "wordpiece"):
    """`tokenization.train_tokenizer`, made once per cache for the same texts and settings.

    Training is not deterministic (four runs on the same texts gave four vocabularies), so trials
    that should differ only in what a study varies must share one: every caller loads the copy
    that won the race into the cache."""
    from xlt.tokenization import load_tokenizer, train_tokenizer

    if cache is None:
        return train_tokenizer(texts, vocab_size, kind=kind)
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass") + b"\n")
    key = content_key(kind="tokenizer", texts=h.hexdigest(), n=len(texts), vocab_size=vocab_size, tokenizer=kind)

    def build():
        tok = train_tokenizer(texts, vocab_size, kind=kind)
        return tok, {"vocab": len(tok)}

    entry = Cached(cache, "tokenizer", key)
    entry.get_or_build(build, lambda tok, tmp: tok.save_pretrained(tmp), _loaded_later)
    return load_tokenizer(str(entry.path))  # the copy that won the race into the cache


def _loaded_later(path: Path, meta: dict[str, Any]) -> Any:
    return None  # trained_tokenizer loads the cached copy itself, hit or miss
