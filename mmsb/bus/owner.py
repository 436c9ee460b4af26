"""The owner's side of a shared state: its segments, its seqlock, its close.

``mmsb.start(shared=name)`` builds its state on a :class:`Bus`: the arena's
chunks and the page table are segments other processes map, and the state's
lock is a :class:`BusLock`, which marks every call in the header's sequence
word (odd while a call runs) and publishes the LSN when it ends. Readers copy
pages only across an even, unmoved sequence word (:mod:`mmsb.kernels.bus`), so
they never see a call half done. Nothing here runs on a state that is not shared.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from typing import Any

import numpy as np

from .. import config
from .._layout import (
    H_BYTES,
    H_CHUNKS,
    H_CLOSED,
    H_HOLD,
    H_HOLDS_BROKEN,
    H_MAGIC,
    H_MAGIC_W,
    H_MAX_CHUNKS,
    H_NCHUNKS,
    H_PID,
    H_READY,
    H_TABLE_CAP,
    H_TABLE_GEN,
    H_TAG,
    H_VERSION,
    H_VERSION_1,
    H_WAKE,
    R_DELTAS,
    R_LSN,
    TABLE_ROWS,
)
from .._registers import address
from ..arena import _ORIGIN, Arena
from ..errors import BusExistsError, CapacityError
from .segment import SYS_FUTEX, Segment, check_name, futex_wake, path, sweep


def _kernels() -> Any:
    from ..kernels import _jit, bus

    return _jit, bus


class Bus:
    """The segments of one shared state, named ``name``, and the header that describes them."""

    def __init__(self, name: Any) -> None:
        self.name = check_name(name)
        self.header = self._claim()
        self.h = self.header.array
        self.hv = memoryview(self.h)
        self.addr = address(self.h)
        self.chunks: list[Segment] = []
        self.table_seg: Segment | None = None
        self.rv: Any = None  # the state's registers, where the counters are (set by the state)
        self.server: Any = None  # the thread that applies submitted requests (mmsb.bus.mailbox)
        self.closed = False
        jit, k = _kernels()
        self._enter, self._leave = jit.entry(k.seq_enter), jit.entry(k.seq_leave)
        self._swap, self._add = jit.entry(k.word_swap), jit.entry(k.word_add)
        h = self.h
        h[H_MAGIC_W], h[H_VERSION], h[H_PID] = H_MAGIC, H_VERSION_1, os.getpid()
        # an interpreter that exits with the state open still marks it closed and removes its files
        self._finalizer = weakref.finalize(self, _abandon, self.name, self.h, self.header)

    def _claim(self) -> Segment:
        """The header, new, locked by this process; a live owner's name is refused, a dead one's cleared."""
        p = path(self.name)
        while True:
            try:
                seg = Segment.create(p, H_BYTES, np.int64)
            except FileExistsError:
                try:
                    old = Segment.open(p, False, np.int64)
                except FileNotFoundError:
                    continue  # its owner just removed it
                try:
                    if not old.lock(True):
                        raise BusExistsError(f"a shared state named {self.name!r} is open in process "
                                             f"{int(old.array[H_PID]) if old.array.size > H_PID else '?'}: "
                                             "close it, or choose another name")
                    try:
                        same = os.stat(p).st_ino == os.fstat(old.fd).st_ino
                    except FileNotFoundError:
                        same = False
                    if same:  # a crashed owner's: its files go, then the name is free
                        sweep(self.name)
                        old.remove()
                finally:
                    old.close()
                continue
            if seg.lock(True):
                return seg
            seg.close()  # pragma: no cover - another process cleared and took the name in between

    def ready(self, tag: int) -> None:
        """The state is built: attached processes may map it."""
        self.h[H_TAG] = tag
        self._store(H_READY, 1)

    def _store(self, word: int, value: int) -> None:
        _, k = _kernels()
        k.word_store(self.addr, word, value)

    # -- the segments behind the state's arena and page table ---------------------------

    def chunk(self, size: int) -> tuple[np.ndarray, Any]:
        """An arena chunk of ``size`` bytes (``mmsb.arena.Arena``'s backing)."""
        k = len(self.chunks)
        if k >= H_MAX_CHUNKS:
            raise CapacityError(f"a shared state holds at most {H_MAX_CHUNKS} arena chunks")
        seg = Segment.create(path(self.name, f".a{k}"), size)
        start = address(seg.array) - _ORIGIN
        self.chunks.append(seg)
        h = self.h
        h[H_CHUNKS + 2 * k], h[H_CHUNKS + 2 * k + 1] = start, start + size
        h[H_NCHUNKS] = k + 1  # readers trust it only once the call that grew the arena has ended
        return seg.array, seg.mm

    def table(self, rows: int) -> np.ndarray:
        """A zeroed page table of ``rows`` rows (``mmsb.arena.PageTable``'s alloc)."""
        gen = int(self.h[H_TABLE_GEN]) + 1
        seg = Segment.create(path(self.name, f".t{gen}"), TABLE_ROWS * rows * 8, np.uint64)
        old, self.table_seg = self.table_seg, seg
        self.h[H_TABLE_GEN], self.h[H_TABLE_CAP] = gen, rows
        if old is not None:  # readers that mapped it keep their mapping until they map the new one
            old.remove()
            old.close()
        return seg.array.reshape(TABLE_ROWS, rows)

    def commit_memory(self, start: int, end: int) -> None:
        """Give arena bytes ``[start, end)`` their memory now: a full tmpfs refuses here, with an
        error, rather than with SIGBUS at the kernel's first write."""
        for seg in self.chunks:
            base = address(seg.array) - _ORIGIN
            if base <= start < base + seg.array.size:
                try:
                    os.posix_fallocate(seg.fd, start - base, end - start)
                except OSError as exc:
                    raise CapacityError(f"the shared memory behind state {self.name!r} is full ({exc}): "
                                        f"{end - start} B more asked") from exc
                return

    # -- the seqlock, around every call of the state ----------------------------------------

    def enter(self) -> None:
        if self.hv[H_HOLD]:
            self._quiet()
        self._enter(self.addr)

    def leave(self) -> None:
        rv = self.rv
        self._leave(self.addr, rv[R_LSN], rv[R_DELTAS], SYS_FUTEX)  # it wakes the sleepers itself

    def _quiet(self) -> None:
        """A reader asks for a moment without calls, for a long consistent read: wait until it is
        done, at most ``config.BUS_HOLD_US``; past that (a reader gone or too slow) end it."""
        deadline = time.perf_counter() + config.BUS_HOLD_US * 1e-6
        spins = 0
        while True:
            holder = self.hv[H_HOLD]
            if not holder:
                return
            if time.perf_counter() > deadline:
                if self._swap(self.addr, H_HOLD, holder, 0) == holder:
                    self._add(self.addr, H_HOLDS_BROKEN, 1)
                return
            spins += 1
            time.sleep(0 if spins < 64 else 20e-6)

    # -- close ---------------------------------------------------------------------------

    def stop_serving(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.stop()

    def close(self) -> None:
        """Mark the state closed, wake every sleeper, remove every file. Called under the state's
        lock; the owner's own mappings stay (its arrays may still be referenced)."""
        if self.closed:
            return
        self.closed = True
        self._finalizer.detach()
        self._store(H_CLOSED, 1)
        self._add(self.addr, H_WAKE, 1)
        futex_wake(self.addr + 8 * H_WAKE)
        for seg in self.chunks + ([self.table_seg] if self.table_seg is not None else []):
            seg.remove()
            seg.close()
        sweep(self.name)  # mailboxes of attached submitters
        self.header.remove()
        self.header.close()  # drops the owner's lock last: the name is free once its files are gone


def _abandon(name: str, h: np.ndarray, header: Segment) -> None:
    h[H_CLOSED] = 1
    h[H_WAKE] += 1
    futex_wake(address(h) + 8 * H_WAKE)
    sweep(name)
    header.remove()
    header.close()


class SharedArena(Arena):
    """An arena whose chunks are the bus's segments, and whose new slots get their memory
    at once (:meth:`Bus.commit_memory`), so a full tmpfs is a :class:`mmsb.CapacityError`."""

    __slots__ = ("bus",)

    def __init__(self, nbytes: int, bus: Bus) -> None:
        self.bus = bus
        super().__init__(nbytes, backing=bus.chunk)

    def allocate(self, size: int) -> int:
        bump, nchunks = self.bump, len(self.chunks)
        off = Arena.allocate(self, size)
        if self.bump != bump:
            self._commit(off, self.bump, bump, nchunks)
        return off

    def allocate_many(self, count: int, size: int) -> np.ndarray:
        bump, nchunks = self.bump, len(self.chunks)
        offs = Arena.allocate_many(self, count, size)
        if self.bump != bump:  # the slots past the old bump pointer are new: reused ones have memory
            self._commit(int(offs[offs >= np.uint64(bump)].min()), self.bump, bump, nchunks)
        return offs

    def _commit(self, start: int, end: int, bump: int, nchunks: int) -> None:
        try:
            self.bus.commit_memory(start, end)
        except CapacityError:
            # as if nothing was allocated (a chunk added on the way stays, empty)
            self.bump = bump if len(self.chunks) == nchunks else self.chunks[-1][0]
            raise


class BusLock:
    """The state's reentrant lock, marking the outermost hold in the bus's sequence word."""

    __slots__ = ("_lock", "_depth", "_bus")

    def __init__(self, bus: Bus) -> None:
        self._lock = threading.RLock()
        self._depth = 0
        self._bus = bus

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if not self._lock.acquire(blocking, timeout):
            return False
        self._depth += 1
        if self._depth == 1:
            try:
                self._bus.enter()
            except BaseException:
                self._depth -= 1
                self._lock.release()
                raise
        return True

    def release(self) -> None:
        if self._depth == 1:
            try:
                self._bus.leave()
            finally:
                self._depth = 0
                self._lock.release()
            return
        self._depth -= 1
        self._lock.release()

    __enter__ = acquire

    def __exit__(self, *exc: object) -> None:
        self.release()
