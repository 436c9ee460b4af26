"""Log files: a header, then frames of whole commits, each with its length and CRC32C.

Writing: a :class:`FileLog` keeps every record in memory like
:class:`~mmsb.log.memory.MemoryLog` (``st.log``, replay and history read
them there) and appends each sealed commit to its file as a frame:

* ``sync="commit"``: the sealing call writes the frame and ``fdatasync``\\ s
  before it returns, so whatever a call returned is on disk;
* ``sync="group"``: a writer thread frames everything sealed so far, writes
  it and syncs, at most ``config.LOG_GROUP_INTERVAL_US`` after the seal;
  :meth:`FileLog.flush` (``State.flush``) makes it durable at once;
* ``sync="none"``: the same thread writes without syncing; the OS decides.

A frame holds whole commits only, so recovery finds whole commits or none of
one. Reading (:func:`read_log`) checks the header and every frame; a torn
tail is cut with a :class:`mmsb.LogTruncatedWarning`; damage before the tail
raises :class:`mmsb.LogCorruptError` with its offset. Layout: ``docs/FORMAT.md``.
"""

from __future__ import annotations

import atexit
import dataclasses
import errno
import fcntl
import os
import struct
import threading
import time
import uuid
import warnings
import weakref
from typing import Any

import numpy as np

from .._interrupts import holds
from .. import config
from .._layout import LOG_KEEP, R_SLOW, REC_CREATE
from ..errors import InvalidArgumentError, LogCorruptError, LogInUseError, LogIOError, LogTruncatedWarning
from .memory import LogBuffer, MemoryLog

FILE_MAGIC = b"MMSBLOG\x00"
VERSION = 1
# magic, version, header size, log id, created (ns), base LSN, base checkpoint id, CRC32C of the rest
_FILE_HEADER = struct.Struct("<8sII16sQQ16sI4x")
FILE_HEADER_SIZE = _FILE_HEADER.size  # 72
# magic, CRC32C (of the rest and the payload, seeded with the log id's CRC), payload bytes, LSN, frame number
_FRAME = struct.Struct("<IIQQQ")
_NO_BASE = bytes(16)
# a frame holds whole commits up to this many payload bytes (one larger commit alone): a torn
# tail loses at most the frame being written, not every commit since the last write
FRAME_BYTES = 1 << 16

_k: Any = None


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
    base_lsn: int  # 0: the log holds the whole history; else it continues a checkpoint
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


def read_log(path: str, *, fd: int | None = None, strict: bool = True, warn: bool = True) -> LogContents:
    """Read and check a log file. A torn tail is dropped (with a warning); damage before it
    raises :class:`mmsb.LogCorruptError` unless ``strict`` is False (then reading stops there)."""
    k = _kernels()
    what = f"log {path!r}"
    try:
        if fd is None:
            with open(path, "rb") as f:
                data = _read_all(f.fileno())
        else:
            data = _read_all(fd)
    except FileNotFoundError:
        raise InvalidArgumentError(f"{what} does not exist") from None
    except OSError as exc:
        raise LogIOError(f"cannot read {what}: {exc}") from exc
    header = LogHeader.unpack(data[:FILE_HEADER_SIZE].tobytes(), what)
    end, frames, payload_bytes, lsn, status = k.scan_frames(data, FILE_HEADER_SIZE, header.seed)
    if status == k.SCAN_CORRUPT and strict:
        raise LogCorruptError(f"{what} is damaged at offset {end}: a frame there fails its checks and whole "
                              "frames follow it", int(end))
    payload = np.zeros(max(8, int(payload_bytes)), np.uint8)
    starts = np.zeros(int(frames), np.int64)
    k.gather_payloads(data, FILE_HEADER_SIZE, end, payload, starts)
    contents = LogContents(path, header, payload[: int(payload_bytes)], int(frames), int(end),
                           data.size, int(status), starts)
    if status == k.SCAN_TORN and warn:
        warnings.warn(f"{what}: a torn tail of {contents.torn_bytes} bytes at offset {end} was cut "
                      f"(a write a crash interrupted); the log ends at LSN {int(lsn)}",
                      LogTruncatedWarning, stacklevel=3)
    return contents


