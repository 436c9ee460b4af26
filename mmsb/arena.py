"""Host arenas and the page table.

Every host arena is made by :func:`reserve_arena`, the one place arena memory
comes from (so a later layer can back it with shared memory or a file).

Growth and view validity
------------------------
A state's arena is a list of chunks of reserved address space made with
``MAP_NORESERVE``: the operating system commits memory only for bytes a page
touches. The first chunk is ``mmsb.config.ARENA_CHUNK_BYTES`` (64 MiB), each
next one twice the last, up to ``mmsb.config.ARENA_RESERVE_BYTES`` in all
(256 GiB): a state reserves address space in proportion to what it holds, so
many thousands of states live side by side. Pages are carved from the chunks by
size class and never move, so a view of a page stays valid for as long as the
page lives: creating more pages never copies or invalidates anything. A view of
a deleted page, or of any page after ``mmsb.stop``, is dangling: it shows
whatever later occupies that slot (or, in a chunk a reset let go, what the page
held last).

The page table (:class:`PageTable`) is a struct of arrays in one ``uint64``
array; it doubles when full. It is internal: kernels get the current array at
every call, so its growth is invisible outside.

Size classes
------------
A page of ``size`` bytes takes a slot of the next power of two at least 8,
aligned to ``min(slot, 4096)``. Freed slots go to a per-class LIFO free list and
are reused first; otherwise slots come from a bump pointer. Both are
deterministic, so the same operations give the same offsets.
"""

from __future__ import annotations

import mmap
import sys
from typing import Any

import numpy as np

from . import config
from ._layout import (
    FLAG_GUARDED,
    FLAG_LIVE,
    ID_SLOT_BITS,
    LOC_GPU,
    GEN_REUSE_MASK,
    META_FLAG_SHIFT,
    META_GEN_MASK,
    META_LOC_SHIFT,
    MIN_SLOT,
    R_TABLE,
    R_TABLE_CAP,
    T_EPOCH,
    T_META,
    T_OFFSET,
    T_SIZE,
    TABLE_ROWS,
)
from ._registers import Published, address
from .errors import CapacityError

_OS_PAGE = mmap.PAGESIZE
# Python < 3.13 lacks the constant; the value is Linux's. Elsewhere anonymous
# mappings are committed lazily anyway.
_MAP_NORESERVE = 0x4000 if sys.platform.startswith("linux") else 0


