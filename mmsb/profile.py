"""``python -m mmsb profile``: the original investigation's table, measured now.

Each row is a :class:`Workload`: the same work done by mmsb and by the plain
NumPy/Python code a user would write without it (a dict of uint8 pages, a
list as the log, a callback per derived page), timed in this process, beside
the figures the original system (a Julia front-end over a Rust core)
published and the budgets of DESIGN.md §5. Before anything is timed, every
workload runs once on both sides and their pages are compared byte for byte,
so the two columns always time the same result.

:data:`WORKLOADS` is the table, in order; append a :class:`Workload` to add a
row. The builders here (:func:`update_buffers`, :func:`sparse_batch`,
:class:`PeerGraph`, ...) are also what the asv suite in ``benchmarks/`` uses,
so the profile and the dashboard measure one definition of each workload.

Not imported by ``import mmsb``: only the command line loads it.
"""

from __future__ import annotations

import functools
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

import mmsb

__all__ = [
    "PAGE_SIZE", "SEED", "Side", "Workload", "WORKLOADS", "PeerGraph", "head_values", "mmsb_chain",
    "numpy_update", "peer_chain", "profile", "render", "rng", "sparse_batch", "update_buffers",
]

SEED = 0
PAGE_SIZE = 1024      # 1 KiB pages, as in every figure of the original
BATCH_PAGES = 4096    # small-delta throughput: 4096 x 1 KiB pages
BATCH_WIDTH = 8       # ... one 8-byte sparse delta per page


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
    """
    g = rng()
    stripe = page_size // width
    offs = np.arange(width, dtype=np.int64) * stripe + g.integers(0, stripe, (n_pages, width))
    indices = offs.reshape(-1)
    values_a = g.integers(1, 256, indices.size, dtype=np.uint8)
    values_b = values_a ^ g.integers(1, 256, indices.size, dtype=np.uint8)
    starts = np.arange(n_pages + 1, dtype=np.int64) * width
    return starts, indices, values_a, values_b


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
    the operations produced, to compare with the other side; ``close()``
    releases what the side holds.
    """

    run: Callable[[int], None]
    result: Callable[[], list[bytes]]
    close: Callable[[], None] = lambda: None


