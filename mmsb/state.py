"""The State: arena, page table, log and counters behind one lock.

This module holds the pooled resources of a state (:class:`_Core`, and the pool
list that :mod:`mmsb.pool` draws from), and the State class itself: its
lifecycle, lookups, page creation, deletion, queries and views, the state hash,
stats and notebook hooks. The rest of State comes from mixins, each in its own
module: writes (:mod:`mmsb.commit`), device pages (:mod:`mmsb.gpu.writes`),
dependencies, bindings, events and transactions (:mod:`mmsb.dependencies`),
file logs, checkpoints and replay (:mod:`mmsb.durability`). Argument checks
live in :mod:`mmsb.validate`, page handles in :mod:`mmsb.page`.

Threads
-------
A state may be shared by threads. Every call that reads or changes pages runs
under the state's lock, so commits are serialized: LSN order is the order in
which deltas were applied, per page and state-wide, and no write is lost. The
kernels release the GIL while they run, so other Python threads (and other
states) keep working during a large update or batch; only ``update_page`` of a
page up to 64 KiB keeps it (its kernel is shorter than a GIL hand-over). ``view`` hands out live
memory without the lock: read it while no other thread writes that page.
"""

from __future__ import annotations

import os
import threading
import uuid
import warnings
from typing import Any

import numpy as np

from ._interrupts import _SIGINT, _getsignal, _handler, _held, atomic, holds, install, land
from . import config
from ._layout import (
    GEN_TAG_SHIFT,
    ID_SLOT_BITS,
    ID_SLOT_MASK,
    ID_TAG_MASK,
    L_MODE,
    LOG_SEAL,
    LOC_CPU,
    MAX_GENERATION,
    MAX_PAGE_SIZE,
    META_GEN_MASK,
    META_LOC_SHIFT,
    R_ARENA,
    R_ARENA_SIZE,
    R_BUMP,
    R_DELTAS,
    R_LAT,
    R_LOG,
    R_LSN,
    T_EPOCH,
    T_META,
    T_OFFSET,
    T_SIZE,
    REC_CREATE,
)
from . import _tags
from ._registers import address, new_registers
from ._tags import free as _free_tags
from ._tags import heappop as _heappop
from ._tags import heappush as _heappush
from ._tags import shares as _tag_shares
from .arena import GPU_BIT as _GPU_BIT
from .arena import KEY_MASK as _KEY_MASK
from .arena import LIVE_BIT as _LIVE_BIT
from .arena import Arena, PageTable, make_meta
from .annotate import Annotate
from .commit import Commit, load_kernels
from .dependencies import Dependencies, _Savepoint
from .durability import Durability, open_file_log
from .errors import InvalidArgumentError, InvalidPageError, LogIOError, PageNotFoundError
from .gpu.writes import DeviceWrites
from .log.history import History
from .log.history import history as _history
from .log.memory import LogBuffer, MemoryLog, NullLog, started
from .page import Page
from .propagation import Propagation
from .typed import PageInfo, check_info, check_name, info_text, typed_view
from .validate import _check_location, _check_options, _check_retain, _check_size, _closed, _in_transaction

__all__ = ["Page", "State"]

_new = object.__new__
_k: Any = None  # mmsb.kernels, imported with the first state (it imports numba)
_create: Any = None  # mmsb.kernels.create.create_page, called without numba's dispatch
_reset: Any = None  # mmsb.kernels.arena.reset_core, likewise
_DEPENDENTS = ("refuse", "unbind", "delete")


def _bus_owner() -> Any:
    from .bus import owner

    return owner


def _kernels() -> Any:
    global _k, _create, _reset
    if _k is None:
        _k = load_kernels()
        from .kernels import arena, create
        from .kernels._jit import entry

        _create, _reset = entry(create.create_page), entry(arena.reset_core)
    return _k


