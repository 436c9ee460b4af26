"""Deltas: the only way bytes of a page change.

A :class:`Delta` is a change to one page: a mask plus a payload. It is either
*dense* (one mask entry and one payload byte per page byte) or *sparse* (byte
offsets and the values written there, applied in order, so a repeated offset
ends with its last value). Users build deltas with :meth:`Delta.dense` and
:meth:`Delta.sparse`; a state hands back applied deltas, which also carry the
LSN they were committed under and the page epoch they produced.

:class:`DeltaBatch` holds many sparse deltas as four flat arrays, so a whole
batch crosses into a kernel in one call.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

import numpy as np

from ._layout import ENC_DENSE, ENC_SPARSE, MAX_PAGE_SIZE, MAX_SPARSE_ENTRIES, REC_HEADER
from .errors import InvalidDeltaError

if TYPE_CHECKING:
    from .state import Page

__all__ = ["Delta", "DeltaBatch"]

_HEADER = struct.Struct("<QQQQQQ")


def _page_id(page: Any) -> int:
    pid = getattr(page, "id", page)
    if isinstance(pid, (bool, np.bool_)) or not isinstance(pid, (int, np.integer)) or pid < 0:
        raise InvalidDeltaError(f"a delta's page must be a Page handle or a page id, got {page!r}")
    return int(pid)


_U8 = np.dtype(np.uint8)
_I64 = np.dtype(np.int64)


def as_uint8(values: Any, what: str) -> np.ndarray:
    """``values`` as a 1-d uint8 array; integers must already lie in 0..255."""
    if type(values) is np.ndarray and values.dtype is _U8 and values.ndim == 1:
        return values
    if isinstance(values, (bytes, bytearray, memoryview)):
        return np.frombuffer(values, dtype=np.uint8)
    if isinstance(values, (list, tuple)):
        try:  # as they are (a float is not silently cut to an integer), checked below
            arr = np.array(values) if values else np.zeros(0, np.uint8)
        except (OverflowError, ValueError, TypeError) as exc:
            raise InvalidDeltaError(f"{what} must be bytes (integers in 0..255): {exc}") from None
    else:
        arr = np.asarray(values)
    if arr.dtype != np.uint8 and arr.size:
        if arr.dtype.kind not in "iu" or arr.min() < 0 or arr.max() > 255:
            raise InvalidDeltaError(
                f"{what} must be bytes (uint8, or integers in 0..255), got dtype {arr.dtype}"
            )
    arr = arr.astype(np.uint8, copy=False)
    if arr.ndim != 1:
        raise InvalidDeltaError(f"{what} must be 1-d, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def _frozen(arr: np.ndarray) -> np.ndarray:
    """A read-only copy of ``arr`` over immutable bytes (its write flag cannot be turned back on)."""
    return np.frombuffer(arr.tobytes(), arr.dtype)


def as_indices(indices: Any) -> np.ndarray:
    """``indices`` as a 1-d int64 array (their range is checked against the page on apply)."""
    if type(indices) is np.ndarray and indices.dtype is _I64 and indices.ndim == 1:
        return np.ascontiguousarray(indices)
    if isinstance(indices, (list, tuple)):
        try:  # as they are (a float is not silently cut to an integer), checked below
            arr = np.array(indices) if indices else np.zeros(0, np.int64)
        except (OverflowError, ValueError, TypeError) as exc:
            raise InvalidDeltaError(f"indices must be integers: {exc}") from None
    else:
        arr = np.asarray(indices)
    if arr.size and arr.dtype.kind not in "iu":
        raise InvalidDeltaError(f"indices must be integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise InvalidDeltaError("indices exceed the largest page size")
    if arr.ndim != 1:
        raise InvalidDeltaError(f"indices must be 1-d, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.int64)


class Delta:
    """A change to one page (see the module docstring).

    Attributes ``page_id``, ``kind`` (``"sparse"`` or ``"dense"``), ``lsn`` and
    ``epoch`` (``None`` until the delta is applied), and the arrays
    ``indices``/``values`` (the offsets written and their bytes, for both
    kinds) and ``mask``/``payload`` (one entry per page byte).

    A delta a state returns carries its LSN at once and reads everything else
    from its log record on first use, so a write whose result goes unused costs
    no decoding. Until then it holds the log's memory that has the record.
    """

    __slots__ = ("_lsn", "_pid", "_epoch", "_kind", "_size", "_a", "_b", "_rec", "_raw", "_page", "_arr", "_pos")

    def __init__(self) -> None:  # pragma: no cover - use the constructors
        raise TypeError("build deltas with Delta.sparse(...) or Delta.dense(...)")

    @classmethod
    def _new(cls, page_id, kind, size, a, b, rec, lsn=None, epoch=None, page=None) -> Delta:
        d = object.__new__(cls)
        d._pid, d._kind, d._size, d._a, d._b, d._rec = page_id, kind, size, a, b, rec
        d._lsn, d._epoch, d._page, d._raw = lsn, epoch, page, rec
        return d

    @classmethod
    def sparse(cls, page: Page | int, indices: Any, values: Any) -> Delta:
        """Write ``values[k]`` at byte offset ``indices[k]``, for k in order.

        Offsets are checked against the page when the delta is applied; here
        the arrays must be 1-d and of equal length, offsets integers, values
        uint8 (or integers in 0..255). Raises :class:`mmsb.InvalidDeltaError`.
        """
        pid = _page_id(page)
        idx = as_indices(indices)
        vals = as_uint8(values, "values")
        if idx.size != vals.size:
            raise InvalidDeltaError(f"indices and values differ in length: {idx.size} != {vals.size}")
        if idx.size > MAX_SPARSE_ENTRIES:
            raise InvalidDeltaError(f"a sparse delta holds at most {MAX_SPARSE_ENTRIES} entries (its log record's "
                                    f"length has 32 bits), got {idx.size}: split it, or use a dense delta")
        size = getattr(page, "size", None)
        return cls._new(pid, "sparse", size, idx, vals, None, page=page if size is not None else None)

    @classmethod
    def dense(cls, page: Page | int, mask: Any, payload: Any) -> Delta:
        """Write ``payload[j]`` at every byte ``j`` where ``mask[j]`` is true.

        ``mask`` is a bool array and ``payload`` a uint8 array, both as long as
        the page (checked when applied). Raises :class:`mmsb.InvalidDeltaError`.
        """
        pid = _page_id(page)
        m = np.asarray(mask)
        if m.dtype != np.bool_ or m.ndim != 1:
            raise InvalidDeltaError(f"a dense mask must be a 1-d bool array, got dtype {m.dtype} shape {m.shape}")
        pay = as_uint8(payload, "payload")
        if m.size != pay.size:
            raise InvalidDeltaError(f"mask and payload differ in length: {m.size} != {pay.size}")
        size = getattr(page, "size", None)
        return cls._new(pid, "dense", m.size, np.ascontiguousarray(m), np.ascontiguousarray(pay), None,
                        page=page if size is not None else None)

    @classmethod
    def _from_record(cls, rec: bytes) -> Delta:
        """An applied delta decoded lazily from its log record."""
        d = object.__new__(cls)
        d._fill(rec)
        return d

    def _fill(self, rec: bytes) -> None:
        w0, lsn, pid, epoch, _count, size = _HEADER.unpack_from(rec)
        self._pid = pid
        self._lsn = lsn
        self._epoch = epoch
        self._kind = "dense" if (w0 >> 40) & 0xFF == ENC_DENSE else "sparse"
        self._size = size
        self._rec = self._raw = rec
        self._a = self._b = self._page = self._arr = None

    def _load(self) -> Delta:
        """Read the record of a delta a state returned (see :func:`_logged`)."""
        arr, pos = self._arr, self._pos
        length = int(arr[pos:pos + 8].view(np.uint64)[0]) & 0xFFFFFFFF
        self._fill(arr[pos:pos + length].tobytes())
        return self

    # the record's fields: a delta a state returned reads them on first use
    @property
    def lsn(self) -> int | None:
        """The LSN the delta was committed under (None until applied)."""
        try:
            return self._lsn
        except AttributeError:
            return self._load()._lsn

    @property
    def page_id(self) -> int:
        """The id of the page the delta writes."""
        try:
            return self._pid
        except AttributeError:
            return self._load()._pid

    @property
    def epoch(self) -> int | None:
        """The page's epoch after the delta (None until applied)."""
        try:
            return self._epoch
        except AttributeError:
            return self._load()._epoch

    @property
    def kind(self) -> str:
        """``"sparse"`` or ``"dense"``."""
        try:
            return self._kind
        except AttributeError:
            return self._load()._kind

    def _decode(self) -> None:
        rec = self._rec
        w0, _lsn, _pid, _epoch, count, _size = _HEADER.unpack_from(rec)
        if (w0 >> 40) & 0xFF == ENC_SPARSE:
            self._a = np.frombuffer(rec, np.uint32, count, REC_HEADER).astype(np.int64)
            self._b = np.frombuffer(rec, np.uint8, count, REC_HEADER + 4 * count).copy()
        else:
            nmask = (count + 7) >> 3
            bits = np.frombuffer(rec, np.uint8, nmask, REC_HEADER)
            mask = np.unpackbits(bits, count=count, bitorder="little").view(np.bool_)
            payload = np.zeros(count, np.uint8)
            payload[mask] = np.frombuffer(rec, np.uint8, int(mask.sum()), REC_HEADER + nmask)
            self._a, self._b, self._size = mask, payload, count
        self._rec = None

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        try:
            rec = self._rec
        except AttributeError:
            rec = self._load()._rec
        if rec is not None:
            self._decode()
        return self._a, self._b

    @property
    def indices(self) -> np.ndarray:
        """Byte offsets this delta writes, in order (int64)."""
        a, _ = self._arrays()
        return a if self.kind == "sparse" else np.flatnonzero(a)

    @property
    def values(self) -> np.ndarray:
        """The bytes written at :attr:`indices` (uint8)."""
        a, b = self._arrays()
        return b if self.kind == "sparse" else b[a]

    @property
    def mask(self) -> np.ndarray:
        """One bool per page byte: which bytes this delta writes."""
        a, _ = self._arrays()
        if self.kind == "dense":
            return a
        m = np.zeros(self._known_size(), np.bool_)
        m[a] = True
        return m

    @property
    def payload(self) -> np.ndarray:
        """One byte per page byte: the value written where :attr:`mask` is true, else 0."""
        a, b = self._arrays()
        if self.kind == "dense":
            return b
        p = np.zeros(self._known_size(), np.uint8)
        p[a] = b
        return p

    @property
    def causes(self) -> tuple[int, ...]:
        """LSNs of the parent deltas that caused this one (a cascade's delta); () otherwise."""
        try:
            rec = self._raw
        except AttributeError:
            rec = self._load()._raw
        if rec is None:
            return ()
        w0 = _HEADER.unpack_from(rec)[0]
        n = w0 >> 48
        length = w0 & 0xFFFFFFFF
        return struct.unpack_from(f"<{n}Q", rec, length - 8 * n) if n else ()

    @property
    def nbytes(self) -> int:
        """How many bytes the delta writes (repeated offsets counted each time)."""
        a, b = self._arrays()
        return int(b.size) if self.kind == "sparse" else int(np.count_nonzero(a))

    def _known_size(self) -> int:
        self._arrays()
        if self._size is None:
            raise InvalidDeltaError(
                f"page size unknown for a sparse delta of page {self.page_id}: build it from a Page handle"
            )
        return self._size

    def __repr__(self) -> str:
        where = "unapplied" if self.lsn is None else f"lsn={self.lsn}, epoch={self.epoch}"
        return f"<Delta {self.kind} page={self.page_id} bytes={self.nbytes} {where}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Delta):
            return NotImplemented
        return (
            (self.page_id, self.lsn, self.epoch) == (other.page_id, other.lsn, other.epoch)
            and np.array_equal(self.indices, other.indices)
            and np.array_equal(self.values, other.values)
        )

    __hash__ = None  # type: ignore[assignment]


