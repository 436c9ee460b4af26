"""Binary layouts shared by the Python API and the njit kernels.

Plain integer constants, importable without numba, frozen into kernels at
compile time. Changing one changes the in-memory log format: see
``docs/FORMAT.md``.
"""

# The page table is one uint64 array of shape (TABLE_ROWS, capacity): a struct
# of arrays, one contiguous row per field, so a kernel gets the whole table as
# a single argument (each array argument costs ~45 ns at the call boundary).
T_OFFSET = 0  # byte offset of the page's slot in the host arena
T_SIZE = 1  # page size in bytes, 1 .. 2**32
T_EPOCH = 2  # deltas applied to the page so far
T_META = 3  # generation (bits 0-31) | location (bits 32-39) | flags (bits 40-47)
TABLE_ROWS = 4

META_GEN_MASK = 0xFFFFFFFF
META_LOC_SHIFT = 32
META_FLAG_SHIFT = 40
FLAG_LIVE = 1

LOC_CPU = 0
LOC_GPU = 1
LOCATION_NAMES = ("cpu", "gpu")

# A page id is its table slot, tagged with the slot's generation in the high
# bits, so an id of a deleted page never names a later page in the same slot.
ID_SLOT_BITS = 32
ID_SLOT_MASK = (1 << ID_SLOT_BITS) - 1
MAX_GENERATION = (1 << 31) - 1  # keeps ids positive in int64

MAX_PAGE_SIZE = 1 << 32
MIN_SLOT = 8  # smallest arena slot; slots are powers of two and 8-aligned

# Log records: 8-byte aligned, a 48-byte header of six little-endian u64 words
#   w0 = record length in bytes | type << 32 | encoding << 40
#   w1 = LSN (delta) or the state's LSN when written (create, delete)
#   w2 = page id (delta, delete) or first page id (create)
#   w3 = page epoch after the delta (delta) or page size (create)
#   w4 = entry count (sparse), page size (dense) or page count (create)
#   w5 = page size (delta), location (create), 0 (delete)
# then, for a sparse delta, u32 indices[count] and u8 values[count]; for a
# dense delta, a little-endian bitmask of ceil(size / 8) bytes and the payload
# bytes of the masked positions, in order; zero padding to 8 bytes.
REC_HEADER = 48
REC_DELTA = 1
REC_CREATE = 2
REC_DELETE = 3
# the end of a commit: w1 = the state's LSN after it, w2 = wall-clock time (ns since the epoch)
REC_COMMIT = 4
# an edge added (w5 = 1) or removed (w5 = 0): w2 parent id, w3 child id, w4 kind code; a
# user-named kind's name follows as UTF-8 (its length in w0 bits 48-63), zero-padded
REC_EDGE = 5
# a binding: w2 child id, w3 op code, w4 dtype code, w5 parent count k; then k u64 parent ids,
# k f64 weights and, for a user function, its registered name (length in w0 bits 48-63)
REC_BIND = 6
REC_TYPES = (REC_DELTA, REC_CREATE, REC_DELETE, REC_COMMIT, REC_EDGE, REC_BIND)
ENC_SPARSE = 0
ENC_DENSE = 1

# Recompute ops (the plan's per-page op code; 0: not bound)
OP_PASSTHROUGH = 1
OP_SUM = 2
OP_MIN = 3
OP_MAX = 4
OP_AND = 5
OP_OR = 6
OP_XOR = 7
OP_MINPLUS = 8
OP_ORAND = 9
OP_PYTHON = 100  # a Python callable: the cascade kernel steps out and Python recomputes
OP_NJIT = 101  # an @njit function, called from inside the cascade kernel
# a binding with a page on the device (child or parent): the kernel steps out and the gpu layer
# recomputes it (the binding keeps its own op; this code is only what the kernel sees)
OP_DEVICE = 102
OPS = {
    "passthrough": OP_PASSTHROUGH, "sum": OP_SUM, "min": OP_MIN, "max": OP_MAX,
    "and": OP_AND, "or": OP_OR, "xor": OP_XOR, "minplus": OP_MINPLUS, "orand": OP_ORAND,
}
# dtypes a built-in op can view pages as, by code
DTYPE_NAMES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float32", "float64")
