"""The GPU layer: device pages on ``numba.cuda``, the transfer threshold, calibration.

Importing this module is cheap and never touches CUDA: ``numba.cuda`` is
imported on the first question that needs it (:func:`available`, a device
page), and every failure there (numba-cuda missing, no driver, no device)
reads as "no device". The kernels live in :mod:`mmsb.gpu.kernels`, the device
arena in :mod:`mmsb.gpu.arena`, a state's device writes in :mod:`mmsb.gpu.writes`
and its device recomputes in :mod:`mmsb.gpu.cascade`; the questions about the
device live in :mod:`mmsb.gpu.device` (the rest of mmsb imports that module,
never this package, which sits above the state for :func:`calibrate`).

Where bytes cross the bus
-------------------------
Pages on the device stay there; what crosses, and when:

- a write to a device page (``update_page``, ``apply_delta``, the device part of
  ``apply_batch``) stages the delta in pinned host memory, copies it in, and
  applies it with one kernel launch per commit; back come one flag per delta
  (``update_page``: one bit per page byte, the diff);
- a recompute of a device page from device parents runs on the device; a
  parent on the CPU is copied in first. The recomputed page's diff comes back
  as one bit per byte, and, when some byte changed, the new bytes (the log
  records them);
- a CPU page recomputed from device parents gets those parents' bytes copied
  out; ``query_page`` copies a device page out; ``view`` refuses;
- a checkpoint copies device pages out; a restore or replay copies them in.

A ``sync`` edge makes its child a mirror of its parent: the parent's bytes are
copied across after every commit that changes the parent.
"""

from __future__ import annotations

from typing import Any

from .device import (
    DEFAULT_THRESHOLD,
    _probe,
    available,
    calibration_path,
    cuda,
    device_name,
    simulated,
    stored_calibrations,
    threshold,
)


def calibrate(sizes: Any = None, repeat: int = 5, store: bool = True) -> dict[str, Any]:
    """Measure CPU against device apply over ``sizes`` and find the crossover; see
    :func:`mmsb.gpu.calibration.calibrate`."""
    from .calibration import calibrate as _calibrate

    return _calibrate(sizes, repeat, store)


__all__ = ["DEFAULT_THRESHOLD", "available", "calibrate", "calibration_path", "device_name", "simulated",
           "stored_calibrations", "threshold"]
