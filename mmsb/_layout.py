"""Binary layouts shared by the Python API and the njit kernels.

Plain integer constants, importable without numba, frozen into kernels at
compile time. Changing one changes the in-memory log format: see
``docs/FORMAT.md``.
"""

# The page table is one uint64 array of shape (TABLE_ROWS, capacity): a struct
# of arrays, one contiguous row per field, so a kernel gets the whole table as
# a single argument (each array argument costs ~45 ns at the call boundary).
T_OFFSET = 0  # byte offset of the page's slot in the host arena
T_SIZE = 1  # page size in bytes, 1 .. MAX_PAGE_SIZE
T_EPOCH = 2  # deltas applied to the page so far
T_META = 3  # generation (bits 0-31) | location (bits 32-39) | flags (bits 40-47)
TABLE_ROWS = 4

META_GEN_MASK = 0xFFFFFFFF
META_LOC_SHIFT = 32
META_FLAG_SHIFT = 40
FLAG_LIVE = 1
# a derived page whose binding refuses direct writes: the fast commit paths leave it to Python,
# which refuses (never stored in a checkpoint: the binding sets it again)
FLAG_GUARDED = 2

LOC_CPU = 0
LOC_GPU = 1
LOCATION_NAMES = ("cpu", "gpu")

# A page id is its table slot, tagged with the slot's generation in the high
# bits, so an id of a deleted page never names a later page in the same slot.
ID_SLOT_BITS = 32
ID_SLOT_MASK = (1 << ID_SLOT_BITS) - 1
MAX_GENERATION = (1 << 31) - 1  # keeps ids positive in int64
# A generation is the tag of the state's history (bits GEN_TAG_SHIFT-30) over the count of the
# slot's reuses (bits 0 .. GEN_TAG_SHIFT-1): states alive at once hold different tags, so an id
# of one is refused by another; states of one history (a replay, a restore) share theirs.
GEN_TAG_SHIFT = 19
GEN_REUSE_MASK = (1 << GEN_TAG_SHIFT) - 1
MAX_TAG = MAX_GENERATION >> GEN_TAG_SHIFT
ID_TAG_MASK = MAX_TAG << (GEN_TAG_SHIFT + ID_SLOT_BITS)  # an id's tag bits (51-62)

# 3 GiB: a dense delta record of a page (header, page-size payload and bitmask) must fit the
# record header's 32-bit length
MAX_PAGE_SIZE = 3 << 30
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
# a sparse delta's record (5 bytes an entry) must fit the same 32-bit length
MAX_SPARSE_ENTRIES = ((1 << 32) - 1 - REC_HEADER - 8) // 5
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
# what a page carries beyond its bytes (dtype and shape, name, metadata): w2 page id, w3 the count
# of pages it covers (those the create record before it made, when more than one); its JSON
# follows as UTF-8 (length in w0 bits 48-63)
REC_INFO = 7
# a page resized: w2 page id, w3 its new size, w4 its old size (it keeps the first bytes of both;
# its epoch moves by one, it takes no LSN)
REC_RESIZE = 8
REC_TYPES = (REC_DELTA, REC_CREATE, REC_DELETE, REC_COMMIT, REC_EDGE, REC_BIND, REC_INFO, REC_RESIZE)
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

