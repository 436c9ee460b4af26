"""mmsb: a Memory-Mapped State Bus.

Byte pages in preallocated NumPy arenas; every change a delta with a per-page
epoch and a state-wide LSN, kept in a transaction log. See the README and
``docs/`` for the full picture. ``import mmsb`` does not import numba: the
kernels load with the first state; ``numba.cuda`` loads with the first
question about a device (``mmsb.gpu``).
"""

from . import config, gpu
from ._version import __version__
from .delta import Delta, DeltaBatch
from .errors import (
    CapacityError,
    DeviceUnavailableError,
    GraphCycleError,
    InvalidArgumentError,
    InvalidDeltaError,
    InvalidPageError,
    LogCorruptError,
    LogInUseError,
    LogIOError,
    LogTrimmedError,
    LogTruncatedWarning,
    MissingFunctionWarning,
    MMSBError,
    PageNotFoundError,
    RecomputeError,
    StateClosedError,
)
from .functions import register_function
from .log.history import History
from .page import Page
from .pool import replay, restore, start, stop
from .state import State

__all__ = [
    "__version__",
    "config",
    "gpu",
    "start",
    "stop",
    "replay",
    "restore",
    "register_function",
    "State",
    "Page",
    "Delta",
    "DeltaBatch",
    "History",
    "MMSBError",
    "PageNotFoundError",
    "InvalidDeltaError",
    "InvalidPageError",
    "InvalidArgumentError",
    "CapacityError",
    "GraphCycleError",
    "LogCorruptError",
    "DeviceUnavailableError",
    "StateClosedError",
    "RecomputeError",
    "LogInUseError",
    "LogIOError",
    "LogTrimmedError",
    "LogTruncatedWarning",
    "MissingFunctionWarning",
]