_new_delta = object.__new__


def _logged(arr: np.ndarray, pos: int) -> Delta:
    """The Delta a write returns: read from its record at ``arr[pos:]`` when first used.

    ``arr`` is the log buffer's array; a log never writes again over bytes it
    wrote in an array someone else holds (``LogBuffer.recycle``).
    """
    d = _new_delta(Delta)
    d._arr = arr
    d._pos = pos
    return d


class DeltaBatch:
    """Many sparse deltas in four flat arrays, applied by ``State.apply_batch`` in one call.

    Delta ``i`` writes page ``pages[i]`` at ``indices[starts[i]:starts[i+1]]``
    with ``values[starts[i]:starts[i+1]]``. Deltas apply in batch order, so
    several deltas on one page keep their order.
    """

    __slots__ = ("pages", "starts", "indices", "values", "_reach", "_owners")

    def __init__(self, pages: Any, starts: Any, indices: Any, values: Any) -> None:
        """Build a batch; checks shapes and offsets' signs (pages and ranges are checked on apply).

        ``pages``: page ids (an integer array) or Page handles; ``starts``:
        ``len(pages) + 1`` nondecreasing offsets with ``starts[0] == 0`` and
        ``starts[-1] == len(indices) == len(values)``. The batch keeps read-only
        copies of the arrays: changing the arrays it was built from afterwards
        changes nothing. Raises :class:`mmsb.InvalidDeltaError`.
        """
        owners: frozenset = frozenset()
        if isinstance(pages, (list, tuple)) and any(hasattr(p, "id") for p in pages):
            owners = frozenset(id(p._state) for p in pages if hasattr(p, "_state"))
            pages = [_page_id(p) for p in pages]
        pg = np.asarray(pages)
        if pg.ndim != 1 or (pg.size and pg.dtype.kind not in "iu"):
            raise InvalidDeltaError(f"pages must be a 1-d array of page ids, got dtype {pg.dtype} shape {pg.shape}")
        if pg.size and (pg.min() < 0 or pg.max() > np.iinfo(np.int64).max):
            raise InvalidDeltaError("a page id in the batch is negative or too large")
        # what the checks below see is what the kernel will read: copies nobody else can write
        pg = _frozen(np.ascontiguousarray(pg, dtype=np.int64))
        st = _frozen(as_indices(starts))
        idx = _frozen(as_indices(indices))
        vals = _frozen(as_uint8(values, "values"))
        if st.size != pg.size + 1:
            raise InvalidDeltaError(f"starts needs len(pages) + 1 = {pg.size + 1} entries, got {st.size}")
        if st[0] != 0 or st[-1] != idx.size:
            raise InvalidDeltaError(f"starts must run from 0 to len(indices) = {idx.size}, got {st[0]} .. {st[-1]}")
        if idx.size != vals.size:
            raise InvalidDeltaError(f"indices and values differ in length: {idx.size} != {vals.size}")
        if st.size > 1:
            lengths = np.diff(st)
            if np.any(lengths < 0):
                raise InvalidDeltaError("starts must be nondecreasing")
            if lengths.max() > MAX_SPARSE_ENTRIES:
                raise InvalidDeltaError(f"a delta of the batch holds more than {MAX_SPARSE_ENTRIES} entries (its log "
                                        "record's length has 32 bits): split it")
        if idx.size and (idx.min() < 0 or idx.max() >= MAX_PAGE_SIZE):
            raise InvalidDeltaError("an index in the batch is negative or beyond the largest page size")
        # what applying the batch needs of its offsets, found by the first apply (mmsb.kernels.commit)
        reach = np.zeros(pg.size + 1, np.int64)
        reach[-1] = -1
        self.pages, self.starts, self.indices, self.values, self._reach, self._owners = pg, st, idx, vals, reach, owners

    @classmethod
    def from_sparse(cls, pages: Any, starts: Any, indices: Any, values: Any) -> DeltaBatch:
        """``DeltaBatch(pages, starts, indices, values)``, by name."""
        return cls(pages, starts, indices, values)

    def __setattr__(self, name: str, value: Any) -> None:
        if hasattr(self, "_owners"):
            raise AttributeError("a DeltaBatch is immutable: build another")
        object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return int(self.pages.size)

    @property
    def nbytes(self) -> int:
        """Bytes the batch writes."""
        return int(self.values.size)

    def __repr__(self) -> str:
        return f"<DeltaBatch deltas={len(self)} bytes={self.nbytes}>"
