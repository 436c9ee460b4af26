"""The pool of states behind :func:`mmsb.start` and :func:`mmsb.stop`.

Stopping a state resets its resources (arena, table, log buffer) at a cost
that follows what it touched and keeps them, up to ``mmsb.config.POOL_SIZE``;
a stop beyond that drops them. Nothing ever waits for the pool. The pool holds
only resources, never a state a user can reach: ``start`` wraps them in a new
State object, so a stopped state stays closed even after its resources moved on.
"""

from __future__ import annotations

from typing import Any

from . import config
from .state import State, _check_options, _Core, _pool


def start(log: Any = None, sync: str = "commit", gpu: Any = "auto") -> State:
    """A state from the pool (or a fresh one), indistinguishable from ``State()``.

    ``log``: None keeps the log in memory, False keeps none, a path writes
    it to that file (created, or recovered and replayed if it exists; see
    :mod:`mmsb.log.file`). ``sync``: "commit" (a call returns once its
    commit is on disk), "group" (synced within ``config.LOG_GROUP_INTERVAL_US``;
    ``State.flush`` waits for it) or "none" (the OS decides); in memory all
    are the same. ``gpu``: "auto" (device pages where asked, see
    ``State.create_page``), True (raises :class:`mmsb.DeviceUnavailableError`
    when no CUDA device is usable) or False (no device pages).
    """
    if log is not None or sync != "commit" or gpu != "auto":
        _check_options(log, sync, gpu)
    try:
        core = _pool.pop()
    except IndexError:
        core = _Core()
    else:
        if core.reserve_asked != config.ARENA_RESERVE_BYTES:
            _pool.clear()  # made under another config: a fresh state would differ
            core = _Core()
    return State._from_core(core, log, sync, gpu)


def stop(state: State, checkpoint_path: Any = None) -> None:
    """Close ``state`` (writing a checkpoint to ``checkpoint_path`` first, if given) and
    return its resources to the pool. Stopping twice is harmless."""
    if type(state) is not State and not isinstance(state, State):
        from .errors import InvalidArgumentError

        raise InvalidArgumentError(f"mmsb.stop takes a State, got {type(state).__name__}")
    if checkpoint_path is not None and state._c is not None:
        state.checkpoint(checkpoint_path)
    state.close()


def pool_size() -> int:
    """How many reset states the pool holds now."""
    return len(_pool)