@dataclass
class Workload:
    """One row: how to build each side, what one operation is, and the figures to compare with.

    ``make(impl)`` builds a fresh :class:`Side` for ``impl`` ("mmsb" or
    "numpy"); ``items`` is how many of ``per`` one operation does (deltas per
    batch for a throughput row, which ``rate`` shows per second). Figures are
    seconds per item; None where the original published none.
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
            pages, log = {}, []  # noqa: F841 - a state is its pages and its log
            pages[0] = np.zeros(PAGE_SIZE, np.uint8)

    return Side(peer_run, lambda: [np.zeros(PAGE_SIZE, np.uint8).tobytes()])


def _hops(n: int) -> Callable[[str], Side]:
    def make(impl: str) -> Side:
        a, b = update_buffers("random")
        if impl == "mmsb":
            st, ids = mmsb_chain(n)
            head, update = int(ids[0]), st.update_page
            return Side(_alternate(lambda d: update(head, d), a, b),
                        lambda: [st.query_page(p).tobytes() for p in ids], lambda: mmsb.stop(st))
        peer = peer_chain(n)
        return Side(_alternate(lambda d: peer.update(0, d), a, b),
                    lambda: [peer.pages[k].tobytes() for k in range(n)])
    return make


def _chain_batch(n: int, deltas: int) -> Callable[[str], Side]:
    def make(impl: str) -> Side:
        rows = [head_values(deltas, s) for s in (0, 1)]
        if impl == "mmsb":
            st, ids = mmsb_chain(n)
            head, starts = np.full(deltas, ids[0]), np.arange(deltas + 1) * PAGE_SIZE
            offs = np.tile(np.arange(PAGE_SIZE), deltas)
            a, b = (mmsb.DeltaBatch.from_sparse(head, starts, offs, np.concatenate(r)) for r in rows)
            return Side(_alternate(st.apply_batch, a, b),
                        lambda: [st.query_page(p).tobytes() for p in ids], lambda: mmsb.stop(st))
        peer, offs = peer_chain(n), np.arange(PAGE_SIZE)
        a, b = ([(0, offs, v) for v in r] for r in rows)
        return Side(_alternate(peer.apply, a, b), lambda: [peer.pages[k].tobytes() for k in range(n)])
    return make


def _small_deltas(impl: str) -> Side:
    starts, indices, values_a, values_b = sparse_batch()
    if impl == "mmsb":
        st = mmsb.start()
        ids = st.create_pages(BATCH_PAGES, PAGE_SIZE)
        a, b = (mmsb.DeltaBatch.from_sparse(ids, starts, indices, v) for v in (values_a, values_b))
        return Side(_alternate(st.apply_batch, a, b),
                    lambda: [st.query_page(p).tobytes() for p in ids], lambda: mmsb.stop(st))
    pages = {i: np.zeros(PAGE_SIZE, np.uint8) for i in range(BATCH_PAGES)}
    log: list = []
    spans = [(i, slice(starts[i], starts[i + 1])) for i in range(BATCH_PAGES)]
    a, b = ([(i, indices[s], v[s]) for i, s in spans] for v in (values_a, values_b))

    def apply(deltas: list) -> None:
        for pid, idx, vals in deltas:
            pages[pid][idx] = vals
            log.append((pid, idx, vals))

    return Side(_alternate(apply, a, b), lambda: [pages[i].tobytes() for i in range(BATCH_PAGES)])


REPLAY_BATCHES = 32   # replay: 32 batches of the small-delta workload, 131 072 deltas in one log file


def _replay(impl: str) -> Side:
    starts, indices, values_a, values_b = sparse_batch()
    if impl == "mmsb":
        import os
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
    Workload("allocation", "allocation cycle: start, create 1 KiB page, stop", "cycle", _allocation,
             original_s=6.09e-6, target_s=1e-6, budget_s=0.4e-6),
    Workload("single_hop", "single hop: update 1 KiB parent, passthrough child", "update", _hops(2),
             original_s=169.5e-6, target_s=10e-6, budget_s=1.5e-6),
    Workload("chain_10", "chain of 10 x 1 KiB, update the head", "update", _hops(10),
             original_s=1.37e-3, budget_s=3e-6),
    Workload("batch_32x4", "32-page chain, 4 full-page deltas on the head, one batch", "batch",
             _chain_batch(32, 4), original_s=4.02e-3, target_s=1.5e-3, budget_s=15e-6),
    Workload("batch_128x2", "128-page chain, 2 full-page deltas on the head, one batch", "batch",
             _chain_batch(128, 2), original_s=19.4e-3, budget_s=40e-6),
    Workload("small_deltas", f"apply_batch of 8-byte sparse deltas over {BATCH_PAGES} x 1 KiB pages",
             "delta", _small_deltas, budget_s=1 / 50e6, items=BATCH_PAGES, rate=True),
    Workload("replay", f"replay a log file of {REPLAY_BATCHES * BATCH_PAGES} 8-byte deltas into a new state",
             "delta", _replay, original_s=1e-6, budget_s=1 / 20e6, items=REPLAY_BATCHES * BATCH_PAGES,
             rate=True, note="original: its Rust core replays about 1 M deltas/s"),
    Workload("gpu_crossover", "GPU crossover: page size from which the device beats one core", "page",
             None, measured=False,
             note="the original: 1 KiB pages 174x slower on its GPU, threshold proposed at 1 MiB"),
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

def _samples(w: Workload, impl: str, repeats: int, sample_s: float) -> tuple[list[float], int]:
    """``repeats`` timings of ``k`` operations each (seconds per item), on a fresh side each."""
    side = w.make(impl)
    try:
        k, dt = 2, 0.0
        while True:  # calibrate: about sample_s per timed call
            t = time.perf_counter()
            side.run(k)
            dt = time.perf_counter() - t
            if dt >= sample_s / 8 or k >= 1 << 22:
                break
            k *= 8
    finally:
        side.close()
    k = max(2, int(k * sample_s / max(dt, 1e-9)) & ~1)
    out = []
    for _ in range(repeats):
        # a fresh side per sample keeps the logs (and memory) of earlier samples out of it
        side = w.make(impl)
        try:
            side.run(2)
            t = time.perf_counter()
            side.run(k)
            out.append((time.perf_counter() - t) / (k * w.items))
        finally:
            side.close()
    return out, k


def _summary(samples: list[float], k: int, items: int) -> dict[str, Any]:
    q = np.percentile(samples, [0, 25, 50, 75, 100])
    return {"median_s": float(q[2]), "p25_s": float(q[1]), "p75_s": float(q[3]), "min_s": float(q[0]),
            "max_s": float(q[4]), "samples": len(samples), "items_per_sample": k * items}


def _same_bytes(w: Workload) -> None:
    """Run both sides from fresh for the same operations; raise if their pages differ."""
    results = {}
    for impl in ("mmsb", "numpy"):
        side = w.make(impl)
        try:
            side.run(4)
            results[impl] = side.result()
        finally:
            side.close()
    if results["mmsb"] != results["numpy"]:
        raise AssertionError(f"workload {w.key}: mmsb and its NumPy peer produced different bytes")


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or not den else num / den


def profile(quick: bool = False, workloads: Sequence[Workload] | None = None,
            progress: bool | None = None) -> dict[str, Any]:
    """Measure every workload; the table as a JSON-ready dict (what ``--json`` prints).

    Times are seconds per item; ``ratio_numpy`` is the NumPy peer's median over
    mmsb's, ``ratio_original`` the original's figure over mmsb's median (above
    1: mmsb is faster). ``progress`` shows a bar on stderr (default: when
    stderr is a terminal).
    """
    workloads = list(WORKLOADS if workloads is None else workloads)
    repeats, sample_s = (5, 0.002) if quick else (31, 0.04)
    if progress is None:
        progress = sys.stderr.isatty()
    measured = [w for w in workloads if w.measured]
    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=3 * len(measured), desc="mmsb profile", unit="step", file=sys.stderr, leave=False)

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
        # the first calls load or compile each kernel the workload needs; then both sides must agree
        t = time.perf_counter()
        _same_bytes(w)
        warm[w.key] = time.perf_counter() - t
        step(f"{w.key}: warm-up")

    rows = []
    for w in workloads:
        row: dict[str, Any] = {"key": w.key, "workload": w.title, "per": w.per, "items": w.items,
                               "rate": w.rate, "original_s": w.original_s, "target_s": w.target_s,
                               "budget_s": w.budget_s, "measured": w.measured,
                               "note": _gpu_note(w.note) if w.key == "gpu_crossover" else w.note}
        if w.measured:
            for impl in ("numpy", "mmsb"):
                samples, k = _samples(w, impl, repeats, sample_s)
                row[impl] = _summary(samples, k, w.items)
                step(f"{w.key}: {impl}")
            m = row["mmsb"]["median_s"]
            row["ratio_numpy"] = _ratio(row["numpy"]["median_s"], m)
            row["ratio_original"] = _ratio(w.original_s, m)
            row["same_bytes"] = True
        rows.append(row)
    if bar is not None:
        bar.close()
    import numba

    return {
        "mmsb": mmsb.__version__, "python": platform.python_version(), "numpy": np.__version__,
        "numba": numba.__version__, "machine": platform.machine(), "processor": platform.processor(),
        "quick": quick, "repeats": repeats, "seconds": time.perf_counter() - t0,
        "warmup_s": {"kernels": load_s, **warm}, "rows": rows,
    }


# -- output ---------------------------------------------------------------------------------------

def _time(s: float | None) -> str:
    if s is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= scale:
            return f"{s / scale:.4g} {unit}"
    return f"{s / 1e-9:.4g} ns"


def _figure(s: float | None, rate: bool) -> str:
    if s is None:
        return "-"
    return f"{1 / s / 1e6:.3g} M/s" if rate else _time(s)


def _measured(m: dict[str, Any], rate: bool) -> str:
    spread = (m["p75_s"] - m["p25_s"]) / 2 / m["median_s"] * 100
    return f"{_figure(m['median_s'], rate)} ±{spread:.0f}%"


def _times(r: float | None) -> str:
    return "-" if r is None else f"{r:.3g}x"


def render(result: dict[str, Any]) -> str:
    """The table as text: medians ± half the interquartile range, then the ratios."""
    head = ("workload", "original", "target", "budget §5", "NumPy now", "mmsb now", "NumPy/mmsb",
            "original/mmsb")
    lines, notes = [], []
    for r in result["rows"]:
        if not r["measured"]:
            notes.append(f"{r['workload']}: {r['note']}")
            continue
        per = "" if r["rate"] else f" (per {r['per']})"
        lines.append((r["workload"] + per, _figure(r["original_s"], r["rate"]), _figure(r["target_s"], r["rate"]),
                      ("≥ " if r["rate"] else "≤ ") + _figure(r["budget_s"], r["rate"]),
                      _measured(r["numpy"], r["rate"]), _measured(r["mmsb"], r["rate"]),
                      _times(r["ratio_numpy"]), _times(r["ratio_original"])))
    widths = [max(len(x[i]) for x in (head, *lines)) for i in range(len(head))]

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    warm = result["warmup_s"]
    first = sum(v for k, v in warm.items() if k != "kernels")
    return "\n".join([
        f"mmsb {result['mmsb']} profile{' (quick)' if result['quick'] else ''}: python {result['python']}, "
        f"numpy {result['numpy']}, numba {result['numba']}, {result['machine']}",
        f"medians of {result['repeats']} runs, ± half the interquartile range. original: the reference "
        "system's published figures, on its machine. NumPy/mmsb, original/mmsb: their time over mmsb's "
        "(above 1, mmsb is faster)",
        "", fmt(head), fmt(["-" * w for w in widths]), *map(fmt, lines), *notes, "",
        f"warm-up, not in the table: numba and kernels {warm['kernels']:.2f} s; first calls per workload, "
        f"with a byte-for-byte check that mmsb and NumPy agree, {first:.2f} s. total {result['seconds']:.1f} s",
    ])


def main(quick: bool = False, as_json: bool = False, out: Any = None) -> int:
    """What ``python -m mmsb profile`` runs."""
    out = out or sys.stdout
    result = profile(quick=quick)
    print(json.dumps(result, indent=2) if as_json else render(result), file=out)
    return 0
