"""The pool of states behind :func:`mmsb.start`, :func:`mmsb.stop`, :func:`mmsb.replay` and
:func:`mmsb.restore`: every state a user gets from mmsb's functions comes from here.

Stopping a state resets its resources (arena, table, log buffer) at a cost
that follows what it touched and keeps them, up to ``mmsb.config.POOL_SIZE``;
a stop beyond that drops them. Nothing ever waits for the pool. The pool holds
only resources, never a state a user can reach: ``start`` wraps them in a new
State object, so a stopped state stays closed even after its resources moved on.
"""

from __future__ import annotations

from typing import Any

from ._interrupts import holds
from .durability import replay_log, restore_checkpoint
from .errors import InvalidArgumentError
from .state import State, _pool, _take_core
from .validate import _check_options, _check_retain

_new = object.__new__


@holds
def start(log: Any = None, sync: str = "commit", gpu: Any = "auto", retain: Any = None, tag: Any = None,
          shared: Any = None) -> State:
    """A state from the pool (or a fresh one), indistinguishable from ``State()``.

    ``log``: None keeps the log in memory, False keeps none, a path writes
    it to that file (created, or recovered and replayed if it exists; see
    :mod:`mmsb.log.file`). ``sync``: "commit" (a call returns once its
    commit is on disk), "group" (synced within ``config.LOG_GROUP_INTERVAL_US``;
    ``State.flush`` waits for it) or "none" (the OS decides); in memory all
    are the same. ``gpu``: "auto" (device pages where asked, see
    ``State.create_page``), True (raises :class:`mmsb.DeviceUnavailableError`
    when no CUDA device is usable) or False (no device pages). ``retain``: what the
    log keeps in memory, ``tag``: the tag its page ids carry, ``shared``: a name under which
    other processes attach to it (see :class:`mmsb.State`; a shared state is never pooled).
    """
    if shared is not None:
        return State(log, sync, gpu, retain, tag, shared=shared)
    if log is not None or sync != "commit" or gpu != "auto" or retain is not None or tag is not None:
        _check_options(log, sync, gpu, tag)
        keep = _check_retain(retain)
        st = _new(State)
        st._attach(_take_core(), log, sync, gpu, tag)
        if retain is not None:
            st._retain_as(retain, keep)
        return st
    st = _new(State)
    st._attach(_take_core(), log, sync, gpu)  # State._from_core, inlined: a start is a third of the cycle
    return st


@holds
def stop(state: State, checkpoint_path: Any = None) -> None:
    """Close ``state`` (writing a checkpoint to ``checkpoint_path`` first, if given) and
    return its resources to the pool. Stopping twice is harmless."""
    if type(state) is not State and not isinstance(state, State):
        raise InvalidArgumentError(f"mmsb.stop takes a State, got {type(state).__name__}")
    if checkpoint_path is not None and state._c is not None:
        state.checkpoint(checkpoint_path)
    state.close()


def replay(log_path: Any, to_lsn: Any = None, progress: Any = None) -> State:
    """A new state from the log file at ``log_path``: every commit whose LSNs are all <= ``to_lsn``.

    The file is only read (a log another state is writing can be replayed).
    A torn tail is left out with a :class:`mmsb.LogTruncatedWarning`; damage
    before it raises :class:`mmsb.LogCorruptError`. The state keeps its log
    in memory. ``progress(done, total)``, if given, is called as records apply (bytes).
    """
    return replay_log(log_path, to_lsn, progress, start)


def restore(path: Any, log: Any = None, sync: str = "commit") -> State:
    """A state from the checkpoint at ``path``, then the log ``log`` after it.

    ``log=None``: the state keeps a new log in memory. ``log=`` the file log
    the checkpointed state was writing: its records after the checkpoint are
    replayed and the state goes on writing it. ``log=`` a path with no file:
    a new log continuing this checkpoint. Bindings whose functions are not
    registered in this process are listed in ``missing_functions``.
    """
    return restore_checkpoint(path, log, sync, start)


def pool_size() -> int:
    """How many reset states the pool holds now."""
    return len(_pool)
