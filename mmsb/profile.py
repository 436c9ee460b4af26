"""``python -m mmsb profile``: each budgeted workload timed with mmsb and with plain NumPy, judged.

The original system was a Julia front-end over a Rust core; the figures it
published (on its own machine) are the table's first column. Each row is a
:class:`Workload`: the same work done by mmsb and by the plain NumPy/Python
script a user would write without it (a dict of uint8 pages, a list as the
log, a callback per derived page; the small-delta row also has a raw NumPy
scatter of the same bytes), timed in this process. Each row carries its
budget from ``docs/PERFORMANCE.md`` (mmsb's time per operation on a 2-core
machine, and how many times faster than the NumPy script it must be), and the
table marks it met or missed. Before anything is timed, every workload runs
once on every side and their pages are compared byte for byte, so the columns
always time the same result.

:data:`WORKLOADS` is the table, in order; append a :class:`Workload` to add a
row. The builders here (:func:`update_buffers`, :func:`sparse_batch`,
:func:`page_order`, :class:`PeerGraph`, ...) are also what the asv suite in
``benchmarks/`` uses, so the profile and the dashboard measure one definition
of each workload.

Not imported by ``import mmsb``: only the command line loads it.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numba
import numpy as np

import mmsb

__all__ = [
    "PAGE_SIZE", "SEED", "PEERS", "ScriptState", "Side", "Workload", "WORKLOADS", "PeerGraph",
    "copy_first_parent", "head_values", "judge", "mmsb_chain", "mmsb_hop_with_njit_binding",
    "numpy_update", "page_order", "pair_bytes", "peer_chain", "peer_hop_with_binding", "profile",
    "render", "rng", "scatter_offsets", "sparse_batch", "speed", "update_buffers",
]

SEED = 0
PAGE_SIZE = 1024      # 1 KiB pages, as in every figure of the original
BATCH_PAGES = 4096    # small-delta throughput: 4096 x 1 KiB pages
BATCH_WIDTH = 8       # ... one 8-byte sparse delta per page

ORIGINAL = ("Original system: a Julia front-end over a Rust core; the \"original\" column is what it "
            "published, measured on its own machine.")

# the sides a workload may have besides mmsb: name -> (its column, its name in a budget, what it is)
PEERS = {
    "numpy": ("NumPy script", "NumPy",
              "the same bookkeeping in plain Python/NumPy: a dict of uint8 pages, a list log, a callback "
              "per derived page"),
    "numpy_scatter": ("NumPy scatter", "NumPy scatter",
                      "the same bytes written by one fancy-index assignment flat[offsets] = values into one "
                      "flat uint8 array holding all pages, offsets precomputed (no log, no epochs: the bytes "
                      "alone)"),
}

# budgets that only the asv suite measures (docs/PERFORMANCE.md names the benchmark of each)
ASV_ONLY = ("cascade over a 100k-node DAG, log append in memory and durable, 1 M pages resident, "
            "GPU flush and crossover, import mmsb, first update")


# -- builders, shared with benchmarks/ ---------------------------------------------------------

def rng() -> np.random.Generator:
    """A fresh generator on the one seed (fresh each call, so order of use never matters)."""
    return np.random.default_rng(SEED)


def update_buffers(content: str = "random", size: int = PAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Two uint8 buffers that differ from each other; the first is nonzero everywhere.

    ``"random"``: independent random bytes, differing at every byte;
    ``"10 bytes changed"``: the second is the first with exactly 10 bytes flipped.
    """
    g = rng()
    a = g.integers(1, 256, size, dtype=np.uint8)
    if content == "random":
        b = g.integers(1, 256, size, dtype=np.uint8)
        b[b == a] ^= 0xFF      # every byte differs, so the diff size is exactly known
    elif content == "10 bytes changed":
        b = a.copy()
        where = g.choice(size, 10, replace=False)
        b[where] ^= g.integers(1, 256, 10, dtype=np.uint8)   # xor with nonzero: always a change
    else:
        raise ValueError(f"unknown content {content!r}")
    return a, b


def sparse_batch(n_pages: int = BATCH_PAGES, width: int = BATCH_WIDTH,
                 page_size: int = PAGE_SIZE) -> tuple[np.ndarray, ...]:
    """Columnar arrays for one ``width``-byte sparse delta per page, in two flavours.

    Returns (starts, indices, values_a, values_b). Delta i owns
    ``indices[starts[i]:starts[i+1]]``; its offsets are distinct (one per
    ``page_size / width`` stripe) so no byte is written twice, and values_b
    differs from values_a at every offset, so alternating the two always
    changes bytes. values_a is nonzero, so it also changes a fresh page.

    Which page delta i writes is the caller's: ``ids`` writes page i in
    creation order, ``ids[page_order(n_pages)]`` each page once in a seeded
    random order (what the small-delta row of the profile does).
    """
    g = rng()
    stripe = page_size // width
    offs = np.arange(width, dtype=np.int64) * stripe + g.integers(0, stripe, (n_pages, width))
    indices = offs.reshape(-1)
    values_a = g.integers(1, 256, indices.size, dtype=np.uint8)
    values_b = values_a ^ g.integers(1, 256, indices.size, dtype=np.uint8)
    starts = np.arange(n_pages + 1, dtype=np.int64) * width
    return starts, indices, values_a, values_b


