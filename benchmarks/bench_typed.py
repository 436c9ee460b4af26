"""Typed pages beside byte pages and beside the NumPy a user would write.

`TypedUpdate` writes a 1 KiB page 1000 times, as bytes (uint8 buffers, the path every budget is
measured on) and as 128 float64 values: typed pages must not slow the byte path (the hop and
batch suites in bench_core/bench_propagation say so within 5 %), and a typed write costs its
conversion on top. `RowWrite` writes one row of a (128, 8) float64 page (`at=`), and `RowsWrite`
4096 pages of 16 float64 in one `update_pages` call; each `Numpy*` class does the same with a
dict of float64 arrays, a diff and a list log (mmsb.profile.numpy_update on the bytes). Bodies
loop INNER times where one call is sub-millisecond (see bench_core's docstring).
"""

import numpy as np

import mmsb
from mmsb.profile import numpy_update

from .common import INNER, PAGE_SIZE

KINDS = ["bytes", "float64"]
ROWS, COLS = 128, 8          # a 1 KiB page of float64 rows
MANY, WIDTH = 4096, 16       # update_pages: pages x float64 per page


def _buffers(kind):
    g = np.random.default_rng(7)
    a, b = g.random(PAGE_SIZE // 8), g.random(PAGE_SIZE // 8)
    if kind == "bytes":
        return a.view(np.uint8), b.view(np.uint8)
    return a, b


class TypedUpdate:
    """1000 update_page calls on one 1 KiB page, alternating two buffers (ms per call = µs per write)."""

    params = [KINDS]
    param_names = ["page"]

    def setup(self, kind):
        self.a, self.b = _buffers(kind)
        self.st = mmsb.start()
        self.pg = self.st.create_page(PAGE_SIZE) if kind == "bytes" else self.st.create_page(
            shape=PAGE_SIZE // 8, dtype=np.float64)
        self.st.update_page(self.pg, self.b)

    def teardown(self, kind):
        mmsb.stop(self.st)

    def time_1000_updates(self, kind):
        update, pg, a, b = self.st.update_page, self.pg, self.a, self.b
        for _ in range(INNER // 2):
            update(pg, a)
            update(pg, b)


class NumpyTypedUpdate:
    """Peer of TypedUpdate: the page's bytes diffed, written and logged (numpy_update)."""

    params = [KINDS]
    param_names = ["page"]

    def setup(self, kind):
        a, b = _buffers(kind)
        self.a, self.b = a.view(np.uint8), b.view(np.uint8)
        self.pages, self.epochs, self.log = {0: np.zeros(PAGE_SIZE, np.uint8)}, {0: 0}, []

    def time_1000_updates(self, kind):
        pages, epochs, lg, a, b = self.pages, self.epochs, self.log, self.a, self.b
        for _ in range(INNER // 2):
            numpy_update(pages, epochs, lg, 0, a.view(np.uint8))
            numpy_update(pages, epochs, lg, 0, b.view(np.uint8))


class RowWrite:
    """1000 single-row writes (`update_page(pg, row, at=i)`) into a (128, 8) float64 page."""

    def setup(self):
        self.st = mmsb.start()
        self.pg = self.st.create_page(shape=(ROWS, COLS), dtype=np.float64)
        self.rows = np.random.default_rng(3).random((INNER, COLS))
        self.st.update_page(self.pg, self.rows[0], at=0)

    def teardown(self):
        mmsb.stop(self.st)

    def time_1000_row_writes(self):
        update, pg, rows = self.st.update_page, self.pg, self.rows
        for i in range(INNER):
            update(pg, rows[i], at=i % ROWS)


class NumpyRowWrite:
    """Peer of RowWrite: the row's changed bytes found, written and logged by hand."""

    def setup(self):
        self.page = np.zeros((ROWS, COLS))
        self.rows = np.random.default_rng(3).random((INNER, COLS))
        self.log, self.epoch = [], 0

    def time_1000_row_writes(self):
        page, rows, log = self.page, self.rows, self.log
        flat = page.reshape(-1).view(np.uint8)
        for i in range(INNER):
            r = i % ROWS
            new = rows[i].view(np.uint8)
            at = r * COLS * 8
            changed = np.flatnonzero(flat[at:at + new.size] != new)
            if changed.size:
                flat[at + changed] = new[changed]
                log.append((0, at + changed, new[changed]))
                self.epoch += 1


class RowsWrite:
    """One update_pages call writing 4096 float64 pages of 16 values from a 2-D array (a batch)."""

    def setup(self):
        self.st = mmsb.start()
        self.ids = np.array([p.id for p in self.st.create_pages(MANY, shape=WIDTH, dtype=np.float64,
                                                                 handles=True)])
        g = np.random.default_rng(5)
        self.a, self.b = g.random((MANY, WIDTH)), g.random((MANY, WIDTH))
        self.st.update_pages(self.ids, self.b)

    def teardown(self):
        mmsb.stop(self.st)

    def time_update_pages(self):
        self.st.update_pages(self.ids, self.a)
        self.st.update_pages(self.ids, self.b)


class NumpyRowsWrite:
    """Peer of RowsWrite: a dict of float64 pages, each row diffed, written and logged in a loop."""

    def setup(self):
        self.pages = {i: np.zeros(WIDTH * 8, np.uint8) for i in range(MANY)}
        self.epochs = dict.fromkeys(range(MANY), 0)
        g = np.random.default_rng(5)
        self.a, self.b = g.random((MANY, WIDTH)).view(np.uint8), g.random((MANY, WIDTH)).view(np.uint8)
        self.log = []

    def time_update_pages(self):
        pages, epochs, lg = self.pages, self.epochs, self.log
        for rows in (self.a, self.b):
            for i in range(MANY):
                numpy_update(pages, epochs, lg, i, rows[i])
