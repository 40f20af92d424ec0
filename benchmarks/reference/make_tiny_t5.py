"""One-off: writes the tiny random T5 v1.1 encoder fixture in tests/assets/t5_tiny/.

Run with a separate environment that has torch (CPU) and transformers; the library
itself never imports them:

  /tmp/refvenv/bin/python benchmarks/reference/make_tiny_t5.py

It writes, in the Hugging Face layout that `videojax.nn.t5.load_t5_encoder` reads:
- `spiece.model`: a unigram SentencePiece model (T5 ids: pad 0, eos 1, unk 2) trained
  on the captions below;
- `config.json`, `model.safetensors`: a randomly initialised `T5EncoderModel`
  (gated-gelu, d_model 32, d_ff 64, 2 layers, 4 heads, d_kv 8), with few relative
  position buckets and a short max distance so that short test sentences reach the
  logarithmic and saturated buckets;
- `reference.json`: token ids, masks and the reference `last_hidden_state` of a few
  captions padded to a common length, plus the library versions that made them.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import sys

import numpy as np
import sentencepiece as spm
import torch
import transformers

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "assets", "t5_tiny")
SEED = 0
MAX_LEN = 32
VOCAB = 128

COLORS = ["red", "green", "blue", "yellow", "white", "purple"]
SHAPES = ["square", "circle", "triangle", "star"]
MOTIONS = ["moves left", "moves right", "moves up", "moves down", "bounces around",
           "stays still", "spins slowly"]

# moving_shapes-style captions: a few dozen sentences with a small vocabulary.
TRAIN = [f"a {c} {s} {m}" for c, s, m in itertools.product(COLORS, SHAPES, MOTIONS)][::3]
TRAIN += [
    f"a {c1} {s1} and a {c2} {s2} {m}"
    for (c1, s1), (c2, s2), m in zip(itertools.product(COLORS, SHAPES),
                                     itertools.product(COLORS[::-1], SHAPES[::-1]),
                                     itertools.cycle(MOTIONS))
]
TRAIN += [
    "an empty black background", "two shapes collide in the middle of the frame",
    "the shape fades in and out", "a large square and a small circle",
    "a bright orange ball rolls quickly across the wooden table",
    "the camera pans slowly over a quiet mountain village at sunrise",
    "three grey pentagons drift toward the bottom corner",
    "a tiny white dot zigzags between two thick vertical bars",
    "a cyan hexagon grows bigger then shrinks back to its original size",
    "several magenta diamonds rotate clockwise in a tight formation",
    "the pink heart pulses twice before jumping off the screen",
    "a dark blue rectangle slides diagonally from top left to bottom right",
    "falling snowflakes cover the empty parking lot at night",
    "a golden crescent moon rises above calm ocean waves",
    "the black arrow points north and then turns to face east",
    "an old brown dog chases a frisbee through the park",
    "small green leaves flutter gently in the afternoon breeze",
    "a fast silver train crosses a long iron bridge",
    "the clock hands sweep around the dial without stopping",
    "a flock of birds scatters when the loud thunder strikes",
    "children draw colorful chalk pictures on the sidewalk",
    "a glass of water tips over and spills onto the floor",
    "the scientist pours a fizzing liquid into a narrow tube",
    "bubbles float upward through thick amber honey",
    "a paper airplane glides smoothly over the crowded stadium",
    "the lighthouse beam sweeps across the foggy harbor",
    "a juggler keeps five wooden pins spinning in the air",
    "waves of sand dunes shift under a strong desert wind",
    "a kite with a long ribbon tail dances high above the beach",
    "the robot arm picks up a cube and places it on a shelf",
    "heavy rain drums against the window of a cozy kitchen",
    "a volcano erupts and sends glowing lava down its slopes",
]

# Evaluated captions: different lengths (padding), one longer than the max distance.
EVAL = [
    "a red square moves left",
    "a blue circle and a yellow star bounce around while a green triangle spins slowly",
    "star",
    "an unseen zebra jumps over the purple triangle",  # unknown words -> unk pieces
]


def train_spm(path: str) -> None:
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(TRAIN), model_writer=model, vocab_size=VOCAB,
      model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
      character_coverage=1.0, hard_vocab_limit=False, minloglevel=2,
      # No NFKC table: it alone would make the file ~240 KB.
      normalization_rule_name="identity")
  with open(path, "wb") as f:
    f.write(model.getvalue())


def tokenize(sp: spm.SentencePieceProcessor, texts: list[str]):
  ids = np.zeros((len(texts), MAX_LEN), np.int64)
  mask = np.zeros((len(texts), MAX_LEN), np.int64)
  for i, t in enumerate(texts):
    toks = sp.encode(t)[:MAX_LEN - 1] + [sp.eos_id()]  # truncation keeps </s>
    ids[i, :len(toks)] = toks
    mask[i, :len(toks)] = 1
  return ids, mask


def main() -> None:
  os.makedirs(OUT, exist_ok=True)
  spm_path = os.path.join(OUT, "spiece.model")
  train_spm(spm_path)
  sp = spm.SentencePieceProcessor(model_file=spm_path)
  ids, mask = tokenize(sp, EVAL)

  torch.manual_seed(SEED)
  config = transformers.T5Config(
      vocab_size=sp.get_piece_size(), d_model=32, d_kv=8, d_ff=64, num_layers=2,
      num_decoder_layers=2, num_heads=4, relative_attention_num_buckets=8,
      relative_attention_max_distance=16, feed_forward_proj="gated-gelu",
      tie_word_embeddings=False, dropout_rate=0.0, pad_token_id=0, eos_token_id=1,
      decoder_start_token_id=0)
  model = transformers.T5EncoderModel(config).eval()
  # Norm scales start at exactly 1 and the position bias is small: perturb them so a
  # swapped norm or a misread bias table shows in the outputs.
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "layer_norm" in name:
        p.add_(0.2 * torch.randn_like(p))
      elif "relative_attention_bias" in name:
        p.normal_(0.0, 1.0)
  model.save_pretrained(OUT, safe_serialization=True)

  with torch.no_grad():
    hidden = model(input_ids=torch.from_numpy(ids),
                   attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()

  ref = {
      "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                   "sentencepiece": spm.__version__, "python": sys.version.split()[0]},
      "seed": SEED,
      "max_len": MAX_LEN,
      "texts": EVAL,
      "token_ids": ids.tolist(),
      "mask": mask.tolist(),
      "last_hidden_state_shape": list(hidden.shape),
      # 7 significant digits, as strings' shortest round trip would be longer.
      "last_hidden_state": [[[float(f"{v:.7g}") for v in row] for row in seq]
                            for seq in hidden],
  }
  with open(os.path.join(OUT, "reference.json"), "w") as f:
    json.dump(ref, f, separators=(",", ":"))
  for name in sorted(os.listdir(OUT)):
    print(f"{name}: {os.path.getsize(os.path.join(OUT, name))} bytes")
  print("vocab", sp.get_piece_size(), "lengths", mask.sum(1).tolist())


if __name__ == "__main__":
  main()
