"""Another process's handle on a shared state: consistent reads, waits, subscriptions, writes.

:func:`attach` maps a shared state's segments (read-only, but for the header's
few words readers move) and reads pages straight out of them: one copy into the
caller's array, accepted only across an even, unmoved sequence word
(:func:`mmsb.kernels.bus.read_pages`), so a read never shows a call half done.
A read that keeps meeting the owner's calls asks it for a quiet moment
(``H_HOLD``), which the owner grants for at most ``config.BUS_HOLD_US``.
Writes go to the owner, which applies them as its own (:mod:`mmsb.bus.mailbox`).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from typing import Any, Iterator

import numpy as np

from .._layout import (
    H_CHUNKS,
    H_CLOSED,
    H_DELTAS,
    H_HOLD,
    H_HOLDS_BROKEN,
    H_LSN,
    H_MAGIC,
    H_MAGIC_W,
    H_MAILBOXES,
    H_NCHUNKS,
    H_PID,
    H_READY,
    H_ROBUST,
    H_ROBUST_OK,
    H_SEQ,
    H_TABLE_GEN,
    H_TAG,
    H_VERSION,
    H_VERSION_1,
    H_WAITERS,
    H_WAKE,
    ID_SLOT_BITS,
    ID_SLOT_MASK,
    META_GEN_MASK,
    RP_CAP,
    RP_CHUNKS,
    RP_COUNT,
    RP_EPOCHS,
    RP_GEN,
    RP_HEADER,
    RP_IDS,
    RP_MISSING,
    RP_NCHUNKS,
    RP_OUT,
    RP_REMAP,
    RP_RESIZED,
    RP_SIZES,
    RP_TABLE,
    RP_WORDS,
    T_META,
    T_OFFSET,
    T_SIZE,
    TABLE_ROWS,
)
from .._registers import address
from ..arena import LIVE_BIT as LIVE_BIT_VALUE
from ..errors import (
    BusBusyError,
    BusNotFoundError,
    InvalidArgumentError,
    OwnerGoneError,
    PageNotFoundError,
    StateClosedError,
)
from ..log.history import limits
from .page import AttachedPage
from .segment import SYS_FUTEX, Segment, check_name, futex_wait, holder_alive, mark_dead, path, sweep

_OWNER_DIED = 0x40000000  # see mmsb.bus.segment.mark_dead
_U8 = np.dtype(np.uint8)
_ONE = (1,)
_TRIES = 64  # optimistic reads before asking the owner for a quiet moment
_READ_TIMEOUT_S = 10.0


def _kernels() -> Any:
    from ..kernels import _jit, bus

    return _jit, bus


def attach(name: Any, timeout: float | None = None) -> Attached:
    """Attach to the shared state ``name`` that another process (or this one) started with
    ``mmsb.start(shared=name)``. ``timeout``: seconds to wait for it to appear (None: none).

    Raises :class:`mmsb.BusNotFoundError` when there is none, :class:`mmsb.OwnerGoneError`
    when its owner died without closing it (its files are removed then).
    """
    return Attached(name, timeout)


class Snapshot:
    """Pages of a shared state as they all were at one LSN: ``snap[page_id]`` is a
    read-only array of the page's bytes; ``ids``, ``epochs`` and ``lsn`` say which and when."""

    __slots__ = ("lsn", "ids", "epochs", "_buf", "_starts")

    def __init__(self, lsn: int, ids: np.ndarray, epochs: np.ndarray, buf: np.ndarray, sizes: np.ndarray) -> None:
        self.lsn, self.ids, self.epochs, self._buf = lsn, ids, epochs, buf
        self._starts = {int(p): (int(a), int(b)) for p, a, b in zip(ids, np.cumsum(sizes) - sizes, np.cumsum(sizes))}
        buf.flags.writeable = False

    def __getitem__(self, page_id: Any) -> np.ndarray:
        try:
            a, b = self._starts[int(page_id)]
        except (KeyError, TypeError, ValueError):
            raise PageNotFoundError(f"page {page_id!r} is not in this snapshot") from None
        return self._buf[a:b]

    def __len__(self) -> int:
        return len(self._starts)

    def __iter__(self) -> Iterator[int]:
        return iter(self._starts)

    def __contains__(self, page_id: Any) -> bool:
        return page_id in self._starts

    def items(self) -> Iterator[tuple[int, np.ndarray]]:
        for p in self._starts:
            yield p, self[p]

    def __repr__(self) -> str:
        return f"<mmsb.Snapshot lsn={self.lsn} pages={len(self)} bytes={self._buf.size}>"