def _read_all(fd: int) -> np.ndarray:
    """The whole file as a uint8 array, read straight into it."""
    size = os.fstat(fd).st_size
    data = np.empty(size, np.uint8)
    view, at = memoryview(data), 0
    while at < size:
        n = os.preadv(fd, [view[at:]], at)
        if n == 0:
            return data[:at]  # the file shrank while it was read
        at += n
    return data


def _fsync_dir(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileLog(MemoryLog):
    """A state's log that is also written to a file (see the module docstring)."""

    __slots__ = ("path", "fd", "policy", "header", "syncs", "frames", "_flushed", "_file_end",
                 "_synced", "_mu", "_io", "_wake", "_idle", "_thread", "_closing", "failed", "regs", "_inode",
                 "_finalizer", "__weakref__")
    durable = True
    mode = LOG_KEEP  # the commit kernels leave sealing to seal(), which writes the file

    def __init__(self, path: str, policy: str, buffer: LogBuffer | None, header: LogHeader, fd: int,
                 file_end: int, frames: int) -> None:
        super().__init__(buffer)
        self.path, self.fd, self.policy, self.header = path, fd, policy, header
        self.syncs = 0
        self.frames = frames
        self._flushed = 0  # payload bytes already in the file
        self._file_end = file_end
        self._synced = (0, file_end, frames)  # (_flushed, _file_end, frames) at the last good sync
        self._mu = threading.Lock()  # guards sealed against the writer thread
        self._io = threading.Lock()  # one frame write at a time
        self._wake = threading.Event()
        self._idle = False  # the writer thread sleeps until a seal wakes it
        self._closing = False
        # the OSError that stopped writing: the state refuses writes until a flush() succeeds
        self.failed: OSError | None = None
        self.regs: np.ndarray | None = None  # the state's registers: R_SLOW sends writes to a check
        st = os.fstat(fd)
        self._inode = (st.st_dev, st.st_ino)
        self._thread: threading.Thread | None = None
        # a log dropped without close() still releases its file and lock
        self._finalizer = weakref.finalize(self, _release, fd, self._wake)
        self._finalizer.atexit = False  # at exit, _flush_at_exit writes out first; the OS closes the file

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
            contents = read_log(path, fd=fd)
            if contents.valid_end < size:
                os.ftruncate(fd, contents.valid_end)
                os.fsync(fd)
            log = cls(path, policy, buffer, contents.header, fd, contents.valid_end, contents.frames)
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
        if self.policy != "commit" and self._thread is None:
            # the thread holds the log weakly, so a log nobody holds can still be collected
            self._thread = threading.Thread(target=_writer, args=(weakref.ref(self), self._wake),
                                            name=f"mmsb-log {self.path}", daemon=True)
            self._thread.start()
            _unclosed.add(self)

    # -- writing -------------------------------------------------------------------

    def _append_commit(self, rtype: int, lsn: int, w2: int, w3: int, w4: int, w5: int) -> None:
        self._append(rtype, lsn, w2, w3, w4, w5)
        self.seal(lsn)  # through the file

    def append_create(self, first_id: int, count: int, size: int, location: int, lsn: int) -> None:
        self._append_commit(REC_CREATE, lsn, first_id, size, count, location)  # not MemoryLog's shortcut

    @holds
    def seal(self, lsn: int) -> None:
        if self.used == self.sealed:
            return
        with self._mu:
            MemoryLog.seal(self, lsn)
        if self.policy == "commit":
            self._write(sync=True)
        elif self.failed is not None:
            self._raise()
        elif self._idle:
            self._idle = False
            self._wake.set()

    @holds
    def flush(self) -> None:
        """Write and sync every sealed commit now. After a failure (:attr:`failed`), try again:
        everything since the last good sync is written anew, and on success writes resume."""
        self._write(sync=True, retry=True)

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
        with self._io:
            if self.failed is not None and not retry:
                self._raise()
            with self._mu:
                start, end = self._flushed, self.sealed
                array = self._buf.array if self._buf is not None else None
            if array is None or (end == start and not sync):
                return
            try:
                self._check_file()
                if self.failed is not None:  # a retry: cut what the failed attempt may have left
                    os.ftruncate(self.fd, self._file_end)
                if end != start:
                    parts, n, frames, at = self._frames(array, start, end)
                    _write_all(self.fd, parts, self._file_end)
                    # the frames are in the file: count them before anything else can happen
                    self._file_end, self.frames, self._flushed = at, self.frames + frames, end
                if sync or self.policy == "group":
                    os.fdatasync(self.fd)
                    self.syncs += 1
                    self._synced = (self._flushed, self._file_end, self.frames)
            except OSError as exc:
                self._fail(exc)
                self._raise()
            self.failed = None

    def _frames(self, array: np.ndarray, start: int, end: int) -> tuple[list[Any], int, int, int]:
        """The frames of the sealed records ``[start, end)``: whole commits, at most ``FRAME_BYTES``
        of them in a frame (a larger commit alone), so a torn tail costs at most one frame. Returns
        the parts to write, their bytes, the frame count and the file offset after them."""
        cuts = _commit_ends(array, start, end)
        parts: list[Any] = []
        at, number, first = self._file_end, self.frames, start
        mv = memoryview(array)
        magic = _kernels().FRAME_MAGIC
        i = 0
        while first < end:
            j = i
            while j + 1 < len(cuts) and cuts[j + 1][0] - first <= FRAME_BYTES:
                j += 1
            last, lsn = cuts[j]
            head = bytearray(_FRAME.pack(magic, 0, last - first, lsn, number))
            crc = _k.payload_crc(self.header.seed, np.frombuffer(head, np.uint8), array, first, last)
            struct.pack_into("<I", head, 4, int(crc))
            parts += [bytes(head), mv[first:last]]
            at += len(head) + last - first
            number += 1
            first, i = last, j + 1
        return parts, at - self._file_end, number - self.frames, at

    @holds
    def close(self) -> None:
        """Write and sync what is sealed, stop the writer thread and release the file."""
        if self.fd < 0:
            return
        self._closing = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self._write(sync=True, retry=True)  # after a failure, one last try
        finally:
            os.close(self.fd)
            self.fd = -1
            self._finalizer.detach()

    def __repr__(self) -> str:
        return f"<FileLog {self.path!r} sync={self.policy} deltas={self.deltas} bytes={self.used}>"


def _release(fd: int, wake: threading.Event) -> None:
    """A log dropped without close(): its file is released and its writer thread ends."""
    os.close(fd)
    wake.set()


def _writer(ref: weakref.ref, wake: threading.Event) -> None:
    """The group/none writer thread: write (and for group, sync) what is sealed, at most an
    interval after its seal. With nothing to write it sleeps until a seal wakes it (an idle
    state costs no CPU)."""
    interval = config.LOG_GROUP_INTERVAL_US / 1e6
    while True:
        log = ref()
        if log is None or log._closing:
            return
        if log._flushed == log.sealed or log.failed is not None:
            log._idle = True  # from here a seal wakes this thread (see FileLog.seal)
            if log._flushed == log.sealed or log.failed is not None:
                del log
                wake.wait()
                wake.clear()
                continue
            log._idle = False
        del log
        wake.wait(interval)  # let the commits of one interval gather into its frames
        log = ref()
        if log is None or log._closing:
            return
        if log.failed is None:
            try:
                log._write(sync=False)
            except LogIOError:
                pass  # kept in log.failed: the next write, flush or close raises it
        del log


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


def _commit_ends(array: np.ndarray, start: int, end: int) -> list[tuple[int, int]]:
    """(end offset, LSN) of each commit whose records lie in ``array[start:end]`` (whole commits)."""
    ends = _kernels().commit_ends(array, start, end)
    return list(zip(ends[0].tolist(), ends[1].tolist()))


def _write_all(fd: int, parts: list[Any], offset: int) -> None:
    for part in parts:
        view = memoryview(part).cast("B")
        while len(view):
            n = os.pwrite(fd, view, offset)
            view = view[n:]
            offset += n
