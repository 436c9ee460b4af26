"""In-memory logs: :class:`MemoryLog` keeps records, :class:`NullLog` keeps none."""

from __future__ import annotations

import struct
from typing import Iterator

import numpy as np

from .. import config
from .._layout import REC_CREATE, REC_DELETE, REC_DELTA, REC_HEADER
from ..delta import Delta
from ..errors import StateClosedError

_HEADER = struct.Struct("<QQQQQQ")


class LogBuffer:
    """A growable, 8-byte aligned byte buffer, pooled with a state's resources."""

    __slots__ = ("array", "mv")

    def __init__(self, nbytes: int | None = None) -> None:
        self.array = np.zeros(max(1024, nbytes or config.LOG_INITIAL_BYTES) + 7 & ~7, dtype=np.uint8)
        self.mv = memoryview(self.array)

    def grow(self, need: int, used: int) -> None:
        cap = self.array.size
        while cap < need:
            cap *= 2
        bigger = np.empty(cap, dtype=np.uint8)
        bigger[:used] = self.array[:used]
        self.array = bigger
        self.mv = memoryview(bigger)


class MemoryLog:
    """The deltas of one state, in LSN order, held in memory.

    ``len(log)`` is the number of delta records, ``log.nbytes`` the bytes of
    all records, and iterating yields the applied :class:`mmsb.Delta` objects
    in LSN order.
    """

    __slots__ = ("_buf", "used", "deltas")
    keeps_records = True

    def __init__(self, buffer: LogBuffer | None = None) -> None:
        self._buf = buffer if buffer is not None else LogBuffer()
        self.used = 0
        self.deltas = 0

    def _live(self) -> LogBuffer:
        if self._buf is None:
            raise StateClosedError("this log belongs to a state that was stopped or closed")
        return self._buf

    def reserve(self, nbytes: int) -> np.ndarray:
        buf = self._live()
        if self.used + nbytes > buf.array.size:
            buf.grow(self.used + nbytes, self.used)
        return buf.array

    def commit(self, end: int, deltas: int) -> None:
        self.used = end
        self.deltas += deltas

    def rollback(self, used: int, deltas: int) -> None:
        """Forget the records after ``used`` (a commit that did not complete)."""
        self.used, self.deltas = used, deltas

    def _append(self, rtype: int, lsn: int, page_id: int, w3: int, w4: int, w5: int) -> None:
        buf = self._buf
        if buf is None or self.used + REC_HEADER > buf.array.size:
            self.reserve(REC_HEADER)
            buf = self._buf
        _HEADER.pack_into(buf.mv, self.used, REC_HEADER | (rtype << 32), lsn, page_id, w3, w4, w5)
        self.used += REC_HEADER

    def append_create(self, first_id: int, count: int, size: int, location: int, lsn: int) -> None:
        self._append(REC_CREATE, lsn, first_id, size, count, location)

    def append_delete(self, page_id: int, lsn: int) -> None:
        self._append(REC_DELETE, lsn, page_id, 0, 0, 0)

    def record(self, start: int, end: int) -> bytes:
        return self._live().mv[start:end].tobytes()

    def detach(self) -> LogBuffer | None:
        buf, self._buf = self._buf, None
        return buf

    @property
    def nbytes(self) -> int:
        """Bytes of all records in the log."""
        return self.used

    def __len__(self) -> int:
        return self.deltas

    def records(self) -> Iterator[tuple[int, int, int]]:
        """(record type, byte offset, length) of each record, in log order."""
        mv = self._live().mv
        pos = 0
        while pos < self.used:
            w0 = _HEADER.unpack_from(mv, pos)[0]
            length = w0 & 0xFFFFFFFF
            yield (w0 >> 32) & 0xFF, pos, length
            pos += length

    def __iter__(self) -> Iterator[Delta]:
        for rtype, pos, length in self.records():
            if rtype == REC_DELTA:
                yield Delta._from_record(self.record(pos, pos + length))

    def __repr__(self) -> str:
        return f"<MemoryLog deltas={self.deltas} bytes={self.used}>"


class NullLog(MemoryLog):
    """What ``log=False`` gives: records are written to scratch space and dropped."""

    __slots__ = ()
    keeps_records = False

    def commit(self, end: int, deltas: int) -> None:
        self.used = 0

    def rollback(self, used: int, deltas: int) -> None:
        """Forget the records after ``used`` (a commit that did not complete)."""
        self.used, self.deltas = used, deltas

    def _append(self, rtype: int, lsn: int, page_id: int, w3: int, w4: int, w5: int) -> None:
        pass
