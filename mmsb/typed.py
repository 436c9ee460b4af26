"""Typed pages: a dtype and shape over a page's bytes, a name, and key/value metadata.

A page is bytes; a *typed* page also says how to read them (``dtype``,
``shape``, C order). Names and metadata are labels any page may carry. None of
this changes a byte page or its write path: a state keeps an
:class:`Annotations` only once some page carries something, and the commit
kernels never look at it. What a page carries is logged as one info record
(type 7, docs/FORMAT.md) in the commit that set it, and kept in checkpoints, so
replays and restores give pages back their types, names and metadata.

The checks here turn user values into what the log and the kernels take (a
page's bytes, a sparse delta's byte offsets) and raise the typed errors a user
sees; none changes a state.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from ._layout import MAX_PAGE_SIZE
from .errors import InvalidArgumentError, InvalidDeltaError, InvalidPageError
from .validate import _check_size

__all__ = ["Annotations", "PageInfo"]

_U8 = np.dtype(np.uint8)
# a record's name field holds 16 bits of length: an info record's JSON must fit it
MAX_INFO_BYTES = 0xFFFF


class PageInfo:
    """What one page carries beyond its bytes: ``dtype`` and ``shape`` (None for a byte page),
    ``name`` (None when unnamed) and ``meta`` (a dict of JSON values). Never changed in place:
    a change makes a new one, so a handle or a History that holds one sees a fixed value."""

    __slots__ = ("dtype", "shape", "name", "meta")

    def __init__(self, dtype: np.dtype | None = None, shape: tuple[int, ...] | None = None,
                 name: str | None = None, meta: dict[str, Any] | None = None) -> None:
        self.dtype, self.shape, self.name = dtype, shape, name
        self.meta = {} if meta is None else meta

    def replace(self, **changes: Any) -> PageInfo:
        fields = {"dtype": self.dtype, "shape": self.shape, "name": self.name, "meta": self.meta}
        fields.update(changes)
        return PageInfo(**fields)

    @property
    def empty(self) -> bool:
        return self.dtype is None and self.name is None and not self.meta

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        if self.dtype is not None:
            doc["dtype"] = np.lib.format.dtype_to_descr(self.dtype)
            doc["shape"] = list(self.shape or ())
        if self.name is not None:
            doc["name"] = self.name
        if self.meta:
            doc["meta"] = self.meta
        return doc

    def to_json(self) -> str:
        return json.dumps(self.to_doc(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_doc(cls, doc: Any, size: int) -> PageInfo:
        """The info a log or checkpoint recorded for a page of ``size`` bytes; ValueError when it
        does not describe one (the reader turns that into LogCorruptError)."""
        if not isinstance(doc, dict) or set(doc) - {"dtype", "shape", "name", "meta"}:
            raise ValueError(f"page info {doc!r} is not a mapping of dtype, shape, name, meta")
        dtype = shape = None
        if "dtype" in doc:
            descr = doc["dtype"]
            if isinstance(descr, list):  # a structured dtype's descr: JSON made its tuples lists
                descr = [tuple(f) for f in descr]
            try:
                dtype = check_dtype(np.lib.format.descr_to_dtype(descr))
                shape = check_shape(doc.get("shape"), dtype, size)
            except (InvalidPageError, TypeError, ValueError, KeyError) as exc:
                raise ValueError(f"page info names dtype {doc.get('dtype')!r}, shape {doc.get('shape')!r} "
                                 f"for {size} bytes: {exc}") from None
        elif "shape" in doc:
            raise ValueError("page info gives a shape without a dtype")
        name = doc.get("name")
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"page info names the page {name!r}")
        meta = doc.get("meta", {})
        if not isinstance(meta, dict):
            raise ValueError(f"page metadata {meta!r} is not a mapping")
        return cls(dtype, shape, name, meta)


class Annotations:
    """A state's page infos by table slot, names by name, per-page watches, and its functions."""

    __slots__ = ("info", "names", "watches", "functions", "kinds", "_kind_codes")

    def __init__(self) -> None:
        self.info: dict[int, PageInfo] = {}
        # per slot, a code of its (dtype, shape): 0 for bytes; update_pages compares them at once
        self.kinds = np.zeros(64, np.int32)
        self._kind_codes: dict[tuple[str, tuple[int, ...]], int] = {}
        self.names: dict[str, int] = {}
        self.watches: dict[int, list[Any]] = {}
        # the user functions the state was bound with, by logged name: its own replays bind them again
        self.functions: dict[str, Any] = {}

    def kinds_of(self, slots: np.ndarray) -> np.ndarray:
        inside = slots < self.kinds.size
        return np.where(inside, self.kinds[np.minimum(slots, self.kinds.size - 1)], 0)

    def set(self, slot: int, info: PageInfo) -> None:
        code = 0
        if info.dtype is not None:
            key = (info.dtype.str if info.dtype.fields is None else str(info.dtype.descr), info.shape)
            code = self._kind_codes.setdefault(key, len(self._kind_codes) + 1)
        if slot >= self.kinds.size:
            grown = np.zeros(max(2 * self.kinds.size, slot + 1), np.int32)
            grown[: self.kinds.size] = self.kinds
            self.kinds = grown
        self.kinds[slot] = code
        old = self.info.get(slot)
        if old is not None and old.name is not None:
            del self.names[old.name]
        if info.empty:
            self.info.pop(slot, None)
        else:
            self.info[slot] = info
            if info.name is not None:
                self.names[info.name] = slot

    def forget(self, slot: int) -> None:
        """A page deleted: its info, name and watches go with it."""
        self.set(slot, PageInfo())
        self.watches.pop(slot, None)


