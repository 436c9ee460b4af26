"""A slow, obviously-correct reference model of one mmsb state.

Written from the contract (the State docstrings and the README), not from mmsb's code, so that
the model tests compare two independent readings of the semantics.  Plain Python only: pages are
bytearrays, the table is dicts, the log is a list of tuples.  Only valid operations are modelled;
rejected calls are covered by test_errors.py, which checks that they change nothing.
"""

SLOT_MASK = (1 << 32) - 1
# docs/FORMAT.md: an id's generation (bits 32-62) is the state's tag (its top 12 bits) over the
# slot's reuse count (its low 19 bits)
TAG_SHIFT = 32 + 19
TAG_MASK = ((1 << 12) - 1) << TAG_SHIFT


def retag(pid, tag):
    """The id ``pid`` names in a state of tag ``tag`` doing the same operations."""
    return pid & ~TAG_MASK | tag << TAG_SHIFT


class NaiveState:
    def __init__(self, tag=0):
        self.tag = tag        # the tag of the state modelled: every id carries it
        self.pages = {}       # page id -> bytearray
        self.epochs = {}      # page id -> int
        self.lsn = 0
        # (lsn, page_id, epoch, indices, values): indices/values are what the delta wrote, in
        # the order it wrote them (a sparse delta's duplicates included), as tuples of ints.
        self.log = []
        self.images = []      # (bytes before, bytes after) of the page, one per log record
        # Structural history, so a replay can rebuild the same ids: ("create", size) or
        # ("delete", id), each tagged with the LSN that was current when it happened.
        self.ops = []
        self._next_slot = 0
        self._free = []       # freed slots; the most recently freed is reused first
        self._reuses = {}     # slot -> how many times it has been handed out again

    # ---- pages ---------------------------------------------------------------------------
    def create_page(self, size):
        assert size >= 1
        if self._free:
            slot = self._free.pop()
            self._reuses[slot] += 1
        else:
            slot = self._next_slot
            self._next_slot += 1
            self._reuses[slot] = 0
        pid = slot | (self._reuses[slot] << 32) | self.tag << TAG_SHIFT
        self.pages[pid] = bytearray(size)
        self.epochs[pid] = 0
        self.ops.append((self.lsn, "create", size))
        return pid

    def create_pages(self, count, size):
        return [self.create_page(size) for _ in range(count)]

    def delete_page(self, pid):
        del self.pages[pid]
        del self.epochs[pid]
        self._free.append(pid & SLOT_MASK)
        self.ops.append((self.lsn, "delete", pid))

    def page_ids(self):
        return sorted(self.pages)

    # ---- deltas --------------------------------------------------------------------------
    def apply_sparse(self, pid, indices, values):
        """Write values at indices in order (last wins).  Returns the log record or None."""
        page = self.pages[pid]
        indices = [int(i) for i in indices]
        values = [int(v) for v in values]
        assert len(indices) == len(values)
        after = bytearray(page)
        for i, v in zip(indices, values):
            assert 0 <= i < len(page) and 0 <= v < 256
            after[i] = v
        # The no-op rule is judged against the page as it is now, not as it was when a batch
        # was built, so an earlier delta in the same batch can make a later one a no-op.
        if after == page:
            return None
        self.images.append((bytes(page), bytes(after)))
        page[:] = after
        self.epochs[pid] += 1
        self.lsn += 1
        rec = (self.lsn, pid, self.epochs[pid], tuple(indices), tuple(values))
        self.log.append(rec)
        return rec

    def apply_dense(self, pid, mask, payload):
        assert len(mask) == len(payload) == len(self.pages[pid])
        idx = [i for i, m in enumerate(mask) if m]
        return self.apply_sparse(pid, idx, [payload[i] for i in idx])

    def update_page(self, pid, data):
        """A full-page write is diffed first: its delta holds only the bytes that differ."""
        page = self.pages[pid]
        data = bytes(data)
        assert len(data) == len(page)
        idx = [i for i in range(len(page)) if page[i] != data[i]]
        return self.apply_sparse(pid, idx, [data[i] for i in idx])

    def apply_batch(self, deltas):
        """deltas: list of (pid, indices, values).  One LSN per delta, 0 where it was dropped."""
        for pid, indices, values in deltas:
            assert pid in self.pages and len(indices) == len(values)
            assert all(0 <= int(i) < len(self.pages[pid]) for i in indices)
        out = []
        for pid, indices, values in deltas:
            rec = self.apply_sparse(pid, indices, values)
            out.append(0 if rec is None else rec[0])
        return out


def last_writes(indices, values):
    """The effect of a delta: offset -> final byte, duplicates resolved last-wins."""
    return {int(i): int(v) for i, v in zip(indices, values)}


def check_delta_matches(rec, before, after, indices, values):
    """Does a delta reported by mmsb (indices, values) agree with the model's record `rec`?

    The contract leaves open whether a sparse/dense delta is logged as given (masked bytes,
    duplicates and all) or trimmed to the bytes it changed.  Either is a faithful record, so we
    accept anything between the two, and nothing else:
      - every byte that changed is in it, with its new value;
      - it names only offsets the caller wrote;
      - applied in order to the page as it was, it gives the page as it is.
    For update_page the caller "wrote" only the differing bytes, so this pins it exactly.
    Returns a message describing the first disagreement, or None.
    """
    indices = [int(i) for i in indices]
    values = [int(v) for v in values]
    if len(indices) != len(values):
        return f"indices/values lengths differ: {len(indices)} vs {len(values)}"
    written = set(last_writes(rec[3], rec[4]))
    got = last_writes(indices, values)
    changed = {i for i in range(len(before)) if before[i] != after[i]}
    if not changed <= set(got):
        return f"changed offsets missing from delta: {sorted(changed - set(got))[:10]}"
    if not set(got) <= written:
        return f"delta names offsets never written: {sorted(set(got) - written)[:10]}"
    replayed = bytearray(before)
    for i, v in zip(indices, values):
        replayed[i] = v
    if replayed != after:
        return "applying the reported delta to the old bytes does not give the new bytes"
    return None
