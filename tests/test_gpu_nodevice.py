"""mmsb without a device, the numpy.row_stack shim, and calibration.

A machine without a device is made in subprocesses, two ways: numba.cuda unimportable
(sys.modules['numba.cuda'] = None before anything else), and numba.cuda importable with the
simulator off and no device visible. Calibration runs on the simulator (conftest.py) with tiny sizes.
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import mmsb
import mmsb.gpu

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"device", "sizes", "cpu_us", "gpu_resident_us", "gpu_round_trip_us", "threshold"}
BLOCK_CUDA = "import sys; sys.modules['numba.cuda'] = None\n"
NO_DEVICE = ["no numba.cuda", "no device"]


def run(code="", args=None, device=True, block=False, env=None):
    """A child interpreter: device=True inherits this session's device (the simulator, or a real
    one under MMSB_TEST_REAL_GPU=1); device=False switches the simulator off and hides devices."""
    e = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **(env or {})}
    if not device:
        e.pop("NUMBA_ENABLE_CUDASIM", None)
        e["CUDA_VISIBLE_DEVICES"] = ""
    cmd = [sys.executable, "-c", (BLOCK_CUDA if block else "") + textwrap.dedent(code)]
    if args is not None:  # python -m mmsb ARGS, through runpy so that BLOCK_CUDA can run first
        cmd[2] += f"import runpy, sys; sys.argv = ['mmsb', *{args!r}]; runpy.run_module('mmsb', run_name='__main__')"
    return subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=300, cwd=ROOT)


def ok(proc):
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("ok"), proc.stdout + proc.stderr
    return proc


WITHOUT_DEVICE = """
import numpy as np
import mmsb
import mmsb.gpu
assert mmsb.gpu.available() is False and mmsb.gpu.device_name() is None
assert mmsb.gpu.threshold() == mmsb.gpu.DEFAULT_THRESHOLD == 1 << 20
st = mmsb.State()
for call in (lambda: st.create_page(64, location="gpu"), lambda: st.create_pages(2, 64, location="gpu"),
             lambda: mmsb.start(gpu=True), lambda: mmsb.State(gpu=True)):
    try:
        call()
    except mmsb.DeviceUnavailableError as err:
        assert str(err), "an empty message"
    else:
        raise AssertionError("no device, yet no DeviceUnavailableError")
assert st.page_ids().size == 0 and st.lsn == 0  # the refused calls left nothing behind
big = st.create_page(2 << 20, location="auto")  # past the 1 MiB default: still cpu
mmsb.config.set(GPU_THRESHOLD_BYTES=64)
assert [big.location, st.create_page(4096, location="auto").location] == ["cpu", "cpu"]
assert st.page(st.create_pages(2, 128, location="auto")[0]).location == "cpu"
assert st.update_page(big, np.ones(2 << 20, np.uint8)).epoch == 1
s = st.stats()
assert (s["device_pages"], s["device_launches"], s["device_bytes_in"], s["device_bytes_out"]) == (0, 0, 0, 0)
off = mmsb.start(gpu=False)
try:
    off.create_page(8, location="gpu")
except mmsb.DeviceUnavailableError:
    pass
else:
    raise AssertionError("gpu=False, yet location='gpu' was accepted")