# -- checks ----------------------------------------------------------------------


def check_dtype(dtype: Any) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise InvalidPageError(f"dtype {dtype!r} is not a NumPy dtype: {exc}") from None
    if dt.hasobject:
        raise InvalidPageError(f"dtype {dt} holds Python objects; a page holds bytes only")
    if dt.itemsize == 0:
        raise InvalidPageError(f"dtype {dt} has no size")
    if dt.subdtype is not None:
        raise InvalidPageError(f"dtype {dt} is a subarray dtype: give its shape as the page's shape instead")
    return dt


def check_shape(shape: Any, dtype: np.dtype, size: int | None) -> tuple[int, ...]:
    """The page's shape as a tuple; ``size`` (bytes), when given, must be what it takes."""
    if shape is None:
        if size is None:
            raise InvalidPageError("a typed page needs a shape or a size")
        if size % dtype.itemsize:
            raise InvalidPageError(f"a page of {size} bytes is not a whole number of {dtype} "
                                   f"({dtype.itemsize}-byte) elements")
        return (size // dtype.itemsize,)
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, (bool, np.bool_)):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        raise InvalidPageError(f"shape {shape!r} is not a tuple of integers") from None
    if not dims or any(isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)) or d < 1
                       for d in dims):
        raise InvalidPageError(f"shape {shape!r}: a page's shape is one or more positive integers")
    dims = tuple(int(d) for d in dims)
    nbytes = math.prod(dims) * dtype.itemsize
    if not 1 <= nbytes <= MAX_PAGE_SIZE:
        raise InvalidPageError(f"shape {dims} of {dtype} takes {nbytes} bytes; a page holds 1 B .. 3 GiB")
    if size is not None and nbytes != size:
        raise InvalidPageError(f"shape {dims} of {dtype} takes {nbytes} bytes, not the size given ({size})")
    return dims


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"a page name is a non-empty string, got {name!r}")
    if len(name.encode()) > 1024:
        raise InvalidArgumentError("a page name takes at most 1024 bytes of UTF-8")
    return name


def check_meta(meta: Any) -> dict[str, Any]:
    """A copy of ``meta`` that JSON holds exactly (string keys; str, int, float, bool, None, lists, dicts)."""
    if not isinstance(meta, dict) or not all(isinstance(k, str) for k in meta):
        raise InvalidArgumentError(f"page metadata is a dict with string keys, got {meta!r}")
    try:
        text = json.dumps(meta, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"page metadata must be JSON values (str, int, float, bool, None, lists, "
                                   f"dicts; no NaN or infinity): {exc}") from None
    copy = json.loads(text)
    if copy != meta:  # tuples become lists, and the log would give back what the user did not give
        raise InvalidArgumentError("page metadata must be JSON values: lists, not tuples")
    return copy


