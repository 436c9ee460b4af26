"""Writes from attached processes: a mailbox per submitter, served by a thread of the owner.

A submitter claims a row of the header's mailbox table (compare-and-swap of its
token) and a segment ``mmsb.<name>.m<token>`` it holds an flock on. A request
is written whole into the segment; moving the row's request number (after a
fence) is what submits it, so a submitter killed before that leaves nothing,
and one killed after leaves a whole request the owner applies. The owner's
thread applies requests through the state's own calls (same checks, LSNs,
cascade and log as its local writes), writes the result, moves the row's
done number and wakes the submitter. Numbers only grow, so no request is
applied twice; one thread applies them all, so they apply in one order.

Request layout (little-endian; offsets in bytes from the segment's start):
word 0 kind (1 update_page, 2 apply_batch, 3 history, 4 a page's description),
word 1 page id (-1: by name) or delta count, word 2 value bytes (a history: its
depth; a page by name: the name's bytes), word 3 the result (written by the
owner: an LSN; for a history or a page the bytes of its answer, negated when the
segment is too small for them), word 4 a history's ``last`` (-1: all), words
5 and 6 an update's dtype (``dtype.str``, ASCII) and number of dimensions; from
byte 64 an update's shape (int64 each) then its values' bytes, or a batch's pages, starts, indices (int64) and
values (uint8), then room for its LSNs (int64, written by the owner) at
``MB_RESULT_AT``, or a page's name; the owner's answer to a history
(``mmsb.log.history.pack``) or a page (JSON: id, size, info) also from byte 64.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import threading
import time
import weakref
from typing import Any

import numpy as np

from .. import errors
from .._layout import (
    H_DOORBELL,
    H_ERROR_BYTES,
    H_ERRORS,
    H_MAILBOXES,
    H_MB,
    H_MB_COUNT,
    H_MB_WORDS,
    H_ROBUST,
    H_ROBUST_OK,
    MB_DONE,
    MB_NBYTES,
    MB_PID,
    MB_REQ,
    MB_RESULT_AT,
    MB_STATUS,
    MB_TOKEN,
)
from ..delta import DeltaBatch
from ..log.history import History, pack, unpack
from ..typed import PageInfo
from ..errors import BusBusyError, InvalidArgumentError, InvalidDeltaError, MMSBError, OwnerGoneError
from .segment import Segment, drop_mark, futex_wait, futex_wake, hold_mark, holder_alive, path

KIND_UPDATE, KIND_BATCH, KIND_HISTORY, KIND_PAGE = 1, 2, 3, 4
_NUMBERS = "biufc"  # the dtype kinds an update may carry: bool, integers, floats, complex
_MAX_NDIM = 32
_BYTES = b"bytes"  # an update's dtype code for bytes-like data
_HEAD = 64
_MIN_SEGMENT = 1 << 20
_REAP_S = 1.0


def _kernels() -> Any:
    from ..kernels import _jit, bus

    return _jit, bus


def _row(k: int, word: int) -> int:
    return H_MB + k * H_MB_WORDS + word


def _mailbox_path(name: str, token: int) -> str:
    return path(name, f".m{token:x}")


class Submitter:
    """An attached process's mailbox (one request at a time; threads take turns)."""

    def __init__(self, att: Any) -> None:
        self._att = att
        self._name = att.name
        self._addr = att._addr
        self._hv = att._hv
        jit, k = _kernels()
        self._swap, self._add, self._store = jit.entry(k.word_swap), jit.entry(k.word_add), jit.entry(k.word_store)
        self._lock = threading.Lock()
        self._seg: Segment | None = None
        self._token = 0
        self._row = -1
        self._req = 0
        self._claim(_MIN_SEGMENT)

    def _new_segment(self, size: int) -> tuple[Segment, int]:
        while True:
            token = secrets.randbits(60) | 1
            try:
                seg = Segment.create(_mailbox_path(self._name, token), size)
            except FileExistsError:  # pragma: no cover - 60 random bits
                continue
            try:
                # its memory now: a full /dev/shm refuses here, not with SIGBUS at a first write
                # (the owner's, when it writes an answer into pages this process never touched)
                os.posix_fallocate(seg.fd, 0, size)
            except OSError as exc:
                seg.remove()
                seg.close()
                raise errors.CapacityError(f"no room for a {size} B mailbox of shared state {self._name!r} "
                                           f"({exc})") from None
            seg.lock(True)  # held for life: the owner tells a dead submitter by it
            return seg, token

    def _claim(self, size: int) -> None:
        seg, token = self._new_segment(size)
        for k in range(H_MB_COUNT):
            if self._swap(self._addr, _row(k, MB_TOKEN), 0, token) == 0:
                self._hv[_row(k, MB_PID)] = os.getpid()
                self._req = int(self._hv[_row(k, MB_DONE)])
                self._store(self._addr, _row(k, MB_REQ), self._req)
                self._add(self._addr, H_MAILBOXES, 1)
                self._seg, self._token, self._row = seg, token, k
                return
        seg.remove()
        seg.close()
        raise BusBusyError(f"all {H_MB_COUNT} mailboxes of shared state {self._name!r} are in use")

    def _room(self, nbytes: int) -> Segment:
        """The segment, replaced by a larger one if the request needs it (between requests only)."""
        seg = self._seg
        assert seg is not None
        if seg.array.size >= nbytes:
            return seg
        new, token = self._new_segment(max(nbytes, 2 * seg.array.size))
        self._store(self._addr, _row(self._row, MB_TOKEN), token)
        seg.remove()
        seg.close()
        self._seg, self._token = new, token
        return new

    def update_page(self, pid: int, data: Any, timeout: float | None) -> int:
        arr = _values(data)
        head = _HEAD + 8 * arr.ndim
        # bytes-like data travels as bytes: State.update_page treats bytes and arrays apart
        code = _BYTES if isinstance(data, (bytes, bytearray, memoryview)) else arr.dtype.str.encode("ascii")
        with self._lock:
            seg = self._room(head + arr.nbytes)
            words = seg.array[:_HEAD].view(np.int64)
            words[0], words[1], words[2] = KIND_UPDATE, pid, arr.nbytes
            words[5], words[6] = int.from_bytes(code.ljust(8, b"\0"), "little"), arr.ndim
            seg.array[_HEAD:head].view(np.int64)[:] = arr.shape
            seg.array[head:head + arr.nbytes] = arr.reshape(-1).view(np.uint8)
            self._submit(head + arr.nbytes, timeout)
            return int(words[3])

    def apply_batch(self, batch: Any, timeout: float | None) -> np.ndarray:
        if not isinstance(batch, DeltaBatch):
            raise InvalidDeltaError(f"apply_batch takes a mmsb.DeltaBatch, got {type(batch).__name__}")
        n, m = len(batch), batch.values.size
        at_starts = _HEAD + 8 * n
        at_indices = at_starts + 8 * (n + 1)
        at_values = at_indices + 8 * m
        at_result = (at_values + m + 7) & ~7
        with self._lock:
            seg = self._room(at_result + 8 * n)
            a = seg.array
            words = a[:_HEAD].view(np.int64)
            words[0], words[1], words[2] = KIND_BATCH, n, m
            a[_HEAD:at_starts].view(np.int64)[:] = batch.pages
            a[at_starts:at_indices].view(np.int64)[:] = batch.starts
            a[at_indices:at_values].view(np.int64)[:] = batch.indices
            a[at_values:at_values + m] = batch.values
            self._hv[_row(self._row, MB_RESULT_AT)] = at_result
            self._submit(at_result, timeout)
            return a[at_result:at_result + 8 * n].view(np.int64).copy()

    def history(self, pid: int, depth: int, last: int, timeout: float | None) -> History:
        """The owner's ``State.history`` of page ``pid`` (``last`` -1: all)."""
        answer = self._ask(KIND_HISTORY, pid, depth, last, b"", timeout)
        try:
            return unpack(answer)
        except ValueError as exc:
            raise errors.LogCorruptError(f"the owner of shared state {self._name!r} answered a history request "
                                         f"with something else: {exc}") from None

    def describe(self, page: int | str, timeout: float | None) -> dict[str, Any]:
        """What the owner says of a page, by id or name: ``{"id", "size", "info"}`` (a PageInfo
        document, see ``mmsb.typed.PageInfo.to_doc``)."""
        name = page.encode() if isinstance(page, str) else b""
        answer = self._ask(KIND_PAGE, -1 if name else int(page), len(name), 0, name, timeout)
        try:
            doc = json.loads(bytes(answer))
            if not (isinstance(doc, dict) and set(doc) == {"id", "size", "info"}):
                raise ValueError(f"{doc!r} is not a page's description")
            return doc
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise errors.LogCorruptError(f"the owner of shared state {self._name!r} answered a page request "
                                         f"with something else: {exc}") from None

    def _ask(self, kind: int, w1: int, w2: int, w4: int, payload: bytes, timeout: float | None) -> np.ndarray:
        """A read request whose answer the owner writes after the request's head; asked again
        in a larger mailbox when the answer did not fit (a read: asking twice is safe). The
        answer's bytes (a copy)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            need = _HEAD + len(payload)
            while True:
                seg = self._room(need)
                words = seg.array[:_HEAD].view(np.int64)
                words[0], words[1], words[2], words[4] = kind, w1, w2, w4
                seg.array[_HEAD:_HEAD + len(payload)] = np.frombuffer(payload, np.uint8)
                self._submit(_HEAD + len(payload), None if deadline is None else max(0.0, deadline - time.monotonic()))
                answer = int(words[3])
                if answer >= 0:
                    return seg.array[_HEAD:_HEAD + min(answer, seg.array.size - _HEAD)].copy()
                if _HEAD - answer <= seg.array.size:  # an answer that fits was refused: not an owner of this version
                    raise errors.LogCorruptError(f"the owner of shared state {self._name!r} asked for {-answer} B "
                                                 f"of mailbox and had {seg.array.size - _HEAD}")
                need = max(need, _HEAD - answer)

    def _submit(self, nbytes: int, timeout: float | None) -> None:
        hv, k = self._hv, self._row
        hv[_row(k, MB_NBYTES)] = nbytes
        req = self._req + 1
        self._store(self._addr, _row(k, MB_REQ), req)  # the request is whole: submitted
        self._req = req
        self._add(self._addr, H_DOORBELL, 1)
        futex_wake(self._addr + 8 * H_DOORBELL)
        deadline = None if timeout is None else time.monotonic() + timeout
        done_addr = self._addr + 8 * _row(k, MB_DONE)
        while True:
            done = hv[_row(k, MB_DONE)]
            if done == req:
                break
            futex_wait(done_addr, done, 0.25)
            if hv[_row(k, MB_DONE)] == req:
                break
            if not holder_alive(path(self._name)):
                raise OwnerGoneError(f"shared state {self._name!r}: its owner ended before answering request "
                                     f"{req} (whether it was applied, its log tells)")
            if deadline is not None and time.monotonic() > deadline:
                raise BusBusyError(f"the owner of shared state {self._name!r} did not answer request {req} in "
                                   f"{timeout} s; it is still queued and will be applied")
        if hv[_row(k, MB_STATUS)]:
            raise _error_from(self._att._h, k)

    def close(self) -> None:
        with self._lock:
            if self._seg is None:
                return
            k = self._row
            # a request given up on (timeout) is still the owner's to apply: the row goes back only
            # once it is done, or the next holder would count from an older number
            deadline = time.monotonic() + 5.0
            while self._hv[_row(k, MB_DONE)] < self._req and time.monotonic() < deadline:
                if not holder_alive(path(self._name)):
                    break
                futex_wait(self._addr + 8 * _row(k, MB_DONE), self._hv[_row(k, MB_DONE)], 0.05)
            if self._swap(self._addr, _row(k, MB_TOKEN), self._token, 0) == self._token:
                self._add(self._addr, H_MAILBOXES, -1)
            self._seg.remove()
            self._seg.close()
            self._seg = None


def _values(data: Any) -> np.ndarray:
    """What an update sends: the data as a contiguous array of numbers, with its dtype and shape
    (the owner converts it as ``State.update_page`` does); bytes-like data as uint8."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, np.uint8)
    try:
        arr = np.asarray(data)
    except Exception as exc:
        raise InvalidDeltaError(f"update_page data must be bytes or numbers: {exc}") from None
    if arr.dtype.kind not in _NUMBERS or arr.ndim > _MAX_NDIM:
        raise InvalidDeltaError(f"update_page data must be bytes or an array of numbers (at most {_MAX_NDIM} "
                                f"dimensions), got dtype {arr.dtype} and shape {arr.shape}")
    return np.ascontiguousarray(arr)


