"""``python -m mmsb`` and a cold ``import mmsb``, in fresh interpreters."""

import subprocess
import sys

import mmsb


def run(*args):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300)


def test_version_and_help():
    out = run("-m", "mmsb", "--version")
    assert out.returncode == 0 and out.stdout.strip() == f"mmsb {mmsb.__version__}"
    out = run("-m", "mmsb", "--help")
    assert out.returncode == 0 and "demo" in out.stdout


def test_demo_runs_and_reports_each_step():
    out = run("-m", "mmsb", "demo", "--pages", "64", "--size", "256", "--writes", "50")
    assert out.returncode == 0, out.stderr
    for step in ("create_pages", "update_page", "apply_batch", "stop"):
        assert step in out.stdout
    assert "64 pages" in out.stdout


def test_demo_rejects_bad_arguments():
    out = run("-m", "mmsb", "demo", "--pages", "0")
    assert out.returncode == 2 and "--pages" in out.stderr


def test_import_does_not_load_numba():
    out = run("-c", "import sys, mmsb; print('numba' in sys.modules)")
    assert out.returncode == 0 and out.stdout.strip() == "False"
