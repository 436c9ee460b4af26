"""The exception hierarchy of mmsb.

Every error mmsb raises on purpose derives from :class:`MMSBError`, and every
rejected call leaves the state exactly as it was before the call. Where a
built-in exception type fits the meaning as well (a missing page is a lookup
failure, a malformed delta is a bad value), the mmsb error also derives from
it, so ``except KeyError``-style code written against plain containers keeps
working.
"""

from __future__ import annotations

__all__ = [
    "MMSBError",
    "PageNotFoundError",
    "InvalidDeltaError",
    "InvalidPageError",
    "InvalidArgumentError",
    "CapacityError",
    "GraphCycleError",
    "LogCorruptError",
    "DeviceUnavailableError",
    "StateClosedError",
    "RecomputeError",
    "LogInUseError",
    "LogIOError",
    "LogTrimmedError",
    "BusExistsError",
    "BusNotFoundError",
    "OwnerGoneError",
    "BusBusyError",
    "LogTruncatedWarning",
    "MissingFunctionWarning",
]


class MMSBError(Exception):
    """Base class of every error raised by mmsb."""


class PageNotFoundError(MMSBError, LookupError):
    """The page id or handle names no live page of this state (never created, or deleted)."""


class InvalidDeltaError(MMSBError, ValueError):
    """A write or delta does not fit its page: wrong length, dtype, shape or index range."""


class InvalidPageError(MMSBError, ValueError):
    """A page cannot be created as asked: size, count or location out of range."""


class InvalidArgumentError(MMSBError, ValueError):
    """An option given to mmsb (``start``, ``stop``, configuration) is not one it accepts."""


class CapacityError(MMSBError, MemoryError):
    """The arena's reserved address space or the host cannot hold what was asked for."""


class GraphCycleError(MMSBError):
    """A dependency edge would close a cycle; ``.path`` lists the page ids around it."""

    def __init__(self, message: str, path: list[int] | tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.path = list(path)


class LogCorruptError(MMSBError):
    """A log or checkpoint is damaged before its tail; ``.offset`` is where, in bytes."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


class DeviceUnavailableError(MMSBError, RuntimeError):
    """A GPU page or a GPU-requiring option was asked for, but no usable device is present."""


class StateClosedError(MMSBError, RuntimeError):
    """The state (or a page handle of it) was used after ``mmsb.stop`` or ``State.close``."""


class RecomputeError(MMSBError):
    """A recompute bound by the user raised or returned bytes that do not fit its page.

    ``.page_id`` names the page; the original exception is the ``__cause__``.
    """

    def __init__(self, message: str, page_id: int | None = None) -> None:
        super().__init__(message)
        self.page_id = page_id


class LogInUseError(MMSBError, RuntimeError):
    """The log file is being written by another live state (in this process or another)."""


class LogIOError(MMSBError, OSError):
    """Writing or syncing a log or checkpoint failed (disk full, I/O error); the cause is chained."""


class LogTrimmedError(InvalidArgumentError, LookupError):
    """Records asked for are older than what the log still keeps (see ``retain=`` of
    :func:`mmsb.start` and ``State.checkpoint(truncate=True)``), or a replay asked for an LSN
    before the checkpoint where the state's history starts.

    ``.first_lsn`` is the oldest LSN whose records the log still holds.
    """

    def __init__(self, message: str, first_lsn: int) -> None:
        super().__init__(message)
        self.first_lsn = first_lsn


class BusExistsError(MMSBError, FileExistsError):
    """A shared state of that name is open already (in this process or another)."""


class BusNotFoundError(MMSBError, FileNotFoundError):
    """No shared state of that name is open to attach to."""


class OwnerGoneError(MMSBError, RuntimeError):
    """The process that owned a shared state ended without closing it (it crashed or was
    killed). Its log, if it wrote one, recovers as after any crash."""


class BusBusyError(MMSBError, TimeoutError):
    """A consistent read of a shared state, or a submitted request, did not finish in its time."""


class LogTruncatedWarning(UserWarning):
    """Opening a log cut a torn tail (the end of a write a crash interrupted)."""


class MissingFunctionWarning(UserWarning):
    """A replayed or restored binding names a recompute function this process has not registered."""