# Registers: one int64 array per state core (``_Core.regs``) holding the addresses and
# extents of the state's arrays and its scalar counters, so the commit kernels take the
# whole state as one argument. Python writes an address whenever an array is replaced
# (growth happens between kernel calls, never during one); kernels own the counters.
R_TABLE, R_TABLE_CAP = 0, 1  # page table (TABLE_ROWS x cap, uint64)
R_ARENA, R_ARENA_SIZE = 2, 3  # host arena (uint8)
R_LOG = 4  # the counters (L_*) of the state's current log buffer
R_LSN, R_DELTAS = 5, 6  # the state's last LSN and deltas applied
R_NODES, R_NODES_ROWS = 7, 8  # graph nodes (rows x N_COLS, int64)
R_EDGES, R_EDGES_ROWS = 9, 10  # graph edges (rows x E_COLS, int64)
R_NUM_EDGES = 11  # edges in the graph: a commit runs a cascade when there are any
R_BINDS, R_BINDS_ROWS = 12, 13  # bindings (rows x B_COLS, int64)
R_POOL, R_POOL_ROWS = 14, 15  # binding parents (rows x 2, int64)
R_WORK, R_WORK_ROWS = 16, 17  # cascade work rows (rows x W_COLS, int64)
R_CTL = 18  # cascade control words (C_WORDS, int64)
R_SCRATCH, R_SCRATCH_SIZE = 19, 20  # recompute scratch (uint8)
R_UNDO, R_UNDO_SIZE = 21, 22  # before-images (uint8)
R_UNDO_INDEX, R_UNDO_ROWS = 23, 24  # before-image index (rows x 4, int64)
R_FALLIBLE = 25  # bindings to user code: a commit saves before-images until its cascade is done
# out: where the written page's record starts, and the state before the commit began (a
# commit that stepped out to Python for a user recompute rolls back to it if that fails)
R_SEED_POS, R_SP_LSN, R_SP_DELTAS, R_SP_USED, R_SP_LOG_DELTAS = 27, 28, 29, 30, 31
R_NEED = 32  # out: log bytes a refused call needs
R_NEED_UNDO, R_NEED_UNDO_ROWS = 33, 34  # out: before-image bytes and entries a refused call needs
R_SEED_LSN = 35  # out: the LSN of the written page's delta (with R_SEED_POS)
# set while writes must take Python's general path (an open transaction, event subscribers)
R_SLOW = 36
# write latency: one write call in 16 (R_TICK counts them: the 1st, 17th, ...) is timed (R_T0: when
# the current one began, 0 if it is not timed) into a histogram of log2 buckets (R_LAT: int64[64]);
# counted by calls, not LSNs, since a commit's LSN step follows its cascade and would bias the sample
R_T0, R_LAT, R_TICK = 37, 38, 39
R_BUMP = 40  # out: the host arena's bump pointer after a page made by mmsb.kernels.create
# The update kernel holds the GIL (releasing and taking it back cost a tenth of a small update):
# the general path writes pages larger than this, with kernels that release it
FAST_MAX = 1 << 16
R_WORDS = 48

# A log buffer's counters (``LogBuffer.ctr``, int64): kernels append to the buffer through them
L_ADDR, L_CAP = 0, 1  # the buffer's address and size in bytes
L_USED, L_DELTAS, L_SEALED = 2, 3, 4  # bytes of records, delta records, end of the last sealed commit
L_MODE = 5  # what a commit kernel does at the end: see LOG_*
L_WORDS = 8
LOG_DROP = 0  # log=False: records are written to scratch space, dropped when it fills (NullLog)
LOG_SEAL = 1  # in memory: the kernel seals the commit (writes its commit record)
LOG_KEEP = 2  # a file: the kernel keeps the records, Python seals (and writes the file)

# What the commit kernels return besides an LSN (> 0) or 0 (nothing changed)
W_ROOM = -1  # refused before any change: the log or undo space needs R_NEED more bytes
W_RESUME = -2  # the written page is committed; the cascade waits for Python (ctl's C_STATUS says why)
W_SEAL = -3  # committed with its cascade; Python seals it (a file log, or no room for the commit record)
# refused before any change: Python's general path checks the call and does it (or raises)
W_SLOW = -4
# W_BAD - 2 * i: delta i names no live page; W_BAD - 2 * i - 1: delta i has an offset outside its page
W_BAD = -16

# a log-file frame's payload: whole commits up to this many bytes (a larger commit alone), so a
# torn tail costs at most one frame
FRAME_BYTES = 1 << 16
FRAME_HEADER = 32  # bytes of a frame's header (docs/FORMAT.md)

# -- the log-file writer (mmsb.kernels.writer) ----------------------------------------
# the writer's control words (int64): set by Python before the thread starts
F_FD, F_WAKE, F_SEED, F_INTERVAL_NS, F_SYNC = 0, 1, 2, 3, 4
# requests (Python sets them, then writes a byte to the wake pipe)
F_STOP, F_PAUSE = 5, 6
# the writer sleeps on its wake pipe (set and read as atomics, see the module docstring)
F_IDLE = 7
# progress: payload bytes written, the file's end and frames in it; syncs; the same three at
# the last good sync
F_FLUSHED, F_FILE_END, F_FRAMES, F_SYNCS = 8, 9, 10, 11
F_SYNCED_FLUSHED, F_SYNCED_END, F_SYNCED_FRAMES = 12, 13, 14
F_ERRNO = 15  # the errno of the failed write or sync
F_WAKE_W = 16  # the wake pipe's write end (Python's: seals and requests write to it)
F_SEEN = 17  # the address of the log buffer the writer reads now
# flushes asked for (a count Python moves) and done (the writer's count); the pipe the writer
# writes a byte to when it has done one
F_FLUSH_ASKED, F_FLUSH_DONE, F_ACK_W, F_ACK_R = 18, 19, 20, 21
F_WORDS = 24

