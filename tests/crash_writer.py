"""Writer for the crash tests (``tests/test_crash.py``): a deterministic history, acknowledged line by line.

:func:`history` performs a seeded pseudo-random sequence of commits on a
state (page creation, bindings with cascades, ``update_page``,
``apply_delta``, ``apply_batch``, transactions, scratch pages created and
deleted) and yields after each call returns. The same seed gives the same
commits on any state, so the test re-runs it in memory as the model of what
a recovered log must hold.

Run as a script it writes that history to a file log and prints one line per
acknowledged commit, flushed at once::

    ACK <step> <lsn> <page id> <crc32 of that page's bytes>

``python crash_writer.py LOG SEED SYNC`` writes one history (forever, until
killed). ``python crash_writer.py --serve`` imports mmsb once, warms its
kernels, then for each ``LOG SEED SYNC`` line on stdin forks a writer,
prints ``START <pid>``, waits for it (the test kills it with SIGKILL) and
prints ``EXIT <pid> <status>``; that keeps one Python start-up for many runs.
With ``SYNC`` = ``group`` or ``none`` a step is acknowledged only after
``st.flush()`` returned (every few steps); other steps print ``DID`` lines.
"""

from __future__ import annotations

import os
import sys
import tempfile
import zlib
from collections.abc import Iterator

import numpy as np

import mmsb

PAGE = 48
SOURCES = 4
MAX_SCRATCH = 3
FLUSH_EVERY = 5
TRUNCATE_EVERY = 7


def crc(st: mmsb.State, pid: int) -> int:
    return zlib.crc32(st.query_page(pid).tobytes())


def history(st: mmsb.State, seed: int) -> Iterator[tuple[str, int]]:
    """Perform the history of ``seed`` on ``st``; yield (what, a page) after each call.

    One call per step, so every step ends at a commit (or at a write that
    changed nothing). The page named is never deleted, so an acknowledged
    step can be checked by its bytes.
    """
    rng = np.random.default_rng(seed)
    src = [int(p) for p in st.create_pages(SOURCES, PAGE)]
    yield "create_pages", src[0]
    derived = []
    for _ in range(4):
        derived.append(st.create_page(PAGE).id)
        yield "create_page", derived[-1]
    copy, total, mix, low = derived
    st.register_passthrough(copy, src[0], writable=True)  # written directly too, below
    yield "bind", copy
    st.register_recompute(total, [src[1], src[2]], "sum", dtype=np.uint16, writable=True)
    yield "bind", total
    st.register_recompute(mix, [copy, total, src[3]], "xor", writable=True)  # a cascade two levels deep
    yield "bind", mix
    st.register_recompute(low, [src[0], src[3]], "minplus", weights=[3.0, 1.0], writable=True)
    yield "bind", low
    st.add_dependency(src[2], low, "control")
    yield "edge", low
    scratch: list[int] = []

    def changed(pid: int) -> np.ndarray:
        data = st.query_page(pid)
        k = int(rng.integers(1, PAGE + 1))
        data[rng.choice(PAGE, k, replace=False)] = rng.integers(0, 256, k, dtype=np.uint8)
        return data

    def sparse() -> tuple[int, np.ndarray, np.ndarray]:
        k = int(rng.integers(1, 9))
        return src[int(rng.integers(SOURCES))], rng.integers(0, PAGE, k), rng.integers(0, 256, k, dtype=np.uint8)

    while True:
        r = rng.random()
        if r < 0.3:
            pid = src[int(rng.integers(SOURCES))]
            st.update_page(pid, changed(pid))
            yield "update_page", pid
        elif r < 0.5:
            pid, idx, vals = sparse()
            st.apply_delta(mmsb.Delta.sparse(pid, idx, vals))
            yield "apply_delta", pid
        elif r < 0.6:
            pid = src[int(rng.integers(SOURCES))]
            st.apply_delta(mmsb.Delta.dense(pid, rng.random(PAGE) < 0.3, rng.integers(0, 256, PAGE, dtype=np.uint8)))
            yield "apply_delta", pid
        elif r < 0.75:
            parts = [sparse() for _ in range(int(rng.integers(1, 4)))]
            starts = np.cumsum([0] + [len(p[1]) for p in parts])
            batch = mmsb.DeltaBatch.from_sparse(np.array([p[0] for p in parts]), starts,
                                                np.concatenate([p[1] for p in parts]),
                                                np.concatenate([p[2] for p in parts]))
            st.apply_batch(batch)
            yield "apply_batch", parts[0][0]
        elif r < 0.9:
            pids = [src[int(i)] for i in rng.choice(SOURCES, int(rng.integers(2, 4)), replace=False)]
            with st.transaction():
                for pid in pids:
                    st.update_page(pid, changed(pid))
            yield "transaction", pids[0]
        elif r < 0.95:
            pid = derived[int(rng.integers(len(derived)))]  # a direct write to a derived page
            st.update_page(pid, changed(pid))
            yield "update_page", pid
        elif scratch and (len(scratch) == MAX_SCRATCH or rng.random() < 0.5):
            st.delete_page(scratch.pop(int(rng.integers(len(scratch)))))
            yield "delete_page", src[0]
        else:
            pid = st.create_page(int(rng.integers(1, 64))).id
            scratch.append(pid)
            yield "create_page", src[0]
            st.update_page(pid, rng.integers(0, 256, st.page(pid).size, dtype=np.uint8))
            yield "create_page", src[0]


