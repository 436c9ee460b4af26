"""Writers on many threads: no lost write, every LSN used once, LSN order == apply order."""
import threading
from types import SimpleNamespace

import numpy as np

import mmsb
from naive import retag

N, M = 4, 500


def run_threads(work):
    """Run work(t) on N threads started together; re-raise the first failure; return results."""
    barrier = threading.Barrier(N)
    results, errors = [None] * N, []

    def body(t):
        try:
            barrier.wait(timeout=30)
            results[t] = work(t)
        except BaseException as exc:  # noqa: BLE001 - reported on the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(t,), daemon=True) for t in range(N)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not any(th.is_alive() for th in threads), "a writer thread hung (deadlock?)"
    if errors:
        raise errors[0]
    return results


def sparse(page, i, v):
    return mmsb.Delta.sparse(page, np.array([i], np.int64), np.array([v], np.uint8))


def check_lsns(st, returned, total):
    """Every returned LSN is one of 1..total, each once; each thread sees its own in order."""
    flat = [d.lsn for per_thread in returned for d in per_thread]
    assert sorted(flat) == list(range(1, total + 1))
    for per_thread in returned:
        lsns = [d.lsn for d in per_thread]
        assert lsns == sorted(lsns), "a thread's later write got an earlier LSN"
    assert st.lsn == total
    log = list(st.log)
    assert [d.lsn for d in log] == list(range(1, total + 1))
    return log


def check_page_log(log, pid, count):
    """The page's deltas, in log order, carry epochs 1, 2, 3, ... with rising LSNs."""
    mine = [d for d in log if d.page_id == pid]
    assert len(mine) == count
    assert all(a.lsn < b.lsn for a, b in zip(mine, mine[1:]))
    assert [d.epoch for d in mine] == list(range(1, count + 1))
    return mine


def value(t, k):
    return (t * M + k) % 255 + 1  # never 0, so every write changes its byte


def test_distinct_pages_update_and_delta():
    st = mmsb.State()
    try:
        pids = st.create_pages(N, M).tolist()

        def work(t):
            pid, local, out = pids[t], np.zeros(M, np.uint8), []
            for k in range(M):
                local[k] = value(t, k)
                if k % 2:
                    out.append(st.apply_delta(sparse(pid, k, value(t, k))))
                else:
                    out.append(st.update_page(pid, local.copy()))
                assert out[-1] is not None and out[-1].page_id == pid and out[-1].epoch == k + 1
            return out

        returned = run_threads(work)
        log = check_lsns(st, returned, N * M)
        for t, pid in enumerate(pids):
            assert st.page(pid).epoch == M
            assert st.query_page(pid).tolist() == [value(t, k) for k in range(M)]
            assert [d.lsn for d in check_page_log(log, pid, M)] == [d.lsn for d in returned[t]]
    finally:
        st.close()


def test_shared_page_sparse_and_batch():
    st = mmsb.State()
    try:
        pid = st.create_page(N * M).id

        def work(t):
            out = []
            for k in range(M):
                pos, v = t * M + k, value(t, k)
                if k % 3 == 2:  # a one-delta batch takes the same path under the lock
                    b = mmsb.DeltaBatch.from_sparse(np.array([pid], np.int64), np.array([0, 1], np.int64),
                                                    np.array([pos], np.int64), np.array([v], np.uint8))
                    lsn = int(st.apply_batch(b)[0])
                    out.append(SimpleNamespace(lsn=lsn))
                else:
                    d = st.apply_delta(sparse(pid, pos, v))
                    # only this page is written, so its epoch must move in step with the LSN
                    assert d.epoch == d.lsn
                    out.append(d)
            return out

        returned = run_threads(work)
        log = check_lsns(st, returned, N * M)
        mine = check_page_log(log, pid, N * M)
        assert all(d.epoch == d.lsn for d in mine)
        assert st.page(pid).epoch == N * M
        want = [value(t, k) for t in range(N) for k in range(M)]
        assert st.query_page(pid).tolist() == want
        # each logged delta is exactly one thread's one write
        writes = sorted((int(d.indices[0]), int(d.values[0])) for d in mine)
        assert writes == [(i, v) for i, v in enumerate(want)]
    finally:
        st.close()


def content(t, k, size=16):
    c = np.full(size, t + 1, np.uint8)
    c[1], c[2] = k & 0xFF, k >> 8
    return c


def test_shared_page_full_writes_are_atomic():
    """update_page diffs against the page as it is when the write applies, under the lock.

    Each write is a unique full-page pattern.  Replaying the log, the page must hold exactly one
    written pattern after every delta; a diff taken before another thread's write would leave a
    mixture.  No write is lost: each is a delta, since each differs from every other pattern.
    """
    st = mmsb.State()
    try:
        pid = st.create_page(16).id

        def work(t):
            out = []
            for k in range(M):
                d = st.update_page(pid, content(t, k))
                assert d is not None and d.epoch == d.lsn
                out.append(d)
            return out

        returned = run_threads(work)
        log = check_lsns(st, returned, N * M)
        mine = check_page_log(log, pid, N * M)
        page, seen = np.zeros(16, np.uint8), []
        for d in mine:
            page[np.asarray(d.indices, np.int64)] = np.asarray(d.values, np.uint8)
            t, k = int(page[0]) - 1, int(page[1]) | int(page[2]) << 8
            assert 0 <= t < N and np.array_equal(page, content(t, k)), f"mixed bytes at lsn {d.lsn}"
            seen.append((t, k))
        assert sorted(seen) == [(t, k) for t in range(N) for k in range(M)]
        for t in range(N):
            assert [k for tt, k in seen if tt == t] == list(range(M)), "a thread's writes reordered"
        assert np.array_equal(st.query_page(pid), page)
    finally:
        st.close()


def test_concurrent_creates_grow_the_table_without_losing_pages():
    """Creates on all threads push the page table past its first rows while others write."""
    st = mmsb.State()
    try:
        per = 400  # N * per > 1024 initial table rows

        def work(t):
            mine = []
            for k in range(per):
                pg = st.create_page(1 + (t + k) % 20) if k % 2 else st.page(int(st.create_pages(1, 9)[0]))
                st.apply_delta(sparse(pg, 0, t + 1))
                mine.append((pg.id, t + 1))
            return mine

        made = [x for per_thread in run_threads(work) for x in per_thread]
        assert sorted(pid for pid, _ in made) == [retag(i, st.tag) for i in range(N * per)]
        assert st.page_ids().tolist() == [retag(i, st.tag) for i in range(N * per)]
        for pid, v in made:
            assert st.page(pid).epoch == 1 and st.query_page(pid)[0] == v
            assert not st.query_page(pid)[1:].any()
        assert st.lsn == N * per and [d.lsn for d in st.log] == list(range(1, N * per + 1))
    finally:
        st.close()
