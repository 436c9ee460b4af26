"""Damaged logs and checkpoints: every open recovers a true prefix of history or raises LogCorruptError.

A few valid files are built once per module from the crash writer's history
(``tests/crash_writer.py``: creates, deletes, bindings with two-level
cascades, a control edge, batches, transactions) together with the state
after every step of that history, re-run in memory. Hypothesis then flips
bits, truncates, appends garbage, zeroes, overwrites, duplicates and swaps
byte ranges (and whole frames) of the files, in memory, writes each result to
a file and opens it:

* a log with ``mmsb.replay`` and with ``mmsb.start(log=...)``: either
  :class:`mmsb.LogCorruptError`, or a state equal to the state after one
  step of the history (pages, epochs and LSN by ``state_hash``; the log's
  size besides, which tells apart steps that change no page), with at most a
  :class:`mmsb.LogTruncatedWarning`. Both opens agree; a recovered log
  reopens clean. A cut tail must give exactly the whole frames before it.
* a checkpoint with ``mmsb.restore``: any change is a LogCorruptError.
* a log continuing a checkpoint with ``mmsb.restore(ckpt, log=...)``: as a
  log, with prefixes counted from the checkpoint.

Nothing else may be raised or warned.
"""

from __future__ import annotations

import os
import struct
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

import mmsb

sys.path.insert(0, os.path.dirname(__file__))
import crash_writer

LOG_HEADER = 72
FRAME_HEADER = 32
SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}


class Original:
    """A valid file, its frames ((start, end); none for a checkpoint), and the states it may hold.

    ``steps`` maps ``key(state)`` after each step of the history (and before
    the first) to the step's number.
    """

    def __init__(self, raw: bytes, frames: list[tuple[int, int]], steps: dict[tuple[int, int, str], int]) -> None:
        self.raw, self.frames, self.steps = raw, frames, steps

    def __repr__(self) -> str:  # short: hypothesis prints it with every failing example
        return f"<Original {len(self.raw)} B, {len(self.frames)} frames, {len(self.steps)} steps>"


def key(st: mmsb.State) -> tuple[int, int, str]:
    return st.lsn, st.stats()["log_bytes"], st.state_hash()


def walk_frames(raw: bytes) -> list[tuple[int, int]]:
    frames, pos = [], LOG_HEADER
    while pos < len(raw):
        (length,) = struct.unpack_from("<Q", raw, pos + 8)
        frames.append((pos, pos + FRAME_HEADER + length))
        pos += FRAME_HEADER + length
    assert pos == len(raw)
    return frames


def write_history(path: Path, seed: int, steps: int, sync: str, st: mmsb.State | None = None,
                  checkpoint: tuple[int, Path] | None = None) -> None:
    st = st or mmsb.start(log=str(path), sync=sync)
    history = crash_writer.history(st, seed)
    for step in range(steps):
        next(history)
        if checkpoint is not None and step == checkpoint[0]:
            st.checkpoint(str(checkpoint[1]))
        if sync != "commit" and step % 7 == 6:
            st.flush()  # several commits per frame
    history.close()
    st.close()


def more(st: mmsb.State, seed: int, steps: int):
    """Writes after a checkpoint of the crash writer's history: yields after each commit."""
    rng = np.random.default_rng(seed)
    size = crash_writer.PAGE
    for _ in range(steps):
        pid = int(rng.integers(crash_writer.SOURCES + 4))  # a source or a derived page
        if rng.random() < 0.5:
            st.update_page(pid, rng.integers(0, 256, size, dtype=np.uint8))
        else:
            k = int(rng.integers(1, 6))
            st.apply_delta(mmsb.Delta.sparse(pid, rng.integers(0, size, k), rng.integers(0, 256, k, dtype=np.uint8)))
        yield


def steps_of(st: mmsb.State, history, steps: int, first: int = 0) -> dict[tuple[int, int, str], int]:
    """``key`` after each step of ``history`` run on ``st`` (and before the first, as step first-1)."""
    out = {key(st): first - 1}
    for i in range(steps):
        next(history)
        out[key(st)] = first + i
    history.close()
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("originals")
    return d, build(d)


