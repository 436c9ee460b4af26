"""In-memory logs: :class:`MemoryLog` keeps records, :class:`NullLog` keeps none."""

from __future__ import annotations

import contextlib
import struct
import sys
from time import time_ns as _time_ns
from typing import Any, Iterator

import numpy as np

from .. import config
from .._layout import (
    E_LSN, E_OFF, L_ADDR, L_CAP, L_DELTAS, L_MODE, L_SEALED, L_USED, L_WORDS, LOG_DROP, LOG_SEAL, REC_BIND, REC_COMMIT,
    REC_CREATE, REC_DELETE, REC_DELTA, REC_EDGE, REC_HEADER, REC_INFO,
)
from .._registers import address
from ..delta import Delta, _logged
from ..errors import InvalidArgumentError, LogCorruptError, LogTrimmedError, StateClosedError
from .history import HistoryIndex

_HEADER = struct.Struct("<QQQQQQ")
_SEALED = struct.Struct("<12Q")  # a record and the commit record after it, in one write
_CREATE_W0 = REC_HEADER | (REC_CREATE << 32)
_COMMIT_W0 = REC_HEADER | (REC_COMMIT << 32)
_refs = sys.getrefcount
_NO_LOCK = contextlib.nullcontext()
_NO_DISK = np.zeros(1, np.uint64)
_new = object.__new__


def _lsn_int(key: Any) -> int:
    if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer)):
        raise InvalidArgumentError(f"an LSN is an integer, got {key!r}")
    return int(key)


# Arrays of log buffers that grew past what a pooled state keeps, kept for the next buffer that
# grows: their memory is already faulted in, and on a machine where the first touch of a KiB
# costs about a microsecond that is most of what an in-memory log costs per write.
_spares: list[np.ndarray] = []


def _aligned(nbytes: int, zeros: bool = False) -> np.ndarray:
    """A uint8 array of ``nbytes`` starting on a 64-byte boundary. A large NumPy array starts 16
    bytes past a page (malloc's header), and the kernel's copies into it (reading a log file)
    then run at about 60 % of their speed into an aligned one."""
    raw = (np.zeros if zeros else np.empty)(nbytes + 64, dtype=np.uint8)
    at = -raw.ctypes.data % 64
    return raw[at:at + nbytes]


def _take_spare(nbytes: int, most: int | None = None) -> np.ndarray:
    """An array of at least ``nbytes`` (uninitialized): the smallest spare that fits (and holds at
    most ``most`` bytes, when given), or a new one."""
    fits = [a for a in _spares if nbytes <= a.size <= (most or a.size)]
    if not fits:
        return _aligned(nbytes)
    best = min(fits, key=lambda a: a.size)
    del _spares[next(i for i, a in enumerate(_spares) if a is best)]  # by identity: == compares arrays
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


class _Window:
    """What a trimmed log's array is made over: element ``i`` is byte ``i - base`` of ``phys``.

    Positions in a log are bytes since the log began and never change, so a
    trim (which drops the bytes before ``base``) moves no offset anywhere: the
    array's data pointer is ``phys``'s address minus ``base`` (modulo 2**64), and
    only positions from ``base`` on may be read. Holding the window holds ``phys``.
    """

    def __init__(self, phys: np.ndarray, base: int) -> None:
        self.phys = phys
        self.__array_interface__ = {"data": ((address(phys) - base) % (1 << 64), False),
                                    "shape": (base + phys.size,), "typestr": "|u1", "version": 3}


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


