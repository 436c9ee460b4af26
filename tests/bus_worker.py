"""Processes for the shared-state tests (``tests/test_bus.py``), one role per run.

``python bus_worker.py ROLE NAME ARGS...``; each prints ``READY`` once attached
(or started) and then one line per event, flushed at once:

- ``reader NAME SECONDS``: snapshots and single-page reads of a state whose
  every call leaves all pages filled with one byte value; prints ``SAW <lsn>
  <value>`` per snapshot and ``TORN ...`` (exit 1) for any page that is not
  uniform or a snapshot whose pages differ.
- ``submitter NAME SEED COUNT``: COUNT batches, each filling every page with one
  value (SEED * COUNT + i) % 255 + 1 (distinct across seeds while SEEDS * COUNT <= 255, so no
  batch rewrites what a page holds and every batch takes LSNs); prints ``ACK <first lsn> <last lsn> <value>``.
- ``waiter NAME TIMEOUT``: one ``wait``; prints ``WOKE <lsn>`` or ``TIMEOUT``.
- ``owner NAME LOG COUNT``: starts a shared state on file log LOG with 4 pages,
  then COUNT (0: endless) calls filling them; prints ``ACK <lsn> <value>``.
- ``cycles NAME N``: N attach / read / submit / close cycles, cycle i filling the
  first page with i % 255 + 1; prints ``DONE``.
- ``hold NAME``: asks the owner for a quiet moment and never ends it (killed by
  the test); prints ``HOLDING``.
"""

from __future__ import annotations

import sys
import time

import numpy as np

import mmsb


def fill_batch(ids, sizes, value: int) -> mmsb.DeltaBatch:
    """One delta per page writing ``value`` over all of it."""
    sizes = np.asarray(sizes, np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    indices = np.concatenate([np.arange(n) for n in sizes])
    return mmsb.DeltaBatch(np.asarray(ids, np.int64), starts, indices, np.full(int(sizes.sum()), value, np.uint8))


def say(*words) -> None:
    print(*words, flush=True)


def reader(name: str, seconds: float) -> int:
    att = mmsb.attach(name, timeout=10)
    say("READY")
    end = time.monotonic() + seconds
    last = -1
    n = 0
    while time.monotonic() < end:
        snap = att.snapshot()
        values = {int(snap[p][0]) for p in snap}
        for p in snap:
            page = snap[p]
            if not (page == page[0]).all():
                say("TORN page", p, "lsn", snap.lsn)
                return 1
        if len(values) > 1:
            say("TORN snapshot", snap.lsn, sorted(values))
            return 1
        if snap.lsn < last:
            say("TORN lsn went back", last, snap.lsn)
            return 1
        last = snap.lsn
        if values:
            say("SAW", snap.lsn, values.pop())
        for p in snap.ids[:2]:
            one = att.query_page(int(p))
            if not (one == one[0]).all():
                say("TORN query_page", int(p))
                return 1
        n += 1
    say("READS", n)
    att.close()
    return 0


def submitter(name: str, seed: int, count: int) -> int:
    att = mmsb.attach(name, timeout=10)
    ids = att.page_ids()
    sizes = [att.query_page(int(p)).size for p in ids]
    say("READY")
    for i in range(count):
        value = (seed * count + i) % 255 + 1
        lsns = att.apply_batch(fill_batch(ids, sizes, value))
        say("ACK", int(lsns.min()), int(lsns.max()), value)
    att.close()
    return 0


def waiter(name: str, timeout: float) -> int:
    att = mmsb.attach(name, timeout=10)
    lsn = att.lsn
    say("READY", lsn)
    got = att.wait(lsn + 1, timeout)
    say("TIMEOUT" if got is None else f"WOKE {got}")
    return 0


def owner(name: str, log: str, count: int) -> int:
    st = mmsb.start(log=log, shared=name)
    pages = [st.create_page(4096) for _ in range(4)]
    ids, sizes = [p.id for p in pages], [4096] * 4
    say("READY", *ids)
    i = 0
    while count == 0 or i < count:
        value = i % 251 + 1
        lsns = st.apply_batch(fill_batch(ids, sizes, value))
        say("ACK", int(lsns.max()), value)
        i += 1
    mmsb.stop(st)
    return 0


def cycles(name: str, n: int) -> int:
    say("READY")
    for i in range(n):
        with mmsb.attach(name, timeout=10) as att:
            page = int(att.page_ids()[0])
            att.update_page(page, np.full(att.query_page(page).size, i % 255 + 1, np.uint8))
    say("DONE")
    return 0


def hold(name: str) -> int:
    import os

    from mmsb._layout import H_HOLD

    att = mmsb.attach(name, timeout=10)
    att._word_swap(att._addr, H_HOLD, 0, os.getpid())
    say("HOLDING")
    time.sleep(3600)
    return 0


if __name__ == "__main__":
    role, name, *rest = sys.argv[1:]
    if role == "reader":
        sys.exit(reader(name, float(rest[0])))
    if role == "submitter":
        sys.exit(submitter(name, int(rest[0]), int(rest[1])))
    if role == "waiter":
        sys.exit(waiter(name, float(rest[0])))
    if role == "owner":
        sys.exit(owner(name, rest[0], int(rest[1])))
    if role == "cycles":
        sys.exit(cycles(name, int(rest[0])))
    if role == "hold":
        sys.exit(hold(name))
    sys.exit(f"unknown role {role}")