def truncates_after(step: int) -> bool:
    """Whether a ``+truncate`` writer checkpoints (and so starts its log file anew) after ``step``."""
    return step % TRUNCATE_EVERY == TRUNCATE_EVERY - 1


def write(path: str, seed: int, sync: str, steps: int | None = None, out=None) -> None:
    """Write the history of ``seed`` to the log ``path``, acknowledging each durable step on ``out``.

    ``sync`` may end in ``+truncate``: then a checkpoint with ``truncate=True`` follows every
    ``TRUNCATE_EVERY``-th step, so the log file keeps starting anew at a checkpoint kept beside it.
    """
    out = out or sys.stdout
    parent = os.getppid()
    sync, _, mode = sync.partition("+")
    st = mmsb.start(log=path, sync=sync)
    for step, (_, pid) in enumerate(history(st, seed)):
        if mode and truncates_after(step):
            st.checkpoint(path + ".user.ckpt", truncate=True)
        if sync == "commit" or step % FLUSH_EVERY == FLUSH_EVERY - 1:
            if sync != "commit":
                st.flush()
            out.write(f"ACK {step} {st.lsn} {pid} {crc(st, pid)}\n")
        else:
            out.write(f"DID {step} {st.lsn}\n")
        out.flush()
        if steps is not None and step + 1 >= steps:
            break
        if os.getppid() != parent:  # orphaned: whoever ran us is gone
            os._exit(3)
    st.close()


def _warm() -> None:
    """Run every code path a writer and a recovery take once, so forked writers start at full speed."""
    with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "w") as null:
        for sync in ("commit", "group", "commit+truncate"):
            path = os.path.join(tmp, f"{sync}.log")
            write(path, 1, sync, steps=200, out=null)
            mmsb.replay(path).close()


def serve() -> None:
    _warm()
    print("READY", flush=True)
    for line in sys.stdin:
        path, seed, sync = line.split()
        pid = os.fork()
        if pid == 0:
            try:
                sys.stdout.write(f"START {os.getpid()}\n")
                sys.stdout.flush()
                write(path, int(seed), sync)
            finally:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        print(f"EXIT {pid} {status}", flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        write(sys.argv[1], int(sys.argv[2]), sys.argv[3])
        while True:  # a writer only ends by being killed
            os.pause()
