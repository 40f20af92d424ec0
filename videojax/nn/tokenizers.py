"""Tokenizers: captions -> (token ids [L], mask [L]) with one interface.

- `WordTokenizer`: a fixed word vocabulary, for models trained from scratch on
  datasets with a small closed vocabulary such as `moving_shapes`.
- `SentencePieceTokenizer`: T5's `spiece.model` (pad 0, eos 1).
- `HFTokenizer`: a Hugging Face `tokenizer.json` through the `tokenizers` library
  (BERT / MiniLM WordPiece with [CLS] ... [SEP]); no transformers, no network.

Every tokenizer pads to `max_len`; a longer caption is truncated (keeping the
closing special token) with a warning that says so. An empty caption is encoded like
any other text; the unconditional input of classifier-free guidance is a separate,
explicit choice (`videojax.nn.text`).
"""

from __future__ import annotations

import abc
import logging
import os
import re
from typing import Iterable, Sequence

import numpy as np

_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
  """Lower-cased alphanumeric words of a caption."""
  return _WORD.findall(text.lower())


class Tokenizer(abc.ABC):
  """Base: subclasses implement `_tokenize(text) -> (ids, closing_ids)`."""

  pad_id: int = 0

  def __init__(self, max_len: int):
    if max_len < 1:
      raise ValueError(f"max_len must be positive, got {max_len}.")
    self.max_len = max_len
    self._warned = False

  @abc.abstractmethod
  def _tokenize(self, text: str) -> tuple[list[int], list[int]]:
    """(body ids, closing special ids) of one text, before truncation and padding."""

  def encode(self, text: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids int32 [max_len], mask int32 [max_len]: 1 on real tokens)."""
    body, close = self._tokenize(text)
    room = self.max_len - len(close)
    if len(body) > room:
      if not self._warned:
        logging.warning("Caption of %d tokens truncated to max_len=%d: %r (further "
                        "truncations are not reported)", len(body) + len(close),
                        self.max_len, text)
        self._warned = True
      body = body[:max(room, 0)]
    toks = (body + close)[:self.max_len]
    ids = np.full(self.max_len, self.pad_id, np.int32)
    ids[:len(toks)] = toks
    mask = np.zeros(self.max_len, np.int32)
    mask[:len(toks)] = 1
    return ids, mask

  def encode_batch(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(ids int32 [B, max_len], mask int32 [B, max_len])."""
    pairs = [self.encode(t) for t in texts]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


class WordTokenizer(Tokenizer):
  """Word-level tokenizer over a fixed vocabulary. Id 0 is padding, 1 an unknown word."""

  UNK = 1

  def __init__(self, vocab: Sequence[str], max_len: int = 16):
    super().__init__(max_len)
    self.vocab = list(dict.fromkeys(vocab))  # unique, order kept
    self._ids = {w: i + 2 for i, w in enumerate(self.vocab)}

  @classmethod
  def from_captions(cls, captions: Iterable[str], max_len: int = 16) -> "WordTokenizer":
    """A tokenizer whose vocabulary is every word of `captions`, sorted."""
    return cls(sorted({w for c in captions for w in words(c)}), max_len)

  @property
  def vocab_size(self) -> int:
    return len(self.vocab) + 2

  def _tokenize(self, text):
    return [self._ids.get(w, self.UNK) for w in words(text)], []

  def decode(self, ids: Sequence[int]) -> str:
    inv = {i: w for w, i in self._ids.items()}
    return " ".join(inv.get(int(i), "<unk>") for i in ids if int(i) != self.pad_id)


class SentencePieceTokenizer(Tokenizer):
  """T5's tokenizer from a local `spiece.model`: pieces, then </s> (id 1); pad is 0."""

  def __init__(self, model_path: str, max_len: int = 128):
    super().__init__(max_len)
    if not os.path.isfile(model_path):
      raise FileNotFoundError(f"No SentencePiece model at {model_path!r} (T5 ships it as "
                              "spiece.model next to the weights).")
    import sentencepiece as spm

    self._sp = spm.SentencePieceProcessor(model_file=model_path)
    self.pad_id = max(self._sp.pad_id(), 0)
    self.eos_id = self._sp.eos_id()
    self.vocab_size = self._sp.get_piece_size()

  def _tokenize(self, text):
    return list(self._sp.encode(text)), [self.eos_id]


class HFTokenizer(Tokenizer):
  """A Hugging Face `tokenizer.json` (e.g. BERT WordPiece: [CLS] text [SEP])."""

  def __init__(self, path: str, max_len: int = 128):
    super().__init__(max_len)
    path = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
    if not os.path.isfile(path):
      raise FileNotFoundError(f"No tokenizer.json at {path!r}.")
    from tokenizers import Tokenizer as _HF

    self._tok = _HF.from_file(path)
    self._tok.no_padding()
    self._tok.no_truncation()
    pad = self._tok.token_to_id("[PAD]")
    self.pad_id = 0 if pad is None else pad
    self.vocab_size = self._tok.get_vocab_size()
    self._n_close = self._tok.num_special_tokens_to_add(is_pair=False) // 2 or 0

  def _tokenize(self, text):
    ids = self._tok.encode(text).ids
    n = self._n_close
    return (ids[:-n], ids[-n:]) if n else (ids, [])