def page_order(n_pages: int = BATCH_PAGES) -> np.ndarray:
    """A seeded random permutation of ``range(n_pages)`` (int64): delta i of a batch writes page
    ``order[i]``, so a batch touches every page once, in an order no cache can predict."""
    return np.random.default_rng(SEED + 1).permutation(n_pages).astype(np.int64)


def scatter_offsets(order: np.ndarray, starts: np.ndarray, indices: np.ndarray,
                    page_size: int = PAGE_SIZE) -> np.ndarray:
    """Flat offsets (page * page_size + index) into one array holding every page, for the deltas
    of :func:`sparse_batch` written to pages ``order`` (delta i to page ``order[i]``)."""
    return np.repeat(np.asarray(order, np.int64) * page_size, np.diff(starts)) + indices


def numpy_update(pages: dict, epochs: dict, log: list | None, pid: int, data: np.ndarray) -> bool:
    """The peer's update_page: diff, write, count an epoch, log (id, indices, values)."""
    page = pages[pid]
    if log is None:                      # no log: no need for the changed offsets
        if np.array_equal(page, data):
            return False
        page[:] = data
    else:
        changed = np.flatnonzero(page != data)
        if changed.size == 0:
            return False
        values = data[changed]
        page[changed] = values
        log.append((pid, changed, values))
    epochs[pid] += 1
    return True


class ScriptState:
    """The peer of a state for the allocation cycle: the bookkeeping mmsb does, in plain Python.

    A dict of pages, a dict of epochs, a list log and the next page id. Making
    one is ``start``; :meth:`create_page` allocates a zeroed uint8 page, gives
    it the next id and epoch 0 and logs ``("create", id, size)``; :meth:`stop`
    clears it all.
    """

    __slots__ = ("pages", "epochs", "log", "next_id")

    def __init__(self) -> None:
        self.pages: dict[int, np.ndarray] = {}
        self.epochs: dict[int, int] = {}
        self.log: list = []
        self.next_id = 0

    def create_page(self, size: int) -> int:
        pid = self.next_id
        self.next_id = pid + 1
        self.pages[pid] = np.zeros(size, np.uint8)
        self.epochs[pid] = 0
        self.log.append(("create", pid, size))
        return pid

    def stop(self) -> None:
        self.pages.clear()
        self.epochs.clear()
        self.log.clear()
        self.next_id = 0


class PeerGraph:
    """The peer of a state with recomputes: a dict of pages, a list log, a callback per child.

    An update is :func:`numpy_update`, then each child's callback, depth
    first; a callback that reproduces the child's bytes stops there. A batch
    writes its deltas, then runs the callbacks once per page it changed.
    """

    def __init__(self, n: int, size: int = PAGE_SIZE) -> None:
        self.pages = {i: np.zeros(size, np.uint8) for i in range(n)}
        self.epochs = dict.fromkeys(range(n), 0)
        self.log: list = []
        self.children: dict[int, list[int]] = {}
        self.compute: dict[int, Callable[[], np.ndarray]] = {}

    def bind(self, child: int, parents: Sequence[int], ufunc: Any = None) -> None:
        """``child`` follows its parents: a copy of the first (``ufunc`` None) or a reduction."""
        ps = [self.pages[p] for p in parents]
        self.compute[child] = (lambda p=ps[0]: p) if ufunc is None else (lambda: functools.reduce(ufunc, ps))
        for p in parents:
            self.children.setdefault(p, []).append(child)
        numpy_update(self.pages, self.epochs, self.log, child, self.compute[child]())

    def _changed(self, pid: int) -> None:
        for c in self.children.get(pid, ()):
            if numpy_update(self.pages, self.epochs, self.log, c, self.compute[c]()):
                self._changed(c)

    def update(self, pid: int, data: np.ndarray) -> None:
        if numpy_update(self.pages, self.epochs, self.log, pid, data):
            self._changed(pid)

    def apply(self, deltas: Sequence[tuple[int, np.ndarray, np.ndarray]]) -> None:
        """Apply ``(page, indices, values)`` deltas in order, then recompute what they changed."""
        pages, log, changed = self.pages, self.log, {}
        for pid, idx, vals in deltas:
            page = pages[pid]
            diff = page[idx] != vals
            if diff.any():
                hit, v = idx[diff], vals[diff]
                page[hit] = v
                log.append((pid, hit, v))
                self.epochs[pid] += 1
                changed[pid] = None
        for pid in changed:
            self._changed(pid)


def mmsb_chain(n: int, log: Any = None) -> tuple[mmsb.State, np.ndarray]:
    """A state with ``n`` zeroed 1 KiB pages, page k a passthrough of page k - 1; (state, ids)."""
    st = mmsb.start(log=log)
    ids = st.create_pages(n, PAGE_SIZE)
    for k in range(1, n):
        st.register_passthrough(ids[k], ids[k - 1])
    return st, ids


def peer_chain(n: int) -> PeerGraph:
    """The peer of :func:`mmsb_chain`."""
    peer = PeerGraph(n)
    for k in range(1, n):
        peer.bind(k, [k - 1])
    return peer


