"""A word-level tokenizer over a fixed vocabulary (procedural datasets, tests).

Pretrained encoders bring their own tokenizers (SentencePiece for T5, WordPiece for
BERT); this one serves models trained from scratch on datasets with a small closed
vocabulary such as `moving_shapes`. Id 0 is padding, 1 is an unknown word.
"""

from __future__ import annotations

import logging
import re
from typing import Iterable, Sequence

import numpy as np

PAD, UNK = 0, 1
_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
  """Lower-cased alphanumeric words of a caption."""
  return _WORD.findall(text.lower())


class WordTokenizer:
  """Maps captions to (ids int32 [L], mask int32 [L]) with a fixed maximum length L."""

  def __init__(self, vocab: Sequence[str], max_len: int = 16):
    if max_len < 1:
      raise ValueError(f"max_len must be positive, got {max_len}.")
    self.vocab = list(dict.fromkeys(vocab))  # unique, order kept
    self.max_len = max_len
    self._ids = {w: i + 2 for i, w in enumerate(self.vocab)}
    self._warned = False

  @classmethod
  def from_captions(cls, captions: Iterable[str], max_len: int = 16) -> "WordTokenizer":
    """A tokenizer whose vocabulary is every word of `captions`, sorted."""
    return cls(sorted({w for c in captions for w in words(c)}), max_len)

  @property
  def vocab_size(self) -> int:
    return len(self.vocab) + 2

  def encode(self, text: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids [max_len], mask [max_len]); an empty caption is all padding."""
    toks = [self._ids.get(w, UNK) for w in words(text)]
    if len(toks) > self.max_len:
      if not self._warned:
        logging.warning("Caption of %d words truncated to max_len=%d: %r (further "
                        "truncations are not reported)", len(toks), self.max_len, text)
        self._warned = True
      toks = toks[:self.max_len]
    ids = np.zeros(self.max_len, np.int32)
    ids[:len(toks)] = toks
    return ids, (ids != PAD).astype(np.int32)

  def decode(self, ids: Sequence[int]) -> str:
    inv = {i: w for w, i in self._ids.items()}
    return " ".join(inv.get(int(i), "<unk>") for i in ids if int(i) != PAD)
