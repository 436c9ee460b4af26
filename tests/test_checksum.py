"""mmsb's njit CRC32C against the crc32c package (a C implementation, Intel's SSE4.2 path)."""

import crc32c
import hypothesis.strategies as hs
import numpy as np
from hypothesis import given, settings

from mmsb.kernels.checksum import crc32c as njit_crc32c


@settings(deadline=None)  # the first example compiles the kernel
@given(data=hs.binary(max_size=300), head=hs.integers(0, 9), cut=hs.integers(0, 300))
def test_matches_the_reference_on_any_slice_and_when_continued(data, head, cut):
    arr = np.frombuffer(b"\xa5" * head + data, np.uint8)
    assert njit_crc32c(arr, head, arr.size) == crc32c.crc32c(data)
    cut = min(cut, len(data))
    first = njit_crc32c(arr, head, head + cut)
    assert njit_crc32c(arr, head + cut, arr.size, first) == crc32c.crc32c(data)


def test_known_answer():
    # the check value of CRC-32C (RFC 3720, "123456789")
    assert njit_crc32c(np.frombuffer(b"123456789", np.uint8), 0, 9) == 0xE3069283