def _update_values(a: np.ndarray, words: np.ndarray, nbytes: int) -> np.ndarray | bytes:
    """The array an update request carries (a view into the mailbox), checked whole."""
    ndim, m = int(words[6]), int(words[2])
    head = _HEAD + 8 * ndim
    if not 0 <= ndim <= _MAX_NDIM or m < 0 or head + m > nbytes:
        raise InvalidArgumentError("a malformed update request")
    code = int(words[5]).to_bytes(8, "little", signed=True).rstrip(b"\0")
    if code == _BYTES:
        if ndim != 1 or int(a[_HEAD:head].view(np.int64)[0]) != m:
            raise InvalidArgumentError("a malformed update request")
        return bytes(a[head:head + m])
    try:
        dtype = np.dtype(code.decode("ascii"))
    except (TypeError, ValueError, UnicodeDecodeError):
        raise InvalidArgumentError("an update request names no dtype") from None
    shape = tuple(int(x) for x in a[_HEAD:head].view(np.int64))
    if dtype.kind not in _NUMBERS or min(shape, default=0) < 0 or math.prod(shape) * dtype.itemsize != m:
        raise InvalidArgumentError("a malformed update request")
    return a[head:head + m].view(dtype).reshape(shape)


def _error_from(h: np.ndarray, k: int) -> MMSBError:
    raw = h.view(np.uint8)[8 * H_ERRORS + k * H_ERROR_BYTES: 8 * H_ERRORS + (k + 1) * H_ERROR_BYTES]
    text = bytes(raw).split(b"\0", 2)
    name = text[0].decode("ascii", "replace")
    message = text[1].decode("utf-8", "replace") if len(text) > 1 else ""
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, MMSBError)):
        cls, message = MMSBError, f"{name}: {message}"
    return cls(message)


