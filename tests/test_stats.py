"""State.stats(): every counter against an independent count (a model of the graph, the log's
own records, the sampling rule), and a pooled state reporting what a fresh one does."""

import numpy as np
import pytest

import mmsb

SIZE = 16


class Model:
    """Pages as bytes; a derived page is recomputed when a parent changed in this commit (in
    topological order) and changes when the result differs from its bytes."""

    def __init__(self, names):
        self.pages = {n: bytes(SIZE) for n in names}
        self.rules = {}   # child -> (parents, fn), in topological order of insertion
        self.recomputed = self.deltas = self.cascades = self.written = 0

    def _apply(self, name, data):
        if data == self.pages[name]:
            return False
        self.written += sum(x != y for x, y in zip(data, self.pages[name]))
        self.pages[name] = data
        self.deltas += 1
        return True

    def bind(self, child, parents, fn):
        self.rules[child] = (parents, fn)
        self.cascades += 1
        self.recomputed += 1
        self._apply(child, fn(*[self.pages[p] for p in parents]))

    def write(self, name, data):
        if not self._apply(name, data):
            return
        if self.rules:
            self.cascades += 1
        changed = {name}
        for child, (parents, fn) in self.rules.items():
            if changed.intersection(parents):
                self.recomputed += 1
                if self._apply(child, fn(*[self.pages[p] for p in parents])):
                    changed.add(child)


def _sum(*ps):
    return bytes(int(sum(col)) & 0xFF for col in zip(*ps))


def _copy(p):
    return p


def test_counters_follow_a_model_of_a_diamond():
    st = mmsb.start()
    names = "abcde"
    pages = dict(zip(names, (st.create_page(SIZE) for _ in names)))
    model = Model(names)
    # a -> b, a -> c (copies), d = b + c (wraps: 128 + 128 == 0 == 0 + 0), e = copy of d
    for child, parents, fn in [("b", "a", _copy), ("c", "a", _copy), ("d", "bc", _sum), ("e", "d", _copy)]:
        if fn is _copy:
            st.register_passthrough(pages[child], pages[parents[0]], writable=True)  # b is written directly
        else:
            st.register_recompute(pages[child], [pages[p] for p in parents], "sum")
        model.bind(child, list(parents), fn)
    rng = np.random.default_rng(7)
    for _ in range(60):
        target = "a" if rng.random() < 0.7 else "b"
        data = rng.choice([0, 128, 1], SIZE).astype(np.uint8)
        st.update_page(pages[target], data)
        model.write(target, data.tobytes())
    s = st.stats()
    assert {n: st.query_page(p).tobytes() for n, p in pages.items()} == model.pages
    assert s["pages_recomputed"] == model.recomputed
    assert s["cascades"] == model.cascades
    assert s["deltas"] == model.deltas == len(st.log)
    assert s["bytes_written"] == model.written
    assert s["pages_skipped"] == 0  # the cascade queues a page only when a parent changed
    mmsb.stop(st)


def test_bytes_written_counts_what_each_logged_delta_carries():
    st = mmsb.start()
    pg = st.create_page(40)
    st.update_page(pg, np.arange(40, dtype=np.uint8))                    # 39 bytes change (byte 0 stays 0)
    st.apply_delta(mmsb.Delta.sparse(pg, [0, 1, 2], [9, 1, 9]))          # carries 3 entries, 2 change
    mask = np.zeros(40, bool)
    mask[5:12] = True
    st.apply_delta(mmsb.Delta.dense(pg, mask, np.full(40, 200, np.uint8)))  # 7 masked bytes
    ids = st.create_pages(3, 8)
    st.apply_batch(mmsb.DeltaBatch.from_sparse(ids, [0, 2, 2, 5], [0, 1, 3, 4, 5], [1, 1, 2, 2, 2]))
    carried = sum(d.indices.size for d in st.log)
    assert st.stats()["bytes_written"] == carried == 39 + 3 + 7 + 2 + 3
    mmsb.stop(st)


def test_without_a_log_bytes_written_is_unknown_and_the_rest_still_counts():
    st = mmsb.start(log=False)
    a, b = st.create_page(8), st.create_page(8)
    st.register_passthrough(b, a)
    st.update_page(a, np.ones(8, np.uint8))
    s = st.stats()
    assert s["bytes_written"] is None and s["log_bytes"] == 0
    assert (s["cascades"], s["pages_recomputed"], s["deltas"]) == (2, 2, 2)
    assert s["syncs"] == 0 and s["device_launches"] == 0
    mmsb.stop(st)


