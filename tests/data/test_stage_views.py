"""The pipeline over a real built dataset (moving_shapes, tiny): each stage's view."""

import numpy as np
import pytest

from videojax.data import builders, pipeline
from videojax.data.moving_shapes import MovingShapes
from videojax.nn.tokenizers import WordTokenizer


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  b = builders.build(MovingShapes, "tiny", data_dir=str(tmp_path_factory.mktemp("tfds")))
  return builders.data_source(b, "train")  # 8 frames of 16x16


@pytest.mark.parametrize("view,shapes", [
    (pipeline.StageView("base", frames=4, height=8, width=8, frame_stride=2),
     {"video": (4, 4, 8, 8, 3)}),
    (pipeline.StageView("tsr", frames=7, height=16, width=16, temporal_factor=2),
     {"video": (4, 7, 16, 16, 3), "cond_video": (4, 7, 16, 16, 3), "cond_frames_mask": (4, 7)}),
    (pipeline.StageView("ssr", frames=8, height=16, width=16, spatial_factor=4),
     {"video": (4, 8, 16, 16, 3), "cond_video": (4, 8, 4, 4, 3)}),
])
def test_stage_views_of_moving_shapes(source, view, shapes):
  captions = [source[i]["caption"].decode() for i in range(len(source))]
  tok = WordTokenizer.from_captions(captions, max_len=16)
  batch = pipeline.make_dataset(source, view, batch_size=4, seed=0, tokenizer=tok,
                                image_fraction=0.25)[0]
  for key, shape in shapes.items():
    assert batch[key].shape == shape, key
  for key in ("video", "cond_video"):
    if key in batch:
      assert batch[key].min() >= -1.0 and batch[key].max() <= 1.0
  # Captions round-trip through the tokenizer: 'a <color> <shape> moving <dir> on a ...'
  words = tok.decode(batch["text_tokens"][0]).split()
  assert words[0] == "a" and words[3] == "moving" and words[-1] == "background"
  if view.kind == "ssr":
    np.testing.assert_allclose(batch["cond_video"], pipeline.downsample(batch["video"], 4),
                               atol=1e-6)
