"""Notebook views of a state: HTML for ``State`` and ``Page``, and two matplotlib plots.

``State._repr_html_`` / ``Page._repr_html_`` delegate here, so Jupyter shows
a table instead of a repr. :func:`plot_graph` draws the dependency graph by
topological level (page k's level: the longest edge path ending at it), with
no graph library; :func:`plot_latency` draws the write-latency histogram that
:meth:`State.stats` summarises. matplotlib is optional (``pip install
"mmsb[plot]"``) and imported only when a plot is asked for; figures are plain
``matplotlib.figure.Figure`` objects, made without pyplot, so they work
headless and leave pyplot's global state alone.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from ._layout import DTYPE_NAMES, ID_SLOT_MASK, LOCATION_NAMES, META_LOC_SHIFT, OP_NJIT, OP_PYTHON, OPS
from ._layout import T_EPOCH, T_META, T_SIZE

__all__ = ["state_html", "page_html", "plot_graph", "plot_latency"]

MAX_ROWS = 20        # pages listed in a state's table; the rest are counted
PREVIEW_BYTES = 64   # bytes of a page shown in hex
MAX_LABELS = 64      # a graph plot labels its nodes with ids up to this many pages
MAX_MARKERS = 500    # past this many pages a graph plot counts pages per level instead of drawing each
_OP_NAMES = {code: name for name, code in OPS.items()}
_STYLE = "border-collapse:collapse;font-family:monospace;font-size:12px"


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _table(head: list[str], rows: list[list[Any]]) -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table style="{_STYLE}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _ids(st: Any, slots: np.ndarray) -> list[int]:
    return [st._id_of(int(s)) for s in slots]


def _neighbours(st: Any, slot: int) -> tuple[list[int], list[int]]:
    """(parent ids, child ids) of the page in ``slot``."""
    g = st._c.prop.graph
    if slot >= g.num_nodes:
        return [], []
    return _ids(st, g.parents(slot)), _ids(st, g.children(slot))


def _binding(st: Any, slot: int) -> str:
    b = st._c.prop.bindings.get(slot)
    if b is None:
        return ""
    if b.op in (OP_NJIT, OP_PYTHON):
        fn = getattr(b.fn, "_mmsb_user", b.fn)  # a typed @njit recompute: its user's function
        name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", repr(fn))
        return f"{'@njit ' if b.op == OP_NJIT else ''}{name}"
    op = _OP_NAMES.get(b.op, str(b.op))
    return op if op == "passthrough" else f"{op} ({DTYPE_NAMES[b.dtype]})"


def state_html(st: Any, max_rows: int = MAX_ROWS) -> str:
    """A state as HTML: its log position and graph size, then its pages (the first ``max_rows``)."""
    c = st._c
    if c is None:
        return "<div><b>mmsb.State</b> (closed)</div>"
    with c.lock:
        ids = st.page_ids()
        slots = ids & ID_SLOT_MASK
        a = c.table.array
        sizes, epochs, meta = a[T_SIZE, slots], a[T_EPOCH, slots], a[T_META, slots]
        g, log = c.prop.graph, st.log
        where = "no log (log=False)" if log is None else f"{len(log)} deltas, {log.nbytes} bytes, in memory"
        if log is not None and getattr(log, "durable", False):
            where = f"{len(log)} deltas, {log.nbytes} bytes, durable"
        head = (f"<b>mmsb.State</b>: {ids.size} pages ({int(sizes.sum())} bytes), LSN {c.lsn}; "
                f"log: {_e(where)}; graph: {g.num_edges} edges, {len(c.prop.bindings)} recompute bindings")
        rows = []
        for k in range(min(ids.size, max_rows)):
            s = int(slots[k])
            parents, children = _neighbours(st, s)
            loc = LOCATION_NAMES[(int(meta[k]) >> META_LOC_SHIFT) & 0xFF]
            rows.append([int(ids[k]), int(sizes[k]), int(epochs[k]), loc, _binding(st, s),
                         _list(parents), _list(children)])
    more = f"<div>… and {ids.size - max_rows} more pages</div>" if ids.size > max_rows else ""
    table = _table(["id", "size", "epoch", "location", "recompute", "parents", "children"], rows) if rows else ""
    return f"<div>{head}{table}{more}</div>"


def _list(ids: list[int], limit: int = 8) -> str:
    shown = ", ".join(map(str, ids[:limit]))
    return shown + (f", … ({len(ids)} in all)" if len(ids) > limit else "")


def _hex(data: np.ndarray, limit: int) -> str:
    lines = []
    for at in range(0, min(data.size, limit), 16):
        chunk = data[at:min(at + 16, limit)]
        lines.append(f"{at:08x}  " + " ".join(f"{b:02x}" for b in chunk.tolist()))
    if data.size > limit:
        lines.append(f"… {data.size - limit} more bytes")
    return "\n".join(lines)


def page_html(pg: Any, preview: int = PREVIEW_BYTES) -> str:
    """A page as HTML: id, size, epoch, location, binding, parents and children, a hex preview."""
    st = pg._state
    if st._c is None:
        return f"<div><b>mmsb.Page</b> {pg.id} (its state is closed)</div>"
    slot = st._slot(st._c, pg)  # raises PageNotFoundError for a deleted page, like every page call
    parents, children = _neighbours(st, slot)
    # a device page's preview copies only the bytes shown
    data = st.view(pg).reshape(-1).view(np.uint8) if pg.location == "cpu" else (
        st.device_view(pg)[: preview + 1].copy_to_host())
    info = st._info(slot)
    rows = [["id", pg.id], ["size", pg.size], ["epoch", pg.epoch], ["location", pg.location],
            ["recompute", _binding(st, slot) or "-"], ["parents", _list(parents, 32) or "-"],
            ["children", _list(children, 32) or "-"]]
    if info is not None:
        if info.name is not None:
            rows.insert(1, ["name", info.name])
        if info.dtype is not None:
            rows.append(["dtype, shape", f"{info.dtype}, {info.shape}"])
        rows += [[f"meta: {k}", v] for k, v in info.meta.items()]
    body = "".join(f'<tr><th style="text-align:left">{_e(k)}</th><td style="text-align:left">{_e(v)}</td></tr>'
                   for k, v in rows)
    if info is not None and info.dtype is not None and data.size == pg.size:  # values, in the page's dtype
        with np.printoptions(threshold=max(1, preview // info.dtype.itemsize), edgeitems=3, linewidth=100):
            shown = np.array2string(data.view(info.dtype).reshape(info.shape))
    else:
        shown = _hex(data, preview)
    return (f'<div><table style="{_STYLE}">{body}</table>'
            f'<pre style="font-size:12px;margin:4px 0">{_e(shown)}</pre></div>')


def _figure(ax: Any, size: tuple[float, float]) -> tuple[Any, Any]:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError('plots need matplotlib: pip install "mmsb[plot]"') from exc
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.add_subplot()


def plot_graph(st: Any, ax: Any = None) -> Any:
    """The dependency graph: one marker per live page, x its topological level, edges as lines;
    past ``MAX_MARKERS`` pages, a bar of the pages at each level instead (the title says so).

    Pages without edges sit at level 0. Data edges are solid, other kinds
    dashed; derived pages (those with a recompute) are filled. Returns the
    matplotlib Figure (drawn into ``ax`` when given).
    """
    from matplotlib.collections import LineCollection

    c = st._core()
    with c.lock:
        ids = st.page_ids()
        slots = ids & ID_SLOT_MASK
        g = c.prop.graph
        n = g.num_nodes
        level = np.zeros(ids.size, np.int64)
        if n:
            inside = slots < n
            level[inside] = g.levels()[slots[inside]]
        edges = [(p, ch, k) for p, ch, k in g.edges()]
        bound = np.array([int(s) in c.prop.bindings for s in slots], bool)
    if ids.size > MAX_MARKERS:
        return _plot_levels(ax, ids.size, level, bound, len(edges))
    # within a level, pages keep id order, centred on y = 0
    order = np.lexsort((ids, level))
    y = np.empty(ids.size)
    for lv in np.unique(level):
        members = order[level[order] == lv]
        y[members] = np.arange(members.size) - (members.size - 1) / 2
    pos = {int(s): (float(level[i]), float(y[i])) for i, s in enumerate(slots)}
    widest = int(np.bincount(level).max()) if ids.size else 1
    fig, ax = _figure(ax, (min(12.0, max(4.0, 1.2 * (int(level.max(initial=0)) + 2))),
                           min(9.0, max(3.0, 0.35 * widest + 1.5))))
    for data_edges, style in ((True, "solid"), (False, "dashed")):
        segs = [(pos[p], pos[ch]) for p, ch, k in edges if (k == 0) == data_edges and p in pos and ch in pos]
        if segs:
            ax.add_collection(LineCollection(segs, colors="0.55", linestyles=style, linewidths=0.8, zorder=1))
    ax.scatter(level, y, s=60, c=np.where(bound, "tab:blue", "white"), edgecolors="tab:blue", zorder=2,
               label="pages (filled: recomputed)")
    if ids.size <= MAX_LABELS:
        for i, pid in enumerate(ids.tolist()):
            ax.annotate(str(pid), (level[i], y[i]), textcoords="offset points", xytext=(0, 7), ha="center",
                        fontsize=7)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("topological level")
    ax.set_yticks([])
    ax.set_title(f"{ids.size} pages, {len(edges)} edges (solid: data, dashed: other kinds)")
    ax.margins(0.15)
    return fig


def _plot_levels(ax: Any, pages: int, level: np.ndarray, bound: np.ndarray, edges: int) -> Any:
    """A graph too large for one marker per page: pages per topological level, derived ones apart."""
    fig, ax = _figure(ax, (min(12.0, max(5.0, 0.3 * (int(level.max(initial=0)) + 2))), 4.0))
    lv = np.arange(int(level.max(initial=0)) + 1)
    derived = np.bincount(level[bound], minlength=lv.size)
    plain = np.bincount(level[~bound], minlength=lv.size)
    ax.bar(lv, plain, color="white", edgecolor="tab:blue", label="pages")
    ax.bar(lv, derived, bottom=plain, color="tab:blue", edgecolor="tab:blue", label="recomputed pages")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("topological level")
    ax.set_ylabel("pages")
    if plain.max(initial=0) + derived.max(initial=0) > 50 * max(1, int(np.median(plain + derived))):
        ax.set_yscale("log")
    ax.set_title(f"{pages} pages, {edges} edges: pages per level\n(past {MAX_MARKERS} pages they are counted, "
                 "not drawn)", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def plot_latency(st: Any, ax: Any = None) -> Any:
    """The write-latency histogram behind ``stats()``'s ``write_time_*`` figures, with p50/p99.

    Bars are log2 buckets (a write that took t ns lands in [2**(b-1), 2**b));
    only sampled writes are in it (see :meth:`State.stats`). Returns the Figure.
    """
    c = st._core()
    with c.lock:
        counts = np.asarray(c.lat, np.int64)
        s = st.stats()
    fig, ax = _figure(ax, (6.0, 3.2))
    n = int(counts.sum())
    if not n:
        ax.text(0.5, 0.5, "no timed writes yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    b = np.flatnonzero(counts)
    lo, hi = b.min(), b.max()
    edges = 2.0 ** np.arange(lo - 1, hi + 1) / 1e3  # µs
    ax.bar(edges[:-1], counts[lo:hi + 1], width=np.diff(edges), align="edge", color="tab:blue", edgecolor="white")
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 0.1, 1, 10 µs, not 10^-1
    for key, style in (("write_time_p50_ns", "--"), ("write_time_p99_ns", ":")):
        ax.axvline(s[key] / 1e3, color="tab:red", linestyle=style, label=f"{key[11:14]} ≤ {s[key] / 1e3:.3g} µs")
    ax.set_xlabel("write latency (µs, log2 buckets)")
    ax.set_ylabel("writes")
    ax.set_title(f"{n} sampled writes (one write call in 16)")
    ax.legend(fontsize=8)
    return fig