mmsb.stop(off)
mmsb.stop(st)
print("ok")
"""


@pytest.mark.parametrize("how", NO_DEVICE)
def test_without_a_device_mmsb_stays_on_the_cpu(how, tmp_path):
    ok(run(WITHOUT_DEVICE, device=False, block=how == "no numba.cuda", env={"MMSB_CACHE_DIR": str(tmp_path)}))


@pytest.mark.parametrize("how", NO_DEVICE)
def test_calibrate_without_a_device_exits_2_with_a_message(how, tmp_path):
    proc = run(args=["calibrate", "--sizes", "64", "--repeat", "1"], device=False, block=how == "no numba.cuda",
               env={"MMSB_CACHE_DIR": str(tmp_path)})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert any(w in out.lower() for w in ("device", "gpu", "cuda")) and "Traceback" not in out, out
    assert not (tmp_path / "calibration.json").exists()


ROW_STACK = """
import numpy as np
{before}
import mmsb
st = mmsb.State()
pg = st.create_page(64, location="gpu")
assert pg.location == "gpu"
st.update_page(pg, bytes(range(64)))  # the first device kernel compiles here
st.apply_delta(mmsb.Delta.sparse(pg, [3], [200]))
want = bytes(range(3)) + bytes([200]) + bytes(range(4, 64))
assert bytes(st.query_page(pg)) == want and pg.epoch == 2
{after}
print("ok")
"""


def test_row_stack_is_installed_when_numpy_lacks_it():
    # numpy 2.5 has no row_stack of its own; an older one loses it here
    ok(run(ROW_STACK.format(before="if hasattr(np, 'row_stack'):\n    del np.row_stack",
                            after="assert np.row_stack is np.vstack")))


def test_row_stack_is_left_alone_when_numpy_has_it():
    # a numpy without the name (2.5) is given one of its own first, as an older numpy has
    has = "old = getattr(np, 'row_stack', None) or (lambda tup, **kw: np.vstack(tup, **kw))"
    ok(run(ROW_STACK.format(before=f"{has}\nnp.row_stack = old\nassert old is not np.vstack",
                            after="assert np.row_stack is old")))


def per_size(value, sizes):
    """A timing column: one non-negative number per size (a list, or a dict keyed by size)."""
    got = [value[s] if s in value else value[str(s)] for s in sizes] if isinstance(value, dict) else list(value)
    assert len(got) == len(sizes) and all(float(x) >= 0 for x in got), value
    return got


def test_calibrate_stores_a_threshold_per_device(tmp_path, monkeypatch):
    monkeypatch.setenv("MMSB_CACHE_DIR", str(tmp_path))
    path = tmp_path / "calibration.json"
    assert mmsb.gpu.calibration_path() == path and mmsb.config.GPU_THRESHOLD_BYTES == 0
    path.write_text(json.dumps({"Another GPU": {"threshold": 7}}))  # another device's entry stays
    name = mmsb.gpu.device_name()
    assert isinstance(name, str) and name
    res = mmsb.gpu.calibrate(sizes=[64, 256], repeat=1)
    assert KEYS <= set(res) and res["device"] == name and list(res["sizes"]) == [64, 256]
    for key in ("cpu_us", "gpu_resident_us", "gpu_round_trip_us"):
        per_size(res[key], [64, 256])
    assert isinstance(res["threshold"], int) and res["threshold"] >= 1
    doc = json.loads(path.read_text())
    assert doc[name]["threshold"] == res["threshold"] and doc["Another GPU"] == {"threshold": 7}
    assert mmsb.gpu.threshold() == res["threshold"]
    mmsb.config.set(GPU_THRESHOLD_BYTES=100)
    try:
        assert mmsb.gpu.threshold() == 100
    finally:
        mmsb.config.reset()
    # a stored threshold decides "auto" in a process that never calibrated
    doc[name]["threshold"] = 1000
    path.write_text(json.dumps(doc))
    ok(run("""
        import mmsb
        assert mmsb.config.GPU_THRESHOLD_BYTES == 0 and mmsb.gpu.threshold() == 1000
        st = mmsb.State()
        assert [st.create_page(n, location="auto").location for n in (1000, 999)] == ["gpu", "cpu"]
        print("ok")
        """, env={"MMSB_CACHE_DIR": str(tmp_path)}))


def test_calibrate_without_store_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("MMSB_CACHE_DIR", str(tmp_path / "cache"))
    res = mmsb.gpu.calibrate(sizes=[64], repeat=1, store=False)
    assert KEYS <= set(res) and not (tmp_path / "cache" / "calibration.json").exists()


def test_calibration_path_falls_back_to_xdg_then_home(tmp_path, monkeypatch):
    monkeypatch.delenv("MMSB_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert mmsb.gpu.calibration_path() == tmp_path / "xdg" / "mmsb" / "calibration.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert mmsb.gpu.calibration_path() == tmp_path / "home" / ".cache" / "mmsb" / "calibration.json"


@pytest.mark.parametrize("store", [True, False])
def test_calibrate_command_prints_json(tmp_path, store):
    args = ["calibrate", "--sizes", "64,256", "--repeat", "1", "--json"] + ([] if store else ["--no-store"])
    proc = run(args=args, env={"MMSB_CACHE_DIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads(proc.stdout)
    assert KEYS <= set(res) and list(res["sizes"]) == [64, 256]
    path = tmp_path / "calibration.json"
    assert path.exists() == store
    if store:
        assert json.loads(path.read_text())[res["device"]]["threshold"] == res["threshold"]


def test_device_pages_come_back_on_the_cpu_without_a_device(tmp_path):
    log, ckpt = tmp_path / "state.log", tmp_path / "at.ckpt"
    st = mmsb.start(log=str(log))
    a, b = st.create_page(64, location="gpu").id, st.create_page(64, location="cpu").id
    st.register_passthrough(b, a)
    st.update_page(a, bytes(range(64)))
    st.checkpoint(ckpt)
    at_ckpt = st.state_hash()
    st.update_page(a, bytes([7] * 64))
    final = st.state_hash()
    mmsb.stop(st)
    for how in NO_DEVICE:  # the same files, read where no device is: every page on the cpu
        ok(run(f"""
            import mmsb
            for st, want in ((mmsb.replay({str(log)!r}), {final!r}), (mmsb.restore({str(ckpt)!r}), {at_ckpt!r})):
                assert st.state_hash() == want
                assert [st.page(p).location for p in st.page_ids().tolist()] == ["cpu", "cpu"]
                st.update_page({a}, bytes([9] * 64))  # and the graph goes on working there
                assert bytes(st.query_page({b})) == bytes([9] * 64)
                mmsb.stop(st)
            print("ok")
            """, device=False, block=how == "no numba.cuda"))
