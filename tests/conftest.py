"""Test-session setup.

GPU code is tested on numba.cuda's simulator: it must be switched on before
anything imports ``numba.cuda``, so it is set here, for the whole session.
``MMSB_TEST_REAL_GPU=1`` leaves it off, and the same tests run on a real
device. Tests that need a machine without a device start subprocesses. The
calibration cache is a fresh directory, so ``location="auto"`` sees the
documented default threshold.
"""

import os
import tempfile

if os.environ.get("MMSB_TEST_REAL_GPU") != "1":
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
# a calibration stored on this machine must not move location="auto" pages in tests
os.environ["MMSB_CACHE_DIR"] = tempfile.mkdtemp(prefix="mmsb-test-cache-")