def info_text(info: PageInfo) -> str:
    text = info.to_json()
    if len(text.encode()) > MAX_INFO_BYTES:
        raise InvalidArgumentError(f"a page's name and metadata take {len(text.encode())} bytes as JSON; "
                                   f"at most {MAX_INFO_BYTES} fit a log record")
    return text


# -- values <-> bytes --------------------------------------------------------------


# what converts into what: up this order, and between signed and unsigned integers whose values fit
_RANK = {"b": 0, "i": 1, "u": 1, "f": 2, "c": 3}


def _as_dtype(data: Any, dtype: np.dtype, what: str) -> np.ndarray:
    """``data`` as an array of ``dtype``, converting only where no meaning is lost (see _RANK)."""
    if type(data) is not np.ndarray:
        try:
            probe = np.asarray(data)
        except (TypeError, ValueError) as exc:  # a ragged list, say
            raise InvalidDeltaError(f"{what} is not an array: {exc}") from None
        if dtype.fields is not None or probe.dtype.kind not in "biufc":
            try:
                return np.asarray(data, dtype=dtype)
            except (TypeError, ValueError) as exc:
                raise InvalidDeltaError(f"{what} cannot be read as {dtype}: {exc}") from None
        data = probe
    if data.dtype != dtype:
        src, dst = _RANK.get(data.dtype.kind), _RANK.get(dtype.kind)
        if src is None or dst is None or src > dst:
            raise InvalidDeltaError(f"{what} of dtype {data.dtype} cannot become {dtype} without losing "
                                    f"what it means (bool < integer < float < complex); convert it first")
        if data.dtype.kind in "iu" and dtype.kind in "iu" and data.size:
            lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
            if data.min() < lo or data.max() > hi:
                raise InvalidDeltaError(f"{what} holds integers outside {dtype}'s range [{lo}, {hi}]")
        data = data.astype(dtype)
    return data


def page_bytes(info: PageInfo, data: Any, size: int) -> np.ndarray:
    """The bytes a typed page holds after a whole-page write of ``data``: an array of the page's
    shape in its dtype (or convertible to it), or a 1-d uint8 array of its byte size."""
    if type(data) is np.ndarray and data.dtype == _U8 and data.ndim == 1 and data.size == size \
            and info.dtype != _U8:
        return np.ascontiguousarray(data)
    assert info.dtype is not None and info.shape is not None
    arr = _as_dtype(data, info.dtype, "page data")
    if arr.shape != info.shape:
        raise InvalidDeltaError(f"page data has shape {arr.shape}; the page holds {info.shape} of {info.dtype} "
                                f"(or {size} uint8 bytes)")
    return np.ascontiguousarray(arr).reshape(-1).view(_U8)


def row_run(info: PageInfo | None, size: int, values: Any, at: Any) -> tuple[int, np.ndarray] | None:
    """For ``at`` an int or a unit-step slice (rows of the first axis, the common slice write):
    (first byte, the new bytes of those rows); None for any other index. The short path: no
    index arrays, and the bytes go to one commit kernel that keeps what changed."""
    if type(at) is not int and not (type(at) is slice and (at.step is None or at.step == 1)):
        return None
    dtype = _U8 if info is None or info.dtype is None else info.dtype
    shape = (size,) if info is None or info.shape is None else info.shape
    try:
        picked = range(shape[0])[at]
    except IndexError:
        raise InvalidDeltaError(f"at={at!r} does not index a page of shape {shape}: index out of range") from None
    row = size // shape[0]
    lo, hi = (picked, picked + 1) if type(at) is int else (picked.start, max(picked.start, picked.stop))
    new = _as_dtype(values, dtype, "the values written")
    want = shape[1:] if type(at) is int else (hi - lo, *shape[1:])
    if new.shape != want:
        try:
            new = np.broadcast_to(new, want)
        except ValueError:
            raise InvalidDeltaError(f"values of shape {new.shape} do not fit page[{at!r}], of shape {want}") from None
    return lo * row, np.ascontiguousarray(new).reshape(-1).view(_U8)


