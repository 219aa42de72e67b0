"""Realistic text: words drawn by a seeded RNG from a fixed vocabulary.

The vocabulary is the distinct lowercase words of CPython's ``pydoc_data.topics`` (a few
thousand English words, nothing to download). Text made of them compresses like prose
(about 2.8x to 3x with zstd level 3), never like repeated characters.
"""

from __future__ import annotations

import random
import re
import zlib
from functools import cache

_WORD = re.compile(r"\b[a-z]{2,14}\b")


@cache
def vocabulary() -> tuple[str, ...]:
    """The distinct lowercase words (2 to 14 letters) of ``pydoc_data.topics``, sorted."""
    from pydoc_data.topics import topics

    words: set[str] = set()
    for body in topics.values():
        words.update(_WORD.findall(body))
    return tuple(sorted(words))


def text(rng: random.Random, n_chars: int) -> str:
    """Exactly ``n_chars`` characters of space-separated words chosen by ``rng``."""
    vocab = vocabulary()
    parts: list[str] = []
    length = -1
    while length < n_chars:
        word = rng.choice(vocab)
        parts.append(word)
        length += len(word) + 1
    out = " ".join(parts)[:n_chars]
    return out[:-1] + "s" if out.endswith(" ") else out


def compression_ratio(seed: int = 0, n_chars: int = 200_000) -> dict[str, float | str]:
    """How well such text compresses: zstd level 3 when available, and zlib level 6."""
    sample = text(random.Random(seed), n_chars).encode()
    ratios: dict[str, float | str] = {
        "vocabulary_words": len(vocabulary()),
        "zlib_6": round(len(sample) / len(zlib.compress(sample, 6)), 3),
    }
    try:
        import zstandard
    except ImportError:
        ratios["zstd_3"] = "zstandard not installed"
    else:
        compressed = zstandard.ZstdCompressor(level=3).compress(sample)
        ratios["zstd_3"] = round(len(sample) / len(compressed), 3)
    return ratios