@numba.njit(cache=True)
def copy_first_parent(parents, bounds, out):  # pragma: no cover - runs inside mmsb's cascade kernel
    """An ``@njit`` recompute (mmsb's user-function signature): the child is a copy of parent 0."""
    out[:] = parents[bounds[0]:bounds[1]]


def pair_bytes() -> np.ndarray:
    """What the unrelated pair's parent holds: a fixed nonzero pattern, so its copy shows."""
    return (np.arange(PAGE_SIZE) * 7 % 255 + 1).astype(np.uint8)


def mmsb_hop_with_njit_binding(log: Any = None) -> tuple[mmsb.State, np.ndarray]:
    """:func:`mmsb_chain` (2) plus an unrelated pair: page 2 holds :func:`pair_bytes`, page 3 is
    bound to it with the ``@njit`` :func:`copy_first_parent`; (state, the 4 ids). Updates of
    page 0 never reach the pair: the binding is only there."""
    st, ids = mmsb_chain(2, log)
    pair = st.create_pages(2, PAGE_SIZE)
    st.update_page(pair[0], pair_bytes())
    st.register_recompute(pair[1], [pair[0]], copy_first_parent)
    return st, np.concatenate([ids, pair])


def peer_hop_with_binding() -> PeerGraph:
    """The peer of :func:`mmsb_hop_with_njit_binding`: :func:`peer_chain` (2) plus the pair, its
    child bound by a copy callback."""
    peer = PeerGraph(4)
    peer.bind(1, [0])
    peer.update(2, pair_bytes())
    peer.bind(3, [2])
    return peer


def head_values(count: int, second: int) -> list[np.ndarray]:
    """Full-page rows for batch ``second`` (0 or 1); consecutive rows, across both batches too,
    differ at every byte."""
    base = rng().integers(0, 256, PAGE_SIZE, dtype=np.uint8)
    return [(base + j).astype(np.uint8) for j in range(1 + second * count, 1 + (1 + second) * count)]


# -- the table ------------------------------------------------------------------------------------

@dataclass
class Side:
    """One implementation of a workload, ready to run.

    ``run(k)`` does ``k`` operations (``k`` is even: workloads alternate two
    inputs so every operation changes bytes); ``result()`` returns the bytes
    the operations produced, to compare with the other sides; ``close()``
    releases what the side holds.
    """

    run: Callable[[int], None]
    result: Callable[[], list[bytes]]
    close: Callable[[], None] = lambda: None
    # the bytes of log the side's state holds (mmsb sides whose log grows with each operation)
    log_bytes: Callable[[], int] | None = None


@dataclass
class Workload:
    """One row: how to build each side, what one operation is, its budget, the original's figures.

    ``make(impl)`` builds a fresh :class:`Side` for ``impl``: "mmsb" or one
    of ``peers`` (names in :data:`PEERS`; the first is the one the "vs NumPy"
    column compares with). ``items`` is how many of ``per`` one operation
    does (deltas per batch for a throughput row, which ``rate`` shows per
    second). Figures are seconds per item; None where there is none.

    The budget, all of whose parts must hold for "met": ``budget_s``, mmsb's
    median at most this many seconds per item (for a rate row: at least
    ``1 / budget_s`` items per second); ``min_speedup``, peer name -> how many
    times faster than that peer mmsb must be (peer median / mmsb median; 0.5
    means at least half the peer's speed); ``budget_vs`` and
    ``budget_vs_max``, another row's key and the most this row's mmsb median
    may be as a multiple of that row's mmsb median, their samples taken in turn.
    ``short`` names the row inside other rows' budgets.
    """

    key: str
    title: str
    per: str
    make: Callable[[str], Side] | None
    original_s: float | None = None
    target_s: float | None = None
    budget_s: float | None = None
    items: int = 1
    rate: bool = False
    note: str = ""
    measured: bool = field(default=True)
    peers: tuple[str, ...] = ("numpy",)
    min_speedup: dict[str, float] = field(default_factory=dict)
    budget_vs: str | None = None
    budget_vs_max: float | None = None
    short: str = ""


