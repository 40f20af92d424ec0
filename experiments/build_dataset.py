r"""Builds a dataset as ArrayRecord files (no TensorFlow needed).

  python -m experiments.build_dataset --dataset=moving_shapes --config=base --data_dir=DIR
  python -m experiments.build_dataset --dataset=moving_digits --config=base --data_dir=DIR
  python -m experiments.build_dataset --dataset=video_folder --folder=MY_VIDEOS \
      --frames=16 --fps=8 --size=64 --data_dir=DIR
  python -m experiments.build_dataset --dataset=image_folder --folder=MY_IMAGES --data_dir=DIR

An existing build is reused; prints the splits and their sizes.
"""

from absl import app, flags

from videojax.data import builders
from videojax.runtime import quiet_library_logs

_DATASET = flags.DEFINE_enum("dataset", None, sorted(builders.DATASETS), "Dataset to build.")
_CONFIG = flags.DEFINE_string("config", None, "Builder config name (default: the first).")
_DATA_DIR = flags.DEFINE_string("data_dir", builders.DEFAULT_DATA_DIR, "Output directory.")
_FOLDER = flags.DEFINE_string("folder", None, "Source folder (video_folder, image_folder).")
_FRAMES = flags.DEFINE_integer("frames", None, "video_folder: frames per clip.")
_FPS = flags.DEFINE_float("fps", None, "video_folder: frame rate clips are resampled to.")
_SIZE = flags.DEFINE_integer("size", None, "video_folder / image_folder: square frame size.")
flags.mark_flag_as_required("dataset")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  quiet_library_logs()
  kwargs = {"folder": _FOLDER.value} if _FOLDER.value else {}
  if _DATASET.value in ("video_folder", "image_folder") and not _FOLDER.value:
    raise app.UsageError(f"--dataset={_DATASET.value} needs --folder=<your files>.")
  config = _CONFIG.value
  if _DATASET.value in ("video_folder", "image_folder") and (_FRAMES.value or _FPS.value or
                                                               _SIZE.value):
    from videojax.data import video_folder as vf
    if _DATASET.value == "video_folder":
      fields = dict(num_frames=_FRAMES.value or 16, fps=_FPS.value or 8.0,
                    height=_SIZE.value or 64, width=_SIZE.value or 64)
      config = vf.VideoFolderConfig(
          name=f"clips{fields['num_frames']}_{fields['fps']:g}fps_{fields['height']}", **fields)
    else:
      config = vf.ImageFolderConfig(name=f"images{_SIZE.value}", height=_SIZE.value,
                                    width=_SIZE.value)
  builder = builders.build(builders.get_builder_class(_DATASET.value), config,
                           data_dir=_DATA_DIR.value, **kwargs)
  for split, info in builder.info.splits.items():
    print(f"{builder.name}/{builder.builder_config.name}  {split}: {info.num_examples} examples")
  print(f"in {builder.data_dir}")


if __name__ == "__main__":
  app.run(main)
