"""benchmarks/gpu_bench.py, the one-command device benchmark: it runs (on numba's CUDA simulator,
where it only proves the script works), checks GPU pages against CPU pages, prints its table and
judges the budgets; without a device it exits 2 with a message."""

import json
import os
import subprocess
import sys

import pytest

from bench_scripts import BENCHMARKS, load

SCRIPT = BENCHMARKS / "gpu_bench.py"


def _load():
    return load("gpu_bench")


def _run(args, **env_changes):
    env = dict(os.environ)
    for k, v in env_changes.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return subprocess.run([sys.executable, str(SCRIPT), *args], check=False, capture_output=True,
                          text=True, timeout=600, env=env, cwd=SCRIPT.parent.parent)


def test_runs_on_the_simulator(tmp_path):
    out_json = tmp_path / "gpu.json"
    out = _run(["--quick", "--sizes", "256,1024", "--json", str(out_json)], NUMBA_ENABLE_CUDASIM="1")
    assert out.returncode == 0, out.stdout + out.stderr
    gb = _load()
    header = [line for line in out.stdout.splitlines() if line.startswith("size ")]
    assert len(header) == 1 and header[0].split() == " ".join(gb.TABLE_HEADER).split()
    assert "SIMULATOR" in out.stdout and "log=False" in out.stdout
    assert "matched the CPU byte for byte" in out.stdout
    assert "not judged (simulator)" in out.stdout
    data = json.loads(out_json.read_text())
    assert data["simulator"] is True and data["log"] is False
    assert [r["size"] for r in data["rows"]] == [256, 1024]
    for r in data["rows"]:
        for k in ("cpu_us", "gpu_us", "gpu_rt_us", "flush_gpu_us", "batch_gpu_us", "numpy_us"):
            assert r[k] > 0
        # a write to a device page is one launch per commit (mmsb.gpu.arena)
        assert r["launches_dense"]["device_launches"] >= 1
        assert r["launches_flush"]["device_launches"] >= 1
        assert r["launches_dense_cpu_page"]["device_launches"] == 0


def test_without_a_device_exits_2():
    # no simulator, and CUDA told to show no device: mmsb.gpu.available() is False
    out = _run(["--quick", "--sizes", "256"], NUMBA_ENABLE_CUDASIM=None, CUDA_VISIBLE_DEVICES="")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "no CUDA device" in out.stderr


def test_bad_size_is_refused():
    out = _run(["--sizes", "12Q"], NUMBA_ENABLE_CUDASIM="1")
    assert out.returncode == 2 and "not a size" in out.stderr


def test_sizes_parse():
    gb = _load()
    assert [gb.parse_size(t) for t in ("4096", "4K", "64KiB", "1M", "256MiB", "1g")] == [
        4096, 4096, 65536, 1 << 20, 256 << 20, 1 << 30]
    assert gb.parse_args(["--sizes", "256,1K", "4M"]).sizes == [256, 1024, 4 << 20]
    assert max(gb.parse_args(["--quick"]).sizes) == 4 << 20
    assert max(gb.parse_args([]).sizes) == 256 << 20


def _rows(gb, wins, speedup_256m=None):
    """Rows at the default sizes; the GPU's dense apply wins at the sizes in `wins`."""
    rows = []
    for s in gb.DEFAULT_SIZES:
        gpu = 1.0 if s in wins else 3.0
        if s == 256 << 20 and speedup_256m is not None:
            gpu = 2.0 / speedup_256m
        rows.append({"size": s, "cpu_us": 2.0, "numpy_us": 2.5, "gpu_us": gpu, "speedup": 2.0 / gpu,
                     "flush_gpu_us": 12.0, "dense_delta_bytes": s // 2})
    return rows


@pytest.mark.parametrize("from_size, verdict", [(4 << 10, "MET"), (256 << 10, "MET"), (1 << 20, "MISSED")])
def test_crossover_budget(from_size, verdict):
    gb = _load()
    wins = {s for s in gb.DEFAULT_SIZES if s >= from_size}
    b = gb.budgets(_rows(gb, wins, speedup_256m=6.0), sim=False)
    assert [x["verdict"] for x in b] == ["MET", verdict, "MET"]


def test_budgets_missed_and_unmeasured():
    gb = _load()
    rows = [r for r in _rows(gb, set(gb.DEFAULT_SIZES), speedup_256m=4.0)]
    rows[0]["flush_gpu_us"] = 40.0        # the fixed cost is the flush to the smallest page
    assert [x["verdict"] for x in gb.budgets(rows, sim=False)] == ["MISSED", "MET", "MISSED"]
    # a GPU win that returns to a loss at a larger size does not count as the crossover
    rows = _rows(gb, {4 << 10, 64 << 10, 16 << 20, 64 << 20, 256 << 20}, speedup_256m=6.0)
    assert gb.budgets(rows, sim=False)[1]["verdict"] == "MISSED"
    # one CPU core is the faster of mmsb's CPU apply and the NumPy peer
    rows = _rows(gb, set(gb.DEFAULT_SIZES), speedup_256m=6.0)
    rows[-1]["numpy_us"] = 1.5 * rows[-1]["gpu_us"]
    assert gb.budgets(rows, sim=False)[2]["verdict"] == "MISSED"
    quick = [r for r in _rows(gb, set(gb.DEFAULT_SIZES)) if r["size"] <= 4 << 20]
    assert gb.budgets(quick, sim=False)[2]["verdict"] == "not measured"
    assert {x["verdict"] for x in gb.budgets(quick, sim=True)} == {"not judged (simulator)"}
