"""Durability and history of a :class:`mmsb.State`: file logs, checkpoints, replay.

A mixin of State (like :mod:`mmsb.dependencies`), and the helpers that
:func:`mmsb.replay` and :func:`mmsb.restore` (:mod:`mmsb.recovery`, a layer
above the State class) share with it. The file formats live in
:mod:`mmsb.log.file` and :mod:`mmsb.log.checkpoint`; replay in
:mod:`mmsb.log.replay`.
"""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ._interrupts import atomic, holds
from ._layout import R_SLOW
from .errors import InvalidArgumentError, LogCorruptError, LogIOError, LogTrimmedError, MissingFunctionWarning
from .functions import MissingFunction, own_functions
from .log.memory import MemoryLog, NullLog
from .validate import _check_options, _closed

if TYPE_CHECKING:
    from .log.file import FileLog


def _io() -> tuple[Any, Any, Any]:
    """The checkpoint, replay and file-log modules, imported on first use: ``import mmsb``
    does not pay for what only durable states need."""
    from .log import checkpoint, file, replay

    return checkpoint, replay, file


_LSN_MAX = (1 << 63) - 1


def _check_lsn(to_lsn: Any) -> int | None:
    if to_lsn is None:
        return None
    if isinstance(to_lsn, (bool, np.bool_)) or not isinstance(to_lsn, (int, np.integer)) or to_lsn < 0:
        raise InvalidArgumentError(f"to_lsn must be a non-negative integer or None, got {to_lsn!r}")
    return min(int(to_lsn), _LSN_MAX)  # no LSN lies beyond int64: past it means everything


def _warn_missing(st: Any, stacklevel: int = 3) -> None:
    names = st.missing_functions
    if names:
        warnings.warn(f"recompute functions {names} are not registered in this process: their pages keep their "
                      "bytes but fail if a cascade reaches them; call mmsb.register_function(fn, name=...) and "
                      "register_recompute again", MissingFunctionWarning, stacklevel=stacklevel)


@holds
def open_file_log(st: Any, path: Any, sync: str) -> None:
    """Open (creating or recovering) the log at ``path`` as ``st``'s log; ``st`` is fresh."""
    _, _replay, file = _io()
    c = st._c
    log, contents = file.FileLog.open(path, sync, c.logbuf)
    try:
        if contents is not None and contents.header.continues:
            # a log a truncating checkpoint started anew: that checkpoint is kept beside it
            ck = _kept_base(contents)
            _io()[0].load(st, ck)
            _continue(st, ck, log, contents)
        elif contents is not None:
            data, at = contents.payload, contents.file_offset
            cut, deltas, lsn = _replay.check(data, 0, data.size, None, f"log {log.path!r}", at)
            _replay.apply(st, data, 0, cut, f"log {log.path!r}", at)
            log.adopt(data[:cut], deltas, lsn)
    except BaseException:
        log.close()
        raise
    st._log = log
    log.regs = c.regs
    log.start()
    file.clean_bases(log.path, log.header.base_id)
    _warn_missing(st)


def _kept_base(contents: Any) -> Any:
    """The checkpoint kept beside a log that continues it (see FileLog.restart_file)."""
    header = contents.header
    where = _io()[2].base_path(contents.path, header.base_id)
    if not os.path.exists(where):
        raise InvalidArgumentError(
            f"log {contents.path!r} continues checkpoint {header.base_id.hex()} (LSN {header.base_lsn}), which "
            f"is not beside it as {where!r}: open it with mmsb.restore(checkpoint_path, log=...)")
    ck = _io()[0].read(where)
    if ck.id != header.base_id:
        raise LogCorruptError(f"{where!r} is not the checkpoint log {contents.path!r} continues", 0)
    return ck


