"""A log file that cannot be written: the state stops taking writes, keeps what it has, and
resumes once the disk can be written again; what reaches the file is always whole commits.

Faults are injected where the file log meets the OS (``os.fdatasync``, the frame writer),
as a failing disk or a full one would raise them.
"""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

import mmsb

from faults import file_size_limit, full_disk, until


def _fail(err: int):
    def fail(*args, **kwargs):
        raise OSError(err, os.strerror(err))

    return fail


def _file_state(path: str) -> str:
    back = mmsb.replay(path)
    try:
        return back.state_hash()
    finally:
        back.close()


@pytest.fixture
def logged(tmp_path):
    path = str(tmp_path / "l")
    st = mmsb.start(log=path)
    a, b = st.create_page(16), st.create_page(16)
    st.update_page(a, np.full(16, 1, np.uint8))
    yield st, path, a, b
    if st._c is not None:
        try:
            st.close()
        except mmsb.LogIOError:
            pass


def _writes(st, a, b):
    """Every kind of write, each of which a failed log must refuse."""
    return [
        lambda: st.update_page(a, np.full(16, 9, np.uint8)),
        lambda: st.apply_delta(mmsb.Delta.sparse(a, [1], [9])),
        lambda: st.apply_batch(mmsb.DeltaBatch([a.id], [0, 1], [2], [9])),
        lambda: st.create_page(8),
        lambda: st.create_pages(2, 8),
        lambda: st.delete_page(b),
        lambda: st.add_dependency(a, b),
        lambda: st.transaction().__enter__(),
    ]


def test_a_failing_sync_in_a_transaction_stops_writes_and_a_flush_resumes_them(logged, monkeypatch):
    st, path, a, b = logged
    monkeypatch.setattr(os, "fdatasync", _fail(errno.EIO))
    with pytest.raises(mmsb.LogIOError, match="Input/output error"):
        with st.transaction():
            st.update_page(a, np.full(16, 2, np.uint8))
            st.update_page(b, np.full(16, 3, np.uint8))
    # the commit is sealed in memory and stays: it was never acknowledged, and never undone
    assert st.lsn == 3
    held = st.state_hash()
    for write in _writes(st, a, b):
        with pytest.raises(mmsb.LogIOError, match="refuses writes until st.flush"):
            write()
        assert st.state_hash() == held
    with pytest.raises(mmsb.LogIOError):
        st.flush()  # the disk still fails
    monkeypatch.undo()
    st.flush()
    assert _file_state(path) == held  # the transaction is in the file exactly once
    st.update_page(a, np.full(16, 4, np.uint8))
    assert _file_state(path) == st.state_hash()


def test_a_full_disk_refuses_later_writes_and_a_checkpoint_elsewhere_saves_the_state(logged, tmp_path):
    st, path, a, b = logged
    with full_disk(st._log):
        with pytest.raises(mmsb.LogIOError, match="No space"):
            st.update_page(b, np.full(16, 5, np.uint8))
        held = st.state_hash()
        with pytest.raises(mmsb.LogIOError):
            st.update_page(a, np.full(16, 6, np.uint8))
        assert st.state_hash() == held
        ckpt = str(tmp_path / "elsewhere.ckpt")
        st.checkpoint(ckpt)  # a checkpoint does not need the log
        restored = mmsb.restore(ckpt)
        assert restored.state_hash() == held
        restored.close()
    st.flush()
    st.update_page(a, np.full(16, 6, np.uint8))
    assert _file_state(path) == st.state_hash()


def test_a_frame_cut_short_by_a_full_disk_is_written_again_whole(logged):
    st, path, a, b = logged
    size = os.path.getsize(path)
    with file_size_limit(size + 40):  # the next frame's header and a few bytes get in
        with pytest.raises(mmsb.LogIOError, match="too large"):
            st.update_page(b, np.arange(16, dtype=np.uint8))
        assert os.path.getsize(path) == size + 40  # a torn frame in the file
    st.flush()
    assert _file_state(path) == st.state_hash()


@pytest.mark.parametrize("sync", ["group", "none"])
def test_a_writer_thread_that_fails_stops_the_state_until_a_flush(tmp_path, sync):
    path = str(tmp_path / "l")
    st = mmsb.start(log=path, sync=sync)
    pg = st.create_page(8)
    st.flush()
    with full_disk(st._log):
        st.update_page(pg, np.ones(8, np.uint8))
        assert until(lambda: st._log.failed is not None)  # the writer thread met the full disk
        assert st._log.failed.errno == errno.ENOSPC  # what the kernel met, as the OS said it
        with pytest.raises(mmsb.LogIOError, match="refuses writes until st.flush"):
            st.flush()  # the disk still fails (a retry first cuts the file back: EINVAL here)
        held = st.state_hash()
        with pytest.raises(mmsb.LogIOError):
            st.update_page(pg, np.full(8, 2, np.uint8))
        assert st.state_hash() == held
    st.flush()
    st.update_page(pg, np.full(8, 3, np.uint8))
    st.close()
    back = mmsb.replay(path)
    assert back.query_page(int(pg.id))[0] == 3
    back.close()


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_log_file_deleted_or_replaced_while_open_is_an_error(tmp_path, how):
    path = str(tmp_path / "l")
    st = mmsb.start(log=path)
    pg = st.create_page(8)
    os.unlink(path)
    if how == "replaced":
        open(path, "wb").close()
    with pytest.raises(mmsb.LogIOError, match="deleted|moved|took the log's path"):
        st.update_page(pg, np.ones(8, np.uint8))
    with pytest.raises(mmsb.LogIOError):
        st.close()


def test_starting_a_log_on_a_full_disk_is_a_log_io_error(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", _fail(errno.ENOSPC))
    with pytest.raises(mmsb.LogIOError, match="No space"):
        mmsb.start(log=str(tmp_path / "l"))
    monkeypatch.undo()
    st = mmsb.start(log=str(tmp_path / "l"))  # nothing was left locked or half-made
    st.close()
