"""mmsb: a Memory-Mapped State Bus.

Byte pages in preallocated NumPy arenas; every change a delta with a per-page
epoch and a state-wide LSN, kept in a transaction log. See the README and
``docs/`` for the full picture. ``import mmsb`` does not import numba: the
kernels load with the first state; ``numba.cuda`` loads with the first
question about a device (``mmsb.gpu``), and the cross-process bus
(``mmsb.attach``) with its first use.
"""

from . import config, gpu
from ._version import __version__
from .delta import Delta, DeltaBatch
from .errors import (
    BusBusyError,
    BusExistsError,
    BusNotFoundError,
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
    OwnerGoneError,
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
    "attach",
    "Attached",
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
    "BusExistsError",
    "BusNotFoundError",
    "OwnerGoneError",
    "BusBusyError",
    "LogTruncatedWarning",
    "MissingFunctionWarning",
]


def __getattr__(name: str):
    # the bus (ctypes, fcntl, mmap and its own modules) costs a tenth of a cold import;
    # a process that never shares a state never pays it
    if name in ("attach", "Attached"):
        from . import bus

        return getattr(bus, name)
    raise AttributeError(f"module 'mmsb' has no attribute {name!r}")
