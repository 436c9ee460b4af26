"""Names for user recompute functions, so logs and checkpoints can refer to them.

A log or checkpoint cannot hold code. It holds a binding's function by name:
the name given to :func:`register_function`, or else the function's
``module.qualname``. Replaying or restoring binds the function registered
under that name in the current process; a name nobody registered leaves the
binding in place with a stand-in that raises :class:`mmsb.RecomputeError`
(naming the function) if a cascade reaches it, and the state lists such names
in ``State.missing_functions``. A state's own replay (``State.replay``, time
travel in the same process) first binds the functions that state was bound
with, by the same names: lambdas and unregistered functions included, unless
two of its functions share one name.

:func:`python_result` runs a Python recompute and checks what it returns, for
the host cascade (:mod:`mmsb.propagation`) and the device one
(:mod:`mmsb.gpu.cascade`) alike.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import numpy as np

from ._interrupts import user_code
from .errors import InvalidArgumentError, InvalidDeltaError, RecomputeError
from .typed import page_bytes, typed_view

_lock = threading.Lock()
_by_name: dict[str, Callable[..., Any]] = {}
_names: dict[int, str] = {}  # id(fn) -> name, for functions registered here


def register_function(fn: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
    """Register ``fn`` under ``name`` (default ``module.qualname``); returns ``fn``.

    Works as a decorator, with or without arguments. Registering the same
    function again is harmless; another function under a taken name raises
    :class:`mmsb.InvalidArgumentError`.
    """
    if fn is None:
        return lambda f: register_function(f, name=name)
    if not callable(fn):
        raise InvalidArgumentError(f"register_function takes a callable, got {fn!r}")
    key = default_name(fn) if name is None else name
    if not isinstance(key, str) or not key or len(key.encode()) > 0xFFFF:
        raise InvalidArgumentError(f"a function name is a non-empty string of at most 65535 bytes, got {key!r}")
    with _lock:
        old = _by_name.get(key)
        if old is not None and old is not fn:
            raise InvalidArgumentError(f"another function is registered as {key!r}")
        _by_name[key] = fn
        _names[id(fn)] = key
    return fn


def default_name(fn: Callable[..., Any]) -> str:
    inner = getattr(fn, "py_func", fn)  # an @njit dispatcher names its Python function
    return f"{getattr(inner, '__module__', '?')}.{getattr(inner, '__qualname__', repr(inner))}"


def function_name(fn: Callable[..., Any]) -> str:
    """The name a log records for ``fn`` (for a typed ``@njit`` recompute, its user's function)."""
    fn = getattr(fn, "_mmsb_user", fn)
    name = _names.get(id(fn))
    if name is not None and _by_name.get(name) is fn:
        return name
    return default_name(fn)


_local = threading.local()


def lookup(name: str) -> Callable[..., Any] | None:
    own = getattr(_local, "own", None)
    if own is not None:
        fn = own.get(name)
        if fn is not None:
            return fn
    return _by_name.get(name)


class own_functions:
    """``with own_functions(fns):`` lookups in this thread find ``fns`` (name -> function; None
    for a name two functions share) before the registry: a state's replay of its own log."""

    def __init__(self, fns: dict[str, Any]) -> None:
        self.fns = {k: v for k, v in fns.items() if v is not None}

    def __enter__(self) -> None:
        self.saved = getattr(_local, "own", None)
        _local.own = self.fns

    def __exit__(self, *exc: object) -> None:
        _local.own = self.saved


def remember(known: dict[str, Any], fn: Callable[..., Any]) -> None:
    """Note in ``known`` that a state was bound with ``fn`` (its name shared by another: None)."""
    name = function_name(fn)
    old = known.get(name, fn)
    known[name] = fn if old is fn else None


class MissingFunction:
    """Stands in for a function a log names but this process has not registered."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *parents: Any) -> Any:
        raise RecomputeError(
            f"recompute function {self.name!r} is not registered in this process: "
            f"call mmsb.register_function(fn, name={self.name!r}) and bind it again",
            None,
        )

    def __repr__(self) -> str:
        return f"<missing recompute function {self.name!r}>"


@user_code
def python_result(state: Any, b: Any, views: list[np.ndarray], slot: int, size: int) -> np.ndarray:
    """Run binding ``b``'s Python recompute on the parents' values (typed pages in their dtype and
    shape, byte pages as uint8); its result as the page's bytes, checked."""
    pid = state._id_of(slot)
    ann = state._ann
    if ann is not None and ann.info:
        views = [typed_view(ann.info.get(p), v) for p, v in zip(b.parents, views)]
    try:
        out = b.fn(*views)
    except Exception as exc:
        raise RecomputeError(f"recompute of page {pid} raised {exc!r}", pid) from exc
    info = None if ann is None else ann.info.get(slot)
    if info is not None and info.dtype is not None:
        try:
            return page_bytes(info, out, size)
        except InvalidDeltaError as exc:
            raise RecomputeError(f"recompute of page {pid} returned what the page cannot hold: {exc}", pid) from None
    data = np.ascontiguousarray(out)
    if data.dtype.kind not in "biuf":  # None, strings, objects: nothing that is bytes
        raise RecomputeError(f"recompute of page {pid} returned {type(out).__name__}, not an array of "
                             f"{size} bytes", pid)
    if data.dtype != np.uint8 and data.nbytes == size:
        data = data.reshape(-1).view(np.uint8)
    if data.dtype != np.uint8 or data.ndim != 1 or data.size != size:
        raise RecomputeError(
            f"recompute of page {pid} returned {data.nbytes} bytes of {data.dtype}; the page holds {size}",
            pid,
        )
    return data
