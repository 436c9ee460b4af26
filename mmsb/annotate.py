"""Typed reads, slice and bulk writes, resizes, names, metadata and per-page watches of a
:class:`mmsb.State`.

A mixin of State, over :mod:`mmsb.typed` (the checks and conversions). A page's
dtype, shape, name and metadata live in the state's :class:`~mmsb.typed.Annotations`
(made with the first page that carries any), and each change to them is a commit
of one info record, so replay, restore and checkpoints keep them.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ._interrupts import atomic
from ._layout import ID_SLOT_BITS, ID_SLOT_MASK, META_GEN_MASK, REC_RESIZE, T_META, T_OFFSET, T_SIZE
from .arena import GPU_BIT, LIVE_BIT
from .delta import DeltaBatch
from .errors import InvalidArgumentError, InvalidDeltaError, InvalidPageError, PageNotFoundError
from .page import Page
from .typed import (Annotations, PageInfo, check_dtype, check_meta, check_name, check_shape, info_text, page_bytes,
                    typed_view)
from .validate import _check_size
from .validate import _closed

__all__ = ["Annotate"]


class Annotate:
    """Typed pages, names, metadata and watches (a mixin of :class:`mmsb.State`)."""

    __slots__ = ()

    # -- lookups ------------------------------------------------------------------

    def _info(self, slot: int) -> PageInfo | None:
        ann = self._ann
        return None if ann is None else ann.info.get(slot)

    def _info_of(self, page: Any) -> PageInfo | None:
        """A live page's info (PageNotFoundError for one deleted)."""
        c = self._core()
        return self._info(self._slot(c, page))

    def _annotations(self) -> Annotations:
        if self._ann is None:
            self._ann = Annotations()
        return self._ann

    def _named(self, name: str) -> int:
        ann = self._ann
        slot = None if ann is None else ann.names.get(name)
        if slot is None:
            raise PageNotFoundError(f"no live page named {name!r}")
        return slot

    def __getitem__(self, name: Any) -> Page:
        """The page named ``name`` (or with that id): ``st["AAPL"]``."""
        return self.page(name)

    def __contains__(self, name: Any) -> bool:
        try:
            self.page(name)
        except PageNotFoundError:
            return False
        return True

    # -- typed reads ----------------------------------------------------------------

    def array(self, page: Any) -> np.ndarray:
        """A copy of the page's values in its dtype and shape (a byte page: its uint8 bytes)."""
        c = self._core()
        with c.lock:
            if self._c is not c:
                raise _closed()
            slot = self._slot(c, page)
            return typed_view(self._info(slot), self.query_page(page))

    # -- bulk ---------------------------------------------------------------------------

    def update_pages(self, pages: Any, rows: Any) -> np.ndarray:
        """Write ``rows[i]`` as the whole new value of ``pages[i]``, as one batch; each page's LSN.

        ``pages``: page ids (an int array is checked without a Python loop), or handles or names;
        distinct pages of one size (and, for typed pages, one dtype and shape). ``rows``: an array
        of shape ``(len(pages), *page.shape)`` converted as :meth:`update_page` converts, or of
        shape ``(len(pages), size)`` in uint8. Each page's delta holds the bytes that changed
        (sparse), LSN 0 for a page that did not change; one :meth:`apply_batch`, so one commit
        and one cascade.
        """
        c = self._core()
        with c.lock:
            if self._c is not c:
                raise _closed()
            slots, ids = self._bulk_slots(c, pages)
            table = c.table
            size = int(table.array[T_SIZE, slots[0]])
            if np.any(table.array[T_SIZE, slots] != size):
                raise InvalidArgumentError("update_pages writes pages of one size")
            info = self._info(int(slots[0]))
            if self._ann is not None and self._ann.info:
                kinds = self._ann.kinds_of(slots)
                if np.any(kinds != kinds[0]):
                    raise InvalidArgumentError("update_pages writes pages of one dtype and shape")
            new = _rows_bytes(info, rows, slots.size, size)
            if np.any(table.array[T_META, slots] & np.uint64(GPU_BIT)):
                cur = np.stack([self.query_page(int(p)) for p in ids.tolist()])  # device pages: copies
            else:  # one kernel gathers the pages side by side
                from .kernels.logfile import copy_pages

                cur = np.empty((slots.size, size), np.uint8)
                copy_pages(c.arena.data, table.array[T_OFFSET, slots], table.array[T_SIZE, slots], cur.reshape(-1),
                           False)
            changed = cur != new
            at = np.flatnonzero(changed)
            starts = np.zeros(slots.size + 1, np.int64)
            np.cumsum(changed.sum(axis=1), out=starts[1:])
            return self.apply_batch(DeltaBatch(ids, starts, at % size, new.reshape(-1)[at]))

    def _bulk_slots(self, c: Any, pages: Any) -> tuple[np.ndarray, np.ndarray]:
        """(slots, ids) of distinct live pages."""
        arr = np.asarray(pages) if not isinstance(pages, np.ndarray) else pages
        if arr.dtype.kind in "iu" and arr.ndim == 1:
            ids = arr.astype(np.int64)
            slots = ids & ID_SLOT_MASK
            table = c.table
            bad = (ids < 0) | (slots >= table.used)
            if not bad.any():
                meta = table.array[T_META, slots]
                bad = ((meta & np.uint64(LIVE_BIT)) == 0) | (
                    (meta & np.uint64(META_GEN_MASK)).astype(np.int64) != ids >> ID_SLOT_BITS)
            if bad.any():
                raise self._missing(c, int(ids[np.argmax(bad)]))
        else:
            slots = np.array([self._slot(c, p) for p in pages], np.int64)
            ids = np.array([self._id_of(s) for s in slots.tolist()], np.int64)
        if not slots.size:
            raise InvalidArgumentError("update_pages needs at least one page")
        if np.unique(slots).size != slots.size:
            raise InvalidArgumentError("update_pages writes each page once: a page is named twice")
        return slots, ids


    # -- resizing ------------------------------------------------------------------------

    @atomic
    def resize_page(self, page: Any, size: Any = None, *, shape: Any = None) -> None:
        """Give the page a new size (bytes) or, for a typed page, a new ``shape`` (same dtype).

        The page keeps its first bytes (as many as both sizes hold), new bytes are zero, and
        its epoch moves by one; a logged commit that takes no LSN. The page keeps its id; views
        taken before show what its old place holds next. A typed page resized by ``size``
        keeps its trailing dimensions (its rows grow or shrink). Refused
        (:class:`mmsb.InvalidArgumentError`) for a page with dependency edges (unbind or
        remove them first), a device page, or inside a transaction; :class:`mmsb.CapacityError`
        when the arena cannot hold the new size. Nothing changes when it is refused.
        """
        c = self._core()
        with c.lock:
            if self._c is not c:
                raise _closed()
            self._check_writable("resize_page")
            slot = self._slot(c, page)
            pid = self._id_of(slot)
            info = self._info(slot)
            new_size, dims = _new_size(info, c.table.mv_size[slot], size, shape)
            if c.table.mv_meta[slot] & GPU_BIT:
                raise InvalidArgumentError(f"page {pid} lives on the device, where pages keep their size")
            g = c.prop.graph
            if slot < g.num_nodes and (g.children(slot).size or g.parents(slot).size):
                raise InvalidArgumentError(f"page {pid} has dependency edges: unbind it and remove its edges "
                                           "(remove_dependency) before resizing it")
            old_size = c.table.mv_size[slot]
            typed = info is not None and info.dtype is not None
            if new_size == old_size and (not typed or dims == info.shape):
                return
            new_info = info.replace(shape=dims) if typed else None
            text = None if new_info is None else info_text(new_info)  # may refuse: before any change
            self._resize_slot(c, slot, new_size)
            self._log._append(REC_RESIZE, c.lsn, pid, new_size, old_size, 0)
            if new_info is not None:
                self._annotations().set(slot, new_info)
                self._log.append_info(pid, 1, text, c.lsn)
            self._log.seal(c.lsn)

    def _resize_slot(self, c: Any, slot: int, size: int) -> None:
        """Move host page ``slot`` to a place of ``size`` bytes, keeping its first bytes; epoch + 1."""
        table, arena = c.table, c.arena
        old_off, old = table.mv_offset[slot], table.mv_size[slot]
        new_off = arena.allocate(size)  # may refuse (CapacityError): nothing changed yet
        if table.mv_epoch[slot]:  # written: move what it keeps, and leave zeros behind (free space holds zeros)
            keep = min(old, size)
            arena.data[new_off:new_off + keep] = arena.data[old_off:old_off + keep]
            arena.data[old_off:old_off + old] = 0
        arena.release(old_off, old)
        table.mv_offset[slot], table.mv_size[slot] = new_off, size
        table.mv_epoch[slot] += 1

    # -- names and metadata -----------------------------------------------------------

    @atomic
    def rename(self, page: Any, name: str | None) -> None:
        """Give the page ``name`` (unique among live pages), or take its name away with None.

        Logged and checkpointed; ``st[name]`` and every call that takes a page take the name.
        """
        if name is not None:
            name = check_name(name)
        self._set_info(page, "rename", lambda info: info.replace(name=name))

    @atomic
    def set_meta(self, page: Any, key: str, value: Any) -> None:
        """Set one metadata entry of the page (JSON values), as a logged commit; ``page.meta`` reads them."""
        if not isinstance(key, str):
            raise InvalidArgumentError(f"a metadata key is a string, got {key!r}")
        value = check_meta({key: value})[key]
        self._set_info(page, "set_meta", lambda info: info.replace(meta={**info.meta, key: value}))

    @atomic
    def del_meta(self, page: Any, key: str) -> None:
        """Remove one metadata entry of the page, as a logged commit (InvalidArgumentError if it has none)."""
        def drop(info: PageInfo) -> PageInfo:
            if key not in info.meta:
                raise InvalidArgumentError(f"page has no metadata entry {key!r}")
            return info.replace(meta={k: v for k, v in info.meta.items() if k != key})

        self._set_info(page, "del_meta", drop)

    def _set_info(self, page: Any, what: str, change: Callable[[PageInfo], PageInfo]) -> None:
        c = self._core()
        with c.lock:
            if self._c is not c:
                raise _closed()
            self._check_writable(what)
            slot = self._slot(c, page)
            old = self._info(slot) or PageInfo()
            new = change(old)
            if new.name is not None and new.name != old.name and new.name in self._annotations().names:
                raise InvalidArgumentError(f"another page is named {new.name!r}")
            text = info_text(new)  # may refuse (too large): before anything changes
            self._annotations().set(slot, new)
            self._log.append_info(self._id_of(slot), 1, text, c.lsn)
            self._log.seal(c.lsn)

    # -- watches ----------------------------------------------------------------------

    def watch(self, page: Any, fn: Callable[[Page], Any]) -> None:
        """Call ``fn(page)`` after each commit that changed the page's bytes (written or recomputed).

        Delivered like the ``page_changed`` event it rides on (after the whole commit, a
        raising handler logged and ignored); a watch ends with :meth:`unwatch`, the page's
        deletion or the state's close. Any watch or subscription puts writes on the general
        path, a few microseconds more per write.
        """
        if not callable(fn):
            raise InvalidArgumentError(f"a watch calls a callable, got {fn!r}")
        c = self._core()
        with c.lock:
            handle = self.page(page)
            ann = self._annotations()
            ev = self._events
            if ev is None or self._deliver not in ev.handlers.get("page_changed", ()):  # once, whatever ended
                self.subscribe("page_changed", self._deliver)                         # the watches before
            ann.watches.setdefault(handle._slot, []).append(fn)

    def unwatch(self, page: Any, fn: Callable[[Page], Any]) -> bool:
        """Stop a watch; whether ``fn`` was watching the page."""
        c = self._core()
        with c.lock:
            slot = self._slot(c, page)
            ann = self._ann
            fns = None if ann is None else ann.watches.get(slot)
            if not fns or fn not in fns:
                return False
            fns.remove(fn)
            if not fns:
                del ann.watches[slot]
            if not ann.watches:
                self.unsubscribe("page_changed", self._deliver)
            return True

    def _deliver(self, ids: np.ndarray) -> None:
        ann = self._ann
        if ann is None or not ann.watches:
            return
        for pid in dict.fromkeys(ids.tolist()):  # a page written and recomputed in one commit: once
            try:
                handle = self.page(pid)
            except PageNotFoundError:
                continue
            for fn in list(ann.watches.get(handle._slot, ())):
                try:
                    fn(handle)
                except Exception:
                    import logging

                    logging.getLogger("mmsb").exception("mmsb: a watch of page %d raised; the commit stands", pid)


