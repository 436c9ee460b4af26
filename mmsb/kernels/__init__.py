"""Numba ``@njit`` kernels: plain arrays in, plain arrays out.

Importing this package imports numba, which takes longer than importing mmsb
itself, so the rest of mmsb imports it on first use, not at ``import mmsb``.
Every kernel is compiled lazily and cached on disk (``cache=True``), and
releases the GIL (``nogil=True``) so other threads run while it works.
"""

from .apply import (
    _log_grouped as log_grouped,
    apply_dense,
    apply_marked,
    apply_sparse,
    apply_sparse_batch,
    apply_sparse_batch_parallel,
    check_sparse_batch,
    log_dense,
    log_sparse,
)
from .arena import reset_table, zero_bytes
from .diff import update_known, update_page

__all__ = [
    "apply_dense",
    "apply_marked",
    "check_sparse_batch",
    "log_dense",
    "log_grouped",
    "log_sparse",
    "update_known",
    "apply_sparse",
    "apply_sparse_batch",
    "apply_sparse_batch_parallel",
    "reset_table",
    "update_page",
    "zero_bytes",
]
