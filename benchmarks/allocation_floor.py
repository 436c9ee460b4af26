"""How far down the allocation cycle can go in CPython: ``python benchmarks/allocation_floor.py``.

Prints, from the same process and interleaved, the time of one cycle (start, a 1 KiB page, stop)
for three things:

- ``mmsb``: ``mmsb.start()``, ``create_page(1024)``, ``mmsb.stop()``;
- ``irreducible``: a stripped model over mmsb's own pooled cores and kernels that keeps only the
  work no correct state can skip (a history tag, the state's log object, the lock around the
  page's creation and the reset, one kernel call to make the page's row and records, one to reset
  the core, the page handle) and checks nothing;
- ``numpy``: the NumPy script of ``python -m mmsb profile`` (``mmsb.profile.ScriptState``).

The budget asks for at most 1 µs and half the NumPy script's time; docs/PERFORMANCE.md
("Allocation cycle") has the figures this gave. It reaches into mmsb's internals on purpose:
it measures them, so it is a script, not an asv benchmark (asv imports it and finds nothing to time).
"""

from __future__ import annotations

import timeit

import mmsb
from mmsb import state as _state
from mmsb._layout import R_BUMP
from mmsb.log.memory import started
from mmsb.page import Page
from mmsb.profile import ScriptState

PAGE_SIZE = 1024
_new = object.__new__


class _Model:
    """A state reduced to what the irreducible model needs."""

    __slots__ = ("_c", "_logobj")


def start() -> _Model:
    st = _new(_Model)
    st._c = core = _state._take_core()
    core.tag = _state._heappop(_state._free_tags)
    st._logobj = started(core.logbuf)
    return st


def create_page(st: _Model, size: int) -> Page:
    c = st._c
    lock = c.lock
    lock.acquire()
    table, arena = c.table, c.arena
    slot = table.used
    pid = _state._create(c.regs, size, arena.bump, arena.reserved, slot, table.fresh_gen)
    table.used = slot + 1
    arena.bump = c.rv[R_BUMP]
    lock.release()
    page = _new(Page)
    page._state, page.id, page._slot, page._size = st, pid, slot, size
    return page


def stop(st: _Model) -> None:
    c, st._c = st._c, None
    _state._heappush(_state._free_tags, c.tag)
    c.tag = -1
    lock = c.lock
    lock.acquire()
    log = st._logobj
    buf, log._buf = log._buf, None
    log._cv = buf.cv.tolist()
    table, arena = c.table, c.arena
    _state._reset(c.regs, table.used, True, buf.ctr_addr)
    table.used = 0
    arena.bump = arena.first
    lock.release()
    _state._pool.append(c)


def cycles(number: int = 100_000, repeat: int = 7) -> dict[str, float]:
    """Best time of one cycle (ns) of each side, its runs interleaved with the others'."""
    mmsb.stop(mmsb.start())  # the kernels loaded, a core in the pool
    sides = {
        "mmsb": ("st = start(); st.create_page(1024); stop(st)", {"start": mmsb.start, "stop": mmsb.stop}),
        "irreducible": ("st = start(); create_page(st, 1024); stop(st)",
                        {"start": start, "create_page": create_page, "stop": stop}),
        "numpy": ("s = ScriptState(); s.create_page(1024); s.stop()", {"ScriptState": ScriptState}),
    }
    best = dict.fromkeys(sides, float("inf"))
    for _ in range(repeat):
        for name, (stmt, names) in sides.items():
            t = timeit.timeit(stmt, globals=names, number=number) / number * 1e9
            best[name] = min(best[name], t)
    return best


if __name__ == "__main__":
    got = cycles()
    print("one allocation cycle, best of 7 interleaved runs:")
    for name, ns in got.items():
        print(f"  {name:<12} {ns:7.0f} ns")
    print(f"the budget: <= 1000 ns and <= {got['numpy'] / 2:.0f} ns (half the NumPy script)")
