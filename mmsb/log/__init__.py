"""The transaction log of a state.

A log receives records in the layout of ``mmsb._layout`` (and
``docs/FORMAT.md``). Kernels write delta records straight into the buffer the
log hands out; the log then decides what "committed" means. Every log kind
offers the same calls, so the write path never changes with the kind:

``reserve(nbytes)``
    make room for ``nbytes`` more bytes and return the buffer to write into
    at offset ``used``;
``commit(end, deltas)``
    the bytes up to ``end`` hold ``deltas`` new whole delta records (plus any
    page records written since the last commit): they are now part of the log;
``append_create`` / ``append_delete``
    page records, written by the log itself;
``rollback(used, deltas)``
    forget the records after ``used`` (a commit or transaction that failed);
``detach()``
    the state is done with the log: hand the buffer back for reuse.
"""

from .memory import MemoryLog, NullLog

__all__ = ["MemoryLog", "NullLog"]
