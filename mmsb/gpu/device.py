"""Whether a CUDA device is usable here, which one, and the threshold for ``location="auto"``.

Nothing here imports ``numba.cuda`` until asked (:func:`cuda` on first use), and
every failure there (numba-cuda missing, no driver, no device) reads as "no
device". The rest of mmsb asks these questions through this module; the
:mod:`mmsb.gpu` package re-exports them as its public API.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

from .. import config
from .._compat import patch_numpy

DEFAULT_THRESHOLD = 1 << 20  # the original system's proposal; used until a calibration exists
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


__all__ = ["DEFAULT_THRESHOLD", "available", "calibration_path", "cuda", "device_name", "simulated",
           "stored_calibrations", "threshold"]