class Attached:
    """A process's handle on a shared state it does not own (see :func:`attach`).

    Reads: :meth:`query_page`, :meth:`snapshot`, :meth:`page_ids`, :meth:`epochs`,
    :attr:`lsn`, :meth:`stats`; a live view: :meth:`view`. Waiting: :meth:`wait`,
    :meth:`changes`, :meth:`subscribe`. Writes, applied by the owner in one order
    with the owner's own: :meth:`update_page`, :meth:`apply_batch`. Once the owner
    closed the state every call raises :class:`mmsb.StateClosedError`; once it died,
    :class:`mmsb.OwnerGoneError`.
    """

    def __init__(self, name: Any, timeout: float | None = None) -> None:
        self.name = check_name(name)
        self._header = self._open_header(timeout)
        h = self._h = self._header.array
        self._hv = memoryview(h)
        self._addr = address(h)
        self._pid = int(h[H_PID])
        self._h32 = memoryview(h.view(np.int32))
        self._robust = bool(h[H_ROBUST_OK])
        self.tag = int(h[H_TAG])
        self._table: Any = None
        self._table_gen = -1
        self._chunk_segs: list[Segment] = []
        self._chunks = np.zeros((0, 3), np.int64)
        self._args = np.zeros(RP_WORDS, np.int64)
        self._av = memoryview(self._args)
        self._one = np.zeros(3, np.int64)  # id, size, epoch of a single-page read
        self._ov = memoryview(self._one)
        self._one_at = address(self._one)
        self._none = np.empty(0, np.uint8)
        self._closed = False
        self._submitter: Any = None
        self._lock = threading.Lock()  # one thread at a time moves the argument words
        jit, k = _kernels()
        self._read_kernel = self._kernel_read = jit.entry(k.read_pages)
        self._one_pointed = False
        self._sizes: Any = ()
        self._word_add, self._word_swap = jit.entry(k.word_add), jit.entry(k.word_swap)
        self._sleep = jit.entry(k.sleep_on_wake) if SYS_FUTEX else None
        self._av[RP_HEADER] = self._addr
        self._map()
        # a process that exits without close gives its mailbox back all the same
        self._finalizer = weakref.finalize(self, Attached._release, self.__dict__)

    def _open_header(self, timeout: float | None) -> Segment:
        deadline = time.monotonic() + (timeout or 0.0)
        p = path(self.name)
        while True:
            try:
                seg = Segment.open(p, True, np.int64)
            except FileNotFoundError:
                seg = None
            if seg is not None:
                h = seg.array
                if h.size > H_READY and h[H_MAGIC_W] == H_MAGIC and h[H_VERSION] == H_VERSION_1 and h[H_READY]:
                    if not holder_alive(p):
                        seg.close()
                        self._clear_dead(p)
                        raise OwnerGoneError(f"shared state {self.name!r}: its owner (process {int(h[H_PID])}) "
                                             "ended without closing it; its files were removed")
                    if h[H_CLOSED]:
                        seg.close()
                        raise BusNotFoundError(f"shared state {self.name!r} was closed by its owner")
                    return seg
                seg.close()  # not built yet (or not a bus): wait for it like for a missing one
            if time.monotonic() >= deadline:
                raise BusNotFoundError(f"no shared state named {self.name!r} is open (looked in {path(self.name)})")
            time.sleep(0.005)

    def _clear_dead(self, p: str) -> None:
        """Remove a dead owner's files, if no other process took the name meanwhile."""
        try:
            seg = Segment.open(p, False, np.int64)
        except FileNotFoundError:
            return
        try:
            if seg.lock(True) and os.stat(p).st_ino == os.fstat(seg.fd).st_ino:
                sweep(self.name)
                seg.remove()
        except FileNotFoundError:
            pass
        finally:
            seg.close()

    # -- mapping -------------------------------------------------------------------------

    def _map(self) -> None:
        """Map the page table and arena chunks the header names now (they only ever grow)."""
        h = self._h
        while True:
            gen = int(h[H_TABLE_GEN])
            if gen != self._table_gen:
                try:
                    seg = Segment.open(path(self.name, f".t{gen}"), False, np.uint64)
                except FileNotFoundError:  # grown again meanwhile, or the owner closed
                    self._check_owner()
                    continue
                cap = seg.array.size // TABLE_ROWS
                self._table = seg.array[: TABLE_ROWS * cap].reshape(TABLE_ROWS, cap)
                self._sizes = memoryview(self._table[T_SIZE])
                seg.close()
                self._table_gen = gen
                self._av[RP_TABLE], self._av[RP_CAP], self._av[RP_GEN] = address(self._table), cap, gen
            n = int(h[H_NCHUNKS])
            if n > len(self._chunk_segs):
                rows = []
                for k in range(len(self._chunk_segs), n):
                    try:
                        seg = Segment.open(path(self.name, f".a{k}"), False)
                    except FileNotFoundError:
                        self._check_owner()
                        raise  # pragma: no cover - chunks are removed only at close
                    seg.close()
                    self._chunk_segs.append(seg)
                    rows.append((int(h[H_CHUNKS + 2 * k]), int(h[H_CHUNKS + 2 * k + 1]), address(seg.array)))
                self._chunks = np.ascontiguousarray(np.vstack([self._chunks, np.array(rows, np.int64)]))
                self._av[RP_CHUNKS], self._av[RP_NCHUNKS] = address(self._chunks), n
            return

    def _check_owner(self) -> None:
        """Raise if the owner closed the state or died: the owner's robust mutex (a load), or
        where there is none a signal 0 to its pid."""
        if self._hv[H_CLOSED] or self._closed:
            raise StateClosedError(f"shared state {self.name!r} was closed by its owner" if not self._closed
                                   else f"this handle on shared state {self.name!r} was closed")
        if self._robust:
            if mark_dead(self._h32[2 * H_ROBUST]):
                raise self._gone()
            return
        try:
            os.kill(self._pid, 0)
        except ProcessLookupError:
            raise self._gone() from None
        except PermissionError:  # alive, another user's
            pass

    def _gone(self) -> OwnerGoneError:
        return OwnerGoneError(f"shared state {self.name!r}: its owner (process {self._pid}) ended without "
                              "closing it")

    def _owner_lost(self) -> bool:
        """The slow, certain test (the owner's lock), for when a read or wait makes no progress."""
        return not holder_alive(path(self.name)) and not self._hv[H_CLOSED]

    # -- reads ---------------------------------------------------------------------------

    def _point(self, ids: np.ndarray, sizes: np.ndarray, epochs: np.ndarray) -> None:
        self._one_pointed = False
        av = self._av
        av[RP_IDS], av[RP_COUNT], av[RP_SIZES], av[RP_EPOCHS] = address(ids), ids.size, address(sizes), address(epochs)

    def _point_one(self) -> None:
        self._one_pointed = True
        self._av[RP_OUT] = 1
        av, base = self._av, self._one_at
        av[RP_IDS], av[RP_COUNT], av[RP_SIZES], av[RP_EPOCHS] = base, 1, base + 8, base + 16

    def _read(self, out: np.ndarray, timeout: float, copy: bool = True) -> int:
        """Run read_pages (over the ids _point named) until it gives an answer: the LSN, or
        RP_RESIZED / RP_MISSING - i. ``out``: where the pages go (``copy`` False: epochs only)."""
        kernel, args = self._read_kernel, self._args
        self._av[RP_OUT] = copy
        self._one_pointed = False
        for _ in range(_TRIES):
            r = kernel(args, out)
            if r >= 0 or r <= RP_RESIZED:
                return r
            if r == RP_REMAP:
                self._map()
                continue
            self._check_owner()
        return self._read_quiet(out, timeout)

    def _read_quiet(self, out: np.ndarray, timeout: float) -> int:
        """Ask the owner to hold its next call while this read runs (one reader at a time)."""
        me = os.getpid()
        deadline = time.monotonic() + timeout
        held = False
        try:
            while True:
                if not held:
                    held = self._word_swap(self._addr, H_HOLD, 0, me) == 0
                r = self._read_kernel(self._args, out)
                if r >= 0 or r <= RP_RESIZED:
                    return r
                if r == RP_REMAP:
                    self._map()
                    continue
                self._check_owner()
                if time.monotonic() > deadline:
                    if self._owner_lost():
                        raise OwnerGoneError(f"shared state {self.name!r}: its owner ended without closing it")
                    raise BusBusyError(f"a consistent read of shared state {self.name!r} did not finish in {timeout} s "
                                       "while its owner kept writing (see mmsb.config.BUS_HOLD_US)")
                time.sleep(0 if held else 50e-6)
        finally:
            if held:
                self._word_swap(self._addr, H_HOLD, me, 0)

    def _page_id(self, page: Any) -> int:
        if isinstance(page, str):  # a name: the owner knows it (one round trip through the mailbox)
            return self.page(page).id
        if isinstance(page, AttachedPage):
            return page.id
        if isinstance(page, (bool, np.bool_)) or not isinstance(page, (int, np.integer)):
            raise InvalidArgumentError(f"a page is an id (int), a name (str) or an AttachedPage, "
                                       f"got {type(page).__name__}")
        return int(page)

    def _size_hint(self, pid: int) -> int:
        """The page's size as the table says now (checked again inside the read)."""
        slot = pid & ID_SLOT_MASK
        t = self._table
        return int(t[T_SIZE, slot]) if 0 <= slot < t.shape[1] else 0

    def _missing(self, pid: int) -> PageNotFoundError:
        return PageNotFoundError(f"no live page with id {pid} in shared state {self.name!r}")

    def query_page(self, page: Any, out: np.ndarray | None = None, timeout: float = _READ_TIMEOUT_S) -> np.ndarray:
        """A copy of the page's bytes as they were at one LSN (a ``uint8`` array; into ``out``,
        a writable contiguous ``uint8`` array of the page's size, if given)."""
        pid = page if type(page) is int else self._page_id(page)
        # strides (1,) of a uint8 array: 1-d and contiguous, one attribute where flags makes an object
        if out is not None and not (isinstance(out, np.ndarray) and out.dtype == _U8 and out.strides == _ONE
                                    and out.flags.writeable):
            raise InvalidArgumentError("out must be a writable, contiguous 1-d uint8 array")
        lock = self._lock
        lock.acquire()
        try:
            # _check_owner's common case, inlined: a third of a small read
            if self._hv[H_CLOSED] or self._closed or not self._robust or self._h32[2 * H_ROBUST] & _OWNER_DIED:
                self._check_owner()
            ov = self._ov
            if not self._one_pointed:
                self._point_one()
            slot = pid & ID_SLOT_MASK
            while True:
                sizes = self._sizes  # a remap inside the read below replaces it
                size = sizes[slot] if slot < len(sizes) else 0  # checked again inside the read
                if out is None:
                    buf = np.empty(size, np.uint8)
                elif out.size != size and size:
                    raise InvalidArgumentError(f"out holds {out.size} bytes; page {pid} has {size}")
                else:
                    buf = out
                ov[0] = pid
                ov[1] = size
                r = self._kernel_read(self._args, buf)
                if r < 0:
                    r = self._read(buf, timeout)
                if r >= 0:
                    return buf
                if r != RP_RESIZED:
                    raise self._missing(pid)
        finally:
            lock.release()

    def epochs(self, pages: Any) -> np.ndarray:
        """The epochs of ``pages`` (ids), all at one LSN."""
        ids = self._ids(pages)
        eps = np.zeros(ids.size, np.int64)
        sizes = np.zeros(ids.size, np.int64)
        with self._lock:
            self._check_owner()
            self._point(ids, sizes, eps)
            r = self._read(self._none, _READ_TIMEOUT_S, copy=False)
        if r < 0:
            raise self._missing(int(ids[RP_MISSING - r]))
        return eps

    def _ids(self, pages: Any) -> np.ndarray:
        ids = np.ascontiguousarray(np.atleast_1d(np.asarray(pages)))
        if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
            raise InvalidArgumentError(f"pages must be page ids (ints), got dtype {ids.dtype}")
        return ids.astype(np.int64)

    def page_ids(self) -> np.ndarray:
        """Ids of the live pages, at one LSN, in slot order."""
        with self._lock:
            self._check_owner()
            return self._live_ids()[0]

    def _live_ids(self) -> tuple[np.ndarray, np.ndarray]:
        for _ in range(1 << 20):
            seq = self._hv[H_SEQ]
            if seq & 1:
                time.sleep(0)
                self._check_owner()
                continue
            self._map()
            t = self._table
            meta = t[T_META]
            slots = np.flatnonzero(meta & np.uint64(LIVE_BIT_VALUE))
            ids = (slots.astype(np.int64) | ((meta[slots] & np.uint64(META_GEN_MASK)).astype(np.int64) << ID_SLOT_BITS))
            sizes = t[T_SIZE, slots].astype(np.int64)
            if self._hv[H_SEQ] == seq and int(self._h[H_TABLE_GEN]) == self._table_gen:
                return ids, sizes
        raise BusBusyError(f"shared state {self.name!r} changed under every try to list its pages")  # pragma: no cover

    def snapshot(self, pages: Any = None, timeout: float = _READ_TIMEOUT_S) -> Snapshot:
        """Pages (ids; None: every live page) copied as they all were at one LSN."""
        with self._lock:
            self._check_owner()
            while True:
                if pages is None:
                    ids, sizes = self._live_ids()
                else:
                    ids = self._ids(pages)
                    slots = ids & ID_SLOT_MASK
                    t = self._table
                    ok = slots < t.shape[1]
                    sizes = np.where(ok, t[T_SIZE, np.where(ok, slots, 0)].astype(np.int64), 0)
                buf = np.empty(int(sizes.sum()), np.uint8)
                eps = np.zeros(ids.size, np.int64)
                self._point(ids, sizes, eps)
                r = self._read(buf, timeout)
                if r >= 0:
                    return Snapshot(r, ids, eps, buf, sizes)
                if r == RP_RESIZED:
                    continue
                if pages is None:
                    continue  # a page went between the listing and the read: list again
                raise self._missing(int(ids[RP_MISSING - r]))

    def view(self, page: Any) -> np.ndarray:
        """A read-only view of the page's bytes in shared memory, live: it shows the owner's
        writes as they land, so a read of it may see a call half done (use :meth:`query_page`
        or :meth:`snapshot` for consistent copies). Valid while the page lives."""
        pid = self._page_id(page)
        with self._lock:
            self._check_owner()
            self._map()
            slot = pid & ID_SLOT_MASK
            t = self._table
            if not (slot < t.shape[1] and t[T_META, slot] & np.uint64(LIVE_BIT_VALUE)
                    and int(t[T_META, slot]) & META_GEN_MASK == pid >> ID_SLOT_BITS):
                raise self._missing(pid)
            off, size = int(t[T_OFFSET, slot]), int(t[T_SIZE, slot])
            for (start, end, _), seg in zip(self._chunks, self._chunk_segs):
                if start <= off < end:
                    return seg.array[off - start: off - start + size]
        raise self._missing(pid)  # pragma: no cover - a live page is in a chunk

    @property
    def lsn(self) -> int:
        """The state's LSN as of the owner's last finished call."""
        self._check_owner()
        return int(self._hv[H_LSN])

    def stats(self) -> dict[str, Any]:
        """What the header says: owner, LSN, delta count, pages, segments and readers."""
        with self._lock:
            self._check_owner()
            ids, sizes = self._live_ids()
            return {"name": self.name, "owner_pid": self._pid, "lsn": int(self._h[H_LSN]),
                    "deltas": int(self._h[H_DELTAS]), "pages": int(ids.size), "page_bytes": int(sizes.sum()),
                    "table_rows": int(self._table.shape[1]), "arena_chunks": len(self._chunk_segs),
                    "sleeping_readers": int(self._h[H_WAITERS]), "mailboxes": int(self._h[H_MAILBOXES]),
                    "holds_broken": int(self._h[H_HOLDS_BROKEN])}

    # -- waiting -------------------------------------------------------------------------

    def wait(self, lsn: Any = None, timeout: float | None = None) -> int | None:
        """Sleep until the state's LSN reaches ``lsn`` (None: the next LSN after the current
        one); the LSN then, or None if ``timeout`` seconds passed first. The owner's commits
        wake the sleeper (a futex on Linux); it does not spin."""
        self._check_owner()
        hv = self._hv
        target = int(hv[H_LSN]) + 1 if lsn is None else int(lsn)
        deadline = None if timeout is None else time.monotonic() + timeout
        wake = self._addr + 8 * H_WAKE
        while True:
            # the owner bumps the wake word after every LSN it publishes, so a commit between
            # these loads and the sleep makes the futex refuse to sleep; an atomic load keeps
            # the LSN load after it on weakly ordered CPUs too
            w = self._word_add(self._addr, H_WAKE, 0)
            now = int(hv[H_LSN])
            if now >= target:
                return now
            self._check_owner()
            left = 0.25 if deadline is None else min(0.25, deadline - time.monotonic())
            if left <= 0:
                return None
            if SYS_FUTEX:  # one GIL-free kernel call: nothing but the futex between commit and wake
                ts = np.array([int(left), int(left % 1.0 * 1e9)], np.int64)  # per call: threads may wait at once
                after = self._sleep(self._addr, w, address(ts), SYS_FUTEX)
            else:
                self._word_add(self._addr, H_WAITERS, 1)
                try:
                    futex_wait(wake, w, left)
                finally:
                    self._word_add(self._addr, H_WAITERS, -1)
                after = self._word_add(self._addr, H_WAKE, 0)
            # a wake word that moved is the owner at work; only a sleep that ended without it pays
            # for the certain test (open + flock, tens of µs on a cold CPU)
            if after == w and self._owner_lost():
                raise OwnerGoneError(f"shared state {self.name!r}: its owner ended without closing it")

    def changes(self, pages: Any, timeout: float | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(lsn, ids)`` each time some of ``pages`` changed: the ids whose epochs moved
        since the last yield (or since this call). Stops after ``timeout`` seconds without a change."""
        ids = self._ids(pages)
        return self._changes(ids, *self._baseline(ids), timeout)

    def _baseline(self, ids: np.ndarray) -> tuple[int, np.ndarray]:
        # the LSN first: a commit between the two reads then wakes the first wait at once
        lsn = self.lsn
        return lsn, self.epochs(ids)

    def _changes(self, ids: np.ndarray, lsn: int, seen: np.ndarray,
                 timeout: float | None) -> Iterator[tuple[int, np.ndarray]]:
        while True:
            now = self.wait(lsn + 1, timeout)
            if now is None:
                return
            eps = self.epochs(ids)
            moved = eps != seen
            lsn = now
            if moved.any():
                seen = eps
                yield now, ids[moved]

    def subscribe(self, pages: Any, callback: Any) -> Subscription:
        """Call ``callback(lsn, ids)`` from a background thread each time some of ``pages``
        change (see :meth:`changes`); stop it with the result's ``close()``."""
        if not callable(callback):
            raise InvalidArgumentError(f"callback must be callable, got {type(callback).__name__}")
        return Subscription(self, self._ids(pages), callback)

    # -- writes (mmsb.bus.mailbox) ------------------------------------------------------------

    def _mailbox(self) -> Any:
        if self._submitter is None:
            from .mailbox import Submitter

            self._submitter = Submitter(self)
        return self._submitter

    def update_page(self, page: Any, data: Any, timeout: float | None = None) -> int:
        """Have the owner make the page hold ``data``, as ``State.update_page`` does: bytes of the
        page's size, or values (any array of numbers, or what NumPy makes one of) that the owner
        converts to a typed page's dtype and shape by the same rules. The LSN of the change (0
        when no byte differed). Errors are the owner's, raised here."""
        self._check_owner()
        return self._mailbox().update_page(self._page_id(page), data, timeout)

    def apply_batch(self, batch: Any, timeout: float | None = None) -> np.ndarray:
        """Have the owner apply a :class:`mmsb.DeltaBatch` as ``State.apply_batch`` does, in one
        piece; the LSN of each delta. Errors are the owner's, raised here; then nothing applied."""
        self._check_owner()
        return self._mailbox().apply_batch(batch, timeout)

    def page(self, page: Any, timeout: float | None = None) -> AttachedPage:
        """The page with this id or name, as the owner describes it (its dtype, shape, name and
        metadata; one round trip through this process's mailbox): an :class:`AttachedPage`,
        whose ``read()`` gives the values in its dtype and shape."""
        self._check_owner()
        if isinstance(page, AttachedPage):
            page = page.id
        if not isinstance(page, str):
            page = self._page_id(page)
        return AttachedPage(self, self._mailbox().describe(page, timeout))

    def history(self, page: Any, depth: int = 32, last: int | None = None, timeout: float | None = None) -> Any:
        """The owner's :meth:`mmsb.State.history` of the page (a :class:`mmsb.History`), asked
        through this process's mailbox: the owner's log answers, as far as it keeps records."""
        self._check_owner()
        depth, last = limits(depth, last)
        return self._mailbox().history(self._page_id(page), depth, last, timeout)

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        """Detach: give back the mailbox, stop using the mappings. Twice is harmless."""
        self._finalizer()

    @staticmethod
    def _release(d: dict) -> None:
        if d["_closed"]:
            return
        d["_closed"] = True
        sub, d["_submitter"] = d["_submitter"], None
        if sub is not None:
            sub.close()
        d["_header"].close()

    def __enter__(self) -> Attached:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"owner={self._pid} lsn={int(self._hv[H_LSN])}"
        return f"<mmsb.Attached {self.name!r} {state}>"


class Subscription:
    """A thread calling back on changes of some pages (:meth:`Attached.subscribe`)."""

    def __init__(self, att: Attached, ids: np.ndarray, callback: Any) -> None:
        self.error: BaseException | None = None  # what ended the thread, if not close()
        self._stop = threading.Event()
        self._att, self._ids, self._callback = att, ids, callback
        self._lsn, self._seen = att._baseline(ids)  # here, so a change right after subscribe() counts
        self._thread = threading.Thread(target=self._run, name=f"mmsb-subscribe-{att.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        att = self._att
        lsn, seen = self._lsn, self._seen
        try:
            while not self._stop.is_set():
                now = att.wait(lsn + 1, 0.1)
                if now is None:
                    continue
                eps = att.epochs(self._ids)
                moved = eps != seen
                lsn = now
                if moved.any():
                    seen = eps
                    self._callback(now, self._ids[moved])
        except BaseException as exc:  # the owner closed or died, or the callback raised
            self.error = exc

    def close(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
