"""The twin harness of test_gpu.py: a state with device pages and an all-CPU state, fed the same
calls and compared on everything a user can see, plus numpy models of the built-in ops."""
from itertools import zip_longest

import numpy as np
import hypothesis.strategies as hs

import mmsb
from test_propagation import make_mix, njit_mix  # noqa: F401 - the propagation tests' user recomputes, for test_gpu

OPS = ["passthrough", "sum", "min", "max", "and", "or", "xor", "minplus", "orand"]
DTYPES = ["uint8", "int16", "uint32", "int64", "float32", "float64"]
EVENTS = ("page_changed", "delta_applied", "cascade_done", "page_stale")
BYTE = hs.one_of(hs.sampled_from([0, 1, 255]), hs.integers(0, 255))
# bytes whose 7 low bits stay below 0x78 keep every float32/float64 they form finite and far from
# overflow, so float ops compare bytes without NaN payloads deciding the outcome
SAFE_BYTE = hs.builds(lambda low, sign: low | sign, hs.integers(0, 0x77), hs.sampled_from([0, 0x80]))
# exact in float32 and float64 and in their sums: the twin and the device must agree bit for bit
FLOATS = np.array([0.0, 0.5, 1.0, -3.0, 1024.0, 2.25, -0.0])


def plain(x):
    """An event argument as plain data (ids arrays as lists), so that events compare by value."""
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, dict):
        return dict(x)
    return x


def delta_key(d):
    """Everything a delta says, as plain data."""
    return (d.lsn, d.page_id, d.epoch, d.kind, tuple(d.causes), np.asarray(d.indices).tolist(),
            np.asarray(d.values).tolist())


def same_delta(g, c):
    """A Delta from the device state against the twin's (None for None)."""
    if c is None:
        assert g is None, g
        return
    assert g is not None and g == c, (g, c)
    assert delta_key(g) == delta_key(c)
    assert np.array_equal(g.mask, c.mask) and np.array_equal(g.payload, c.payload)


def history_of(st, pid):
    h = st.history(pid)
    return [delta_key(d) for d in h], h.hops, h.truncated


class Twin:
    """A state with device pages (.g) and its all-CPU twin (.c), fed the same calls."""

    def __init__(self):
        self.g = mmsb.State()
        self.c = mmsb.State(gpu=False, tag=self.g.tag)  # same calls, same ids
        self.loc, self.size, self.seen = {}, {}, ([], [])
        for st, seen in zip((self.g, self.c), self.seen):
            for name in EVENTS:
                st.subscribe(name, lambda *a, seen=seen, name=name: seen.append((name, *map(plain, a))))

    def close(self):
        self.g.close()
        self.c.close()

    def page(self, size, location="gpu"):
        pg, twin = self.g.create_page(size, location=location), self.c.create_page(size)
        assert (pg.id, pg.size, pg.location, twin.location) == (twin.id, size, location, "cpu")
        self.loc[pg.id], self.size[pg.id] = location, size
        return pg.id

    def delete(self, pid):
        self.both(lambda st: st.delete_page(pid, dependents="unbind"))
        del self.loc[pid], self.size[pid]
        self.check()

    def both(self, call):
        """call(state) on each side: the same result type, or the same mmsb error."""
        out = []
        for st in (self.g, self.c):
            try:
                out.append(call(st))
            except mmsb.MMSBError as err:
                out.append(err)
        assert type(out[0]) is type(out[1]), out
        return out

    def write(self, call):
        """A write on both sides; what it returns (Delta, None, LSN array, list of those) agrees."""
        g, c = self.both(call)
        for x, y in zip_longest(*(v if isinstance(v, list) else [v] for v in (g, c))):
            if isinstance(y, np.ndarray):
                assert x.dtype == y.dtype == np.int64 and x.tolist() == y.tolist()
            elif not isinstance(y, Exception):
                same_delta(x, y)
        self.check()
        return g

    def check(self):
        g, c = self.g, self.c
        ids = c.page_ids().tolist()
        assert g.page_ids().tolist() == ids and g.lsn == c.lsn
        for pid in ids:
            assert bytes(g.query_page(pid)) == bytes(c.query_page(pid)), pid
            assert g.page(pid).epoch == c.page(pid).epoch, pid
            assert g.page(pid).location == self.loc[pid]
            assert history_of(g, pid) == history_of(c, pid), pid
        assert len(g.log) == len(c.log)
        for x, y in zip(g.log, c.log):
            same_delta(x, y)
        assert g.state_hash() == c.state_hash()
        # written pages may be reported in any order (README); the rest must match exactly
        norm = [[(e[0], sorted(e[1])) if e[0] == "page_changed" else e for e in s] for s in self.seen]
        assert norm[0] == norm[1]
        for s in self.seen:
            s.clear()
        assert g.stats()["device_pages"] == sum(loc == "gpu" for loc in self.loc.values())

    def check_replay(self, to_lsn=None):
        """The device state's log, replayed, gives the twin's state (and the twin's own replay)."""
        got, want = self.g.replay(to_lsn), self.c.replay(to_lsn)
        try:
            assert got.state_hash() == want.state_hash()
            if to_lsn is None:
                assert got.state_hash() == self.c.state_hash()
        finally:
            got.close()
            want.close()