class LogBuffer:
    """A growable, 8-byte aligned byte buffer and its counters, pooled with a state's resources.

    ``ctr`` (int64, ``mmsb._layout.L_*``) holds the buffer's address and size and
    the log's counters: the commit kernels append through it. An applied
    :class:`mmsb.Delta` reads its record from ``array`` when first used, so bytes
    once written are never overwritten in an array a Delta may still read: see
    :meth:`recycle`.

    ``array`` is indexed by log position. Once a log is trimmed (``base`` > 0),
    its bytes before ``base`` are gone and ``array`` is a window (:class:`_Window`)
    over the physical array ``phys``.
    """

    __slots__ = ("_array", "mv", "ctr", "cv", "ctr_addr", "retired", "phys", "base", "lock")

    def __init__(self, nbytes: int | None = None) -> None:
        self.ctr = np.zeros(L_WORDS, np.int64)
        self.cv = memoryview(self.ctr)
        self.ctr_addr = address(self.ctr)
        # while a log-file writer thread reads this buffer without the GIL: the arrays it may
        # still be reading (see mmsb.log.file.FileLog.start)
        self.retired: list[np.ndarray] | None = None
        self.lock: Any = None  # the lock of the core this buffer belongs to (mmsb.state._Core)
        self.base = 0
        self.array = _aligned(max(1024, nbytes or config.LOG_INITIAL_BYTES) + 7 & ~7, zeros=True)

    @property
    def array(self) -> np.ndarray:
        return self._array

    @array.setter
    def array(self, arr: np.ndarray) -> None:
        self._place(arr, 0)

    def _place(self, phys: np.ndarray, base: int) -> None:
        arr = phys if not base else np.asarray(_Window(phys, base))
        if self.retired is not None:
            from ..kernels.writer import publish

            self.retired.append(self._array)
            self.ctr[L_CAP] = arr.size
            self.phys, self.base = phys, base
            self._array, self.mv = arr, memoryview(arr)
            publish(self.ctr, L_ADDR, _signed(address(arr)))  # after the bytes copied into it
            return
        self.phys, self.base = phys, base
        self._array = arr
        self.mv = memoryview(arr)
        self.ctr[L_ADDR] = _signed(address(arr))
        self.ctr[L_CAP] = arr.size

    def _holders(self) -> int:
        # a window holds phys where a plain array is phys: count as if _array were phys
        return _refs(self._array) + (self._array is not self.phys)

    def grow(self, need: int, used: int, bounded: bool = False) -> None:
        """Room up to log position ``need``, the bytes up to ``used`` kept; ``bounded``: a log
        under a retention window, which must not take a spare far larger than it needs (it would
        hold that many bytes of records before its first trim)."""
        base = self.base
        cap = self.phys.size
        while cap < need - base:
            cap *= 2
        bigger = _take_spare(cap, cap) if bounded else _take_spare(cap)
        bigger[:used - base] = self.phys[:used - base]
        self._place(bigger, base)

    def recycle(self, keep: int) -> None:
        """Bytes from ``keep`` on are about to be written again (a rollback, a pooled reuse):
        when anything else still holds the array (a lazily read Delta), go on in a copy."""
        if self._holders() > _OWN_REFS:
            base = self.base
            fresh = _take_spare(self.phys.size)
            fresh[:keep - base] = self.phys[:keep - base]
            self._place(fresh, base)

    def trim(self, cut: int, used: int) -> None:
        """Drop the bytes before position ``cut`` (a commit boundary, at most ``used``).

        In place when nothing else holds the array; otherwise (a lazily read
        Delta, a log-file writer reading without the GIL) in a copy, so what
        they read never moves.
        """
        keep = used - cut
        src = self.phys[cut - self.base:used - self.base]
        if self._holders() > _OWN_REFS or self.retired is not None:
            fresh = _take_spare(self.phys.size)
            fresh[:keep] = src
        else:
            fresh = self.phys
            fresh[:keep] = src  # overlapping: NumPy copies as memmove does
        self._place(fresh, cut)

    def rebase(self) -> None:
        """Position 0 at the physical array's start again (a log starting over)."""
        if self.base:
            self._place(self.phys if self._holders() <= _OWN_REFS else _take_spare(self.phys.size), 0)

    def room(self, nbytes: int) -> np.ndarray:
        """The array, at least ``nbytes`` long from position 0, for a caller that fills it (a log
        read from its file straight into the buffer it will live in: no copy, and no page faults
        when the buffer is a pooled one)."""
        if self.base or self.phys.size < nbytes or self._holders() > _OWN_REFS:
            old = self.phys
            self._place(_take_spare(max(nbytes, 1024) + 7 & ~7), 0)
            if _refs(old) <= 2:  # the local and getrefcount's argument: nothing else reads it
                _give_spare(old)
        return self._array

    def retire(self) -> None:
        """This buffer is dropped: its array becomes a spare when nothing else holds it."""
        if self._holders() <= _OWN_REFS:
            phys = self.phys
            self.array = np.zeros(8, np.uint8)
            _give_spare(phys)


_OWN_REFS = LogBuffer(8)._holders()  # the buffer's own references to its array (and the count's)