def test_epoch_cut_off_is_counted_when_a_reached_page_has_no_moved_parent():
    # an ordinary commit never queues such a page (it is queued because a parent moved), so
    # this drives the cascade with a seed whose epoch did not move, as a stale seed would
    st = mmsb.start()
    a, b, c = (st.create_page(8) for _ in range(3))
    st.register_passthrough(b, a)
    st.register_passthrough(c, b)
    before = st.stats()
    core = st._c
    with core.lock:
        core.prop.cascade(st, core, st._log, np.array([a._slot], np.int64), np.array([core.lsn], np.int64))
    after = st.stats()
    assert after["pages_skipped"] - before["pages_skipped"] == 1          # b; c is never reached
    assert after["pages_recomputed"] == before["pages_recomputed"]
    assert after["cascades"] == before["cascades"] + 1 and after["lsn"] == before["lsn"]
    mmsb.stop(st)


def test_latency_is_sampled_one_write_call_in_16():
    st = mmsb.start()
    assert st.stats()["write_time_samples"] == 0 and st.stats()["write_time_p50_ns"] is None
    pg, child = st.create_page(8), st.create_page(8)
    st.register_passthrough(child, pg)  # every commit moves the LSN by 2: an LSN rule samples unevenly
    rng = np.random.default_rng(1)
    timed = calls = 0
    for i in range(200):
        if i % 10 == 9:
            with st.transaction():                       # writes inside a transaction: never timed
                st.update_page(pg, rng.integers(0, 256, 8, dtype=np.uint8))
            calls += 1
            continue
        if i % 7 == 0:
            got = st.apply_batch(mmsb.DeltaBatch.from_sparse([pg.id], [0, 1], [i % 8], [i]))
            made = bool(got[0])
        elif i % 5 == 0:
            made = st.update_page(pg, st.query_page(pg)) is not None   # no change: counted, not timed
        else:
            made = st.update_page(pg, rng.integers(0, 256, 8, dtype=np.uint8)) is not None
        timed += made and calls % 16 == 0
        calls += 1
    s = st.stats()
    assert timed > 0 and s["write_time_samples"] == timed
    p50, p99, top = s["write_time_p50_ns"], s["write_time_p99_ns"], s["write_time_max_ns"]
    assert 0 < p50 <= p99 <= top
    assert all((v + 1) & v == 0 for v in (p50, p99, top))   # bucket upper edges: 2**k - 1
    mmsb.stop(st)


def _busy(st, graph=True):
    a, b, c = (st.create_page(SIZE) for _ in range(3))
    if graph:
        st.register_passthrough(b, a)
        st.register_recompute(c, [a, b], "sum")
    for v in range(40):
        st.update_page(a, np.full(SIZE, v, np.uint8))
    st.update_page(a, st.query_page(a))  # no change: a write call counted (and maybe timed), no LSN


# without a graph the stop takes the reset's common case, with one the general one
@pytest.mark.parametrize("graph", [True, False])
@pytest.mark.parametrize("log", [None, False])
def test_a_pooled_state_reports_fresh_stats(log, graph):
    fresh = mmsb.State(log=log)
    _busy(fresh, graph)
    want = fresh.stats()
    fresh.close()
    st = mmsb.start(log=log)
    _busy(st, graph)
    mmsb.stop(st)
    again = mmsb.start(log=log)
    zero = again.stats()
    assert (zero["cascades"], zero["pages_recomputed"], zero["pages_skipped"], zero["write_time_samples"]) == (0,) * 4
    assert (zero["lsn"], zero["deltas"], zero["log_bytes"]) == (0, 0, 0)
    _busy(again, graph)
    got = again.stats()
    assert got["write_time_samples"] == want["write_time_samples"] > 0
    skip = ("arena", "rows", "time_p", "time_max")
    assert {k: v for k, v in got.items() if not any(w in k for w in skip)} == \
           {k: v for k, v in want.items() if not any(w in k for w in skip)}
    mmsb.stop(again)


def test_reset_stats_counts_afresh_and_leaves_the_state_alone(tmp_path):
    st = mmsb.start(log=str(tmp_path / "l"))
    a, b = st.create_page(SIZE), st.create_page(SIZE)
    st.register_passthrough(b, a)
    for v in (1, 2, 3):
        st.update_page(a, np.full(SIZE, v, np.uint8))
    before = st.stats()
    assert before["cascades"] and before["bytes_written"] and before["syncs"]
    st.reset_stats()
    after = st.stats()
    for key in ("bytes_written", "cascades", "pages_recomputed", "pages_skipped", "syncs", "write_time_samples"):
        assert after[key] == 0, key
    for key in ("pages", "page_bytes", "lsn", "deltas", "log_bytes"):
        assert after[key] == before[key], key
    st.update_page(a, np.full(SIZE, 9, np.uint8))
    again = st.stats()
    # one update of a whole page, copied to b: twice the page's bytes, one cascade, one sync
    assert (again["bytes_written"], again["cascades"], again["pages_recomputed"], again["syncs"]) == (2 * SIZE, 1, 1, 1)
    st.close()
