"""The writer that ``live_bus.ipynb`` watches: a process that owns a shared state and keeps
changing it, the way a simulation would.

    python bus_writer.py NAME [SECONDS]

It starts ``mmsb.start(shared=NAME)`` with three typed pages: ``walkers`` (random walkers'
positions), ``step`` (the walk's step size, which other processes may write) and ``counts``
(a histogram of the walkers, derived from them by a recompute function, so every write of
the walkers also writes their counts, in the same call). It prints ``ready`` once they exist,
then moves the walkers every 10 ms until SECONDS have passed, someone writes a negative
step, or the process that started it ends.
"""

import os
import sys
import time

import numpy as np

import mmsb

WALKERS = 2000
EDGES = np.linspace(-8.0, 8.0, 33)  # 32 bins


def main(name: str, seconds: float) -> int:
    rng = np.random.default_rng(0)
    with mmsb.start(shared=name) as st:
        walkers = st.create_page(dtype=np.float64, shape=WALKERS, name="walkers")
        step = st.create_page(dtype=np.float64, shape=1, name="step")
        counts = st.create_page(dtype=np.int64, shape=EDGES.size - 1, name="counts")
        st.register_recompute(counts, [walkers], lambda x: np.histogram(x, EDGES)[0])
        st.update_page(step, [0.05])
        print("ready", flush=True)  # the pages exist: other processes may look them up by name
        x = np.zeros(WALKERS)
        end = time.monotonic() + seconds
        parent = os.getppid()
        while time.monotonic() < end and os.getppid() == parent:  # the notebook's kernel ended: stop too
            size = float(st.view(step)[0])
            if size < 0:
                break
            x += rng.normal(0.0, size, WALKERS)
            st.update_page(walkers, x)  # one call: the walkers, then their counts by the cascade
            time.sleep(0.01)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 120.0))
