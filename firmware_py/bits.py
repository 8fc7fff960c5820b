"""The bit-packing convention of the whole project (bnn.h states it for C), in numpy: the
bottom of firmware_py -- the model format, the ops, the executor and the converter use it.

A packed tensor keeps the channels of each pixel (the last axis) in 32-bit words: channel c
in word c // 32, bit c % 32 (least significant first); bit 1 means -1 (x < 0), bit 0 means
+1 (so 0 -> +1); the bits past the last channel of the tail word are 0.
"""
import numpy as np

__all__ = ["packed_words", "pack_signs", "unpack_signs"]


def packed_words(c):
    """32-bit words holding c channels: ceil(c / 32)."""
    c = int(c)
    if c < 0:
        raise ValueError("c must be >= 0, got %d" % c)
    return (c + 31) // 32


def pack_signs(w):
    """Packs the last axis of w (any real dtype) by sign: bit = w < 0.  Returns uint32
    [..., packed_words(c)]."""
    w = np.asarray(w)
    c = w.shape[-1]
    words = packed_words(c)
    bits = np.zeros(w.shape[:-1] + (words * 32,), dtype=np.uint8)
    bits[..., :c] = w < 0
    packed = np.packbits(bits, axis=-1, bitorder="little")  # 4 bytes per word, LSB first
    return np.ascontiguousarray(packed).view("<u4").astype(np.uint32).reshape(w.shape[:-1] + (words,))


def unpack_signs(packed, c):
    """The inverse of pack_signs: uint32 [..., packed_words(c)] -> float32 +-1 [..., c]."""
    w = np.ascontiguousarray(packed, dtype="<u4")
    b = np.unpackbits(w.view(np.uint8).reshape(w.shape[:-1] + (w.shape[-1] * 4,)), axis=-1,
                      bitorder="little")[..., :c]
    return (1.0 - 2.0 * b).astype(np.float32)
