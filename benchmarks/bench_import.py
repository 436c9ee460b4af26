"""Start-up costs in a fresh interpreter: what a user waits for before the first write.

Cold ``import mmsb`` is bench_core.Import.timeraw_import, and the first update_page alone (state
already made) is bench_core.FirstUpdate. Here: the first state and its first update together,
which is where numba and the kernels load (budget: first update with the JIT cache warm ≤ 1 s),
and the same with an empty JIT cache, which is what the very first run after install pays
(measured and reported, no budget; docs/PERFORMANCE.md).
"""

import subprocess
import sys

_SETUP = """
import numpy as np
import mmsb
data = np.full(1024, 7, np.uint8)
"""
_FIRST = """
st = mmsb.start()
st.update_page(st.create_page(1024), data)
"""
# numba reads NUMBA_CACHE_DIR when it is imported, and `import mmsb` does not import numba
_EMPTY_CACHE = """
import os, tempfile
os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="mmsb-asv-jit-")
"""


class FirstState:
    """First mmsb.start() + create_page + update_page in a fresh interpreter (import is setup)."""

    timeout = 600

    def setup(self):
        # fills numba's on-disk cache, so the warm-cache figure loads rather than compiles
        subprocess.run([sys.executable, "-c", _SETUP + _FIRST], check=True)

    def timeraw_first_state_and_update_warm_cache(self):
        return _FIRST, _SETUP

    def timeraw_first_state_and_update_empty_cache(self):
        """Every kernel the first write needs, compiled from nothing (a throwaway cache dir)."""
        return _FIRST, _EMPTY_CACHE + _SETUP


class NumpyFirstState:
    """Peer: the first page and write of a dict-of-pages user in a fresh interpreter."""

    def timeraw_first_state_and_update_warm_cache(self):
        return ("pages, log = {0: np.zeros(1024, np.uint8)}, []\n"
                "changed = np.flatnonzero(pages[0] != data)\npages[0][changed] = data[changed]\n"
                "log.append((0, changed, data[changed]))\n",
                "import numpy as np\ndata = np.full(1024, 7, np.uint8)\n")
