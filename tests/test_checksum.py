"""mmsb's njit CRC32C kernels (tables; the crc32 instruction where this machine has it) against
the crc32c package (a C implementation, Intel's SSE4.2 path)."""

import pathlib
import platform

import crc32c
import hypothesis.strategies as hs
import numpy as np
import pytest
from hypothesis import given, settings

from mmsb.kernels import checksum
from mmsb.kernels.checksum import crc32c as njit_crc32c

KERNELS = [checksum.crc32c_tables] + ([checksum.crc32c_hw] if checksum.HARDWARE else [])


def test_the_instruction_is_used_where_the_processor_has_it():
    cpuinfo = pathlib.Path("/proc/cpuinfo")
    if platform.machine() in ("x86_64", "AMD64") and cpuinfo.exists():
        assert checksum.HARDWARE == (" sse4_2" in cpuinfo.read_text())
    assert njit_crc32c is (checksum.crc32c_hw if checksum.HARDWARE else checksum.crc32c_tables)


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.__name__)
@settings(deadline=None)  # the first example compiles the kernel
@given(data=hs.binary(max_size=300), head=hs.integers(0, 9), cut=hs.integers(0, 300))
def test_matches_the_reference_on_any_slice_and_when_continued(kernel, data, head, cut):
    arr = np.frombuffer(b"\xa5" * head + data, np.uint8)
    assert kernel(arr, head, arr.size) == crc32c.crc32c(data)
    cut = min(cut, len(data))
    first = kernel(arr, head, head + cut)
    assert kernel(arr, head + cut, arr.size, first) == crc32c.crc32c(data)


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.__name__)
def test_known_answer(kernel):
    # the check value of CRC-32C (RFC 3720, "123456789")
    assert kernel(np.frombuffer(b"123456789", np.uint8), 0, 9) == 0xE3069283


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.__name__)
@settings(deadline=None, max_examples=60)
@given(blocks=hs.integers(0, 4), lanes=hs.integers(0, 12), rest=hs.integers(0, 600), head=hs.integers(0, 9),
       seed=hs.integers(0, 2**32 - 1), cut=hs.integers(0, 60000))
def test_long_runs_match_the_reference(kernel, blocks, lanes, rest, head, seed, cut):
    """Lengths around the three-lane blocks of the instruction path (3 x 4096 and 3 x 256 bytes),
    with a byte run before them that is not 8-aligned, and continued from any cut."""
    n = blocks * 3 * 4096 + lanes * 256 + rest
    data = np.random.default_rng(seed).integers(0, 256, head + n, dtype=np.uint8)
    assert kernel(data, head, data.size) == crc32c.crc32c(data[head:].tobytes())
    cut = head + min(cut, n)
    assert kernel(data, cut, data.size, kernel(data, head, cut)) == crc32c.crc32c(data[head:].tobytes())
