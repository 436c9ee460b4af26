"""``python -m mmsb profile``: its structure, its arithmetic, its verdicts, and that each row's sides
do the same work (checked against what the workload should leave in its pages, not against speed)."""

import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest

import mmsb
from mmsb import profile as prof

MEASURED = [w for w in prof.WORKLOADS if w.measured]
ROW_KEYS = {"key", "workload", "per", "items", "rate", "original_s", "target_s", "budget_s", "min_speedup",
            "budget_vs", "budget_vs_max", "peers", "note", "measured", "budget", "checks", "verdict"}
SIDE_KEYS = {"median_s", "p25_s", "p75_s", "min_s", "max_s", "samples", "items_per_sample"}
# key -> (original_s, target_s, budget_s, min_speedup, budget_vs, budget_vs_max): docs/PERFORMANCE.md
BUDGETS = {
    "allocation": (6.09e-6, 1e-6, 1e-6, {"numpy": 2.0}, None, None),
    "single_hop": (169.5e-6, 10e-6, 2e-6, {"numpy": 8.0}, None, None),
    "single_hop_njit": (None, None, None, {}, "single_hop", 1.10),
    "chain_10": (1.37e-3, None, 4e-6, {"numpy": 20.0}, None, None),
    "batch_32x4": (4.02e-3, 1.5e-3, 20e-6, {}, None, None),
    "batch_128x2": (19.4e-3, None, 40e-6, {}, None, None),
    "small_deltas": (None, None, 1 / 25e6, {"numpy_scatter": 0.5}, None, None),
    "replay": (1e-6, None, 1 / 20e6, {}, None, None),
}