def build(d: Path) -> dict[str, Original]:
    """The valid files (in ``d``) and the states each may hold."""
    out: dict[str, Original] = {}
    for name, seed, steps, sync in (("commit", 11, 45, "commit"), ("group", 12, 70, "none")):
        path = d / f"{name}.log"
        write_history(path, seed, steps, sync)
        st = mmsb.start()
        out[name] = Original(path.read_bytes(), [], steps_of(st, crash_writer.history(st, seed), steps))
        st.close()
    # a checkpoint in the middle of a history (after scratch pages came and went: a free list)
    seed, steps, at = 13, 60, 40
    ck = d / "mid.ckpt"
    write_history(d / "full.log", seed, steps, "commit", checkpoint=(at, ck))
    st = mmsb.start()
    full = steps_of(st, crash_writer.history(st, seed), steps)
    st.close()
    out["full"] = Original((d / "full.log").read_bytes(), [], {k: v for k, v in full.items() if v >= at})
    out["ckpt"] = Original(ck.read_bytes(), [], {})
    # a new log continuing the checkpoint, and what it may hold
    st = mmsb.restore(str(ck), log=str(d / "cont.log"))
    for _ in more(st, seed, 30):
        pass
    st.close()
    st = mmsb.restore(str(ck))
    out["ckpt"].steps = {key(st): 0}
    out["cont"] = Original((d / "cont.log").read_bytes(), [], steps_of(st, more(st, seed, 30), 30, first=1))
    st.close()
    for name in ("commit", "group", "full", "cont"):
        o = out[name]
        o.frames = walk_frames(o.raw)
        assert len(o.frames) > (1 if name == "group" else 20)
    assert len(out["group"].frames) < 30  # several commits per frame
    return out


# -- damage -----------------------------------------------------------------------

_pos = hs.integers(0, 2**32)  # a position, taken modulo the file's length when applied

byte_damage = hs.one_of(
    hs.tuples(hs.just("flip"), _pos, hs.integers(1, 255)),
    hs.tuples(hs.just("flip"), hs.integers(0, 127), hs.integers(1, 255)),  # in or near the headers
    hs.tuples(hs.just("truncate"), _pos),
    hs.tuples(hs.just("append"), hs.binary(min_size=1, max_size=96)),
    hs.tuples(hs.just("zero"), _pos, hs.integers(1, 96)),
    hs.tuples(hs.just("overwrite"), _pos, hs.binary(min_size=1, max_size=48)),
    hs.tuples(hs.just("duplicate"), _pos, hs.integers(1, 200), _pos),
    hs.tuples(hs.just("swap"), _pos, _pos, hs.integers(1, 64)),
)
frame_damage = hs.one_of(
    hs.tuples(hs.just("dup_frame"), _pos, _pos),
    hs.tuples(hs.just("swap_frames"), _pos, _pos),
    hs.tuples(hs.just("drop_frame"), _pos),
    hs.tuples(hs.just("append_frame"), _pos, hs.integers(0, 2**32)),
)
damages = hs.lists(hs.one_of(byte_damage, byte_damage, frame_damage), min_size=1, max_size=3)


def damage(raw: bytes, frames: list[tuple[int, int]], ops: list[tuple]) -> bytes:
    """``raw`` with ``ops`` applied in turn."""
    b = bytearray(raw)
    for op in ops:
        name, n = op[0], max(len(b), 1)
        if name in ("dup_frame", "swap_frames", "drop_frame", "append_frame"):
            if not frames or b != raw:
                continue  # frame surgery only on the original layout
            i = op[1] % len(frames)
            s, e = frames[i]
            if name == "dup_frame":
                at = frames[op[2] % len(frames)][0]
                b[at:at] = raw[s:e]
            elif name == "swap_frames":
                j = op[2] % len(frames)
                if i == j:
                    continue
                (s, e), (s2, e2) = sorted([frames[i], frames[j]])
                b[s:e2] = raw[s2:e2] + raw[e:s2] + raw[s:e]
            elif name == "drop_frame":
                del b[s:e]
            else:  # a copy of a frame, cut short, at the end: looks like a torn write
                b += raw[s:s + op[2] % (e - s + 1)]
        elif name == "flip":
            at = op[1] % n
            if at < len(b):
                b[at] ^= op[2]
        elif name == "truncate":
            at = op[1] % n
            del b[at:]
        elif name == "append":
            b += op[1]
        elif name == "zero":
            at = op[1] % n
            b[at:at + op[2]] = bytes(len(b[at:at + op[2]]))
        elif name == "overwrite":
            at = op[1] % n
            b[at:at + len(op[2])] = op[2][: max(0, len(b) - at)]
        elif name == "duplicate":
            s = op[1] % n
            at = op[3] % (len(b) + 1)
            b[at:at] = b[s:s + op[2]]
        elif name == "swap":
            x, y = sorted((op[1] % n, op[2] % n))
            k = min(op[3], y - x, len(b) - y)
            if k > 0:
                b[x:x + k], b[y:y + k] = b[y:y + k], b[x:x + k]
    return bytes(b)


