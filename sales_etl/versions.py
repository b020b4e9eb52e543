"""Which versions of a load are the only one of their ``sale_id``: pure functions on hashes.

A load picks per sale_id the newest of its versions on the server (:mod:`sales_etl.warehouse`).
On a day the warehouse holds nothing of yet, ~90% of the sale ids of a realistic day come
once: such a version wins without being judged. Finding them takes 4 bytes a version, not a
copy of the ids: each id is hashed to 32 bits and a version is alone when no other version of
the load has its hash. The same id always hashes the same, so a repeated id is never taken
for a lone one; two ids whose hashes collide are judged like repeated ones, which is only
slower, never wrong.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

# FNV-1's 32-bit prime: odd, so two ids of one length differing in one word never collide.
_MULTIPLIER = 0x01000193
_NONE = np.zeros(0, dtype=np.uint32)
# The bytes of a word that belong to the string, by how many do (1-4; little-endian).
_WORD_MASKS = np.array([0, 0xFF, 0xFFFF, 0xFFFFFF, 0xFFFFFFFF], dtype=np.uint32)


def string_hashes(strings: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A 32-bit hash of each string (``uint32``), the same for the same text; null is 0.

    A polynomial of the UTF-8 bytes read as 4-byte words, computed with numpy over Arrow's
    buffers: no Python object per string.
    """
    if isinstance(strings, pa.ChunkedArray):
        parts = [_array_hashes(chunk) for chunk in strings.chunks]
        return np.concatenate([_NONE, *parts])
    return _array_hashes(strings)


def repeated_hashes(hashes: Sequence[np.ndarray], slices: int = 8) -> np.ndarray:
    """The hash values that occur more than once in the arrays ``hashes``, sorted, each once.

    Sorted one slice of the hash range at a time: beside the hashes themselves, memory holds
    one ``slices``-th of them, not a joined and a sorted copy of all (a 5M-record day: 21 MB
    of hashes and ~3 MB more, instead of ~63 MB in all).
    """
    bits = (slices - 1).bit_length()  # the slice is a hash's top bits
    found = []
    for part in range(1 << bits):
        chosen = np.concatenate(
            [_NONE, *(h[(h >> (32 - bits)) == part] if bits else h for h in hashes)]
        )
        chosen.sort()
        found.append(np.unique(chosen[1:][chosen[1:] == chosen[:-1]]))
    return np.concatenate(found)


def is_among(hashes: np.ndarray, ordered: np.ndarray) -> np.ndarray:
    """Whether each of ``hashes`` is one of ``ordered`` (sorted, as :func:`repeated_hashes`
    returns them): a binary search, no copy of either."""
    if len(ordered) == 0:
        return np.zeros(len(hashes), dtype=bool)
    at = np.minimum(np.searchsorted(ordered, hashes), len(ordered) - 1)
    found: np.ndarray = ordered[at] == hashes
    return found


def _array_hashes(array: pa.Array) -> np.ndarray:
    if pa.types.is_large_string(array.type):
        array = array.cast(pa.string())
    if not pa.types.is_string(array.type):
        raise TypeError(f"string_hashes takes strings, not {array.type}")
    count = len(array)
    hashes = np.zeros(count, dtype=np.uint32)
    if count == 0:
        return hashes
    _, offset_buffer, data_buffer = array.buffers()
    offsets = np.frombuffer(offset_buffer, dtype=np.int32)[array.offset : array.offset + count + 1]
    lengths = np.diff(offsets)
    if data_buffer is not None and lengths.any():
        # The strings' bytes, then three zero bytes: a 4-byte word can be read at any of them.
        data = np.frombuffer(data_buffer, dtype=np.uint8)[offsets[0] : offsets[-1]]
        padded = np.concatenate([data, np.zeros(3, dtype=np.uint8)])
        words = np.ndarray((len(data),), dtype="<u4", buffer=padded, strides=(1,))
        starts = offsets[:-1] - offsets[0]
        # Horner's rule a 4-byte word at a time, over the strings that long: the temporaries
        # are a few bytes a string, never a few a byte (those outgrew the heap's reuse). A
        # string's last word keeps only its own bytes.
        word_counts = (lengths + 3) // 4
        longest_first = np.argsort(-word_counts, kind="stable")
        longer_than = np.searchsorted(
            -word_counts[longest_first], -np.arange(word_counts.max()), "left"
        )
        for position, strings in enumerate(longer_than):
            which = slice(None) if strings == count else longest_first[:strings]
            word = words[starts[which] + 4 * position]
            left = np.minimum(lengths[which] - 4 * position, 4).astype(np.uint32)
            word &= _WORD_MASKS[left]
            hashes[which] = hashes[which] * np.uint32(_MULTIPLIER) + word
    hashes ^= lengths.astype(np.uint32) * np.uint32(0x9E3779B1)
    if array.null_count:
        hashes[np.asarray(array.is_null())] = 0
    return hashes
