"""Shared seeds, size grids, data builders and peer helpers for the mmsb asv suite.

Everything here is deterministic (one seed) so mmsb and its NumPy peer see the same bytes.
Nothing here runs work at import: the suite is imported once per benchmark process.
"""

import os
import time

import numpy as np

# the workload builders live in mmsb.profile, so `python -m mmsb profile` and this suite
# measure one definition of each workload
from mmsb.profile import (  # noqa: F401
    BATCH_PAGES, BATCH_WIDTH, PAGE_SIZE, numpy_update, rng, sparse_batch, update_buffers,
)

INNER = 1000                       # ops per timed call for sub-µs work (see bench_core docstring)
CREATE_COUNTS = [1_000, 100_000]   # create_pages grid
BIG_PAGES = 1_000_000              # memory workload: 1 M x 1 KiB pages
WRITE_CHUNK = 65_536               # pages per batch when writing BIG_PAGES (keeps batch arrays ~1.6 MB)
RATE_REPEATS = 21                  # samples behind a track_ rate (median)

_OS_PAGE = os.sysconf("SC_PAGE_SIZE")


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


def unit(name):
    """Decorator: the unit asv shows for a track_ benchmark."""
    def mark(fn):
        fn.unit = name
        return fn
    return mark
