"""The history tags of live states (``mmsb._layout.GEN_TAG_SHIFT``, docs/FORMAT.md "Page ids").

A state takes the lowest tag no live state holds, and gives it back when it closes. Tags are
held either alone (the common case) or shared by the states of one history (a replay, a restore,
a twin made with ``tag=``); ``shares[t]`` counts the holders of ``t`` beyond the first.

Taking and giving back a tag held alone are one ``heappop`` and one ``heappush`` on ``free``:
single C calls, atomic under the GIL, so the allocation cycle pays ~40 ns and no lock. Everything
else (a tag never handed out yet, sharing) goes through ``_lock``. A tag given back while another
thread starts sharing it is pushed before ``shares`` is read, and ``_unfree`` takes it out again
and counts one holder fewer, so a shared tag does not stay free.
"""

from __future__ import annotations

import threading
from heapq import heapify, heappop, heappush

from ._layout import MAX_TAG

free: list[int] = []  # a heap: tags handed out once and held by no live state
shares: dict[int, int] = {}
_next = [0]  # the lowest tag never handed out
_lock = threading.Lock()

__all__ = ["free", "shares", "take", "give_back", "share", "settle", "heappop", "heappush"]


def take() -> int:
    """A tag no live state holds, held alone: what a state takes at start when ``free`` is empty."""
    try:
        return heappop(free)
    except IndexError:
        pass
    with _lock:
        if free:
            return heappop(free)
        if _next[0] <= MAX_TAG:
            _next[0] += 1
            return _next[0] - 1
        # every tag is held: share the one shared least (those states stop telling their ids apart)
        tag = min(range(MAX_TAG + 1), key=lambda t: shares.get(t, 0))
        shares[tag] = shares.get(tag, 0) + 1
        return tag


def give_back(tag: int) -> None:
    """Let go of ``tag`` (freed when no other state holds it). ``State.close`` inlines the
    common case: no tag shared, one push."""
    if not shares:
        heappush(free, tag)
        if shares:
            settle()
        return
    with _lock:
        n = shares.get(tag, 0)
        if n > 1:
            shares[tag] = n - 1
        elif n == 1:
            del shares[tag]
        else:
            heappush(free, tag)
            _unfree()


def share(tag: int) -> None:
    """Hold ``tag`` as well as whoever holds it (or alone, if no one does)."""
    with _lock:
        if tag >= _next[0]:  # never handed out: the ones skipped become free
            for t in range(_next[0], tag):
                heappush(free, t)
            _next[0] = tag + 1
        elif tag in free:
            free.remove(tag)
            heapify(free)
        else:
            shares[tag] = shares.get(tag, 0) + 1


def settle() -> None:
    """After a push that saw no share: a share that began meanwhile is put right."""
    with _lock:
        _unfree()


def _unfree() -> None:
    """Take shared tags back out of ``free`` (under ``_lock``): one that is there was given back
    by a holder that ``shares`` still counts."""
    back = [t for t in free if t in shares]
    if back:
        for t in back:
            if shares[t] > 1:
                shares[t] -= 1
            else:
                del shares[t]
        free[:] = [t for t in free if t not in back]
        heapify(free)
