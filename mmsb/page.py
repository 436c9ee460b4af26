"""Page handles: what ``create_page`` returns and every state call accepts.

A handle names one page of one state (its id, its table slot, its size); the
live fields (``epoch``, ``location``) are read from the state on each access.
It lives apart from :mod:`mmsb.state` because the write path
(:mod:`mmsb.commit`, a layer below the State class) tests ``type(page) is
Page`` on its fast branch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._layout import LOCATION_NAMES, META_LOC_SHIFT, T_EPOCH, T_META

if TYPE_CHECKING:
    from .state import State

__all__ = ["Page"]


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
