"""``python -m mmsb profile``: its structure, its arithmetic, and that each row's two sides do
the same work (checked against what the workload should leave in its pages, not against speed)."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

import mmsb
from mmsb import profile as prof

MEASURED = [w for w in prof.WORKLOADS if w.measured]
ROW_KEYS = {"key", "workload", "per", "items", "rate", "original_s", "target_s", "budget_s", "note", "measured"}
SIDE_KEYS = {"median_s", "p25_s", "p75_s", "min_s", "max_s", "samples", "items_per_sample"}


@pytest.fixture(scope="module")
def quick_json():
    out = subprocess.run([sys.executable, "-m", "mmsb", "profile", "--quick", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""  # no progress bar when stderr is not a terminal
    return json.loads(out.stdout)


def test_quick_json_has_every_row_in_order(quick_json):
    r = quick_json
    assert r["quick"] is True and r["mmsb"] == mmsb.__version__
    assert [row["key"] for row in r["rows"]] == [w.key for w in prof.WORKLOADS]
    assert set(r["warmup_s"]) == {"kernels"} | {w.key for w in MEASURED}
    assert all(v >= 0 for v in r["warmup_s"].values())
    figures = {"allocation": (6.09e-6, 1e-6), "single_hop": (169.5e-6, 10e-6), "chain_10": (1.37e-3, None),
               "batch_32x4": (4.02e-3, 1.5e-3), "batch_128x2": (19.4e-3, None), "small_deltas": (None, None),
               "replay": (1e-6, None)}
    for row in r["rows"]:
        assert ROW_KEYS <= set(row)
        if row["key"] in figures:
            assert (row["original_s"], row["target_s"]) == figures[row["key"]]


def test_numbers_are_positive_and_ratios_follow_the_columns(quick_json):
    for row in quick_json["rows"]:
        if not row["measured"]:
            continue
        assert row["same_bytes"] is True
        for impl in ("numpy", "mmsb"):
            m = row[impl]
            assert set(m) == SIDE_KEYS
            assert m["samples"] == quick_json["repeats"] and m["items_per_sample"] >= row["items"]
            assert 0 < m["min_s"] <= m["p25_s"] <= m["median_s"] <= m["p75_s"] <= m["max_s"]
        assert math.isclose(row["ratio_numpy"], row["numpy"]["median_s"] / row["mmsb"]["median_s"])
        if row["original_s"] is None:
            assert row["ratio_original"] is None
        else:
            assert math.isclose(row["ratio_original"], row["original_s"] / row["mmsb"]["median_s"])


def test_gpu_row_says_what_this_machine_has(quick_json):
    # the test session runs numba's CUDA simulator: a device without meaningful timings
    (row,) = [r for r in quick_json["rows"] if r["key"] == "gpu_crossover"]
    assert row["measured"] is False and "simulator" in row["note"] and "calibrate" in row["note"]
    assert "mmsb" not in row and "numpy" not in row


def test_gpu_note_without_a_device(monkeypatch):
    from mmsb import gpu

    monkeypatch.setitem(gpu._probe, "cuda", None)  # what the probe caches when numba.cuda finds nothing
    assert prof._gpu_note("x").startswith("no CUDA device here")


def test_text_table_shows_each_row(quick_json):
    text = prof.render(quick_json)
    for row in quick_json["rows"]:
        assert row["workload"] in text
    assert "calibrate" in text and "6.09 µs" in text and "19.4 ms" in text and "M/s" in text


# -- the workloads do what they say, on both sides -----------------------------------------------

def _expected(key, ops):
    """What the pages hold after `ops` (even) operations, from the workload's definition alone."""
    a, b = prof.update_buffers("random")
    if key == "allocation":
        return [bytes(prof.PAGE_SIZE)]
    if key in ("single_hop", "chain_10"):
        n = 2 if key == "single_hop" else 10
        return [b.tobytes()] * n                        # the last write was b; every copy follows
    if key in ("batch_32x4", "batch_128x2"):
        n, d = (32, 4) if key == "batch_32x4" else (128, 2)
        return [prof.head_values(d, 1)[-1].tobytes()] * n  # the last row of the second batch wins
    if key in ("small_deltas", "replay"):  # replay: a log of batches alternating a and b, ending with b
        starts, indices, _, values_b = prof.sparse_batch()
        pages = np.zeros((prof.BATCH_PAGES, prof.PAGE_SIZE), np.uint8)
        for i in range(prof.BATCH_PAGES):
            pages[i, indices[starts[i]:starts[i + 1]]] = values_b[starts[i]:starts[i + 1]]
        return [p.tobytes() for p in pages]
    raise AssertionError(key)


@pytest.mark.parametrize("w", MEASURED, ids=lambda w: w.key)
@pytest.mark.parametrize("ops", [2, 6])
def test_both_sides_leave_the_bytes_the_workload_defines(w, ops):
    want = _expected(w.key, ops)
    for impl in ("mmsb", "numpy"):
        side = w.make(impl)
        try:
            side.run(ops)
            assert side.result() == want, impl
        finally:
            side.close()


def test_every_operation_changes_bytes():
    # alternating inputs must differ everywhere they are written, or a cut-off would hide work
    a, b = prof.update_buffers("random")
    assert (a != b).all() and (a != 0).all()
    rows = prof.head_values(4, 0) + prof.head_values(4, 1)
    assert all((x != y).all() for x, y in zip(rows, rows[1:]))
    _, _, va, vb = prof.sparse_batch()
    assert (va != vb).all() and (va != 0).all()


def test_both_chains_log_one_delta_per_page_an_update_changes():
    a, b = prof.update_buffers("random")
    st, ids = prof.mmsb_chain(10)
    peer = prof.peer_chain(10)
    for data in (a, b):
        st.update_page(ids[0], data)
        peer.update(0, data)
    assert st.lsn == len(st.log) == 20 and len(peer.log) == 20
    assert [d.page_id for d in st.log] == [int(i) for i in ids] * 2
    assert [rec[0] for rec in peer.log] == list(range(10)) * 2
    mmsb.stop(st)


def test_a_side_that_disagrees_is_caught():
    def make(impl):
        pages = [bytes(4)] if impl == "mmsb" else [bytes([1, 0, 0, 0])]
        return prof.Side(lambda k: None, lambda: pages)

    bad = prof.Workload("bad", "disagreeing sides", "op", make)
    with pytest.raises(AssertionError, match="different bytes"):
        prof.profile(quick=True, workloads=[bad], progress=False)


def test_a_row_can_be_appended_and_shows_progress(capsys):
    # the shape another row (e.g. a replay rate) plugs into
    def make(impl):
        data = np.zeros(64, np.uint8)
        return prof.Side(lambda k: data.__setitem__(slice(None), k % 256), lambda: [data.tobytes()])

    row = prof.Workload("toy", "a toy row", "op", make, original_s=1e-3, items=2, rate=True)
    r = prof.profile(quick=True, workloads=[row], progress=True)
    (only,) = r["rows"]
    assert only["key"] == "toy" and only["mmsb"]["items_per_sample"] % 2 == 0
    assert "mmsb profile" in capsys.readouterr().err
    assert "a toy row" in prof.render(r)


def test_import_mmsb_does_not_load_the_profile():
    out = subprocess.run([sys.executable, "-c", "import sys, mmsb; print('mmsb.profile' in sys.modules)"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False"
