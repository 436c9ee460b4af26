"""Page handles: what ``create_page`` returns and every state call accepts.

A handle names one page of one state (its id, its table slot, its size); the
live fields (``epoch``, ``location``) are read from the state on each access.
It lives apart from :mod:`mmsb.state` because the write path
(:mod:`mmsb.commit`, a layer below the State class) tests ``type(page) is
Page`` on its fast branch.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import numpy as np

from ._layout import FLAG_LIVE, ID_SLOT_BITS, LOCATION_NAMES, META_FLAG_SHIFT, META_GEN_MASK, META_LOC_SHIFT, T_EPOCH, T_META

if TYPE_CHECKING:
    from .state import State

__all__ = ["Page"]

_U8 = np.dtype(np.uint8)
_LIVE = FLAG_LIVE << META_FLAG_SHIFT
_KEY = _LIVE | META_GEN_MASK


class Page:
    """A handle to one page: ``id``, ``size``, and the live ``epoch`` and ``location``.

    Handles are cheap and compare equal when they name the same page of the
    same state. Every state call takes a handle or a bare id.
    """

    __slots__ = ("_state", "id", "_slot", "_size")

    def __init__(self, state: State, page_id: int, slot: int, size: int) -> None:
        self._state = state
        self.id = page_id
        self._slot = slot
        self._size = size

    @property
    def size(self) -> int:
        """The page's size in bytes (``State.resize_page`` changes it; a deleted page keeps its last)."""
        st = self._state
        c = st._c
        if c is not None and self._slot < c.table.used and c.table.mv_meta[self._slot] & _KEY == (
                _LIVE | self.id >> ID_SLOT_BITS):
            self._size = c.table.mv_size[self._slot]
        return self._size

    @property
    def epoch(self) -> int:
        """Deltas applied to the page so far."""
        return self._state._table_value(self, T_EPOCH)

    @property
    def dtype(self) -> np.dtype:
        """The page's dtype: uint8 for a byte page."""
        info = self._state._info_of(self)
        return _U8 if info is None or info.dtype is None else info.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        """The page's shape: ``(size,)`` for a byte page."""
        info = self._state._info_of(self)
        return (self.size,) if info is None or info.shape is None else info.shape

    @property
    def name(self) -> str | None:
        info = self._state._info_of(self)
        return None if info is None else info.name

    @property
    def meta(self) -> dict[str, Any]:
        """A copy of the page's metadata (change it with ``State.set_meta``/``del_meta``)."""
        info = self._state._info_of(self)
        return {} if info is None else copy.deepcopy(info.meta)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """``np.asarray(page)``: a copy of its values (``State.array``)."""
        arr = self._state.array(self)
        return arr if dtype is None else arr.astype(dtype)

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
        info = self._state._ann and self._state._info(self._slot)
        if not info:
            return f"<mmsb.Page id={self.id} size={self.size}>"
        named = "" if info.name is None else f" name={info.name!r}"
        typed = "" if info.dtype is None else f" dtype={info.dtype} shape={info.shape}"
        return f"<mmsb.Page id={self.id}{named} size={self.size}{typed}>"

    def _repr_html_(self) -> str:
        """Jupyter's view: id, epoch, location, parents/children and a hex preview (mmsb.notebook)."""
        from .notebook import page_html

        return page_html(self)
