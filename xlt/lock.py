"""One driver per run directory: `xlt run` and `xlt trial --out` hold `DIR/driver.lock` while they run.

The lock names its holder (host, pid, the process's start time, command, since) and carries a
heartbeat (the file's mtime, touched every HEARTBEAT_S). A second driver is refused in one line
naming the live one. A lock left behind is taken over, with a line saying so, when its driver
is gone: on this host, its pid is not running (or runs a different process: the start time
differs, the pid was reused); on another host, whose processes cannot be seen, its heartbeat is
older than STALE_S. The lock is created with O_EXCL, and a takeover moves the dead driver's lock
aside by rename, so of two drivers racing for one directory exactly one wins.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from xlt.errors import XltError

LOCK = "driver.lock"
HEARTBEAT_S = 20.0
STALE_S = 120.0  # another host's lock without a heartbeat for this long belongs to a dead driver


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux /proc), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the name in (...) may hold spaces


def _running(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    return start is None or _start_time(pid) in (None, start)


def holder(path: Path) -> dict[str, Any] | None:
    """Who holds the lock (None: no lock). An unreadable lock (torn while written) counts as held
    by an unknown driver whose heartbeat is the file's mtime."""
    try:
        mtime = path.stat().st_mtime
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        data = {}
    return {**data, "heartbeat": mtime}


def gone(h: dict[str, Any], now: float | None = None) -> bool:
    """Whether the driver holding the lock `h` has stopped."""
    now = time.time() if now is None else now
    if h.get("host") == socket.gethostname() and isinstance(h.get("pid"), int):
        return not _running(h["pid"], h.get("start"))
    return now - h["heartbeat"] > STALE_S


def describe(h: dict[str, Any]) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h["since"])) if "since" in h else "unknown"
    return (f"{h.get('command', 'a driver')} (pid {h.get('pid', '?')} on {h.get('host', '?')}, since {since}, "
            f"last heartbeat {time.time() - h['heartbeat']:.0f} s ago)")


def _create(path: Path, me: dict[str, Any]) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(me, f)
    return True


def acquire(out: Path, command: str) -> dict[str, Any]:
    """Take the run directory's lock (creating the directory), or raise the one-line error."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise XltError(f"{out}: cannot create the run directory ({e.strerror or e})") from None
    path = out / LOCK
    me = {"host": socket.gethostname(), "pid": os.getpid(), "start": _start_time(os.getpid()),
          "command": command, "since": time.time()}
    for _ in range(3):
        if _create(path, me):
            return me
        h = holder(path)
        if h is None:
            continue  # released in between
        if not gone(h):
            raise XltError(f"{out}: in use by {describe(h)}: wait for it to finish or stop it, "
                           "or choose another --out")
        aside = path.with_name(f"{LOCK}.stale-{os.getpid()}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            continue  # another driver moved it first
        moved = holder(aside) or {}
        if moved.get("since") != h.get("since") or moved.get("pid") != h.get("pid"):
            os.rename(aside, path)  # a racer's fresh lock, not the dead one: give it back
            continue
        aside.unlink()
        print(f"xlt: {out}: taking over the lock of {describe(h)}, which is gone", file=sys.stderr)
    raise XltError(f"{out}: could not take the run directory's lock ({path}): another driver keeps taking it")


def release(out: Path, me: dict[str, Any]) -> None:
    h = holder(out / LOCK)
    if h is not None and h.get("pid") == me["pid"] and h.get("since") == me["since"]:
        with contextlib.suppress(FileNotFoundError):
            (out / LOCK).unlink()


@contextlib.contextmanager
def held(out: Path, command: str) -> Iterator[None]:
    """The lock for the block, its heartbeat touched every HEARTBEAT_S by a daemon thread. A run
    directory made only to hold the lock is removed again if the block wrote nothing into it (a
    run refused before it started leaves no trace: the same --out works once the cause is fixed)."""
    created = not out.exists()
    me = acquire(out, command)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(out / LOCK)

    thread = threading.Thread(target=beat, name="xlt-lock-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        release(out, me)
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()  # only when empty
