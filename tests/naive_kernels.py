"""Slow, obviously-correct byte-level references for the kernels' encodings."""

import numpy as np


def diff_encoding(old: bytes, new: bytes):
    """(kind, changed offsets, their new bytes) that update_page must log, or None."""
    changed = [j for j in range(len(old)) if old[j] != new[j]]
    if not changed:
        return None
    sparse_cost = 5 * len(changed)
    dense_cost = (len(old) + 7) // 8 + len(changed)
    kind = "sparse" if sparse_cost < dense_cost else "dense"
    return kind, changed, [new[j] for j in changed]


def apply_sparse(page: bytearray, indices, values) -> bool:
    """Apply in order; True when the page's bytes end up different."""
    before = bytes(page)
    for i, v in zip(indices, values):
        page[int(i)] = int(v)
    return bytes(page) != before


def apply_dense(page: bytearray, mask, payload) -> bool:
    before = bytes(page)
    for j, m in enumerate(mask):
        if m:
            page[j] = int(payload[j])
    return bytes(page) != before


def as_array(b: bytes) -> np.ndarray:
    return np.frombuffer(bytes(b), dtype=np.uint8).copy()
