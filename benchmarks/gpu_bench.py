"""mmsb device benchmark: one command on a machine with an NVIDIA GPU.

    python benchmarks/gpu_bench.py [--quick] [--sizes 4K,64K,1M ...] [--json OUT]

For each page size it makes one state (``mmsb.start(gpu=True, log=False)``) holding one page of
that size on the CPU and one on the GPU, applies the same deltas to both, checks after every
phase that ``query_page`` of the GPU page equals the CPU page byte for byte (and both equal the
bytes NumPy computes), and times medians (``time.perf_counter_ns``, warm-up first) of:

- numpy:   the plain NumPy peer of the dense apply, ``np.copyto(page, payload, where=mask)``;
- cpu:     ``apply_delta(Delta.dense(cpu_page, mask, payload))``, about half the bytes masked,
           two payloads alternating so every apply changes every masked byte;
- gpu:     the same call on the GPU page (device resident: the call syncs before it returns);
- rt:      the GPU call plus ``query_page`` of the GPU page (round trip to the host);
- batch:   ``apply_batch`` of 256 sparse deltas (16 B each) spread over the page, cpu / gpu;
- flush:   a 1-byte sparse ``apply_delta`` (the fixed cost of one commit), cpu / gpu;
- launches per commit: ``stats()["device_launches"]`` moved by one dense / batch / 1-byte call.

Every Delta is built before its timer starts, so the figures are the apply alone.
Then it prints the GPU budgets of docs/PERFORMANCE.md as met or missed.

Exit status: 0 done (budgets missed or not), 1 a GPU page differed from the CPU page,
2 no device (or bad arguments). Under ``NUMBA_ENABLE_CUDASIM=1`` (numba's CUDA simulator, every
thread a Python thread) it runs a repeat or two per figure: that proves the script works, and the
figures mean nothing (the header says so and no budget is judged).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time

import numpy as np

KIB, MIB = 1 << 10, 1 << 20
DEFAULT_SIZES = [4 * KIB, 64 * KIB, 256 * KIB, 1 * MIB, 4 * MIB, 16 * MIB, 64 * MIB, 256 * MIB]
QUICK_MAX = 4 * MIB
BATCH_DELTAS = 256          # deltas per apply_batch
BATCH_WIDTH = 16            # bytes per sparse delta in the batch
SEED = 0
MASK_RUN = 64               # --mask runs: each 64-byte run of the page masked or not, at random

# repeats: at most MAX_PAIRS (A, B) pairs, at most SAMPLE_BYTES of page per figure, at least
# MIN_PAIRS; and a figure stops taking samples after MAX_SECONDS once it has MIN_PAIRS pairs.
# With the default grid the whole run takes about a minute on an H100 host; DEADLINE_S stops it
# before a 10-minute limit whatever happens (remaining sizes are reported as not run).
MAX_PAIRS = 100
MIN_PAIRS = 3
SAMPLE_BYTES = 512 * MIB
MAX_SECONDS = 1.0
DEADLINE_S = 420.0
SIM_ARENA_BYTES = 1 << 16   # the simulator: initial device arena (the default takes minutes there)
SIM_PAIRS = 1               # the simulator: one timed pair, no warm-up beyond the first applies
SIM_BATCH_DELTAS = 8        # the simulator: deltas per apply_batch (256 take seconds per call there)

# the GPU budgets of docs/PERFORMANCE.md
BUDGET_FLUSH_US = 15.0
BUDGET_CROSSOVER = 256 * KIB
BUDGET_SPEEDUP = 5.0
BUDGET_SPEEDUP_SIZE = 256 * MIB

TABLE_HEADER = ("size", "numpy", "cpu", "gpu", "gpu rt", "x cpu", "x numpy", "batch cpu", "batch gpu",
                "flush cpu", "flush gpu", "launches d/b/f")


class Mismatch(Exception):
    """A GPU page's bytes differ from the CPU page's (or from NumPy's)."""


# -- arguments -----------------------------------------------------------------------------

_UNITS = {"": 1, "b": 1, "k": KIB, "kb": KIB, "kib": KIB, "m": MIB, "mb": MIB, "mib": MIB,
          "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}


def parse_size(text: str) -> int:
    """'4096', '4K', '64KiB', '1M', '256MiB' -> bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use bytes or a K/M/G suffix)")
    n = int(m.group(1)) * _UNITS[m.group(2).lower()]
    if n < 1:
        raise argparse.ArgumentTypeError(f"a page needs at least 1 byte, got {text!r}")
    return n


def fmt_size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", MIB), ("KiB", KIB)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"default sizes up to {fmt_size(QUICK_MAX)} only, and shorter sampling")
    p.add_argument("--sizes", nargs="+", metavar="SIZE",
                   help="page sizes (bytes, or with K/M/G), comma or space separated; "
                        "default " + ",".join(fmt_size(s).replace(" ", "") for s in DEFAULT_SIZES))
    p.add_argument("--json", metavar="OUT", help="also write every figure to this JSON file")
    p.add_argument("--mask", choices=("runs", "bytes"), default="runs",
                   help=f"which ~half of the bytes a dense delta writes: random {MASK_RUN}-byte runs "
                        "(default) or random single bytes (a branch mispredict per byte on the CPU, "
                        "about 10x slower there)")
    p.add_argument("--repeat", type=int, metavar="PAIRS",
                   help=f"timed (A, B) pairs per figure (default: by size, {MIN_PAIRS}..{MAX_PAIRS})")
    args = p.parse_args(argv)
    if args.sizes:
        try:
            args.sizes = [parse_size(t) for item in args.sizes for t in item.split(",") if t.strip()]
        except argparse.ArgumentTypeError as e:
            p.error(str(e))
    else:
        args.sizes = [s for s in DEFAULT_SIZES if not args.quick or s <= QUICK_MAX]
    if not args.sizes:
        p.error("no sizes")
    if args.repeat is not None and args.repeat < 1:
        p.error("--repeat must be >= 1")
    return args


# -- workload data -------------------------------------------------------------------------

class Workload:
    """The deltas of one page size, as NumPy arrays, and the bytes they must leave behind."""

    def __init__(self, size: int, mask: str = "runs", deltas: int = BATCH_DELTAS):
        g = np.random.default_rng(SEED)
        self.size = size
        self.deltas = deltas
        # ~half the bytes masked, drawn per MASK_RUN-byte run (or per byte, "bytes"); from
        # rng.bytes, not rng.random, so a 256 MiB mask stays cheap
        run = MASK_RUN if mask == "runs" else 1
        n = -(-size // run)
        bits = np.unpackbits(np.frombuffer(g.bytes((n + 7) // 8), np.uint8), count=n).view(np.bool_)
        self.mask = np.ascontiguousarray(np.repeat(bits, run)[:size]) if run > 1 else bits
        self.pay_a = np.frombuffer(g.bytes(size), np.uint8).copy()
        self.pay_b = ~self.pay_a                     # differs from pay_a at every byte
        self.exp_a = np.where(self.mask, self.pay_a, np.uint8(0))   # a zero page after A
        self.exp_b = np.where(self.mask, self.pay_b, np.uint8(0))   # ... after B
        self.masked = int(np.count_nonzero(self.mask))
        # batch: delta k writes BATCH_WIDTH distinct offsets from k * size / 256 on (mod size);
        # on small pages deltas overlap, so batch order matters and is checked
        width = min(BATCH_WIDTH, size)
        base = (np.arange(deltas, dtype=np.int64) * size) // deltas
        self.b_indices = ((base[:, None] + np.arange(width, dtype=np.int64)) % size).reshape(-1)
        self.b_starts = np.arange(deltas + 1, dtype=np.int64) * width
        self.b_vals_a = g.integers(1, 256, self.b_indices.size, dtype=np.uint8)
        self.b_vals_b = self.b_vals_a ^ g.integers(1, 256, self.b_indices.size, dtype=np.uint8)
        self.flush_at = size // 2

    def batch_result(self, page: np.ndarray, values: np.ndarray) -> np.ndarray:
        """page after the batch with `values`, applied delta by delta in order (the reference)."""
        out = page.copy()
        st, idx = self.b_starts, self.b_indices
        for k in range(self.deltas):
            out[idx[st[k]:st[k + 1]]] = values[st[k]:st[k + 1]]
        return out


# -- timing --------------------------------------------------------------------------------

class Sampler:
    """How many (A, B) pairs a figure takes, for one page size."""

    def __init__(self, size: int, quick: bool, sim: bool, repeat: int | None):
        self.sim = sim
        if sim:
            self.pairs, self.warm, self.cap = repeat or SIM_PAIRS, 0, float("inf")
        else:
            self.pairs = repeat or max(MIN_PAIRS, min(MAX_PAIRS, SAMPLE_BYTES // (2 * size)))
            self.warm = 1 if size >= 16 * MIB else 3
            self.cap = (MAX_SECONDS / 4 if quick else MAX_SECONDS) if repeat is None else float("inf")

    def run(self, make, call, check=None, small=False):
        """Median ns of `call(make(p))` over alternating p = 0, 1 (A, B), warm-up first.

        `make(p)` builds the argument (untimed); `check(p, result)` runs untimed after a call.
        Pairs keep the pages ending on B. `small`: the call's work does not grow with the page
        (batch, flush): up to MAX_PAIRS pairs, still within the time cap. Returns
        (median_ns, samples).
        """
        pairs = MAX_PAIRS if small and not self.sim and self.cap != float("inf") else self.pairs
        clock = time.perf_counter_ns
        for _ in range(self.warm):
            for p in (0, 1):
                r = call(make(p))
                if check is not None:
                    check(p, r)
        samples = []
        t_stop = time.perf_counter() + self.cap
        for i in range(pairs):
            for p in (0, 1):
                arg = make(p)
                t0 = clock()
                r = call(arg)
                t1 = clock()
                samples.append(t1 - t0)
                if check is not None:
                    check(p, r)
            if i + 1 >= MIN_PAIRS and time.perf_counter() > t_stop:
                break
        return float(np.median(samples)), len(samples)


def launches(st, fn):
    """device_launches (and bytes in/out) that one call of fn() adds."""
    before = st.stats()
    fn()
    after = st.stats()
    return {k: int(after.get(k, 0) or 0) - int(before.get(k, 0) or 0)
            for k in ("device_launches", "device_bytes_in", "device_bytes_out")}


def expect_equal(what: str, size: int, got: np.ndarray, want: np.ndarray, got_name: str, want_name: str):
    if got.shape == want.shape and np.array_equal(got, want):
        return
    if got.shape != want.shape:
        raise Mismatch(f"{fmt_size(size)} page, after {what}: {got_name} has shape {got.shape}, "
                       f"{want_name} {want.shape}")
    diff = np.flatnonzero(got != want)
    j = int(diff[0])
    raise Mismatch(f"{fmt_size(size)} page, after {what}: {got_name} differs from {want_name} at "
                   f"{diff.size} of {size} bytes; first at offset {j}: {got_name} {int(got[j])}, "
                   f"{want_name} {int(want[j])}")


# -- one size ------------------------------------------------------------------------------

def bench_size(mmsb, size: int, sampler: Sampler, mask: str = "runs") -> dict:
    w = Workload(size, mask, SIM_BATCH_DELTAS if sampler.sim else BATCH_DELTAS)
    Delta, DeltaBatch = mmsb.Delta, mmsb.DeltaBatch
    st = mmsb.start(gpu=True, log=False)
    try:
        pc = st.create_page(size, location="cpu")
        pg = st.create_page(size, location="gpu")
        if getattr(pg, "location", "gpu") != "gpu" or getattr(pc, "location", "cpu") != "cpu":
            raise Mismatch(f"{fmt_size(size)}: pages landed on {pc.location!r} / {pg.location!r}, "
                           "asked for 'cpu' / 'gpu'")
        pays = (w.pay_a, w.pay_b)
        exps = (w.exp_a, w.exp_b)
        row = {"size": size, "batch_deltas": w.deltas, "dense_delta_bytes": w.masked,
               "batch_delta_bytes": int(w.b_indices.size)}

        def check_pages(what, want):
            cpu_bytes = st.query_page(pc)
            expect_equal(what, size, cpu_bytes, want, "the CPU page", "NumPy's result")
            expect_equal(what, size, st.query_page(pg), cpu_bytes, "the GPU page", "the CPU page")

        # -- dense ---------------------------------------------------------------------
        def dense(page):
            return lambda p: Delta.dense(page, w.mask, pays[p])

        apply = st.apply_delta
        for p in (0, 1):                    # first applies: kernels compile / load here
            apply(Delta.dense(pc, w.mask, pays[p]))
            apply(Delta.dense(pg, w.mask, pays[p]))
        check_pages("the first dense deltas", w.exp_b)
        row["launches_dense"] = launches(st, lambda: apply(Delta.dense(pg, w.mask, w.pay_a)))
        row["launches_dense_cpu_page"] = launches(st, lambda: apply(Delta.dense(pc, w.mask, w.pay_a)))
        apply(Delta.dense(pg, w.mask, w.pay_b))
        apply(Delta.dense(pc, w.mask, w.pay_b))

        peer = np.zeros(size, np.uint8)
        row["numpy_us"], _ = sampler.run(lambda p: pays[p], lambda pay: np.copyto(peer, pay, where=w.mask))
        expect_equal("the NumPy peer", size, peer, w.exp_b, "the NumPy page", "the expected bytes")

        def changed(p, d):
            if d is None:
                raise Mismatch(f"{fmt_size(size)}: apply_delta returned None (no commit) for a delta "
                               "that changes bytes")

        row["cpu_us"], row["samples"] = sampler.run(dense(pc), apply, changed)
        row["gpu_us"], _ = sampler.run(dense(pg), apply, changed)
        check_pages("the timed dense deltas", w.exp_b)

        def round_trip(d):
            apply(d)
            return st.query_page(pg)

        def check_rt(p, got):
            expect_equal("a dense delta (round trip)", size, got, exps[p], "the GPU page", "NumPy's result")

        row["gpu_rt_us"], _ = sampler.run(dense(pg), round_trip, check_rt)
        check_pages("the round trips", w.exp_b)

        # -- batch of 256 sparse deltas -------------------------------------------------
        b_vals = (w.b_vals_a, w.b_vals_b)

        def batch(page):
            pages = np.full(w.deltas, page.id, np.int64)
            return lambda p: DeltaBatch.from_sparse(pages, w.b_starts, w.b_indices, b_vals[p])

        apply_batch = st.apply_batch
        for p in (0, 1):
            apply_batch(batch(pc)(p))
            apply_batch(batch(pg)(p))
        after_b = w.batch_result(w.batch_result(w.exp_b, w.b_vals_a), w.b_vals_b)
        check_pages("the first batches", after_b)
        row["launches_batch"] = launches(st, lambda: apply_batch(batch(pg)(0)))
        apply_batch(batch(pg)(1))
        row["batch_cpu_us"], _ = sampler.run(batch(pc), apply_batch, small=True)
        row["batch_gpu_us"], _ = sampler.run(batch(pg), apply_batch, small=True)
        check_pages("the timed batches", after_b)

        # -- flush: a 1-byte sparse delta ------------------------------------------------
        at = np.array([w.flush_at], np.int64)
        one = (np.array([0x5A], np.uint8), np.array([0xA5], np.uint8))

        def flush(page):
            return lambda p: Delta.sparse(page, at, one[p])

        for p in (0, 1):
            apply(flush(pc)(p))
            apply(flush(pg)(p))
        after_f = after_b.copy()
        after_f[w.flush_at] = 0xA5
        check_pages("the first 1-byte deltas", after_f)
        row["launches_flush"] = launches(st, lambda: apply(flush(pg)(0)))
        apply(flush(pg)(1))
        row["flush_cpu_us"], _ = sampler.run(flush(pc), apply, changed, small=True)
        row["flush_gpu_us"], _ = sampler.run(flush(pg), apply, changed, small=True)
        check_pages("the timed 1-byte deltas", after_f)
    finally:
        mmsb.stop(st)
    for k in ("numpy_us", "cpu_us", "gpu_us", "gpu_rt_us", "batch_cpu_us", "batch_gpu_us",
              "flush_cpu_us", "flush_gpu_us"):
        row[k] /= 1e3                                   # ns -> µs
    row["speedup"] = row["cpu_us"] / row["gpu_us"] if row["gpu_us"] > 0 else None
    row["speedup_rt"] = row["cpu_us"] / row["gpu_rt_us"] if row["gpu_rt_us"] > 0 else None
    return row


# -- report --------------------------------------------------------------------------------

def fmt_us(x) -> str:
    if x is None:
        return "-"
    if x >= 100_000:
        return f"{x / 1000:.0f} ms"
    if x >= 10_000:
        return f"{x / 1000:.1f} ms"
    if x >= 100:
        return f"{x:.0f}"
    return f"{x:.1f}"


def table(rows) -> str:
    cells = [list(TABLE_HEADER)]
    for r in rows:
        ld, lb, lf = (r[k]["device_launches"] for k in ("launches_dense", "launches_batch", "launches_flush"))
        cells.append([fmt_size(r["size"]), fmt_us(r["numpy_us"]), fmt_us(r["cpu_us"]), fmt_us(r["gpu_us"]),
                      fmt_us(r["gpu_rt_us"]), f"{r['speedup']:.2f}" if r["speedup"] else "-",
                      f"{r['numpy_us'] / r['gpu_us']:.2f}" if r["gpu_us"] > 0 else "-",
                      fmt_us(r["batch_cpu_us"]), fmt_us(r["batch_gpu_us"]),
                      fmt_us(r["flush_cpu_us"]), fmt_us(r["flush_gpu_us"]), f"{ld}/{lb}/{lf}"])
    widths = [max(len(row[i]) for row in cells) for i in range(len(TABLE_HEADER))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.rjust(wd) if i else c.ljust(wd) for i, (c, wd) in enumerate(zip(row, widths))))
        if n == 0:
            lines.append("  ".join("-" * wd for wd in widths))
    return "\n".join(lines)


def one_core_us(r) -> float:
    """One CPU core's dense apply: the faster of mmsb's CPU page and the NumPy peer."""
    return min(r["cpu_us"], r["numpy_us"])


def budgets(rows, sim: bool) -> list[dict]:
    """The GPU budgets of docs/PERFORMANCE.md against the rows: [{name, budget, measured, verdict}]."""
    out = []
    by_size = {r["size"]: r for r in rows}
    # 1. fixed cost of one flush: a 1-byte delta to the smallest page measured
    sizes = sorted(by_size)
    f = by_size[sizes[0]]["flush_gpu_us"] if sizes else None
    if f is None:
        measured = None
    else:
        measured = f"{f:.1f} us on a {fmt_size(sizes[0])} page"
        if len(sizes) > 1:
            big = by_size[sizes[-1]]["flush_gpu_us"]
            measured += f" ({big:.1f} us on a {fmt_size(sizes[-1])} page)"
    out.append({"name": "GPU fixed cost of one flush (1-byte delta: stage, launch, sync)",
                "budget": f"<= {BUDGET_FLUSH_US:g} us", "measured": measured,
                "met": None if sim or f is None else f <= BUDGET_FLUSH_US})
    # 2. crossover: smallest page size from which (at every larger size too) the resident GPU
    # dense apply beats one CPU core: the faster of mmsb's CPU apply and the NumPy peer, both
    # single-threaded. Missed when the GPU loses at a page of 256 KiB or more.
    cross = None
    for s in reversed(sizes):
        if by_size[s]["gpu_us"] >= one_core_us(by_size[s]):
            break
        cross = s
    if cross is None:
        measured = "the GPU does not beat the CPU at the largest size measured" if sizes else None
        met = False if sizes and sizes[-1] >= BUDGET_CROSSOVER else None
    else:
        measured = f"from a {fmt_size(cross)} page on ({by_size[cross]['dense_delta_bytes']} bytes masked)"
        prev = [s for s in sizes if s < cross]
        met = True if cross <= BUDGET_CROSSOVER else (False if prev and prev[-1] >= BUDGET_CROSSOVER else None)
    out.append({"name": "GPU resident dense apply beats one CPU core (crossover page size)",
                "budget": f"<= {fmt_size(BUDGET_CROSSOVER)}", "measured": measured,
                "met": None if sim else met})
    # 3. speed-up at 256 MiB
    r = by_size.get(BUDGET_SPEEDUP_SIZE)
    x = None if r is None else one_core_us(r) / r["gpu_us"]
    out.append({"name": f"GPU resident dense apply / one CPU core at {fmt_size(BUDGET_SPEEDUP_SIZE)}",
                "budget": f">= {BUDGET_SPEEDUP:g}x",
                "measured": None if r is None else
                f"{x:.2f}x (mmsb cpu {r['speedup']:.2f}x, numpy {r['numpy_us'] / r['gpu_us']:.2f}x)",
                "met": None if sim or r is None else x >= BUDGET_SPEEDUP})
    for b in out:
        b["verdict"] = ("not judged (simulator)" if sim else
                        "not measured" if b["measured"] is None else
                        "inconclusive" if b["met"] is None else "MET" if b["met"] else "MISSED")
    return out


def header_lines(mmsb, dev_name, sim, args) -> list[str]:
    import numba

    try:
        from importlib.metadata import version
        ncuda = version("numba-cuda")
    except Exception:  # noqa: BLE001 - a version string is only informative
        ncuda = "?"
    deltas = SIM_BATCH_DELTAS if sim else BATCH_DELTAS
    mask = f"random {MASK_RUN}-byte runs" if args.mask == "runs" else "random single bytes (worst case for CPU branches)"
    lines = [
        f"mmsb device benchmark: {dev_name}"
        + ("  [NUMBA_ENABLE_CUDASIM=1: SIMULATOR, timings are meaningless]" if sim else ""),
        (f"mmsb {mmsb.__version__}, numpy {np.__version__}, numba {numba.__version__}, numba-cuda {ncuda}, "
         f"python {platform.python_version()}, {os.cpu_count()} CPUs"),
        ("states: mmsb.start(gpu=True, log=False) for every timed call: the log costs the same on both "
         "sides and would hide the device's share"),
        ("each size: one page on the CPU and one on the GPU; same deltas on both; query_page of the GPU page "
         "checked byte for byte against the CPU page (and NumPy) after every phase"),
        "figures: median microseconds per call, warm-up first; every Delta / DeltaBatch built before its timer",
        ("  numpy = np.copyto(page, payload, where=mask); cpu / gpu = apply_delta(Delta.dense(...)), two payloads "
         "alternating (gpu: device resident, the call syncs)"),
        f"  mask: ~half the bytes, {mask}",
        "  gpu rt = the gpu call + query_page to the host; x cpu, x numpy = the gpu's speed-up: cpu / gpu, numpy / gpu",
        (f"  batch = apply_batch of {deltas} sparse deltas of {BATCH_WIDTH} B spread over the page; "
         "flush = a 1-byte sparse apply_delta (fixed cost of one commit)"),
        "  launches d/b/f = stats()['device_launches'] added by one gpu dense / batch / flush call",
    ]
    return lines


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    t_start = time.perf_counter()
    sim = os.environ.get("NUMBA_ENABLE_CUDASIM", "") not in ("", "0")
    try:
        import mmsb
        import mmsb.gpu as mgpu
    except ImportError as e:
        print(f"gpu_bench: this mmsb has no device layer (import mmsb.gpu failed: {e})", file=sys.stderr)
        return 2
    if not mgpu.available():
        print("gpu_bench: no CUDA device (mmsb.gpu.available() is False). Run it on a machine with an "
              "NVIDIA GPU, or with NUMBA_ENABLE_CUDASIM=1 to check the script on numba's simulator.",
              file=sys.stderr)
        return 2
    sim = sim or bool(getattr(mgpu, "simulated", lambda: False)())
    dev_name = mgpu.device_name() or "unknown device"
    if sim and "DEVICE_ARENA_INITIAL_BYTES" in getattr(mmsb.config, "_DEFAULTS", {}):
        # the simulator zeroes a new device arena one Python thread per byte: start it small
        mmsb.config.set(DEVICE_ARENA_INITIAL_BYTES=SIM_ARENA_BYTES)
    for line in header_lines(mmsb, dev_name, sim, args):
        print(line)
    print(flush=True)
    rows, skipped = [], []
    for size in args.sizes:
        if time.perf_counter() - t_start > DEADLINE_S:
            skipped.append(size)
            continue
        sampler = Sampler(size, args.quick, sim, args.repeat)
        t0 = time.perf_counter()
        try:
            row = bench_size(mmsb, size, sampler, args.mask)
        except Mismatch as e:
            print(f"\ngpu_bench: MISMATCH, aborting: {e}", file=sys.stderr)
            return 1
        except mmsb.DeviceUnavailableError as e:
            print(f"gpu_bench: no device: {e}", file=sys.stderr)
            return 2
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        print(f"  {fmt_size(size)}: checked, {row['samples']} samples per dense figure, {row['seconds']:.1f} s",
              flush=True)
    print()
    print(table(rows))
    if skipped:
        print(f"not run (past the {DEADLINE_S:.0f} s deadline): {', '.join(fmt_size(s) for s in skipped)}")
    print()
    b = budgets(rows, sim)
    print("budgets (docs/PERFORMANCE.md; one CPU core = the faster of cpu and numpy, both single-threaded):")
    for x in b:
        print(f"  {x['verdict']:<22} {x['name']}: budget {x['budget']}, measured {x['measured'] or '-'}")
    total = time.perf_counter() - t_start
    print(f"\nGPU results matched the CPU byte for byte at every size. Total {total:.1f} s.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": dev_name, "simulator": sim, "mmsb": mmsb.__version__, "log": False,
                       "mask": args.mask, "batch": {"deltas": SIM_BATCH_DELTAS if sim else BATCH_DELTAS, "width": BATCH_WIDTH},
                       "sizes": args.sizes, "rows": rows, "not_run": skipped, "budgets": b,
                       "seconds": total}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
