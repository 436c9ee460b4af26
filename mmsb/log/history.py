"""Provenance: which deltas are behind a page's bytes (``State.history``).

A page's bytes are what its deltas wrote. A delta made by a cascade lists its causes: the LSNs
of the deltas of the same commit on the page's parents that led to it (``Delta.causes``), and
those may have causes in turn. :meth:`mmsb.State.history` returns a :class:`History`: the
page's deltas and, breadth first up the causes, the deltas upstream of them, each with its
distance in hops.

Lookups go through a :class:`HistoryIndex` that the log keeps (made on first use, so a state
that never asks pays nothing). It indexes the log's delta records by page and by LSN in one
kernel pass, and later calls index only the records appended since. A rollback of the log
truncates it (``MemoryLog.rollback`` calls :meth:`HistoryIndex.forget_after`).
"""

from __future__ import annotations

import bisect
import json
from typing import Any, Iterator

import numpy as np

from .._layout import E_OFF, E_ROWS, REC_DELTA, REC_HEADER
from ..delta import Delta
from ..errors import InvalidArgumentError, LogCorruptError, StateClosedError
from ..typed import PageInfo

__all__ = ["History", "HistoryIndex", "history", "limits", "pack", "unpack"]

DEFAULT_DEPTH = 32
# The tail of the index (entries not yet in its by-page CSR) is scanned linearly on each
# lookup; the CSR is rebuilt (linear) once the tail outgrows this or an eighth of the rest.
MERGE_MIN = 1 << 14
_HTML_ROWS = 200

_kh: Any = None  # mmsb.kernels.history, imported on first use (it imports numba)


def _kernels() -> Any:
    global _kh
    if _kh is None:
        from ..kernels import history

        _kh = history
    return _kh


