"""Reference implementations the tests compare the runtime with, written independently of
firmware_py (so that a bug there cannot hide in both)."""
import numpy as np


def ref_pack(neg):
    """bool [..., c] (True = -1) -> uint32 [..., words(c)]: channel c at bit c % 32 of word
    c // 32, LSB first, tail bits 0 (the convention of bnn.h)."""
    neg = np.asarray(neg, dtype=bool)
    c = neg.shape[-1]
    words = (c + 31) // 32
    bits = np.zeros(neg.shape[:-1] + (words * 32,), dtype=np.uint64)
    bits[..., :c] = neg
    bits = bits.reshape(neg.shape[:-1] + (words, 32))
    return (bits << np.arange(32, dtype=np.uint64)).sum(axis=-1).astype(np.uint32)
