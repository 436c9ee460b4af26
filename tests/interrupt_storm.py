"""A writer under a storm of SIGINTs: after each KeyboardInterrupt, the state must equal a replay
of its own log (in memory, and from its file), and it must go on working.

Run by ``tests/test_interrupts.py`` in a subprocess (signal handlers are process-wide):

    python interrupt_storm.py LOG SYNC BINDING INTERRUPTS SEED

LOG is a path or "memory"; BINDING is "none", "sum" (a built-in op) or "python" (a Python
recompute). Prints one line: ``ok <interrupts> <writes> <checks>``, or exits non-zero with
what differed. ``--unprotected`` turns mmsb's hold of interrupts off, to show the storm finds
what it is meant to find.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
import warnings

import numpy as np

import mmsb
from mmsb import _interrupts

SIZE = 64


def double(a):
    return (a.astype(np.uint16) * 2 % 256).astype(np.uint8)


class Storm:
    """A thread that sends SIGINT to this process at random moments while it is on."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.on = threading.Event()
        self.sent = 0
        self.done = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        pid = os.getpid()
        while not self.done:
            self.on.wait()
            time.sleep(self.rng.uniform(0, 0.0004))
            if self.on.is_set():
                os.kill(pid, signal.SIGINT)
                self.sent += 1


def drain() -> None:
    """Let held interrupts land (they are sent again within a few milliseconds)."""
    quiet = time.monotonic() + 0.02
    while time.monotonic() < quiet:
        try:
            time.sleep(0.002)
        except KeyboardInterrupt:
            quiet = time.monotonic() + 0.02


def check(st: mmsb.State, path: str | None) -> None:
    want = st.state_hash()
    again = st.replay()
    got = again.state_hash()
    again.close()
    if got != want:
        raise SystemExit(f"state differs from the replay of its log in memory at lsn {st.lsn}")
    if path is not None:
        st.flush()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a torn tail here would be a lost acknowledged write
            back = mmsb.replay(path)
        got = back.state_hash()
        back.close()
        if got != want:
            raise SystemExit(f"state differs from the replay of its log file at lsn {st.lsn}")


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    log, sync, binding, interrupts, seed = args[0], args[1], args[2], int(args[3]), int(args[4])
    path = None if log == "memory" else log
    rng = random.Random(seed)
    mmsb.register_function(double, name="double")
    st = mmsb.start(log=path, sync=sync)
    if "--unprotected" in sys.argv:
        _interrupts._ATOMIC.clear()
    a, b, child = st.create_page(SIZE), st.create_page(SIZE), st.create_page(SIZE)
    if binding == "sum":
        st.register_recompute(child, [a, b], "sum")
    elif binding == "python":
        st.register_recompute(child, [a], double)

    def write(kind: int) -> None:
        pg = a if rng.random() < 0.5 else b
        if kind == 0:
            st.update_page(pg, np.frombuffer(rng.randbytes(SIZE), np.uint8))
        elif kind == 1:
            idx = np.array(sorted(rng.sample(range(SIZE), 3)), np.int64)
            st.apply_delta(mmsb.Delta.sparse(pg, idx, np.frombuffer(rng.randbytes(3), np.uint8)))
        elif kind == 2:
            ids = np.array([a.id, b.id, a.id], np.int64)
            starts = np.array([0, 2, 4, 6], np.int64)
            idx = np.array([1, 5, 7, 9, 11, 13], np.int64)
            st.apply_batch(mmsb.DeltaBatch(ids, starts, idx, np.frombuffer(rng.randbytes(6), np.uint8)))
        elif kind == 3:
            with st.transaction():
                st.update_page(a, np.frombuffer(rng.randbytes(SIZE), np.uint8))
                st.update_page(b, np.frombuffer(rng.randbytes(SIZE), np.uint8))
        else:
            st.delete_page(st.create_page(8))

    for kind in range(5):  # every path compiled before the storm
        write(kind)
    check(st, path)
    storm = Storm(seed)
    caught = writes = checks = 0
    deadline = time.monotonic() + 120
    while caught < interrupts and time.monotonic() < deadline:
        storm.on.set()
        try:
            while True:
                write(rng.randrange(5))
                writes += 1
        except KeyboardInterrupt:
            caught += 1
        storm.on.clear()
        drain()
        check(st, path)
        checks += 1
    storm.done = True
    storm.on.set()
    drain()
    check(st, path)
    want = st.state_hash()
    st.close()
    if path is not None:
        again = mmsb.start(log=path, sync=sync)
        if again.state_hash() != want:
            raise SystemExit("the reopened log differs from the state that wrote it")
        again.close()
    print(f"ok {caught} {writes} {checks + 1}")


if __name__ == "__main__":
    main()