class _Retention:
    """What a log keeps (``keep``: at least the newest that many deltas; None: all until a
    checkpoint truncates) and what it has dropped so far."""

    __slots__ = ("keep", "truncates", "start", "dropped", "first_lsn")

    def __init__(self, keep: int | None) -> None:
        self.keep = keep
        self.truncates = False  # whether a checkpoint drops the records before it by default
        self.start = 0  # log position of the first record kept
        self.dropped = 0  # delta records dropped
        self.first_lsn = 1  # every record with an LSN from here on is kept


class _ByLSN:
    """``log.lsn[x]``: the delta with LSN ``x``; ``log.lsn[a:b]``: those with ``a <= LSN < b``."""

    __slots__ = ("_log",)

    def __init__(self, log: MemoryLog) -> None:
        self._log = log

    def __getitem__(self, key: Any) -> Any:
        return self._log._by_lsn(key)


class MemoryLog:
    """The deltas of one state, in LSN order, held in memory.

    ``len(log)`` is the number of delta records, ``log.nbytes`` the bytes of
    all records, and iterating yields the applied :class:`mmsb.Delta` objects
    in LSN order.
    """

    __slots__ = ("_buf", "_cv", "_history", "_trim")
    keeps_records = True
    durable = False  # whether records reach a file
    syncs = 0  # fdatasync calls made (a file log counts them)
    mode = LOG_SEAL  # what a commit kernel does at the end of a commit (mmsb._layout.LOG_*)
    failed = None  # what stopped a file log's writing (see FileLog); a memory log never fails

    def __init__(self, buffer: LogBuffer | None = None, keep: bool = False) -> None:
        """A log starting empty in ``buffer``; ``keep``: the buffer holds records read from a file
        that :meth:`load` is about to take as they are (what holds them is no reader to protect)."""
        self._buf = buf = buffer if buffer is not None else LogBuffer()
        if not keep and _refs(buf._array) > _OWN_REFS:  # LogBuffer.recycle(0), its common case inlined (a start)
            buf.recycle(0)
        self._cv = cv = buf.cv
        cv[L_USED] = cv[L_DELTAS] = cv[L_SEALED] = 0
        cv[L_MODE] = self.mode
        self._history = None  # index of delta records (mmsb.log.history), made by their first lookup
        self._trim: _Retention | None = None  # made by a retention policy or the first trim

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
            buf.grow(self.used + nbytes, self.used, self._trim is not None and self._trim.keep is not None)
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
        if data.size and address(data) != address(buf):  # a log read into this buffer is there already
            buf[: data.size] = data
        self.used = self.sealed = data.size
        self._history = self._trim = None
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

    def append_info(self, page_id: int, count: int, text: str, lsn: int) -> None:
        """What a page carries beyond its bytes, as JSON (``count`` pages: those just created)."""
        self._append_named(REC_INFO, lsn, page_id, count, 0, 0, b"", text)

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
            if buf.base:
                buf.rebase()
        self._history = None
        return buf

    # -- retention ---------------------------------------------------------------

    @property
    def first_pos(self) -> int:
        """Log position (bytes since the log began) of the oldest record still held: 0 until trimmed."""
        t = self._trim
        return 0 if t is None else t.start

    @property
    def first_lsn(self) -> int:
        """The log holds every record whose LSN is at least this (1 until trimmed)."""
        t = self._trim
        return 1 if t is None else t.first_lsn

    @property
    def dropped(self) -> int:
        """Delta records trimmed away."""
        t = self._trim
        return 0 if t is None else t.dropped

    def retain(self, keep: int | None, truncates: bool = False) -> None:
        """Keep at least the newest ``keep`` delta records (None: all, until a checkpoint truncates);
        ``truncates``: a checkpoint drops the records before it unless told otherwise."""
        if self._trim is None:
            self._trim = _Retention(keep)
        self._trim.keep, self._trim.truncates = keep, truncates

    def _trim_limit(self) -> int:
        """How far a trim may cut: what is sealed (a file log: and synced)."""
        return self.sealed

    def _settle(self) -> None:
        """Before a trim: make what is sealed trimmable (a file log syncs it; memory: nothing)."""

    def _cut_at(self, limit: int, most: int) -> tuple[int, int, int]:
        from ..kernels.history import retain_cut

        buf = self._live()
        arr = buf.array
        cut, dropped, lsn = retain_cut(arr.view(np.uint64), buf.base, limit, most)
        if cut < 0:
            raise LogCorruptError(f"log record at offset {-1 - cut} has an impossible length", -1 - cut)
        return int(cut), int(dropped), int(lsn)

    def _drop(self, cut: int, dropped: int, lsn: int) -> None:
        buf = self._live()
        if cut <= buf.base:
            return
        buf.trim(cut, self.used)
        if self._trim is None:
            self._trim = _Retention(None)
        t = self._trim
        t.start, t.dropped, t.first_lsn = cut, t.dropped + dropped, lsn + 1
        self._index_trimmed(cut)

    def _index_trimmed(self, cut: int) -> None:
        """The records before ``cut`` are gone: so is the index (built again on the next lookup)."""
        self._history = None

    def make_room(self) -> bool:
        """Where no commit or savepoint is open: drop the oldest records the retention lets go,
        when that frees at least three quarters of what is held (so that copying what is kept
        costs at most a third of what was written since). Whether it dropped any."""
        t = self._trim
        if t is None or t.keep is None or self._buf is None:
            return False
        most = self.deltas - t.dropped - t.keep
        if most <= 0:
            return False
        start = self._buf.base
        self._settle()
        cut, dropped, lsn = self._cut_at(self._trim_limit(), most)
        if 4 * (cut - start) < 3 * (self.used - start):
            return False
        self._drop(cut, dropped, lsn)
        return True

    def file_due(self, page_bytes: int) -> bool:
        """Whether the log's file should start anew at a checkpoint (a memory log has no file)."""
        return False

    def near_full(self, need: int = 0) -> bool:
        """Whether the buffer would be three quarters full with ``need`` more bytes (a write that
        grows it would double it)."""
        buf = self._buf
        return buf is not None and 4 * (self.used - buf.base + need) >= 3 * buf.phys.size

    def truncate(self, pos: int) -> None:
        """Drop every record before position ``pos`` (a commit boundary: a checkpoint's)."""
        pos = min(pos, self._trim_limit())
        if pos > self.first_pos:
            cut, dropped, lsn = self._cut_at(pos, 1 << 62)
            self._drop(cut, dropped, lsn)

    # -- reading -------------------------------------------------------------------

    @property
    def nbytes(self) -> int:
        """Bytes of the records the log holds."""
        return self.used - self.first_pos

    def __len__(self) -> int:
        """Delta records the log holds."""
        return self.deltas - self.dropped

    def _index(self) -> Any:
        """The index of delta records (mmsb.log.history.HistoryIndex), brought up to date; call
        with the state's lock held."""
        buf = self._live()
        index = self._history
        if index is None:
            index = HistoryIndex(buf.base)
            frame, lo, hi = self._disk_range()
            if frame:  # a file holds the records: those trimmed from memory are indexed there
                index.refresh_disk(self._disk_words(), frame, lo, hi)
            self._history = index
        elif index.end == self._cv[L_USED]:
            return index  # nothing written since
        arr = buf.array
        index.refresh(arr[: arr.size & ~7].view(np.uint64), self.used)
        return index

    def _delta_at(self, index: Any, i: int) -> Delta:
        off = int(index.ent[E_OFF, i])
        if off >= 0:
            return _logged(self._buf._array, off)
        return Delta._from_record(self._disk_record(-1 - off))

    # records a file holds that memory no longer does (a FileLog has them)
    def _disk_range(self) -> tuple[int, int, int]:
        """``(frame, lo, hi)``: log positions ``[lo, hi)`` of the records only a file holds, from
        the frame at byte ``frame`` of it."""
        return 0, 0, 0

    def _disk_words(self) -> np.ndarray:
        """The file those records are in, as uint64 words (none for a memory log)."""
        return _NO_DISK

    def _disk_record(self, offset: int) -> bytes:  # pragma: no cover - a memory log has no file
        raise LogTrimmedError("this log keeps its records in memory only", self.first_lsn)

    @property
    def holds_all(self) -> bool:
        """Whether every record since the log began can be read (none was trimmed away)."""
        return self.first_pos == 0

    def __getitem__(self, key: Any) -> Any:
        """``log[i]``: the i-th delta held (negative from the newest); ``log[i:j]``: a list of them."""
        if type(key) is not int and not isinstance(key, slice):
            if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer)):
                raise InvalidArgumentError(f"a log is indexed by position (an integer or a slice), got {key!r}")
            key = int(key)
        lock = self._live().lock or _NO_LOCK
        with lock:
            index = self._index()
            n = index.n
            if type(key) is not int:
                return [self._delta_at(index, i) for i in range(*key.indices(n))]
            if not -n <= key < n:
                raise IndexError(f"log position {key} is out of range: the log holds {n} deltas")
            return self._delta_at(index, key % n)

    @property
    def lsn(self) -> _ByLSN:
        """Deltas by LSN: ``log.lsn[x]``, ``log.lsn[a:b]`` (binary search, no scan of the log)."""
        return _ByLSN(self)

    def _by_lsn(self, key: Any) -> Any:
        with self._live().lock or _NO_LOCK:
            index = self._index()
            lsns = index.ent[E_LSN, : index.n]
            if isinstance(key, slice):
                if key.step not in (None, 1):
                    raise InvalidArgumentError("a slice of log.lsn takes no step")
                lo = 0 if key.start is None else int(np.searchsorted(lsns, self._lsn_key(key.start)))
                hi = index.n if key.stop is None else int(np.searchsorted(lsns, _lsn_int(key.stop)))
                return [self._delta_at(index, i) for i in range(lo, hi)]
            lsn = self._lsn_key(key)
            i = lsn - int(lsns[0]) if index.n else 0  # delta LSNs are mostly consecutive
            if not (0 <= i < index.n and lsns[i] == lsn):
                i = int(np.searchsorted(lsns, lsn))
            if i == index.n or lsns[i] != lsn:
                raise KeyError(f"no delta has LSN {lsn}")
            return self._delta_at(index, i)

    def _lsn_key(self, key: Any) -> int:
        lsn = _lsn_int(key)
        if lsn < self.first_lsn:
            raise LogTrimmedError(f"LSN {lsn} was trimmed from the log: the oldest LSN it still holds is "
                                  f"{self.first_lsn}", self.first_lsn)
        return lsn

    def records(self) -> Iterator[tuple[int, int, int]]:
        """(record type, log position, length) of each record held, in log order."""
        mv = self._live().mv
        pos = self.first_pos
        while pos < self.used:
            w0 = _HEADER.unpack_from(mv, pos)[0]
            length = w0 & 0xFFFFFFFF
            yield (w0 >> 32) & 0xFF, pos, length
            pos += length

    def __iter__(self) -> Iterator[Delta]:
        _, lo, hi = self._disk_range()
        if hi > lo:  # some records are in the file only: through the index, which reaches both
            for i in range(len(self)):
                yield self[i]
            return
        for rtype, pos, length in self.records():
            if rtype == REC_DELTA:
                yield Delta._from_record(self.record(pos, pos + length))

    def __repr__(self) -> str:
        return f"<MemoryLog deltas={len(self)} bytes={self.nbytes}>"


