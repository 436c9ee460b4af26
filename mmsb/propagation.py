"""Recompute bindings and the cascade driver.

A *binding* says how a derived page follows from its parents: a built-in op
over a dtype view or an ``@njit`` function (both run inside the cascade
kernel), or a Python callable (run by Python between kernel segments, in the
same topological order). The cascade
of a commit runs in :mod:`mmsb.kernels.cascade`; this module keeps the graph
and the bindings, builds the kernel's plan array when either changes, and
drives the kernel, stepping out for Python recomputes and for log space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ._layout import (
    DTYPE_NAMES, OP_DEVICE, OP_NJIT, OP_PASSTHROUGH, OP_PYTHON, OPS, R_BINDS, R_BINDS_ROWS, R_CTL, R_FALLIBLE, R_POOL,
    R_POOL_ROWS, R_SCRATCH, R_SCRATCH_SIZE, R_UNDO, R_UNDO_INDEX, R_UNDO_ROWS, R_UNDO_SIZE, R_WORK, R_WORK_ROWS,
)
from ._registers import Published, PublishedInt, publish_all
from .arena import GUARD_BIT as _GUARD_BIT
from .errors import InvalidArgumentError, RecomputeError
from .functions import python_result
from .graph import KIND_DATA, Graph

_k: Any = None  # mmsb.kernels.cascade
_NONE = np.zeros(0, np.int64)
_NJIT_SIG: Any = None  # void(uint8[::1], int64[::1], uint8[::1])
_NJIT_TYPE: Any = None


def _kernels() -> None:
    global _k, _NJIT_SIG, _NJIT_TYPE
    if _k is None:
        from numba import types

        from .kernels import cascade

        b, i = types.Array(types.uint8, 1, "C"), types.Array(types.int64, 1, "C")
        _NJIT_SIG = types.void(b, i, b)
        _NJIT_TYPE = types.FunctionType(_NJIT_SIG)
        _k = cascade


_rollback_ready = False  # see Propagation.ready_rollback


@dataclass
class Binding:
    """How one derived page is computed: op code, dtype code, parents (slots), weights."""

    op: int
    dtype: int
    parents: list[int]
    weights: list[float]
    fn: Callable[..., Any] | None = None
    mirror: bool = False  # made by a sync edge: a passthrough that follows that edge
    writable: bool = False  # direct writes to the page allowed (they stand until a parent changes)


class Propagation:
    """The graph, the bindings and the cascade's work arrays of one state (pooled).

    Bindings live twice: as :class:`Binding` objects (what Python needs: the
    callable, the parent list) and as arrays for the kernel, updated in place
    by every change: ``binds`` (a row per slot: op, dtype, where its parents
    start in ``pool`` and how many, its signature) and ``pool`` (rows of
    parent slot and weight bits). A rebinding appends to the pool; the pool is
    compacted when more than half of it is dead.
    """

    # the arrays and the count a commit kernel reads (mmsb._registers)
    binds = Published(R_BINDS, R_BINDS_ROWS)
    pool = Published(R_POOL, R_POOL_ROWS)
    work = Published(R_WORK, R_WORK_ROWS)
    ctl = Published(R_CTL)
    scratch = Published(R_SCRATCH, R_SCRATCH_SIZE)
    undo = Published(R_UNDO, R_UNDO_SIZE)
    undo_index = Published(R_UNDO_INDEX, R_UNDO_ROWS)
    n_fallible = PublishedInt(R_FALLIBLE)  # bindings to user code: then a commit keeps before-images
    _regs = None

    def __init__(self, table: Any = None, regs: np.ndarray | None = None) -> None:
        _kernels()
        self._regs = regs
        self.table = table  # the core's PageTable: where pages live decides who recomputes them
        self.dev: Any = None  # the core's DeviceArena, once it has one
        self.graph = Graph()
        publish_all(self.graph, regs)
        self.n_fallible = 0
        self.bindings: dict[int, Binding] = {}
        # small to start (10 000 live states hold 10 000 of each); every one grows when needed
        self.binds = np.zeros((64, _k.B_COLS), np.int64)
        self.pool = np.zeros((64, 2), np.int64)
        self.pool_used = 0
        self.work = np.zeros((128, _k.W_COLS), np.int64)
        self.ctl = np.zeros(_k.C_WORDS, np.int64)
        self.scratch = np.zeros(64, np.uint8)
        self.undo = np.zeros(1 << 12, np.uint8)
        self.undo_index = np.zeros((64, 4), np.int64)
        self.funcs: Any = None  # typed list of the @njit functions bound, None while there are none
        self._fn_index: dict[Any, int] = {}
        self._seed = np.zeros(1, np.int64)  # reused by cascade_one: no arrays made per hop
        self._seed_lsn = np.zeros(1, np.int64)

    # -- bookkeeping -------------------------------------------------------------

    @property
    def fallible(self) -> bool:
        """Whether a page is bound to user code (then a cascade can fail midway)."""
        return self.n_fallible != 0

    def _function_index(self, fn: Any) -> int:
        """Where ``fn`` sits in :attr:`funcs` (added on first use; kept until :meth:`clear`)."""
        i = self._fn_index.get(fn)
        if i is None:
            if self.funcs is None:
                from numba.typed import List

                self.funcs = List.empty_list(_NJIT_TYPE)
            i = self._fn_index[fn] = len(self.funcs)
            self.funcs.append(fn)
        return i

    def ensure(self, slots: int, page_size: int = 0) -> None:
        """Room in the arrays for ``slots`` slots and pages of ``page_size`` bytes."""
        slots = max(slots, self.graph._cap)
        if self.binds.shape[0] < slots:
            binds = np.zeros((max(slots, 2 * self.binds.shape[0]), _k.B_COLS), np.int64)
            binds[: self.binds.shape[0]] = self.binds
            self.binds = binds
        if self.work.shape[0] < 2 * slots:
            work = np.zeros((max(2 * slots, 2 * self.work.shape[0]), _k.W_COLS), np.int64)
            work[: self.work.shape[0]] = self.work
            self.work = work
        if self.scratch.size < page_size + 8:
            self.scratch = np.zeros(max(page_size + 8, 2 * self.scratch.size), np.uint8)

    def bind(self, slot: int, binding: Binding | None) -> None:
        """Set (or with None, drop) the binding of ``slot``, in both forms."""
        old = self.bindings.get(slot)
        if old is not None and old.fn is not None:
            self.n_fallible -= 1
        meta = self.table.mv_meta
        if binding is None:
            self.bindings.pop(slot, None)
            self.binds[slot, _k.B_OP] = 0
            meta[slot] &= ~_GUARD_BIT
            return
        meta[slot] = meta[slot] & ~_GUARD_BIT if binding.writable else meta[slot] | _GUARD_BIT
        if binding.fn is not None:
            self.n_fallible += 1
        self.bindings[slot] = binding
        k = len(binding.parents)
        live = sum(len(b.parents) for b in self.bindings.values()) if self.pool_used + k > self.pool.shape[0] else 0
        if live and 2 * live < self.pool.shape[0]:
            self._compact()
        if self.pool_used + k > self.pool.shape[0]:
            pool = np.zeros((max(self.pool_used + k, 2 * self.pool.shape[0]), 2), np.int64)
            pool[: self.pool_used] = self.pool[: self.pool_used]
            self.pool = pool
        at = self.pool_used
        self.pool[at:at + k, 0] = binding.parents
        self.pool[at:at + k, 1] = np.array(binding.weights, np.float64).view(np.int64)
        self.pool_used = at + k
        second = self._function_index(binding.fn) if binding.op == OP_NJIT else binding.dtype
        if binding.fn is None and binding.op != OP_PASSTHROUGH:
            # a built-in op: the cascade calls it through its entry's address
            from .kernels import ops

            entry = ops.entry_index(binding.op, binding.dtype)
            if not self.ctl[_k.C_OPS + entry]:
                self.ctl[_k.C_OPS + entry] = ops.entry_address(entry)
        op = OP_DEVICE if self._on_device(slot, binding.parents) else binding.op
        self.binds[slot] = (op, second, at, k, -1)

    def _on_device(self, slot: int, parents: list[int]) -> bool:
        if self.dev is None or not self.dev.pages:
            return False
        return any(self.table.on_device(s) for s in (slot, *parents))

    def relocated(self) -> None:
        """Pages moved to the device: bindings that touch them step out to the gpu layer."""
        for slot, b in self.bindings.items():
            self.binds[slot, _k.B_OP] = OP_DEVICE if self._on_device(slot, b.parents) else b.op

    def _compact(self) -> None:
        self.pool_used = 0
        for slot, b in self.bindings.items():
            k = len(b.parents)
            self.pool[self.pool_used:self.pool_used + k, 0] = b.parents
            self.pool[self.pool_used:self.pool_used + k, 1] = np.array(b.weights, np.float64).view(np.int64)
            self.binds[slot, _k.B_START] = self.pool_used
            self.pool_used += k

    # -- undo: before-images that let a failed commit or transaction roll back ----

    @property
    def saving(self) -> bool:
        """Whether the commit under way saves before-images (it can reach user code)."""
        return self.ctl[_k.C_UNDO] != 0

    def begin_undo(self) -> None:
        ctl = self.ctl
        ctl[_k.C_UNDO], ctl[_k.C_UNDO_N], ctl[_k.C_UNDO_POS] = 1, 0, 0

    def end_undo(self) -> None:
        ctl = self.ctl
        ctl[_k.C_UNDO], ctl[_k.C_UNDO_N], ctl[_k.C_UNDO_POS] = 0, 0, 0
        if self.dev is not None:
            self.dev.drop_saved()

    def undo_room(self, nbytes: int, entries: int) -> None:
        ctl = self.ctl
        pos, n = int(ctl[_k.C_UNDO_POS]), int(ctl[_k.C_UNDO_N])
        if pos + nbytes > self.undo.size:
            undo = np.empty(max(pos + nbytes, 2 * self.undo.size), np.uint8)
            undo[:pos] = self.undo[:pos]
            self.undo = undo
        if n + entries > self.undo_index.shape[0]:
            index = np.empty((max(n + entries, 2 * self.undo_index.shape[0]), 4), np.int64)
            index[:n] = self.undo_index[:n]
            self.undo_index = index

    def save(self, c: Any, slots: np.ndarray, saved: set[int]) -> None:
        """Save the before-images of ``slots`` not in ``saved`` (and add them to it)."""
        fresh = [s for s in dict.fromkeys(slots.tolist()) if s not in saved]
        if not fresh:
            return
        arr = np.array(fresh, np.int64)
        self.undo_room(int(c.table.array[1, arr].sum()), arr.size)
        _k.save_images(c.table.array, c.arena.data, self.ctl, self.undo, self.undo_index, arr)
        saved.update(fresh)
        if self.dev is not None and self.dev.pages:
            for s in fresh:
                if self.table.on_device(s):
                    self.dev.save(s, self.table.mv_size[s])

    def ready_rollback(self, c: Any) -> None:
        """Compile (or load from the cache) the kernels a rollback runs, before a critical
        section might need them: called outside the state's lock, it touches no page."""
        global _rollback_ready
        if _rollback_ready:
            return
        ctl, undo, index = np.zeros(_k.C_WORDS, np.int64), np.zeros(8, np.uint8), np.zeros((1, 4), np.int64)
        _k.save_images(c.table.array, c.arena.data, ctl, undo, index, np.zeros(0, np.int64))
        _k.restore_images(c.table.array, c.arena.data, ctl, undo, index)  # no saves: nothing restored
        _rollback_ready = True

    def rollback(self, c: Any) -> None:
        """Restore every saved page; signatures are forgotten, so pages recompute when next reached."""
        _k.restore_images(c.table.array, c.arena.data, self.ctl, self.undo, self.undo_index)
        if self.dev is not None:
            self.dev.restore_saved()
        self.binds[:, _k.B_SIG] = -1

    def clear(self) -> None:
        """Back to a fresh state's graph and bindings (cost: what was used)."""
        n = max(self.graph.num_nodes, max(self.bindings, default=-1) + 1)
        self.graph.clear()
        self.bindings.clear()
        self.binds[:n] = 0
        self.pool_used = 0
        self.n_fallible = 0
        self.funcs = None
        self._fn_index.clear()
        self.end_undo()
        # the stats counters: a pooled state must report what a fresh one does
        self.ctl[_k.C_RECOMPUTED] = self.ctl[_k.C_SKIPPED] = self.ctl[_k.C_CASCADES] = 0

    def counters(self) -> tuple[int, int, int]:
        """(cascades run, pages recomputed, pages skipped by the epoch cut-off), counted by the kernel."""
        ctl = self.ctl
        return int(ctl[_k.C_CASCADES]), int(ctl[_k.C_RECOMPUTED]), int(ctl[_k.C_SKIPPED])

    def reset_counters(self) -> None:
        ctl = self.ctl
        ctl[_k.C_CASCADES] = ctl[_k.C_RECOMPUTED] = ctl[_k.C_SKIPPED] = 0

    # -- the cascade ---------------------------------------------------------------

    def _arrays(self, c: Any) -> tuple:
        g = self.graph
        return (c.table.array, c.arena.data, g._nodes, g._edges, self.binds, self.pool, self.work, self.ctl,
                self.scratch, self.undo, self.undo_index)

    def cascade(self, state: Any, c: Any, log: Any, seeds: np.ndarray, seed_lsns: np.ndarray,
                dirty: int = -1, lists: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Run the cascade of a commit whose written pages are ``seeds``.

        ``dirty`` queues one page for a recompute whatever its signature (a new
        binding). With ``lists``, returns the slots the cascade changed, in
        order, and the (slot, kind) pairs reached through other edges (for
        events). Raises what a Python recompute raises, with the page named.
        """
        g, work = self.graph, self.work
        if work.shape[0] < 2 * c.table.capacity or self.binds.shape[0] < g._cap:
            self.ensure(c.table.capacity)
            work = self.work
        ctl = self.ctl
        buf = log.reserve(1 << 12)
        # the common case, built-in ops and @njit functions only, is this one kernel call
        try:
            end, lsn = _k.cascade(c.table.array, c.arena.data, g._nodes, g._edges, self.binds, self.pool, work,
                                  ctl, self.scratch, self.undo, self.undo_index, buf, log.used, c.lsn, seeds,
                                  seed_lsns, dirty, self.funcs)
        except Exception as exc:
            self._committed(c, log, int(ctl[_k.C_END]), int(ctl[_k.C_LSN]))
            self._abandon()
            raise self._user_error(state, exc) from exc
        if lsn != c.lsn:
            self._committed(c, log, end, lsn)
        if ctl[_k.C_STATUS] != _k.ST_DONE:
            self._finish_slowly(state, c, log)
        if not lists:
            return _NONE, _NONE
        changed = work[: ctl[_k.C_OUT], _k.W_OUT].copy()
        if ctl[_k.C_STALE] <= work.shape[0]:
            other = work[: ctl[_k.C_STALE], _k.W_STALE:_k.W_KIND + 1].copy()
        else:  # more (page, kind) pairs than the list holds: walk the changed pages' edges
            other = self._other_edges(np.concatenate([seeds, changed]))
        return changed, other

    def _other_edges(self, slots: np.ndarray) -> np.ndarray:
        """(child, kind) of every non-data edge out of ``slots`` (when the kernel's list overflowed)."""
        g = self.graph
        pairs = []
        for s in slots.tolist():
            if s < g.num_nodes:
                for child in g.children(s).tolist():
                    kind = g.edge_kind(s, child)
                    if kind != KIND_DATA:
                        pairs.append((child, kind))
        return np.array(pairs, np.int64).reshape(-1, 2)

    def cascade_one(self, state: Any, c: Any, log: Any, slot: int, lsn: int) -> None:
        """:meth:`cascade` of a commit that wrote one page, with no events wanted."""
        self._seed[0] = slot
        self._seed_lsn[0] = lsn
        self.cascade(state, c, log, self._seed, self._seed_lsn)

    def _finish_slowly(self, state: Any, c: Any, log: Any) -> None:
        """Go on with a cascade that stepped out for a Python recompute or for space."""
        work, ctl = self.work, self.ctl
        try:
            while ctl[_k.C_STATUS] != _k.ST_DONE:
                if ctl[_k.C_STATUS] == _k.ST_SPACE:
                    log.reserve(int(ctl[_k.C_SLOT]) + (1 << 12))
                    if ctl[_k.C_UNDO]:
                        self.undo_room(int(ctl[_k.C_UNDO_NEED]), 1)
                elif ctl[_k.C_STATUS] == _k.ST_NJIT:
                    pass  # a commit kernel reached an @njit recompute: run() below has the functions
                elif self.binds[ctl[_k.C_SLOT], _k.B_OP] == OP_DEVICE:
                    from .gpu.cascade import recompute

                    recompute(self, state, c, log, int(ctl[_k.C_SLOT]))
                else:
                    self._python_recompute(state, c, log, int(ctl[_k.C_SLOT]))
                buf = log.reserve(1 << 12)
                try:
                    end, lsn = _k.run(*self._arrays(c), buf, log.used, c.lsn, self.funcs)
                except Exception as exc:
                    # what the kernel committed before the function raised stays: the
                    # caller's savepoint, if any, rolls it back with the rest
                    self._committed(c, log, int(ctl[_k.C_END]), int(ctl[_k.C_LSN]))
                    raise self._user_error(state, exc) from exc
                if lsn != c.lsn:
                    self._committed(c, log, end, lsn)
        except BaseException:
            self._abandon()
            raise
        finally:
            _k.finish(work, ctl)

    def _abandon(self) -> None:
        """Drop what is still queued (after a failure) so the next commit starts clean."""
        work, ctl = self.work, self.ctl
        while ctl[_k.C_HEAP]:
            ctl[_k.C_HEAP] -= 1
            work[work[ctl[_k.C_HEAP], _k.W_HEAP], _k.W_MARK] = 0
        _k.finish(work, ctl)

    def _user_error(self, state: Any, exc: Exception) -> RecomputeError:
        """The error for an @njit function that raised inside the kernel (the page is ``ctl[C_SLOT]``)."""
        pid = state._id_of(int(self.ctl[_k.C_SLOT]))
        return RecomputeError(f"recompute of page {pid} raised {exc!r}", pid)

    @staticmethod
    def _committed(c: Any, log: Any, end: int, lsn: int) -> None:
        if lsn != c.lsn:
            c.deltas += lsn - c.lsn
            log.commit(end, lsn - c.lsn)
            c.lsn = lsn

    def _python_recompute(self, state: Any, c: Any, log: Any, slot: int) -> None:
        b = self.bindings[slot]
        table, arena = c.table, c.arena
        views = []
        for p in b.parents:
            v = arena.view(table.mv_offset[p], table.mv_size[p])  # holds its chunk: user code may keep it
            v.flags.writeable = False
            views.append(v)
        data = python_result(state, b, views, slot, table.mv_size[slot])
        self.commit_host(c, log, slot, data)

    def commit_host(self, c: Any, log: Any, slot: int, data: np.ndarray) -> None:
        """Commit bytes recomputed outside the kernel for host page ``slot``."""
        size = data.size
        buf = log.reserve(64 + 2 * size + 8 * len(self.bindings[slot].parents))
        if self.ctl[_k.C_UNDO]:
            self.undo_room(size, 1)
        t, a, nodes, edges, binds, pool, work, ctl, _, undo, index = self._arrays(c)
        end = _k.commit_derived(t, a, nodes, edges, binds, pool, work, ctl, undo, index, slot, data, buf,
                                log.used, c.lsn + 1)
        if end != log.used:
            self._committed(c, log, end, c.lsn + 1)


def check_op(op: Any, dtype: Any) -> tuple[int, int, Callable[..., Any] | None]:
    """(op code, dtype code, callable) for a binding, or InvalidArgumentError.

    An ``@njit`` function is compiled here for the in-kernel signature
    ``(parents: uint8[::1], bounds: int64[::1], out: uint8[::1]) -> None``.
    """
    try:
        code = DTYPE_NAMES.index(np.dtype(dtype).name)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"dtype {dtype!r} is not one mmsb recomputes in; use one of {DTYPE_NAMES}") from None
    if isinstance(op, str):
        if op not in OPS:
            raise InvalidArgumentError(f"unknown recompute op {op!r}; built-in: {sorted(OPS)}")
        return OPS[op], code, None
    if _is_njit(op):
        try:
            op.compile(_NJIT_SIG)
        except Exception as exc:
            raise InvalidArgumentError(
                f"@njit recompute {getattr(op, '__name__', op)!r} does not compile as "
                f"f(parents: uint8[::1], bounds: int64[::1], out: uint8[::1]) -> None: {exc}"
            ) from None
        return OP_NJIT, code, op
    if callable(op):
        return OP_PYTHON, code, op
    raise InvalidArgumentError(f"a recompute op is a built-in name or a callable, got {op!r}")


_typed_wrappers: dict[tuple, Any] = {}


def wants_typed(op: Any) -> bool:
    """An ``@njit`` recompute written ``f(parents, out)``: it takes typed views (see typed_njit)."""
    code = getattr(getattr(op, "py_func", None), "__code__", None)
    return code is not None and code.co_argcount == 2 and _is_njit(op)


def typed_njit(op: Any, parents: list[tuple[np.dtype, tuple[int, ...]]], child: tuple[np.dtype, tuple[int, ...]]) -> Any:
    """For an ``@njit`` recompute of two arguments, ``f(parents, out)``: the byte-convention kernel
    function the cascade calls, which hands ``f`` the parents stacked as one array of shape
    ``(k, *shape)`` in their common dtype and the child's values as ``out`` (views, no copies).
    Any other op comes back as it is."""
    if not wants_typed(op):
        return op
    kinds = {p for p in parents}
    if len(kinds) != 1:
        raise InvalidArgumentError("an @njit recompute f(parents, out) takes parents of one dtype and shape "
                                   f"(got {sorted((str(d), s) for d, s in kinds)}); f(parents, bounds, out) takes bytes")
    (pdt, pshape), (dt, shape) = parents[0], child
    for d in (pdt, dt):
        if d.fields is not None or not d.isnative or d.kind not in "biufc":
            raise InvalidArgumentError(f"an @njit recompute f(parents, out) works on native numeric dtypes, not {d}")
    key = (op, pdt.str, pshape, len(parents), dt.str, shape)
    wrapper = _typed_wrappers.get(key)
    if wrapper is None:
        from numba import njit

        full, user, pview, view = (len(parents), *pshape), op, np.dtype(pdt).type, np.dtype(dt).type

        def typed(parents, bounds, out):  # noqa: ARG001 - the cascade's calling convention
            user(parents.view(pview).reshape(full), out.view(view).reshape(shape))

        wrapper = njit(typed)
        try:
            wrapper.compile(_NJIT_SIG)
        except Exception as exc:
            raise InvalidArgumentError(
                f"@njit recompute {getattr(op, '__name__', op)!r} does not compile as f(parents: {pdt}[{full}], "
                f"out: {dt}[{shape}]) -> None: {exc}") from None
        wrapper._mmsb_user = op
        _typed_wrappers[key] = wrapper
    return wrapper


def _is_njit(op: Any) -> bool:
    _kernels()
    from numba.core.registry import CPUDispatcher

    return isinstance(op, CPUDispatcher)


__all__ = ["Binding", "Propagation", "check_op", "KIND_DATA"]
