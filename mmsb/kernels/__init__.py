"""Numba ``@njit`` kernels: plain arrays in, plain arrays out.

Importing this package imports numba, which takes longer than importing mmsb
itself, so the rest of mmsb imports it on first use, not at ``import mmsb``.
Every kernel is compiled lazily and cached on disk (``cache=True``), and
releases the GIL (``nogil=True``) so other threads run while it works.
"""

from __future__ import annotations

import hashlib
import pathlib
import sys
import time
from typing import Any

from .._compat import patch_numpy


def _drop_stale_cache(here: pathlib.Path | None = None) -> None:
    """numba's ``cache=True`` checks only a kernel's own file, but kernels here call and inline
    kernels from other files (and freeze ``_layout`` constants): an edit to one file would leave
    the others running cached old code. So when any kernel source changed since the cache was
    written, mmsb's cache files are dropped (they are rebuilt on first use)."""
    here = here or pathlib.Path(__file__).resolve().parent  # (another tree: for the tests)
    pkg = here.parent
    dirs = (here / "__pycache__", pkg / "gpu" / "__pycache__")
    digest = hashlib.blake2b(digest_size=16)
    for src in sorted(here.glob("*.py")) + [pkg / "_layout.py", pkg / "gpu" / "kernels.py"]:
        digest.update(src.read_bytes())
    stamp = dirs[0] / "mmsb-kernels.stamp"
    try:
        if stamp.read_text() == digest.hexdigest():
            return
    except OSError:
        pass  # no stamp yet: whatever cache there is predates this check
    try:
        for d in dirs:
            for f in [*d.glob("*.nbi"), *d.glob("*.nbc")]:
                f.unlink()
        stamp.parent.mkdir(exist_ok=True)
        stamp.write_text(digest.hexdigest())
    except OSError:
        pass  # a read-only install: numba caches elsewhere, and an upgrade replaces every file


class _Announce:
    """Says on stderr when mmsb's kernels compile (a cache miss: the first use after an install
    or upgrade), so that a first call that takes a minute does not look hung, and how long the
    compile took. Loading from the cache says nothing."""

    def __init__(self) -> None:
        self.depth = 0
        self.started = 0.0

    def on_start(self, event: Any) -> None:
        fn = getattr(event.data.get("dispatcher"), "py_func", None)
        if self.depth or not getattr(fn, "__module__", "").startswith("mmsb.kernels."):
            if self.depth:
                self.depth += 1
            return
        self.depth = 1
        self.started = time.perf_counter()
        sys.stderr.write(f"mmsb: compiling numba kernels ({fn.__name__} and what it calls) for this machine; "
                         "once per install, then cached on disk ...\n")
        sys.stderr.flush()

    def on_end(self, event: Any) -> None:
        if not self.depth:
            return
        self.depth -= 1
        if not self.depth:
            sys.stderr.write(f"mmsb: compiled in {time.perf_counter() - self.started:.1f} s\n")
            sys.stderr.flush()


def _listen() -> None:
    from numba.core import event

    class Listener(_Announce, event.Listener):
        pass

    event.register("numba:compile", Listener())


_drop_stale_cache()
patch_numpy()  # before numba compiles anything (see mmsb._compat)
_listen()

from .apply import (  # after the cache check, before anything compiles
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
