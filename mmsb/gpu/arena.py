"""The device arena of one state: where device pages live, and each write's one launch.

Layout mirrors the host arena: slots by size class (:class:`mmsb.arena.Slots`),
in one ``numba.cuda`` device array that doubles when full (copied on the
device), or grows to what the device has free when doubling would not fit. A device page keeps a host slot too, reserved and never touched, so
every host kernel that walks the page table stays in bounds; its bytes live
here, at ``offsets[slot]``.

Each write stages what it sends (delta, new bytes) into one pinned host buffer,
copies it in with one call, launches one kernel and copies back one small
answer (a changed flag per delta, or a bit per byte for a diff). The counters
``launches``, ``bytes_in`` and ``bytes_out`` feed ``State.stats()``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import config
from ..arena import Slots
from ..errors import CapacityError
from . import kernels as k
from .device import cuda as _cuda
from .device import simulated

_U8 = np.uint8


_STAGE, _SCRATCH = 1 << 16, 1 << 12  # first sizes of the staging buffers and the scratch array
_DEVICE_SPARE = 1 << 28  # device memory a growth leaves free (the driver, kernels' own needs)
_GRAIN = 1 << 21  # a growth that cannot double rounds to this


def _pad8(n: int) -> int:
    return (n + 7) & ~7


class DeviceArena:
    """Device pages of one state (pooled with it): allocation, staging, kernels, undo."""

    def __init__(self) -> None:
        self.cuda = _cuda()
        self.launches = self.bytes_in = self.bytes_out = 0
        self.slots = Slots(1 << 62)  # bounded by device memory, found when growing
        self.data = self._zeros(self._first_size())
        self.writing: set[int] = set()  # slots inside State.device_write
        self.offsets = np.zeros(1024, np.int64)
        self.pages = 0  # live device pages
        self.dirty = False  # written since the last reset (a reset zeroes only then)
        self.stage_h = self.cuda.pinned_array(_STAGE, _U8)
        self.stage_d = self.cuda.device_array(_STAGE, _U8)
        self.scratch = self.cuda.device_array(_SCRATCH, _U8)
        self.saved: dict[int, Any] = {}  # undo: slot -> the page's bytes before the commit

    # -- memory ---------------------------------------------------------------------

    @staticmethod
    def _first_size() -> int:
        # the simulator's device memory is host memory: start small there (growth gets exercised too)
        first = 1 << (config.DEVICE_ARENA_INITIAL_BYTES - 1).bit_length()  # dtype views need 8 | size
        return min(first, 1 << 16) if simulated() else first

    def _free_bytes(self) -> int | None:
        """Device memory free now (None under the simulator, whose memory is the host's)."""
        if simulated():
            return None
        return int(self.cuda.current_context().get_memory_info()[0])

    def _zeros(self, n: int) -> Any:
        try:
            arr = self.cuda.device_array(n, _U8)
        except Exception as exc:  # the driver's out-of-memory error has no stable type
            raise CapacityError(f"the device cannot hold a {n} B arena: {exc}") from exc
        self._memset0(arr)
        return arr

    def _memset0(self, arr: Any) -> None:
        """Zero device bytes with the driver's memset (no kernel); the simulator copies zeros."""
        if simulated():
            arr.copy_to_device(np.zeros(arr.size, _U8))
        else:
            from numba.cuda.cudadrv.driver import device_memset

            device_memset(arr, 0, arr.size)

    def _launch(self, kernel: Any, shape: tuple[int, int], *args: Any) -> None:
        if simulated():  # the simulator does integer arithmetic on NumPy scalars, which warn on the wrap
            with np.errstate(over="ignore"):
                kernel[shape](*args)
        else:
            kernel[shape](*args)
        self.launches += 1

    def _fit(self, end: int) -> None:
        if end <= self.data.size:
            return
        size = self.data.size
        while size < end:
            size *= 2
        free = self._free_bytes()
        if free is not None and size > free - _DEVICE_SPARE:
            # doubling would ask for more than the device has: grow to what is free instead (the
            # copy needs the old array and the new one at once, so that is as far as it can go)
            size = max(end, (free - _DEVICE_SPARE) & ~(_GRAIN - 1))
            if size > free:
                raise CapacityError(f"the device cannot hold a {end} B arena: {free} B of its memory are free "
                                    f"beside the {self.data.size} B arena it has")
        bigger = self._zeros(size)
        bigger[: self.data.size].copy_to_device(self.data)
        self.data = bigger

    def _slot_room(self, slot: int) -> None:
        if slot >= self.offsets.size:
            grown = np.zeros(max(slot + 1, 2 * self.offsets.size), np.int64)
            grown[: self.offsets.size] = self.offsets
            self.offsets = grown

    def make_room(self, count: int, size: int) -> None:
        """Grow the arena so that :meth:`reserve` of ``count`` pages cannot fail; raises
        CapacityError (and then nothing changed) when the device cannot hold it."""
        self._fit(self.slots.end_after(count, size))

    def reserve(self, count: int, size: int) -> np.ndarray:
        """Device offsets for ``count`` pages of ``size`` bytes (zero-filled); raises CapacityError."""
        self.make_room(count, size)
        return self.slots.allocate_many(count, size).astype(np.int64)

    def assign(self, slots: np.ndarray, offs: np.ndarray) -> None:
        """Table ``slots`` now hold the device pages at ``offs``."""
        self._slot_room(int(slots.max()))
        self.offsets[slots] = offs
        self.pages += slots.size

    def release(self, slot: int, size: int) -> None:
        """Zero a deleted page's bytes and free its slot."""
        off = int(self.offsets[slot])
        if self.dirty:
            self._memset0(self.data[off:off + size])
        self.slots.release(off, size)
        self.pages -= 1

    def reset(self) -> None:
        """Back to no pages, all bytes zero (for the pool): an arena or buffer that grew past its
        first size gives its device memory back (a stopped state holding tens of GiB kept every
        other state off the device)."""
        if self.data.size > self._first_size():
            self.data = self._zeros(self._first_size())  # the old array is freed as numba drops it
        elif self.dirty and self.slots.bump:
            self._memset0(self.data[: self.slots.bump])
        if self.stage_h.size > _STAGE:
            self.stage_h = self.cuda.pinned_array(_STAGE, _U8)
            self.stage_d = self.cuda.device_array(_STAGE, _U8)
        if self.scratch.size > _SCRATCH:
            self.scratch = self.cuda.device_array(_SCRATCH, _U8)
        self.slots.clear()
        self.pages = 0
        self.dirty = False
        self.saved.clear()
        self.launches = self.bytes_in = self.bytes_out = 0

    def view(self, slot: int, size: int) -> Any:
        off = int(self.offsets[slot])
        return self.data[off:off + size]

    # -- transfers ------------------------------------------------------------------

    def stage(self, *arrays: np.ndarray) -> list[Any]:
        """Copy host ``arrays`` to the device with one copy; their device views, same dtypes."""
        total = sum(_pad8(a.nbytes) for a in arrays)
        if total > self.stage_h.size:
            size = max(total, 2 * self.stage_h.size)
            self.stage_h = self.cuda.pinned_array(size, _U8)
            self.stage_d = self.cuda.device_array(size, _U8)
        h, at, spans = self.stage_h, 0, []
        for a in arrays:
            n = a.nbytes
            h[at:at + n] = a.reshape(-1).view(_U8)
            spans.append((at, n, a.dtype))
            at += _pad8(n)
        if at:
            self.stage_d[:at].copy_to_device(h[:at])
            self.bytes_in += at
        return [self.stage_d[p:p + n].view(dt) for p, n, dt in spans]

    def fetch(self, dev: Any) -> np.ndarray:
        out = dev.copy_to_host()
        self.bytes_out += out.nbytes
        return out

    def read(self, slot: int, size: int) -> np.ndarray:
        """A host copy of a device page."""
        return self.fetch(self.view(slot, size))

    def write(self, slot: int, data: np.ndarray) -> None:
        """Put host bytes into a device page as they are (restore, replay: no diff, no delta)."""
        self.view(slot, data.size).copy_to_device(data)
        self.bytes_in += data.nbytes
        self.dirty = True

    def changed_bytes(self, src: Any, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """New bytes on the device (``src``, the page's size) whose changed bytes are ``bits``:
        ``(data, flags)`` on the host, ``data`` right where ``flags`` is 1 (what a log record
        needs). Few changes come back gathered, one launch; many, as the whole page."""
        n = src.size
        flags = np.unpackbits(bits, count=n, bitorder="little")
        idx = np.flatnonzero(flags)
        if 16 * idx.size > n:
            return self.fetch(src), flags
        idx_d, out_d = self.stage(idx.astype(np.int64), np.zeros(idx.size, _U8))
        self._launch(k.gather, k.grid(idx.size), src, idx_d, out_d)
        data = np.zeros(n, _U8)
        data[idx] = self.fetch(out_d)
        return data, flags

    def _scratch(self, n: int) -> Any:
        if n > self.scratch.size:
            self.scratch = self.cuda.device_array(max(n, 2 * self.scratch.size), _U8)
        return self.scratch

    # -- the writes: one launch each -------------------------------------------------

    def update(self, slot: int, data: np.ndarray) -> np.ndarray:
        """``update_page``: the page takes host bytes ``data``; the bits of the bytes that changed."""
        nbits = (data.size + 7) >> 3
        src, bits = self.stage(data, np.zeros(nbits, _U8))
        self._launch(k.diff_into, k.grid(nbits), self.data, int(self.offsets[slot]), src, 0, bits, data.size)
        self.dirty = True
        return self.fetch(bits)

    def apply_dense(self, slot: int, mask: np.ndarray, payload: np.ndarray) -> bool:
        n = payload.size
        m, p, flag = self.stage(mask.view(_U8), payload, np.zeros(1, _U8))
        self._launch(k.apply_dense, k.grid(n), self.data, int(self.offsets[slot]), m, p, n, flag)
        self.dirty = True
        return bool(self.fetch(flag)[0])

    def apply_sparse(self, slots: np.ndarray, starts: np.ndarray, indices: np.ndarray,
                     values: np.ndarray) -> np.ndarray:
        """Deltas ``(slots[i], indices/values[starts[i]:starts[i+1]])``, all on device pages, in
        order; one block per page. Whether each changed its page (uint8)."""
        from ..kernels.apply import group_by_page, repeated_offsets

        n = slots.size
        order, groups = group_by_page(slots)
        offs = self.offsets[slots[order[groups[:-1]]]]
        repeated = np.empty(n, _U8)
        repeated_offsets(starts, indices, repeated)
        total = indices.size
        parts = self.stage(offs, order.astype(np.int64), groups, starts.astype(np.int64),
                           indices.astype(np.int64, copy=False), values, repeated, np.zeros(max(total, 1), _U8),
                           np.zeros(n, _U8))
        self._launch(k.apply_sparse_groups, (groups.size - 1, k.block()), self.data, *parts)
        self.dirty = True
        return self.fetch(parts[-1])

    # -- undo -------------------------------------------------------------------------

    def save(self, slot: int, size: int, image: Any = None) -> None:
        """Keep the page's bytes (or ``image``, its bytes from before) for a rollback; first save wins."""
        if slot not in self.saved:
            if image is None:
                image = self.cuda.device_array(size, _U8)
                image.copy_to_device(self.view(slot, size))
            self.saved[slot] = image

    def restore_saved(self) -> None:
        for slot, image in self.saved.items():
            self.view(slot, image.size).copy_to_device(image)
        self.saved.clear()

    def drop_saved(self) -> None:
        self.saved.clear()


__all__ = ["DeviceArena"]
