"""Checkpoints: the whole state at one LSN in one file, written atomically.

A header, then sections, each framed by its tag, CRC32C and length: META
(JSON: counters, LSN, edge kinds, bindings by name, and which log and where
in it the state stood), SLOTS (every page-table slot's meta, size and epoch,
so a restored state hands out the same ids next), FREE (the free-slot stack),
DATA (the live pages' bytes), EDGES (parent id, child id, kind code). Written
to a temporary file, synced, renamed over the target, and the directory
synced. Reading checks everything and raises :class:`mmsb.LogCorruptError`
with the offset for any damage; layout in ``docs/FORMAT.md``.
"""

from __future__ import annotations

import json
import tempfile
import os
import struct
import time
import uuid
from typing import Any

import numpy as np

from .._layout import (
    DTYPE_NAMES,
    FLAG_LIVE,
    ID_SLOT_BITS,
    GEN_TAG_SHIFT,
    ID_SLOT_MASK,
    MAX_GENERATION,
    MAX_TAG,
    MAX_PAGE_SIZE,
    META_FLAG_SHIFT,
    META_GEN_MASK,
    META_LOC_SHIFT,
    LOC_GPU,
    OPS,
    T_EPOCH,
    T_META,
    T_OFFSET,
    T_SIZE,
)
from .._version import __version__
from ..errors import InvalidArgumentError, LogCorruptError, LogIOError, LogTrimmedError
from ..functions import MissingFunction, function_name, lookup
from ..graph import FIRST_USER_KIND
from .file import _read_all
from ..arena import GUARD_BIT
from ..typed import PageInfo
from .memory import LogBuffer, NullLog

MAGIC = b"MMSBCKPT"
VERSION = 1
# magic, version, header size, checkpoint id, created (ns), LSN, section count, CRC32C of the rest
_HEADER = struct.Struct("<8sII16sQQII8x")
HEADER_SIZE = _HEADER.size  # 64
_SECTION = struct.Struct("<IIQ")  # tag, CRC32C of the payload, payload bytes
META, SLOTS, FREE, DATA, EDGES = 1, 2, 3, 4, 5
_TAGS = (META, SLOTS, FREE, DATA, EDGES)
_LIVE = FLAG_LIVE << META_FLAG_SHIFT
_OP_NAMES = {code: name for name, code in OPS.items()}


def _crc(arr: np.ndarray, seed: int = 0) -> int:
    from ..kernels.checksum import crc32c

    return int(crc32c(arr, 0, arr.size, seed))


def _bytes(b: bytes) -> np.ndarray:
    return np.frombuffer(b, np.uint8)


