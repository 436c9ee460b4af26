"""Argument checks shared by the state's calls, and the errors every closed or busy state raises.

Each check either returns the checked value (normalized) or raises the
:mod:`mmsb.errors` exception a user sees; none changes anything. The write path
calls them only off its fast branch (the commit kernels check the common case).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ._layout import LOC_CPU, LOC_GPU, MAX_PAGE_SIZE, MAX_TAG
from .errors import (
    DeviceUnavailableError,
    InvalidArgumentError,
    InvalidDeltaError,
    InvalidPageError,
    StateClosedError,
)
from .gpu import device as _device

_SYNC = ("commit", "group", "none")
_U8 = np.dtype(np.uint8)


def _closed() -> StateClosedError:
    return StateClosedError("the state was stopped or closed")


def _in_transaction(what: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"{what} is not allowed inside a transaction: only page writes are")


def _check_options(log: Any, sync: Any, gpu: Any, tag: Any = None) -> None:
    if tag is not None and (isinstance(tag, bool) or not isinstance(tag, (int, np.integer))
                            or not 0 <= tag <= MAX_TAG):
        raise InvalidArgumentError(f"tag={tag!r}: expected None (a tag no live state holds) or an int "
                                   f"from 0 to {MAX_TAG}")
    if log is not None and log is not False and not isinstance(log, (str, os.PathLike)):
        raise InvalidArgumentError(f"log={log!r}: expected None (in memory), False (none) or a file path")
    if sync not in _SYNC:
        raise InvalidArgumentError(f"sync={sync!r}: expected one of {_SYNC}")
    if gpu is not True and gpu is not False and gpu != "auto":
        raise InvalidArgumentError(f"gpu={gpu!r}: expected 'auto', True or False")
    if gpu is True and not _device.available():
        raise DeviceUnavailableError(
            "gpu=True asks for a CUDA device, and none is usable here (needs numba-cuda, "
            "`pip install mmsb[cuda]`, a driver and a device)"
        )


def _check_retain(retain: Any) -> int | None:
    """What ``retain=`` asks a log to keep: a count of deltas, or None (all, until a checkpoint
    truncates: also what ``"checkpoint"`` means, its checkpoints truncating by default)."""
    if retain is None or retain == "checkpoint":
        return None
    if isinstance(retain, (bool, np.bool_)) or not isinstance(retain, (int, np.integer)) or retain < 0:
        raise InvalidArgumentError(f"retain={retain!r}: expected None (everything), 'checkpoint' or a number "
                                   "of deltas (0 or more)")
    return int(retain)


def _check_size(size: Any, what: str = "size") -> int:
    if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, np.integer)):
        raise InvalidPageError(f"page {what} must be an integer number of bytes, got {size!r}")
    size = int(size)
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise InvalidPageError(f"page {what} must be between 1 and {MAX_PAGE_SIZE} bytes (3 GiB), got {size}")
    return size


def _check_location(location: Any, size: int, gpu: Any) -> int:
    """The location code of a new page of ``size`` bytes on a state started with ``gpu``."""
    if location == "cpu":
        return LOC_CPU
    if location != "gpu" and location != "auto":
        raise InvalidPageError(f"unknown location {location!r}: expected 'cpu', 'gpu' or 'auto'")
    if gpu is False:
        if location == "auto":
            return LOC_CPU
        raise DeviceUnavailableError("location='gpu' on a state started with gpu=False")
    if location == "auto":
        return LOC_GPU if size >= _device.threshold() and _device.available() else LOC_CPU
    if not _device.available():
        raise DeviceUnavailableError(
            "location='gpu' needs a CUDA device, and none is usable here (needs numba-cuda, "
            "`pip install mmsb[cuda]`, a driver and a device)"
        )
    return LOC_GPU


def _page_bytes(data: Any, size: int) -> np.ndarray:
    if type(data) is np.ndarray:
        if data.dtype is not _U8 and data.dtype != _U8:
            raise InvalidDeltaError(f"page data must be uint8 bytes, got dtype {data.dtype}")
        if data.ndim != 1:
            raise InvalidDeltaError(f"page data must be 1-d, got shape {data.shape}")
        if not data.flags.c_contiguous:
            data = np.ascontiguousarray(data)
    elif isinstance(data, (bytes, bytearray, memoryview)):
        data = np.frombuffer(data, dtype=np.uint8)
    else:
        raise InvalidDeltaError(f"page data must be a uint8 array or bytes-like, got {type(data).__name__}")
    if data.size != size:
        raise InvalidDeltaError(f"page data has {data.size} bytes, the page has {size}")
    return data
