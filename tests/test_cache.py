"""mmsb drops its numba cache when any kernel source changed (numba checks only each kernel's own file)."""

import pathlib
import shutil

import mmsb.kernels as kernels


def test_a_changed_source_drops_the_cache_and_an_unchanged_one_keeps_it(tmp_path):
    real = pathlib.Path(kernels.__file__).resolve().parents[1]
    pkg = tmp_path / "mmsb"
    shutil.copytree(real / "kernels", pkg / "kernels", ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "gpu").mkdir()
    shutil.copy(real / "gpu" / "kernels.py", pkg / "gpu" / "kernels.py")
    shutil.copy(real / "_layout.py", pkg / "_layout.py")
    cached = [pkg / "kernels" / "__pycache__" / "apply.x.nbi", pkg / "gpu" / "__pycache__" / "kernels.y.nbc"]

    def warm():
        for f in cached:
            f.parent.mkdir(exist_ok=True)
            f.write_bytes(b"")

    kernels._drop_stale_cache(pkg / "kernels")  # no stamp yet: the cache predates the check
    warm()
    kernels._drop_stale_cache(pkg / "kernels")  # sources as stamped: the cache stays
    assert all(f.exists() for f in cached)
    for edited in ("kernels/records.py", "_layout.py", "gpu/kernels.py"):  # a callee, constants, device code
        with open(pkg / edited, "a") as f:
            f.write("\n# edited\n")
        kernels._drop_stale_cache(pkg / "kernels")
        assert not any(f.exists() for f in cached), edited
        warm()
