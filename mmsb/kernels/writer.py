"""The log-file writer: seals commits and writes them as frames without the GIL.

A ``"group"`` or ``"none"`` log's writer thread spends its life in
:func:`write_rounds`, a GIL-free kernel that frames, writes and syncs what is
sealed and sleeps on a pipe when there is nothing to write. It never waits for
the interpreter, so its interval holds however busy the Python threads are. (A
writer that came back to Python after each write waited for the GIL each time:
behind a thread that drops and retakes the GIL at every nogil call, tens of
milliseconds a time, seconds per sync.)

The sealing thread and the writer share two int64 arrays: the log buffer's
counters (``L_*``) and the writer's control words (``F_*``, ``mmsb._layout``).
:func:`seal_commit` stores the seal and then reads whether the writer sleeps;
the writer says it sleeps and then reads the seal again. Both are sequentially
consistent atomics, so one of the two always sees the other: a commit never
waits for a wake-up nobody sends. The seal's store also publishes the commit's
bytes to the writer. A buffer that grows copies its bytes, then publishes its
new address (:func:`publish`); the writer reads the seal, then the address, so
the array it reads holds every byte sealed. Arrays a growth replaced stay alive
until the writer says (``F_SEEN``) that it reads a newer one.
"""

import sys

import numpy as np

from .._layout import (
    F_ACK_W,
    F_FD,
    F_FLUSH_ASKED,
    F_FLUSH_DONE,
    FRAME_BYTES,
    F_FILE_END,
    F_FLUSHED,
    F_FRAMES,
    F_IDLE,
    F_INTERVAL_NS,
    F_PAUSE,
    F_ERRNO,
    F_SEED,
    F_SEEN,
    F_STOP,
    F_SYNC,
    F_SYNCED_END,
    F_SYNCED_FLUSHED,
    F_SYNCED_FRAMES,
    F_SYNCS,
    F_WAKE,
    L_ADDR,
    L_CAP,
    L_SEALED,
    L_USED,
    REC_COMMIT,
    REC_HEADER,
    SEAL_ASLEEP,
    SEAL_AWAKE,
    SEAL_NOTHING,
    SEAL_ROOM,
    WR_DAMAGED,
    WR_ERROR,
    WR_REQUEST,
)
from .checksum import crc32c
from .logfile import FRAME_HEADER, FRAME_MAGIC
from ._jit import as_words, at, atomic_load, atomic_store, c_function, inline, lazy, monotonic_ns, store64, wall_ns
from numba import types


_POLLIN = 1
_EINTR = 4
_EAGAIN = 11 if sys.platform.startswith("linux") else 35

_i64, _i32 = types.int64, types.int32
_pwritev = c_function("pwritev", _i64, _i32, _i64, _i32, _i64)
_pwrite = c_function("pwrite", _i64, _i32, _i64, _i64, _i64)
_read = c_function("read", _i64, _i32, _i64, _i64)
_write = c_function("write", _i64, _i32, _i64, _i64)
_fdatasync = c_function("fdatasync" if sys.platform.startswith("linux") else "fsync", _i32, _i32)
_poll = c_function("poll", _i32, _i64, _i64, _i32)
_errno_location = c_function("__errno_location" if sys.platform.startswith("linux") else "__error", _i64)


@inline
def _read_errno():
    return np.int64(at(_errno_location(), (1,), np.int32)[0])


@lazy("int64(int64[::1], int64[::1], int64)")
def seal_commit(ctr, fc, lsn):
    """Write the commit record that seals every record since the last seal, then publish the
    seal. Returns SEAL_NOTHING (no records), SEAL_ROOM (no room: grow the log, call again),
    SEAL_AWAKE, or SEAL_ASLEEP (the writer sleeps: wake it)."""
    used = ctr[L_USED]
    if used == ctr[L_SEALED]:
        return SEAL_NOTHING
    if used + REC_HEADER > ctr[L_CAP]:
        return SEAL_ROOM
    at = ctr[L_ADDR] + used
    store64(at, np.uint64(REC_HEADER | REC_COMMIT << 32))
    store64(at + 8, np.uint64(lsn))
    store64(at + 16, np.uint64(wall_ns()))
    store64(at + 24, np.uint64(0))
    store64(at + 32, np.uint64(0))
    store64(at + 40, np.uint64(0))
    ctr[L_USED] = used + REC_HEADER
    atomic_store(ctr.ctypes.data + 8 * L_SEALED, used + REC_HEADER)
    if atomic_load(fc.ctypes.data + 8 * F_IDLE):
        return SEAL_ASLEEP
    return SEAL_AWAKE


