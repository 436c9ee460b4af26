"""Named shared-memory segments, liveness locks and futexes: what the bus stands on.

A bus named ``name`` is a set of files in the shared-memory directory
(``/dev/shm`` on Linux, the temporary directory elsewhere): ``mmsb.<name>`` (the
header), ``mmsb.<name>.a<k>`` (arena chunks), ``mmsb.<name>.t<gen>`` (the page
table) and ``mmsb.<name>.m<token>`` (submitters' mailboxes). Each is mapped
shared; on tmpfs a segment's memory is committed only where it is written.

Liveness: the owner holds an exclusive ``flock`` on the header, a submitter one
on its mailbox, for as long as they live. The kernel drops a dead process's
locks, so "can I take it?" tells a crashed process from a live one, whatever
became of its pid. Files left by a crash are removed by the next process that
opens the name (and, on Linux, by :mod:`multiprocessing`'s resource tracker,
which outlives its process).

Sleeping: a futex on a 32-bit word of the header (Linux). Elsewhere a wait
polls every 200 µs instead (documented in docs/BUS.md).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import platform
import re
import sys
import tempfile
import time
from typing import Any

import numpy as np

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
_SHM = "/dev/shm"
_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000 if sys.platform.startswith("linux") else 0)


def check_name(name: Any) -> str:
    from ..errors import InvalidArgumentError

    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidArgumentError(f"a bus name is 1 to 64 letters, digits, '_' or '-', got {name!r}")
    return name


def directory() -> str:
    """Where segments live: tmpfs where the system has it, so they are memory, not disk."""
    if os.path.isdir(_SHM) and os.access(_SHM, os.W_OK):
        return _SHM
    return tempfile.gettempdir()


def path(name: str, suffix: str = "") -> str:
    return os.path.join(directory(), f"mmsb.{name}{suffix}")


# -- the resource tracker: removes a crashed process's segments on Linux ------------

def _tracked(p: str) -> str | None:
    """The POSIX shared-memory name of a file in /dev/shm (the tracker removes those only)."""
    d, base = os.path.split(p)
    return "/" + base if d == _SHM else None


# what this process registered: the tracker logs a traceback when asked to forget a name it
# never had (the owner sweeping a submitter's mailbox)
_mine: set[str] = set()
if hasattr(os, "register_at_fork"):  # a forked child shares the tracker: the names stay the parent's
    os.register_at_fork(after_in_child=_mine.clear)


def track(p: str) -> None:
    name = _tracked(p)
    if name is not None:
        from multiprocessing import resource_tracker

        resource_tracker.register(name, "shared_memory")
        _mine.add(name)


def untrack(p: str) -> None:
    name = _tracked(p)
    if name in _mine:
        _mine.discard(name)
        from multiprocessing import resource_tracker

        try:
            resource_tracker.unregister(name, "shared_memory")
        except Exception:  # the tracker went away with its process: nothing is left to forget
            pass


# -- segments --------------------------------------------------------------------------

class Segment:
    """One mapped file: ``array`` over its bytes (``dtype``), the open descriptor kept for its lock."""

    __slots__ = ("path", "fd", "mm", "array", "owned")

    def __init__(self, p: str, fd: int, size: int, writable: bool, dtype: Any = np.uint8, owned: bool = False):
        self.path, self.fd, self.owned = p, fd, owned
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        flags = mmap.MAP_SHARED | _NORESERVE
        self.mm = mmap.mmap(fd, size, flags=flags, prot=prot)
        self.array = np.frombuffer(self.mm, dtype=dtype)

    @classmethod
    def create(cls, p: str, size: int, dtype: Any = np.uint8, exclusive: bool = True) -> Segment:
        """A new zero-filled segment of ``size`` bytes (sparse: memory comes on first write)."""
        fd = os.open(p, os.O_RDWR | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC), 0o600)
        try:
            os.ftruncate(fd, size)
            seg = cls(p, fd, size, True, dtype, owned=True)
        except BaseException:
            os.close(fd)
            _unlink(p)
            raise
        track(p)
        return seg

    @classmethod
    def open(cls, p: str, writable: bool, dtype: Any = np.uint8) -> Segment:
        fd = os.open(p, os.O_RDWR if writable else os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            return cls(p, fd, size, writable, dtype)
        except BaseException:
            os.close(fd)
            raise

    def lock(self, exclusive: bool) -> bool:
        """Take this file's flock without waiting; False when another process holds it."""
        try:
            fcntl.flock(self.fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def unlock(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)

    def remove(self) -> None:
        """Unlink the file (mappings and views stay valid until they go)."""
        _unlink(self.path)
        if self.owned:
            untrack(self.path)

    def close(self) -> None:
        """Close the descriptor (dropping its lock); the mapping lives while views of it do."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _unlink(p: str) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass


def holder_alive(p: str) -> bool:
    """Whether a live process holds the flock of file ``p`` (False if the file is gone)."""
    try:
        fd = os.open(p, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def sweep(name: str) -> int:
    """Remove every file of bus ``name`` but the header; how many. The caller made sure
    the owner is gone (it holds the header's lock or found it free)."""
    d = directory()
    prefix = f"mmsb.{name}."
    n = 0
    for entry in os.listdir(d):
        if entry.startswith(prefix):
            p = os.path.join(d, entry)
            _unlink(p)
            untrack(p)
            n += 1
    return n


# -- the owner's mark: a robust mutex the kernel flags when the owner dies -------------

_OWNER_DIED = 0x40000000  # FUTEX_OWNER_DIED, in the mutex's lock word


def _pthread() -> Any:
    lib = ctypes.CDLL(None, use_errno=True)
    for fn in ("pthread_mutexattr_init", "pthread_mutexattr_setpshared", "pthread_mutexattr_setrobust",
               "pthread_mutex_init", "pthread_mutex_lock", "pthread_mutex_unlock"):
        getattr(lib, fn)  # AttributeError where the C library lacks robust mutexes (macOS)
    return lib


def hold_mark(addr: int) -> bool:
    """Initialise and lock a process-shared robust mutex at ``addr`` (64 bytes) for the calling
    thread's life; False where the system has none (readers then test the owner's pid)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        lib = _pthread()
    except (AttributeError, OSError):  # pragma: no cover - a C library without them
        return False
    attr = ctypes.create_string_buffer(64)
    if (lib.pthread_mutexattr_init(attr) or lib.pthread_mutexattr_setpshared(attr, 1)
            or lib.pthread_mutexattr_setrobust(attr, 1) or lib.pthread_mutex_init(ctypes.c_void_p(addr), attr)):
        return False  # pragma: no cover
    return lib.pthread_mutex_lock(ctypes.c_void_p(addr)) == 0


def drop_mark(addr: int) -> None:
    _pthread().pthread_mutex_unlock(ctypes.c_void_p(addr))


def mark_dead(word: int) -> bool:
    """Whether the mark's lock word says its holder ended without unlocking it."""
    return bool(word & _OWNER_DIED)


# -- futexes ---------------------------------------------------------------------------

_SYS_FUTEX = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98}.get(platform.machine().lower())
_FUTEX_WAIT, _FUTEX_WAKE = 0, 1
HAVE_FUTEX = sys.platform.startswith("linux") and _SYS_FUTEX is not None
SYS_FUTEX = _SYS_FUTEX if HAVE_FUTEX else 0  # what the owner's commit kernel calls (0: nothing)
_POLL_S = 200e-6


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


if HAVE_FUTEX:
    _libc = ctypes.CDLL(None, use_errno=True)
    _syscall = _libc.syscall
    _syscall.restype = ctypes.c_long


def futex_wait(addr: int, expected: int, timeout: float) -> None:
    """Sleep while the 32-bit word at ``addr`` holds ``expected`` (its low 32 bits), at most
    ``timeout`` seconds; returns early on a wake, a change or a signal. The GIL is released."""
    if not HAVE_FUTEX:
        time.sleep(min(timeout, _POLL_S))
        return
    ts = _Timespec(int(timeout), int((timeout % 1.0) * 1e9))
    word = ctypes.c_int32(expected & 0xFFFFFFFF).value
    r = _syscall(ctypes.c_long(_SYS_FUTEX), ctypes.c_void_p(addr), ctypes.c_int(_FUTEX_WAIT),
                 ctypes.c_int(word), ctypes.byref(ts), None, ctypes.c_int(0))
    if r < 0:
        err = ctypes.get_errno()
        if err not in (errno.EAGAIN, errno.ETIMEDOUT, errno.EINTR):  # pragma: no cover - a kernel without futexes
            raise OSError(err, os.strerror(err))


def futex_wake(addr: int) -> None:
    """Wake every process asleep on the 32-bit word at ``addr``."""
    if HAVE_FUTEX:
        _syscall(ctypes.c_long(_SYS_FUTEX), ctypes.c_void_p(addr), ctypes.c_int(_FUTEX_WAKE),
                 ctypes.c_int(0x7FFFFFFF), None, None, ctypes.c_int(0))
