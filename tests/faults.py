"""A disk that fails for real: the log's file descriptor pointed at ``/dev/full``.

Writes there fail with ENOSPC and syncs with EINVAL, from Python and from the
writer thread's GIL-free kernel alike (neither can be patched from Python).
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator


@contextlib.contextmanager
def full_disk(log) -> Iterator[None]:
    """While inside, every write and sync of ``log``'s file fails; afterwards the file is back."""
    saved = os.dup(log.fd)
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        os.dup2(full, log.fd)
        yield
    finally:
        if log.fd >= 0:
            os.dup2(saved, log.fd)
        os.close(full)
        os.close(saved)


def until(cond, seconds: float = 20.0) -> bool:
    """Whether ``cond()`` comes true within ``seconds`` (a generous bound: a thread's progress,
    not its speed, is what a test checks)."""
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():  # what was seen: asking again could catch a thread that moved on since
            return True
        time.sleep(0.002)
    return bool(cond())


@contextlib.contextmanager
def file_size_limit(nbytes: int) -> Iterator[None]:
    """While inside, this process cannot make a file longer than ``nbytes`` (RLIMIT_FSIZE): a
    write that crosses the limit is cut short there, and the next one fails with EFBIG."""
    import resource
    import signal

    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # its default action ends the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, previous)
