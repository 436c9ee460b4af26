"""The write paths of a :class:`mmsb.State`: ``update_page``, ``apply_delta``, ``apply_batch``.

A mixin of State. A write is one commit kernel call (:mod:`mmsb.kernels.commit`):
Python checks the arguments, the kernel applies, logs, cascades and seals. What
the kernel leaves to Python (a cascade that steps out to user code or for
room, W_RESUME; a seal, W_SEAL) is finished by :meth:`Commit._settled`.
Transactions, event subscribers, device pages and very large batches take the
general paths (``_*_slow``), which the kernels share; device pages go through
:mod:`mmsb.gpu.writes`.

``update_page``'s fast branch is one lock, one kernel call and a lazy Delta:
everything it reads is a module global here, and it must stay that lean.
"""

from __future__ import annotations

import threading
from time import perf_counter_ns as _ns
from time import time_ns as _time_ns
from typing import TYPE_CHECKING, Any

import numpy as np

from ._interrupts import _held, ensure, holds, land
from . import config
from ._layout import (
    FAST_MAX,
    ID_SLOT_BITS,
    ID_SLOT_MASK,
    META_GEN_MASK,
    R_NEED,
    R_NEED_UNDO,
    R_NEED_UNDO_ROWS,
    R_SLOW,
    R_TICK,
    R_SEED_POS,
    R_T0,
    REC_HEADER,
    T_META,
    T_SIZE,
    W_BAD,
    W_RESUME,
    W_ROOM,
    W_SLOW,
)
from .arena import GPU_BIT as _GPU_BIT
from .arena import GUARD_BIT as _GUARD_BIT
from .arena import LIVE_BIT as _LIVE_BIT
from .delta import Delta, DeltaBatch, _logged, _new_delta
from .dependencies import _Savepoint
from .errors import InvalidArgumentError, InvalidDeltaError, PageNotFoundError
from .page import Page
from .typed import page_bytes, row_run, sparse_write
from .validate import _closed, _in_transaction, _page_bytes

if TYPE_CHECKING:
    from .log.memory import MemoryLog
    from .state import _Core

__all__ = ["Commit", "load_kernels"]

_k: Any = None  # mmsb.kernels, imported with the first state (it imports numba)
_kc: Any = None  # mmsb.kernels.commit, likewise
_commit_update: Any = None
_U8 = np.dtype(np.uint8)
_ND = np.ndarray
_ONE = (1,)
_NOT_FAST = _GPU_BIT | _GUARD_BIT
# One write call in 16 is timed (mmsb._layout.R_TICK): timing every commit cost 3-4% of a
# single hop; this sample costs a count and a test on the others


def _sampled(c: _Core) -> int:
    """Count a write call; when it is one of those timed, the time it began (else 0)."""
    rv = c.rv
    tick = rv[R_TICK]
    rv[R_TICK] = tick + 1
    return 0 if tick & 15 else _ns()

_PARALLEL = threading.Lock()


def load_kernels() -> Any:
    """Import the kernels (and numba) on first use: ``mmsb.kernels``, also kept here for the writes."""
    global _k, _kc, _commit_update
    if _k is None:
        from . import kernels
        from .kernels import commit
        from .kernels._jit import entry

        _k, _kc, _commit_update = kernels, commit, entry(commit.commit_update)
    return _k


