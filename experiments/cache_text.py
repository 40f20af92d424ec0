r"""Precomputes a frozen text encoder's embeddings of every caption of a built dataset.

  python -m experiments.cache_text --dataset=moving_shapes --config=base --encoder=minilm
  python -m experiments.cache_text --dataset=moving_shapes --config=base --encoder=t5 \
      --path=/ckpt/t5-v1_1-xxl --max_len=128

Writes DATA_DIR/<dataset>/<config>/text_cache_<encoder>_<max_len>.npz (never over an existing
file); the input pipeline then reads embeddings by caption instead of running the
encoder (`make_dataset(..., text_cache=EmbeddingCache.load(path))`).
"""

from absl import app, flags

from videojax.data import builders
from videojax.nn import text
from videojax.runtime import enable_compilation_cache, quiet_library_logs

_DATASET = flags.DEFINE_enum("dataset", None, sorted(builders.DATASETS), "A built dataset.")
_CONFIG = flags.DEFINE_string("config", None, "Its builder config name.")
_DATA_DIR = flags.DEFINE_string("data_dir", builders.DEFAULT_DATA_DIR, "Dataset directory.")
_ENCODER = flags.DEFINE_enum("encoder", "minilm", ["t5", "bert", "minilm"], "Frozen encoder.")
_PATH = flags.DEFINE_string("path", None, "Weights directory (t5, bert).")
_MAX_LEN = flags.DEFINE_integer("max_len", 64, "Tokens per caption.")
flags.mark_flag_as_required("dataset")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  quiet_library_logs()
  enable_compilation_cache()
  builder = builders.load(_DATASET.value, _CONFIG.value, _DATA_DIR.value)
  encoder = text.build_text_encoder(_ENCODER.value, path=_PATH.value, max_len=_MAX_LEN.value)
  path = text.cache_path(_DATA_DIR.value, builder.name, builder.builder_config.name,
                         encoder.name, _MAX_LEN.value)
  cache = text.EmbeddingCache.build(encoder, builders.captions(builder), path)
  print(f"{len(cache.captions)} captions -> {path} "
        f"({cache.embeddings.shape[1]} tokens x {cache.embeddings.shape[2]} dims)")


if __name__ == "__main__":
  app.run(main)
