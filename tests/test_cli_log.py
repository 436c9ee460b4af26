"""`python -m mmsb inspect / verify / replay` on logs whose contents the test knows."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import mmsb
from mmsb.__main__ import main


@pytest.fixture
def log(tmp_path):
    """A log of known contents: 3 page creates (one bulk), a binding, an edge, 4 writes, a delete."""
    path = str(tmp_path / "s.log")
    st = mmsb.State(log=path)
    a, b = st.create_page(8), st.create_page(8)
    more = st.create_pages(2, 16)
    st.register_passthrough(b, a)  # binds a zero page to a zero page: no delta
    st.add_dependency(a, int(more[0]), "control")
    st.update_page(a, b"abcdefgh")  # 2 deltas: a, then b by the cascade
    st.apply_delta(mmsb.Delta.sparse(int(more[1]), [3], [7]))
    st.update_page(a, b"abcdefgh")  # no change: no delta, no commit
    st.delete_page(int(more[0]))
    want = {"hash": st.state_hash(), "lsn": st.lsn}
    st.close()
    return path, want


def run(capsys, *argv):
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_inspect_reports_what_was_written(log, capsys):
    path, want = log
    code, out = run(capsys, "inspect", path, "--json")
    r = json.loads(out)
    assert code == 0 and r["damage"] is None and r["replay"] == "ok"
    counts = {k: v["count"] for k, v in r["records"].items()}
    assert counts == {"delta": 3, "create": 3, "delete": 1, "edge": 1, "binding": 1, "commit": 8}
    assert r["lsn_range"] == [1, want["lsn"]] and r["deltas"] == 3
    assert r["pages"] == {"live": 3, "bytes": 8 + 8 + 16} and r["state_hash"] == want["hash"]
    assert r["file_bytes"] == os.path.getsize(path)
    code, out = run(capsys, "inspect", path)
    assert "damage     none" in out and "3 deltas" in out


def test_verify_says_whether_the_log_is_sound(log, capsys):
    path, _ = log
    assert run(capsys, "verify", path)[0] == 0
    size = os.path.getsize(path)
    with open(path, "ab") as f:
        f.write(b"\x00" * 11)  # a torn tail: recoverable, but the file is not sound
    code, out = run(capsys, "verify", path)
    assert code == 1 and f"torn tail at offset {size} (11 B)" in out
    raw = bytearray(open(path, "rb").read())
    raw[100] ^= 0x40  # inside an early frame
    open(path, "wb").write(bytes(raw))
    code, out = run(capsys, "verify", path, "--json")
    r = json.loads(out.split("verify:")[0])
    assert code == 1 and r["damage"]["kind"] == "corrupt" and r["damage"]["offset"] <= 100


def test_replay_writes_a_checkpoint_of_the_state_at_an_lsn(log, tmp_path, capsys):
    path, want = log
    out_path = str(tmp_path / "at1.ckpt")
    code, out = run(capsys, "replay", path, "--to-lsn", "1", "--checkpoint", out_path)
    assert code == 0 and "to LSN 0" in out  # LSN 1 alone is half a commit: the cascade's delta is LSN 2
    code, out = run(capsys, "replay", path, "--to-lsn", "2", "--checkpoint", out_path)
    r = mmsb.restore(out_path)
    assert code == 0 and r.lsn == 2 and bytes(r.query_page(1)) == b"abcdefgh"
    assert r.state_hash() == mmsb.replay(path, to_lsn=2).state_hash()


def test_a_file_that_is_not_a_log_is_an_error_not_a_crash(tmp_path, capsys):
    junk = tmp_path / "junk"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    for cmd in ("inspect", "verify", "replay"):
        code, out = run(capsys, cmd, str(junk))
        assert code == 1 and "not an mmsb log" in out


def test_the_commands_run_as_a_module(log):
    path, _ = log
    done = subprocess.run([sys.executable, "-m", "mmsb", "verify", path], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "verify: ok" in done.stdout and done.stderr == ""