class Durability:
    """File logs, checkpoints and replay for :class:`mmsb.State` (a mixin)."""

    __slots__ = ()

    @atomic
    def flush(self) -> None:
        """Make every commit so far durable (for ``sync="group"`` or ``"none"``; no-op in memory)."""
        c = self._core()
        with c.lock:
            self._log.flush()  # after a failure: a retry that, when it succeeds, lets writes go on
            c.regs[R_SLOW] = self._txn is not None or self._events is not None or self._log.failed is not None

    @property
    def missing_functions(self) -> list[str]:
        """Names of recompute functions a replay or restore could not find (see :func:`mmsb.register_function`)."""
        c = self._core()
        return sorted({b.fn.name for b in c.prop.bindings.values() if isinstance(b.fn, MissingFunction)})

    @atomic
    def checkpoint(self, path: Any, truncate: bool | None = None) -> None:
        """Write the whole state (pages, epochs, graph, bindings, counters, LSN) to ``path``.

        Atomic: a temporary file is written and synced, then renamed over
        ``path``. With a file log, the log is synced first and the checkpoint
        records where in it the state stood, so ``mmsb.restore(path,
        log=that_log)`` goes on from there. Bindings to user functions are
        stored by name (:func:`mmsb.register_function`).

        ``truncate=True`` then drops the records before the checkpoint from
        the log's memory (default: True for a state started with
        ``retain="checkpoint"``, else False): :meth:`replay` goes on from the
        checkpoint file, which must then stay where it is.
        """
        if truncate is not None and not isinstance(truncate, (bool, np.bool_)):
            raise InvalidArgumentError(f"truncate={truncate!r}: expected True, False or None")
        c = self._core()
        path = os.fspath(path)
        with c.lock:  # another thread's transaction ends first; this thread's is refused
            if self._c is not c:
                raise _closed()
            if self._txn is not None:
                raise InvalidArgumentError("checkpoint is not allowed inside a transaction")
            log = self._log
            ref = None
            if log.durable:
                try:
                    log.flush()
                    ref = {"id": log.header.log_id.hex(), "pos": log.sealed, "base": log.header.base_id.hex()}
                except LogIOError:
                    pass  # a failed log: the checkpoint stands alone (on another disk, it saves the state)
            stored = _io()[0].write(self, c, path, ref)
            trim = log._trim
            if truncate is None:
                truncate = trim is not None and trim.truncates
            if truncate and log.keeps_records and (ref is not None or not log.durable):
                pos = log.sealed  # no transaction is open: every record is sealed
                log.truncate(pos)
                if log.durable:  # the file starts anew at the checkpoint, kept beside it
                    kept = log.restart_file(stored.path, stored.id, stored.lsn)
                    self._base = (_io()[0].Stored(kept, stored.id, stored.lsn), pos)
                elif log.first_pos == pos:
                    self._base = (stored, pos)

    def replay(self, to_lsn: Any = None) -> Any:
        """A new state replaying this state's log: after every commit whose LSNs are all <= ``to_lsn``.

        ``to_lsn=None`` replays everything; its ``state_hash()`` then equals
        this state's. Never half a commit. The new state keeps its log in
        memory. Needs a log (``log=False`` states have none).
        """
        limit = _check_lsn(to_lsn)
        c = self._core()
        log = self._log
        if not log.keeps_records:
            raise InvalidArgumentError("this state keeps no log (log=False): there is nothing to replay")
        with c.lock:
            if self._txn is not None:
                raise InvalidArgumentError("replay is not allowed inside a transaction")
            start, base = log.first_pos, self._base
            if start and log.durable and log.failed is None:
                # the records trimmed from memory are in the file: read them back from there
                log.flush()
                start = log.file_base
                data = _io()[2].read_log(log.path, warn=False).payload[: log.sealed - start]
            elif start and (base is None or base[1] < start):
                raise LogTrimmedError(
                    f"the log was trimmed (retain=): records before LSN {log.first_lsn} are gone and no "
                    "checkpoint holds what they did, so there is nothing to replay from; "
                    "st.checkpoint(path, truncate=True) trims and keeps a replay possible", log.first_lsn)
            else:
                data = log._live().array[start: log.sealed].copy()
        if base is not None:
            base = (base[0], base[1] - start)
        own = {} if self._ann is None else self._ann.functions
        with own_functions(own):  # a replay in this process binds the functions this state was bound with
            return _state_from(data, limit, base, "this state's log", self._fresh)


def _stored(ck: Any) -> Any:
    """What a restored state keeps of its checkpoint: where to read it again (its pages are in the
    state already; a copy in memory would hold them twice)."""
    return _io()[0].Stored(ck.path, ck.id, ck.lsn)