def apply(st, w):
    """One write, described as a tuple, on state st."""
    kind, pid, *args = w
    if kind == "update":  # the same bytes as each kind of argument update_page takes
        raw = np.zeros(len(args[0]) + 1, np.uint8)
        raw[1:] = np.frombuffer(args[0], np.uint8)
        return st.update_page(pid, {"bytes": args[0], "memoryview": memoryview(args[0]), "ndarray": raw[1:].copy(),
                                    "unaligned": raw[1:]}[args[1]])
    if kind == "bad":  # refused: nothing changes on either side
        size = st.page(pid).size
        if args[0] == "offset":
            return st.apply_delta(mmsb.Delta.sparse(pid, [0, size], [1, 1]))
        if args[0] == "short":
            return st.update_page(pid, bytes(size + 1))
        return apply(st, ("batch", None, [(pid, [0], [7]), (pid, [size], [1])]))
    if kind == "sparse":
        return st.apply_delta(mmsb.Delta.sparse(pid, np.array(args[0], np.int64), np.array(args[1], np.uint8)))
    if kind == "dense":
        return st.apply_delta(mmsb.Delta.dense(pid, np.array(args[0], bool), np.array(args[1], np.uint8)))
    ws = args[0]  # "batch": pid unused, ws = [(pid, indices, values), ...]
    starts = np.cumsum([0] + [len(ix) for _, ix, _ in ws])
    return st.apply_batch(mmsb.DeltaBatch.from_sparse(
        [p for p, _, _ in ws], starts, np.array([i for _, ix, _ in ws for i in ix], np.int64),
        np.array([v for _, _, vs in ws for v in vs], np.uint8)))


def draw_sparse(data, t, pid, byte=BYTE):
    size, cur = t.size[pid], t.c.query_page(pid)
    pool = data.draw(hs.lists(hs.integers(0, size - 1), min_size=1, max_size=4), label="pool")
    idx = data.draw(hs.lists(hs.sampled_from(pool), max_size=10), label="idx")  # repeats are common
    return idx, [data.draw(hs.one_of(byte, hs.just(int(cur[i])))) for i in idx]  # some rewrite a byte