def _latency_summary(hist: Any) -> dict[str, int | None]:
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

    __slots__ = ("arena", "table", "logbuf", "lock", "regs", "rv", "reserve_asked", "prop", "lat", "dev", "tag",
                 "kept", "bus")

    def __init__(self, bus: Any = None) -> None:
        _kernels()
        # the commit kernels reach every array below through these (mmsb._registers)
        self.regs = regs = new_registers()
        self.rv = memoryview(regs)
        # pooled resources must be those a fresh state would get under today's config
        self.reserve_asked = config.ARENA_RESERVE_BYTES
        # a shared state's arena and table are segments other processes map (mmsb.bus.owner)
        self.bus = bus
        self.arena = Arena(self.reserve_asked) if bus is None else _bus_owner().SharedArena(self.reserve_asked, bus)
        regs[R_ARENA], regs[R_ARENA_SIZE] = address(self.arena.data), self.arena.data.size
        self.table = PageTable(regs=regs, alloc=None if bus is None else bus.table)
        self.logbuf = LogBuffer()
        self.logbuf.ctr[L_MODE] = LOG_SEAL  # as a reset leaves it (a start then sets nothing)
        regs[R_LOG] = self.logbuf.ctr_addr
        self.prop = Propagation(self.table, regs)
        self.dev: Any = None  # the DeviceArena (mmsb.gpu.arena), made with the first device page
        self.tag = -1  # the history tag held (mmsb._tags) while a state uses the core
        self.kept = 0  # bytes of a large arena span its last reset kept in memory (POOL_KEEP_ARENA_BYTES)
        # reentrant: event handlers and transaction bodies write while the commit holds it; a shared
        # state's also marks each call for readers in other processes
        self.lock = threading.RLock() if bus is None else _bus_owner().BusLock(bus)
        if bus is not None:
            bus.rv = self.rv
        self.logbuf.lock = self.lock
        # write latency histogram: lat[b] counts commits that took [2**(b-1), 2**b) ns; the
        # commit kernels count into it (R_LAT)
        self.lat = np.zeros(64, np.int64)
        regs[R_LAT] = address(self.lat)

    def __del__(self) -> None:
        bus = getattr(self, "bus", None)
        if bus is not None and not bus.closed:  # a shared state dropped without close: its files go
            try:
                bus.stop_serving()
                bus.close()
            except Exception:
                pass
        # the core of a state dropped without close gives its tag back (a closed one already did)
        if self.tag >= 0:
            try:
                _tags.give_back(self.tag)
            except Exception:  # at interpreter exit the module's globals may be gone
                pass

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
        """Back to the state of a fresh core, at a cost that follows what was touched.

        It runs on every stop. The common case (a few pages in the first chunk, nothing freed, no
        graph, no device page, a log of the pooled size) is checked in one expression; then one
        kernel call clears the rows, counters and log counters that Python would take a
        microsecond to clear, and anything else takes :meth:`_reset_all`. Either way the counters
        a start would otherwise set are left as a fresh state's (``mmsb.kernels.arena.reset_core``).
        """
        table, arena, buf = self.table, self.arena, self.logbuf
        if (table.free or arena.free or self.dev is not None or arena.reserved != arena.first_end
                or arena.bump - arena.first >= config.RESET_RELEASE_BYTES or self.prop.bindings
                or self.prop.graph._n or buf.phys.size > config.POOL_KEEP_LOG_BYTES):
            self._reset_all()
            return
        _reset(self.regs, table.used, True, buf.ctr_addr)
        self.kept = 0
        table.used = 0
        arena.bump = arena.first

    def _reset_all(self) -> None:
        arena, table = self.arena, self.table
        if self.dev is not None:
            if self.dev.pages:
                # a device page's host slot was never written: keep the reset from touching it
                meta = table.array[T_META, : table.used]
                table.array[T_EPOCH, : table.used][(meta & np.uint64(_GPU_BIT)) != 0] = 0
            self.dev.reset()
        span = arena.bump - arena.first
        released = (arena.reserved != arena.first_end or span >= config.RESET_RELEASE_BYTES and (
            _pool_kept[0] + span > config.POOL_KEEP_ARENA_BYTES)) and arena.release_span()
        self.kept = 0 if released or span < config.RESET_RELEASE_BYTES else span
        prop = self.prop
        if prop.bindings or prop.graph.num_nodes:
            prop.clear()
        if self.logbuf.phys.size > config.POOL_KEEP_LOG_BYTES:
            self.logbuf.retire()
            self.logbuf = LogBuffer()
        _reset(self.regs, table.used, not released, self.logbuf.ctr_addr)
        table.clear()
        arena.clear()