def write(st: Any, c: Any, path: str, log_ref: dict[str, Any] | None) -> Stored:
    """Write the checkpoint of state ``st`` (core ``c``, lock held) to ``path``, atomically."""
    from ..kernels import logfile

    table, used = c.table, c.table.used
    a = table.array
    meta = a[T_META, :used] & ~np.uint64(GUARD_BIT)  # a binding's guard comes back with the binding
    live = np.flatnonzero(meta & np.uint64(_LIVE))
    sizes = a[T_SIZE, live]
    data = np.empty(int(sizes.sum()), np.uint8)
    logfile.copy_pages(c.arena.data, a[T_OFFSET, live], sizes, data, False)
    on_dev = np.flatnonzero((meta[live] >> np.uint64(META_LOC_SHIFT)) & np.uint64(0xFF) == LOC_GPU)
    if on_dev.size:  # device pages: their bytes come from the device, one copy each
        ends = np.cumsum(sizes.astype(np.int64))
        for i in on_dev.tolist():
            size = int(sizes[i])
            data[ends[i] - size:ends[i]] = c.dev.read(int(live[i]), size)
    slots = np.stack([meta, a[T_SIZE, :used], a[T_EPOCH, :used]]).T.copy()
    g = c.prop.graph
    indptr, children, kinds = g.csr()
    parents = np.repeat(np.arange(g.num_nodes, dtype=np.int64), np.diff(indptr))
    gens = (meta & np.uint64(META_GEN_MASK)).astype(np.int64) << ID_SLOT_BITS
    edges = np.stack([parents | gens[parents], children | gens[children], kinds.astype(np.int64)]).T.copy()
    bindings = []
    for child, b in sorted(c.prop.bindings.items()):
        if b.mirror:
            continue  # made by its sync edge, which the edges section holds
        fn = "" if b.fn is None else (b.fn.name if isinstance(b.fn, MissingFunction) else function_name(b.fn))
        bindings.append({"child": st._id_of(child), "op": _OP_NAMES.get(b.op, ""), "function": fn,
                         "dtype": DTYPE_NAMES[b.dtype], "parents": [st._id_of(p) for p in b.parents],
                         "weights": list(b.weights), "writable": b.writable})
    kinds = {name: code for name, code in g._kinds.items() if code >= FIRST_USER_KIND}
    doc = {"mmsb": __version__, "lsn": c.lsn, "deltas": c.deltas, "slots": used, "kinds": kinds,
           "bindings": bindings, "log": log_ref, "tag": table.fresh_gen >> GEN_TAG_SHIFT}
    if st._ann is not None and st._ann.info:
        doc["pages"] = {str(st._id_of(slot)): info.to_doc() for slot, info in sorted(st._ann.info.items())}
    sections = [
        (META, _bytes(json.dumps(doc).encode())),
        (SLOTS, slots.view(np.uint8).reshape(-1)),
        (FREE, np.array(table.free, np.int64).view(np.uint8)),
        (DATA, data),
        (EDGES, edges.view(np.uint8).reshape(-1)),
    ]
    ckpt_id = uuid.uuid4().bytes
    head = bytearray(_HEADER.pack(MAGIC, VERSION, HEADER_SIZE, ckpt_id, time.time_ns(), c.lsn, len(sections), 0))
    struct.pack_into("<I", head, 52, _crc(_bytes(bytes(head[:52]))))
    tmp = ""
    try:
        # a name of its own: two checkpoints to one path at once each write whole, and the later wins
        fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".tmp-", dir=os.path.dirname(os.path.abspath(path)))
        with os.fdopen(fd, "wb") as f:
            f.write(head)
            for tag, payload in sections:
                f.write(_SECTION.pack(tag, _crc(payload), payload.size))
                f.write(memoryview(payload))
                f.write(bytes(-payload.size % 8))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        if tmp:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        raise LogIOError(f"cannot write checkpoint {path!r}: {exc}") from exc
    return Stored(path, ckpt_id, c.lsn)


class Stored:
    """A checkpoint known by path, id and LSN, read from its file only when needed: a state whose
    history starts at a checkpoint holds its pages once (in the file), not twice."""

    def __init__(self, path: str, ckpt_id: bytes, lsn: int) -> None:
        self.path, self.id, self.lsn = path, ckpt_id, lsn

    def read(self) -> Checkpoint:
        try:
            ck = read(self.path)
        except InvalidArgumentError:
            ck = None
        if ck is None or ck.id != self.id:
            raise LogTrimmedError(
                f"checkpoint {self.path!r}, where this state's history starts (LSN {self.lsn}), was "
                "removed or replaced: what came before its log records is gone", self.lsn + 1)
        return ck


class Checkpoint:
    """A checkpoint read back and checked (see :func:`read`)."""

    def __init__(self, path: str, ckpt_id: bytes, lsn: int, doc: dict[str, Any], slots: np.ndarray,
                 free: np.ndarray, data: np.ndarray, edges: np.ndarray) -> None:
        self.path, self.id, self.lsn, self.doc = path, ckpt_id, lsn, doc
        self.slots, self.free, self.data, self.edges = slots, free, data, edges


