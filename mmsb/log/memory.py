"""In-memory logs: :class:`MemoryLog` keeps records, :class:`NullLog` keeps none."""

from __future__ import annotations

import struct
import sys
from time import time_ns as _time_ns
from typing import Iterator

import numpy as np

from .. import config
from .._layout import (
    L_ADDR, L_CAP, L_DELTAS, L_MODE, L_SEALED, L_USED, L_WORDS, LOG_DROP, LOG_SEAL, REC_BIND, REC_COMMIT,
    REC_CREATE, REC_DELETE, REC_DELTA, REC_EDGE, REC_HEADER,
)
from .._registers import address
from ..delta import Delta
from ..errors import StateClosedError

_HEADER = struct.Struct("<QQQQQQ")
_SEALED = struct.Struct("<12Q")  # a record and the commit record after it, in one write
_CREATE_W0 = REC_HEADER | (REC_CREATE << 32)
_COMMIT_W0 = REC_HEADER | (REC_COMMIT << 32)
_refs = sys.getrefcount


# Arrays of log buffers that grew past what a pooled state keeps, kept for the next buffer that
# grows: their memory is already faulted in, and on a machine where the first touch of a KiB
# costs about a microsecond that is most of what an in-memory log costs per write.
_spares: list[np.ndarray] = []


def _take_spare(nbytes: int) -> np.ndarray:
    """An array of at least ``nbytes`` (uninitialized): the smallest spare that fits, or a new one."""
    fits = [a for a in _spares if a.size >= nbytes]
    if not fits:
        return np.empty(nbytes, dtype=np.uint8)
    best = min(fits, key=lambda a: a.size)
    _spares.remove(best)
    return best


def _give_spare(arr: np.ndarray) -> None:
    """Keep ``arr`` for reuse, within ``mmsb.config.LOG_SPARE_BYTES`` (the largest are kept)."""
    _spares.append(arr)
    _spares.sort(key=lambda a: a.size, reverse=True)
    total = 0
    for i, a in enumerate(_spares):
        total += a.size
        if total > config.LOG_SPARE_BYTES:
            del _spares[i:]
            break


class LogBuffer:
    """A growable, 8-byte aligned byte buffer and its counters, pooled with a state's resources.

    ``ctr`` (int64, ``mmsb._layout.L_*``) holds the buffer's address and size and
    the log's counters: the commit kernels append through it. An applied
    :class:`mmsb.Delta` reads its record from ``array`` when first used, so bytes
    once written are never overwritten in an array a Delta may still read: see
    :meth:`recycle`.
    """

    __slots__ = ("_array", "mv", "ctr", "cv", "ctr_addr", "retired")

    def __init__(self, nbytes: int | None = None) -> None:
        self.ctr = np.zeros(L_WORDS, np.int64)
        self.cv = memoryview(self.ctr)
        self.ctr_addr = address(self.ctr)
        # while a log-file writer thread reads this buffer without the GIL: the arrays it may
        # still be reading (see mmsb.log.file.FileLog.start)
        self.retired: list[np.ndarray] | None = None
        self.array = np.zeros(max(1024, nbytes or config.LOG_INITIAL_BYTES) + 7 & ~7, dtype=np.uint8)

    @property
    def array(self) -> np.ndarray:
        return self._array

    @array.setter
    def array(self, arr: np.ndarray) -> None:
        if self.retired is not None:
            from ..kernels.writer import publish

            self.retired.append(self._array)
            self.ctr[L_CAP] = arr.size
            self._array, self.mv = arr, memoryview(arr)
            publish(self.ctr, L_ADDR, address(arr))  # after the bytes copied into it
            return
        self._array = arr
        self.mv = memoryview(arr)
        self.ctr[L_ADDR] = address(arr)
        self.ctr[L_CAP] = arr.size

    def _holders(self) -> int:
        return _refs(self._array)

    def grow(self, need: int, used: int) -> None:
        cap = self._array.size
        while cap < need:
            cap *= 2
        bigger = _take_spare(cap)
        bigger[:used] = self._array[:used]
        self.array = bigger

    def recycle(self, keep: int) -> None:
        """Bytes from ``keep`` on are about to be written again (a rollback, a pooled reuse):
        when anything else still holds the array (a lazily read Delta), go on in a copy."""
        if self._holders() > _OWN_REFS:
            fresh = _take_spare(self._array.size)
            fresh[:keep] = self._array[:keep]
            self.array = fresh

    def retire(self) -> None:
        """This buffer is dropped: its array becomes a spare when nothing else holds it."""
        if self._holders() <= _OWN_REFS:
            arr = self._array
            self.array = np.zeros(8, np.uint8)
            _give_spare(arr)