def _alternate(op: Callable[[Any], Any], a: Any, b: Any) -> Callable[[int], None]:
    def run(k: int) -> None:
        for _ in range(k // 2):
            op(a)
            op(b)
    return run


def _allocation(impl: str) -> Side:
    if impl == "mmsb":
        start, stop = mmsb.start, mmsb.stop

        def run(k: int) -> None:
            for _ in range(k):
                st = start()
                st.create_page(PAGE_SIZE)
                stop(st)

        def result() -> list[bytes]:
            st = start()
            data = st.query_page(st.create_page(PAGE_SIZE))
            stop(st)
            return [data.tobytes()]
        return Side(run, result)

    def peer_run(k: int) -> None:
        for _ in range(k):
            st = ScriptState()
            st.create_page(PAGE_SIZE)
            st.stop()

    def peer_result() -> list[bytes]:
        st = ScriptState()
        data = st.pages[st.create_page(PAGE_SIZE)].tobytes()
        st.stop()
        return [data]

    return Side(peer_run, peer_result)


def _log_of(st: mmsb.State) -> Callable[[], int]:
    """A side's ``log_bytes``: the bytes of records ``st`` holds in memory."""
    return lambda: st.stats()["log_bytes"]


def _hops(n: int) -> Callable[[str], Side]:
    def make(impl: str) -> Side:
        a, b = update_buffers("random")
        if impl == "mmsb":
            st, ids = mmsb_chain(n)
            head, update = int(ids[0]), st.update_page
            return Side(_alternate(lambda d: update(head, d), a, b),
                        lambda: [st.query_page(p).tobytes() for p in ids], lambda: mmsb.stop(st), _log_of(st))
        peer = peer_chain(n)
        return Side(_alternate(lambda d: peer.update(0, d), a, b),
                    lambda: [peer.pages[k].tobytes() for k in range(n)])
    return make


def _hop_with_njit(impl: str) -> Side:
    a, b = update_buffers("random")
    if impl == "mmsb":
        st, ids = mmsb_hop_with_njit_binding()
        head, update = int(ids[0]), st.update_page
        return Side(_alternate(lambda d: update(head, d), a, b),
                    lambda: [st.query_page(p).tobytes() for p in ids], lambda: mmsb.stop(st), _log_of(st))
    peer = peer_hop_with_binding()
    return Side(_alternate(lambda d: peer.update(0, d), a, b),
                lambda: [peer.pages[k].tobytes() for k in range(4)])


def _chain_batch(n: int, deltas: int) -> Callable[[str], Side]:
    def make(impl: str) -> Side:
        rows = [head_values(deltas, s) for s in (0, 1)]
        if impl == "mmsb":
            st, ids = mmsb_chain(n)
            head, starts = np.full(deltas, ids[0]), np.arange(deltas + 1) * PAGE_SIZE
            offs = np.tile(np.arange(PAGE_SIZE), deltas)
            a, b = (mmsb.DeltaBatch.from_sparse(head, starts, offs, np.concatenate(r)) for r in rows)
            return Side(_alternate(st.apply_batch, a, b),
                        lambda: [st.query_page(p).tobytes() for p in ids], lambda: mmsb.stop(st), _log_of(st))
        peer, offs = peer_chain(n), np.arange(PAGE_SIZE)
        a, b = ([(0, offs, v) for v in r] for r in rows)
        return Side(_alternate(peer.apply, a, b), lambda: [peer.pages[k].tobytes() for k in range(n)])
    return make


def _small_deltas(impl: str) -> Side:
    starts, indices, values_a, values_b = sparse_batch()
    order = page_order()                 # delta i writes page order[i], on every side
    if impl == "mmsb":
        st = mmsb.start()
        ids = st.create_pages(BATCH_PAGES, PAGE_SIZE)
        a, b = (mmsb.DeltaBatch.from_sparse(ids[order], starts, indices, v) for v in (values_a, values_b))
        return Side(_alternate(st.apply_batch, a, b),
                    lambda: [st.query_page(p).tobytes() for p in ids], lambda: mmsb.stop(st), _log_of(st))
    if impl == "numpy_scatter":
        flat = np.zeros(BATCH_PAGES * PAGE_SIZE, np.uint8)
        offs = scatter_offsets(order, starts, indices)

        def scatter(values: np.ndarray) -> None:
            flat[offs] = values

        return Side(_alternate(scatter, values_a, values_b),
                    lambda: [flat[i * PAGE_SIZE:(i + 1) * PAGE_SIZE].tobytes() for i in range(BATCH_PAGES)])
    pages = {i: np.zeros(PAGE_SIZE, np.uint8) for i in range(BATCH_PAGES)}
    log: list = []
    spans = [(int(order[i]), slice(starts[i], starts[i + 1])) for i in range(BATCH_PAGES)]
    a, b = ([(pid, indices[s], v[s]) for pid, s in spans] for v in (values_a, values_b))

    def apply(deltas: list) -> None:
        for pid, idx, vals in deltas:
            pages[pid][idx] = vals
            log.append((pid, idx, vals))

    return Side(_alternate(apply, a, b), lambda: [pages[i].tobytes() for i in range(BATCH_PAGES)])


REPLAY_BATCHES = 32   # replay: 32 batches of the small-delta workload, 131 072 deltas in one log file


def _replay(impl: str) -> Side:
    starts, indices, values_a, values_b = sparse_batch()
    if impl == "mmsb":
        import shutil
        import tempfile

        folder = tempfile.mkdtemp(prefix="mmsb-profile-")
        path = os.path.join(folder, "replay.log")
        st = mmsb.start(log=path, sync="none")
        ids = st.create_pages(BATCH_PAGES, PAGE_SIZE)
        for i in range(REPLAY_BATCHES):
            st.apply_batch(mmsb.DeltaBatch.from_sparse(ids, starts, indices, (values_a, values_b)[i & 1]))
        mmsb.stop(st)
        last: list = []

        def run(k: int) -> None:
            for _ in range(k):
                r = mmsb.replay(path)
                if last:
                    mmsb.stop(last.pop())
                last.append(r)

        def result() -> list[bytes]:
            run(1)
            return [last[0].query_page(p).tobytes() for p in ids]

        def close() -> None:
            while last:
                mmsb.stop(last.pop())
            shutil.rmtree(folder, ignore_errors=True)

        return Side(run, result, close)
    log = [(i, indices[starts[i]:starts[i + 1]], v[starts[i]:starts[i + 1]])
           for v in [(values_a, values_b)[j & 1] for j in range(REPLAY_BATCHES)] for i in range(BATCH_PAGES)]
    pages: dict = {}

    def peer_run(k: int) -> None:
        for _ in range(k):
            pages.clear()
            pages.update((i, np.zeros(PAGE_SIZE, np.uint8)) for i in range(BATCH_PAGES))
            for pid, idx, vals in log:
                pages[pid][idx] = vals

    def peer_result() -> list[bytes]:
        peer_run(1)
        return [pages[i].tobytes() for i in range(BATCH_PAGES)]

    return Side(peer_run, peer_result)


WORKLOADS: list[Workload] = [
    Workload("allocation", "allocation cycle: start, 1 KiB page, stop", "cycle", _allocation,
             original_s=6.09e-6, target_s=1e-6, budget_s=1e-6, min_speedup={"numpy": 2.0},
             short="allocation cycle"),
    Workload("single_hop", "single hop: 1 KiB parent, passthrough child", "update", _hops(2),
             original_s=169.5e-6, target_s=10e-6, budget_s=2e-6, min_speedup={"numpy": 8.0},
             short="single hop"),
    Workload("single_hop_njit", "single hop + an unrelated @njit binding", "update",
             _hop_with_njit, budget_vs="single_hop", budget_vs_max=1.10),
    Workload("chain_10", "chain of 10 × 1 KiB, update the head", "update", _hops(10),
             original_s=1.37e-3, budget_s=4e-6, min_speedup={"numpy": 20.0}),
    Workload("batch_32x4", "32-page chain, batch of 4 full-page deltas", "batch",
             _chain_batch(32, 4), original_s=4.02e-3, target_s=1.5e-3, budget_s=20e-6,
             short="32-page batch"),
    Workload("batch_128x2", "128-page chain, batch of 2 full-page deltas", "batch",
             _chain_batch(128, 2), original_s=19.4e-3, budget_s=40e-6),
    Workload("small_deltas", f"apply_batch, {BATCH_PAGES} × 8 B deltas, random pages",
             "delta", _small_deltas, budget_s=1 / 25e6, items=BATCH_PAGES, rate=True,
             peers=("numpy", "numpy_scatter"), min_speedup={"numpy_scatter": 0.5}),
    Workload("replay", f"replay a log file of {REPLAY_BATCHES * BATCH_PAGES} × 8 B deltas", "delta",
             _replay, original_s=1e-6, budget_s=1 / 20e6, items=REPLAY_BATCHES * BATCH_PAGES, rate=True,
             note="original: its Rust core replays about 1 M deltas/s"),
    Workload("gpu_crossover", "GPU crossover: page size from which the device beats one core", "page",
             None, measured=False,
             note="the original: 1 KiB pages 174× slower on its GPU, threshold proposed at 1 MiB"),
]


def _gpu_note(original: str) -> str:
    """What this machine says about the crossover: stored calibration, or how to get one."""
    from . import gpu

    if not gpu.available():
        where = "no CUDA device here"
    elif gpu.simulated():
        where = "numba's CUDA simulator here (no timings)"
    else:
        entry = gpu.stored_calibrations().get(gpu.device_name() or "")
        where = (f"{gpu.device_name()}: not calibrated yet" if not entry else
                 f"{gpu.device_name()}: {entry['threshold']} B, calibrated {entry.get('when', '')}")
    return (f"{where}; python -m mmsb calibrate measures it and benchmarks/gpu_bench.py times the device "
            f"({original})")


# -- measuring ------------------------------------------------------------------------------------

def _calibrated(w: Workload, impl: str, sample_s: float) -> int:
    """How many operations of ``w`` on side ``impl`` take about ``sample_s``, timed after the
    side's first operations as :func:`_sample` times them: the first batch of a fresh state
    faults its pages in, and sized from it a sample was two batches long."""
    side = w.make(impl)
    try:
        side.run(2)
        logged, ops = side.log_bytes() if side.log_bytes else 0, 0
        k, dt = 2, 0.0
        while True:
            t = time.perf_counter()
            side.run(k)
            dt = time.perf_counter() - t
            ops += k
            if dt >= sample_s / 8 or k >= 1 << 22:
                break
            k *= 8
        per_op = (side.log_bytes() - logged) / ops if side.log_bytes else 0
    finally:
        side.close()
    k = int(k * sample_s / max(dt, 1e-9))
    if per_op > 0:  # a sample's log stays within the buffers the pool keeps (see _LOG_PER_SAMPLE)
        k = min(k, int(_log_per_sample() / per_op))
    return max(2, k & ~1)


def _log_per_sample() -> int:
    """The most log one sample writes: half of what the pool keeps in spare log buffers
    (``mmsb.config.LOG_SPARE_BYTES``; a log lives in a buffer up to twice its size). Past them a
    log grows into memory the system has to fault in, at 1-2.5 us per 4 KiB on the machines
    the budgets are set for: more than a hop's work. That cost belongs to memory, which the
    asv suite measures, not to the hot path; and it made a row's figure depend on how many
    operations a sample happened to run (the 128-page batch: 22 us up to 1400 batches, 75 us
    at 2000)."""
    return mmsb.config.LOG_SPARE_BYTES // 2


def _sample(w: Workload, impl: str, k: int) -> float:
    """Seconds per item of ``k`` operations on a fresh side: the logs (and memory) of earlier
    samples stay out of it."""
    side = w.make(impl)
    try:
        side.run(2)
        t = time.perf_counter()
        side.run(k)
        return (time.perf_counter() - t) / (k * w.items)
    finally:
        side.close()


def _samples(w: Workload, impl: str, repeats: int, sample_s: float) -> tuple[list[float], int]:
    """``repeats`` timings of ``k`` operations each (seconds per item), on a fresh side each."""
    k = _calibrated(w, impl, sample_s)
    return [_sample(w, impl, k) for _ in range(repeats)], k


def _paired_samples(w: Workload, ref: Workload, repeats: int,
                    sample_s: float) -> tuple[list[float], int, list[float]]:
    """mmsb's samples of ``w`` and of ``ref`` taken in turn: a ratio between two mmsb rows
    is then measured over the same stretch of time, whatever the machine's speed did."""
    k, kr = _calibrated(w, "mmsb", sample_s), _calibrated(ref, "mmsb", sample_s)
    out, out_ref = [], []
    for _ in range(repeats):
        out.append(_sample(w, "mmsb", k))
        out_ref.append(_sample(ref, "mmsb", kr))
    return out, k, out_ref


def _summary(samples: list[float], k: int, items: int) -> dict[str, Any]:
    q = np.percentile(samples, [0, 25, 50, 75, 100])
    return {"median_s": float(q[2]), "p25_s": float(q[1]), "p75_s": float(q[3]), "min_s": float(q[0]),
            "max_s": float(q[4]), "samples": len(samples), "items_per_sample": k * items}


def _same_bytes(w: Workload) -> None:
    """Run every side from fresh for the same operations; raise if any side's pages differ."""
    results = {}
    for impl in ("mmsb", *w.peers):
        side = w.make(impl)
        try:
            side.run(4)
            results[impl] = side.result()
        finally:
            side.close()
    for impl in w.peers:
        if results[impl] != results["mmsb"]:
            name = _peer_name(impl)
            raise AssertionError(f"workload {w.key}: mmsb and the {name} ({impl}) produced different bytes")


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or not den else num / den


# -- budgets --------------------------------------------------------------------------------------

def _num(x: float) -> str:
    """A multiple as the table writes it: 3.1, 12, 0.50."""
    if x >= 9.95:
        return f"{x:.0f}"
    return f"{x:.1f}" if x >= 0.995 else f"{x:.2f}"


def speed(ratio: float | None) -> str:
    """``other time / mmsb time`` in words: "12× faster", "3.1× slower", "-" for None."""
    if ratio is None:
        return "-"
    return f"{_num(ratio)}× faster" if ratio >= 1 else f"{_num(1 / ratio)}× slower"


def _time(s: float | None, digits: int = 3) -> str:
    if s is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= scale:
            return f"{s / scale:.{digits}g} {unit}"
    return f"{s / 1e-9:.{digits}g} ns"


def _figure(s: float | None, rate: bool, per: str = "delta", digits: int = 3) -> str:
    """Seconds per item as the table shows it: a time, or for a rate row millions per second."""
    if s is None:
        return "-"
    return f"{1 / s / 1e6:.{digits}g} M {per}s/s" if rate else _time(s, digits)


def _peer_name(impl: str, budget: bool = False) -> str:
    """A peer's column title, or (``budget``) its shorter name inside a budget."""
    names = PEERS.get(impl)
    return impl if names is None else names[1 if budget else 0]


def _label(row: dict[str, Any], by_key: dict[str, dict[str, Any]]) -> str:
    ref = by_key.get(row["budget_vs"]) or {}
    return ref.get("short") or row["budget_vs"].replace("_", " ")


def judge(row: dict[str, Any], by_key: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """A row's budget against its measured medians: ``{"budget", "checks", "verdict"}``.

    ``row`` is a row of :func:`profile`'s result (or a hand-made dict with the
    same keys: ``rate``, ``per``, ``budget_s``, ``min_speedup``, ``budget_vs``,
    ``budget_vs_max``, ``measured`` and, when measured, ``{impl: {"median_s"}}``);
    ``by_key`` holds the other rows, for ``budget_vs``. Each check is
    ``{"kind", "budget", "measured", "met"}``: kind "absolute", "speedup" (with
    the "peer" and the "ratio", its median over mmsb's) or "vs_row" (with the
    "row" and the "ratio", mmsb's median over that row's); budget and measured
    in words; ``met`` None where it cannot be judged (the row it compares with
    was not measured). The verdict is
    "met" when every check is met, "missed" when any is not, None when the row
    has no budget or a check cannot be judged.
    """
    by_key = by_key or {}
    rate, per = row.get("rate", False), row.get("per", "delta")
    measured = row.get("measured", True) and "mmsb" in row
    m = row["mmsb"]["median_s"] if measured else None
    checks = []
    if row.get("budget_s") is not None:
        b = row["budget_s"]
        checks.append({"kind": "absolute", "budget": ("≥ " if rate else "≤ ") + _figure(b, rate, per),
                       "measured": _figure(m, rate, per), "met": None if m is None else m <= b})
    for impl, least in (row.get("min_speedup") or {}).items():
        r = _ratio(row[impl]["median_s"], m) if measured and impl in row else None
        checks.append({"kind": "speedup", "peer": impl, "ratio": r,
                       "budget": f"≥ {least:g}× {_peer_name(impl, True)}",
                       "measured": "-" if r is None else f"{speed(r)} than {_peer_name(impl)}",
                       "met": None if r is None else r >= least})
    if row.get("budget_vs"):
        ref, most = by_key.get(row["budget_vs"]), row["budget_vs_max"]
        ok = measured and ref is not None and ref.get("measured", True) and "mmsb" in ref
        # the reference's samples taken in turn with this row's, where the profile took them
        r = _ratio(m, row.get("vs_median_s") or ref["mmsb"]["median_s"]) if ok else None
        label = _label(row, by_key)
        checks.append({"kind": "vs_row", "row": row["budget_vs"], "ratio": r,
                       "budget": f"≤ {most:.2f}× {label}",
                       "measured": "-" if r is None else f"{r:.2f}× {label}",
                       "met": None if r is None else r <= most})
    met = [c["met"] for c in checks]
    verdict = ("missed" if False in met else None if None in met or not met else "met")
    return {"budget": " and ".join(c["budget"] for c in checks) or None, "checks": checks, "verdict": verdict}


def profile(quick: bool = False, workloads: Sequence[Workload] | None = None,
            progress: bool | None = None) -> dict[str, Any]:
    """Measure every workload and judge its budget; the table as a JSON-ready dict (``--json``).

    Times are seconds per item. ``ratios`` maps each peer to its median over
    mmsb's (above 1: mmsb is faster); ``ratio_numpy`` is the NumPy script's,
    ``ratio_original`` the original's figure over mmsb's median. ``budget``,
    ``checks`` and ``verdict`` are :func:`judge`'s. ``progress`` shows a bar
    on stderr (default: when stderr is a terminal).
    """
    workloads = list(WORKLOADS if workloads is None else workloads)
    # quick samples still run long enough (20 ms) that a fresh side's first calls do not dominate
    repeats, sample_s = (5, 0.02) if quick else (31, 0.04)
    if progress is None:
        progress = sys.stderr.isatty()
    measured = [w for w in workloads if w.measured]
    bar: Any = None
    if progress:
        from tqdm import tqdm

        total = sum(2 + len(w.peers) for w in measured)
        bar = tqdm(total=total, desc="mmsb profile", unit="step", file=sys.stderr, leave=False)

    def step(what: str) -> None:
        if bar is not None:
            bar.set_postfix_str(what)
            bar.update(1)

    t0 = time.perf_counter()
    import mmsb.kernels  # noqa: F401 - numba and the cached kernels, timed apart from the rest

    mmsb.stop(mmsb.start())
    load_s = time.perf_counter() - t0
    warm: dict[str, float] = {}
    for w in measured:
        # the first calls load or compile each kernel the workload needs; then every side must agree
        t = time.perf_counter()
        _same_bytes(w)
        warm[w.key] = time.perf_counter() - t
        step(f"{w.key}: warm-up")

    rows = []
    for w in workloads:
        row: dict[str, Any] = {"key": w.key, "workload": w.title, "per": w.per, "items": w.items,
                               "rate": w.rate, "original_s": w.original_s, "target_s": w.target_s,
                               "budget_s": w.budget_s, "min_speedup": dict(w.min_speedup),
                               "budget_vs": w.budget_vs, "budget_vs_max": w.budget_vs_max,
                               "short": w.short, "peers": list(w.peers), "measured": w.measured,
                               "note": _gpu_note(w.note) if w.key == "gpu_crossover" else w.note}
        if w.measured:
            ref = next((r for r in measured if r.key == w.budget_vs), None)
            if ref is None:
                # every side's samples taken in turn, so a slow stretch of the machine falls on all
                # of them and the ratios hold (taken one side after the other, the small-delta
                # row's ratio to the scatter read 0.43 and 0.62 in two runs of the same code)
                impls = (*w.peers, "mmsb")
                ks = {impl: _calibrated(w, impl, sample_s) for impl in impls}
                got: dict[str, list[float]] = {impl: [] for impl in impls}
                for _ in range(repeats):
                    for impl in impls:
                        got[impl].append(_sample(w, impl, ks[impl]))
                for impl in impls:
                    row[impl] = _summary(got[impl], ks[impl], w.items)
                    step(f"{w.key}: {impl}")
            else:
                for impl in (*w.peers, "mmsb"):
                    if impl == "mmsb":
                        samples, k, ref_samples = _paired_samples(w, ref, repeats, sample_s)
                        row["vs_median_s"] = float(np.median(ref_samples))
                    else:
                        samples, k = _samples(w, impl, repeats, sample_s)
                    row[impl] = _summary(samples, k, w.items)
                    step(f"{w.key}: {impl}")
            m = row["mmsb"]["median_s"]
            row["ratios"] = {impl: _ratio(row[impl]["median_s"], m) for impl in w.peers}
            row["ratio_numpy"] = row["ratios"].get("numpy")
            row["ratio_original"] = _ratio(w.original_s, m)
            row["same_bytes"] = True
        rows.append(row)
    by_key = {r["key"]: r for r in rows}
    for row in rows:
        row.update(judge(row, by_key))
    if bar is not None:
        bar.close()

    return {
        "mmsb": mmsb.__version__, "python": platform.python_version(), "numpy": np.__version__,
        "numba": numba.__version__, "machine": platform.machine(), "processor": platform.processor(),
        "cpus": os.cpu_count(), "quick": quick, "repeats": repeats, "seconds": time.perf_counter() - t0,
        "original": ORIGINAL, "warmup_s": {"kernels": load_s, **warm}, "rows": rows,
    }


# -- output ---------------------------------------------------------------------------------------

HEADER = (("workload", ""), ("time", "per"), ("original", "(Julia/Rust)"), ("NumPy script", ""),
          ("mmsb", "(± spread)"), ("mmsb vs", "NumPy script"), ("mmsb vs", "original"),
          ("budget", "(mmsb, 2-core machine)"), ("verdict", ""))
LEFT = (0, 1, 7, 8)   # columns aligned left


def _measured(m: dict[str, Any], rate: bool, per: str) -> str:
    spread = (m["p75_s"] - m["p25_s"]) / 2 / m["median_s"] * 100
    return f"{_figure(m['median_s'], rate, per)} ±{spread:.0f}%"


def _original(r: dict[str, Any]) -> str:
    """The original's figure as published (4 digits: 169.5 µs)."""
    return _figure(r["original_s"], r["rate"], r["per"], 4)


def render(result: dict[str, Any]) -> str:
    """The table as text: one line per workload (and one per extra peer), then what each side is."""
    lines: list[tuple[str, ...]] = []
    notes, missed = [], []
    blank = ("",) * len(HEADER)
    for r in result["rows"]:
        if not r["measured"]:
            notes.append(f"{r['workload']}: {r['note']}")
            continue
        rate, per, peers = r["rate"], r["per"], r.get("peers") or ["numpy"]
        ratios = r.get("ratios") or {"numpy": r.get("ratio_numpy")}
        verdict = {"met": "met", "missed": "MISSED"}.get(r.get("verdict") or "", "-")
        lines.append((r["workload"], "" if rate else per, _original(r),
                      _figure(r[peers[0]]["median_s"], rate, per), _measured(r["mmsb"], rate, per),
                      speed(ratios.get(peers[0])), speed(r["ratio_original"]), r.get("budget") or "-", verdict))
        for impl in peers[1:]:   # another peer: its figure under the NumPy script's, its ratio beside
            sub = list(blank)
            sub[0], sub[3], sub[5] = f"  └ {_peer_name(impl)}", _figure(r[impl]["median_s"], rate, per), \
                speed(ratios.get(impl))
            lines.append(tuple(sub))
        for c in r.get("checks", []):
            if c["kind"] == "vs_row" and c["ratio"] is not None:
                label = c["budget"].split("× ", 1)[1]
                lines.append((f"  └ mmsb: {c['ratio']:.2f}× its time on the {label}, their samples taken in turn",
                              *blank[1:]))
        failed = [f"{c['measured']} (budget {c['budget']})" for c in r.get("checks", []) if c["met"] is False]
        if failed:
            missed.append(f"  {r['workload']}: " + "; ".join(failed))
    widths = [max(len(x[i]) for x in (*zip(*HEADER), *lines)) for i in range(len(HEADER))]

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i in LEFT else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    shown = {p for r in result["rows"] if r["measured"] for p in (r.get("peers") or ["numpy"])}
    legend = [f"{_peer_name(p)}: {PEERS[p][2]}." for p in PEERS if p in shown]
    warm = result["warmup_s"]
    first_calls = sum(v for k, v in warm.items() if k != "kernels")
    cpus = result.get("cpus")
    targets = [f"{_original(dict(r, original_s=r['target_s']))} per {r.get('short') or r['workload']}"
               for r in result["rows"] if r.get("target_s") is not None]
    return "\n".join([
        result.get("original", ORIGINAL),
        f"mmsb {result['mmsb']} profile{' (quick)' if result['quick'] else ''}: python {result['python']}, "
        f"numpy {result['numpy']}, numba {result['numba']}, {result['machine']}"
        + (f", {cpus} cores" if cpus else ""),
        "", *(fmt(h) for h in zip(*HEADER)), fmt(["-" * w for w in widths]), *map(fmt, lines), "",
        *legend,
        *(["The original's own targets: " + "; ".join(targets) + "."] if targets else []),
        f"Medians of {result['repeats']} runs (spread: ± half the interquartile range). \"vs\": the other "
        "side's time over mmsb's, in this run; trust these ratios over absolute times, which drift on a "
        "shared machine. \"≥ 8× NumPy\": at least 8 times as fast as the NumPy script.",
        "Budgets: docs/PERFORMANCE.md. " + (f"Missed ({len(missed)}):" if missed else "None missed."),
        *missed, *notes,
        f"Budgets only the asv suite measures (docs/PERFORMANCE.md): {ASV_ONLY}.",
        f"Warm-up, not in the table: numba and kernels {warm['kernels']:.2f} s; first calls per workload, "
        f"with a byte-for-byte check that every side agrees, {first_calls:.2f} s. "
        f"Total {result['seconds']:.1f} s.",
    ])


def main(quick: bool = False, as_json: bool = False, out: Any = None) -> int:
    """What ``python -m mmsb profile`` runs."""
    out = out or sys.stdout
    result = profile(quick=quick)
    print(json.dumps(result, indent=2) if as_json else render(result), file=out)
    return 0