@pytest.fixture(scope="module")
def quick_json():
    out = subprocess.run([sys.executable, "-m", "mmsb", "profile", "--quick", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""  # no progress bar when stderr is not a terminal
    return json.loads(out.stdout)


def test_quick_json_has_every_row_in_order_with_its_budget(quick_json):
    r = quick_json
    assert r["quick"] is True and r["mmsb"] == mmsb.__version__
    assert "Julia" in r["original"] and "Rust" in r["original"]
    assert [row["key"] for row in r["rows"]] == [w.key for w in prof.WORKLOADS]
    assert set(BUDGETS) == {w.key for w in MEASURED}
    assert set(r["warmup_s"]) == {"kernels"} | {w.key for w in MEASURED}
    assert all(v >= 0 for v in r["warmup_s"].values())
    for row in r["rows"]:
        assert ROW_KEYS <= set(row)
        if row["key"] in BUDGETS:
            got = (row["original_s"], row["target_s"], row["budget_s"], row["min_speedup"], row["budget_vs"],
                   row["budget_vs_max"])
            assert got == BUDGETS[row["key"]], row["key"]
            assert row["verdict"] in ("met", "missed") and row["budget"]
            assert row["verdict"] == ("met" if all(c["met"] for c in row["checks"]) else "missed")


def test_numbers_are_positive_and_ratios_follow_the_columns(quick_json):
    for row in quick_json["rows"]:
        if not row["measured"]:
            continue
        assert row["same_bytes"] is True
        for impl in ("mmsb", *row["peers"]):
            m = row[impl]
            assert set(m) == SIDE_KEYS
            assert m["samples"] == quick_json["repeats"] and m["items_per_sample"] >= row["items"]
            assert 0 < m["min_s"] <= m["p25_s"] <= m["median_s"] <= m["p75_s"] <= m["max_s"]
        for impl in row["peers"]:
            assert math.isclose(row["ratios"][impl], row[impl]["median_s"] / row["mmsb"]["median_s"])
        assert math.isclose(row["ratio_numpy"], row["numpy"]["median_s"] / row["mmsb"]["median_s"])
        if row["original_s"] is None:
            assert row["ratio_original"] is None
        else:
            assert math.isclose(row["ratio_original"], row["original_s"] / row["mmsb"]["median_s"])


def test_the_new_rows_and_peers_are_measured(quick_json):
    rows = {r["key"]: r for r in quick_json["rows"]}
    njit = rows["single_hop_njit"]
    assert njit["measured"] and njit["peers"] == ["numpy"]
    (check,) = njit["checks"]
    # the verdict is on the ratio of samples taken in turn (medians alone drift on a busy machine)
    assert check["kind"] == "vs_row" and check["ratio"] > 0 and check["met"] == (check["ratio"] <= 1.10)
    small = rows["small_deltas"]
    assert small["peers"] == ["numpy", "numpy_scatter"] and set(small["numpy_scatter"]) == SIDE_KEYS
    assert [c["kind"] for c in small["checks"]] == ["absolute", "speedup"]
    assert small["checks"][1]["met"] == (small["ratios"]["numpy_scatter"] >= 0.5)


def test_gpu_row_says_what_this_machine_has(quick_json):
    # the test session runs numba's CUDA simulator: a device without meaningful timings
    (row,) = [r for r in quick_json["rows"] if r["key"] == "gpu_crossover"]
    assert row["measured"] is False and "simulator" in row["note"] and "calibrate" in row["note"]
    assert "mmsb" not in row and "numpy" not in row and row["verdict"] is None


def test_gpu_note_without_a_device(monkeypatch):
    from mmsb import gpu

    monkeypatch.setitem(gpu._probe, "cuda", None)  # what the probe caches when numba.cuda finds nothing
    assert prof._gpu_note("x").startswith("no CUDA device here")


def test_text_table_shows_each_row_in_words(quick_json):
    text = prof.render(quick_json)
    lines = text.splitlines()
    assert "Julia" in lines[0] and "Rust" in lines[0]
    for word in ("original", "(Julia/Rust)", "NumPy script", "mmsb", "mmsb vs", "budget", "verdict"):
        assert word in lines[3] + lines[4], word
    for row in quick_json["rows"]:
        assert row["workload"] in text
        if row["measured"]:
            (line,) = [x for x in lines if x.startswith(row["workload"])]
            assert row["budget"] in line
            assert line.rstrip().endswith({"met": "met", "missed": "MISSED"}[row["verdict"]])
    assert "6.09 µs" in text and "169.5 µs" in text and "19.4 ms" in text and "M deltas/s" in text
    assert "NumPy script: the same bookkeeping in plain Python/NumPy" in text
    assert "└ NumPy scatter" in text and "its time on the single hop, their samples taken in turn" in text
    assert "calibrate" in text and "docs/PERFORMANCE.md" in text
    assert re.search(r"\d\s?x\b", text) is None  # ratios read "12× faster", never "0.0823x"


# -- verdicts, from hand-made rows ----------------------------------------------------------------

def _row(mmsb_s, rate=False, **kw):
    row = {"key": "r", "rate": rate, "per": "delta" if rate else "update", "measured": True, "budget_s": None,
           "min_speedup": {}, "budget_vs": None, "budget_vs_max": None, "mmsb": {"median_s": mmsb_s}}
    for impl, s in kw.pop("peers", {}).items():
        row[impl] = {"median_s": s}
    row.update(kw)
    return row


def test_verdict_met_when_every_part_holds():
    v = prof.judge(_row(1e-6, budget_s=2e-6, min_speedup={"numpy": 8.0}, peers={"numpy": 10e-6}))
    assert v["verdict"] == "met" and v["budget"] == "≤ 2 µs and ≥ 8× NumPy"
    assert [c["met"] for c in v["checks"]] == [True, True]
    assert v["checks"][1]["measured"] == "10× faster than NumPy script"
    assert math.isclose(v["checks"][1]["ratio"], 10)


def test_verdict_missed_on_the_absolute_bound():
    v = prof.judge(_row(3e-6, budget_s=2e-6, min_speedup={"numpy": 8.0}, peers={"numpy": 100e-6}))
    assert v["verdict"] == "missed" and [c["met"] for c in v["checks"]] == [False, True]
    assert v["checks"][0]["measured"] == "3 µs"


def test_verdict_missed_on_the_ratio():
    v = prof.judge(_row(1e-6, budget_s=2e-6, min_speedup={"numpy": 8.0}, peers={"numpy": 5e-6}))
    assert v["verdict"] == "missed" and [c["met"] for c in v["checks"]] == [True, False]


def test_rate_budget_and_a_ratio_below_one():
    row = dict(budget_s=1 / 25e6, min_speedup={"numpy_scatter": 0.5})
    v = prof.judge(_row(1 / 30e6, rate=True, peers={"numpy_scatter": 1 / 50e6}, **row))
    assert v["verdict"] == "met" and v["budget"] == "≥ 25 M deltas/s and ≥ 0.5× NumPy scatter"
    assert v["checks"][0]["measured"] == "30 M deltas/s"
    assert v["checks"][1]["measured"] == "1.7× slower than NumPy scatter"
    slow = prof.judge(_row(1 / 30e6, rate=True, peers={"numpy_scatter": 1 / 70e6}, **row))
    assert slow["verdict"] == "missed" and [c["met"] for c in slow["checks"]] == [True, False]
    below = prof.judge(_row(1 / 20e6, rate=True, peers={"numpy_scatter": 1 / 30e6}, **row))
    assert below["verdict"] == "missed" and [c["met"] for c in below["checks"]] == [False, True]


def test_verdict_against_another_row():
    ref = _row(1e-6, key="single_hop", short="single hop")
    by_key = {"single_hop": ref}
    row = dict(budget_vs="single_hop", budget_vs_max=1.10)
    met = prof.judge(_row(1.05e-6, **row), by_key)
    assert met["verdict"] == "met" and met["budget"] == "≤ 1.10× single hop"
    assert met["checks"][0]["measured"] == "1.05× single hop" and math.isclose(met["checks"][0]["ratio"], 1.05)
    missed = prof.judge(_row(1.2e-6, **row), by_key)
    assert missed["verdict"] == "missed"
    # the row it compares with was not in the run: nothing to judge
    assert prof.judge(_row(1.0e-6, **row), {})["verdict"] is None
    # no budget at all
    assert prof.judge(_row(1e-6)) == {"budget": None, "checks": [], "verdict": None}


def test_speed_in_words():
    assert prof.speed(12.3) == "12× faster"
    assert prof.speed(3.14) == "3.1× faster"
    assert prof.speed(1 / 3.1) == "3.1× slower"
    assert prof.speed(0.0823) == "12× slower"
    assert prof.speed(1.0) == "1.0× faster"
    assert prof.speed(None) == "-"


def test_render_of_hand_made_rows_marks_met_and_missed():
    rows = [_row(1e-6, key="a", workload="row a", budget_s=2e-6, min_speedup={"numpy": 2.0},
                 peers={"numpy": 10e-6}),
            _row(3e-6, key="b", workload="row b", budget_s=2e-6, peers={"numpy": 1e-6})]
    for r in rows:
        for impl in ("mmsb", "numpy"):
            r[impl].update(p25_s=r[impl]["median_s"], p75_s=r[impl]["median_s"])
        r.update(original_s=None, target_s=None, peers=["numpy"], ratio_original=None,
                 ratios={"numpy": r["numpy"]["median_s"] / r["mmsb"]["median_s"]})
        r.update(prof.judge(r))
    result = {"mmsb": "0", "python": "3", "numpy": "2", "numba": "0", "machine": "x86_64", "cpus": 2,
              "quick": True, "repeats": 5, "seconds": 1.0, "warmup_s": {"kernels": 0.1}, "rows": rows}
    text = prof.render(result)
    (a,) = [x for x in text.splitlines() if x.startswith("row a")]
    (b,) = [x for x in text.splitlines() if x.startswith("row b")]
    assert a.endswith("met") and "10× faster" in a and "≤ 2 µs and ≥ 2× NumPy" in a
    assert b.endswith("MISSED") and "3.0× slower" in b
    assert "Missed (1):" in text and "row b: 3 µs (budget ≤ 2 µs)" in text


# -- the workloads do what they say, on every side ------------------------------------------------

def _small_delta_pages():
    """What a small-delta batch of values_b leaves: delta i's bytes on page page_order()[i]."""
    starts, indices, _, values_b = prof.sparse_batch()
    pages = np.zeros((prof.BATCH_PAGES, prof.PAGE_SIZE), np.uint8)
    for i, p in enumerate(prof.page_order()):
        pages[p, indices[starts[i]:starts[i + 1]]] = values_b[starts[i]:starts[i + 1]]
    return [p.tobytes() for p in pages]


def _expected(key, ops):
    """What the pages hold after `ops` (even) operations, from the workload's definition alone."""
    a, b = prof.update_buffers("random")
    if key == "allocation":
        return [bytes(prof.PAGE_SIZE)]
    if key in ("single_hop", "chain_10"):
        n = 2 if key == "single_hop" else 10
        return [b.tobytes()] * n                        # the last write was b; every copy follows
    if key == "single_hop_njit":                        # the hop, then the untouched pair: a copy
        return [b.tobytes()] * 2 + [prof.pair_bytes().tobytes()] * 2
    if key in ("batch_32x4", "batch_128x2"):
        n, d = (32, 4) if key == "batch_32x4" else (128, 2)
        return [prof.head_values(d, 1)[-1].tobytes()] * n  # the last row of the second batch wins
    if key == "small_deltas":
        return _small_delta_pages()
    if key == "replay":  # a log of batches alternating a and b, ending with b, page i by delta i
        starts, indices, _, values_b = prof.sparse_batch()
        pages = np.zeros((prof.BATCH_PAGES, prof.PAGE_SIZE), np.uint8)
        for i in range(prof.BATCH_PAGES):
            pages[i, indices[starts[i]:starts[i + 1]]] = values_b[starts[i]:starts[i + 1]]
        return [p.tobytes() for p in pages]
    raise AssertionError(key)


@pytest.mark.parametrize("w", MEASURED, ids=lambda w: w.key)
@pytest.mark.parametrize("ops", [2, 6])
def test_every_side_leaves_the_bytes_the_workload_defines(w, ops):
    want = _expected(w.key, ops)
    for impl in ("mmsb", *w.peers):
        side = w.make(impl)
        try:
            side.run(ops)
            assert side.result() == want, impl
        finally:
            side.close()


def test_scatter_and_script_write_pages_in_the_random_order():
    order = prof.page_order()
    assert sorted(order.tolist()) == list(range(prof.BATCH_PAGES))     # each page once per batch
    assert not np.array_equal(order, np.arange(prof.BATCH_PAGES))      # ... not in creation order
    assert np.array_equal(order, prof.page_order())                    # ... and always the same one
    starts, indices, _, _ = prof.sparse_batch()
    offs = prof.scatter_offsets(order, starts, indices)
    assert np.array_equal(offs // prof.PAGE_SIZE, np.repeat(order, prof.BATCH_WIDTH))
    assert np.array_equal(offs % prof.PAGE_SIZE, indices)
    (w,) = [w for w in MEASURED if w.key == "small_deltas"]
    got = {}
    for impl in ("mmsb", "numpy", "numpy_scatter"):
        side = w.make(impl)
        try:
            side.run(2)
            got[impl] = side.result()
        finally:
            side.close()
    assert got["numpy_scatter"] == got["mmsb"] == got["numpy"]


def test_allocation_peer_does_mmsbs_bookkeeping():
    st = prof.ScriptState()
    assert not hasattr(st, "__dict__")                                 # a __slots__ class
    first, second = st.create_page(prof.PAGE_SIZE), st.create_page(prof.PAGE_SIZE)
    assert (first, second) == (0, 1) and st.next_id == 2
    assert st.epochs == {0: 0, 1: 0} and st.log == [("create", 0, 1024), ("create", 1, 1024)]
    assert st.pages[0].dtype == np.uint8 and st.pages[0].tobytes() == bytes(1024)
    st.stop()
    assert (st.pages, st.epochs, st.log, st.next_id) == ({}, {}, [], 0)
    (w,) = [w for w in MEASURED if w.key == "allocation"]
    assert w.make("mmsb").result() == w.make("numpy").result()


def test_the_njit_binding_is_there_and_unrelated():
    st, ids = prof.mmsb_hop_with_njit_binding()
    a, _ = prof.update_buffers("random")
    try:
        before = st.stats()["deltas"]
        st.update_page(int(ids[0]), a)
        assert st.stats()["deltas"] - before == 2                     # the head and its copy, not the pair
        assert st.query_page(int(ids[3])).tobytes() == prof.pair_bytes().tobytes()
    finally:
        mmsb.stop(st)
    peer = prof.peer_hop_with_binding()
    assert set(peer.children) == {0, 2} and peer.pages[3].tobytes() == prof.pair_bytes().tobytes()


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
    def make_worse(impl):
        return prof.Side(lambda k: None, lambda: [bytes(1 if impl == "numpy_scatter" else 0)])

    worse = prof.Workload("worse", "a second peer disagrees", "op", make_worse, peers=("numpy", "numpy_scatter"))
    with pytest.raises(AssertionError, match="NumPy scatter"):
        prof.profile(quick=True, workloads=[worse], progress=False)


def test_a_row_can_be_appended_and_shows_progress(capsys):
    # the shape another row (e.g. a replay rate) plugs into
    def make(impl):
        data = np.zeros(64, np.uint8)
        return prof.Side(lambda k: data.__setitem__(slice(None), k % 256), lambda: [data.tobytes()])

    row = prof.Workload("toy", "a toy row", "op", make, original_s=1e-3, items=2, rate=True)
    r = prof.profile(quick=True, workloads=[row], progress=True)
    (only,) = r["rows"]
    assert only["key"] == "toy" and only["mmsb"]["items_per_sample"] % 2 == 0 and only["verdict"] is None
    assert "mmsb profile" in capsys.readouterr().err
    assert "a toy row" in prof.render(r)


def test_import_mmsb_does_not_load_the_profile():
    out = subprocess.run([sys.executable, "-c", "import sys, mmsb; print('mmsb.profile' in sys.modules)"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False"