def started(buf: LogBuffer) -> MemoryLog:
    """``MemoryLog(buf)`` for a buffer whose counters are an empty memory log's already (as a
    core's reset leaves them, ``mmsb.state._Core.reset``): the log of a start, a third cheaper."""
    log = _new(MemoryLog)
    if _refs(buf._array) > _OWN_REFS:  # a Delta of the state that used it still reads the array
        buf.recycle(0)
    log._buf, log._cv, log._history, log._trim = buf, buf.cv, None, None
    return log


class NullLog(MemoryLog):
    """What ``log=False`` gives: records are written to scratch space and dropped.

    The commit kernels write every record as they would for a memory log, and a
    write's Delta reads its own from there when first used. Between commits, a
    scratch space that is full starts again at its beginning (where a Delta still
    holds the array, in another: ``LogBuffer.recycle``), so a state without a log
    keeps one buffer, as large as its largest commit needs.
    """

    __slots__ = ()
    keeps_records = False
    mode = LOG_DROP

    def reserve(self, nbytes: int) -> np.ndarray:
        buf = self._live()
        if self.used + nbytes > buf.array.size and self.used == self.sealed:
            buf.recycle(0)
            self.used = self.sealed = 0
        return super().reserve(nbytes)

    def seal(self, lsn: int) -> None:
        self.sealed = self.used

    def _append_named(self, *args: object) -> None:
        pass

    def _append_commit(self, *args: object) -> None:
        pass

    def append_create(self, *args: object) -> None:
        pass

    def _append(self, rtype: int, lsn: int, page_id: int, w3: int, w4: int, w5: int) -> None:
        pass
