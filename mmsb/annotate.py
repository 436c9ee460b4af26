"""Typed reads, slice writes, names, metadata and per-page watches of a :class:`mmsb.State`.

A mixin of State, over :mod:`mmsb.typed` (the checks and conversions). A page's
dtype, shape, name and metadata live in the state's :class:`~mmsb.typed.Annotations`
(made with the first page that carries any), and each change to them is a commit
of one info record, so replay, restore and checkpoints keep them.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ._interrupts import atomic
from .errors import InvalidArgumentError, PageNotFoundError
from .page import Page
from .typed import Annotations, PageInfo, check_meta, check_name, info_text, typed_view
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
            if not ann.watches:
                self.subscribe("page_changed", self._deliver)
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
