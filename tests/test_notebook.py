"""Notebook views: the HTML of a state and a page against what the test created, escaping, and
the plots (headless: figures are made without pyplot, drawn with Agg)."""

import re

import numpy as np
import pytest

import mmsb
from mmsb import notebook

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


@pytest.fixture
def small():
    """Four pages: a, b = a (passthrough), c = sum(a, b); d reached from a by a user-named kind."""
    st = mmsb.start()
    a, b, c, d = (st.create_page(n) for n in (16, 16, 16, 100))
    st.register_passthrough(b, a)
    st.register_recompute(c, [a, b], "sum")
    st.add_dependency(a, d, "<script>alert(1)</script>")
    st.update_page(a, np.arange(16, dtype=np.uint8))
    st.update_page(a, np.arange(16, dtype=np.uint8)[::-1].copy())
    yield st, (a, b, c, d)
    mmsb.stop(st)


def test_state_html_lists_each_page_with_size_epoch_location(small):
    st, (a, b, c, d) = small
    text = st._repr_html_()
    rows = {}
    for row in re.findall(r"<tr>(.*?)</tr>", text)[1:]:
        cells = [re.sub(r"<[^>]+>", "", x) for x in re.findall(r"<td>(.*?)</td>", row)]
        rows[int(cells[0])] = cells
    # the model: what this test did to each page
    want = {a.id: (16, 2, "", "", f"{b.id}, {c.id}, {d.id}"), b.id: (16, 2, "passthrough", f"{a.id}", f"{c.id}"),
            c.id: (16, 2, "sum (uint8)", f"{a.id}, {b.id}", ""), d.id: (100, 0, "", f"{a.id}", "")}
    assert set(rows) == set(want)
    for pid, (size, epoch, rec, parents, children) in want.items():
        assert rows[pid] == [str(pid), str(size), str(epoch), "cpu", rec, parents, children]
    assert f"LSN {st.lsn}" in text and f"{len(st.log)} deltas" in text
    assert "4 edges" in text and "2 recompute bindings" in text and "4 pages (148 bytes)" in text


def test_html_escapes_user_text(small):
    st, (a, b, c, d) = small
    st.register_recompute(d, [b], lambda x: np.resize(x, 100))  # a "<lambda>" name, and a kind with a tag
    for text in (st._repr_html_(), d._repr_html_()):
        assert "<lambda>" not in text and "<script>" not in text
    assert "&lt;lambda&gt;" in d._repr_html_()


def test_page_html_shows_hex_epoch_and_neighbours(small):
    st, (a, b, c, d) = small
    text = b._repr_html_()
    fields = dict(re.findall(r"<th[^>]*>(.*?)</th><td[^>]*>(.*?)</td>", text))
    assert fields == {"id": str(b.id), "size": "16", "epoch": "2", "location": "cpu", "recompute": "passthrough",
                      "parents": str(a.id), "children": str(c.id)}
    hexed = re.search(r"<pre[^>]*>(.*?)</pre>", text, re.S).group(1)
    assert hexed == "00000000  " + " ".join(f"{x:02x}" for x in range(15, -1, -1))
    big = d._repr_html_()
    assert "… 36 more bytes" in big and big.count("\n") == 4  # 64 bytes in 4 lines, then the rest counted


def test_a_big_state_is_truncated():
    st = mmsb.start()
    st.create_pages(1000, 8)
    text = st._repr_html_()
    assert len(re.findall(r"<tr>", text)) == notebook.MAX_ROWS + 1 and "… and 980 more pages" in text
    mmsb.stop(st)
    assert "closed" in st._repr_html_()


def test_plot_graph_has_one_marker_per_page_at_its_level(small):
    st, (a, b, c, d) = small
    e = st.create_page(4)  # no edges: level 0
    fig = st.plot_graph()
    assert isinstance(fig, matplotlib.figure.Figure)
    (ax,) = fig.axes
    (points,) = ax.collections[-1:]
    xy = points.get_offsets()
    assert len(xy) == len(st.page_ids()) == 5
    level = dict(zip(st.page_ids().tolist(), np.asarray(xy)[:, 0].tolist()))
    assert level == {a.id: 0, b.id: 1, c.id: 2, d.id: 1, e.id: 0}
    fig.canvas.draw()  # renders headless


def test_plot_latency_from_the_stats_histogram(small):
    st, (a, *_) = small
    for v in range(64):
        st.update_page(a, np.full(16, v + 100, np.uint8))
    fig = st.plot_latency()
    (ax,) = fig.axes
    bars = ax.patches
    assert sum(int(p.get_height()) for p in bars) == st.stats()["write_time_samples"] > 0
    fig.canvas.draw()
    empty = mmsb.start()
    assert "no timed writes" in empty.plot_latency().axes[0].texts[0].get_text()
    mmsb.stop(empty)


def test_a_large_graph_is_plotted_by_level_at_a_readable_size():
    st = mmsb.start()
    ids = st.create_pages(10_000, 8)
    for i in range(1, 3000, 3):  # 1000 two-page chains: levels 0 and 1
        st.register_passthrough(int(ids[i]), int(ids[i - 1]))
    fig = st.plot_graph()
    w, h = fig.get_size_inches()
    assert w <= 12 and h <= 9
    (ax,) = fig.axes
    heights = {}
    for bar in ax.patches:  # stacked bars: plain pages, then recomputed ones on top
        x = round(bar.get_x() + bar.get_width() / 2)
        heights[x] = heights.get(x, 0) + bar.get_height()
    assert heights == {0: 9000, 1: 1000} and "counted" in ax.get_title()
    fig.canvas.draw()
    mmsb.stop(st)


def test_a_typed_page_shows_its_values(small):
    st = small[0]
    p = st.create_page(shape=(2, 3), dtype=np.int16, name="grid", meta={"unit": "K"})
    st.update_page(p, [[1, -2, 3], [4, 5, -6]])
    text = p._repr_html_()
    shown = re.search(r"<pre[^>]*>(.*?)</pre>", text, re.S).group(1)
    assert shown == "[[ 1 -2  3]\n [ 4  5 -6]]" and "grid" in text and "int16, (2, 3)" in text and "unit" in text