class Server:
    """The owner's thread that applies submitted requests, in the order it finds them."""

    def __init__(self, state: Any, bus: Any) -> None:
        self._state = weakref.ref(state)
        self._bus = bus
        self._segments: dict[int, Segment] = {}  # by token
        self._tokens: dict[int, int] = {}  # mailbox row -> the token last served there
        self._stop = False
        self._reaped = time.monotonic()
        self._marked = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"mmsb-bus-{bus.name}", daemon=True)
        self._thread.start()
        self._marked.wait()

    def stop(self) -> None:
        self._stop = True
        bus = self._bus
        bus._add(bus.addr, H_DOORBELL, 1)
        futex_wake(bus.addr + 8 * H_DOORBELL)
        if threading.current_thread() is not self._thread:
            self._thread.join()
        for seg in self._segments.values():
            seg.close()
        self._segments.clear()

    def _run(self) -> None:
        bus = self._bus
        # the owner's mark lives and dies with this thread, which lives as long as the bus
        mark = bus.addr + 8 * H_ROBUST
        marked = hold_mark(mark)
        bus.h[H_ROBUST_OK] = int(marked)
        self._marked.set()
        try:
            self._loop()
        finally:
            if marked:
                drop_mark(mark)

    def _loop(self) -> None:
        bus = self._bus
        h, hv = bus.h, bus.hv
        rows = h[H_MB:H_MB + H_MB_COUNT * H_MB_WORDS].reshape(H_MB_COUNT, H_MB_WORDS)
        bell = bus.addr + 8 * H_DOORBELL
        while not self._stop:
            ring = hv[H_DOORBELL]
            pending = np.flatnonzero(rows[:, MB_REQ] > rows[:, MB_DONE])
            for k in pending:
                if self._stop:
                    break
                self._serve(int(k), rows)
            if time.monotonic() - self._reaped > _REAP_S:
                try:
                    self._reap(rows)
                except OSError:  # pragma: no cover - a file vanished under the scan: next time
                    pass
            if not pending.size and not self._stop:
                futex_wait(bell, ring, 0.25)

    def _segment(self, k: int, token: int) -> Segment:
        seg = self._segments.get(token)
        if seg is None:
            seg = Segment.open(_mailbox_path(self._bus.name, token), True)
            seg.close()  # the mapping is what is used; the submitter's lock stays its own
            self._segments[token] = seg
            # a row whose submitter grew its mailbox: the old mapping's pages go back now
            old = self._tokens.get(k)
            if old is not None and old != token:
                self._segments.pop(old, None)
            self._tokens[k] = token
        return seg

    def _serve(self, k: int, rows: np.ndarray) -> None:
        bus = self._bus
        req = int(rows[k, MB_REQ])
        status = 0
        try:
            seg = self._segment(k, int(rows[k, MB_TOKEN]))
            result = self._apply(seg.array, int(rows[k, MB_RESULT_AT]), int(rows[k, MB_NBYTES]))
            seg.array[:_HEAD].view(np.int64)[3] = result
        except BaseException as exc:  # every failure goes back to the submitter, and the thread goes on
            status = 1
            self._write_error(k, exc)
        rows[k, MB_STATUS] = status
        bus._store(_row(k, MB_DONE), req)
        futex_wake(bus.addr + 8 * _row(k, MB_DONE))

    def _apply(self, a: np.ndarray, result_at: int, nbytes: int) -> int:
        state = self._state()
        if state is None:
            raise errors.StateClosedError("the shared state was closed")
        words = a[:_HEAD].view(np.int64)
        kind, n, m = int(words[0]), int(words[1]), int(words[2])
        if kind == KIND_UPDATE:
            d = state.update_page(n, _update_values(a, words, nbytes))
            return 0 if d is None else int(d.lsn)
        if kind == KIND_BATCH:
            at_starts = _HEAD + 8 * n
            at_indices = at_starts + 8 * (n + 1)
            at_values = at_indices + 8 * m
            if n < 0 or m < 0 or at_values + m > nbytes or result_at + 8 * n > a.size or result_at < at_values + m:
                raise InvalidArgumentError("a malformed batch request")
            batch = DeltaBatch(a[_HEAD:at_starts].view(np.int64), a[at_starts:at_indices].view(np.int64),
                               a[at_indices:at_values].view(np.int64), a[at_values:at_values + m])
            lsns = state.apply_batch(batch)
            a[result_at:result_at + 8 * n].view(np.int64)[:] = lsns
            return int(lsns.max()) if n else 0
        if kind == KIND_HISTORY:
            last = int(words[4])
            answer = pack(state.history(n, m, None if last < 0 else last))
        elif kind == KIND_PAGE:
            if n < 0 and not 0 < m <= nbytes - _HEAD:
                raise InvalidArgumentError("a malformed page request")
            page = state.page(n if n >= 0 else bytes(a[_HEAD:_HEAD + m]).decode("utf-8", "replace"))
            info = PageInfo(page.dtype, page.shape, page.name, page.meta)
            answer = json.dumps({"id": page.id, "size": page.size, "info": info.to_doc()}).encode()
        else:
            raise InvalidArgumentError(f"unknown request kind {kind}")
        if _HEAD + len(answer) > a.size:
            return -len(answer)  # the submitter grows its segment and asks again
        a[_HEAD:_HEAD + len(answer)] = np.frombuffer(answer, np.uint8)
        return len(answer)

    def _write_error(self, k: int, exc: BaseException) -> None:
        text = type(exc).__name__.encode("ascii", "replace") + b"\0" + str(exc).encode("utf-8", "replace")
        text = text[: H_ERROR_BYTES - 1] + b"\0"
        raw = self._bus.h.view(np.uint8)
        raw[8 * H_ERRORS + k * H_ERROR_BYTES: 8 * H_ERRORS + k * H_ERROR_BYTES + len(text)] = np.frombuffer(text, np.uint8)

    def _reap(self, rows: np.ndarray) -> None:
        """Free the mailboxes of submitters that died (their lock is gone) with nothing pending."""
        self._reaped = time.monotonic()
        bus = self._bus
        for k in np.flatnonzero(rows[:, MB_TOKEN]):
            token = int(rows[k, MB_TOKEN])
            if token == 0:  # given back since the scan: a swap of 0 for 0 would "free" it twice
                continue
            p = _mailbox_path(bus.name, token)
            if rows[k, MB_REQ] > rows[k, MB_DONE] or holder_alive(p):
                continue
            if bus._swap(bus.addr, _row(int(k), MB_TOKEN), token, 0) == token:
                bus._add(bus.addr, H_MAILBOXES, -1)
                seg = self._segments.pop(token, None)
                self._tokens.pop(int(k), None)
                if seg is not None:
                    seg.close()
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass
