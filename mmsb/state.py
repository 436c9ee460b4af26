"""The State: arena, page table, log and counters behind one lock.

Threads
-------
A state may be shared by threads. Every call that reads or changes pages runs
under the state's lock, so commits are serialized: LSN order is the order in
which deltas were applied, per page and state-wide, and no write is lost. The
kernels release the GIL while they run, so other Python threads (and other
states) keep working during a large update or batch. ``view`` hands out live
memory without the lock: read it while no other thread writes that page.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from time import perf_counter_ns as _ns
from time import time_ns as _time_ns
from typing import Any, Iterator

import numpy as np

from . import config
from ._layout import (
    FLAG_LIVE,
    ID_SLOT_BITS,
    ID_SLOT_MASK,
    LOC_CPU,
    LOC_GPU,
    LOCATION_NAMES,
    MAX_PAGE_SIZE,
    META_FLAG_SHIFT,
    META_GEN_MASK,
    META_LOC_SHIFT,
    R_ARENA,
    R_ARENA_SIZE,
    R_DELTAS,
    R_LOG,
    R_LSN,
    R_NEED,
    R_NEED_UNDO,
    R_NEED_UNDO_ROWS,
    R_SEED_LSN,
    R_SEED_POS,
    R_SLOW,
    R_T0,
    R_LAT,
    REC_HEADER,
    T_EPOCH,
    T_META,
    T_OFFSET,
    T_SIZE,
    W_BAD,
    W_RESUME,
    W_ROOM,
    W_SLOW,
)
from ._registers import address, new_registers
from .arena import Arena, PageTable, make_meta
from .delta import Delta, DeltaBatch, _copied, _logged, _new_delta
from .errors import (
    DeviceUnavailableError,
    InvalidArgumentError,
    InvalidDeltaError,
    InvalidPageError,
    PageNotFoundError,
)
from .dependencies import Dependencies, _closed, _in_transaction, _Savepoint
from .durability import Durability, open_file_log
from .log import MemoryLog, NullLog
from .propagation import Propagation
from .log.memory import LogBuffer
from .log.history import History, history as _history

__all__ = ["Page", "State"]

_k: Any = None  # mmsb.kernels, imported with the first state (it imports numba)
_kc: Any = None  # mmsb.kernels.commit, likewise
_commit_update: Any = None
_U8 = np.dtype(np.uint8)
_LIVE_BIT = FLAG_LIVE << META_FLAG_SHIFT
_GPU_BIT = LOC_GPU << META_LOC_SHIFT  # the location field holds 0 (cpu) or 1 (gpu)
_KEY_MASK = _LIVE_BIT | META_GEN_MASK  # meta bits that must match a live page's id
_SYNC = ("commit", "group", "none")
_SMALL_RESET = 8
# Writes are timed only when they start at an LSN that is a multiple of 16: timing every
# commit cost 3-4% of a single hop; this sample costs one test of the LSN on the others
_LAT_SAMPLE = 15
_PARALLEL = threading.Lock()


def _kernels() -> Any:
    global _k, _kc, _commit_update
    if _k is None:
        from . import kernels
        from .kernels import commit

        _k, _kc, _commit_update = kernels, commit, commit.commit_update
    return _k


def _latency_summary(hist: list[int]) -> dict[str, int | None]:
    """Sample count and p50/p99/max (bucket upper edges, ns) of a log2 latency histogram."""
    counts = np.asarray(hist, np.int64)
    n = int(counts.sum())
    if not n:
        return {"write_time_samples": 0, "write_time_p50_ns": None, "write_time_p99_ns": None,
                "write_time_max_ns": None}
    cum = np.cumsum(counts)
    edge = lambda b: (1 << int(b)) - 1  # noqa: E731 - bucket b holds [2**(b-1), 2**b) ns
    return {
        "write_time_samples": n,
        "write_time_p50_ns": edge(np.searchsorted(cum, 0.50 * n)),
        "write_time_p99_ns": edge(np.searchsorted(cum, 0.99 * n)),
        "write_time_max_ns": edge(np.flatnonzero(counts)[-1]),
    }


class _Core:
    """The pooled part of a state: everything that is costly to make."""

    __slots__ = ("arena", "table", "logbuf", "lock", "regs", "rv", "reserve_asked", "prop", "lat", "dev")

    def __init__(self) -> None:
        _kernels()
        # the commit kernels reach every array below through these (mmsb._registers)
        self.regs = regs = new_registers()
        self.rv = memoryview(regs)
        # pooled resources must be those a fresh state would get under today's config
        self.reserve_asked = config.ARENA_RESERVE_BYTES
        self.arena = Arena(self.reserve_asked)
        regs[R_ARENA], regs[R_ARENA_SIZE] = address(self.arena.data), self.arena.data.size
        self.table = PageTable(regs=regs)
        self.logbuf = LogBuffer()
        self.prop = Propagation(self.table, regs)
        self.dev: Any = None  # the DeviceArena (mmsb.gpu.arena), made with the first device page
        # reentrant: event handlers and transaction bodies write while the commit holds it
        self.lock = threading.RLock()
        # write latency histogram: lat[b] counts commits that took [2**(b-1), 2**b) ns; the
        # commit kernels count into it (R_LAT)
        self.lat = np.zeros(64, np.int64)
        regs[R_LAT] = address(self.lat)

    # the LSN and delta count live in the registers, where the commit kernels move them
    @property
    def lsn(self) -> int:
        return self.rv[R_LSN]

    @lsn.setter
    def lsn(self, value: int) -> None:
        self.rv[R_LSN] = value

    @property
    def deltas(self) -> int:
        return self.rv[R_DELTAS]

    @deltas.setter
    def deltas(self, value: int) -> None:
        self.rv[R_DELTAS] = value

    def reset(self) -> None:
        """Back to the state of a fresh core, at a cost that follows what was touched."""
        arena, table = self.arena, self.table
        if self.dev is not None:
            if self.dev.pages:
                # a device page's host slot was never written: keep the reset from touching it
                meta = table.array[T_META, : table.used]
                table.array[T_EPOCH, : table.used][(meta & np.uint64(_GPU_BIT)) != 0] = 0
            self.dev.reset()
        released = arena.bump >= config.RESET_RELEASE_BYTES and arena.release_span()
        if table.used <= _SMALL_RESET:
            # a few rows are cheaper to clear here than through a kernel call
            data = arena.data
            mv_o, mv_s, mv_e, mv_m = table.mv_offset, table.mv_size, table.mv_epoch, table.mv_meta
            for s in range(table.used):
                if mv_e[s] and not released:
                    data[mv_o[s]:mv_o[s] + mv_s[s]] = 0
                mv_o[s] = mv_s[s] = mv_e[s] = mv_m[s] = 0
        else:
            _k.reset_table(table.array, arena.data, table.used, not released)
        table.clear()
        arena.clear()
        if self.prop.graph.num_nodes or self.prop.bindings:
            self.prop.clear()
        if self.logbuf.array.size > config.POOL_KEEP_LOG_BYTES:
            self.logbuf.retire()
            self.logbuf = LogBuffer()
        if self.lsn:  # only committed writes outside transactions are timed, and they moved the LSN
            self.lat[:] = 0
        self.lsn = self.deltas = 0


# Reset resources of stopped states, reused by mmsb.start (see mmsb.pool).
_pool: list[_Core] = []


def _check_options(log: Any, sync: Any, gpu: Any) -> None:
    if log is not None and log is not False and not isinstance(log, (str, os.PathLike)):
        raise InvalidArgumentError(f"log={log!r}: expected None (in memory), False (none) or a file path")
    if sync not in _SYNC:
        raise InvalidArgumentError(f"sync={sync!r}: expected one of {_SYNC}")
    if gpu is not True and gpu is not False and gpu != "auto":
        raise InvalidArgumentError(f"gpu={gpu!r}: expected 'auto', True or False")
    if gpu is True:
        from . import gpu as _gpu

        if not _gpu.available():
            raise DeviceUnavailableError(
                "gpu=True asks for a CUDA device, and none is usable here (needs numba-cuda, "
                "`pip install mmsb[cuda]`, a driver and a device)"
            )


def _check_size(size: Any, what: str = "size") -> int:
    if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, np.integer)):
        raise InvalidPageError(f"page {what} must be an integer number of bytes, got {size!r}")
    size = int(size)
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise InvalidPageError(f"page {what} must be between 1 and {MAX_PAGE_SIZE} bytes (4 GiB), got {size}")
    return size


def _check_location(location: Any, size: int, gpu: Any) -> int:
    """The location code of a new page of ``size`` bytes on a state started with ``gpu``."""
    if location == "cpu":
        return LOC_CPU
    if location != "gpu" and location != "auto":
        raise InvalidPageError(f"unknown location {location!r}: expected 'cpu', 'gpu' or 'auto'")
    if gpu is False:
        if location == "auto":
            return LOC_CPU
        raise DeviceUnavailableError("location='gpu' on a state started with gpu=False")
    from . import gpu as _gpu

    if location == "auto":
        return LOC_GPU if size >= _gpu.threshold() and _gpu.available() else LOC_CPU
    if not _gpu.available():
        raise DeviceUnavailableError(
            "location='gpu' needs a CUDA device, and none is usable here (needs numba-cuda, "
            "`pip install mmsb[cuda]`, a driver and a device)"
        )
    return LOC_GPU


def _page_bytes(data: Any, size: int) -> np.ndarray:
    if type(data) is np.ndarray:
        if data.dtype is not _U8 and data.dtype != _U8:
            raise InvalidDeltaError(f"page data must be uint8 bytes, got dtype {data.dtype}")
        if data.ndim != 1:
            raise InvalidDeltaError(f"page data must be 1-d, got shape {data.shape}")
        if not data.flags.c_contiguous:
            data = np.ascontiguousarray(data)
    elif isinstance(data, (bytes, bytearray, memoryview)):
        data = np.frombuffer(data, dtype=np.uint8)
    else:
        raise InvalidDeltaError(f"page data must be a uint8 array or bytes-like, got {type(data).__name__}")
    if data.size != size:
        raise InvalidDeltaError(f"page data has {data.size} bytes, the page has {size}")
    return data


class Page:
    """A handle to one page: ``id``, ``size``, and the live ``epoch`` and ``location``.

    Handles are cheap and compare equal when they name the same page of the
    same state. Every state call takes a handle or a bare id.
    """

    __slots__ = ("_state", "id", "_slot", "size")

    def __init__(self, state: State, page_id: int, slot: int, size: int) -> None:
        self._state = state
        self.id = page_id
        self._slot = slot
        self.size = size

    @property
    def epoch(self) -> int:
        """Deltas applied to the page so far."""
        return self._state._table_value(self, T_EPOCH)

    @property
    def location(self) -> str:
        meta = self._state._table_value(self, T_META)
        return LOCATION_NAMES[(meta >> META_LOC_SHIFT) & 0xFF]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Page):
            return NotImplemented
        return self._state is other._state and self.id == other.id

    def __hash__(self) -> int:
        return hash((id(self._state), self.id))

    def __repr__(self) -> str:
        return f"<mmsb.Page id={self.id} size={self.size}>"

    def _repr_html_(self) -> str:
        """Jupyter's view: id, epoch, location, parents/children and a hex preview (mmsb.notebook)."""
        from .notebook import page_html

        return page_html(self)


