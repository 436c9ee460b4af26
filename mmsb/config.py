"""Tunables of mmsb, in one place.

Read them as ``mmsb.config.NAME``; change them with :func:`set` (which checks
names and values) and put them back with :func:`reset`. Changes apply to
states made afterwards, except where a name says otherwise.
"""

from __future__ import annotations

from typing import Any

_DEFAULTS: dict[str, Any] = {
    # Most address space a state's host arena may reserve, in chunks as it fills (see
    # ARENA_CHUNK_BYTES). Only bytes a page touches become resident, so this is a ceiling,
    # not a cost; it bounds the total size of live pages (a page of 3 GiB needs a 4 GiB slot).
    "ARENA_RESERVE_BYTES": 1 << 38,
    # The first chunk of a state's host arena; each next one is twice the last. Address
    # space, not memory: 10 000 states reserve 640 GiB of the 128 TiB a process has.
    "ARENA_CHUNK_BYTES": 1 << 26,
    # Initial number of page-table rows; the table doubles when full.
    "TABLE_INITIAL_ROWS": 64,
    # Initial bytes of an in-memory log buffer; it doubles when full.
    "LOG_INITIAL_BYTES": 1 << 14,
    # Most stopped states the pool keeps for reuse; a stop beyond it drops the state.
    "POOL_SIZE": 8,
    # On reset, a used arena span at least this large is handed back to the
    # kernel (madvise) instead of zeroed page by page, freeing its memory, once the
    # pool's stopped states keep POOL_KEEP_ARENA_BYTES of such spans in all.
    "RESET_RELEASE_BYTES": 1 << 20,
    # Arena bytes of large spans (see RESET_RELEASE_BYTES) the pool's stopped states keep in
    # memory, zeroed, in all: the next state's pages are written without page faults, which
    # cost 1-2.5 us per 4 KiB here (a replay of 4 MiB of pages spent a fifth of its time on them).
    "POOL_KEEP_ARENA_BYTES": 1 << 26,
    # apply_batch spreads the byte writes of a batch with at least this many
    # deltas over numba's threads (page by page; logging stays in batch order).
    # High by default: on a 2-core machine the grouping sort and thread start
    # cost more than they save (200k deltas: 129 ms parallel, 100 ms serial);
    # lower it where more cores are free.
    "PARALLEL_BATCH_DELTAS": 1 << 20,
    # A pooled state whose log buffer grew past this drops it on stop, so a
    # pool of idle states does not hold on to large buffers.
    "POOL_KEEP_LOG_BYTES": 1 << 24,
    # Log buffers dropped by the pool (see POOL_KEEP_LOG_BYTES) stay, up to this many bytes in
    # all, for the next log that grows: memory already touched is several times cheaper to
    # write than fresh memory, which the operating system must fault in and zero first.
    "LOG_SPARE_BYTES": 1 << 28,
    # sync="group": the longest a sealed commit waits before it is written
    # and synced (microseconds); State.flush() makes it durable at once.
    "LOG_GROUP_INTERVAL_US": 2000,
    # location="auto": pages of at least this many bytes go to the device. 0 means the
    # threshold calibrated for this device (python -m mmsb calibrate), else 1 MiB.
    "GPU_THRESHOLD_BYTES": 0,
    # First size of a state's device arena; it doubles when full (a device_view taken
    # before a growth then no longer shows the page). Under numba's CUDA simulator at
    # most 64 KiB (its device memory is host memory).
    "DEVICE_ARENA_INITIAL_BYTES": 1 << 26,
    # Most pages a replay, restore or recovery builds (32 B of page table each, so 512 MiB at
    # the default): a log of a few hundred bytes can ask for any number of pages, and refusing
    # one that asks for more beats the OOM killer. Raise it for states that really hold more.
    "REPLAY_MAX_PAGES": 1 << 24,
    # A shared state (mmsb.start(shared=...)): the longest its owner holds back its next call
    # while an attached process finishes a consistent read it asked quiet for (a read of more
    # bytes than can be copied in this time may not finish while the owner writes without pause).
    "BUS_HOLD_US": 2000,
}

ARENA_RESERVE_BYTES: int = _DEFAULTS["ARENA_RESERVE_BYTES"]
ARENA_CHUNK_BYTES: int = _DEFAULTS["ARENA_CHUNK_BYTES"]
TABLE_INITIAL_ROWS: int = _DEFAULTS["TABLE_INITIAL_ROWS"]
LOG_INITIAL_BYTES: int = _DEFAULTS["LOG_INITIAL_BYTES"]
POOL_SIZE: int = _DEFAULTS["POOL_SIZE"]
RESET_RELEASE_BYTES: int = _DEFAULTS["RESET_RELEASE_BYTES"]
POOL_KEEP_ARENA_BYTES: int = _DEFAULTS["POOL_KEEP_ARENA_BYTES"]
POOL_KEEP_LOG_BYTES: int = _DEFAULTS["POOL_KEEP_LOG_BYTES"]
LOG_SPARE_BYTES: int = _DEFAULTS["LOG_SPARE_BYTES"]
PARALLEL_BATCH_DELTAS: int = _DEFAULTS["PARALLEL_BATCH_DELTAS"]
LOG_GROUP_INTERVAL_US: int = _DEFAULTS["LOG_GROUP_INTERVAL_US"]
GPU_THRESHOLD_BYTES: int = _DEFAULTS["GPU_THRESHOLD_BYTES"]
DEVICE_ARENA_INITIAL_BYTES: int = _DEFAULTS["DEVICE_ARENA_INITIAL_BYTES"]
REPLAY_MAX_PAGES: int = _DEFAULTS["REPLAY_MAX_PAGES"]
BUS_HOLD_US: int = _DEFAULTS["BUS_HOLD_US"]

_MINIMUM = {
    "ARENA_RESERVE_BYTES": 1 << 20,
    "ARENA_CHUNK_BYTES": 1 << 16,
    "TABLE_INITIAL_ROWS": 1,
    "LOG_INITIAL_BYTES": 1 << 10,
    "POOL_SIZE": 0,
    "RESET_RELEASE_BYTES": 4096,
    "POOL_KEEP_ARENA_BYTES": 0,
    "POOL_KEEP_LOG_BYTES": 1 << 10,
    "LOG_SPARE_BYTES": 0,
    "PARALLEL_BATCH_DELTAS": 1,
    "LOG_GROUP_INTERVAL_US": 100,
    "GPU_THRESHOLD_BYTES": 0,
    "DEVICE_ARENA_INITIAL_BYTES": 1 << 12,
    "REPLAY_MAX_PAGES": 1,
    "BUS_HOLD_US": 10,
}


def set(**values: int) -> None:  # noqa: A001 - mirrors a settings API users know
    """Set tunables by name, e.g. ``mmsb.config.set(POOL_SIZE=2)``.

    Raises :class:`mmsb.InvalidArgumentError` for an unknown name or a value
    that is not an integer at or above the tunable's minimum; then nothing is
    changed.
    """
    from .errors import InvalidArgumentError

    for name, value in values.items():
        if name not in _DEFAULTS:
            raise InvalidArgumentError(f"unknown mmsb.config name {name!r}; known: {sorted(_DEFAULTS)}")
        if isinstance(value, bool) or not isinstance(value, int) or value < _MINIMUM[name]:
            raise InvalidArgumentError(
                f"mmsb.config.{name} must be an int >= {_MINIMUM[name]}, got {value!r}"
            )
    globals().update(values)


def reset() -> None:
    """Put every tunable back to its default."""
    globals().update(_DEFAULTS)
