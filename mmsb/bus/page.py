"""A page of a shared state as an attached process sees it (``Attached.page``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..typed import PageInfo


class AttachedPage:
    """What the owner said of one page when asked (``id``, ``size``, ``dtype``, ``shape``,
    ``name``, ``meta``: fixed from then on, as a :class:`mmsb.History` is), and reads of its
    bytes now, through the :class:`mmsb.Attached` handle that asked.

    ``read()`` is a consistent copy in the page's dtype and shape (``query_page``);
    ``view()`` a live, read-only, not consistent view of it (``view``); ``epoch`` the page's
    epoch now; ``history(...)`` its provenance from the owner's log.
    """

    __slots__ = ("_att", "id", "size", "dtype", "shape", "name", "meta")

    def __init__(self, att: Any, doc: dict[str, Any]) -> None:
        size = int(doc["size"])
        info = PageInfo.from_doc(doc["info"], size)
        self._att = att
        self.id, self.size = int(doc["id"]), size
        self.dtype = np.dtype(np.uint8) if info.dtype is None else info.dtype
        self.shape = (size,) if info.shape is None else info.shape
        self.name, self.meta = info.name, info.meta

    def read(self) -> np.ndarray:
        """The page's values as they were at one LSN: a copy in its dtype and shape."""
        return self._att.query_page(self.id).view(self.dtype).reshape(self.shape)

    def view(self) -> np.ndarray:
        """The page's values in shared memory, read-only and live (a read may see a call half done)."""
        return self._att.view(self.id).view(self.dtype).reshape(self.shape)

    @property
    def epoch(self) -> int:
        """Deltas applied to the page so far."""
        return int(self._att.epochs([self.id])[0])

    def history(self, depth: int = 32, last: int | None = None) -> Any:
        """The page's :class:`mmsb.History`, from the owner's log (``Attached.history``)."""
        return self._att.history(self.id, depth, last)

    def __repr__(self) -> str:
        name = "" if self.name is None else f" {self.name!r}"
        return (f"<mmsb.AttachedPage{name} id={self.id} {self.dtype}{list(self.shape)} "
                f"of shared state {self._att.name!r}>")
