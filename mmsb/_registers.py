"""Publishing array addresses to a state's registers (see ``mmsb._layout``, ``R_*``).

The commit kernels reach every array of a state through one int64 array of
addresses. An attribute declared as :class:`Published` writes the address and
extent of each array assigned to it into its owner's registers, so an array
that grows (is replaced) can never leave a kernel with a stale address: there
is no other way to replace it. Owners keep the arrays alive; kernels run only
between such assignments.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._layout import R_WORDS


def new_registers() -> np.ndarray:
    return np.zeros(R_WORDS, np.int64)


def address(arr: np.ndarray) -> int:
    """Where ``arr``'s first byte lives (it must stay alive while the address is used)."""
    return arr.__array_interface__["data"][0]


class Published:
    """An array attribute whose address (and size along ``axis``) goes to ``obj._regs``.

    The owner keeps the array in the slot ``<name>_`` and sets ``_regs`` (None:
    publish nowhere) before assigning; :meth:`publish` re-sends the current value.
    """

    def __init__(self, addr: int, extent: int | None = None, axis: int = 0) -> None:
        self.addr, self.extent, self.axis = addr, extent, axis
        self.store = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.store = name + "_"

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return getattr(obj, self.store)

    def __set__(self, obj: Any, arr: np.ndarray) -> None:
        setattr(obj, self.store, arr)
        regs = obj._regs
        if regs is not None:
            regs[self.addr] = address(arr)
            if self.extent is not None:
                regs[self.extent] = arr.shape[self.axis]

    def publish(self, obj: Any) -> None:
        self.__set__(obj, getattr(obj, self.store))


class PublishedInt(Published):
    """An int attribute mirrored in ``obj._regs[index]`` (a count a kernel reads)."""

    def __init__(self, index: int) -> None:
        super().__init__(index)

    def __set__(self, obj: Any, value: int) -> None:
        setattr(obj, self.store, value)
        regs = obj._regs
        if regs is not None:
            regs[self.addr] = value


def publish_all(obj: Any, regs: np.ndarray | None) -> None:
    """Attach ``obj`` to ``regs`` and send every published attribute of its class."""
    obj._regs = regs
    for klass in type(obj).__mro__:
        for attr in vars(klass).values():
            if isinstance(attr, Published):
                attr.publish(obj)
