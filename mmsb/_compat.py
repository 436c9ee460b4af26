"""Compatibility steps taken before numba loads.

numba 0.68 and numba-cuda 0.30 register an implementation of ``np.row_stack`` when they
first compile, and numpy 2.5 removed that name (an alias of ``np.vstack`` since numpy 1.x):
without it the first compile fails with ``module 'numpy' has no attribute 'row_stack'``.
:func:`patch_numpy` gives the alias back, only where it is missing.
"""


def patch_numpy() -> None:
    import numpy as np

    if not hasattr(np, "row_stack"):
        np.row_stack = np.vstack
