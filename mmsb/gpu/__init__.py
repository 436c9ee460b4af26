"""The GPU layer: device pages on ``numba.cuda``, the transfer threshold, calibration.

Importing this module is cheap and never touches CUDA: ``numba.cuda`` is
imported on the first question that needs it (:func:`available`, a device
page), and every failure there (numba-cuda missing, no driver, no device)
reads as "no device". The kernels live in :mod:`mmsb.gpu.kernels`, the device
arena and what each state does with it in :mod:`mmsb.gpu.arena`.

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

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

DEFAULT_THRESHOLD = 1 << 20  # the original system's proposal; used until a calibration exists

from .._compat import patch_numpy

_probe: dict[str, Any] = {}


def cuda() -> Any:
    """The ``numba.cuda`` module when a device (or the simulator) can be used, else None."""
    if "cuda" not in _probe:
        mod = None
        try:
            patch_numpy()
            from numba import cuda as mod

            if not mod.is_available():
                mod = None
        except Exception:  # no numba-cuda, no driver, a broken install: all mean no device
            mod = None
        _probe["cuda"] = mod
    return _probe["cuda"]


def available() -> bool:
    """Whether a CUDA device (or ``NUMBA_ENABLE_CUDASIM=1``'s simulator) is usable here."""
    return cuda() is not None


def simulated() -> bool:
    """Whether the device is numba's CUDA simulator (timings mean nothing there)."""
    if cuda() is None:
        return False
    if "simulated" not in _probe:
        import numba

        _probe["simulated"] = (bool(getattr(numba.config, "ENABLE_CUDASIM", 0))
                               or os.environ.get("NUMBA_ENABLE_CUDASIM") == "1")
    return _probe["simulated"]


def device_name() -> str | None:
    """The present device's name (e.g. ``"NVIDIA H100 80GB HBM3"``), or None without one."""
    mod = cuda()
    if mod is None:
        return None
    if simulated():
        return "cuda-simulator"
    name = mod.get_current_device().name
    return name.decode() if isinstance(name, bytes) else str(name)


def calibration_path() -> Path:
    """Where calibrations are stored: ``$MMSB_CACHE_DIR``, else ``$XDG_CACHE_HOME/mmsb``,
    else ``~/.cache/mmsb``; the file is ``calibration.json``, keyed by device name."""
    from pathlib import Path  # here, not at import: import mmsb stays lean

    root = os.environ.get("MMSB_CACHE_DIR")
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mmsb")
    return Path(root) / "calibration.json"


def stored_calibrations() -> dict[str, Any]:
    """Every stored calibration, by device name ({} when none or the file is unreadable)."""
    import json

    try:
        data = json.loads(calibration_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def threshold() -> int:
    """The page size from which ``location="auto"`` puts a page on the device.

    ``mmsb.config.GPU_THRESHOLD_BYTES`` when set (>= 1); otherwise the threshold
    calibrated for this device (``python -m mmsb calibrate``); otherwise
    :data:`DEFAULT_THRESHOLD` (1 MiB).
    """
    from .. import config

    if config.GPU_THRESHOLD_BYTES:
        return int(config.GPU_THRESHOLD_BYTES)
    path = calibration_path()
    cached = _probe.get("threshold")
    if cached is None or cached[0] != path:  # read once per calibration file (calibrate refreshes it)
        name = device_name()
        entry = stored_calibrations().get(name) if name else None
        try:
            value = max(1, int(entry["threshold"]))
        except (TypeError, KeyError, ValueError):
            value = DEFAULT_THRESHOLD
        cached = _probe["threshold"] = (path, value)
    return cached[1]


def calibrate(sizes: Any = None, repeat: int = 5, store: bool = True) -> dict[str, Any]:
    """Measure CPU against device apply over ``sizes`` and find the crossover; see
    :func:`mmsb.gpu.calibration.calibrate`."""
    from .calibration import calibrate as _calibrate

    return _calibrate(sizes, repeat, store)


__all__ = ["DEFAULT_THRESHOLD", "available", "calibrate", "calibration_path", "device_name", "simulated",
           "stored_calibrations", "threshold"]
