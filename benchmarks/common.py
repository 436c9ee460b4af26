"""Shared seeds, size grids, data builders and peer helpers for the mmsb asv suite.

Everything here is deterministic (one seed) so mmsb and its NumPy peer see the same bytes.
Nothing here runs work at import: the suite is imported once per benchmark process.
"""

import os
import time

import numpy as np

SEED = 0
PAGE_SIZE = 1024                   # 1 KiB pages, as in DESIGN.md §5
INNER = 1000                       # ops per timed call for sub-µs work (see bench_core docstring)
CREATE_COUNTS = [1_000, 100_000]   # create_pages grid
BATCH_PAGES = 4096                 # apply_batch workload: 4096 x 1 KiB pages
BATCH_WIDTH = 8                    # 8 sparse bytes per delta
BIG_PAGES = 1_000_000              # memory workload: 1 M x 1 KiB pages
WRITE_CHUNK = 65_536               # pages per batch when writing BIG_PAGES (keeps batch arrays ~1.6 MB)
RATE_REPEATS = 21                  # samples behind a track_ rate (median)

_OS_PAGE = os.sysconf("SC_PAGE_SIZE")


def rng():
    """A fresh generator on the suite's one seed (fresh each call, so order of use never matters)."""
    return np.random.default_rng(SEED)


def pretouch(*arrays):
    """Fault in every OS page of each C-contiguous array without changing its bytes.

    np.zeros memory is mapped lazily; a write per OS page here keeps page faults out of the
    timed body. Reading alone would map the shared zero page, hence the write-back.
    """
    for a in arrays:
        if a.flags.c_contiguous and a.flags.writeable and a.nbytes:
            flat = a.reshape(-1).view(np.uint8)
            flat[::_OS_PAGE] = flat[::_OS_PAGE]
    return arrays


def update_buffers(content):
    """Two 1 KiB uint8 buffers that differ from each other; the first is nonzero everywhere.

    content "random": independent random bytes (about 1020 bytes differ);
    content "10 bytes changed": the second is the first with exactly 10 bytes flipped.
    """
    g = rng()
    a = g.integers(1, 256, PAGE_SIZE, dtype=np.uint8)
    if content == "random":
        b = g.integers(1, 256, PAGE_SIZE, dtype=np.uint8)
        b[b == a] ^= 0xFF      # every byte differs, so the diff size is exactly known
    elif content == "10 bytes changed":
        b = a.copy()
        where = g.choice(PAGE_SIZE, 10, replace=False)
        b[where] ^= g.integers(1, 256, 10, dtype=np.uint8)   # xor with nonzero: always a change
    else:
        raise ValueError(content)
    return a, b


def sparse_batch(n_pages=BATCH_PAGES, width=BATCH_WIDTH, page_size=PAGE_SIZE):
    """Columnar arrays for one `width`-byte sparse delta per page, in two flavours.

    Returns (starts, indices, values_a, values_b). Delta i owns indices[starts[i]:starts[i+1]];
    its offsets are distinct (one per page_size/width stripe) so no byte is written twice, and
    values_b differs from values_a at every offset, so alternating the two always changes bytes.
    values_a is nonzero, so it also changes a fresh (zero) page.
    """
    g = rng()
    stripe = page_size // width
    offs = np.arange(width, dtype=np.int64) * stripe + g.integers(0, stripe, (n_pages, width))
    indices = offs.reshape(-1)
    values_a = g.integers(1, 256, indices.size, dtype=np.uint8)
    values_b = values_a ^ g.integers(1, 256, indices.size, dtype=np.uint8)
    starts = np.arange(n_pages + 1, dtype=np.int64) * width
    return starts, indices, values_a, values_b


def touch_batch(n_pages, offset=0):
    """One 1-byte delta per page (byte 0 := 1): enough to make a whole 1 KiB page resident."""
    starts = np.arange(n_pages + 1, dtype=np.int64)
    indices = np.full(n_pages, offset, dtype=np.int64)
    values = np.ones(n_pages, dtype=np.uint8)
    return starts, indices, values


def resident_bytes():
    """This process's resident set size now, in bytes (Linux /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _OS_PAGE


def median_rate(fn, items, repeats=RATE_REPEATS):
    """items / median seconds of `fn()` over `repeats` perf_counter samples (items per second)."""
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return items / float(np.median(samples))


def numpy_update(pages, epochs, log, pid, data):
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


def unit(name):
    """Decorator: the unit asv shows for a track_ benchmark."""
    def mark(fn):
        fn.unit = name
        return fn
    return mark