def draw_write(data, t, pids, byte=BYTE):
    pid = data.draw(hs.sampled_from(pids), label="page")
    size, cur = t.size[pid], t.c.query_page(pid)
    how = data.draw(hs.sampled_from(["update", "same", "few", "sparse", "dense", "keep", "batch", "bad"]))
    form = data.draw(hs.sampled_from(["bytes", "memoryview", "ndarray", "unaligned"]), label="form")
    if how == "update":
        return ("update", pid, bytes(data.draw(hs.lists(byte, min_size=size, max_size=size))), form)
    if how in ("same", "few"):
        new = bytearray(cur)
        for i in data.draw(hs.lists(hs.integers(0, size - 1), max_size=3 if how == "few" else 0)):
            new[i] = data.draw(byte)
        return ("update", pid, bytes(new), form)
    if how == "sparse":
        return ("sparse", pid, *draw_sparse(data, t, pid, byte))
    if how in ("dense", "keep"):  # "keep": the masked bytes already hold the payload, a no-op
        mask = data.draw(hs.lists(hs.booleans(), min_size=size, max_size=size))
        payload = cur.tolist() if how == "keep" else data.draw(hs.lists(byte, min_size=size, max_size=size))
        return ("dense", pid, mask, payload)
    if how == "bad":
        return ("bad", pid, data.draw(hs.sampled_from(["offset", "short", "batch"])))
    qs = data.draw(hs.lists(hs.sampled_from(pids), min_size=1, max_size=5), label="batch pages")
    ws = [(q, *draw_sparse(data, t, q, byte)) for q in qs]
    if data.draw(hs.booleans(), label="again"):
        ws.append(ws[0])  # the same delta twice: the second changes nothing, LSN 0
    if data.draw(hs.booleans(), label="empty"):
        ws.insert(data.draw(hs.integers(0, len(ws))), (pid, [], []))
    return ("batch", None, ws)


def picky(x):
    """A Python recompute that fails when its parent starts with 0xEE."""
    if x[0] == 0xEE:
        raise ValueError("0xEE")
    return x ^ np.uint8(0x5A)


def snapshot(st):
    return st.state_hash(), st.lsn, len(st.log), {p: bytes(st.query_page(p)) for p in st.page_ids().tolist()}




def check_mirrors(t, mirrors, lsn):
    """Sync edges: after a commit that changed the parent, the child holds the parent's bytes,
    and the child's cascade deltas name the parent's delta as their cause."""
    new = [d for d in t.c.log if d.lsn > lsn]
    for child, parent in mirrors.items():
        moved = [d.lsn for d in new if d.page_id == parent]
        if moved:
            assert bytes(t.g.query_page(child)) == bytes(t.g.query_page(parent)), (parent, child)
            assert all(d.causes == (moved[-1],) for d in new if d.page_id == child and d.causes)


def typed_bytes(rng, dtype, size):
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return rng.choice(FLOATS, size // dt.itemsize).astype(dt).view(np.uint8)
    return rng.integers(0, 256, size, dtype=np.uint8)


def expected(op, dtype, parents, weights):
    """A built-in op in numpy: element-wise over the parents viewed as dtype, integers wrapping."""
    dt = np.dtype(dtype)
    bits = np.dtype(f"u{dt.itemsize}")  # and/or/xor work on the bits, floats included
    xs = [p.view(bits if op in ("and", "or", "xor") else dt) for p in parents]
    w = [dt.type(v) for v in weights or [0] * len(xs)]
    with np.errstate(over="ignore"):
        if op in ("passthrough", "sum"):
            out = xs[0].copy()
            for x in xs[1:]:
                out = out + x
        elif op in ("min", "max"):
            out = (np.minimum if op == "min" else np.maximum).reduce(xs)
        elif op in ("and", "or", "xor"):
            out = {"and": np.bitwise_and, "or": np.bitwise_or, "xor": np.bitwise_xor}[op].reduce(xs)
        elif op == "minplus":
            out = np.minimum.reduce([(x + v).astype(dt) for x, v in zip(xs, w)])
        else:  # orand: 1 where some parent with a nonzero weight is nonzero
            out = np.logical_or.reduce([(x != 0) & (v != 0) for x, v in zip(xs, w)]).astype(dt)
    return out.astype(xs[0].dtype).view(np.uint8)


def same_values(got, want, op, dtype):
    """Bytes for bit ops; values otherwise (min/max may pick either of 0.0 and -0.0)."""
    if op in ("and", "or", "xor") or np.dtype(dtype).kind != "f":
        return bytes(got) == bytes(want)
    return np.array_equal(got.view(dtype), want.view(dtype), equal_nan=True)