def _basic(key: tuple) -> bool:
    """Whether NumPy indexes with ``key`` by a view (ints, slices, Ellipsis, None: no element twice)."""
    return all(k is None or k is Ellipsis or type(k) is slice or (isinstance(k, (int, np.integer))
                                                                and not isinstance(k, (bool, np.bool_)))
               for k in key)


def sparse_write(info: PageInfo | None, current: np.ndarray, values: Any, at: Any) -> tuple[np.ndarray, np.ndarray]:
    """(byte offsets, bytes) that make ``page[at] = values`` true, on a page whose bytes are
    ``current``: only the bytes that change, each offset once (where ``at`` names an element
    twice, the last value wins, as in NumPy)."""
    dtype = _U8 if info is None or info.dtype is None else info.dtype
    shape = current.shape if info is None or info.shape is None else info.shape
    run = row_run(info, current.size, values, at)
    if run is not None:  # rows of the first axis: one run of bytes, compared in place
        start, data = run
        changed = np.flatnonzero(current[start:start + data.size] != data)
        return changed + start, data[changed]
    typed = current.view(dtype).reshape(shape)
    key = at if isinstance(at, tuple) else (at,)
    if not any(k is Ellipsis for k in key):
        key += (Ellipsis,)  # keeps a single element a 0-d view, not a scalar copy
    basic = _basic(key)
    try:
        sel = typed[key]
    except (IndexError, TypeError, ValueError) as exc:
        raise InvalidDeltaError(f"at={at!r} does not index a page of shape {shape}: {exc}") from None
    item = dtype.itemsize
    start = sel.__array_interface__["data"][0] - typed.__array_interface__["data"][0] if basic and sel.size else 0
    if basic and sel.flags.c_contiguous:  # a run of whole elements (a row, a block of rows, one element)
        offsets = np.arange(start, start + sel.nbytes, dtype=np.int64)
    else:
        if basic:  # the view's strides give each element's offset
            elems = np.full(sel.shape, start, np.int64)
            for d, (n, stride) in enumerate(zip(sel.shape, sel.strides)):
                elems += (np.arange(n, dtype=np.int64) * stride).reshape((n,) + (1,) * (sel.ndim - d - 1))
        else:  # advanced indexing copies: find the elements through an index array
            elems = np.arange(typed.size, dtype=np.int64).reshape(shape)[key] * item
        offsets = (elems.reshape(-1, 1) + np.arange(item, dtype=np.int64)).reshape(-1)
    new = _as_dtype(values, dtype, "the values written")
    if new.shape != sel.shape:
        try:
            new = np.broadcast_to(new, sel.shape)
        except ValueError:
            raise InvalidDeltaError(f"values of shape {new.shape} do not fit page[{at!r}], of shape "
                                    f"{sel.shape}") from None
    data = np.ascontiguousarray(new).reshape(-1).view(_U8)
    if not basic and offsets.size and np.unique(offsets).size != offsets.size:
        # keep each offset's last entry: reverse, take first occurrences, restore the order
        rev = offsets[::-1]
        _, first = np.unique(rev, return_index=True)
        keep = np.sort(offsets.size - 1 - first)
        offsets, data = offsets[keep], data[keep]
    changed = current[offsets] != data
    return offsets[changed], data[changed]


def typed_view(info: PageInfo | None, raw: np.ndarray) -> np.ndarray:
    """The page's bytes ``raw`` seen as its dtype and shape (bytes when it has none)."""
    if info is None or info.dtype is None:
        return raw
    return raw.view(info.dtype).reshape(info.shape)


def check_info(size: Any, dtype: Any, shape: Any, meta: Any) -> tuple[int, PageInfo]:
    """(size, info) of a new page from ``create_page``'s typing arguments, checked."""
    info = PageInfo(meta=None if meta is None else check_meta(meta))
    if dtype is None and shape is None:
        return _check_size(size), info
    dt = check_dtype(np.uint8 if dtype is None else dtype)
    if size is not None:
        size = _check_size(size)
    dims = check_shape(shape, dt, size)
    return dt.itemsize * int(np.prod(dims)), info.replace(dtype=dt, shape=dims)
