"""``python -m mmsb calibrate``: where the device starts to beat the CPU, measured here.

For each size, one dense delta masking half the page is applied with
``apply_delta`` to a page on the CPU and to one on the device, the way a user
would: the device figure includes staging the delta, copying it in, the launch
and the answer coming back. The threshold is the smallest measured size from
which the device is faster at every larger measured size; when it never is, it
is twice the largest size measured. Results are stored per device name (see
:func:`mmsb.gpu.calibration_path`).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np

from ..errors import DeviceUnavailableError, InvalidArgumentError
from .device import _probe, available, calibration_path, device_name, simulated, stored_calibrations

SIZES = (4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20)


def _median_us(fn: Any, repeat: int) -> float:
    fn()  # warm: compiles, first-touch
    times = []
    for _ in range(repeat):
        t = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t)
    return float(np.median(times)) / 1e3


def measure(size: int, repeat: int) -> dict[str, float]:
    """CPU apply, device apply (transfers included) and device round trip for one size, in µs."""
    from ..delta import Delta
    from ..state import State

    st = State(log=False, gpu=True)
    try:
        cpu, gpu = st.create_page(size, location="cpu"), st.create_page(size, location="gpu")
        rng = np.random.default_rng(size)
        mask = rng.random(size) < 0.5
        payloads = [rng.integers(0, 256, size, dtype=np.uint8) for _ in range(2)]
        turn = [0]

        def apply(pg: Any) -> Any:
            turn[0] ^= 1  # alternate payloads so every apply changes bytes
            return st.apply_delta(Delta.dense(pg, mask, payloads[turn[0]]))

        cpu_us = _median_us(lambda: apply(cpu), repeat)
        gpu_us = _median_us(lambda: apply(gpu), repeat)
        trip_us = _median_us(lambda: (apply(gpu), st.query_page(gpu)), repeat)
        if not np.array_equal(st.query_page(cpu), st.query_page(gpu)):
            raise AssertionError(f"device and CPU pages differ after the same deltas ({size} B)")
        return {"cpu_us": cpu_us, "gpu_resident_us": gpu_us, "gpu_round_trip_us": trip_us}
    finally:
        st.close()


def crossover(sizes: list[int], cpu_us: list[float], gpu_us: list[float]) -> int | None:
    """The smallest size from which the device wins at every larger size, or None."""
    best = None
    for size, c, g in reversed(list(zip(sizes, cpu_us, gpu_us))):
        if g >= c:
            break
        best = size
    return best


def calibrate(sizes: Any = None, repeat: int = 5, store: bool = True) -> dict[str, Any]:
    """Measure CPU against device apply over ``sizes`` (bytes) and find the crossover.

    Returns ``{"device", "sizes", "cpu_us", "gpu_resident_us", "gpu_round_trip_us",
    "threshold", "crossover", "simulated", "when"}``; with ``store``, also keeps it
    in :func:`mmsb.gpu.calibration_path` under the device's name, where
    :func:`mmsb.gpu.threshold` finds it. Raises :class:`mmsb.DeviceUnavailableError`
    without a device, :class:`mmsb.InvalidArgumentError` for bad sizes or repeat.
    """
    sizes = sorted({int(s) for s in (SIZES if sizes is None else sizes)})
    if not sizes or sizes[0] < 8:
        raise InvalidArgumentError(f"calibration sizes must be at least 8 bytes, got {sizes}")
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise InvalidArgumentError(f"repeat must be a positive integer, got {repeat!r}")
    if not available():
        raise DeviceUnavailableError("calibration needs a CUDA device, and none is usable here")
    rows = [measure(size, repeat) for size in sizes]
    result: dict[str, Any] = {"device": device_name(), "sizes": sizes, "simulated": simulated(),
                              "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    for key in ("cpu_us", "gpu_resident_us", "gpu_round_trip_us"):
        result[key] = [round(r[key], 2) for r in rows]
    cross = crossover(sizes, result["cpu_us"], result["gpu_resident_us"])
    result["crossover"] = cross
    result["threshold"] = cross if cross is not None else 2 * sizes[-1]
    if store:
        path = calibration_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        data = stored_calibrations()
        data[result["device"]] = result
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
        _probe.pop("threshold", None)
    return result


def format_table(result: dict[str, Any]) -> str:
    lines = [f"device: {result['device']}" + ("  (numba's CUDA simulator: timings mean nothing)"
                                             if result.get("simulated") else ""),
             f"{'size':>12} {'CPU µs':>10} {'GPU µs':>10} {'GPU+copy out µs':>16} {'GPU/CPU':>8}"]
    for size, c, g, t in zip(result["sizes"], result["cpu_us"], result["gpu_resident_us"],
                             result["gpu_round_trip_us"]):
        lines.append(f"{size:>12} {c:>10.1f} {g:>10.1f} {t:>16.1f} {c / g if g else float('inf'):>7.2f}x")
    cross = result["crossover"]
    lines.append(f"threshold: {result['threshold']} B" + ("" if cross is not None else
                                                        " (the device never won: twice the largest size)"))
    return "\n".join(lines)


__all__ = ["SIZES", "calibrate", "crossover", "format_table", "measure"]