def reserve_arena(nbytes: int) -> tuple[np.ndarray, mmap.mmap | None]:
    """A zero-filled ``uint8`` array of up to ``nbytes`` whose memory is committed on touch.

    Returns the array and the mapping behind it. Where the system refuses so
    large a reservation (strict overcommit, a ``ulimit -v``), asks for a
    quarter as much, down to 64 MiB; ``len(array)`` says what was granted.
    """
    flags = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_NORESERVE", _MAP_NORESERVE)
    size = nbytes
    while True:
        try:
            if flags:
                mm = mmap.mmap(-1, size, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)
            else:  # pragma: no cover - Windows
                mm = mmap.mmap(-1, size)
            return np.frombuffer(mm, dtype=np.uint8), mm
        except (OSError, ValueError, OverflowError) as exc:
            if size <= 1 << 26:
                raise CapacityError(f"cannot reserve a {size} B arena: {exc}") from exc
            size = max(1 << 26, size // 4)


def slot_class(size: int) -> int:
    """log2 of the arena slot that holds a page of ``size`` bytes."""
    return max(size - 1, MIN_SLOT - 1).bit_length()


class Slots:
    """Slot allocation by size class: per-class LIFO free lists, then a bump pointer.

    Shared by the host arena and the device arena (:mod:`mmsb.gpu.arena`), so
    both lay pages out the same way.
    """

    __slots__ = ("bump", "free", "reserved")

    def __init__(self, reserved: int) -> None:
        self.reserved = reserved
        self.bump = 0
        self.free: dict[int, list[int]] = {}

    def allocate(self, size: int) -> int:
        """Byte offset of a free slot for a page of ``size`` bytes (zero-filled)."""
        cls = (size - 1).bit_length() if size > MIN_SLOT else 3
        free = self.free.get(cls)
        if free:
            off = free.pop()
            if not free:  # an empty free list goes: no free list at all lets create_page take its fast path
                del self.free[cls]
            return off
        step = 1 << cls
        align = (step if step < 4096 else 4096) - 1
        off = (self.bump + align) & ~align
        if off + step > self.reserved:
            self._more(step, f"a {size} B page needs {step} B at offset {off}")
            off = (self.bump + align) & ~align
        self.bump = off + step
        return off

    def _more(self, nbytes: int, what: str) -> None:
        """Room for ``nbytes`` more from the bump pointer, or :class:`mmsb.CapacityError`
        (``what`` says what asked). A fixed reservation has no more."""
        raise CapacityError(f"arena full: {what} of {self.reserved} B reserved; raise "
                            "mmsb.config.ARENA_RESERVE_BYTES")

    def allocate_many(self, count: int, size: int) -> np.ndarray:
        """Offsets for ``count`` pages, the same as ``count`` calls of :meth:`allocate`."""
        cls = slot_class(size)
        step = 1 << cls
        free = self.free.get(cls, [])
        k = min(count, len(free))
        reused = free[len(free) - k:][::-1]
        rest = count - k
        align = min(step, 4096) - 1
        start = (self.bump + align) & ~align
        end = start + rest * step
        if rest and end > self.reserved:
            self._more(rest * step, f"{rest} pages of {size} B need {rest * step} B from offset {start}")
            start = (self.bump + align) & ~align
            end = start + rest * step
        offs = np.empty(count, dtype=np.uint64)
        offs[:k] = reused
        offs[k:] = np.arange(start, end, step, dtype=np.uint64)
        del free[len(free) - k:]
        if not free:
            self.free.pop(cls, None)
        if rest:
            self.bump = end
        return offs

    def end_after(self, count: int, size: int) -> int:
        """Where the bump pointer would stand after :meth:`allocate_many` of ``count`` pages
        (checks nothing, changes nothing: lets a caller make room first)."""
        cls = slot_class(size)
        rest = count - min(count, len(self.free.get(cls, ())))
        if not rest:
            return self.bump
        step = 1 << cls
        align = min(step, 4096) - 1
        return ((self.bump + align) & ~align) + rest * step

    def release(self, offset: int, size: int) -> None:
        self.free.setdefault(slot_class(size), []).append(offset)

    def clear(self) -> None:
        """Forget every allocation; the caller has zeroed what pages wrote."""
        self.bump = 0
        self.free.clear()


_ORIGIN = 4096  # the lowest address a chunk can have: nothing is ever mapped below it
_SPACE: np.ndarray | None = None


class _Space:
    __array_interface__ = {"data": (_ORIGIN, False), "shape": (1 << 62,), "typestr": "|u1", "version": 3}


def address_space() -> np.ndarray:
    """One ``uint8`` array over the whole address space: element ``off`` is the byte at address
    ``_ORIGIN + off``. Kernels reach every chunk of every host arena through it, so a page's
    offset is its address less ``_ORIGIN``. Only bytes of live chunks may be touched; a view
    that must outlive a call comes from :meth:`Arena.view`, which holds its chunk."""
    global _SPACE
    if _SPACE is None:
        _SPACE = np.asarray(_Space())
    return _SPACE


class Arena(Slots):
    """A state's host pages: chunks of reserved address space, the first of
    ``config.ARENA_CHUNK_BYTES``, each next one twice the last, until ``limit``
    bytes (``config.ARENA_RESERVE_BYTES``) are reserved in all.

    Offsets are addresses (less ``_ORIGIN``), so pages in any chunk are reached
    through one array (``data``, see :func:`address_space`) and never move: a
    state reserves address space in proportion to what it holds.
    """

    __slots__ = ("data", "limit", "chunks", "first", "first_end", "backing")

    def __init__(self, nbytes: int | None = None, backing: Any = None) -> None:
        super().__init__(0)
        # what makes a chunk: reserve_arena, or a shared state's segments (mmsb.bus.owner)
        self.backing = backing or reserve_arena
        self.data = address_space()
        self.limit = int(nbytes if nbytes is not None else config.ARENA_RESERVE_BYTES)
        # [first offset, end offset, array, mapping] of each chunk, in the order they came
        self.chunks: list[list[Any]] = []
        self._more(0, "the first chunk")
        self.first, self.first_end = self.bump, self.reserved

    def _more(self, nbytes: int, what: str) -> None:
        held = sum(ch[1] - ch[0] for ch in self.chunks)
        size = max(min(config.ARENA_CHUNK_BYTES, self.limit), 2 * (self.chunks[-1][1] - self.chunks[-1][0])
                   if self.chunks else 0)
        while size < nbytes + 4096:
            size *= 2
        size = min(size, self.limit - held)
        if size < nbytes or size <= 0:
            raise CapacityError(f"arena full: {what}, and {held} B of mmsb.config.ARENA_RESERVE_BYTES "
                                f"({self.limit} B) are reserved already; raise it")
        arr, mm = self.backing(size)
        if arr.size < nbytes:
            raise CapacityError(f"arena full: {what}, and the system grants {arr.size} B more address space")
        start = address(arr) - _ORIGIN
        self.chunks.append([start, start + arr.size, arr, mm])
        self.bump, self.reserved = start, start + arr.size

    @property
    def used_bytes(self) -> int:
        """Bytes of the chunks up to where pages were carved (a chunk's tail skipped by a larger page counts)."""
        last = self.chunks[-1]
        return sum(ch[1] - ch[0] for ch in self.chunks[:-1]) + self.bump - last[0]

    @property
    def reserved_bytes(self) -> int:
        """Address space the chunks hold."""
        return sum(ch[1] - ch[0] for ch in self.chunks)

    def room(self) -> int:
        """Bytes that pages may still take, counting chunks not reserved yet."""
        return self.limit - self.reserved_bytes + self.reserved - self.bump

    def clear(self) -> None:
        self.free.clear()
        self.restart()

    def view(self, off: int, size: int) -> np.ndarray:
        """The bytes ``[off, off + size)`` as a view that keeps its chunk mapped."""
        for start, end, arr, _ in self.chunks:
            if start <= off < end:
                return arr[off - start:off - start + size]
        raise CapacityError(f"offset {off} is in no chunk of this arena")  # pragma: no cover - a bug

    def restart(self) -> None:
        """Pages all gone (a reset): carve from the first chunk again; later ones are let go
        (a view of a page in one keeps it mapped until the view goes)."""
        if len(self.chunks) > 1:
            del self.chunks[1:]
            self.reserved = self.chunks[0][1]
        self.bump = self.first

    def release_span(self) -> bool:
        """Zero the used span by handing its memory back to the OS; False if not possible.

        ``MADV_DONTNEED`` on a private anonymous mapping both zeroes the span and
        frees its memory, so a pooled state holds no memory for pages it had (the reset
        zeroes spans the pool keeps in memory instead: ``config.POOL_KEEP_ARENA_BYTES``).
        """
        start, end, _, mm = self.chunks[0]
        if not hasattr(mm, "madvise"):
            return False
        used = (self.bump if len(self.chunks) == 1 else end) - start
        length = (used + _OS_PAGE - 1) // _OS_PAGE * _OS_PAGE
        if length:
            mm.madvise(mmap.MADV_DONTNEED, 0, length)
        return True  # later chunks are unmapped by restart()


def _zeroed_table(rows: int) -> np.ndarray:
    return np.zeros((TABLE_ROWS, rows), dtype=np.uint64)


class PageTable:
    """The page table: rows offset, size, epoch, meta of one ``uint64`` array.

    ``meta`` packs the slot's generation (bits 0-31), location (32-39) and
    flags (40-47). ``used`` is the high-water mark of slots ever handed out;
    ``free`` the LIFO stack of slots of deleted pages; ``fresh_gen`` the generation
    a never-used slot starts at (the state's tag, no reuses).
    """

    __slots__ = ("array_", "_regs", "capacity", "used", "free", "fresh_gen", "mv_offset", "mv_size", "mv_epoch",
                 "mv_meta", "alloc")
    array = Published(R_TABLE, R_TABLE_CAP, axis=1)

    def __init__(self, rows: int | None = None, regs: np.ndarray | None = None, alloc: Any = None) -> None:
        self._regs = regs
        # what makes a zeroed table of a given number of rows: NumPy, or a shared state's segments
        self.alloc = alloc or _zeroed_table
        self.array = self.alloc(max(1, rows or config.TABLE_INITIAL_ROWS))
        self.used = 0
        self.free: list[int] = []
        self.fresh_gen = 0
        self._views()

    def _views(self) -> None:
        # memoryviews read and write single entries ~2x faster than NumPy indexing
        a = self.array
        self.capacity = a.shape[1]
        self.mv_offset = memoryview(a[T_OFFSET])
        self.mv_size = memoryview(a[T_SIZE])
        self.mv_epoch = memoryview(a[T_EPOCH])
        self.mv_meta = memoryview(a[T_META])

    def _grow(self, need: int) -> None:
        cap = self.array.shape[1]
        while cap < need:
            cap *= 2
        if cap >= 1 << ID_SLOT_BITS:
            raise CapacityError(f"page table full: {need} slots asked, at most {1 << ID_SLOT_BITS}")
        bigger = self.alloc(cap)
        bigger[:, : self.used] = self.array[:, : self.used]
        self.array = bigger
        self._views()

    def reserve(self, fresh: int) -> None:
        """Make room for ``fresh`` more never-used slots (growth is invisible outside)."""
        if self.used + fresh > self.array.shape[1]:
            self._grow(self.used + fresh)

    def take_many(self, count: int) -> np.ndarray:
        k = min(count, len(self.free))
        slots = np.empty(count, dtype=np.int64)
        slots[:k] = self.free[len(self.free) - k:][::-1]
        rest = count - k
        self.reserve(rest)
        slots[k:] = np.arange(self.used, self.used + rest, dtype=np.int64)
        self.array[T_META, self.used:self.used + rest] = self.fresh_gen
        del self.free[len(self.free) - k:]
        self.used += rest
        return slots

    def retire(self, slot: int) -> None:
        """Mark ``slot`` free and bump its generation so old ids stop resolving."""
        gen = self.mv_meta[slot] & META_GEN_MASK
        self.mv_offset[slot] = 0
        self.mv_size[slot] = 0
        self.mv_epoch[slot] = 0
        if gen & GEN_REUSE_MASK != GEN_REUSE_MASK:
            self.mv_meta[slot] = gen + 1
            self.free.append(slot)
        else:  # a slot reused 2**19 times is retired for good rather than wrap its ids (or its tag)
            self.mv_meta[slot] = gen

    def clear(self) -> None:
        self.used = 0
        self.free.clear()

    def on_device(self, slot: int) -> bool:
        """Whether the page in ``slot`` lives on the device (off the hot paths, which test the bit)."""
        return (self.mv_meta[slot] >> META_LOC_SHIFT) & 0xFF == LOC_GPU


# meta bits the Python side tests (the kernels read the fields through mmsb._layout)
LIVE_BIT = FLAG_LIVE << META_FLAG_SHIFT
GPU_BIT = LOC_GPU << META_LOC_SHIFT  # the location field holds 0 (cpu) or 1 (gpu)
KEY_MASK = LIVE_BIT | META_GEN_MASK  # meta bits that must match a live page's id
GUARD_BIT = FLAG_GUARDED << META_FLAG_SHIFT  # a derived page that refuses direct writes


def make_meta(generation: int, location: int) -> int:
    return generation | (location << META_LOC_SHIFT) | (FLAG_LIVE << META_FLAG_SHIFT)