class State(Dependencies, Durability):
    """A state: pages, their epochs, the LSN counter and the log.

    ``State()`` makes a fresh state; :func:`mmsb.start` takes one from the pool
    (indistinguishable from a fresh one). After :meth:`close` (or
    :func:`mmsb.stop`) every call raises :class:`mmsb.StateClosedError`.
    """

    __slots__ = ("_c", "_logobj", "_events", "_txn", "sync", "gpu", "_replaying", "_base", "_pending_gpu",
                 "__weakref__")

    def __init__(self, log: Any = None, sync: str = "commit", gpu: Any = "auto") -> None:
        _check_options(log, sync, gpu)
        self._attach(_Core(), log, sync, gpu)

    @classmethod
    def _from_core(cls, core: _Core, log: Any, sync: str, gpu: Any) -> State:
        st = object.__new__(cls)
        st._attach(core, log, sync, gpu)
        return st

    def _attach(self, core: _Core, log: Any, sync: str, gpu: Any) -> None:
        self._c = core
        core.regs[R_SLOW] = 0  # no transaction, no subscribers yet
        self._log = NullLog(core.logbuf) if log is False else MemoryLog(core.logbuf)
        self._events = None
        self._txn: _Savepoint | None = None
        self.sync, self.gpu = sync, gpu
        self._replaying = False
        self._pending_gpu: list[np.ndarray] = []  # ids a replay or restore made on the host for the device
        self._base: Any = None  # (checkpoint, log offset) where this state's history starts, if not at 0
        if log is not None and log is not False:
            try:
                open_file_log(self, log, sync)
            except BaseException:
                self._detach()
                raise

    @property
    def _log(self) -> Any:
        """The log records go to (a replay or restore swaps in a scratch one for a while)."""
        return self._logobj

    @_log.setter
    def _log(self, log: Any) -> None:
        self._logobj = log
        c = self._c
        if c is not None and log._buf is not None:
            c.regs[R_LOG] = log._buf.ctr_addr  # where the commit kernels append

    def _detach(self) -> _Core | None:
        core, self._c = self._c, None
        if core is None:
            return None
        with core.lock:
            try:
                self._log.close()
            finally:
                self._log.detach()
                core.reset()
        return core

    def close(self) -> None:
        """Close the state: a file log is written out, synced and released; the
        resources go back to the pool. Closing twice is harmless."""
        core = self._detach()
        if core is not None and len(_pool) < config.POOL_SIZE:
            _pool.append(core)

    def __enter__(self) -> State:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- lookups ---------------------------------------------------------------

    def _core(self) -> _Core:
        c = self._c
        if c is None:
            raise _closed()
        return c

    def _slot(self, c: _Core, page: Any) -> int:
        """The table slot of a live page, from a handle or an id."""
        if type(page) is Page and page._state is self:
            # a handle knows its slot and generation: one table read checks both
            slot = page._slot
            if c.table.mv_meta[slot] & _KEY_MASK == _LIVE_BIT | page.id >> ID_SLOT_BITS:
                return slot
            raise PageNotFoundError(f"page {page.id} was deleted")
        if type(page) is Page:
            raise PageNotFoundError(f"page {page.id} belongs to another state")
        if isinstance(page, (int, np.integer)) and not isinstance(page, (bool, np.bool_)):
            pid = int(page)
        else:
            raise PageNotFoundError(f"expected a Page or a page id, got {type(page).__name__}")
        slot = pid & ID_SLOT_MASK
        table = c.table
        if pid < 0 or slot >= table.used:
            raise PageNotFoundError(f"no page with id {pid}")
        if table.mv_meta[slot] & _KEY_MASK != _LIVE_BIT | pid >> ID_SLOT_BITS:
            raise PageNotFoundError(f"no live page with id {pid}: it was deleted or never created")
        return slot

    def _table_value(self, page: Any, row: int) -> int:
        c = self._core()
        return int(c.table.array[row, self._slot(c, page)])

    def page(self, page_id: Any) -> Page:
        """The handle of a live page. Raises :class:`mmsb.PageNotFoundError`."""
        c = self._core()
        slot = self._slot(c, page_id)
        if type(page_id) is Page:
            return page_id
        return Page(self, int(page_id), slot, c.table.mv_size[slot])

    def page_ids(self) -> np.ndarray:
        """Ids of the live pages, ascending (int64)."""
        c = self._core()
        with c.lock:
            if self._c is not c:  # stopped while this call waited for the lock
                raise _closed()
            meta = c.table.array[T_META, : c.table.used]
            slots = np.flatnonzero(meta & np.uint64(_LIVE_BIT))
            gens = (meta[slots] & np.uint64(META_GEN_MASK)).astype(np.int64)
        return np.sort(slots | (gens << ID_SLOT_BITS))

    @property
    def lsn(self) -> int:
        """The last LSN given out (0 before the first delta)."""
        return self._core().lsn

    @property
    def log(self) -> MemoryLog | None:
        """The state's log, or None when it was started with ``log=False``."""
        self._core()
        return self._log if self._log.keeps_records else None

    def history(self, page: Any, depth: int = 32, last: int | None = None) -> History:
        """Provenance: the deltas behind the page's bytes and the deltas that led to them.

        A :class:`mmsb.History`: ``.deltas``, the page's own deltas in LSN order (only the newest
        ``last`` when given); ``.upstream``, the deltas reached by following causes
        (``Delta.causes``: a cascade's parent deltas in the same commit) for at most ``depth``
        hops; ``.hops``, LSN -> distance; ``.truncated``, whether ``last`` or ``depth`` left
        something out. The log is indexed by page on first use and incrementally after, so a
        lookup costs what it returns. Raises :class:`mmsb.PageNotFoundError` for a page that is
        not live (deleted pages included), :class:`mmsb.InvalidArgumentError` for a bad
        ``depth``/``last`` or a state started with ``log=False``.
        """
        return _history(self, page, depth, last)

    # -- pages -----------------------------------------------------------------

    def create_page(self, size: int, location: str = "cpu") -> Page:
        """A new zero-filled page of ``size`` bytes (1 B .. 4 GiB).

        ``location``: ``"cpu"``; ``"gpu"``, the device (see ``docs/GPU.md``);
        ``"auto"``, the device when one is usable, the state was not started
        with ``gpu=False`` and ``size >= mmsb.gpu.threshold()``, else the CPU.
        Raises :class:`mmsb.InvalidPageError` for a bad size or location,
        :class:`mmsb.DeviceUnavailableError` for ``location="gpu"`` without a
        usable device (or with ``gpu=False``), and
        :class:`mmsb.CapacityError` when the arena (host or device) is full.
        """
        c = self._c
        if self._txn is not None:
            raise _in_transaction("create_page")
        if c is None:
            raise _closed()
        if type(size) is not int or not 0 < size <= MAX_PAGE_SIZE:
            size = _check_size(size)
        loc = LOC_CPU if location == "cpu" else _check_location(location, size, self.gpu)
        with c.lock:
            if self._c is not c:  # stopped while this call waited for the lock
                raise _closed()
            table = c.table
            if loc != LOC_CPU:
                self._device(c).make_room(1, size)  # may refuse, and then nothing changed
            off = c.arena.allocate(size)  # the other step that may refuse (before any change)
            if table.free:
                slot = table.free.pop()
            else:
                slot = table.used
                if slot >= table.capacity:
                    table.reserve(1)
                table.used = slot + 1
            if loc != LOC_CPU:
                c.dev.assign(np.array([slot], np.int64), c.dev.reserve(1, size))
            gen = table.mv_meta[slot] & META_GEN_MASK
            table.mv_offset[slot] = off
            table.mv_size[slot] = size
            table.mv_meta[slot] = gen | loc << META_LOC_SHIFT | _LIVE_BIT
            pid = slot | gen << ID_SLOT_BITS
            self._log.append_create(pid, 1, size, loc, c.lsn)  # a whole commit: sealed too
        return Page(self, pid, slot, size)

    def create_pages(self, count: int, size: int, location: str = "cpu") -> np.ndarray:
        """``count`` new zero-filled pages of ``size`` bytes; their ids (int64).

        The ids are those ``count`` calls of :meth:`create_page` would give.
        """
        c = self._core()
        if self._txn is not None:
            raise _in_transaction("create_pages")
        if isinstance(count, (bool, np.bool_)) or not isinstance(count, (int, np.integer)) or count < 1:
            raise InvalidPageError(f"page count must be a positive integer, got {count!r}")
        count = int(count)
        size = _check_size(size)
        loc = _check_location(location, size, self.gpu)
        with c.lock:
            if self._c is not c:  # stopped while this call waited for the lock
                raise _closed()
            table = c.table
            table.reserve(max(0, count - len(table.free)))
            if loc != LOC_CPU:
                self._device(c).make_room(count, size)  # may refuse, and then nothing changed
            offs = c.arena.allocate_many(count, size)
            slots = table.take_many(count)
            if loc != LOC_CPU:
                c.dev.assign(slots, c.dev.reserve(count, size))
            a = table.array
            gens = a[T_META, slots] & np.uint64(META_GEN_MASK)
            a[T_OFFSET, slots] = offs
            a[T_SIZE, slots] = size
            a[T_META, slots] = gens | np.uint64(make_meta(0, loc))
            ids = slots | (gens.astype(np.int64) << ID_SLOT_BITS)
            self._log.append_create(int(ids[0]), count, size, loc, c.lsn)  # a whole commit: sealed too
        return ids

    def delete_page(self, page: Any) -> None:
        """Delete a page; its id and handles raise :class:`mmsb.PageNotFoundError` from now on."""
        c = self._core()
        if self._txn is not None:
            raise _in_transaction("delete_page")
        with c.lock:
            if self._c is not c:  # stopped while this call waited for the lock
                raise _closed()
            slot = self._slot(c, page)
            table = c.table
            pid = slot | ((table.mv_meta[slot] & META_GEN_MASK) << ID_SLOT_BITS)
            off, size = table.mv_offset[slot], table.mv_size[slot]
            if table.mv_meta[slot] & _GPU_BIT:
                c.dev.release(slot, size)
            elif table.mv_epoch[slot]:
                _k.zero_bytes(c.arena.data, off, size)
            c.arena.release(off, size)
            table.retire(slot)
            self._log.append_delete(pid, c.lsn)
            if slot < c.prop.graph.num_nodes:
                self._forget_node(c, slot)
            self._log.seal(c.lsn)

    def query_page(self, page: Any) -> np.ndarray:
        """A copy of the page's bytes (uint8)."""
        c = self._core()
        with c.lock:
            if self._c is not c:  # stopped while this call waited for the lock
                raise _closed()
            slot = self._slot(c, page)
            if c.table.mv_meta[slot] & _GPU_BIT:
                return c.dev.read(slot, c.table.mv_size[slot])
            off = c.table.mv_offset[slot]
            return c.arena.data[off:off + c.table.mv_size[slot]].copy()

    def view(self, page: Any) -> np.ndarray:
        """A read-only, zero-copy view of the page's bytes (uint8).

        It follows every later write to the page and stays valid while the
        page lives (the arena never moves); once the page is deleted or the
        state stopped, it shows whatever occupies the slot next.
        """
        c = self._core()
        slot = self._slot(c, page)
        if c.table.mv_meta[slot] & _GPU_BIT:
            raise InvalidArgumentError(
                f"page {self._id_of(slot)} lives on the device: query_page copies it to the host, "
                "device_view gives the device array"
            )
        off = c.table.mv_offset[slot]
        v = c.arena.data[off:off + c.table.mv_size[slot]]
        v.flags.writeable = False
        return v

    def _device(self, c: _Core) -> Any:
        """The core's device arena, made on first use."""
        if c.dev is None:
            from .gpu.arena import DeviceArena

            c.dev = c.prop.dev = DeviceArena()
        return c.dev

    def _place_pending(self) -> None:
        """After a replay or restore: pages made on the device go back there, one copy each
        (they stay on the host when this state may not use a device, or none is usable)."""
        pending, self._pending_gpu = self._pending_gpu, []
        if not pending or self.gpu is False:
            return
        from . import gpu as _gpu

        if not _gpu.available():
            return
        c = self._core()
        table = c.table
        ids = np.concatenate(pending)
        slots = ids & ID_SLOT_MASK
        meta = table.array[T_META, slots]
        keep = ((meta & np.uint64(_KEY_MASK)) == (np.uint64(_LIVE_BIT) | (ids >> ID_SLOT_BITS).astype(np.uint64)))
        slots = np.unique(slots[keep])
        dev = self._device(c)
        sizes = table.array[T_SIZE, slots]
        for size in np.unique(sizes).tolist():
            pick = slots[sizes == size]
            dev.assign(pick, dev.reserve(pick.size, int(size)))
        for slot in slots[table.array[T_EPOCH, slots] != 0].tolist():  # one copy per written page
            size, off = table.mv_size[slot], table.mv_offset[slot]
            dev.write(slot, c.arena.data[off:off + size])
            _k.zero_bytes(c.arena.data, off, size)
        table.array[T_META, slots] |= np.uint64(_GPU_BIT)
        c.prop.relocated()

    def device_view(self, page: Any) -> Any:
        """The device array (numba.cuda, uint8, zero-copy) of a device page, for your own kernels.

        Read it freely. Write to it only inside :meth:`device_write`, which
        tells mmsb what changed; other writes are invisible to epochs, the log
        and cascades, and the next mmsb write to the page may undo them. The
        array is valid until the device arena grows (when device pages are
        created): take a new one after. Raises
        :class:`mmsb.InvalidArgumentError` for a page on the CPU.
        """
        c = self._core()
        with c.lock:
            slot = self._slot(c, page)
            if not c.table.mv_meta[slot] & _GPU_BIT:
                raise InvalidArgumentError(f"page {self._id_of(slot)} lives on the CPU: use view()")
            c.dev.dirty = True  # stray writes through the view must not outlive the page
            return c.dev.view(slot, c.table.mv_size[slot])

    @contextlib.contextmanager
    def device_write(self, page: Any) -> Iterator[Any]:
        """Write a device page with your own kernels: ``with st.device_write(pg) as arr: ...``.

        ``arr`` is :meth:`device_view`'s array. On a clean exit the bytes that
        differ from those at entry are committed as one delta, exactly as
        ``update_page`` with the new bytes would (epoch, LSN, log, cascade).
        If the body raises, the page gets its
        bytes from entry back and nothing is committed. The state's lock is
        held throughout, so keep the body to device work.
        """
        c = self._core()
        with c.lock:
            if self._c is not c:
                raise _closed()
            slot = self._slot(c, page)
            if not c.table.mv_meta[slot] & _GPU_BIT:
                raise InvalidArgumentError(f"page {self._id_of(slot)} lives on the CPU: use update_page()")
            t0 = 0 if c.lsn & _LAT_SAMPLE else _ns()
            dev, size = c.dev, c.table.mv_size[slot]
            if slot in dev.writing:
                raise InvalidArgumentError(f"device_write of page {self._id_of(slot)} inside another one")
            dev.dirty = True  # whatever the body writes, deleting or pooling the page must zero it
            arr = dev.view(slot, size)
            before = dev.cuda.device_array(size, np.uint8)
            before.copy_to_device(arr)
            dev.writing.add(slot)
            try:
                yield arr
            except BaseException:
                dev.view(slot, size).copy_to_device(before)
                raise
            finally:
                dev.writing.discard(slot)
            from .gpu import kernels as gk

            # diff the page into a copy of its bytes at entry: bits say which bytes changed
            probe = dev.cuda.device_array(size, np.uint8)
            probe.copy_to_device(before)
            (bits_d,) = dev.stage(np.zeros((size + 7) >> 3, np.uint8))
            dev._launch(gk.diff_into, gk.grid(bits_d.size), probe, 0, dev.view(slot, size), 0, bits_d, size)
            bits = dev.fetch(bits_d)
            if not bits.any():
                return
            data, flags = dev.changed_bytes(dev.view(slot, size), bits)
            log = self._log
            if self._txn is not None or (c.prop.graph.num_edges and c.prop.fallible):
                dev.saved.setdefault(slot, before)  # a rollback restores the bytes at entry
            sp = self._begin_write(c, slot) if c.prop.graph.num_edges or self._txn is not None else None
            buf = log.reserve(REC_HEADER + 8 + size + ((size + 7) >> 3))
            pos = log.used
            end = _k.update_known(c.table.array, data ^ flags, slot, data, buf, pos, c.lsn + 1)
            if self._committed(c, log, sp, slot, pos, end) is not None and t0 and self._txn is None:
                c.lat[(_ns() - t0).bit_length()] += 1

    # -- writes ----------------------------------------------------------------
    #
    # A write is one commit kernel call (mmsb.kernels.commit): Python checks the arguments, the
    # kernel applies, logs, cascades and seals. Transactions, event subscribers, device pages and
    # very large batches take the general path below (_*_slow), which the kernels share.

    def update_page(self, page: Any, data: Any) -> Delta | None:
        """Make the page hold ``data``; the delta of the bytes that changed, or None.

        ``data`` is a 1-d uint8 array or bytes-like object of the page's size.
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
            if pid >= 0 and self._c is c:
                # the kernel checks the page, the data's size and the state's mode, and its
                # signature the data's type: anything unusual goes the general way
                try:
                    r = _commit_update(c.regs, data, pid)
                except TypeError:
                    r = W_SLOW
                if r > 0:
                    d = _new_delta(Delta)  # _logged, inlined
                    d.lsn = r
                    d._arr = c.logbuf._array
                    d._pos = c.rv[R_SEED_POS]
                    return d
                if r == 0:
                    return None
                if r != W_SLOW and r != W_ROOM:
                    return self._settled(c, r, (pid & ID_SLOT_MASK,))
            if self._c is not c:  # stopped while this call waited for the lock
                raise _closed()
            return self._update_general(c, page, data)
        finally:
            lock.release()

    def _update_general(self, c: _Core, page: Any, data: Any) -> Delta | None:
        """``update_page`` with every argument checked in Python first."""
        slot = self._slot(c, page)
        data = _page_bytes(data, c.table.mv_size[slot])
        if self._txn is not None or self._events is not None or c.table.mv_meta[slot] & _GPU_BIT:
            return self._update_page_slow(page, data)
        if not data.flags.writeable:
            data = data.copy()  # the kernel takes writable arrays only (it never writes this one)
        pid = self._id_of(slot)
        r = _commit_update(c.regs, data, pid)
        while r == W_ROOM:
            self._make_room(c)
            r = _commit_update(c.regs, data, pid)
        if r > 0:
            return _logged(c.logbuf._array, c.rv[R_SEED_POS], r)
        return self._settled(c, r, (slot,))

    def _make_room(self, c: _Core) -> None:
        """What a commit kernel asked for (W_ROOM): log space, before-image space."""
        rv = c.rv
        self._log.reserve(rv[R_NEED])
        if rv[R_NEED_UNDO]:
            c.prop.undo_room(rv[R_NEED_UNDO], rv[R_NEED_UNDO_ROWS])

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
            pos, lsn = rv[R_SEED_POS], rv[R_SEED_LSN]
            delta = _logged(c.logbuf._array, pos, lsn) if log.keeps_records else _copied(c.logbuf._array, pos)
        if r == W_RESUME:
            prop = c.prop
            sp = _Savepoint.resumed(c, log, slots) if prop.fallible else None
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
            if self._txn is not None or self._events is not None or c.table.mv_meta[slot] & _GPU_BIT:
                return self._apply_delta_slow(delta)
            size = c.table.mv_size[slot]
            sparse = delta.kind == "sparse"
            if not sparse and a.size != size:
                raise InvalidDeltaError(f"dense delta has {a.size} mask entries, page {delta.page_id} has {size} bytes")
            commit = _kc.commit_sparse if sparse else _kc.commit_dense
            args = (c.regs, a, b, self._id_of(slot))
            r = commit(*args)
            while r == W_ROOM:
                self._make_room(c)
                r = commit(*args)
            if r <= W_BAD:
                raise InvalidDeltaError(
                    f"index {int(a[(W_BAD - 1 - r) // 2])} is out of range for page {delta.page_id} of {size} bytes"
                )
            if r > 0:
                return _logged(c.logbuf._array, c.rv[R_SEED_POS], r)
            return self._settled(c, r, (slot,))
        finally:
            lock.release()

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
            if self._txn is not None or self._events is not None or (c.dev is not None and c.dev.pages) or (
                    ids.size >= config.PARALLEL_BATCH_DELTAS):
                return self._apply_batch_slow(batch)
            out = np.empty(ids.size, np.int64)
            args = (c.regs, ids, batch.starts, batch.indices, batch.values, out)
            r = _kc.commit_batch(*args)
            while r == W_ROOM:
                self._make_room(c)
                r = _kc.commit_batch(*args)
            if r == W_SLOW:
                return self._apply_batch_slow(batch)
            if r <= W_BAD:
                i, offset = divmod(W_BAD - r, 2)
                if not offset:
                    raise PageNotFoundError(f"delta {i} of the batch names page {int(ids[i])}, which does not exist")
                raise InvalidDeltaError(
                    f"delta {i} of the batch has an index out of range for page {int(ids[i])} "
                    f"of {c.table.mv_size[int(ids[i]) & ID_SLOT_MASK]} bytes"
                )
            if r < 0:
                self._settled(c, r, (ids & ID_SLOT_MASK).tolist(), batch=True)
            return out
        finally:
            lock.release()

    def _update_page_slow(self, page: Any, data: Any) -> Delta | None:
        """Make the page hold ``data``; the delta of the bytes that changed, or None.

        ``data`` is a 1-d uint8 array or bytes-like object of the page's size.
        When some byte differs, the change is logged as a sparse or dense delta
        (whichever encodes smaller), the page's epoch moves by one and the
        delta takes the next LSN. When none differs, nothing happens and the
        result is None. Raises :class:`mmsb.InvalidDeltaError`,
        :class:`mmsb.PageNotFoundError`.
        """
        c = self._c
        if c is None:
            raise _closed()
        with c.lock:
            if self._c is not c:  # stopped while this call waited for the lock
                raise _closed()
            t0 = 0 if c.lsn & _LAT_SAMPLE else _ns()
            slot = self._slot(c, page)
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
        return delta

    def _apply_delta_slow(self, delta: Delta) -> Delta | None:
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
        with c.lock:
            if self._c is not c:  # stopped while this call waited for the lock
                raise _closed()
            t0 = 0 if c.lsn & _LAT_SAMPLE else _ns()
            page = delta._page if delta._page is not None else delta.page_id
            slot = self._slot(c, page)
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

    def _apply_on_device(self, c: _Core, log: Any, slot: int, kind: str, a: np.ndarray, b: np.ndarray,
                         pid: int) -> int:
        """``apply_delta`` to a device page: one launch applies it, then the host logs it; the log end."""
        size = c.table.mv_size[slot]
        pos = log.used
        if kind == "sparse":
            bad = np.flatnonzero((a < 0) | (a >= size))
            if bad.size:
                raise InvalidDeltaError(f"index {int(a[bad[0]])} is out of range for page {pid} of {size} bytes")
            buf = log.reserve(REC_HEADER + 8 + 5 * a.size)
            if a.size and c.dev.apply_sparse(np.array([slot], np.int64), np.array([0, a.size], np.int64), a, b)[0]:
                return _k.log_sparse(c.table.array, slot, a, b, buf, pos, c.lsn + 1)
            return pos
        if a.size != size:
            raise InvalidDeltaError(f"dense delta has {a.size} mask entries, page {pid} has {size} bytes")
        buf = log.reserve(REC_HEADER + 8 + size + ((size + 7) >> 3))
        if c.dev.apply_dense(slot, a, b):
            return _k.log_dense(c.table.array, slot, a, b, buf, pos, c.lsn + 1)
        return pos

    def _batch_on_device(self, c: _Core, batch: DeltaBatch, slots: np.ndarray, gpu: np.ndarray, buf: np.ndarray,
                         pos: int, out: np.ndarray) -> tuple[int, int]:
        """``apply_batch`` with deltas to device pages: those in one launch, the rest on the host,
        then every delta logged in batch order; (log end, last LSN), or (-1 - i, lsn) for a bad delta i."""
        a = c.table.array
        starts, indices, values = batch.starts, batch.indices, batch.values
        bad = _k.check_sparse_batch(a, slots, starts, indices)
        if bad >= 0:
            return -1 - bad, c.lsn
        changed = np.zeros(slots.size, np.uint8)
        sel = np.flatnonzero(gpu)
        lens = (starts[1:] - starts[:-1])[sel]
        sub_starts = np.zeros(sel.size + 1, np.int64)
        np.cumsum(lens, out=sub_starts[1:])
        entries = np.repeat(starts[sel] - sub_starts[:-1], lens) + np.arange(int(sub_starts[-1]))
        changed[sel] = c.dev.apply_sparse(slots[sel], sub_starts, indices[entries], values[entries])
        if sel.size < slots.size:
            _k.apply_marked(a, c.arena.data, slots, starts, indices, values, (~gpu).view(np.uint8), changed)
        out[:] = changed
        return _k.log_grouped(a, slots, starts, indices, values, buf, pos, c.lsn, out)

    def _apply_batch_slow(self, batch: DeltaBatch) -> np.ndarray:
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
        ids = batch.pages
        with c.lock:
            if self._c is not c:  # stopped while this call waited for the lock
                raise _closed()
            t0 = 0 if c.lsn & _LAT_SAMPLE else _ns()
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
                raise PageNotFoundError(f"delta {i} of the batch names page {int(ids[i])}, which does not exist")
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
        return out

    # -- whole-state views -----------------------------------------------------

    def state_hash(self) -> str:
        """A BLAKE2b digest of the live pages (ids, sizes, epochs, bytes) and the LSN.

        Two states with equal hashes hold the same pages with the same bytes
        and epochs, whatever their history inside (pool reuse, slot layout).
        """
        c = self._core()
        h = hashlib.blake2b(digest_size=32)
        with c.lock:
            if self._c is not c:  # stopped while this call waited for the lock
                raise _closed()
            ids = self.page_ids()
            slots = ids & ID_SLOT_MASK
            a = c.table.array
            h.update(np.int64(c.lsn).tobytes())
            h.update(ids.tobytes())
            h.update(a[T_SIZE, slots].tobytes())
            h.update(a[T_EPOCH, slots].tobytes())
            data = c.arena.data
            gpu = ((a[T_META, slots] & np.uint64(_GPU_BIT)) != 0).tolist()
            for slot, off, size, on_dev in zip(slots.tolist(), a[T_OFFSET, slots].tolist(),
                                               a[T_SIZE, slots].tolist(), gpu):
                h.update(c.dev.read(slot, size) if on_dev else data[off:off + size])
        return h.hexdigest()

    def stats(self) -> dict[str, int | None]:
        """Counters and a latency summary, all kept on at a cost a single hop does not notice.

        - ``pages``, ``page_bytes``: live pages and their bytes; ``lsn``;
          ``deltas``: deltas applied (written and recomputed pages alike).
        - ``bytes_written``: byte writes the logged deltas carry (one per sparse
          entry or masked byte; ``update_page`` logs only the bytes that changed).
          Read back from the log by one kernel call here, so commits pay nothing
          for it; None when the state keeps no log (``log=False``).
        - ``cascades``: commits that ran a cascade (those on a state with
          dependency edges, bindings included); ``pages_recomputed``: recomputes
          run; ``pages_skipped``: pages reached whose parents' epochs had not moved
          (the epoch cut-off), counted inside the cascade kernel.
        - ``log_bytes``: bytes of the log's records; ``syncs``: fsync calls the
          log made (0 for a log in memory).
        - ``device_pages``: live pages on the device; ``device_launches``: CUDA
          kernel launches made; ``device_bytes_in``/``device_bytes_out``: bytes
          copied to/from the device (see :mod:`mmsb.gpu` for what crosses when).
        - ``write_time_samples``, ``write_time_p50_ns``, ``write_time_p99_ns``,
          ``write_time_max_ns``: duration of ``update_page``/``apply_delta``/
          ``apply_batch`` calls (cascade included) that committed a delta outside a
          transaction, sampled: only the calls that start at an LSN divisible by 16
          are timed (timing every call cost 3-4% of a single hop). Kept in log2
          buckets, so each figure is the upper edge of its bucket, at most twice
          the true value; None before the first sample.
        - ``arena_*``, ``table_rows``, ``log_records_kept``: memory bookkeeping.
        """
        c = self._core()
        with c.lock:
            if self._c is not c:  # stopped while this call waited for the lock
                raise _closed()
            meta = c.table.array[T_META, : c.table.used]
            live = (meta & np.uint64(_LIVE_BIT)) != 0
            log = self._log
            written = None
            if log.keeps_records:
                from .kernels.stats import delta_bytes

                written = int(delta_bytes(log.reserve(0), log.used))
            cascades, recomputed, skipped = c.prop.counters()
            dev = c.dev
            return {
                "pages": int(live.sum()),
                "page_bytes": int(c.table.array[T_SIZE, : c.table.used][live].sum()),
                "deltas": c.deltas,
                "lsn": c.lsn,
                "log_bytes": self._log.used if self._log.keeps_records else 0,
                "log_records_kept": int(self._log.keeps_records),
                "arena_used_bytes": c.arena.bump,
                "arena_reserved_bytes": c.arena.reserved,
                "table_rows": c.table.array.shape[1],
                "bytes_written": written,
                "cascades": cascades,
                "pages_recomputed": recomputed,
                "pages_skipped": skipped,
                "syncs": getattr(log, "syncs", 0),
                "device_pages": dev.pages if dev is not None else 0,
                "device_launches": dev.launches if dev is not None else 0,
                "device_bytes_in": dev.bytes_in if dev is not None else 0,
                "device_bytes_out": dev.bytes_out if dev is not None else 0,
                **_latency_summary(c.lat),
            }

    def _repr_html_(self) -> str:
        """Jupyter's view: log position, graph size and the first pages (mmsb.notebook)."""
        from .notebook import state_html

        return state_html(self)

    def plot_graph(self, ax: Any = None) -> Any:
        """The dependency graph by topological level, as a matplotlib Figure (needs ``mmsb[plot]``)."""
        from .notebook import plot_graph

        return plot_graph(self, ax)

    def plot_latency(self, ax: Any = None) -> Any:
        """The sampled write-latency histogram of :meth:`stats`, as a matplotlib Figure (``mmsb[plot]``)."""
        from .notebook import plot_latency

        return plot_latency(self, ax)

    def __repr__(self) -> str:
        if self._c is None:
            return "<mmsb.State closed>"
        return f"<mmsb.State pages={len(self.page_ids())} lsn={self._c.lsn}>"
