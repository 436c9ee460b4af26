"""A first use that compiles kernels says so on stderr (a silent minute looks hung); a cache hit says nothing."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

from mmsb.kernels import _Announce

ROOT = Path(__file__).resolve().parents[1]


def _event(module, name="k"):
    fn = SimpleNamespace(__module__=module, __name__=name)
    return SimpleNamespace(data={"dispatcher": SimpleNamespace(py_func=fn)})


def test_one_notice_per_outermost_mmsb_compile_and_none_for_other_code(capsys):
    a = _Announce()
    a.on_start(_event("someone.else"))
    a.on_end(_event("someone.else"))
    assert capsys.readouterr().err == ""
    a.on_start(_event("mmsb.kernels.commit", "commit_update"))
    a.on_start(_event("mmsb.kernels.cascade", "run"))  # a callee compiled on the way: no second notice
    a.on_end(_event("mmsb.kernels.cascade", "run"))
    err = capsys.readouterr().err
    assert err.count("mmsb: compiling") == 1 and "commit_update" in err and "compiled in" not in err
    a.on_end(_event("mmsb.kernels.commit", "commit_update"))
    assert "mmsb: compiled in" in capsys.readouterr().err


def run(code, cache):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=600, cwd=ROOT)


CODE = """
import numpy as np
from mmsb.kernels.stats import delta_bytes
print(delta_bytes(np.zeros(64, np.uint8), 0))
"""


def test_an_empty_cache_announces_the_compile_and_a_warm_one_is_silent(tmp_path):
    cold = run(CODE, tmp_path)
    assert cold.returncode == 0, cold.stderr
    assert "mmsb: compiling numba kernels (delta_bytes" in cold.stderr and "mmsb: compiled in" in cold.stderr
    warm = run(CODE, tmp_path)
    assert warm.returncode == 0 and "mmsb:" not in warm.stderr, warm.stderr