def first_change(raw: bytes, data: bytes) -> int:
    """The offset of the first byte where ``data`` differs from ``raw`` (the shorter length if none)."""
    n = min(len(raw), len(data))
    diff = np.flatnonzero(np.frombuffer(raw, np.uint8, n) != np.frombuffer(data, np.uint8, n))
    return int(diff[0]) if diff.size else n


# -- opening ---------------------------------------------------------------------------


def outcome(fn, *args, **kwargs):
    """("ok", key, truncated?) or ("corrupt", offset): what opening did. Nothing else may happen."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            st = fn(*args, **kwargs)
        except mmsb.LogCorruptError as exc:
            st = None
            assert isinstance(exc.offset, int) and exc.offset >= 0
            got = ("corrupt", exc.offset)
    for w in caught:  # (a torn tail may be cut before damage further up is found)
        assert issubclass(w.category, mmsb.LogTruncatedWarning), w
    if st is None:
        return got
    try:
        return ("ok", key(st), bool(caught))
    finally:
        st.close()


def write(d: Path, name: str, data: bytes) -> str:
    path = d / name
    path.write_bytes(data)
    return str(path)


def prefix_boundary(o: Original, first: int) -> int:
    """The end of the last whole frame before offset ``first`` (the header's end if none)."""
    return max([LOG_HEADER] + [e for _, e in o.frames if e <= first])


def damaged(files, which: str, ops: list[tuple]) -> tuple[Path, Original, bytes]:
    d, originals = files
    o = originals[which]
    return d, o, damage(o.raw, o.frames, ops)


def check_log(d: Path, o: Original, data: bytes, opener) -> tuple:
    """Open damaged log bytes; check the result is a prefix that keeps every frame before the damage."""
    first = first_change(o.raw, data)
    got = outcome(opener, write(d, "damaged.log", data))
    if got[0] == "corrupt":
        return got
    assert got[1] in o.steps, f"a state that is no step of the history: {got[1][:2]}"
    # nothing before the first damaged byte is lost, and a state from the intact part is exact
    whole = outcome(opener, write(d, "intact.log", o.raw[:prefix_boundary(o, first)]))
    assert whole[0] == "ok" and not whole[2], whole
    assert o.steps[got[1]] >= o.steps[whole[1]], "recovery dropped whole frames before the damage"
    if first in (len(data), len(o.raw)):  # cut, or appended to: exactly the intact part
        assert got[1] == whole[1]
    return got


@settings(max_examples=350, **SETTINGS)
@given(which=hs.sampled_from(["commit", "group"]), ops=damages)
def test_damaged_log(files, which, ops):
    d, o, data = damaged(files, which, ops)
    if len(data) < LOG_HEADER:
        # no whole header: nothing to read; a writer starts the log afresh
        assert outcome(mmsb.replay, write(d, "short.log", data))[0] == "corrupt"
        got = outcome(mmsb.start, log=write(d, "short.log", data))
        assert got[0] == "ok" and got[1][0] == 0 and got[2] == bool(data)
        return
    read = check_log(d, o, data, mmsb.replay)
    # recovering it for writing finds the same, and leaves a log that reopens clean
    opened = outcome(mmsb.start, log=write(d, "damaged.log", data))
    if read[0] == "ok":
        assert opened[:2] == read[:2]
    else:
        assert opened[0] == "corrupt"
    if opened[0] == "ok":
        assert opened[2] == read[2]
        assert outcome(mmsb.replay, str(d / "damaged.log")) == ("ok", read[1], False)
    else:
        assert (d / "damaged.log").read_bytes() == data, "a log found damaged was changed"


@settings(max_examples=150, **SETTINGS)
@given(which=hs.sampled_from(["commit", "group"]), at=hs.integers(LOG_HEADER, 2**32))
def test_cut_log_is_exactly_its_whole_frames(files, which, at):
    d, originals = files
    o = originals[which]
    at = LOG_HEADER + at % (len(o.raw) - LOG_HEADER + 1)
    got = outcome(mmsb.replay, write(d, "cut.log", o.raw[:at]))
    whole = outcome(mmsb.replay, write(d, "intact.log", o.raw[:prefix_boundary(o, at)]))
    assert got[0] == "ok" and got[1] == whole[1] and got[2] == (at not in {e for _, e in o.frames} | {LOG_HEADER})


@settings(max_examples=300, **SETTINGS)
@given(ops=damages)
def test_damaged_checkpoint(files, ops):
    """Every byte of a checkpoint counts: any change is a LogCorruptError, never a partial load."""
    d, o, data = damaged(files, "ckpt", ops)
    got = outcome(mmsb.restore, write(d, "damaged.ckpt", data))
    if data == o.raw:
        assert got[0] == "ok" and got[1] in o.steps
    else:
        assert got[0] == "corrupt", f"a damaged checkpoint loaded: {ops}"


@settings(max_examples=200, **SETTINGS)
@given(which=hs.sampled_from(["full", "cont"]), ops=damages)
def test_damaged_log_after_checkpoint(files, which, ops):
    """``mmsb.restore(ckpt, log=damaged)``: a prefix from the checkpoint on, or LogCorruptError."""
    d, o, data = damaged(files, which, ops)
    ck = str(d / "mid.ckpt")
    if which == "cont" and len(data) >= LOG_HEADER:
        check_log(d, o, data, lambda path: mmsb.restore(ck, log=path))
        return
    got = outcome(mmsb.restore, ck, log=write(d, "damaged.log", data))
    if got[0] == "ok":
        # (a log cut shorter than its header starts afresh from the checkpoint, with its own record count)
        states = {(lsn, h): step for (lsn, _, h), step in o.steps.items()}
        assert got[1][0::2] in states, f"a state that is no step of the history after the checkpoint: {got[1][:2]}"


# -- regressions: damage the first version of the format code let through ---------------------------


@pytest.mark.parametrize("surgery", [("drop_frame", 5), ("dup_frame", 3, 9), ("swap_frames", 4, 5)])
def test_whole_frames_out_of_place_are_damage(files, surgery):
    """Frames carry their number: a dropped, repeated or moved frame (each valid by its CRC) is damage.

    Dropping a frame that only binds a recompute once loaded a state whose graph never existed.
    """
    d, originals = files
    o = originals["commit"]
    data = damage(o.raw, o.frames, [surgery + (0,) * (3 - len(surgery))])
    assert outcome(mmsb.replay, write(d, "moved.log", data))[0] == "corrupt"
    assert outcome(mmsb.start, log=write(d, "moved.log", data))[0] == "corrupt"


def test_padding_is_checked(files):
    """Bytes outside the checksums (header and section padding) must be zero, as written."""
    d, originals = files
    ck = originals["ckpt"].raw
    pads = list(range(56, 64))  # the header's
    pos = 64
    while pos < len(ck):
        _, _, n = struct.unpack_from("<IIQ", ck, pos)
        pads += range(pos + 16 + n, pos + 16 + n + (-n % 8))
        pos += 16 + n + (-n % 8)
    assert len(pads) > 8
    for at in pads:
        data = bytearray(ck)
        data[at] ^= 0x40
        assert outcome(mmsb.restore, write(d, "pad.ckpt", bytes(data)))[0] == "corrupt", at
    log = bytearray(originals["commit"].raw)
    log[70] ^= 1
    assert outcome(mmsb.replay, write(d, "pad.log", bytes(log)))[0] == "corrupt"


def test_log_short_of_its_checkpoint_is_damage(files):
    """``restore(ckpt, log=...)`` with the checkpointed state's own log cut before the checkpoint."""
    d, originals = files
    o = originals["full"]
    ck = str(d / "mid.ckpt")
    for end in (LOG_HEADER, o.frames[10][1], o.frames[30][1] - 8):
        got = outcome(mmsb.restore, ck, log=write(d, "short.log", o.raw[:end]))
        assert got[0] == "corrupt", end


def test_restore_logs_nothing_of_the_checkpoint(files):
    """A restored state's log starts empty, in memory as in a file: the checkpoint holds the graph."""
    d, _ = files
    ck = str(d / "mid.ckpt")
    mem = mmsb.restore(ck)
    assert mem.stats()["log_bytes"] == 0
    path = d / "restored.log"
    path.unlink(missing_ok=True)
    filed = mmsb.restore(ck, log=str(path))
    try:
        for st in (mem, filed):
            for _ in more(st, 5, 10):
                pass
        assert key(mem) == key(filed)
        again = mem.replay()
        assert key(again) == key(mem)
        again.close()
    finally:
        filed.close()
    reopened = mmsb.restore(ck, log=str(path))
    assert key(reopened) == key(mem)
    reopened.close()
    mem.close()