def read(path: Any) -> Checkpoint:
    """Read and check a checkpoint file; :class:`mmsb.LogCorruptError` names any damage."""
    path = os.fspath(path)
    what = f"checkpoint {path!r}"
    try:
        with open(path, "rb") as f:
            raw = _read_all(f.fileno())  # writable: restore copies pages out of it in place
    except FileNotFoundError:
        raise InvalidArgumentError(f"{what} does not exist") from None
    except OSError as exc:
        raise LogIOError(f"cannot read {what}: {exc}") from exc

    def bad(why: str, offset: int) -> LogCorruptError:
        return LogCorruptError(f"{what} is damaged at offset {offset}: {why}", offset)

    if len(raw) < HEADER_SIZE:
        raise bad("shorter than a checkpoint header", 0)
    magic, version, hsize, ckpt_id, _, lsn, count, crc = _HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise bad(f"not an mmsb checkpoint (magic {magic!r})", 0)
    if version != VERSION or hsize != HEADER_SIZE:
        raise bad(f"format version {version} is not one this mmsb reads ({VERSION})", 8)
    if crc != _crc(_bytes(raw[:52])):
        raise bad("the header fails its checksum", 0)
    if any(raw[56:HEADER_SIZE]):  # padding is outside the checksums: it must be zero, as written
        raise bad("the header's padding is not zero", 56)
    buf = raw
    found: dict[int, np.ndarray] = {}
    pos = HEADER_SIZE
    for _ in range(count):
        if len(raw) - pos < _SECTION.size:
            raise bad("a section header is cut off", pos)
        tag, scrc, n = _SECTION.unpack_from(raw, pos)
        start = pos + _SECTION.size
        if tag not in _TAGS or tag in found or n > len(raw) - start:
            raise bad(f"section tag {tag} of {n} bytes is not expected here", pos)
        payload = buf[start:start + n]
        if _crc(payload) != scrc:
            raise bad(f"section {tag} fails its checksum", pos)
        found[tag] = payload
        pos = start + n + (-n % 8)
        if any(raw[start + n:pos]):
            raise bad(f"the padding after section {tag} is not zero", start + n)
    if pos != len(raw) or len(found) != len(_TAGS):
        raise bad("the sections do not add up to the file", min(pos, len(raw)))
    try:
        doc = json.loads(bytes(found[META]).decode())
        if not isinstance(doc, dict) or doc.get("lsn") != lsn:
            raise ValueError("metadata does not match the header")
        used = int(doc["slots"])
        slots, free, edges = found[SLOTS], found[FREE], found[EDGES]
        if slots.size != 24 * used or free.size % 8 or edges.size % 24:
            raise ValueError("table sections have the wrong sizes")
        slots = slots.view(np.uint64).reshape(used, 3)
        free = free.view(np.int64)
        edges = edges.view(np.int64).reshape(-1, 3)
        _check_table(slots, free, found[DATA])
        _check_doc(doc)
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError, OverflowError,
            RecursionError) as exc:
        raise bad(f"its contents are inconsistent ({type(exc).__name__}: {str(exc)[:200]})", HEADER_SIZE) from None
    return Checkpoint(path, ckpt_id, lsn, doc, slots, free, found[DATA], edges)


def _is_id(x: Any) -> bool:
    return type(x) is int and 0 <= x < 1 << 63


def _check_doc(doc: dict[str, Any]) -> None:
    """The metadata's shape, before anything acts on it (a hostile file may put anything there)."""
    if not _is_id(doc.get("deltas")):
        raise ValueError("the delta count is not a count")
    kinds = doc.get("kinds")
    if not isinstance(kinds, dict) or not all(isinstance(k, str) and _is_id(v) for k, v in kinds.items()):
        raise ValueError("edge kinds are not names and codes")
    bindings = doc.get("bindings")
    if not isinstance(bindings, list):
        raise ValueError("bindings are not a list")
    for b in bindings:
        if not (isinstance(b, dict) and _is_id(b.get("child")) and isinstance(b.get("op"), str)
                and isinstance(b.get("function"), str) and isinstance(b.get("dtype"), str)
                and isinstance(b.get("parents"), list) and all(_is_id(p) for p in b["parents"])
                and isinstance(b.get("weights"), list) and len(b["weights"]) == len(b["parents"])
                and all(type(w) in (int, float) for w in b["weights"])
                and type(b.get("writable", False)) is bool):
            raise ValueError("a binding is not well formed")
    tag = doc.get("tag", 0)
    if type(tag) is not int or not 0 <= tag <= MAX_TAG:
        raise ValueError(f"the history tag is not an int from 0 to {MAX_TAG}")
    pages = doc.get("pages", {})
    if not isinstance(pages, dict) or not all(isinstance(k, str) and k.isdigit() for k in pages):
        raise ValueError("page infos are not a mapping of page ids")
    log = doc.get("log")
    if log is not None and not (isinstance(log, dict) and all(isinstance(log.get(k), str) for k in ("id", "base"))
                                and _is_id(log.get("pos"))):
        raise ValueError("the log reference is not well formed")


