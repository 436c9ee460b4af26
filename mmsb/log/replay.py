"""Replay: records applied to a state, commit by commit, checked as they go.

Delta records apply inside one kernel call per run of deltas
(:func:`mmsb.kernels.logfile.replay_deltas`), which checks each against the
state (LSN, epoch, page, size, offsets). Page, graph and binding records go
through the state's own methods with cascades switched off: the cascades'
deltas are in the log already, so replay writes them rather than recomputing
them, and the result does not depend on user functions. A record that does
not fit raises :class:`mmsb.LogCorruptError` naming its offset.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Callable

import numpy as np

from .. import config
from .._layout import DTYPE_NAMES, LOC_CPU, LOC_GPU, MAX_PAGE_SIZE, OPS, REC_BIND, REC_CREATE, REC_DELETE, REC_EDGE, REC_HEADER
from .._layout import REC_INFO, REC_RESIZE
from .._layout import GEN_REUSE_MASK, GEN_TAG_SHIFT, ID_SLOT_BITS, ID_SLOT_MASK, MAX_GENERATION
from ..errors import LogCorruptError, MMSBError
from ..typed import PageInfo
from ..functions import MissingFunction, lookup
from ..graph import FIRST_USER_KIND
from .file import _kernels
from .memory import LogBuffer, NullLog

_HEADER = struct.Struct("<QQQQQQ")
_OP_NAMES = {code: name for name, code in OPS.items()}
_KIND_NAMES = {0: "data", 1: "control", 2: "sync"}


def _same(pos: int) -> int:
    return pos


def check(data: np.ndarray, start: int, end: int, to_lsn: int | None, where: str,
          locate: Callable[[int], int] = _same) -> tuple[int, int, int]:
    """(cut, deltas, last LSN) of the whole commits in ``data[start:end]`` up to ``to_lsn``.

    A record that is not well formed raises :class:`mmsb.LogCorruptError`
    (``locate`` maps a record's position to the offset the error names: a file's).
    """
    limit = (1 << 64) - 1 if to_lsn is None else to_lsn
    cut, _, deltas, lsn, bad = _kernels().check_records(data, start, end, np.uint64(limit))
    if bad < 0 and to_lsn is None and cut != end:
        bad = cut  # records no commit record closes: a log only ever holds whole commits
    if bad >= 0:
        at = locate(int(bad))
        raise LogCorruptError(f"{where}: the record at offset {at} is not well formed", at)
    return int(cut), int(deltas), int(lsn)


def apply(st: Any, data: np.ndarray, start: int, end: int, where: str, locate: Callable[[int], int] = _same,
          progress: Callable[[int], None] | None = None) -> None:
    """Apply the records ``data[start:end]`` to ``st``, which must be where they start: checked as
    they are applied (what :func:`check` would refuse raises the same error, and then the state
    is thrown away), so a replay of a whole log reads it once.

    ``progress``, if given, is called with the bytes applied so far, every
    ``chunk`` bytes or so.
    """
    k = _kernels()
    c = st._c
    log, st._log = st._log, NullLog(LogBuffer(1024))
    st._replaying = True
    pos = sealed = start
    # a kernel call stops once it passes its end: chunks only matter for progress reports
    chunk = end - start if progress is None else 1 << 24
    try:
        while pos < end:
            stop = min(end, pos + chunk)
            pos, lsn, n, status, sealed = k.replay_deltas(c.table.array, c.table.used, c.arena.data, data, pos,
                                                          stop, end, c.lsn, sealed)
            c.lsn = int(lsn)
            c.deltas += int(n)
            if progress is not None:
                progress(int(pos) - start)
            if status == k.R_DONE:
                continue
            if status == k.R_MALFORMED:
                at = locate(int(pos))
                raise LogCorruptError(f"{where}: the record at offset {at} is not well formed", at)
            if status == k.R_BAD:
                at = locate(int(pos))
                raise LogCorruptError(
                    f"{where}: the delta record at offset {at} does not fit the state "
                    f"(its LSN, page, epoch, size or offsets disagree with the records before it)", at)
            pos = _apply_other(st, c, data, int(pos), end, where, locate)
        if sealed != end:  # records no commit record closes: a log only ever holds whole commits
            at = locate(int(sealed))
            raise LogCorruptError(f"{where}: the record at offset {at} is not well formed", at)
    finally:
        st._replaying = False
        st._log = log


def _apply_other(st: Any, c: Any, data: np.ndarray, pos: int, end: int, where: str,
                 locate: Callable[[int], int]) -> int:
    w0, w1, w2, w3, w4, w5 = _HEADER.unpack_from(data, pos)
    length, rtype, extra = w0 & 0xFFFFFFFF, (w0 >> 32) & 0xFF, w0 >> 48

    def bad(why: str) -> LogCorruptError:
        at = locate(pos)
        return LogCorruptError(f"{where}: the record at offset {at} {why}", at)

    if w1 != c.lsn:
        raise bad(f"was written at LSN {w1}, but the records before it end at LSN {c.lsn}")
    body = data[pos + REC_HEADER:pos + length]
    try:
        if rtype == REC_CREATE:
            if w5 not in (LOC_CPU, LOC_GPU) or not 1 <= w4 < 1 << 32 or not 1 <= w3 <= MAX_PAGE_SIZE:
                raise bad(f"creates {w4} pages of {w3} B at location {w5}")
            room = c.arena.room()
            if w4 * max(8, w3) > room:
                raise bad(f"creates {w4} pages of {w3} B, more than the arena holds")
            if c.table.used + w4 > config.REPLAY_MAX_PAGES:
                raise bad(f"creates {w4} pages, past mmsb.config.REPLAY_MAX_PAGES ({config.REPLAY_MAX_PAGES}): "
                          "raise it if the log really holds that many")
            gen = w2 >> ID_SLOT_BITS
            if (w2 & ID_SLOT_MASK) >= c.table.used and gen <= MAX_GENERATION and not gen & GEN_REUSE_MASK:
                st._adopt_tag(c, gen >> GEN_TAG_SHIFT)  # a fresh slot: its generation is the history's tag
            # pages are replayed on the host; those made on the device go there at the end (see place)
            ids = st.create_pages(int(w4), int(w3)) if w4 > 1 else np.array([st.create_page(int(w3)).id])
            first = int(ids[0])
            if w5 == LOC_GPU:
                st._pending_gpu.append(ids)
            if first != w2:
                raise bad(f"creates page {w2}, but replaying it gives page {first}")
            nxt = pos + length
            if nxt + REC_HEADER <= end and (_HEADER.unpack_from(data, nxt)[0] >> 32) & 0xFF == REC_INFO:
                # the info of the pages just made: it is of the same commit, so it applies to their ids
                info_w0, info_lsn, info_first, count = _HEADER.unpack_from(data, nxt)[:4]
                info_len = info_w0 & 0xFFFFFFFF
                if REC_HEADER <= info_len <= end - nxt and not info_len & 7 and info_first == first and count == w4:
                    if info_lsn != c.lsn:
                        return nxt  # the check at the top of the next call names it
                    _apply_info(st, data, nxt, info_w0, ids, int(w3), bad)
                    return nxt + (info_w0 & 0xFFFFFFFF)
        elif rtype == REC_DELETE:
            st.delete_page(int(w2))
        elif rtype == REC_RESIZE:
            slot = st._slot(c, int(w2))
            if w4 != c.table.mv_size[slot] or not 1 <= w3 <= MAX_PAGE_SIZE or w5:
                raise bad(f"resizes page {w2} from {w4} to {w3} B, but it holds {c.table.mv_size[slot]} B")
            st._resize_slot(c, slot, int(w3))
        elif rtype == REC_INFO:
            if w3 != 1:
                raise bad(f"gives the info of {w3} pages without the create record that made them")
            slot = st._slot(c, int(w2))
            _apply_info(st, data, pos, w0, np.array([int(w2)]), int(c.table.mv_size[slot]), bad)
        elif rtype == REC_EDGE:
            if extra > body.size:
                raise bad("has a kind name longer than the record")
            if w4 >= FIRST_USER_KIND:
                kind = bytes(body[:extra]).decode()
            elif w4 in _KIND_NAMES:
                kind = _KIND_NAMES[w4]
            else:
                raise bad(f"names edge kind {w4}")
            if w5 == 1:
                st.add_dependency(int(w2), int(w3), kind)
            elif w5 == 0:
                st.remove_dependency(int(w2), int(w3))
            else:
                raise bad(f"has edge flag {w5}")
        elif rtype == REC_BIND:
            if w5 > body.size // 16 or 16 * w5 + extra > body.size or w4 & 0xFF >= len(DTYPE_NAMES) or w4 >> 9:
                raise bad("has a parent list or name that does not fit it")
            parents = body[: 8 * w5].view(np.int64).tolist()
            weights = body[8 * w5:16 * w5].view(np.float64).tolist()
            name = bytes(body[16 * w5:16 * w5 + extra]).decode()
            if w3 in _OP_NAMES:
                op: Any = _OP_NAMES[w3]
            elif name:
                op = lookup(name) or MissingFunction(name)
            else:
                raise bad(f"binds op {w3} without a function name")
            st.register_recompute(int(w2), parents, op, dtype=DTYPE_NAMES[w4 & 0xFF], weights=weights,
                                  writable=bool(w4 >> 8))
        else:
            raise bad(f"has type {rtype}")
    except (MMSBError, UnicodeDecodeError, ValueError, MemoryError, OverflowError) as exc:
        if isinstance(exc, LogCorruptError):
            raise
        raise bad(f"does not apply: {exc}") from exc
    return pos + length


def _apply_info(st: Any, data: np.ndarray, pos: int, w0: int, ids: np.ndarray, size: int,
                bad: Callable[[str], LogCorruptError]) -> None:
    """An info record (its JSON after the header) given to the pages ``ids``."""
    length, extra = w0 & 0xFFFFFFFF, w0 >> 48
    if REC_HEADER + extra > length:
        raise bad("has info longer than the record")
    try:
        doc = json.loads(bytes(data[pos + REC_HEADER:pos + REC_HEADER + extra]).decode())
        info = PageInfo.from_doc(doc, size)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise bad(f"does not hold a page's info: {exc}") from None
    names = st._annotations().names
    slots = ids & ID_SLOT_MASK
    if info.name is not None and (len(ids) != 1 or names.get(info.name, slots[0]) != slots[0]):
        raise bad(f"names a page {info.name!r}, a name another page holds")
    for s in slots.tolist():
        st._annotations().set(s, info)