def _rows_bytes(info: PageInfo | None, rows: Any, n: int, size: int) -> np.ndarray:
    """``rows`` as an ``(n, size)`` uint8 array: each row a page's new bytes."""
    if type(rows) is np.ndarray and rows.dtype == np.uint8 and rows.shape == (n, size):
        return rows
    if info is None or info.dtype is None:
        raise InvalidDeltaError(f"rows for {n} byte pages of {size} B are a ({n}, {size}) uint8 array, got "
                                f"{getattr(rows, 'shape', type(rows).__name__)}")
    many = PageInfo(info.dtype, (n, *info.shape))
    try:
        return page_bytes(many, rows, n * size).reshape(n, size)
    except InvalidDeltaError as exc:
        raise InvalidDeltaError(f"rows for {n} pages of shape {info.shape} in {info.dtype} are an array of shape "
                                f"{many.shape}: {exc}") from None


def _new_size(info: PageInfo | None, old: int, size: Any, shape: Any) -> tuple[int, tuple[int, ...] | None]:
    """(new size, new shape or None) for ``resize_page``'s arguments, checked."""
    typed = info is not None and info.dtype is not None
    if shape is not None:
        dtype = info.dtype if typed else check_dtype(np.uint8)
        dims = check_shape(shape, dtype, None if size is None else _check_size(size))
        return dtype.itemsize * int(np.prod(dims)), dims
    new = _check_size(size)
    if not typed:
        return new, None
    row = old // info.shape[0]
    if new % row:
        raise InvalidPageError(f"{new} bytes is not a whole number of the page's rows ({row} bytes: "
                               f"{info.shape[1:] or 'one'} {info.dtype})")
    return new, (new // row, *info.shape[1:])
