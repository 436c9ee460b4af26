"""Device pages in a :class:`mmsb.State`: placing them, writing them, the views of them.

A mixin of State (like :mod:`mmsb.commit`, whose general paths call into it
for pages on the device): the device arena made with the first device page,
``device_view`` and ``device_write`` for your own kernels, and the device
halves of ``apply_delta`` and ``apply_batch``. What crosses the bus, and when,
is in :mod:`mmsb.gpu`. Nothing here imports ``numba.cuda`` (or numba) before a
device page exists: ``import mmsb`` stays free of both.
"""

from __future__ import annotations

import contextlib
from time import perf_counter_ns as _ns
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from .._layout import ID_SLOT_BITS, ID_SLOT_MASK, REC_HEADER, T_EPOCH, T_META, T_SIZE
from ..arena import GPU_BIT as _GPU_BIT
from ..arena import KEY_MASK as _KEY_MASK
from ..arena import LIVE_BIT as _LIVE_BIT
from ..commit import _sampled, load_kernels
from ..errors import InvalidArgumentError, InvalidDeltaError
from ..validate import _closed
from . import device as _gpu

if TYPE_CHECKING:
    from ..delta import DeltaBatch
    from ..state import _Core

__all__ = ["DeviceWrites"]


class DeviceWrites:
    """The device pages of a :class:`mmsb.State` (a mixin)."""

    __slots__ = ()

    def _device(self, c: _Core) -> Any:
        """The core's device arena, made on first use."""
        if c.dev is None:
            from .arena import DeviceArena  # imports numba.cuda

            c.dev = c.prop.dev = DeviceArena()
        return c.dev

    def _place_pending(self) -> None:
        """After a replay or restore: pages made on the device go back there, one copy each
        (they stay on the host when this state may not use a device, or none is usable)."""
        pending, self._pending_gpu = self._pending_gpu, []
        if not pending or self.gpu is False or not _gpu.available():
            return
        _k = load_kernels()  # loaded with the state: a lookup
        c = self._core()
        table = c.table
        ids = np.concatenate(pending)
        slots = ids & ID_SLOT_MASK
        meta = table.array[T_META, slots]
        keep = ((meta & np.uint64(_KEY_MASK)) == (np.uint64(_LIVE_BIT) | (ids >> ID_SLOT_BITS).astype(np.uint64)))
        slots = np.unique(slots[keep])
        dev = self._device(c)
        sizes = table.array[T_SIZE, slots]
        for size in np.unique(sizes).tolist():
            pick = slots[sizes == size]
            dev.assign(pick, dev.reserve(pick.size, int(size)))
        for slot in slots[table.array[T_EPOCH, slots] != 0].tolist():  # one copy per written page
            size, off = table.mv_size[slot], table.mv_offset[slot]
            dev.write(slot, c.arena.data[off:off + size])
            _k.zero_bytes(c.arena.data, off, size)
        table.array[T_META, slots] |= np.uint64(_GPU_BIT)
        c.prop.relocated()

    def device_view(self, page: Any) -> Any:
        """The device array (numba.cuda, uint8, zero-copy) of a device page, for your own kernels.

        Read it freely. Write to it only inside :meth:`device_write`, which
        tells mmsb what changed; other writes are invisible to epochs, the log
        and cascades, and the next mmsb write to the page may undo them. The
        array is valid until the device arena grows (when device pages are
        created): take a new one after. Raises
        :class:`mmsb.InvalidArgumentError` for a page on the CPU.
        """
        c = self._core()
        with c.lock:
            slot = self._slot(c, page)
            if not c.table.mv_meta[slot] & _GPU_BIT:
                raise InvalidArgumentError(f"page {self._id_of(slot)} lives on the CPU: use view()")
            c.dev.dirty = True  # stray writes through the view must not outlive the page
            return c.dev.view(slot, c.table.mv_size[slot])

    @contextlib.contextmanager
    def device_write(self, page: Any) -> Iterator[Any]:
        """Write a device page with your own kernels: ``with st.device_write(pg) as arr: ...``.

        ``arr`` is :meth:`device_view`'s array. On a clean exit the bytes that
        differ from those at entry are committed as one delta, exactly as
        ``update_page`` with the new bytes would (epoch, LSN, log, cascade).
        If the body raises, the page gets its
        bytes from entry back and nothing is committed. The state's lock is
        held throughout, so keep the body to device work.
        """
        _k = load_kernels()  # loaded with the state: a lookup
        c = self._core()
        with c.lock:
            if self._c is not c:
                raise _closed()
            slot = self._slot(c, page)
            if not c.table.mv_meta[slot] & _GPU_BIT:
                raise InvalidArgumentError(f"page {self._id_of(slot)} lives on the CPU: use update_page()")
            t0 = _sampled(c)
            dev, size = c.dev, c.table.mv_size[slot]
            if slot in dev.writing:
                raise InvalidArgumentError(f"device_write of page {self._id_of(slot)} inside another one")
            dev.dirty = True  # whatever the body writes, deleting or pooling the page must zero it
            arr = dev.view(slot, size)
            before = dev.cuda.device_array(size, np.uint8)
            before.copy_to_device(arr)
            dev.writing.add(slot)
            try:
                yield arr
            except BaseException:
                dev.view(slot, size).copy_to_device(before)
                raise
            finally:
                dev.writing.discard(slot)
            from . import kernels as gk

            # diff the page into a copy of its bytes at entry: bits say which bytes changed
            probe = dev.cuda.device_array(size, np.uint8)
            probe.copy_to_device(before)
            (bits_d,) = dev.stage(np.zeros((size + 7) >> 3, np.uint8))
            dev._launch(gk.diff_into, gk.grid(bits_d.size), probe, 0, dev.view(slot, size), 0, bits_d, size)
            bits = dev.fetch(bits_d)
            if not bits.any():
                return
            data, flags = dev.changed_bytes(dev.view(slot, size), bits)
            log = self._log
            if self._txn is not None or (c.prop.graph.num_edges and c.prop.fallible):
                dev.saved.setdefault(slot, before)  # a rollback restores the bytes at entry
            sp = self._begin_write(c, slot) if c.prop.graph.num_edges or self._txn is not None else None
            buf = log.reserve(REC_HEADER + 8 + size + ((size + 7) >> 3))
            pos = log.used
            end = _k.update_known(c.table.array, data ^ flags, slot, data, buf, pos, c.lsn + 1)
            if self._committed(c, log, sp, slot, pos, end) is not None and t0 and self._txn is None:
                c.lat[(_ns() - t0).bit_length()] += 1

    def _apply_on_device(self, c: _Core, log: Any, slot: int, kind: str, a: np.ndarray, b: np.ndarray,
                         pid: int) -> int:
        """``apply_delta`` to a device page: one launch applies it, then the host logs it; the log end."""
        _k = load_kernels()  # loaded with the state: a lookup
        size = c.table.mv_size[slot]
        pos = log.used
        if kind == "sparse":
            bad = np.flatnonzero((a < 0) | (a >= size))
            if bad.size:
                raise InvalidDeltaError(f"index {int(a[bad[0]])} is out of range for page {pid} of {size} bytes")
            buf = log.reserve(REC_HEADER + 8 + 5 * a.size)
            if a.size and c.dev.apply_sparse(np.array([slot], np.int64), np.array([0, a.size], np.int64), a, b)[0]:
                return _k.log_sparse(c.table.array, slot, a, b, buf, pos, c.lsn + 1)
            return pos
        if a.size != size:
            raise InvalidDeltaError(f"dense delta has {a.size} mask entries, page {pid} has {size} bytes")
        buf = log.reserve(REC_HEADER + 8 + size + ((size + 7) >> 3))
        if c.dev.apply_dense(slot, a, b):
            return _k.log_dense(c.table.array, slot, a, b, buf, pos, c.lsn + 1)
        return pos

    def _batch_on_device(self, c: _Core, batch: DeltaBatch, slots: np.ndarray, gpu: np.ndarray, buf: np.ndarray,
                         pos: int, out: np.ndarray) -> tuple[int, int]:
        """``apply_batch`` with deltas to device pages: those in one launch, the rest on the host,
        then every delta logged in batch order; (log end, last LSN), or (-1 - i, lsn) for a bad delta i."""
        _k = load_kernels()  # loaded with the state: a lookup
        a = c.table.array
        starts, indices, values = batch.starts, batch.indices, batch.values
        bad = _k.check_sparse_batch(a, slots, starts, indices)
        if bad >= 0:
            return -1 - bad, c.lsn
        changed = np.zeros(slots.size, np.uint8)
        sel = np.flatnonzero(gpu)
        lens = (starts[1:] - starts[:-1])[sel]
        sub_starts = np.zeros(sel.size + 1, np.int64)
        np.cumsum(lens, out=sub_starts[1:])
        entries = np.repeat(starts[sel] - sub_starts[:-1], lens) + np.arange(int(sub_starts[-1]))
        changed[sel] = c.dev.apply_sparse(slots[sel], sub_starts, indices[entries], values[entries])
        if sel.size < slots.size:
            _k.apply_marked(a, c.arena.data, slots, starts, indices, values, (~gpu).view(np.uint8), changed)
        out[:] = changed
        return _k.log_grouped(a, slots, starts, indices, values, buf, pos, c.lsn, out)