_OWN_REFS = LogBuffer(8)._holders()  # the buffer's own references to its array (and the count's)


class MemoryLog:
    """The deltas of one state, in LSN order, held in memory.

    ``len(log)`` is the number of delta records, ``log.nbytes`` the bytes of
    all records, and iterating yields the applied :class:`mmsb.Delta` objects
    in LSN order.
    """

    __slots__ = ("_buf", "_cv", "_history")
    keeps_records = True
    durable = False  # whether records reach a file
    syncs = 0  # fdatasync calls made (a file log counts them)
    mode = LOG_SEAL  # what a commit kernel does at the end of a commit (mmsb._layout.LOG_*)
    failed = None  # what stopped a file log's writing (see FileLog); a memory log never fails

    def __init__(self, buffer: LogBuffer | None = None) -> None:
        self._buf = buf = buffer if buffer is not None else LogBuffer()
        if _refs(buf._array) > _OWN_REFS:  # LogBuffer.recycle(0), its common case inlined (a start)
            buf.recycle(0)
        self._cv = cv = buf.cv
        cv[L_USED] = cv[L_DELTAS] = cv[L_SEALED] = 0
        cv[L_MODE] = self.mode
        self._history = None  # provenance index (mmsb.log.history), made by the first st.history

    # the counters live in the buffer, where the commit kernels move them
    @property
    def used(self) -> int:
        """Bytes of records."""
        return self._cv[L_USED]

    @used.setter
    def used(self, value: int) -> None:
        self._cv[L_USED] = value

    @property
    def deltas(self) -> int:
        """Delta records."""
        return self._cv[L_DELTAS]

    @deltas.setter
    def deltas(self, value: int) -> None:
        self._cv[L_DELTAS] = value

    @property
    def sealed(self) -> int:
        """Where the last commit ended."""
        return self._cv[L_SEALED]

    @sealed.setter
    def sealed(self, value: int) -> None:
        self._cv[L_SEALED] = value

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
        if self._buf is not None:
            self._buf.recycle(used)
        self.used, self.deltas = used, deltas
        if self._history is not None:
            self._history.forget_after(used)

    def load(self, data: np.ndarray, deltas: int) -> None:
        """Start from the whole-commit records ``data`` (a recovered or replayed log)."""
        buf = self.reserve(data.size)
        buf[: data.size] = data
        self.used = self.sealed = data.size
        self._history = None
        self.deltas = deltas

    def _append(self, rtype: int, lsn: int, page_id: int, w3: int, w4: int, w5: int) -> None:
        buf = self._buf
        if buf is None or self.used + REC_HEADER > buf.array.size:
            self.reserve(REC_HEADER)
            buf = self._buf
        _HEADER.pack_into(buf.mv, self.used, REC_HEADER | (rtype << 32), lsn, page_id, w3, w4, w5)
        self.used += REC_HEADER

    def append_create(self, first_id: int, count: int, size: int, location: int, lsn: int) -> None:
        # _append_commit(REC_CREATE, ...) inlined, a page's creation being most of the allocation
        # cycle: a log that seals otherwise (FileLog, NullLog) overrides this method too
        cv = self._cv
        used = cv[L_USED]
        if used != cv[L_SEALED] or self._buf is None or used + 2 * REC_HEADER > cv[L_CAP]:
            self._append_commit(REC_CREATE, lsn, first_id, size, count, location)
            return
        _SEALED.pack_into(self._buf.mv, used, _CREATE_W0, lsn, first_id, size, count, location,
                          _COMMIT_W0, lsn, _time_ns(), 0, 0, 0)
        cv[L_USED] = cv[L_SEALED] = used + 2 * REC_HEADER

    def append_delete(self, page_id: int, lsn: int) -> None:
        self._append_commit(REC_DELETE, lsn, page_id, 0, 0, 0)

    def _append_commit(self, rtype: int, lsn: int, w2: int, w3: int, w4: int, w5: int) -> None:
        """A page record that is a whole commit: the record and its commit record, in one write."""
        buf = self._buf
        if self.used != self.sealed or buf is None or self.used + 2 * REC_HEADER > buf.array.size:
            self._append(rtype, lsn, w2, w3, w4, w5)  # the general path
            self.seal(lsn)
            return
        _SEALED.pack_into(buf.mv, self.used, REC_HEADER | (rtype << 32), lsn, w2, w3, w4, w5,
                          _COMMIT_W0, lsn, _time_ns(), 0, 0, 0)
        self.used += 2 * REC_HEADER
        self.sealed = self.used

    def _append_named(self, rtype: int, lsn: int, w2: int, w3: int, w4: int, w5: int, body: bytes,
                      name: str) -> None:
        raw = name.encode()[:0xFFFF]  # names are labels; the length field holds 16 bits
        n = len(body) + len(raw)
        length = REC_HEADER + (n + 7 & ~7)
        buf = self.reserve(length)
        at = self.used
        _HEADER.pack_into(self._buf.mv, at, length | rtype << 32 | len(raw) << 48, lsn, w2, w3, w4, w5)
        buf[at + REC_HEADER:at + length] = 0
        end = at + REC_HEADER + len(body)
        buf[at + REC_HEADER:end] = np.frombuffer(body, np.uint8)
        buf[end:end + len(raw)] = np.frombuffer(raw, np.uint8)
        self.used = at + length

    def append_edge(self, parent: int, child: int, kind: int, name: str, added: bool, lsn: int) -> None:
        """An edge added or removed (``name`` only for user-named kinds)."""
        self._append_named(REC_EDGE, lsn, parent, child, kind, int(added), b"", name)

    def append_bind(self, child: int, op: int, dtype: int, parents: list[int], weights: list[float],
                    name: str, lsn: int) -> None:
        """A binding made by ``register_recompute`` (``name``: a user function's registered name)."""
        body = np.array(parents, np.int64).tobytes() + np.array(weights, np.float64).tobytes()
        self._append_named(REC_BIND, lsn, child, op, dtype, len(parents), body, name)

    def seal(self, lsn: int) -> None:
        """End a commit: every record since the last seal forms it (a marker records where).

        The commit's bytes never change after this; a file log may now write
        them out.
        """
        if self.used != self.sealed:
            self._append(REC_COMMIT, lsn, _time_ns(), 0, 0, 0)
            self.sealed = self.used

    def flush(self) -> None:
        """Make every sealed commit durable (nothing to do in memory)."""

    def close(self) -> None:
        """Write out what is sealed and release any file (nothing to do in memory)."""

    def record(self, start: int, end: int) -> bytes:
        return self._live().mv[start:end].tobytes()

    def detach(self) -> LogBuffer | None:
        buf, self._buf = self._buf, None
        if buf is not None:
            self._cv = buf.cv.tolist()  # the counters as they ended, in a list; the buffer moves on
        self._history = None
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
    mode = LOG_DROP

    def commit(self, end: int, deltas: int) -> None:
        self.used = 0

    def seal(self, lsn: int) -> None:
        pass

    def _append_named(self, *args: object) -> None:
        pass

    def _append_commit(self, *args: object) -> None:
        pass

    def append_create(self, *args: object) -> None:
        pass

    def rollback(self, used: int, deltas: int) -> None:
        """Forget the records after ``used`` (a commit that did not complete)."""
        self.used, self.deltas = used, deltas

    def _append(self, rtype: int, lsn: int, page_id: int, w3: int, w4: int, w5: int) -> None:
        pass