# Reset resources of stopped states, reused by mmsb.start (see mmsb.pool), and the bytes of large
# arena spans they keep in memory (config.POOL_KEEP_ARENA_BYTES).
_pool: list[_Core] = []
_pool_kept = [0]


def _take_core() -> _Core:
    """Reset resources from the pool, else new ones (a pool filled under another config is dropped:
    a fresh state would differ)."""
    try:
        core = _pool.pop()
    except IndexError:
        return _Core()
    if core.kept:
        _pool_kept[0] -= core.kept
    if core.reserve_asked != config.ARENA_RESERVE_BYTES:
        _pool.clear()
        _pool_kept[0] = 0
        return _Core()
    return core


class State(Commit, DeviceWrites, Dependencies, Durability, Annotate):
    """A state: pages, their epochs, the LSN counter and the log.

    ``State()`` makes a fresh state; :func:`mmsb.start` takes one from the pool
    (indistinguishable from a fresh one). After :meth:`close` (or
    :func:`mmsb.stop`) every call raises :class:`mmsb.StateClosedError`.

    ``retain`` bounds the records the log holds in memory: None keeps every
    record; ``n`` (an int) keeps at least the newest ``n`` deltas, dropping
    older whole commits as the buffer fills (so four to eight times the bytes
    of ``n`` deltas at most); ``"checkpoint"`` keeps what came after the last checkpoint
    (:meth:`checkpoint` truncates by default). A file log's file starts anew at
    a truncating checkpoint, kept beside it; under a window mmsb writes those
    checkpoints itself (docs/MEMORY.md). Records dropped are gone for ``st.log``, :meth:`history`
    and :meth:`replay` (:class:`mmsb.LogTrimmedError` names the oldest LSN
    left), except that a replay goes on from a checkpoint that truncated.

    ``shared``: a name (letters, digits, ``_``, ``-``) puts the state's pages, page table and
    counters in shared memory under that name, where other processes :func:`mmsb.attach` to
    read, wait for changes and submit writes (docs/BUS.md). Such a state keeps its pages in
    host memory and is not pooled; closing it removes its segments.

    ``tag`` is the tag the state's page ids carry (:attr:`tag`): None takes the lowest tag no
    live state holds, so states alive at once refuse each other's ids. Pass another state's
    ``tag`` to have a twin that gives the same ids for the same calls (and accepts that
    state's ids: they are no longer told apart). A log recovered at start brings its own.
    """

    __slots__ = ("_c", "_logobj", "_events", "_txn", "sync", "gpu", "_replaying", "_base", "_pending_gpu",
                 "_ann", "_zero", "__weakref__")

    def __init__(self, log: Any = None, sync: str = "commit", gpu: Any = "auto", retain: Any = None,
                 tag: Any = None, shared: Any = None) -> None:
        _check_options(log, sync, gpu, tag)
        keep = _check_retain(retain)
        if shared is None:
            self._attach(_Core(), log, sync, gpu, tag)
        else:
            self._attach_shared(shared, log, sync, gpu, tag)
        if retain is not None:
            self._retain_as(retain, keep)

    def _attach_shared(self, name: Any, log: Any, sync: str, gpu: Any, tag: Any) -> None:
        """Build on a bus named ``name`` (mmsb.bus): segments other processes attach to."""
        if gpu is True:
            raise InvalidArgumentError("a shared state keeps its pages in host memory, where other processes "
                                       "map them: gpu=True cannot hold there")
        bus = _bus_owner().Bus(name)
        try:
            core = _Core(bus)
        except BaseException:
            bus.close()
            raise
        self._attach(core, log, sync, False, tag)
        from .bus.mailbox import Server

        bus.server = Server(self, bus)  # it also holds the owner's mark, which readers test
        bus.ready(core.tag)

    def _retain_as(self, retain: Any, keep: int | None) -> None:
        self._logobj.retain(keep, truncates=retain == "checkpoint")

    def _retain(self, c: _Core, need: int = 0) -> None:
        """Between commits, with no savepoint open: let the log drop what its retention allows,
        before it grows (to take ``need`` more bytes)."""
        log = self._logobj
        if log._trim is not None and self._txn is None and not c.prop.saving and log.near_full(need):
            log.make_room()
            if log.durable and log.file_due(c.arena.used_bytes):
                self._checkpoint_beside_log(log)

    def _checkpoint_beside_log(self, log: Any) -> None:
        """A window over a file log: the file keeps what came after a checkpoint mmsb writes
        beside it (see FileLog.file_due), so the disk stays bounded like the memory."""
        from .log.file import base_path

        # a name only opening the log removes, should a crash leave it
        tmp = base_path(log.path, uuid.uuid4().bytes)
        try:
            self.checkpoint(tmp, truncate=True)
        except LogIOError as exc:  # the log itself is fine: it keeps every record until the next try
            warnings.warn(f"log {log.path!r} could not start anew at a checkpoint ({exc}); it keeps growing "
                          "until a later try succeeds", RuntimeWarning, stacklevel=4)
        finally:
            try:
                os.unlink(tmp)  # the checkpoint lives on as the log's base (a hard link or a copy)
            except OSError:
                pass

    @classmethod
    def _from_core(cls, core: _Core, log: Any, sync: str, gpu: Any) -> State:
        st = object.__new__(cls)
        st._attach(core, log, sync, gpu)
        return st

    @staticmethod
    def _fresh() -> State:
        """A state on pooled resources, as ``mmsb.start()`` gives: what a replay builds into."""
        return State._from_core(_take_core(), None, "commit", "auto")

    def _adopt_tag(self, c: _Core, tag: int) -> None:
        """Take the tag of the history this state replays or restores: its ids are that history's."""
        if tag != c.tag:
            _tags.share(tag)
            _tags.give_back(c.tag)
            c.tag = tag
            c.table.fresh_gen = tag << GEN_TAG_SHIFT

    @holds
    def _attach(self, core: _Core, log: Any, sync: str, gpu: Any, tag: Any = None) -> None:
        if _getsignal(_SIGINT) is not _handler:  # ensure(), inlined: interrupts held inside mmsb's calls
            install()
        self._c = core
        if tag is None:
            try:
                core.tag = tag = _heappop(_free_tags)  # _tags.take()'s common case, inlined: one C call, no lock
            except IndexError:
                core.tag = tag = _tags.take()
        else:
            _tags.share(int(tag))
            core.tag = tag = int(tag)
        core.table.fresh_gen = tag << GEN_TAG_SHIFT
        if log is None:  # the reset left the registers and log counters as an empty memory log's
            self._logobj = started(core.logbuf)
        else:
            buf = core.logbuf
            self._logobj = NullLog(buf) if log is False else MemoryLog(buf)
            core.rv[R_LOG] = buf.ctr_addr  # what the _log setter does
        self._events = None
        self._ann: Any = None  # page types, names, metadata, watches (mmsb.typed), from the first page with any
        self._zero: tuple[int, int] | None = None  # (log position, syncs) at the last reset_stats
        self._txn: _Savepoint | None = None
        self.sync, self.gpu = sync, gpu
        self._replaying = False
        self._pending_gpu: list[np.ndarray] = []  # ids a replay or restore made on the host for the device
        self._base: Any = None  # (checkpoint, log offset) where this state's history starts, if not at 0
        if log is not None and log is not False:
            try:
                open_file_log(self, log, sync)
            except BaseException:
                self.close()
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
            c.rv[R_LOG] = log._buf.ctr_addr  # where the commit kernels append

    @holds  # not @atomic: its wrapper would cost a tenth of the allocation cycle
    def close(self) -> None:
        """Close the state: a file log is written out, synced and released; the
        resources go back to the pool. Closing twice is harmless."""
        core, self._c = self._c, None
        if core is not None:
            tag, core.tag = core.tag, -1
            if _tag_shares:
                _tags.give_back(tag)
            else:
                _heappush(_free_tags, tag)  # _tags.give_back, inlined
                if _tag_shares:
                    _tags.settle()
            bus = core.bus
            if bus is not None:  # its requests are refused from now on: none is waiting for this lock
                bus.stop_serving()
            lock = core.lock
            lock.acquire()
            try:
                log = self._logobj
                try:
                    if log.durable:  # only a file log has anything to write out and release
                        log.close()
                finally:
                    log.detach()
                    if bus is None:
                        core.reset()
                    else:  # a shared core is not pooled: its segments go instead
                        bus.close()
            finally:
                lock.release()
            if bus is None and len(_pool) < config.POOL_SIZE:
                _pool.append(core)
                if core.kept:
                    _pool_kept[0] += core.kept
        if _held:  # an interrupt held during the call lands now (mmsb._interrupts)
            land()

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
        elif type(page) is str:
            return self._named(page)
        else:
            raise PageNotFoundError(f"expected a Page, a page id or a page name, got {type(page).__name__}")
        slot = pid & ID_SLOT_MASK
        table = c.table
        if pid < 0 or slot >= table.used or table.mv_meta[slot] & _KEY_MASK != _LIVE_BIT | pid >> ID_SLOT_BITS:
            raise self._missing(c, pid)
        return slot

    def _missing(self, c: _Core, pid: int, what: str = "") -> PageNotFoundError:
        """The error for an id that names no live page of this state, saying why (``what`` leads it)."""
        lead = what or f"no live page with id {pid}"
        gen, slot = pid >> ID_SLOT_BITS, pid & ID_SLOT_MASK
        if pid < 0 or gen > MAX_GENERATION:
            return PageNotFoundError(f"{lead}: not a page id")
        table = c.table
        own = (table.mv_meta[slot] & META_GEN_MASK if slot < table.used else table.fresh_gen) >> GEN_TAG_SHIFT
        if gen >> GEN_TAG_SHIFT != own:
            return PageNotFoundError(f"{lead}: the id is of another state's history (tag {gen >> GEN_TAG_SHIFT}, "
                                     f"this state's pages carry tag {own})")
        return PageNotFoundError(f"{lead}: it was deleted or never created")

    def _table_value(self, page: Any, row: int) -> int:
        c = self._core()
        return int(c.table.array[row, self._slot(c, page)])

    def page(self, page_id: Any) -> Page:
        """The handle of a live page, from its id, its name or a handle. Raises :class:`mmsb.PageNotFoundError`."""
        c = self._core()
        slot = self._slot(c, page_id)
        if type(page_id) is Page:
            return page_id
        return Page(self, self._id_of(slot), slot, c.table.mv_size[slot])

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
    def tag(self) -> int:
        """The tag of this state's history, carried by its page ids (bits 51-62; docs/FORMAT.md).

        A state takes the lowest tag no live state holds (0 for the first state of a process),
        so states alive at once refuse each other's ids; a replay or restore takes the tag of
        the history it rebuilds, and accepts that history's ids.
        """
        return self._core().table.fresh_gen >> GEN_TAG_SHIFT

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

    @holds
    def create_page(self, size: Any = None, location: str = "cpu", *, dtype: Any = None, shape: Any = None,
                    name: str | None = None, meta: dict[str, Any] | None = None) -> Page:
        """A new zero-filled page of ``size`` bytes (1 B .. 3 GiB: a dense delta of the page must fit one log record).

        A *typed* page also has a ``dtype`` and ``shape`` (C order), and its size
        follows from them (``shape`` alone: uint8; ``dtype`` alone: a 1-d page of
        ``size`` bytes): its writes take arrays of that dtype and shape,
        :meth:`view` and :meth:`array` give its values, recompute functions
        receive them. ``name`` (unique among live pages) lets every call take
        the page by name (``st["AAPL"]``); ``meta`` is a dict of JSON values.
        All of these are logged with the creation and kept in checkpoints.

        ``location``: ``"cpu"``; ``"gpu"``, the device (see ``docs/GPU.md``);
        ``"auto"``, the device when one is usable, the state was not started
        with ``gpu=False`` and ``size >= mmsb.gpu.threshold()``, else the CPU.
        Raises :class:`mmsb.InvalidPageError` for a bad size or location,
        :class:`mmsb.DeviceUnavailableError` for ``location="gpu"`` without a
        usable device (or with ``gpu=False``), and
        :class:`mmsb.CapacityError` when the arena (host or device) is full.
        """
        c = self._c
        if c is None:
            raise _closed()
        if dtype is not None or shape is not None or name is not None or meta is not None:
            return self._create_annotated(size, location, dtype, shape, name, meta)
        if type(size) is not int or not 0 < size <= MAX_PAGE_SIZE:
            size = _check_size(size)
        loc = LOC_CPU if location == "cpu" else _check_location(location, size, self.gpu)
        lock = c.lock
        lock.acquire()
        try:
            if self._c is not c:  # stopped while this call waited for the lock
                raise _closed()
            if self._txn is not None:  # this thread's (another's held the lock until it ended)
                raise _in_transaction("create_page")
            if self._logobj.failed is not None:  # _check_writable, inlined
                self._logobj._raise()
            table, arena = c.table, c.arena
            if loc == LOC_CPU and not table.free and not arena.free and c.bus is None:
                # the common case, one kernel call: a fresh slot, its row and its records
                slot = table.used
                pid = _create(c.regs, size, arena.bump, arena.reserved, slot, table.fresh_gen)
                if pid >= 0:
                    table.used = slot + 1
                    arena.bump = c.rv[R_BUMP]
                else:
                    pid, slot = self._create_one(c, size, loc)
            else:
                pid, slot = self._create_one(c, size, loc)
        finally:
            lock.release()
            if _held:  # an interrupt held during the call lands now (mmsb._interrupts)
                land()
        page = _new(Page)  # Page.__init__ without its call: a fifth of the page's creation
        page._state, page.id, page._slot, page._size = self, pid, slot, size
        return page

    def _create_one(self, c: _Core, size: int, loc: int) -> tuple[int, int]:
        """``create_page``'s general path, under the lock: a freed slot reused, a new chunk or a
        larger table, a device page, records through the log object. Returns (id, slot)."""
        table = c.table
        if loc != LOC_CPU:
            self._device(c).make_room(1, size)  # may refuse, and then nothing changed
        off = c.arena.allocate(size)  # the other step that may refuse (before any change)
        if table.free:
            slot = table.free.pop()
            gen = table.mv_meta[slot] & META_GEN_MASK
        else:
            slot = table.used
            if slot >= table.capacity:
                table.reserve(1)
            table.used = slot + 1
            gen = table.fresh_gen
        if loc != LOC_CPU:
            c.dev.assign(np.array([slot], np.int64), c.dev.reserve(1, size))
        table.mv_offset[slot] = off
        table.mv_size[slot] = size
        table.mv_meta[slot] = gen | loc << META_LOC_SHIFT | _LIVE_BIT
        pid = slot | gen << ID_SLOT_BITS
        self._logobj.append_create(pid, 1, size, loc, c.rv[R_LSN])  # a whole commit: sealed too
        return pid, slot

    def _create_annotated(self, size: Any, location: str, dtype: Any, shape: Any, name: Any, meta: Any) -> Page:
        """``create_page`` of a page with a type, a name or metadata: one commit of its create and info records."""
        size, info = check_info(size, dtype, shape, meta)
        if name is not None:
            info = info.replace(name=check_name(name))
        ids = self._create_many(1, size, location, info)
        return self.page(int(ids[0]))

    @atomic
    def create_pages(self, count: int, size: Any = None, location: str = "cpu", *, dtype: Any = None,
                     shape: Any = None, meta: dict[str, Any] | None = None, handles: bool = False) -> Any:
        """``count`` new zero-filled pages of ``size`` bytes (or of ``dtype`` and ``shape``, as in
        :meth:`create_page`); their ids (int64), or with ``handles=True`` a list of handles.

        The ids are those ``count`` calls of :meth:`create_page` would give. One commit.
        """
        info = None
        if dtype is not None or shape is not None or meta is not None:
            size, info = check_info(size, dtype, shape, meta)
        ids = self._create_many(count, size, location, info)
        if handles:
            return [Page(self, pid, pid & ID_SLOT_MASK, self._c.table.mv_size[pid & ID_SLOT_MASK])
                    for pid in ids.tolist()]
        return ids

    def _create_many(self, count: Any, size: Any, location: str, info: PageInfo | None) -> np.ndarray:
        c = self._core()
        if isinstance(count, (bool, np.bool_)) or not isinstance(count, (int, np.integer)) or count < 1:
            raise InvalidPageError(f"page count must be a positive integer, got {count!r}")
        count = int(count)
        size = _check_size(size)
        loc = _check_location(location, size, self.gpu)
        text = None if info is None else info_text(info)  # may refuse: before anything changes
        with c.lock:
            if self._c is not c:  # stopped while this call waited for the lock
                raise _closed()
            self._check_writable("create_pages")
            if info is not None and info.name is not None and info.name in self._annotations().names:
                raise InvalidArgumentError(f"another page is named {info.name!r}")
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
            if info is None:
                self._log.append_create(int(ids[0]), count, size, loc, c.lsn)  # a whole commit: sealed too
            else:
                ann = self._annotations()
                for s in slots.tolist():
                    ann.set(s, info)
                log = self._log
                log._append(REC_CREATE, c.lsn, int(ids[0]), size, count, loc)
                log.append_info(int(ids[0]), count, text, c.lsn)
                log.seal(c.lsn)
        return ids

    @atomic
    def delete_page(self, page: Any, dependents: str = "refuse") -> None:
        """Delete a page; its id, name and handles raise :class:`mmsb.PageNotFoundError` from now on.

        A page other pages depend on (edges out of it) is refused
        (:class:`mmsb.InvalidArgumentError`) unless ``dependents`` says what
        becomes of them: ``"unbind"``, the bindings that read the page are
        taken away with their edges (as :meth:`unbind`; the pages keep their
        bytes) and its other edges removed; ``"delete"``, every page that
        depends on it, directly or not, is deleted too. One commit.
        """
        if dependents not in _DEPENDENTS:
            raise InvalidArgumentError(f"dependents={dependents!r}: expected one of {_DEPENDENTS}")
        c = self._core()
        with c.lock:
            if self._c is not c:  # stopped while this call waited for the lock
                raise _closed()
            self._check_writable("delete_page")
            slot = self._slot(c, page)
            if self._replaying:  # a log's delete, as it was written
                self._delete_slot(c, slot)
            else:
                for s in self._clear_dependents(c, slot, dependents):
                    self._delete_slot(c, s)
            self._log.seal(c.lsn)

    def _delete_slot(self, c: _Core, slot: int) -> None:
        """Delete one page: its bytes zeroed, its slot and arena space freed, its record logged."""
        table = c.table
        pid = slot | ((table.mv_meta[slot] & META_GEN_MASK) << ID_SLOT_BITS)
        off, size = table.mv_offset[slot], table.mv_size[slot]
        if table.mv_meta[slot] & _GPU_BIT:
            c.dev.release(slot, size)
        elif table.mv_epoch[slot]:
            _k.zero_bytes(c.arena.data, off, size)
        c.arena.release(off, size)
        table.retire(slot)
        if self._ann is not None:
            self._ann.forget(slot)
        self._log.append_delete(pid, c.lsn)
        if slot < c.prop.graph.num_nodes:
            self._forget_node(c, slot)

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
        """A read-only, zero-copy view of the page: its values in its dtype and shape for a typed
        page, else its bytes (uint8).

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
        v = c.arena.view(c.table.mv_offset[slot], c.table.mv_size[slot])
        v.flags.writeable = False
        return v if self._ann is None else typed_view(self._info(slot), v)

    # -- whole-state views -----------------------------------------------------

    def state_hash(self) -> str:
        """A BLAKE2b digest of the live pages (ids, sizes, epochs, bytes) and the LSN.

        Two states with equal hashes hold the same pages with the same bytes
        and epochs, whatever their history inside (pool reuse, slot layout); the
        ids are hashed without their :attr:`tag`.
        """
        c = self._core()
        import hashlib  # here, not at import: it loads OpenSSL (~4 ms)

        h = hashlib.blake2b(digest_size=32)
        with c.lock:
            if self._c is not c:  # stopped while this call waited for the lock
                raise _closed()
            ids = self.page_ids()
            slots = ids & ID_SLOT_MASK
            ids &= ~ID_TAG_MASK  # a state's tag tells live states apart; it is not part of what a state holds
            a = c.table.array
            h.update(np.int64(c.lsn).tobytes())
            h.update(ids.tobytes())
            h.update(a[T_SIZE, slots].tobytes())
            h.update(a[T_EPOCH, slots].tobytes())
            data = c.arena.data
            # a page at epoch 0 was never written: zeros, which its size and epoch above already say
            # (a 200-byte log can create terabytes of such pages; hashing them would read them all)
            ann = self._ann
            if ann is not None and ann.info:  # types, names, metadata: only states that have any hash them
                h.update("".join(f"{i}{ann.info[s].to_json()}" for i, s in zip(ids.tolist(), slots.tolist())
                                 if s in ann.info).encode())
            written = slots[a[T_EPOCH, slots] != 0]
            gpu = ((a[T_META, written] & np.uint64(_GPU_BIT)) != 0).tolist()
            for slot, off, size, on_dev in zip(written.tolist(), a[T_OFFSET, written].tolist(),
                                               a[T_SIZE, written].tolist(), gpu):
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
          copied to/from the device (see :mod:`mmsb.gpu` for what crosses when);
          ``device_arena_bytes``: device memory the state's arena holds.
        - ``write_time_samples``, ``write_time_p50_ns``, ``write_time_p99_ns``,
          ``write_time_max_ns``: duration of the commits of ``update_page``/
          ``apply_delta``/``apply_batch`` calls (apply, log and cascade, from inside the
          commit kernel to the seal; not the call's own Python and dispatch, about a
          microsecond) that committed a delta outside a transaction, sampled: one
          write call in 16 (the state's 1st, 17th, 33rd, ... such call, whether it
          changed bytes or not) is timed. Kept in log2
          buckets, so each figure is the upper edge of its bucket, at most twice
          the true value; None before the first sample.
        - ``arena_*``, ``table_rows``, ``log_records_kept``: memory bookkeeping.

        :meth:`reset_stats` starts the counters above (not the state's own figures) afresh.
        """
        c = self._core()
        with c.lock:
            if self._c is not c:  # stopped while this call waited for the lock
                raise _closed()
            meta = c.table.array[T_META, : c.table.used]
            live = (meta & np.uint64(_LIVE_BIT)) != 0
            log = self._log
            written = None
            since, syncs = log.first_pos, getattr(log, "syncs", 0)
            if self._zero is not None:
                since, syncs = max(since, self._zero[0]), syncs - self._zero[1]
            if log.keeps_records:
                from .kernels.stats import delta_bytes

                written = int(delta_bytes(log.reserve(0)[since:], log.used - since))
            cascades, recomputed, skipped = c.prop.counters()
            dev = c.dev
            return {
                "pages": int(live.sum()),
                "page_bytes": int(c.table.array[T_SIZE, : c.table.used][live].sum()),
                "deltas": c.deltas,
                "lsn": c.lsn,
                "log_bytes": self._log.nbytes if self._log.keeps_records else 0,
                "log_records_kept": int(self._log.keeps_records),
                "arena_used_bytes": c.arena.used_bytes,
                "arena_reserved_bytes": c.arena.reserved_bytes,
                "table_rows": c.table.array.shape[1],
                "bytes_written": written,
                "cascades": cascades,
                "pages_recomputed": recomputed,
                "pages_skipped": skipped,
                "syncs": syncs,
                "device_pages": dev.pages if dev is not None else 0,
                "device_launches": dev.launches if dev is not None else 0,
                "device_bytes_in": dev.bytes_in if dev is not None else 0,
                "device_bytes_out": dev.bytes_out if dev is not None else 0,
                "device_arena_bytes": dev.data.size if dev is not None else 0,
                **_latency_summary(c.lat),
            }

    def reset_stats(self) -> None:
        """Start the statistics of :meth:`stats` afresh: ``bytes_written``, ``cascades``,
        ``pages_recomputed``, ``pages_skipped``, ``syncs``, the device counters and the write-time
        samples count from now. What describes the state (pages, ``lsn``, ``deltas``, epochs, the
        log) does not change."""
        c = self._core()
        with c.lock:
            if self._c is not c:
                raise _closed()
            c.prop.reset_counters()
            c.lat[:] = 0
            if c.dev is not None:
                c.dev.launches = c.dev.bytes_in = c.dev.bytes_out = 0
            self._zero = (self._log.used, getattr(self._log, "syncs", 0))

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