class History:
    """The provenance of one page: the deltas behind its bytes and the deltas that caused them.

    - ``page_id``: the page asked about; ``depth``: the hop limit the walk used.
    - ``deltas``: the page's own deltas, in LSN order (its newest ``last`` only, when capped).
    - ``upstream``: the deltas reached by following causes (``Delta.causes``) from those, up
      to ``depth`` hops, in LSN order. A cause is a delta of the same commit on a parent page.
    - ``hops``: a dict from LSN to the distance in hops (0 for the page's own deltas, 1 for
      their direct causes, ...); a delta reached along several paths counts its shortest.
    - ``truncated``: True when something behind the bytes was left out: older deltas of the
      page beyond ``last``, causes beyond ``depth`` hops, or records the log no longer holds
      (a log trimmed by its retention keeps what is newer than its ``first_lsn``).

    ``values()`` rebuilds the page's value after each of its deltas, in its dtype and shape;
    ``frame()`` gives the same as a pandas DataFrame indexed by LSN.

    Iterating yields every delta (own and upstream) in LSN order, which is causal order: a
    cause always has a smaller LSN than its effect. ``len()`` counts them, ``lsn in h`` tests
    membership (a :class:`mmsb.Delta` works too), and ``h.delta(lsn)`` returns one.

    A history holds a copy of its deltas' log records, so it stays true whatever the state
    does next; the :class:`mmsb.Delta` objects are decoded on first use.
    """

    __slots__ = ("page_id", "depth", "truncated", "size", "info", "_blob", "_starts", "_lens", "_lsns", "_hops",
                 "_all", "_map")

    def __init__(self, page_id: int, depth: int, truncated: bool, blob: bytes, starts: list[int],
                 lens: list[int], lsns: list[int], hops: list[int], size: int = 0, info: Any = None) -> None:
        self.page_id, self.depth, self.truncated = page_id, depth, truncated
        self.size, self.info = size, info  # the page's size and PageInfo (dtype, shape) when asked
        self._blob, self._starts, self._lens, self._lsns, self._hops = blob, starts, lens, lsns, hops
        self._all: tuple[Delta, ...] | None = None
        self._map: dict[int, int] | None = None

    def _deltas(self) -> tuple[Delta, ...]:
        if self._all is None:
            blob = self._blob
            self._all = tuple(Delta._from_record(blob[s:s + k]) for s, k in zip(self._starts, self._lens))
        return self._all

    @property
    def deltas(self) -> tuple[Delta, ...]:
        """The page's own deltas, in LSN order."""
        return tuple(d for d, h in zip(self._deltas(), self._hops) if h == 0)

    @property
    def upstream(self) -> tuple[Delta, ...]:
        """The deltas upstream of the page's, in LSN order."""
        return tuple(d for d, h in zip(self._deltas(), self._hops) if h)

    @property
    def hops(self) -> dict[int, int]:
        """LSN -> distance in hops from the page (0: the page's own deltas)."""
        if self._map is None:
            self._map = dict(zip(self._lsns, self._hops))
        return self._map

    def __iter__(self) -> Iterator[Delta]:
        return iter(self._deltas())

    def __len__(self) -> int:
        return len(self._lsns)

    def __contains__(self, item: object) -> bool:
        lsn = item.lsn if isinstance(item, Delta) else item
        return lsn in self.hops

    def delta(self, lsn: int) -> Delta:
        """The delta of this history with LSN ``lsn``; KeyError when it is not in it."""
        if lsn not in self.hops:
            raise KeyError(lsn)
        return self._deltas()[bisect.bisect_left(self._lsns, lsn)]

    def values(self) -> np.ndarray:
        """The page's value after each of its own deltas: an array of shape ``(len(deltas), *shape)``
        in the page's dtype (uint8 bytes for a byte page), rebuilt from zeros by applying them.

        Needs every delta of the page since its creation: :class:`mmsb.InvalidArgumentError`
        when the history starts later (``last=``, a trimmed log, a checkpoint it continues).
        """
        own = self.deltas
        info = self.info
        size = self.size
        if own and own[0].epoch != 1:
            raise InvalidArgumentError(
                f"the history of page {self.page_id} does not start at its creation (its first delta has "
                f"epoch {own[0].epoch}): values() rebuilds the page from every delta it had")
        if own and [d.epoch for d in own] != list(range(1, len(own) + 1)):
            raise InvalidArgumentError(f"page {self.page_id} was resized (its epochs skip one where it was): "
                                       "values() rebuilds a page that kept its size")
        out = np.zeros((len(own), size), np.uint8)
        page = np.zeros(size, np.uint8)
        for row, d in zip(out, own):
            page[d.indices] = d.values
            row[:] = page
        if info is None or info.dtype is None:
            return out
        return out.view(info.dtype).reshape(len(own), *info.shape)

    def frame(self) -> Any:
        """A pandas DataFrame of the page's own deltas, indexed by LSN: ``epoch``, ``kind``,
        ``nbytes``, ``causes``, and, when :meth:`values` can rebuild them, the page's elements
        after each delta, one column per element (named by its index). Needs pandas."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError("History.frame needs pandas: pip install pandas") from exc
        own = self.deltas
        table = pd.DataFrame({"epoch": [d.epoch for d in own], "kind": [d.kind for d in own],
                              "nbytes": [d.nbytes for d in own], "causes": [d.causes for d in own]},
                             index=pd.Index([d.lsn for d in own], name="lsn"))
        try:
            vals = self.values()
        except InvalidArgumentError:
            return table
        shape = vals.shape[1:]
        flat = vals.reshape(len(own), int(np.prod(shape)))
        names = [i[0] if len(shape) == 1 else i for i in np.ndindex(*shape)]
        if vals.dtype.fields is not None:  # a structured dtype: one object column per element
            cols = {n: list(flat[:, k]) for k, n in enumerate(names)}
        else:
            cols = {n: flat[:, k] for k, n in enumerate(names)}
        return pd.concat([table, pd.DataFrame(cols, index=table.index)], axis=1)

    def __repr__(self) -> str:
        own = self._hops.count(0)
        cut = " truncated" if self.truncated else ""
        return (f"<mmsb.History page={self.page_id} deltas={own} "
                f"upstream={len(self._hops) - own} depth={self.depth}{cut}>")

    def _repr_html_(self) -> str:
        import html  # here, not at import: only notebooks ask

        shown: dict[int, str] = {}  # a typed page's value after each of its deltas, where it can be rebuilt
        if self.info is not None and self.info.dtype is not None:
            try:
                with np.printoptions(threshold=8, edgeitems=2, linewidth=60):
                    shown = {d.lsn: np.array2string(v) for d, v in zip(self.deltas, self.values())}
            except InvalidArgumentError:
                pass
        rows = []
        for d, h in zip(self._deltas()[:_HTML_ROWS], self._hops):
            causes = ", ".join(map(str, d.causes))
            value = html.escape(shown.get(d.lsn, "")) if h == 0 else ""
            rows.append(f"<tr><td>{d.lsn}</td><td>{h}</td><td>{d.page_id}</td>"
                        f"<td>{d.epoch}</td><td>{d.kind}</td><td>{d.nbytes}</td><td>{causes}</td>"
                        f"<td><pre style='margin:0'>{value}</pre></td></tr>")
        more = len(self) - _HTML_ROWS
        if more > 0:
            rows.append(f'<tr><td colspan="8">… {more} more</td></tr>')
        head = "".join(f"<th>{h}</th>" for h in ("LSN", "hops", "page", "epoch", "kind", "bytes", "causes",
                                                 "value after"))
        return (f"<p>{html.escape(repr(self))}</p><table><thead><tr>{head}</tr></thead>"
                f"<tbody>{''.join(rows)}</tbody></table>")


class HistoryIndex:
    """The delta records of one log by page and by LSN (arrays described in
    :mod:`mmsb.kernels.history`), brought up to date before each lookup."""

    __slots__ = ("ent", "n", "nsorted", "starts", "order", "mark", "stamp", "end", "disk_at", "mem_from")

    def __init__(self, start: int = 0) -> None:
        _kernels()  # loads _kh, which refresh() and query() use
        self.ent = np.empty((E_ROWS, 1024), np.int64)
        self.mark = np.zeros(1024, np.int32)
        self.starts = self.order = np.empty(0, np.int64)
        self.n = self.nsorted = 0
        self.stamp = 0
        self.end = start  # the log position indexing has reached (it starts where the log's records do)
        # for a log whose oldest records are in its file only: where a walk of the file goes on
        # (record offset, its frame's end, log position), and the first entry of a record in memory
        self.disk_at: tuple[int, int, int] | None = None
        self.mem_from = 0

    def forget_after(self, used: int) -> None:
        """The log was cut back to ``used`` bytes: drop the entries of records from there on."""
        if used >= self.end:
            return
        n = self.mem_from + int(np.searchsorted(self.ent[E_OFF, self.mem_from: self.n], used))
        if n < self.nsorted:  # the CSR names dropped entries: everything is tail until rebuilt
            self.starts = self.order = np.empty(0, np.int64)
            self.nsorted = 0
        self.n, self.end = n, used

    def refresh_disk(self, disk: np.ndarray, frame: int, lo: int, hi: int) -> None:
        """Start with the records of log positions ``[lo, hi)`` from the log file ``disk`` (as
        uint64 words), whose frame at byte ``frame`` holds log position ``lo`` first; call before
        any memory record is indexed."""
        self.disk_at = (frame, frame, lo)
        self._walk_disk(disk, hi, False)
        self.mem_from = self.n

    def to_disk(self, disk: np.ndarray, cut: int) -> None:
        """The log dropped its records before log position ``cut`` from memory, and its file
        holds them: entries of those records now read them there (no walk of the rest)."""
        reach = min(cut, self.end)  # memory entries (log positions, ascending) below it move
        k = self.mem_from + int(np.searchsorted(self.ent[E_OFF, self.mem_from: self.n], reach))
        n, self.n = self.n, self.mem_from
        self._walk_disk(disk, reach, True)  # rewrites the offsets of entries mem_from .. k
        if self.n != k:
            raise LogCorruptError("the log file does not hold the records memory dropped", None)
        self.n = n
        if reach < cut:  # records memory dropped before they were indexed: from the file, then
            self._walk_disk(disk, cut, False)
            self.end = cut
        self.mem_from = k if reach == cut else self.n

    def _walk_disk(self, disk: np.ndarray, stop: int, relocate: bool) -> None:
        rec, fend, lpos = self.disk_at
        room = self.n + (stop - lpos) // REC_HEADER + 1
        if not relocate and room > self.ent.shape[1]:
            ent = np.empty((E_ROWS, room), np.int64)
            ent[:, : self.n] = self.ent[:, : self.n]
            mark = np.zeros(room, np.int32)
            mark[: self.n] = self.mark[: self.n]
            self.ent, self.mark = ent, mark
        n, rec, fend, lpos = _kh.scan_file(disk, rec, fend, lpos, stop, self.ent, self.n, relocate)
        if rec < 0 or lpos != stop:
            raise LogCorruptError(f"log file record at offset {-1 - rec} has an impossible length", -1 - rec)
        self.n, self.disk_at = n, (rec, fend, lpos)

    def refresh(self, words: np.ndarray, used: int) -> None:
        """Index the records up to ``used`` bytes of the log (``words``: its buffer as uint64)."""
        if used < self.end:  # cut back by something other than rollback: never trust stale entries
            self.forget_after(used)
        kh = _kh
        while self.end < used:
            n, pos = kh.scan(words, self.end, used, self.ent, self.n)
            self.n = n
            if pos < 0:
                raise LogCorruptError(f"log record at offset {-1 - pos} has an impossible length", -1 - pos)
            self.end = pos
            if pos < used:  # the entry arrays are full
                # room for every record left to be a delta (48 bytes at least) in one step;
                # NumPy maps big arrays lazily, so rows never written cost address space only
                cap = max(2 * self.ent.shape[1], n + (used - pos) // 48 + 1)
                ent = np.empty((E_ROWS, cap), np.int64)
                ent[:, :n] = self.ent[:, :n]
                mark = np.zeros(cap, np.int32)
                mark[:n] = self.mark[:n]
                self.ent, self.mark = ent, mark
        if self.n - self.nsorted > max(MERGE_MIN, self.nsorted >> 3):
            self.starts, self.order = kh.by_slot(self.ent, self.n)
            self.nsorted = self.n

    def query(self, words: np.ndarray, disk: np.ndarray, page_id: int, depth: int,
              last: int) -> tuple[np.ndarray, bool]:
        """Rows (offset, length, hops, LSN) of the deltas found, and whether some were left out."""
        self.stamp += 1
        if self.stamp == 2**31 - 1:
            self.mark[:] = 0
            self.stamp = 1
        rows, truncated = _kh.query(words, disk, self.ent, self.n, self.starts, self.order, self.nsorted,
                                    self.mark, self.stamp, page_id, depth, last)
        return rows, bool(truncated)


def _count(value: Any, what: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InvalidArgumentError(f"{what} must be an integer, got {value!r}")
    if value < 0:
        raise InvalidArgumentError(f"{what} must be 0 or more, got {value}")
    return min(int(value), 1 << 62)  # more than any log holds: everything


def limits(depth: Any, last: Any) -> tuple[int, int]:
    """``depth`` and ``last`` checked, as ints (``last`` None: -1)."""
    return _count(depth, "depth"), -1 if last is None else _count(last, "last")


def history(state: Any, page: Any, depth: int = DEFAULT_DEPTH, last: int | None = None) -> History:
    """What :meth:`mmsb.State.history` does (see there)."""
    depth, cap = limits(depth, last)
    c = state._core()
    with c.lock:
        if state._c is not c:  # stopped while this call waited for the lock
            raise StateClosedError("the state was stopped or closed")
        log = state._log
        if not log.keeps_records:
            raise InvalidArgumentError("this state was started with log=False: it keeps no log, so no history")
        slot = state._slot(c, page)  # PageNotFoundError for a page that is not live
        page_id, size, info = state._id_of(slot), int(c.table.mv_size[slot]), state._info(slot)
        index = log._index()
        arr = log._live().array
        words = arr[: arr.size & ~7].view(np.uint64)
        disk = log._disk_words()
        rows, truncated = index.query(words, disk, page_id, depth, cap)
        # records before the log's start were trimmed: what they held is unknown, so a history
        # that did not fill the asked ``last`` may be missing some
        truncated = truncated or not log.holds_all and (cap < 0 or int((rows[2] == 0).sum()) < cap)
        blob = _kh.gather(words, disk, rows).tobytes()
    starts, lens, hops, lsns = rows.tolist()
    return History(page_id, depth, truncated, blob, starts, lens, lsns, hops, size, info)


# -- a History as bytes: how an attached process (mmsb.bus) gets the owner's answer ---------------
# int64 words: page id, depth, truncated, page size, rows, blob bytes, info bytes; then the rows'
# starts, lengths, LSNs and hops (int64 each); then the page info as JSON; then the records.
_PACK_WORDS = 7


def pack(h: History) -> bytes:
    """``h`` as bytes that :func:`unpack` turns back into an equal History."""
    info = b"" if h.info is None else h.info.to_json().encode()
    n = len(h._lsns)
    head = np.array([h.page_id, h.depth, h.truncated, h.size, n, len(h._blob), len(info)], np.int64)
    rows = np.array([h._starts, h._lens, h._lsns, h._hops], np.int64).reshape(4, n)
    return head.tobytes() + rows.tobytes() + info + h._blob


def unpack(raw: Any) -> History:
    """The History :func:`pack` wrote into ``raw`` (bytes-like, possibly longer); ValueError
    when ``raw`` does not hold one."""
    raw = memoryview(raw).cast("B")
    if len(raw) < 8 * _PACK_WORDS:
        raise ValueError("a packed history is shorter than its header")
    page_id, depth, truncated, size, n, nblob, ninfo = np.frombuffer(raw, np.int64, _PACK_WORDS).tolist()
    at = 8 * _PACK_WORDS
    if min(n, nblob, ninfo, size) < 0 or at + 32 * n + ninfo + nblob > len(raw):
        raise ValueError("a packed history's header does not match its length")
    starts, lens, lsns, hops = np.frombuffer(raw, np.int64, 4 * n, at).reshape(4, n).tolist()
    at += 32 * n
    if any(s < 0 or k < REC_HEADER or s + k > nblob for s, k in zip(starts, lens)):
        raise ValueError("a packed history's records lie outside it")
    info = None
    if ninfo:
        try:
            info = PageInfo.from_doc(json.loads(bytes(raw[at:at + ninfo])), size)
        except (TypeError, RecursionError, UnicodeDecodeError) as exc:  # JSON of the wrong shapes
            raise ValueError(f"a packed history's page info does not read: {exc}") from None
    blob = bytes(raw[at + ninfo:at + ninfo + nblob])
    # each record says its own length and kind first: both must be what the rows say
    for s_, k in zip(starts, lens):
        word = int.from_bytes(blob[s_:s_ + 8], "little")
        if word & 0xFFFFFFFF != k or (word >> 32) & 0xFF != REC_DELTA:
            raise ValueError(f"a packed history's record at {s_} is not a delta record of {k} bytes")
    return History(page_id, depth, bool(truncated), blob, starts, lens, lsns, hops, size, info)
