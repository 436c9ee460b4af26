"""Dependencies, recompute bindings, events and transactions: the part of
:class:`mmsb.State` that reaches beyond one page.

A mixin of :class:`mmsb.State`; it relies on the state's lookups (``_core``,
``_slot``) and its commit path (:mod:`mmsb.commit`), and drives
:mod:`mmsb.propagation` for the cascades.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._interrupts import _held, atomic, ensure, holds, land
from ._layout import R_SLOW, R_SP_DELTAS, R_SP_LOG_DELTAS, R_SP_LSN, R_SP_USED
from ._layout import DTYPE_NAMES, ID_SLOT_BITS, META_GEN_MASK, OP_NJIT, OP_PASSTHROUGH, OP_PYTHON, T_META
from .errors import GraphCycleError, InvalidArgumentError
from .events import Events
from .functions import MissingFunction, function_name, remember
from .graph import FIRST_USER_KIND, KIND_CONTROL, KIND_SYNC
from .propagation import Binding, check_op, typed_njit, wants_typed
from .validate import _closed

_EMPTY = np.zeros(0, np.int64)
_EMPTY2 = np.zeros((0, 2), np.int64)


class _Savepoint:
    """Where a commit or transaction started: enough to put the state back."""

    __slots__ = ("lsn", "deltas", "log_used", "log_deltas", "saved", "seeds", "lsns")

    def __init__(self, c: Any, log: Any) -> None:
        self.lsn, self.deltas = c.lsn, c.deltas
        self.log_used, self.log_deltas = log.used, log.deltas
        self.saved: set[int] = set()
        self.seeds: list[np.ndarray] = []
        self.lsns: list[np.ndarray] = []
        c.prop.begin_undo()

    @classmethod
    def resumed(cls, c: Any, log: Any, slots: Any) -> _Savepoint:
        """The savepoint a commit kernel kept (``R_SP_*``) before it stepped out to Python,
        its before-images already saved."""
        sp = object.__new__(cls)
        rv = c.rv
        sp.lsn, sp.deltas = rv[R_SP_LSN], rv[R_SP_DELTAS]
        sp.log_used, sp.log_deltas = rv[R_SP_USED], rv[R_SP_LOG_DELTAS]
        sp.saved = set(slots)
        sp.seeds, sp.lsns = [], []
        return sp

    def rollback(self, c: Any, log: Any) -> None:
        c.prop.rollback(c)
        c.lsn, c.deltas = self.lsn, self.deltas
        log.rollback(self.log_used, self.log_deltas)


class Dependencies:
    """Graph, bindings, events and transactions of a :class:`mmsb.State` (a mixin)."""

    __slots__ = ()

    # -- dependencies, recomputes, events ---------------------------------------

    def _id_of(self, slot: int) -> int:
        return slot | (self._c.table.mv_meta[slot] & META_GEN_MASK) << ID_SLOT_BITS

    def _cycle(self, err: GraphCycleError) -> GraphCycleError:
        ids = [self._id_of(s) for s in err.path]
        return GraphCycleError(f"the edge {ids[-2]} -> {ids[-1]} would close the cycle {ids}", ids)

    @atomic
    def add_dependency(self, parent: Any, child: Any, kind: str = "data") -> None:
        """Add the edge ``parent -> child`` of ``kind``.

        Kinds: ``"data"`` (the child's binding recomputes it), ``"control"``
        (the child is reported stale: event ``page_stale``), ``"sync"`` (the
        child becomes a mirror of the parent: it gets the parent's bytes after
        every commit that changes them, across the bus when one page is on the
        device and the other on the host; same size, one parent, no other
        binding; also reported stale), or any other name (an event of that
        name fires). A data edge into a bound child adds the
        parent to its binding and brings the child up to date at once (a
        passthrough takes exactly one parent). Raises
        :class:`mmsb.GraphCycleError` (``.path`` lists the page ids around the
        cycle, the new edge last) and :class:`mmsb.InvalidArgumentError`.
        """
        c = self._core()
        if not isinstance(kind, str) or not kind:
            raise InvalidArgumentError(f"an edge kind is a non-empty name, got {kind!r}")
        with c.lock:
            if self._c is not c:
                raise _closed()
            self._check_writable("add_dependency")
            p, ch = self._slot(c, parent), self._slot(c, child)
            prop = c.prop
            if prop.graph.has_edge(p, ch) and prop.graph.edge_kind(p, ch) == prop.graph.kind_code(kind):
                return  # the edge is there already: nothing to do, whatever binds the child
            b = prop.bindings.get(ch)
            if b is not None and b.mirror and kind in ("data", "sync"):
                raise InvalidArgumentError(f"page {self._id_of(ch)} mirrors page {self._id_of(b.parents[0])} "
                                           "(a sync edge): it takes no other data or sync parent")
            if kind == "sync":
                self._check_mirror(c, p, ch, b)
            if b is not None and kind == "data":
                self._check_bindable(c, ch, [*b.parents, p], b.op, b.dtype)
            try:
                added = prop.graph.add_edge(p, ch, kind)
            except GraphCycleError as err:
                raise self._cycle(err) from None
            if not added:
                return
            code = prop.graph.kind_code(kind)
            self._log.append_edge(self._id_of(p), self._id_of(ch), code, kind if code >= FIRST_USER_KIND else "",
                                  True, c.lsn)
            prop.ensure(c.table.capacity)
            try:
                if b is not None and kind == "data":
                    b.parents.append(p)
                    b.weights.append(0.0)
                    prop.bind(ch, b)
                    self._propagate(c, _EMPTY, _EMPTY, dirty=ch)
                elif kind == "sync":
                    prop.bind(ch, Binding(OP_PASSTHROUGH, 0, [p], [0.0], None, mirror=True))
                    self._propagate(c, _EMPTY, _EMPTY, dirty=ch)
            finally:
                self._log.seal(c.lsn)

    def _check_mirror(self, c: Any, parent: int, child: int, b: Any) -> None:
        size = c.table.mv_size
        if size[parent] != size[child]:
            raise InvalidArgumentError(f"a sync edge joins pages of one size: page {self._id_of(parent)} has "
                                       f"{size[parent]} bytes, page {self._id_of(child)} {size[child]}")
        if b is not None:
            raise InvalidArgumentError(f"page {self._id_of(child)} has a recompute binding: a sync edge would make "
                                       "it a mirror too")
        g = c.prop.graph
        if child < g.num_nodes and g.parents(child, "data").size:
            raise InvalidArgumentError(f"page {self._id_of(child)} has data parents: a mirror has only its sync "
                                       "parent")

    @atomic
    def remove_dependency(self, parent: Any, child: Any) -> None:
        """Remove the edge ``parent -> child``. A bound child drops that parent from its
        binding (and is unbound when none is left; its bytes stay)."""
        c = self._core()
        with c.lock:
            if self._c is not c:
                raise _closed()
            self._check_writable("remove_dependency")
            p, ch = self._slot(c, parent), self._slot(c, child)
            prop = c.prop
            prop.graph.remove_edge(p, ch)
            self._log.append_edge(self._id_of(p), self._id_of(ch), 0, "", False, c.lsn)
            b = prop.bindings.get(ch)
            try:
                if b is not None and p in b.parents:
                    i = b.parents.index(p)
                    del b.parents[i], b.weights[i]
                    if not b.parents:
                        prop.bind(ch, None)
                    else:
                        prop.bind(ch, b)
                        self._propagate(c, _EMPTY, _EMPTY, dirty=ch)
            finally:
                self._log.seal(c.lsn)

    @atomic
    def unbind(self, child: Any) -> None:
        """Take ``child``'s binding away, with the data edges from its parents (or the sync edge
        it mirrors), as one commit; its bytes stay. Raises :class:`mmsb.InvalidArgumentError`
        when nothing binds it."""
        c = self._core()
        with c.lock:
            if self._c is not c:
                raise _closed()
            self._check_writable("unbind")
            ch = self._slot(c, child)
            if ch not in c.prop.bindings:
                raise InvalidArgumentError(f"page {self._id_of(ch)} is not bound to a recompute")
            try:
                self._unbind(c, ch)
            finally:
                self._log.seal(c.lsn)

    def _unbind(self, c: Any, ch: int) -> None:
        """The edges of ``ch``'s binding removed and logged (a replay removes them one by one, which
        leaves the child unbound when the last goes), then the binding."""
        prop = c.prop
        for p in list(prop.bindings[ch].parents):
            prop.graph.remove_edge(p, ch)
            self._log.append_edge(self._id_of(p), self._id_of(ch), 0, "", False, c.lsn)
        prop.bind(ch, None)

    def _dependents(self, c: Any, slot: int) -> list[int]:
        g = c.prop.graph
        return g.children(slot).tolist() if slot < g.num_nodes else []

    def _clear_dependents(self, c: Any, slot: int, dependents: str) -> list[int]:
        """Before ``slot`` is deleted: what ``delete_page(dependents=...)`` does to the pages that
        depend on it, logged; the slots to delete, the page's descendants first (so a replay
        deletes each page once nothing depends on it), the page last."""
        kids = self._dependents(c, slot)
        if not kids:
            return [slot]
        if dependents == "refuse":
            raise InvalidArgumentError(
                f"page {self._id_of(slot)} has dependents {[self._id_of(k) for k in kids]}: "
                "delete_page(page, dependents='unbind') unbinds them (their bytes stay), "
                "dependents='delete' deletes them too")
        if dependents == "delete":
            order, seen, stack = [], {slot}, [(slot, iter(kids))]
            while stack:  # depth-first, each page after everything below it
                node, it = stack[-1]
                nxt = next(it, None)
                if nxt is None:
                    order.append(node)
                    stack.pop()
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, iter(self._dependents(c, nxt))))
            return order
        prop = c.prop
        for ch in kids:
            b = prop.bindings.get(ch)
            if b is not None and slot in b.parents:
                self._unbind(c, ch)
            if prop.graph.has_edge(slot, ch):  # an edge of another kind
                prop.graph.remove_edge(slot, ch)
                self._log.append_edge(self._id_of(slot), self._id_of(ch), 0, "", False, c.lsn)
        return [slot]

    @atomic
    def register_passthrough(self, child: Any, parent: Any, writable: bool = False) -> None:
        """Bind ``child`` to be a copy of ``parent`` (same size); see :meth:`register_recompute`."""
        self.register_recompute(child, [parent], "passthrough", writable=writable)

    @atomic
    def register_recompute(self, child: Any, parents: Any, op: Any, dtype: Any = None,
                           weights: Any = None, writable: bool = False) -> None:
        """Bind ``child``'s bytes to a function of ``parents``' bytes, and bring it up to date.

        ``op`` is a built-in name, run inside the cascade kernel element-wise
        over the pages viewed as ``dtype`` (integers wrap around; by default the
        child's dtype when it is a typed page of one of these, else uint8):
        ``"passthrough"`` (one parent), ``"sum"``, ``"min"``, ``"max"``,
        ``"and"``, ``"or"``, ``"xor"``, and the semiring ops ``"minplus"``
        (``min_p(parent_p + weights[p])``) and ``"orand"`` (``any_p(parent_p
        != 0 and weights[p] != 0)``, giving 0/1). Every page must have the
        child's size, a multiple of the dtype's size.

        Or ``op`` is an ``@njit`` function ``f(parents, bounds, out) -> None``,
        called inside the cascade kernel: ``parents`` (uint8) holds a copy of
        the parents' bytes side by side, parent ``k`` being
        ``parents[bounds[k]:bounds[k + 1]]`` (int64 ``bounds``, one more entry
        than parents); ``out`` (uint8, the child's size) holds the child's
        current bytes and the function writes the new ones into it. It is
        compiled for that signature here (a mismatch is refused); the first
        such binding in a process also compiles numba's typed list of
        functions (about a second). An ``@njit`` function of two arguments,
        ``f(parents, out)``, gets typed views instead: the parents (of one
        dtype and shape) stacked as ``(k, *shape)``, and the child's values. Or ``op`` is any other callable, run by
        Python between kernel segments, in the same topological order: it gets
        the parents' bytes as read-only uint8 arrays, in order, and returns
        the child's bytes (any array of the child's size in bytes). Typed pages
        reach it as arrays of their dtype and shape, and a typed child takes an
        array of its shape (converted as update_page does). Pages of
        user functions may differ in size; ``dtype`` is then unused.

        If a user function raises, the commit rolls back and
        :class:`mmsb.RecomputeError` names the page.

        A bound page refuses direct writes (:class:`mmsb.InvalidArgumentError`:
        the next change upstream would overwrite them) unless ``writable=True``,
        when a direct write stands until a parent next changes. Binding a page
        that is bound already replaces its binding in the same commit: parents
        the new binding does not name lose their data edges.

        Data edges ``parent -> child`` are added where missing; the child may
        have no other data parents (unless they came with the binding replaced). The child is recomputed at once, as a
        commit of its own. Raises :class:`mmsb.InvalidArgumentError`,
        :class:`mmsb.GraphCycleError`, :class:`mmsb.RecomputeError`.
        """
        c = self._core()
        op = self._typed_op(op, child, parents)
        if dtype is None:
            info = self._info_of(child)
            dtype = np.uint8
            if info is not None and info.dtype is not None and info.dtype.isnative and info.dtype.name in DTYPE_NAMES:
                dtype = info.dtype
        code, dt, fn = check_op(op, dtype)
        if fn is not None:
            c.prop.ready_rollback(c)  # user code may raise: its commits then roll back
        with c.lock:
            if self._c is not c:
                raise _closed()
            self._check_writable("register_recompute")
            ch = self._slot(c, child)
            old = c.prop.bindings.get(ch)
            if old is not None and old.mirror:
                raise InvalidArgumentError(f"page {self._id_of(ch)} mirrors page {self._id_of(old.parents[0])} "
                                           "(a sync edge): remove that edge before binding it")
            if isinstance(parents, (str, bytes)) or not hasattr(parents, "__iter__"):
                parents = [parents]
            ps = [self._slot(c, p) for p in parents]
            if weights is None:
                ws = [0.0] * len(ps)
            else:
                try:
                    ws = [float(w) for w in weights]
                except (TypeError, ValueError, OverflowError):
                    raise InvalidArgumentError(f"weights must be numbers, got {weights!r}") from None
                if len(ws) != len(ps):
                    raise InvalidArgumentError(f"{len(ws)} weights for {len(ps)} parents")
            self._check_bindable(c, ch, ps, code, dt)
            prop = c.prop
            g = prop.graph
            others = set(g.parents(ch, "data").tolist()) - set(ps) if ch < g.num_nodes else set()
            # a binding replaced drops its parents the new one does not name (in this commit)
            dropped = [s for s in old.parents if s in others] if old is not None and not self._replaying else []
            others -= set(dropped)
            if others:
                raise InvalidArgumentError(
                    f"page {self._id_of(ch)} has data parents {sorted(self._id_of(s) for s in others)} "
                    "that the binding does not name (remove_dependency them first)"
                )
            added = []
            try:
                for p in ps:
                    if g.add_edge(p, ch, "data"):
                        added.append(p)
            except BaseException as err:
                # a refused edge (a cycle, or an edge of another kind already there) undoes the others
                for p in added:
                    g.remove_edge(p, ch)
                if isinstance(err, GraphCycleError):
                    raise self._cycle(err) from None
                raise
            prop.ensure(c.table.capacity)
            old = prop.bindings.get(ch)
            # a user function may raise on its first run: then the whole call is undone
            sp = _Savepoint(c, self._log) if fn is not None and not self._replaying else None
            for p in dropped:
                g.remove_edge(p, ch)
                self._log.append_edge(self._id_of(p), self._id_of(ch), 0, "", False, c.lsn)
            prop.bind(ch, Binding(code, dt, ps, ws, fn, writable=bool(writable)))
            if fn is not None and not isinstance(fn, MissingFunction):
                remember(self._annotations().functions, getattr(fn, "_mmsb_user", fn))
            self._log.append_bind(self._id_of(ch), code, dt | bool(writable) << 8, [self._id_of(p) for p in ps], ws,
                                  "" if fn is None else function_name(fn), c.lsn)
            try:
                self._propagate(c, _EMPTY, _EMPTY, dirty=ch)
            except BaseException:
                if sp is not None:
                    sp.rollback(c, self._log)
                    for p in added:
                        g.remove_edge(p, ch)
                    for p in dropped:
                        g.add_edge(p, ch, "data")
                    prop.bind(ch, old)
                raise
            finally:
                if sp is not None:
                    prop.end_undo()
                self._log.seal(c.lsn)

    def _typed_op(self, op: Any, child: Any, parents: Any) -> Any:
        """An ``@njit`` f(parents, out) made into the cascade's byte convention (mmsb.propagation.typed_njit)."""
        if not wants_typed(op):
            return op
        if isinstance(parents, (str, bytes)) or not hasattr(parents, "__iter__"):
            parents = [parents]

        def kind(page: Any) -> tuple[np.dtype, tuple[int, ...]]:
            info = self._info_of(page)
            if info is not None and info.dtype is not None:
                return info.dtype, info.shape
            return np.dtype(np.uint8), (self.page(page).size,)

        return typed_njit(op, [kind(p) for p in parents], kind(child))

    def _check_bindable(self, c: Any, child: int, parents: list[int], op: int, dtype: int) -> None:
        mv_size = c.table.mv_size
        size = mv_size[child]
        if not parents:
            raise InvalidArgumentError("a recompute needs at least one parent")
        if len(set(parents)) != len(parents) or child in parents:
            raise InvalidArgumentError("a recompute's parents must be distinct pages other than the child")
        if op == OP_PASSTHROUGH and len(parents) != 1:
            raise InvalidArgumentError(f"a passthrough takes exactly one parent, got {len(parents)}")
        if op == OP_NJIT:
            # the kernel copies the parents side by side, then the output, into its scratch
            c.prop.ensure(c.table.capacity, size + sum(mv_size[p] for p in parents))
            return
        if op != OP_PYTHON:
            item = np.dtype(DTYPE_NAMES[dtype]).itemsize
            bad = [self._id_of(p) for p in parents if mv_size[p] != size]
            if bad:
                raise InvalidArgumentError(
                    f"pages {bad} differ in size from page {self._id_of(child)} ({size} bytes)"
                )
            if size % item:
                raise InvalidArgumentError(f"a page of {size} bytes is not a whole number of {item}-byte elements")
        c.prop.ensure(c.table.capacity, size)

    def _forget_node(self, c: Any, slot: int) -> None:
        """A deleted page leaves the graph; bindings that read it drop it."""
        prop = c.prop
        children = prop.graph.children(slot).tolist()  # data children and mirrors
        prop.graph.remove_node(slot)
        if slot in prop.bindings:
            prop.bind(slot, None)
        for ch in children:
            b = prop.bindings.get(ch)
            if b is not None and slot in b.parents:
                i = b.parents.index(slot)
                del b.parents[i], b.weights[i]
                prop.bind(ch, b if b.parents else None)

    def _propagate(self, c: Any, seeds: np.ndarray, lsns: np.ndarray, dirty: int = -1,
                   first: int | None = None, sp: _Savepoint | None = None) -> None:
        """The cascade of a commit whose written pages are ``seeds``, then its events.

        ``first`` is the commit's first LSN (default: one per seed before now).
        When the cascade fails, ``sp`` (if given) puts the state back. With
        handlers subscribed the commit is sealed before the first one runs, and
        from then on it stands, whatever a handler raises.
        """
        if self._replaying:
            return  # a replay applies the logged deltas; recomputing would make them twice
        if first is None:
            first = c.lsn - seeds.size + 1 if seeds.size else c.lsn + 1
        if seeds.size > 1:
            # one seed per page, carrying its last LSN in this commit (provenance)
            rev = seeds[::-1]
            _, keep = np.unique(rev, return_index=True)
            keep = np.sort(seeds.size - 1 - keep)
            seeds, lsns = seeds[keep], lsns[keep]
        ev = self._events
        changed, other = _EMPTY, _EMPTY2
        if c.prop.graph.num_edges or dirty >= 0:
            try:
                changed, other = c.prop.cascade(self, c, self._log, seeds, lsns, dirty, ev is not None)
            except BaseException:
                if sp is not None:
                    sp.rollback(c, self._log)
                raise
        if ev is None:
            return
        # the commit is whole: seal it (durable under sync="commit") before any handler sees it,
        # so a handler's own writes, checkpoints and replays come after it
        self._log.seal(c.lsn)
        meta = c.table.array[T_META]

        def ids(slots: Any) -> np.ndarray:
            slots = np.asarray(slots, np.int64)
            gens = (meta[slots] & np.uint64(META_GEN_MASK)).astype(np.int64)
            return slots | gens << ID_SLOT_BITS

        if ev.wants("page_changed") and (seeds.size or changed.size):
            ev.emit("page_changed", ids(np.concatenate([seeds, changed])))
        if ev.wants("delta_applied") and c.lsn >= first:
            ev.emit("delta_applied", first, c.lsn)
        if other.size:
            g = c.prop.graph
            by_event: dict[str, dict[int, None]] = {}
            for slot, code in other.tolist():
                name = "page_stale" if code in (KIND_CONTROL, KIND_SYNC) else g.kind_name(code)
                by_event.setdefault(name, {})[slot] = None
            for name, slots in by_event.items():
                if ev.wants(name):
                    ev.emit(name, ids(list(slots)))
        if ev.wants("cascade_done"):
            ev.emit("cascade_done", {"seeds": int(seeds.size), "recomputed": int(changed.size), "lsn": c.lsn})

    # -- commits that may fail midway, and transactions ---------------------------

    def _begin_write(self, c: Any, slots: Any) -> _Savepoint | None:
        """Before a write: save what a rollback would need, when one may be needed."""
        txn = self._txn
        if txn is not None:
            c.prop.save(c, np.atleast_1d(slots), txn.saved)
            return None
        if not c.prop.fallible:
            return None
        sp = _Savepoint(c, self._log)
        c.prop.save(c, np.atleast_1d(slots), sp.saved)
        return sp

    def _end_write(self, c: Any, sp: _Savepoint | None) -> None:
        if sp is not None:
            c.prop.end_undo()

    @holds
    def _after_write(self, c: Any, sp: _Savepoint | None, seeds: np.ndarray, lsns: np.ndarray) -> None:
        """After a write: queue it in the open transaction, or run its cascade now."""
        txn = self._txn
        if txn is not None:
            txn.seeds.append(seeds)
            txn.lsns.append(lsns)
            return
        if sp is None:
            self._propagate(c, seeds, lsns)
            return
        try:
            self._propagate(c, seeds, lsns, sp=sp)
        finally:
            c.prop.end_undo()

    def transaction(self) -> _Transaction:
        """Group writes into one commit: one cascade, all or nothing.

        Inside, ``update_page``, ``apply_delta`` and ``apply_batch`` apply at
        once (later writes in the block see them) with consecutive LSNs, but
        no recompute runs and no event fires until the block ends; then one
        cascade runs for every page written. If the block raises, or a
        recompute fails, every page, epoch, the LSN and the log go back to
        where they were and the error propagates. Once the commit is sealed
        it stands: an event handler that raises (even KeyboardInterrupt) does
        not undo it. Creating or deleting pages, dependencies and bindings is
        refused inside. The state's lock is held for the whole block; a nested
        ``transaction()`` joins the outer one.
        """
        return _Transaction(self)

    def subscribe(self, event: str, fn: Any) -> None:
        """Call ``fn`` after each commit with something to say about ``event`` (see :mod:`mmsb.events`).

        Subscriptions belong to the state and end with it (``stop`` clears them).
        """
        self._core()
        if not callable(fn):
            raise InvalidArgumentError(f"a handler must be callable, got {fn!r}")
        if not isinstance(event, str) or not event:
            raise InvalidArgumentError(f"an event is a non-empty name, got {event!r}")
        if self._events is None:
            self._events = Events()
            self._c.regs[R_SLOW] = 1  # writes take the general path, which emits events
        self._events.add(event, fn)

    def unsubscribe(self, event: str, fn: Any) -> bool:
        """Stop calling ``fn`` for ``event``; whether it was subscribed."""
        self._core()
        return self._events is not None and self._events.remove(event, fn)



class _Transaction:
    """What :meth:`Dependencies.transaction` returns: a context manager whose entry and exit
    no interrupt splits (a generator-based one can be interrupted before it resumes)."""

    __slots__ = ("st", "c", "joined")

    def __init__(self, st: Any) -> None:
        self.st = st

    @holds
    def __enter__(self) -> Any:
        st = self.st
        c = self.c = st._core()
        ensure()
        c.prop.ready_rollback(c)  # no first compile inside the transaction
        c.lock.acquire()
        try:
            if st._c is not c:
                raise _closed()
            self.joined = st._txn is not None
            if not self.joined:
                st._check_writable()
            if not self.joined:
                st._txn = _Savepoint(c, st._log)
                c.regs[R_SLOW] = 1  # writes inside take the general path, which queues their cascade
        except BaseException:
            c.lock.release()
            raise
        return st  # an interrupt held here lands in the block (raised here, __exit__ would not run)

    @holds
    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        st, c = self.st, self.c
        try:
            if self.joined:
                return False  # the outer block commits or rolls back
            txn = st._txn
            try:
                st._txn = None
                if kind is not None:
                    if st._c is c:
                        txn.rollback(c, st._log)
                    return False
                if txn.seeds and (c.prop.graph.num_edges or st._events is not None):
                    # a failing cascade rolls the whole block back (sp=txn); handlers run sealed
                    st._propagate(c, np.concatenate(txn.seeds), np.concatenate(txn.lsns), first=txn.lsn + 1,
                                  sp=txn)
                st._log.seal(c.lsn)
            finally:
                c.regs[R_SLOW] = st._events is not None or st._log.failed is not None
                c.prop.end_undo()
            if st._logobj._trim is not None and st._c is c:
                st._retain(c)
            return False
        finally:
            c.lock.release()
            if _held:
                land()
