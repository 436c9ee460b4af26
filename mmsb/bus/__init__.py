"""A state shared across processes: ``mmsb.start(shared=name)`` and :func:`mmsb.attach`.

The owner's arena, page table and counters live in named shared-memory segments
(:mod:`mmsb.bus.segment`, :mod:`mmsb.bus.owner`); attached processes read pages
out of them consistently, sleep until commits and submit writes that the owner
applies (:mod:`mmsb.bus.attached`, :mod:`mmsb.bus.mailbox`). docs/BUS.md has the
rules and the layout.
"""

from .attached import Attached, Snapshot, Subscription, attach

__all__ = ["attach", "Attached", "Snapshot", "Subscription"]
