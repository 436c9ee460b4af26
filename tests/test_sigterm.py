"""SIGTERM to a process writing a file log, under load (a busy Python thread).

With a Python handler for SIGTERM that exits (the usual service shutdown), the
handler runs after the mmsb call it interrupted, and the exit flushes every
sealed commit: nothing the process did is lost, whatever the sync policy.
With SIGTERM's default action no Python runs: the file keeps what the
writer thread had written, which always includes everything it reported as
synced, and reopens cleanly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

import mmsb

CHILD = textwrap.dedent(
    """
    import signal, sys
    import numpy as np
    import mmsb

    path, policy, handler = sys.argv[1], sys.argv[2], sys.argv[3] == "handler"
    if handler:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(3))
    st = mmsb.start(log=path, sync=policy)
    pages = st.create_pages(4, 256)
    st.flush()
    log = st._log
    seals = []  # (end of the commit in the log, its LSN)
    buf = np.zeros(256, np.uint8)
    i = 0
    reported = 0
    while True:
        sum(range(3000))  # the application's own work, holding the GIL (~0.1 ms)
        i += 1
        buf[i % 256] = (int(buf[i % 256]) + 1) % 256
        st.update_page(pages[i % 4], buf)
        seals.append((log.sealed, st.lsn))
        synced = log._synced[0]
        durable = 0
        while seals and seals[0][0] <= synced:
            durable = seals.pop(0)[1]
        if durable > reported:
            reported = durable
            print("SYNCED", durable, flush=True)
        print("DID", st.lsn, flush=True)
    """
)


def _run(tmp_path, policy: str, handler: bool, writes: int = 1500) -> tuple[int, int, int]:
    """Run the child until it reported ``writes`` commits (and, under group, one synced), send
    SIGTERM; returns (exit status, last LSN it did, last LSN it reported synced)."""
    path = str(tmp_path / "term.log")
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    proc = subprocess.Popen([sys.executable, str(child), path, policy, "handler" if handler else "default"],
                            stdout=subprocess.PIPE, text=True)
    did = synced = 0
    try:
        for line in proc.stdout:
            what, lsn = line.split()
            if what == "DID":
                did = int(lsn)
            else:
                synced = int(lsn)
            if did >= writes and (synced or policy != "group"):
                proc.send_signal(signal.SIGTERM)
                break
        for line in proc.stdout:  # what it did between the signal and its end
            if not line.endswith("\n"):
                break  # a line the signal cut short
            what, lsn = line.split()
            if what == "DID":
                did = int(lsn)
            else:
                synced = int(lsn)
        status = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return status, did, synced


@pytest.mark.parametrize("policy", ["group", "none", "commit"])
def test_sigterm_with_an_exiting_handler_keeps_every_commit(tmp_path, policy):
    status, did, _ = _run(tmp_path, policy, handler=True)
    assert status == 3  # the handler's sys.exit(3): it ran, after the interrupted call
    back = mmsb.replay(str(tmp_path / "term.log"))
    try:
        assert back.lsn >= did  # everything the child did, flushed at exit
    finally:
        back.close()


@pytest.mark.parametrize("policy", ["group", "commit"])
def test_sigterm_default_action_keeps_what_was_synced_and_the_file_reopens(tmp_path, policy):
    status, did, synced = _run(tmp_path, policy, handler=False)
    assert status == -signal.SIGTERM  # no Python ran
    back = mmsb.replay(str(tmp_path / "term.log"))
    try:
        if policy == "commit":
            assert back.lsn >= did  # every call returned was synced before it returned
        else:
            assert synced > 0  # the writer synced while the child's thread kept the GIL busy
            assert back.lsn >= synced
    finally:
        back.close()
    os.remove(str(tmp_path / "term.log"))
