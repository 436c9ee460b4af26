"""Log files: a header, then frames of whole commits, each with its length and CRC32C.

Writing: a :class:`FileLog` keeps every record in memory like
:class:`~mmsb.log.memory.MemoryLog` (``st.log``, replay and history read
them there) and appends each sealed commit to its file as a frame:

* ``sync="commit"``: the sealing call writes the frame and ``fdatasync``\\ s
  before it returns, so whatever a call returned is on disk;
* ``sync="group"``: a writer thread frames everything sealed so far, writes
  it and syncs, ``config.LOG_GROUP_INTERVAL_US`` after the first seal it
  sees; :meth:`FileLog.flush` (``State.flush``) makes it durable at once. The
  thread runs a GIL-free kernel (:mod:`mmsb.kernels.writer`), so the interval
  holds while Python threads are busy, and it sleeps on a pipe when idle;
* ``sync="none"``: the same thread writes without syncing; the OS decides.

A frame holds whole commits only, so recovery finds whole commits or none of
one. Reading (:func:`read_log`) checks the header and every frame; a torn
tail is cut with a :class:`mmsb.LogTruncatedWarning`; damage before the tail
raises :class:`mmsb.LogCorruptError` with its offset. Layout: ``docs/FORMAT.md``.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import errno
import fcntl
import mmap
import os
import select
import shutil
import struct
import tempfile
import threading
import time
import uuid
import warnings
import weakref
from typing import Any

import numpy as np

from .._interrupts import holds
from .. import _layout as _w
from .. import config
from .._layout import FRAME_HEADER, L_ADDR, LOG_KEEP, R_SLOW, REC_CREATE, REC_HEADER
from ..errors import InvalidArgumentError, LogCorruptError, LogInUseError, LogIOError, LogTruncatedWarning
from .memory import _NO_DISK, LogBuffer, MemoryLog, _signed

FILE_MAGIC = b"MMSBLOG\x00"
VERSION = 1
# magic, version, header size, log id, created (ns), base LSN, base checkpoint id, CRC32C of the rest
_FILE_HEADER = struct.Struct("<8sII16sQQ16sI4x")
FILE_HEADER_SIZE = _FILE_HEADER.size  # 72
# magic, CRC32C (of the rest and the payload, seeded with the log id's CRC), payload bytes, LSN, frame number
_FRAME = struct.Struct("<IIQQQ")
_NO_BASE = bytes(16)
FRAME_BYTES = _w.FRAME_BYTES  # a frame's payload bound (whole commits; a larger commit alone)

_k: Any = None
_w_seal: Any = None
_wk: Any = None


def _kernels() -> Any:
    global _k
    if _k is None:
        from ..kernels import logfile

        _k = logfile
    return _k


def _crc(data: bytes, seed: int = 0) -> int:
    from ..kernels.checksum import crc32c

    arr = np.frombuffer(data, np.uint8)
    return int(crc32c(arr, 0, arr.size, seed))


@dataclasses.dataclass
class LogHeader:
    log_id: bytes
    created_ns: int
    base_lsn: int  # the LSN of the checkpoint the log continues (see continues)
    base_id: bytes  # that checkpoint's id (16 zero bytes when none)

    def pack(self) -> bytes:
        body = _FILE_HEADER.pack(FILE_MAGIC, VERSION, FILE_HEADER_SIZE, self.log_id, self.created_ns,
                                 self.base_lsn, self.base_id, 0)
        return body[:-8] + struct.pack("<I4x", _crc(body[:-8]))

    @classmethod
    def unpack(cls, raw: bytes, what: str) -> LogHeader:
        if len(raw) < FILE_HEADER_SIZE:
            raise LogCorruptError(f"{what}: {len(raw)} bytes, shorter than a log header", 0)
        magic, version, size, log_id, created, base_lsn, base_id, crc = _FILE_HEADER.unpack_from(raw)
        if magic != FILE_MAGIC:
            raise LogCorruptError(f"{what} is not an mmsb log (magic {magic!r})", 0)
        if version != VERSION or size != FILE_HEADER_SIZE:
            raise LogCorruptError(f"{what}: log format version {version} (header {size} B) is not one "
                                  f"this mmsb reads (version {VERSION})", 8)
        if crc != _crc(raw[: FILE_HEADER_SIZE - 8]):
            raise LogCorruptError(f"{what}: the log header fails its checksum", 0)
        if any(raw[FILE_HEADER_SIZE - 4:FILE_HEADER_SIZE]):  # outside the checksum: zero, as written
            raise LogCorruptError(f"{what}: the log header's padding is not zero", FILE_HEADER_SIZE - 4)
        return cls(log_id, created, base_lsn, base_id)

    @property
    def seed(self) -> int:
        return _crc(self.log_id)

    @property
    def continues(self) -> bool:
        """Whether the log continues a checkpoint (one at LSN 0 too: pages take no LSN)."""
        return self.base_id != _NO_BASE


@dataclasses.dataclass
class LogContents:
    """What reading a log file found: its header, the records of its whole frames, and damage."""

    path: str
    header: LogHeader
    payload: np.ndarray  # the records of every whole frame, in order (the in-memory layout)
    frames: int
    valid_end: int  # file offset where the whole frames end
    file_size: int
    status: int  # SCAN_CLEAN / SCAN_TORN / SCAN_CORRUPT
    frame_starts: np.ndarray  # where each frame's records start in ``payload``

    def file_offset(self, pos: int) -> int:
        """The file offset of byte ``pos`` of ``payload``."""
        i = int(np.searchsorted(self.frame_starts, pos, side="right"))
        return FILE_HEADER_SIZE + pos + i * _FRAME.size

    @property
    def torn_bytes(self) -> int:
        return self.file_size - self.valid_end if self.status == _kernels().SCAN_TORN else 0


def read_log(path: str, *, fd: int | None = None, strict: bool = True, warn: bool = True,
             into: Any = None) -> LogContents:
    """Read and check a log file. A torn tail is dropped (with a warning); damage before it
    raises :class:`mmsb.LogCorruptError` unless ``strict`` is False (then reading stops there).

    ``into(n)``, if given, hands the uint8 array of at least ``n`` bytes to read the file into
    (the buffer of the log the records will live in: see ``LogBuffer.room``); the records end
    up at its front.
    """
    k = _kernels()
    what = f"log {path!r}"
    try:
        if fd is None:
            with open(path, "rb") as f:
                data = _read_all(f.fileno(), into)
        else:
            data = _read_all(fd, into)
    except FileNotFoundError:
        raise InvalidArgumentError(f"{what} does not exist") from None
    except OSError as exc:
        raise LogIOError(f"cannot read {what}: {exc}") from exc
    header = LogHeader.unpack(data[:FILE_HEADER_SIZE].tobytes(), what)
    # the payloads move to the front of the buffer they were read into (a second buffer of the
    # file's size cost its page faults: a fifth of a replay); ``starts`` is touched a frame at a time
    starts = np.empty(max(0, data.size - FILE_HEADER_SIZE) // FRAME_HEADER + 1, np.int64)
    end, frames, payload_bytes, lsn, status = k.scan_frames(data, FILE_HEADER_SIZE, header.seed, starts)
    if status == k.SCAN_CORRUPT and strict:
        raise LogCorruptError(f"{what} is damaged at offset {end}: a frame there fails its checks and whole "
                              "frames follow it", int(end))
    size = data.size
    contents = LogContents(path, header, data[: int(payload_bytes)], int(frames), int(end), size, int(status),
                           starts[: int(frames)].copy())
    if status == k.SCAN_TORN and warn:
        warnings.warn(f"{what}: a torn tail of {contents.torn_bytes} bytes at offset {end} was cut "
                      f"(a write a crash interrupted); the log ends at LSN {int(lsn)}",
                      LogTruncatedWarning, stacklevel=3)
    return contents


def _read_all(fd: int, into: Any = None) -> np.ndarray:
    """The whole file as a uint8 array (a new one, or the front of ``into(size)``), read straight into it."""
    size = os.fstat(fd).st_size
    data = np.empty(size, np.uint8) if into is None else into(size)[:size]
    view, at = memoryview(data), 0
    while at < size:
        n = os.preadv(fd, [view[at:]], at)
        if n == 0:
            return data[:at]  # the file shrank while it was read
        at += n
    return data


def base_path(path: str, ck_id: bytes) -> str:
    """Where the checkpoint a log file continues is kept beside it."""
    return f"{path}.base-{ck_id.hex()}.ckpt"


def clean_bases(path: str, keep: bytes) -> None:
    """Remove the kept checkpoints beside ``path`` but the one with id ``keep`` (a crash between a
    log's restart and its old base's removal leaves one behind)."""
    folder, name = os.path.split(os.path.abspath(path))
    prefix, removed = name + ".base-", False
    try:
        entries = os.listdir(folder)
    except OSError:
        return
    for entry in entries:
        tag = entry[len(prefix):-len(".ckpt")]
        if entry.startswith(prefix) and entry.endswith(".ckpt") and len(tag) == 32 and tag != keep.hex():
            removed |= _unlink(os.path.join(folder, entry))
    if removed:
        _fsync_dir(path)


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except OSError:
        return False


def _link_or_copy(src: str, dst: str) -> None:
    """``dst`` names the bytes of ``src``, durably: a hard link, or a synced copy where links fail."""
    try:
        os.link(src, dst)
    except FileExistsError:
        pass  # the same checkpoint kept before (its id names it)
    except OSError:
        tmp = ""
        try:
            fd, tmp = _new_file(dst)
            with open(src, "rb") as f, os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(f, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dst)
        except BaseException:
            if tmp:
                _unlink(tmp)
            raise
    _fsync_dir(dst)


def _new_file(path: str) -> tuple[int, str]:
    """A new, empty file beside ``path`` (an fd and its name), to be renamed over it."""
    folder, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=name + ".tmp-", dir=folder)
    return fd, tmp


def _fsync_dir(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileLog(MemoryLog):
    """A state's log that is also written to a file (see the module docstring)."""

    __slots__ = ("path", "fd", "policy", "header", "fc", "_fv", "_wake_w", "_io", "_pausing", "_ready",
                 "_thread", "_box", "_ack_r", "_closing", "failed", "regs", "_inode", "_finalizer", "file_base",
                 "_file_deltas", "_disk", "__weakref__")
    durable = True
    mode = LOG_KEEP  # the commit kernels leave sealing to seal(), which writes the file

    def __init__(self, path: str, policy: str, buffer: LogBuffer | None, header: LogHeader, fd: int,
                 file_end: int, frames: int, keep: bool = False) -> None:
        super().__init__(buffer, keep)
        self.path, self.fd, self.policy, self.header = path, fd, policy, header
        # what has been written, shared with the writer thread's kernel (mmsb.kernels.writer)
        self.fc = np.zeros(_w.F_WORDS, np.int64)
        self._fv = memoryview(self.fc)
        self.fc[_w.F_FD], self.fc[_w.F_SEED] = fd, header.seed
        self._file_end, self.frames = file_end, frames
        self._synced = (0, file_end, frames)
        self._wake_w = -1  # the write end of the writer thread's wake pipe
        self._ack_r = -1  # the read end of the pipe the writer thread acknowledges flushes on
        self.fc[_w.F_WAKE_W] = -1
        self._io = threading.Lock()  # one frame writer at a time: the thread's kernel, or a flush
        self._pausing = threading.Lock()  # one caller at a time asks the writer thread to pause
        self._ready = threading.Event()  # set when a paused or failed writer thread may go on
        self._closing = False
        # the OSError that stopped writing: the state refuses writes until a flush() succeeds
        self.failed: OSError | None = None
        self.regs: np.ndarray | None = None  # the state's registers: R_SLOW sends writes to a check
        st = os.fstat(fd)
        self._inode = (st.st_dev, st.st_ino)
        self._thread: threading.Thread | None = None
        self.file_base = 0  # the log position of the file's first record (moved by restart_file)
        self._file_deltas = 0  # deltas logged before it
        self._disk: tuple[np.ndarray, int] | None = None  # the file mapped for reading, and its size
        self._box: list[Any] = [None]  # the writer thread, for the finalizer
        # a log dropped without close() still releases its file and lock
        self._finalizer = weakref.finalize(self, _release, fd, self.fc, self._ready, self._box)
        self._finalizer.atexit = False  # at exit, _flush_at_exit writes out first; the OS closes the file

    # the writer's progress lives in fc, where its kernel moves it
    @property
    def _flushed(self) -> int:
        """Payload bytes already in the file."""
        return self._fv[_w.F_FLUSHED]

    @_flushed.setter
    def _flushed(self, value: int) -> None:
        self._fv[_w.F_FLUSHED] = value

    @property
    def _file_end(self) -> int:
        return self._fv[_w.F_FILE_END]

    @_file_end.setter
    def _file_end(self, value: int) -> None:
        self._fv[_w.F_FILE_END] = value

    @property
    def frames(self) -> int:
        """Frames in the file."""
        return self._fv[_w.F_FRAMES]

    @frames.setter
    def frames(self, value: int) -> None:
        self._fv[_w.F_FRAMES] = value

    @property
    def syncs(self) -> int:  # type: ignore[override]
        """``fdatasync`` calls made."""
        return self._fv[_w.F_SYNCS]

    @property
    def _synced(self) -> tuple[int, int, int]:
        """(_flushed, _file_end, frames) at the last good sync: bytes the file certainly holds."""
        fv = self._fv
        return fv[_w.F_SYNCED_FLUSHED], fv[_w.F_SYNCED_END], fv[_w.F_SYNCED_FRAMES]

    @_synced.setter
    def _synced(self, value: tuple[int, int, int]) -> None:
        self._fv[_w.F_SYNCED_FLUSHED], self._fv[_w.F_SYNCED_END], self._fv[_w.F_SYNCED_FRAMES] = value

    @holds
    @classmethod
    def open(cls, path: Any, policy: str, buffer: LogBuffer | None = None,
             base: tuple[int, bytes] | None = None) -> tuple[FileLog, LogContents | None]:
        """Open (or create) the log at ``path`` for writing; refuses one another state writes.

        Returns the log and, for an existing file, what reading it found (the
        caller replays it and then :meth:`adopt`\\ s it). A torn tail is cut
        from the file. ``base`` (LSN, checkpoint id) marks a new log as the
        continuation of a checkpoint.
        """
        path = os.fspath(path)
        _writer_kernels()  # before the file is opened: the first use compiles (or loads) them
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise LogIOError(f"cannot open log {path!r}: {exc}") from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LogInUseError(f"log {path!r} is being written by another live state") from None
            size = os.fstat(fd).st_size
            if size < FILE_HEADER_SIZE:
                # a header is synced before any commit is acknowledged: a shorter
                # file is one a crash caught while it was being created
                if size:
                    warnings.warn(f"log {path!r}: {size} bytes, a header torn while the log was created; "
                                  "starting it afresh", LogTruncatedWarning, stacklevel=3)
                header = LogHeader(uuid.uuid4().bytes, time.time_ns(), *(base or (0, _NO_BASE)))
                os.ftruncate(fd, 0)
                os.pwrite(fd, header.pack(), 0)
                os.fsync(fd)
                _fsync_dir(path)
                return cls(path, policy, buffer, header, fd, FILE_HEADER_SIZE, 0), None
            contents = read_log(path, fd=fd, into=buffer.room)
            if contents.valid_end < size:
                os.ftruncate(fd, contents.valid_end)
                os.fsync(fd)
            log = cls(path, policy, buffer, contents.header, fd, contents.valid_end, contents.frames, keep=True)
            return log, contents
        except BaseException as exc:
            os.close(fd)
            if isinstance(exc, OSError) and not isinstance(exc, LogIOError):  # a full or failing disk
                raise LogIOError(f"cannot prepare log {path!r}: {exc}") from exc
            raise

    def adopt(self, payload: np.ndarray, deltas: int, lsn: int) -> None:
        """Take the records already in the file as this log's own."""
        self.load(payload, deltas)
        self._flushed = payload.size
        self._synced = (self._flushed, self._file_end, self.frames)

    def start(self) -> None:
        if self.policy == "commit" or self._thread is not None:
            return
        fc = self.fc
        wake_r, self._wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(self._wake_w, False)  # a full pipe means a wake-up is pending already
        fc[_w.F_WAKE_W] = self._wake_w
        self._ack_r, ack_w = os.pipe()
        os.set_blocking(ack_w, False)
        fc[_w.F_ACK_W], fc[_w.F_ACK_R] = ack_w, self._ack_r
        fc[_w.F_WAKE] = wake_r
        fc[_w.F_INTERVAL_NS] = config.LOG_GROUP_INTERVAL_US * 1000
        fc[_w.F_SYNC] = self.policy == "group"
        if self._buf is not None:
            self._buf.retired = []  # the thread reads the buffer by address: keep what it may read
        # the thread holds the log weakly, so a log nobody holds can still be collected
        self._thread = threading.Thread(target=_writer, args=(weakref.ref(self), fc, wake_r, self._ready),
                                        name=f"mmsb-log {self.path}", daemon=True)
        self._thread.start()
        self._box[0] = self._thread
        _unclosed.add(self)

    def _kick(self) -> None:
        """Wake the writer thread (a full pipe: it is woken already)."""
        try:
            os.write(self._wake_w, b"\x01")
        except (BlockingIOError, OSError):
            pass

    # -- writing -------------------------------------------------------------------

    def _append_commit(self, rtype: int, lsn: int, w2: int, w3: int, w4: int, w5: int) -> None:
        self._append(rtype, lsn, w2, w3, w4, w5)
        self.seal(lsn)  # through the file

    def append_create(self, first_id: int, count: int, size: int, location: int, lsn: int) -> None:
        self._append_commit(REC_CREATE, lsn, first_id, size, count, location)  # not MemoryLog's shortcut

    @holds
    def seal(self, lsn: int) -> None:
        buf = self._buf
        if buf is None:
            return
        found = _seal(buf.ctr, self.fc, lsn)
        if found == _w.SEAL_ROOM:
            self.reserve(REC_HEADER)
            found = _seal(buf.ctr, self.fc, lsn)
        if buf.retired:
            self._prune(buf)
        if found == _w.SEAL_NOTHING:
            return
        if self.policy == "commit":
            self._write(sync=True)
        elif self.failed is not None:
            self._raise()
        elif found == _w.SEAL_ASLEEP:
            self._kick()

    @holds
    def restart_file(self, ck_path: str, ck_id: bytes, ck_lsn: int) -> str:
        """Replace the file by one that continues the checkpoint at ``ck_path`` (its records up to
        the log's seal are in that checkpoint, which is durable): the disk keeps what came after.

        The checkpoint is kept beside the log as :func:`base_path` (a hard link, else a copy), so
        the log alone recovers. Crash-safe at every step: until the new file takes the path by an
        atomic rename, the old file is whole; after, the new one and its base are. Returns the
        base's path. Raises :class:`mmsb.LogIOError`, the old file still in use, if a step fails.
        """
        path = self.path
        base = base_path(path, ck_id)
        tmp = ""
        try:
            _link_or_copy(ck_path, base)
            header = LogHeader(uuid.uuid4().bytes, time.time_ns(), ck_lsn, ck_id)
            fd, tmp = _new_file(path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.pwrite(fd, header.pack(), 0)
                os.fsync(fd)
                with self._paused():
                    self._write_now(sync=True, retry=False)  # the old file holds every sealed record
                    os.replace(tmp, path)
                    tmp = ""
                    _fsync_dir(path)
                    old_fd, old_base = self.fd, self.header.base_id
                    st = os.fstat(fd)
                    self.fd, self.header, self._inode = fd, header, (st.st_dev, st.st_ino)
                    fc = self.fc
                    fc[_w.F_FD], fc[_w.F_SEED] = fd, header.seed
                    self.file_base, self._file_deltas, self._disk = self._flushed, self.deltas, None
                    self._history = None  # its entries point into the old file
                    self._file_end, self.frames = FILE_HEADER_SIZE, 0
                    self._synced = (self._flushed, FILE_HEADER_SIZE, 0)
                    self._finalizer.detach()
                    self._finalizer = weakref.finalize(self, _release, fd, fc, self._ready, self._box)
                    self._finalizer.atexit = False
                    os.close(old_fd)
            except BaseException:
                if tmp:
                    os.close(fd)
                raise
        except OSError as exc:
            if tmp:
                _unlink(tmp)
            raise LogIOError(f"cannot start log {path!r} anew at its checkpoint: {exc}") from exc
        if old_base != _NO_BASE:
            _unlink(base_path(path, old_base))  # the old file's base, which nothing needs now
            _fsync_dir(path)
        return base

    @contextlib.contextmanager
    def _paused(self) -> Any:
        """The writer thread (if any) out of its kernel, with nothing left to write."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            with self._io:
                yield
            return
        with self._pausing:
            self._fv[_w.F_PAUSE] = 1
            self._kick()
            try:
                with self._io:
                    yield
            finally:
                self._fv[_w.F_PAUSE] = 0
                self._ready.set()

    # -- reading records that only the file holds (memory trimmed by a retention window) --------

    def __len__(self) -> int:
        """Delta records the log holds, in memory or in its file."""
        return self.deltas - self._file_deltas

    @property
    def first_lsn(self) -> int:  # type: ignore[override]
        """The log (memory and file) holds every record whose LSN is at least this."""
        return self.header.base_lsn + 1 if self.header.continues else 1

    @property
    def holds_all(self) -> bool:  # type: ignore[override]
        return not self.header.continues

    def _disk_range(self) -> tuple[int, int, int]:
        return FILE_HEADER_SIZE, self.file_base, max(self.file_base, self.first_pos)

    def _index_trimmed(self, cut: int) -> None:
        # the file holds what memory dropped: the index reads it there from now on
        if self._history is not None:
            self._history.to_disk(self._disk_words(), cut)

    def _disk_words(self) -> np.ndarray:
        """The file mapped read-only, as words: every record trimmed from memory is in it, and
        synced (a trim stops at the last good sync), so a mapping up to there covers them."""
        end = self._synced[1]
        if end <= FILE_HEADER_SIZE:
            return _NO_DISK
        if self._disk is None or self._disk[1] < end:
            try:
                mm = mmap.mmap(self.fd, end, access=mmap.ACCESS_READ)
            except (OSError, ValueError) as exc:
                raise LogIOError(f"cannot read log {self.path!r} back: {exc}") from exc
            self._disk = (np.frombuffer(mm, np.uint64, count=end >> 3), end)
        return self._disk[0]

    def _disk_record(self, offset: int) -> bytes:
        words = self._disk_words()
        length = int(words[offset >> 3]) & 0xFFFFFFFF
        return words[offset >> 3:(offset + length) >> 3].tobytes()

    def file_due(self, page_bytes: int) -> bool:
        """Whether a window over this log should start the file anew at a checkpoint: once the
        file holds twice the memory buffer the window settled in, and more than the pages
        (a checkpoint writes them all, so it costs at most about as much as the logging since
        the last one)."""
        t = self._trim
        buf = self._buf
        return t is not None and t.keep is not None and buf is not None and (
            self._file_end - FILE_HEADER_SIZE > max(2 * buf.phys.size, page_bytes, 1 << 20))

    def _settle(self) -> None:
        # a trim comes once per three quarters of the buffer: one sync then costs little, and
        # without it a group or none log could trim only what its writer happened to sync
        if self._fv[_w.F_SYNCED_FLUSHED] < self.sealed and self.failed is None:
            self.flush()

    def _trim_limit(self) -> int:
        # a retry after a failed write writes anew from the last good sync: keep what it needs
        return min(self.sealed, self._fv[_w.F_SYNCED_FLUSHED])

    def _prune(self, buf: LogBuffer) -> None:
        """Let go of the arrays a grown buffer left behind that the writer thread has moved past."""
        seen, retired = self._fv[_w.F_SEEN], buf.retired
        if seen == buf.ctr[L_ADDR]:
            retired.clear()
            return
        for i, arr in enumerate(retired):
            if _signed(arr.ctypes.data) == seen:
                del retired[:i]
                return

    @holds
    def flush(self) -> None:
        """Write and sync every sealed commit now. After a failure (:attr:`failed`), try again:
        everything since the last good sync is written anew, and on success writes resume."""
        thread = self._thread
        if thread is not None and self.failed is None and thread.is_alive() and self._file_ok():
            with self._pausing:  # one flush at a time waits on the acknowledgements
                if self._ask_writer(thread):
                    return
        self._write(sync=True, retry=True)

    def _file_ok(self) -> bool:
        try:
            self._check_file()
        except OSError:
            return False  # the slow path fails and says why
        return True

    def _ask_writer(self, thread: threading.Thread) -> bool:
        """Have the writer thread's kernel write and sync what is sealed, and wait for it: the
        thread never leaves its kernel, so it never waits for the GIL (a pause would cost that
        wait when it resumes). False when the thread is gone; raises what it met."""
        fv = self._fv
        asked = fv[_w.F_FLUSH_ASKED] + 1
        _wk.publish(self.fc, _w.F_FLUSH_ASKED, asked)  # after the seals it covers
        self._kick()
        while True:
            ready, _, _ = select.select([self._ack_r], [], [], 0.05)
            if ready:
                os.read(self._ack_r, 4096)
            if fv[_w.F_FLUSH_DONE] >= asked:
                return True
            if self.failed is not None:
                self._raise()
            if not thread.is_alive():
                return False

    def _raise(self) -> None:
        err = self.failed
        raise LogIOError(f"writing log {self.path!r} failed ({err}): commits since the last good sync are "
                         "in memory only, and the state refuses writes until st.flush() succeeds "
                         "(st.checkpoint() to another disk keeps them)") from err

    def _fail(self, exc: OSError) -> None:
        """Stop writing: later frames are written again from the last good sync, whose bytes the
        file certainly holds (a failed sync may have dropped anything after it)."""
        self.failed = exc
        self._flushed, self._file_end, self.frames = self._synced
        if self.regs is not None:
            self.regs[R_SLOW] = 1

    def _check_file(self) -> None:
        """A log file deleted or replaced while open would take every later write with it."""
        st = os.fstat(self.fd)
        if st.st_nlink == 0:
            raise OSError(errno.ENOENT, "the log file was deleted while the state wrote it")
        try:
            here = os.stat(self.path)
        except FileNotFoundError:
            raise OSError(errno.ENOENT, "the log file was moved away while the state wrote it") from None
        if (here.st_dev, here.st_ino) != self._inode:
            raise OSError(errno.EEXIST, "another file took the log's path while the state wrote it")

    @holds
    def _write(self, sync: bool, retry: bool = False) -> None:
        """Write (and sync) what is sealed from this thread, the writer thread paused meanwhile."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            with self._io:
                self._write_now(sync, retry)
            return
        with self._pausing:
            self._fv[_w.F_PAUSE] = 1
            self._kick()
            try:
                with self._io:  # the writer thread lets go of it once its kernel returns
                    self._write_now(sync, retry)
            finally:
                self._fv[_w.F_PAUSE] = 0
                self._ready.set()

    def _write_now(self, sync: bool, retry: bool) -> None:
        if self.failed is not None and not retry:
            self._raise()
        end = self.sealed  # the seal before the buffer: a buffer read later holds every sealed byte
        array = self._buf.array if self._buf is not None else None
        start = self._flushed
        if array is None or (end == start and not sync):
            return
        try:
            self._check_file()
            if self.failed is not None:  # a retry: cut what the failed attempt may have left
                os.ftruncate(self.fd, self._file_end)
            if end != start:
                err = _frames_out(self.fc, array, start, end)  # counts each frame as it lands
                if err:
                    raise OSError(err, os.strerror(err)) if err > 0 else OSError(
                        errno.EIO, "the log's records are not well formed")
            if sync or self.policy == "group":
                os.fdatasync(self.fd)
                self._fv[_w.F_SYNCS] += 1
                self._synced = (self._flushed, self._file_end, self.frames)
        except OSError as exc:
            self._fail(exc)
            self._raise()
        self.failed = None

    @holds
    def close(self) -> None:
        """Write and sync what is sealed, stop the writer thread and release the file."""
        if self.fd < 0:
            return
        self._closing = True
        if self._thread is not None:
            self._fv[_w.F_STOP] = 1
            self._kick()
            self._ready.set()
            self._thread.join()
            if self._buf is not None:
                self._buf.retired = None
        try:
            self._write(sync=True, retry=True)  # after a failure, one last try
        finally:
            os.close(self.fd)
            self.fd = -1
            self._disk = None
            if self._wake_w >= 0:
                os.close(self._wake_w)
                os.close(self._ack_r)
                self._wake_w = self._fv[_w.F_WAKE_W] = self._ack_r = -1
            self._finalizer.detach()

    def __repr__(self) -> str:
        return f"<FileLog {self.path!r} sync={self.policy} deltas={self.deltas} bytes={self.used}>"


def _release(fd: int, fc: np.ndarray, ready: threading.Event, box: list[Any]) -> None:
    """A log dropped without close(): its writer thread stops, and the file is released (by the
    thread, once its kernel has returned, when there is one: waited for here)."""
    wake_w = int(fc[_w.F_WAKE_W])
    if wake_w < 0:
        os.close(fd)
        return
    fc[_w.F_STOP] = 1
    try:
        os.write(wake_w, b"\x01")
    except OSError:
        pass
    os.close(wake_w)
    os.close(int(fc[_w.F_ACK_R]))
    ready.set()
    thread = box[0]
    if thread is not None and thread is not threading.current_thread():
        thread.join(timeout=10)  # it closes the file as it ends


def _ack(fc: np.ndarray) -> None:
    try:
        os.write(int(fc[_w.F_ACK_W]), b"\x01")
    except OSError:
        pass  # a full pipe: the waiting flush has bytes to read already


def _writer(ref: weakref.ref, fc: np.ndarray, wake_r: int, ready: threading.Event) -> None:
    """The group/none writer thread: its kernel writes (and for group, syncs) what is sealed, at
    most an interval after its seal, without the GIL; with nothing to write it sleeps until a
    seal wakes it (an idle state costs no CPU). It comes back to Python when a flush or close
    asks, when the log buffer moved, or when a write failed."""
    rounds = _writer_kernels().write_rounds
    fv = memoryview(fc)
    try:
        while not fv[_w.F_STOP]:
            log = ref()
            if log is None:
                return
            if fv[_w.F_PAUSE] or log.failed is not None or log._buf is None:
                del log
                ready.wait()  # a flush or close sets it
                ready.clear()
                continue
            io, buf = log._io, log._buf
            del log  # while its kernel runs, the thread does not keep the log alive
            with io:
                if fv[_w.F_PAUSE] or fv[_w.F_STOP]:
                    continue
                if buf.retired:
                    buf.retired.clear()  # the kernel is not running: nothing reads them
                why = rounds(buf.ctr, fc)
            if why == _w.WR_ERROR or why == _w.WR_DAMAGED:
                log = ref()
                if log is not None:
                    code = int(fc[_w.F_ERRNO]) if why == _w.WR_ERROR else errno.EIO
                    what = os.strerror(code) if why == _w.WR_ERROR else "the log's records are not well formed"
                    log._fail(OSError(code, what))
                del log
                _ack(fc)  # a flush waiting for this thread learns of the failure
    finally:
        os.close(wake_r)
        os.close(int(fc[_w.F_ACK_W]))
        if ref() is None:  # dropped: _release left the file to this thread
            os.close(int(fc[_w.F_FD]))


# group/none logs still open: a process that exits without closing its states still
# writes and syncs what they sealed (a kill -9 cannot be helped: that is what flush() is for)
_unclosed: weakref.WeakSet[FileLog] = weakref.WeakSet()


@holds
@atexit.register
def _flush_at_exit() -> None:
    for log in list(_unclosed):
        try:
            if log.fd >= 0:
                log.flush()
        except Exception:  # noqa: BLE001 - exiting anyway; nothing left to tell
            pass


def _writer_kernels() -> Any:
    """mmsb.kernels.writer, its kernels compiled (or loaded from the cache)."""
    global _w_seal, _wk
    if _wk is None:
        from ..kernels import writer
        from ..kernels._jit import entry

        _w_seal = entry(writer.seal_commit)
        writer.write_rounds.compiled()
        writer.publish.compiled()
        writer.write_frames.compiled()
        _wk = writer
    return _wk


def _seal(ctr: np.ndarray, fc: np.ndarray, lsn: int) -> int:
    return _w_seal(ctr, fc, lsn)


def _frames_out(fc: np.ndarray, array: np.ndarray, start: int, end: int) -> int:
    """Write the sealed records ``array[start:end]`` as frames (see :mod:`mmsb.kernels.writer`):
    0, an errno, or -1 when the records are not well formed."""
    return _wk.write_frames(fc, array, start, end)