# why write_rounds returned
WR_REQUEST, WR_ERROR, WR_DAMAGED = 0, 2, 3
# what seal_commit found
SEAL_NOTHING, SEAL_AWAKE, SEAL_ASLEEP, SEAL_ROOM = 0, 1, 2, -1

# rows of a log's index of delta records (mmsb.log.history.HistoryIndex): page id, LSN, log position
E_PAGE, E_LSN, E_OFF = 0, 1, 2
E_ROWS = 3

# -- a shared state's header segment (mmsb.bus; docs/BUS.md) --------------------------
# int64 words; the owner writes everything but H_WAITERS, H_HOLD and the mailbox words marked
# below, which attached processes move with atomics
H_MAGIC = 0x3153554242534D4D  # "MMSBBUS1" read as a little-endian int64
H_VERSION_1 = 1
H_MAGIC_W, H_VERSION, H_PID, H_READY = 0, 1, 2, 3
H_SEQ = 4  # seqlock: odd while the owner is inside a call that may change pages
H_LSN, H_DELTAS = 5, 6  # the state's counters, as of the last call that ended
H_CLOSED = 7  # 1 once the owner closed the state
H_WAKE = 8  # moves with every call that moved the LSN; its low 32 bits are the readers' futex word
H_WAITERS = 9  # processes asleep on H_WAKE (attached processes add and take away)
H_HOLD = 10  # the pid of a reader asking for a quiet moment for a long consistent read, or 0
H_TABLE_GEN, H_TABLE_CAP = 11, 12  # the page table's segment ("<name>.t<gen>") and its rows
H_NCHUNKS = 13  # arena chunks ("<name>.a<k>"), described at H_CHUNKS
H_DOORBELL = 14  # moves with every submitted request; the owner's futex word
H_TAG = 15  # the tag of the state's page ids
H_HOLDS_BROKEN = 16  # quiet moments the owner ended because a reader held it too long
H_MAILBOXES = 17  # mailboxes in use
H_ROBUST_OK = 18  # 1: the owner holds the robust mutex at H_ROBUST (else readers test its pid)
H_ROBUST = 32  # a process-shared robust pthread mutex (64 bytes), held by the owner for life:
# when its thread ends without unlocking it, the kernel sets OWNER_DIED in its first 32-bit word
H_CHUNKS = 64  # (owner offset of the first byte, of the end) per chunk
H_MAX_CHUNKS = 96
H_MB = 256  # the mailboxes: H_MB_WORDS words each
H_MB_COUNT = 64
H_MB_WORDS = 8
# mailbox words: the submitter's token (its segment "<name>.m<token>", 0: free), the request's
# number (moved by the submitter once the request is whole), the last number done, the result
# and the bytes of the request
MB_TOKEN, MB_REQ, MB_DONE, MB_STATUS, MB_NBYTES, MB_RESULT_AT, MB_PID = 0, 1, 2, 3, 4, 5, 6
H_ERRORS = 1024  # byte offset / 8 of the error texts: H_ERROR_BYTES per mailbox
H_ERROR_BYTES = 512
H_BYTES = 8 * H_ERRORS + H_MB_COUNT * H_ERROR_BYTES
# read_pages' arguments (int64 words) and its refusals
RP_HEADER, RP_TABLE, RP_CAP, RP_GEN, RP_CHUNKS, RP_NCHUNKS, RP_IDS, RP_COUNT, RP_SIZES, RP_EPOCHS, RP_OUT = range(11)
RP_WORDS = 12
RP_BUSY, RP_REMAP, RP_RESIZED = -1, -2, -3
RP_MISSING = -16  # RP_MISSING - i: id i names no live page