@lazy("void(int64[::1], int64, int64)")
def publish(ctr, index, value):
    """``ctr[index] = value`` as a sequentially consistent store: a buffer's new address, after
    the bytes copied into it, for a writer thread that reads them."""
    atomic_store(ctr.ctypes.data + 8 * index, value)


@inline
def _wait(pfd, ms):
    """Sleep until the wake pipe has a byte (then read what is there) or ``ms`` pass (-1:
    forever). Returns whether it was woken."""
    r = _poll(pfd.ctypes.data, 1, ms)
    if r > 0:
        drain = np.empty(64, np.uint8)
        _read(pfd[0], drain.ctypes.data, 64)  # the read end does not block
        return True
    return False


@inline
def _gather(pfd, fc, ns):
    """Sleep ``ns`` while the commits of one interval gather, unless a request (stop, pause, a
    flush) comes first: a late wake-up from a seal does not cut the interval short."""
    end = monotonic_ns() + ns
    while True:
        left = end - monotonic_ns()
        if left <= 0:
            return
        _wait(pfd, (left + 999_999) // 1_000_000)
        if _requested(fc) or atomic_load(fc.ctypes.data + 8 * F_FLUSH_ASKED) != fc[F_FLUSH_DONE]:
            return


@inline
def _requested(fc):
    a = fc.ctypes.data
    return atomic_load(a + 8 * F_STOP) != 0 or atomic_load(a + 8 * F_PAUSE) != 0


@inline
def _write_frame(fd, head, array, first, last, offset):
    """One frame (``head`` and ``array[first:last]``) at ``offset``; 0 or an errno."""
    iov = np.empty(4, np.int64)
    total = FRAME_HEADER + last - first
    done = 0
    while done < total:
        if done < FRAME_HEADER:
            iov[0] = head.ctypes.data + done
            iov[1] = FRAME_HEADER - done
            iov[2] = array.ctypes.data + first
            iov[3] = last - first
            n = _pwritev(fd, iov.ctypes.data, 2, offset + done)
        else:
            pos = first + done - FRAME_HEADER
            n = _pwrite(fd, array.ctypes.data + pos, last - pos, offset + done)
        if n < 0:
            err = _read_errno()
            if err == _EINTR:
                continue
            return err
        if n == 0:
            return 5  # EIO: a regular file that takes no bytes
        done += n
    return 0


@inline
def _frame_end(words, first, sealed):
    """Where the frame starting at ``first`` ends: after the last whole commit that keeps it
    within FRAME_BYTES (at least one commit). -1 if the records there are not well formed."""
    pos = first
    cut = -1
    while pos < sealed:
        w0 = words[pos >> 3]
        length = np.int64(w0 & np.uint64(0xFFFFFFFF))
        if length < REC_HEADER or pos + length > sealed:
            return -1
        pos += length
        if np.int64((w0 >> np.uint64(32)) & np.uint64(0xFF)) == REC_COMMIT:
            if cut >= 0 and pos - first > FRAME_BYTES:
                return cut
            cut = pos
    return cut


@inline
def _frames_out(fc, array, words, head, first, end):
    """Write the sealed records ``array[first:end]`` as frames of whole commits at the file's end,
    counting each frame once it is in the file. 0, an errno, or -1 if the records are not well
    formed."""
    hw = as_words(head)
    seed = np.uint32(fc[F_SEED])
    while first < end:
        last = _frame_end(words, first, end)
        if last < 0:
            return -1
        hw[0] = np.uint64(FRAME_MAGIC)
        hw[1] = np.uint64(last - first)
        hw[2] = words[(last - REC_HEADER + 8) >> 3]  # the frame's LSN: its last commit's
        hw[3] = np.uint64(fc[F_FRAMES])
        crc = crc32c(array, first, last, crc32c(head, 8, FRAME_HEADER, seed))
        hw[0] = np.uint64(FRAME_MAGIC) | np.uint64(crc) << np.uint64(32)
        err = _write_frame(fc[F_FD], head, array, first, last, fc[F_FILE_END])
        if err:
            return err
        # the frame is in the file: count it before anything else can happen
        fc[F_FILE_END] += FRAME_HEADER + last - first
        fc[F_FRAMES] += 1
        fc[F_FLUSHED] = last
        first = last
    return 0


@lazy("int64(int64[::1], uint8[::1], int64, int64)")
def write_frames(fc, array, start, end):
    """:func:`_frames_out` from Python (``sync="commit"``, a flush, a close): ``array`` is the
    log buffer, ``start`` and ``end`` where its unwritten sealed records begin and end."""
    words = at(array.ctypes.data, (end >> 3,), np.uint64)
    return _frames_out(fc, array, words, np.zeros(FRAME_HEADER, np.uint8), start, end)


@lazy("int64(int64[::1], int64[::1])")
def write_rounds(ctr, fc):
    """The writer's loop, without the GIL: sleep until something is sealed, let an interval's
    commits gather, write them as frames, sync (``F_SYNC``), again. A flush asked for
    (``F_FLUSH_ASKED`` moved) is done at once: what is sealed is written and synced, whatever
    the policy, and a byte on the ``F_ACK_W`` pipe says so. Returns only when asked
    (WR_REQUEST), when a write or sync failed (WR_ERROR, errno in F_ERRNO) or when the records
    are not well formed (WR_DAMAGED): coming back to Python would mean waiting for the GIL,
    which a busy thread that itself drops and retakes it (any nogil call) can keep for tens of
    milliseconds.

    The log buffer is read where ``ctr[L_ADDR]`` says, whatever array holds it now. A buffer
    that grew keeps its earlier arrays alive (``LogBuffer.retired``) until ``F_SEEN`` shows the
    writer has moved past them."""
    c, f = ctr.ctypes.data, fc.ctypes.data
    fd = fc[F_FD]
    pfd = np.zeros(2, np.int32)
    pfd[0] = fc[F_WAKE]
    pfd[1] = _POLLIN
    head = np.zeros(FRAME_HEADER, np.uint8)
    one = np.ones(1, np.uint8)
    while True:
        if _requested(fc):
            return WR_REQUEST
        asked = atomic_load(f + 8 * F_FLUSH_ASKED)  # before the seal: a flush's commits are in it
        sealed = atomic_load(c + 8 * L_SEALED)
        flushed = fc[F_FLUSHED]
        if asked == fc[F_FLUSH_DONE]:
            if sealed == flushed:
                atomic_store(f + 8 * F_IDLE, 1)
                if (atomic_load(c + 8 * L_SEALED) == flushed and atomic_load(f + 8 * F_FLUSH_ASKED) == asked
                        and not _requested(fc)):
                    _wait(pfd, -1)
                atomic_store(f + 8 * F_IDLE, 0)
                continue
            _gather(pfd, fc, fc[F_INTERVAL_NS])  # the commits of one interval gather into its frames
            if _requested(fc):
                return WR_REQUEST
            asked = atomic_load(f + 8 * F_FLUSH_ASKED)
            sealed = atomic_load(c + 8 * L_SEALED)
        # the array that holds the buffer now holds every byte sealed before: a growth copies
        # them and then publishes its address
        addr = atomic_load(c + 8 * L_ADDR)
        atomic_store(f + 8 * F_SEEN, addr)  # arrays retired before this one may go
        array = at(addr, (sealed,), np.uint8)
        words = at(addr, (sealed >> 3,), np.uint64)  # records start and end on 8-byte boundaries
        err = _frames_out(fc, array, words, head, fc[F_FLUSHED], sealed)
        if err:
            if err < 0:
                return WR_DAMAGED
            fc[F_ERRNO] = err
            return WR_ERROR
        flushing = asked != fc[F_FLUSH_DONE]
        if fc[F_SYNC] or flushing:
            while _fdatasync(fd) != 0:
                err = _read_errno()
                if err != _EINTR:
                    fc[F_ERRNO] = err
                    return WR_ERROR
            fc[F_SYNCS] += 1
            fc[F_SYNCED_FLUSHED] = fc[F_FLUSHED]
            fc[F_SYNCED_END] = fc[F_FILE_END]
            fc[F_SYNCED_FRAMES] = fc[F_FRAMES]
        if flushing:
            atomic_store(f + 8 * F_FLUSH_DONE, asked)
            _write(fc[F_ACK_W], one.ctypes.data, 1)  # the flush waiting on the other end returns
