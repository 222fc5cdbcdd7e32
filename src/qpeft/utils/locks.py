"""One owner per folder: a lock file that names the process holding it.

``hold_lock(folder)`` creates ``folder/.qpeft.lock`` holding the owner's host, PID and process
start time. It is created complete in one step (written under a private name, then hard-linked
into place: ``link`` fails when the name exists, on local disks and NFS alike), so a second
process never sees a half-written lock. That process is refused in one line naming the owner.
A lock whose owner is gone (same host, no process with that PID and start time) was left by a
killed run: it is taken over, under an ``flock`` on a guard file so that two processes taking
over at once cannot remove each other's fresh lock. A lock from another host cannot be
checked and is never taken over; the message says how to remove it.

The same process may hold a folder's lock more than once (``compare`` runs the baselines in its
own process); the file goes when the outermost holder lets go.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from qpeft.utils.errors import UsageError

LOCK_FILE = ".qpeft.lock"
GUARD_FILE = ".qpeft.lock.guard"
#: The files the lock adds to a folder: a folder holding only these is still an empty one.
LOCK_FILES = (LOCK_FILE, GUARD_FILE)

_held: dict[Path, int] = {}


class FolderInUse(UsageError):
    """Another live process holds the folder's lock (a tuning worker waits for it instead of failing)."""


def process_start_time(pid: int) -> str | None:
    """The start time of a process in clock ticks since boot (Linux), to tell a reused PID apart; None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the name before ")" may hold spaces


def this_owner() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": process_start_time(os.getpid())}


def is_alive(owner: dict[str, Any]) -> bool:
    """Whether the owner of a lock on this host is still running (the same PID and the same start time)."""
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    started = owner.get("started")
    return started is None or process_start_time(pid) in (None, started)


def read_owner(lock: Path) -> dict[str, Any] | None:
    """The owner a lock file names; None when it is gone or unreadable (a file on disk is untrusted input)."""
    try:
        owner = json.loads(lock.read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def _create(lock: Path, owner: dict[str, Any]) -> bool:
    """Create the lock complete in one step; False when it exists already."""
    private = lock.with_name(f"{lock.name}.{owner['host']}.{owner['pid']}")
    private.write_text(json.dumps(owner) + "\n")
    try:
        os.link(private, lock)
    except FileExistsError:
        return False
    finally:
        private.unlink()
    return True


def _remove_if_stale(folder: Path, seen: dict[str, Any]) -> None:
    """Remove the lock if it still names the dead owner ``seen`` (under the guard: one remover at a time)."""
    with open(folder / GUARD_FILE, "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if read_owner(folder / LOCK_FILE) == seen:
            (folder / LOCK_FILE).unlink()


def acquire(folder: Path) -> None:
    """Take ``folder``'s lock, or raise a one-line ``UsageError`` naming the process that holds it."""
    folder = Path(folder).resolve()
    if _held.get(folder):
        _held[folder] += 1
        return
    folder.mkdir(parents=True, exist_ok=True)
    lock, owner = folder / LOCK_FILE, this_owner()
    for _ in range(5):  # each pass either takes the lock, refuses, or clears a stale one
        if _create(lock, owner):
            _held[folder] = 1
            return
        found = read_owner(lock)
        if found is None:
            continue  # removed between our link and our read, or not a lock we can read
        if found.get("host") == owner["host"] and found.get("pid") == owner["pid"]:
            _held[folder] = 1  # ours, from an earlier holder in this process that did not let go
            return
        if found.get("host") == owner["host"] and not is_alive(found):
            _remove_if_stale(folder, found)
            continue
        raise FolderInUse(f"{folder} is in use by process {found.get('pid')} on {found.get('host')}; wait for it to "
                         f"finish, or remove {lock} if that process is gone")
    raise UsageError(f"could not take the lock {lock}; remove it if no qpeft process uses {folder}")


def release(folder: Path) -> None:
    folder = Path(folder).resolve()
    count = _held.get(folder, 0)
    if count > 1:
        _held[folder] = count - 1
        return
    _held.pop(folder, None)
    if count and read_owner(folder / LOCK_FILE) == this_owner():
        # The guard stays: another process may be waiting on its flock right now.
        (folder / LOCK_FILE).unlink()


@contextlib.contextmanager
def hold_lock(folder: Path) -> Iterator[None]:
    """``folder`` is this process's while the block runs (see the module docstring)."""
    acquire(folder)
    try:
        yield
    finally:
        release(folder)


def holds_only_locks(folder: Path) -> bool:
    """Whether ``folder`` is empty but for lock files (what a fresh claim may find)."""
    return all(entry.name in LOCK_FILES or entry.name.startswith(f"{LOCK_FILE}.") for entry in folder.iterdir())