def _state_from(data: np.ndarray, to_lsn: int | None, base: Any, where: str, start: Callable[[], Any],
                locate: Any = None, progress: Any = None) -> Any:
    """A new state from ``start()`` (a fresh pooled one, or one already made): the records ``data``
    up to ``to_lsn``, on top of ``base``.

    ``base`` is None (the records hold the whole history) or (checkpoint,
    offset): the history is that checkpoint, then the records from offset.
    """
    _ckpt, _replay, _ = _io()
    locate = locate or _replay._same
    start_at = 0
    if base is not None:
        ck, start_at = base
        if to_lsn is not None and to_lsn < ck.lsn:
            raise LogTrimmedError(f"LSN {to_lsn} is before checkpoint {ck.path!r} (LSN {ck.lsn}), where "
                                  "this state's history starts", ck.lsn)
    st = start()
    try:
        if base is not None:
            _ckpt.load(st, base[0].read() if isinstance(base[0], _ckpt.Stored) else base[0])
            st._base = base
        if to_lsn is None:  # the whole log: the apply pass checks the records as it goes
            cut, before = data.size, st._c.deltas
            _replay.apply(st, data, start_at, cut, where, locate, progress)
            deltas = st._c.deltas - before
        else:
            cut, deltas, _ = _replay.check(data, start_at, data.size, to_lsn, where, locate)
            _replay.apply(st, data, start_at, cut, where, locate, progress)
        if start_at:
            deltas += _replay.check(data, 0, start_at, None, where, locate)[1]
        # the state's own log, made at its start: the records may have been read into its buffer
        log = st._log if type(st._log) is MemoryLog else MemoryLog(st._c.logbuf)
        log.load(data[:cut], deltas)
        st._log = log
        st._place_pending()
    except BaseException:
        st.close()
        raise
    _warn_missing(st)
    return st


def replay_log(log_path: Any, to_lsn: Any, progress: Any, start: Callable[[], Any]) -> Any:
    """:func:`mmsb.replay`, into a state from ``start()``."""
    limit = _check_lsn(to_lsn)
    st = start()
    try:
        # read into the buffer the records will live in: a pooled state's is in memory already
        contents = _io()[2].read_log(os.fspath(log_path), into=st._c.logbuf.room)
        base = (_stored(_kept_base(contents)), 0) if contents.header.continues else None
    except BaseException:
        st.close()
        raise
    total = contents.payload.size
    tick = None if progress is None else (lambda done: progress(done, total))
    return _state_from(contents.payload, limit, base, f"log {contents.path!r}", lambda: st, contents.file_offset,
                       tick)


def restore_checkpoint(path: Any, log: Any, sync: str, start: Callable[[], Any]) -> Any:
    """:func:`mmsb.restore`, into a state from ``start()``."""
    _check_options(log, sync, "auto")
    _ckpt, _, file = _io()
    ck = _ckpt.read(path)
    st = start()
    try:
        _ckpt.load(st, ck)
        if log is None or log is False:
            st._base = (_stored(ck), 0)
            if log is False:
                st._log = NullLog(st._c.logbuf)
            st._place_pending()
            _warn_missing(st, 4)  # the caller of mmsb.restore
            return st
        flog, contents = file.FileLog.open(log, sync, st._c.logbuf, base=(ck.lsn, ck.id))
        try:
            _continue(st, ck, flog, contents)
        except BaseException:
            flog.close()
            raise
        st._log = flog
        flog.start()
        st._place_pending()
    except BaseException:
        st.close()
        raise
    _warn_missing(st, 4)  # the caller of mmsb.restore
    return st


def _continue(st: Any, ck: Any, flog: FileLog, contents: Any) -> None:
    _, _replay, _ = _io()
    where = f"log {flog.path!r}"
    at = contents.file_offset if contents is not None else _replay._same
    if contents is None or contents.header.base_id == ck.id:
        st._base = (_stored(ck), 0)  # a log that starts at this checkpoint
        data = contents.payload if contents is not None else np.zeros(0, np.uint8)
        cut, deltas, lsn = _replay.check(data, 0, data.size, None, where, at)
        _replay.apply(st, data, 0, cut, where, at)
        flog.adopt(data[:cut], deltas, lsn)
        return
    ref = ck.doc.get("log") or {}
    if ref.get("id") != contents.header.log_id.hex():
        raise InvalidArgumentError(f"{where} is not the log checkpoint {ck.path!r} was taken from, nor one "
                                   "continuing it")
    data, pos = contents.payload, int(ref.get("pos", -1))
    # the log was synced up to the checkpoint before it was taken: a log that falls short of it is damaged
    if not 0 <= pos <= data.size:
        raise LogCorruptError(f"{where} ends before checkpoint {ck.path!r} (at byte {pos} of its records), at "
                              f"offset {contents.valid_end}", contents.valid_end)
    before, _, lsn = _replay.check(data, 0, pos, None, where, at)
    if before != pos or lsn != ck.lsn and pos:
        raise LogCorruptError(f"{where} does not reach LSN {ck.lsn} at the checkpoint's position", at(before))
    if contents.header.continues:
        st._base = (_stored(ck), pos)  # the log itself starts at an earlier checkpoint
    cut, _, lsn = _replay.check(data, pos, data.size, None, where, at)
    _replay.apply(st, data, pos, cut, where, at)
    total = _replay.check(data, 0, cut, None, where, at)[1]
    flog.adopt(data[:cut], total, lsn)