class Commit:
    """Writes of a :class:`mmsb.State` (a mixin)."""

    __slots__ = ()

    @holds
    def update_page(self, page: Any, data: Any, at: Any = None) -> Delta | None:
        """Make the page hold ``data``; the delta of the bytes that changed, or None.

        ``data`` is a 1-d uint8 array or bytes-like object of the page's size;
        for a typed page also an array (or anything NumPy makes one of) of the
        page's shape, in its dtype or one that converts without loss of meaning (bool, integer,
        float, complex, up that order; integers that fit).
        With ``at``, an index into the page's values (``page[at] = data``, NumPy
        indexing and broadcasting; bytes for a byte page), only those elements
        are written and the delta is sparse.
        When some byte differs, the change is logged as a sparse or dense delta
        (whichever encodes smaller), the page's epoch moves by one and the
        delta takes the next LSN; its cascade runs before the call returns.
        When none differs, nothing happens and the result is None. Raises
        :class:`mmsb.InvalidDeltaError`, :class:`mmsb.PageNotFoundError`.
        """
        c = self._c
        if type(page) is int:
            pid = page
        elif type(page) is Page and page._state is self:
            pid = page.id
        else:
            pid = -1
        if c is None:
            raise _closed()
        lock = c.lock
        lock.acquire()
        try:
            if pid >= 0 and at is None and self._c is c and type(data) is _ND and data.dtype is _U8 and (
                    data.strides == _ONE):
                # the kernel checks the page, the data's size and the state's mode (it is called
                # without numba's dispatch, so the data's type is checked above: a contiguous
                # 1-d uint8 array); anything unusual goes the general way
                try:
                    r = _commit_update(c.regs, data, pid)
                except (TypeError, OverflowError):  # an id past int64
                    r = W_SLOW
                if r > 0:
                    d = _new_delta(Delta)  # _logged, inlined
                    d._arr = c.logbuf._array
                    d._pos = r - 1
                    return d
                if r == 0:
                    return None
                if r != W_SLOW and r != W_ROOM:
                    return self._settled(c, r, (pid & ID_SLOT_MASK,))
            elif self._ann is not None and pid >= 0 and at is None and self._c is c and type(data) is _ND:
                # a typed page's values in its own dtype and shape: their bytes, to the same kernel
                # (which checks pid; a slot's info met through a stale id only reaches a refusal)
                info = self._ann.info.get(pid & ID_SLOT_MASK)
                if info is not None and data.dtype == info.dtype and data.shape == info.shape and (
                        data.flags.c_contiguous):
                    r = _commit_update(c.regs, data.reshape(-1).view(_U8), pid)
                    if r > 0:
                        return _logged(c.logbuf._array, r - 1)
                    if r == 0:
                        return None
                    if r != W_SLOW and r != W_ROOM:
                        return self._settled(c, r, (pid & ID_SLOT_MASK,))
            if self._c is not c:  # stopped while this call waited for the lock
                raise _closed()
            if at is not None:
                return self._update_at(c, page, data, at)
            return self._update_general(c, page, data)
        finally:
            lock.release()
            if _held:  # an interrupt held during the call lands now (mmsb._interrupts)
                land()

    @holds
    def _update_general(self, c: _Core, page: Any, data: Any) -> Delta | None:
        """``update_page`` with every argument checked in Python first."""
        ensure()
        self._check_writable()
        slot = self._slot(c, page)
        self._refuse_derived(c, slot)
        info = None if self._ann is None else self._ann.info.get(slot)
        if info is not None and info.dtype is not None:
            data = page_bytes(info, data, c.table.mv_size[slot])
        else:
            data = _page_bytes(data, c.table.mv_size[slot])
        if self._txn is not None or self._events is not None or c.table.mv_meta[slot] & _GPU_BIT or (
                data.size > FAST_MAX):
            # the general path's own kernels release the GIL while they work on a large page
            return self._update_page_slow(page, data)
        pid = self._id_of(slot)
        r = _commit_update(c.regs, data, pid)
        while r == W_ROOM:
            self._make_room(c)
            r = _commit_update(c.regs, data, pid)
        if r > 0:
            return _logged(c.logbuf._array, r - 1)
        return self._settled(c, r, (slot,))

    @holds
    def _update_at(self, c: _Core, page: Any, values: Any, at: Any) -> Delta | None:
        """``update_page(page, values, at=...)``: the bytes of ``page[at]`` that change, as one sparse delta."""
        ensure()
        self._check_writable()
        slot = self._slot(c, page)
        self._refuse_derived(c, slot)
        table = c.table
        on_host = not table.mv_meta[slot] & _GPU_BIT
        if on_host:  # the live bytes, read under the lock this call holds
            current = c.arena.data[table.mv_offset[slot]:table.mv_offset[slot] + table.mv_size[slot]]
        else:
            current = self.query_page(page)
        info = self._info(slot)
        if on_host and not c.rv[R_SLOW]:
            run = row_run(info, table.mv_size[slot], values, at)
            if run is not None:  # whole rows: one kernel diffs, writes and logs them
                args = (c.regs, run[1], run[0], self._id_of(slot))
                r = _kc.commit_range(*args)
                while r == W_ROOM:
                    self._make_room(c)
                    r = _kc.commit_range(*args)
                if r > 0:
                    return _logged(c.logbuf._array, r - 1)
                if r != W_SLOW:
                    return self._settled(c, r, (slot,))
        offsets, data = sparse_write(info, current, values, at)
        if not offsets.size:
            return None
        if on_host and not c.rv[R_SLOW]:  # apply_delta's fast branch, its checks done here
            return self._commit_entries(c, slot, True, offsets, data)
        return self.apply_delta(Delta.sparse(self._id_of(slot), offsets, data))

    def _refuse_derived(self, c: _Core, slot: int) -> None:
        """A direct write to a derived page its binding guards: refused, nothing changed."""
        if c.table.mv_meta[slot] & _GUARD_BIT:
            b = c.prop.bindings[slot]
            how = "mirrors a page through a sync edge" if b.mirror else "is computed by its binding"
            raise InvalidArgumentError(
                f"page {self._id_of(slot)} {how}: a direct write would be overwritten by the next change "
                "upstream. Bind it with register_recompute(..., writable=True) to allow such writes, or "
                "unbind it first")

    @holds
    def _check_writable(self, what: str | None = None) -> None:
        """Refuse a write while the file log cannot be written (see ``FileLog.failed``), and
        ``what`` (a change other than a page write) inside this thread's transaction."""
        if what is not None and self._txn is not None:
            raise _in_transaction(what)
        log = self._logobj
        if log.failed is not None:
            log._raise()

    @holds
    def _make_room(self, c: _Core) -> None:
        """What a commit kernel asked for (W_ROOM): log space, before-image space."""
        rv = c.rv
        if self._logobj._trim is not None:
            self._retain(c, rv[R_NEED])
        self._log.reserve(rv[R_NEED])
        if rv[R_NEED_UNDO]:
            c.prop.undo_room(rv[R_NEED_UNDO], rv[R_NEED_UNDO_ROWS])

    @holds
    def _settled(self, c: _Core, r: int, slots: Any, batch: bool = False) -> Delta | None:
        """Finish a commit a kernel left to Python (W_RESUME: the cascade goes on here, rolled
        back whole if a recompute raises; W_SEAL: the seal); the written page's Delta, or for
        a batch None."""
        if r == 0:
            return None
        rv = c.rv
        log = self._log
        delta = None
        if not batch:
            pos = rv[R_SEED_POS]
            delta = _logged(c.logbuf._array, pos)
        if r == W_RESUME:
            prop = c.prop
            # the kernel saved before-images only if the cascade could reach user code
            sp = _Savepoint.resumed(c, log, slots) if prop.fallible and prop.saving else None
            try:
                prop._finish_slowly(self, c, log)
            except BaseException:
                if sp is not None:
                    sp.rollback(c, log)
                raise
            finally:
                if sp is not None:
                    prop.end_undo()
        log.seal(c.lsn)
        if rv[R_T0]:  # a sampled commit (see R_T0): timed to here
            c.lat[min(63, (_time_ns() - rv[R_T0]).bit_length())] += 1
        return delta

    @holds
    def apply_delta(self, delta: Delta) -> Delta | None:
        """Apply a :class:`mmsb.Delta`; the applied delta (with LSN and epoch), or None.

        None means every byte the delta writes already held its value: no
        epoch move, no LSN. Raises :class:`mmsb.InvalidDeltaError` when the
        delta does not fit the page, :class:`mmsb.PageNotFoundError`.
        """
        c = self._core()
        if not isinstance(delta, Delta):
            raise InvalidDeltaError(f"apply_delta takes a mmsb.Delta, got {type(delta).__name__}")
        if delta.lsn is not None:
            raise InvalidDeltaError(f"delta of page {delta.page_id} was applied already (lsn {delta.lsn})")
        a, b = delta._arrays()
        lock = c.lock
        lock.acquire()
        try:
            if self._c is not c:  # stopped while this call waited for the lock
                raise _closed()
            page = delta._page if delta._page is not None else delta.page_id
            slot = self._slot(c, page)
            if c.rv[R_SLOW] or c.table.mv_meta[slot] & _NOT_FAST:  # a transaction, handlers, a failed log
                return self._apply_delta_slow(delta)
            size = c.table.mv_size[slot]
            sparse = delta.kind == "sparse"
            if not sparse and a.size != size:
                raise InvalidDeltaError(f"dense delta has {a.size} mask entries, page {delta.page_id} has {size} bytes")
            return self._commit_entries(c, slot, sparse, a, b)
        finally:
            lock.release()
            if _held:  # an interrupt held during the call lands now (mmsb._interrupts)
                land()

    def _commit_entries(self, c: _Core, slot: int, sparse: bool, a: np.ndarray, b: np.ndarray) -> Delta | None:
        """One sparse (offsets ``a``, bytes ``b``) or dense (mask, payload) delta on host page ``slot``,
        by its commit kernel (the caller holds the lock and checked that the fast path applies)."""
        commit = _kc.commit_sparse if sparse else _kc.commit_dense
        args = (c.regs, a, b, self._id_of(slot))
        r = commit(*args)
        while r == W_ROOM:
            self._make_room(c)
            r = commit(*args)
        if r <= W_BAD:
            raise InvalidDeltaError(f"index {int(a[(W_BAD - 1 - r) // 2])} is out of range for page "
                                    f"{self._id_of(slot)} of {c.table.mv_size[slot]} bytes")
        if r > 0:
            return _logged(c.logbuf._array, r - 1)
        return self._settled(c, r, (slot,))

    @holds
    def apply_batch(self, batch: DeltaBatch) -> np.ndarray:
        """Apply a :class:`mmsb.DeltaBatch` in one kernel call; the LSN of each delta.

        Deltas apply in batch order; a delta that changes no byte gets LSN 0.
        The whole batch is checked first, so a bad delta anywhere raises
        before any byte changes.
        """
        c = self._core()
        if not isinstance(batch, DeltaBatch):
            raise InvalidDeltaError(f"apply_batch takes a mmsb.DeltaBatch, got {type(batch).__name__}")
        if batch._owners and batch._owners != {id(self)}:
            raise PageNotFoundError("the batch names pages of another state")
        lock = c.lock
        lock.acquire()
        try:
            if self._c is not c:  # stopped while this call waited for the lock
                raise _closed()
            ids = batch.pages
            if c.rv[R_SLOW] or (c.dev is not None and c.dev.pages) or ids.size >= config.PARALLEL_BATCH_DELTAS:
                return self._apply_batch_slow(batch)
            out = np.empty(ids.size, np.int64)
            args = (c.regs, ids, batch.starts, batch.indices, batch.values, batch._reach, out)
            r = _kc.commit_batch(*args)
            while r == W_ROOM:
                self._make_room(c)
                r = _kc.commit_batch(*args)
            if r == W_SLOW:
                return self._apply_batch_slow(batch)
            if r <= W_BAD:
                i, offset = divmod(W_BAD - r, 2)
                if not offset:
                    raise self._missing(c, int(ids[i]), f"delta {i} of the batch names page {int(ids[i])}, not a live page")
                raise InvalidDeltaError(
                    f"delta {i} of the batch has an index out of range for page {int(ids[i])} "
                    f"of {c.table.mv_size[int(ids[i]) & ID_SLOT_MASK]} bytes"
                )
            if r < 0:
                # only a resumed cascade needs the written slots (a file log's seal, W_SEAL, does not:
                # listing 4096 of them cost a third of the batch)
                self._settled(c, r, (ids & ID_SLOT_MASK).tolist() if r == W_RESUME else (), batch=True)
            return out
        finally:
            lock.release()
            if _held:  # an interrupt held during the call lands now (mmsb._interrupts)
                land()

    @holds
    def _update_page_slow(self, page: Any, data: Any) -> Delta | None:
        """Make the page hold ``data``; the delta of the bytes that changed, or None.

        ``data`` is a 1-d uint8 array or bytes-like object of the page's size.
        When some byte differs, the change is logged as a sparse or dense delta
        (whichever encodes smaller), the page's epoch moves by one and the
        delta takes the next LSN. When none differs, nothing happens and the
        result is None. Raises :class:`mmsb.InvalidDeltaError`,
        :class:`mmsb.PageNotFoundError`.
        """
        ensure()
        self._check_writable()
        c = self._c
        if c is None:
            raise _closed()
        with c.lock:
            if self._c is not c:  # stopped while this call waited for the lock
                raise _closed()
            t0 = _sampled(c)
            slot = self._slot(c, page)
            self._refuse_derived(c, slot)
            size = c.table.mv_size[slot]
            if type(data) is not np.ndarray or data.dtype is not _U8 or data.size != size or data.strides != (1,):
                data = _page_bytes(data, size)
            log = self._log
            buf = log.reserve(REC_HEADER + 8 + size + ((size + 7) >> 3))
            pos = log.used
            sp = self._begin_write(c, slot) if c.prop.graph.num_edges or self._txn is not None else None
            if c.dev is not None and c.table.mv_meta[slot] & _GPU_BIT:
                # the diff runs on the device; the bits of the bytes that changed come back
                bits = c.dev.update(slot, data)
                end = pos
                if bits.any():
                    old = data ^ np.unpackbits(bits, count=size, bitorder="little")
                    end = _k.update_known(c.table.array, old, slot, data, buf, pos, c.lsn + 1)
            else:
                end = _k.update_page(c.table.array, c.arena.data, slot, data, buf, pos, c.lsn + 1)
            delta = self._committed(c, log, sp, slot, pos, end)
            if t0 and delta is not None and self._txn is None:
                c.lat[(_ns() - t0).bit_length()] += 1
            return delta

    @holds
    def _committed(self, c: _Core, log: MemoryLog, sp: _Savepoint | None, slot: int, pos: int,
                   end: int) -> Delta | None:
        """After a kernel wrote the delta of page ``slot`` at ``[pos, end)``: commit it and
        run its cascade; None when the write changed nothing."""
        if end == pos:
            self._end_write(c, sp)
            return None
        c.lsn += 1
        c.deltas += 1
        delta = Delta._from_record(log.record(pos, end))
        log.commit(end, 1)
        if sp is None and self._txn is None and self._events is None:
            if c.prop.graph.num_edges:
                c.prop.cascade_one(self, c, log, slot, c.lsn)  # the hot path of a hop
            log.seal(c.lsn)
        else:
            self._after_write(c, sp, np.array([slot], np.int64), np.array([delta.lsn], np.int64))
            if self._txn is None:
                log.seal(c.lsn)
        if log._trim is not None:
            self._retain(c)
        return delta

    @holds
    def _apply_delta_slow(self, delta: Delta) -> Delta | None:
        """:meth:`apply_delta`'s general path (in a transaction, with subscribers, to a device
        page), for a delta :meth:`apply_delta` has checked."""
        ensure()
        self._check_writable()
        c = self._core()
        a, b = delta._arrays()
        with c.lock:
            if self._c is not c:  # stopped while this call waited for the lock
                raise _closed()
            t0 = _sampled(c)
            page = delta._page if delta._page is not None else delta.page_id
            slot = self._slot(c, page)
            self._refuse_derived(c, slot)
            size = c.table.mv_size[slot]
            log = self._log
            pos = log.used
            sp = self._begin_write(c, slot) if c.prop.graph.num_edges or self._txn is not None else None
            if c.dev is not None and c.table.mv_meta[slot] & _GPU_BIT:
                try:
                    end = self._apply_on_device(c, log, slot, delta.kind, a, b, delta.page_id)
                except InvalidDeltaError:
                    self._end_write(c, sp)
                    raise
            elif delta.kind == "sparse":
                buf = log.reserve(REC_HEADER + 8 + 5 * a.size)
                end = _k.apply_sparse(c.table.array, c.arena.data, slot, a, b, buf, pos, c.lsn + 1)
                if end < 0:
                    self._end_write(c, sp)
                    raise InvalidDeltaError(
                        f"index {int(a[-1 - end])} is out of range for page {delta.page_id} of {size} bytes"
                    )
            else:
                if a.size != size:
                    self._end_write(c, sp)
                    raise InvalidDeltaError(
                        f"dense delta has {a.size} mask entries, page {delta.page_id} has {size} bytes"
                    )
                buf = log.reserve(REC_HEADER + 8 + size + ((size + 7) >> 3))
                end = _k.apply_dense(c.table.array, c.arena.data, slot, a, b, buf, pos, c.lsn + 1)
            delta = self._committed(c, log, sp, slot, pos, end)
            if t0 and delta is not None and self._txn is None:
                c.lat[(_ns() - t0).bit_length()] += 1
            return delta

    @holds
    def _apply_batch_slow(self, batch: DeltaBatch) -> np.ndarray:
        """:meth:`apply_batch`'s general path (in a transaction, with subscribers, with device
        pages, or a batch large enough for threads), for a batch :meth:`apply_batch` has checked."""
        ensure()
        self._check_writable()
        c = self._core()
        ids = batch.pages
        with c.lock:
            if self._c is not c:  # stopped while this call waited for the lock
                raise _closed()
            t0 = _sampled(c)
            table = c.table
            slots = ids & ID_SLOT_MASK
            bad = slots >= table.used
            if not bad.any():
                meta = table.array[T_META, slots]
                bad = ((meta & np.uint64(_LIVE_BIT)) == 0) | (
                    (meta & np.uint64(META_GEN_MASK)).astype(np.int64) != ids >> ID_SLOT_BITS
                )
            if bad.any():
                i = int(np.argmax(bad))
                raise self._missing(c, int(ids[i]), f"delta {i} of the batch names page {int(ids[i])}, not a live page")
            guarded = (table.array[T_META, slots] & np.uint64(_GUARD_BIT)) != 0
            if guarded.any():
                self._refuse_derived(c, int(slots[np.argmax(guarded)]))
            a = table.array
            log = self._log
            buf = log.reserve(len(batch) * (REC_HEADER + 8) + 5 * batch.indices.size)
            out = np.empty(len(batch), dtype=np.int64)
            sp = self._begin_write(c, slots) if c.prop.graph.num_edges or self._txn is not None else None
            # one kernel call checks every offset first, then applies
            args = (a, c.arena.data, slots, batch.starts, batch.indices, batch.values, buf, log.used, c.lsn, out)
            gpu = None
            if c.dev is not None and c.dev.pages:
                gpu = (a[T_META, slots] & np.uint64(_GPU_BIT)) != 0
            if gpu is not None and gpu.any():
                end, lsn = self._batch_on_device(c, batch, slots, gpu, buf, log.used, out)
            elif len(batch) >= config.PARALLEL_BATCH_DELTAS:
                # numba's default (workqueue) threading layer aborts the process
                # when two threads launch parallel kernels at once
                with _PARALLEL:
                    end, lsn = _k.apply_sparse_batch_parallel(*args)
            else:
                end, lsn = _k.apply_sparse_batch(*args)
            if end < 0:
                self._end_write(c, sp)
                i = -1 - end
                raise InvalidDeltaError(
                    f"delta {i} of the batch has an index out of range for page {int(ids[i])} "
                    f"of {int(a[T_SIZE, slots[i]])} bytes"
                )
            applied = lsn - c.lsn
            c.lsn = lsn
            c.deltas += applied
            log.commit(end, applied)
            if not applied:
                self._end_write(c, sp)
            elif c.prop.graph.num_edges or self._events is not None or sp is not None:
                hit = out != 0
                self._after_write(c, sp, slots[hit].astype(np.int64), out[hit])
            if self._txn is None:
                log.seal(c.lsn)
            if t0 and applied and self._txn is None:
                c.lat[(_ns() - t0).bit_length()] += 1
            if log._trim is not None:
                self._retain(c)
        return out
