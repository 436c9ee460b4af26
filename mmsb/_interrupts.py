"""Interrupts held back while a call changes a state.

A KeyboardInterrupt raised between two steps of a commit (the pages written,
the log not yet sealed; a frame written, its position not yet recorded; a
lock taken, not yet released) would leave a state, its log and its log file
disagreeing. Python runs a signal's handler in the main thread, between two
bytecodes, and hands it the frame it stopped. So mmsb wraps the Python handler
of SIGINT (and of SIGTERM, when a program gave it one): when the stopped frame
lies inside one of mmsb's state-changing calls (code marked :func:`atomic` or
:func:`holds`), the signal is held, and delivered as the outermost such call
returns (from code that does not return soon, it is sent again a millisecond
later, until it lands outside). User code that such a call runs (a recompute function, an event
handler: code marked :func:`user_code`) is interrupted as usual: the call then
rolls back whole, or, once its commit is sealed, stands.

Kernels never see a signal: Python handles it once a kernel returns.

The wrapper is installed with every state (from the main thread), again by
every slow path when something replaced it since, and before each IPython
cell (ipykernel puts the default handler back for each cell). Outside mmsb's
calls it behaves exactly as the handler it wraps.
"""

from __future__ import annotations

import _signal
import _thread
import functools
import signal
import sys
import threading
from typing import Any, Callable, TypeVar

__all__ = ["atomic", "holds", "user_code", "land", "install", "ensure"]

F = TypeVar("F", bound=Callable[..., Any])

_ATOMIC: set[Any] = set()  # code objects of calls an interrupt must not split
_USER: set[Any] = set()  # code objects from which user code is called
_held: set[int] = set()
_wrapped: dict[int, Any] = {}  # signal -> the handler the wrapper stands in front of
_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_RESEND_S = 0.001
_getsignal = _signal.getsignal  # signal.getsignal's enum lookup costs 2.7 us
_SIGINT = signal.SIGINT
_ipython_hooked = False


def holds(fn: F) -> F:
    """Mark ``fn`` (a function, or a generator function) as code no interrupt splits.

    An interrupt held there lands when the outermost :func:`atomic` call
    returns, or a millisecond later; a hot entry point that is only marked
    lands it itself (``if _held: land()`` once it is done).
    """
    _ATOMIC.add(getattr(fn, "__func__", fn).__code__)
    return fn


def atomic(fn: F) -> F:
    """:func:`holds`, and land what was held as the call returns (an entry point)."""
    holds(fn)

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        result = fn(*args, **kwargs)
        if _held:
            land()
        return result

    _ATOMIC.add(call.__code__)
    return call  # type: ignore[return-value]


def user_code(fn: F) -> F:
    """Mark ``fn`` as the place where an atomic call runs user code: interrupts land there."""
    _USER.add(fn.__code__)
    return fn


def _inside(frame: Any) -> bool:
    """Whether ``frame`` or a caller of it is in atomic code (and not in user code it runs)."""
    f = frame
    while f is not None:
        code = f.f_code
        if code in _ATOMIC:
            return True
        if code in _USER:
            return False
        f = f.f_back
    return False


def _handler(signum: int, frame: Any) -> None:
    if _inside(frame):
        _hold(signum)
        return
    _deliver(signum, frame)


def _deliver(signum: int, frame: Any) -> None:
    wrapped = _wrapped.get(signum)
    if callable(wrapped):
        wrapped(signum, frame)
    elif signum == _SIGINT:
        raise KeyboardInterrupt


@holds
def _hold(signum: int) -> None:
    """Send ``signum`` again soon (in case no atomic call returns first); once for any number
    of signals held meanwhile."""
    if signum in _held:
        return
    _held.add(signum)
    t = threading.Timer(_RESEND_S, _resend, (signum,))
    t.daemon = True
    t.start()


def _resend(signum: int) -> None:
    try:
        _held.remove(signum)  # one step under the GIL: land() and this never both deliver
    except KeyError:
        return
    _thread.interrupt_main(signum)


def land() -> None:
    """Deliver the interrupts held, unless the caller's caller is itself inside atomic code
    (then the outer call lands them as it returns)."""
    frame = sys._getframe(2)
    if _inside(frame):
        return
    for signum in list(_held):
        try:
            _held.remove(signum)
        except KeyError:
            continue
        _deliver(signum, frame)


def install() -> None:
    """Put the wrapper in front of the current Python handlers (main thread only)."""
    global _ipython_hooked
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in _SIGNALS:
        current = _getsignal(signum)
        if current is _handler or not callable(current):
            continue  # the default action of SIGTERM, or SIG_IGN: no Python runs, nothing to hold
        _wrapped[signum] = current
        _signal.signal(signum, _handler)
    if not _ipython_hooked and "IPython" in sys.modules:
        ip = sys.modules["IPython"].get_ipython()
        if ip is not None:
            ip.events.register("pre_run_cell", _before_cell)
            _ipython_hooked = True


def _before_cell(*args: Any) -> None:
    install()


def ensure() -> None:
    """:func:`install`, when something replaced the wrapper (a cheap check first)."""
    if _getsignal(_SIGINT) is not _handler:
        install()