def _check_table(slots: np.ndarray, free: np.ndarray, data: np.ndarray) -> None:
    nbytes = data.size
    meta, sizes = slots[:, 0], slots[:, 1]
    live = (meta & np.uint64(_LIVE)) != 0
    if np.any(meta & ~np.uint64(_LIVE | META_GEN_MASK | 0xFF << 32)):
        raise ValueError("slot flags out of range")
    loc = (meta >> np.uint64(META_LOC_SHIFT)) & np.uint64(0xFF)
    if np.any(loc > LOC_GPU) or np.any(~live & (loc != 0)):
        raise ValueError("a page location out of range")
    if np.any((meta & np.uint64(META_GEN_MASK)) > MAX_GENERATION):
        raise ValueError("a generation out of range")
    if np.any(live & ((sizes < 1) | (sizes > MAX_PAGE_SIZE))) or np.any(~live & (sizes != 0)):
        raise ValueError("a page size out of range")
    if np.any(~live & (slots[:, 2] != 0)):
        raise ValueError("a free slot carries an epoch")
    if int(sizes[live].sum()) != nbytes:
        raise ValueError("page bytes do not match the sizes")
    # a page no delta ever wrote is zeros (and a pooled state's reset relies on it)
    unwritten = (slots[live, 2] == 0).repeat(sizes[live].astype(np.int64))
    if np.any(data[unwritten]):
        raise ValueError("a page at epoch 0 holds bytes other than zero")
    if free.size and (free.min() < 0 or free.max() >= slots.shape[0] or np.unique(free).size != free.size
                      or live[free].any()):
        raise ValueError("the free-slot list names live or unknown slots")


def load(st: Any, ck: Checkpoint) -> None:
    """Make the fresh state ``st`` hold checkpoint ``ck`` (as a replay would: no cascades)."""
    from ..kernels import logfile

    c = st._c
    table, arena = c.table, c.arena
    st._adopt_tag(c, ck.doc.get("tag", 0))  # a checkpoint of an older mmsb: its ids all carry tag 0
    used = ck.slots.shape[0]
    table.reserve(used)
    a = table.array
    live = np.flatnonzero(ck.slots[:, 0] & np.uint64(_LIVE))
    sizes = ck.slots[live, 1]
    offs = np.empty(live.size, np.uint64)
    for size in np.unique(sizes).tolist():
        pick = sizes == size
        offs[pick] = arena.allocate_many(int(pick.sum()), int(size))
    a[T_META, :used] = ck.slots[:, 0]
    # pages the checkpoint had on the device load on the host, and go there at the end (see place)
    loc = np.uint64(0xFF << META_LOC_SHIFT)
    on_dev = live[(ck.slots[live, 0] & loc) != 0]
    if on_dev.size:
        a[T_META, on_dev] &= ~loc
        gens = (a[T_META, on_dev] & np.uint64(0xFFFFFFFF)).astype(np.int64)
        st._pending_gpu.append(on_dev.astype(np.int64) | gens << 32)
    a[T_SIZE, :used] = ck.slots[:, 1]
    a[T_EPOCH, :used] = ck.slots[:, 2]
    a[T_OFFSET, live] = offs
    table.used = used
    table.free[:] = ck.free.tolist()
    logfile.copy_pages(arena.data, offs, sizes, ck.data, True)
    c.lsn, c.deltas = int(ck.lsn), int(ck.doc["deltas"])
    st._replaying = True
    log, st._log = st._log, NullLog(LogBuffer(1024))  # the graph is the checkpoint's: nothing to log
    try:
        for key, info_doc in ck.doc.get("pages", {}).items():
            slot = st._slot(c, int(key))
            info = PageInfo.from_doc(info_doc, int(a[T_SIZE, slot]))
            if info.name is not None and info.name in st._annotations().names:
                raise ValueError(f"two pages are named {info.name!r}")
            st._annotations().set(slot, info)
        for b in ck.doc["bindings"]:
            op: Any = b["op"]
            if not op:
                op = lookup(b["function"]) or MissingFunction(b["function"])
            st.register_recompute(b["child"], b["parents"], op, dtype=b["dtype"], weights=b["weights"],
                                  writable=b.get("writable", False))
        names = {code: name for name, code in ck.doc["kinds"].items()}
        names.update({0: "data", 1: "control", 2: "sync"})
        g = c.prop.graph
        for p, child, kind in ck.edges.tolist():
            if not g.has_edge(p & ID_SLOT_MASK, child & ID_SLOT_MASK):  # a binding's edges are in already
                st.add_dependency(p, child, names[kind])
    except Exception as exc:  # noqa: BLE001 - whatever a hostile graph makes fail is damage
        raise LogCorruptError(f"checkpoint {ck.path!r}: its page infos or graph do not apply ({type(exc).__name__}: "
                              f"{str(exc)[:200]})", HEADER_SIZE) from None
    finally:
        st._replaying = False
        st._log = log


__all__ = ["Checkpoint", "read", "write", "load"]
