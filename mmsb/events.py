"""Subscriptions of one state, delivered after each commit.

Events, each delivered once per commit that has something to say, after the
commit and its whole cascade are done (never in the middle of one):

``page_changed(ids)``
    pages whose bytes the commit changed, written and derived, in LSN order;
``delta_applied(first_lsn, last_lsn)``
    the LSNs the commit's deltas took;
``page_stale(ids)``
    pages reached through a ``control`` or ``sync`` edge from a changed page;
``cascade_done(info)``
    a dict: ``seeds`` (pages written), ``recomputed`` (pages the cascade
    changed), ``lsn`` (the state's LSN after the commit);
a user-named edge kind ``K``: ``K(ids)``
    pages reached through edges of that kind from a changed page.

A handler that raises does not stop the others and does not touch the state:
the commit is complete before any handler runs, and sealed in the log (with a
file log and ``sync="commit"``, on disk), so what a handler writes, replays or
checkpoints comes after it. The exception is logged on
the ``mmsb`` logger with the event's name.
"""

from __future__ import annotations

from typing import Any, Callable

from ._interrupts import user_code


class Events:
    """Handlers by event name."""

    __slots__ = ("handlers",)

    def __init__(self) -> None:
        self.handlers: dict[str, list[Callable[..., Any]]] = {}

    def add(self, event: str, fn: Callable[..., Any]) -> None:
        self.handlers.setdefault(event, []).append(fn)

    def remove(self, event: str, fn: Callable[..., Any]) -> bool:
        fns = self.handlers.get(event, [])
        if fn in fns:
            fns.remove(fn)
            return True
        return False

    def wants(self, event: str) -> bool:
        return bool(self.handlers.get(event))

    @user_code
    def emit(self, event: str, *args: Any) -> None:
        for fn in list(self.handlers.get(event, ())):
            try:
                fn(*args)
            except Exception:
                import logging  # here, not at import: only a failing handler needs it

                logging.getLogger("mmsb").exception("mmsb: a %r handler raised; the commit stands", event)
