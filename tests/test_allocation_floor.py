"""benchmarks/allocation_floor.py: its stripped model must do the work of a real cycle (or the
floor it reports would be too low), leave the pool as mmsb leaves it, and the script must run."""

import numpy as np

import mmsb
from mmsb._layout import T_META, T_OFFSET, T_SIZE

from bench_scripts import load


def _load():
    return load("allocation_floor")


def _row(core, slot):
    return [int(core.table.array[r, slot]) for r in (T_OFFSET, T_SIZE, T_META)]


def test_the_model_makes_the_page_and_records_mmsb_makes_and_resets_the_core():
    floor = _load()
    mmsb.stop(mmsb.start())
    for size in (1, 1024, 5000):
        st = mmsb.start()
        page = st.create_page(size)
        want_row, want_log = _row(st._c, page._slot), bytes(st._log._buf.array[:st._log.used])
        want_log = want_log[:64] + want_log[72:]  # the commit record's time (its third word) differs
        mmsb.stop(st)

        model = floor.start()
        core = model._c
        got = floor.create_page(model, size)
        assert (got.id, got._slot, got._size) == (page.id, page._slot, size)
        assert _row(core, got._slot) == want_row
        log = bytes(core.logbuf.array[:core.logbuf.cv[2]])
        assert len(log) == 96 and log[:64] + log[72:] == want_log
        floor.stop(model)
        assert model._logobj.used == len(want_log) + 8 and model._logobj.deltas == 0

        # what the model leaves behind is a fresh state to mmsb
        again = mmsb.start()
        assert again.page_ids().tolist() == [] and again.lsn == 0 and len(again.log) == 0
        assert again._c is core and not core.table.array[:, :4].any()
        np.testing.assert_array_equal(again.query_page(again.create_page(size)), np.zeros(size, np.uint8))
        mmsb.stop(again)


def test_the_script_times_all_three_sides():
    got = _load().cycles(number=200, repeat=2)
    assert set(got) == {"mmsb", "irreducible", "numpy"} and all(0 < v < 1e6 for v in got.values())
