"""The input pipeline on a synthetic source whose pixels encode (example, frame)."""

import jax.numpy as jnp
import numpy as np
import pytest

from videojax.data import pipeline as P
from videojax.nn.tokenizers import WordTokenizer
from videojax.nn.conditioning import place_frames

TS, HS = 24, 16  # source clips: 24 frames of 16x16


def _source(n=12):
  # Frame t of example i is constant 5 * t + i in channel 0 and 16 * i in channel 2;
  # channel 1 is a horizontal ramp so spatial operations are visible.
  out = []
  for i in range(n):
    v = np.zeros((TS, HS, HS, 3), np.uint8)
    v[..., 0] = ((5 * np.arange(TS) + i) % 256)[:, None, None]
    v[..., 1] = np.arange(HS)[None, None, :] * 16
    v[..., 2] = 16 * i
    out.append({"video": v, "caption": f"clip number {i}".encode(), "index": i})
  return out


def _example_ids(batch):
  """Source example index of each batch element, read back from channel 2."""
  return np.round((batch["video"][:, 0, 0, 0, 2] + 1.0) * 127.5 / 16).astype(int)


def _batches(view, n=2, **kw):
  ds = P.make_dataset(_source(), view, batch_size=4, seed=kw.pop("seed", 0), **kw)
  return [ds[i] for i in range(n)]


def test_base_view_frame_rate_size_and_range():
  view = P.StageView("base", frames=6, height=8, width=8, frame_stride=3)
  b = _batches(view, tokenizer=WordTokenizer.from_captions(["clip number 1"]))[0]
  assert b["video"].shape == (4, 6, 8, 8, 3) and b["video"].dtype == np.float32
  assert b["video"].min() >= -1.0 and b["video"].max() <= 1.0
  # consecutive frames are `frame_stride` source frames apart (channel 0 grows by 5 per frame)
  steps = np.diff(np.round((b["video"][..., 0, 0, 0] + 1) * 127.5), axis=1)
  np.testing.assert_array_equal(steps, 15)
  assert b["text_tokens"].shape == (4, 16) and set(np.unique(b["text_mask"])) <= {0, 1}
  np.testing.assert_array_equal(b["text_mask"].sum(1), 3)


def test_tsr_view_matches_place_frames():
  view = P.StageView("tsr", frames=9, height=16, width=16, temporal_factor=4)
  b = _batches(view, n=1)[0]
  placed, mask = place_frames(jnp.asarray(b["video"][:, ::4]), 9, stride=4)
  np.testing.assert_allclose(b["cond_video"], placed, atol=1e-6)
  np.testing.assert_array_equal(b["cond_frames_mask"], mask)


def test_ssr_view_condition_is_the_downsampled_target():
  view = P.StageView("ssr", frames=4, height=16, width=16, spatial_factor=4, crop=8)
  b = _batches(view, n=1)[0]
  assert b["video"].shape == (4, 4, 8, 8, 3) and b["cond_video"].shape == (4, 4, 2, 2, 3)
  np.testing.assert_allclose(b["cond_video"], P.downsample(b["video"], 4), atol=1e-6)
  # the same function in jax.numpy (what the cascade uses) gives the same result
  np.testing.assert_allclose(P.downsample(jnp.asarray(b["video"]), 4, xp=jnp),
                             b["cond_video"], atol=1e-6)


def test_image_fraction_and_independent_frames():
  view = P.StageView("base", frames=4, height=16, width=16)
  ds = P.make_dataset(_source(), view, batch_size=4, seed=1, image_fraction=0.5)
  flags = np.concatenate([ds[i]["is_image"] for i in range(25)])
  assert 0.35 < flags.mean() < 0.65
  b = next(ds[i] for i in range(25) if ds[i]["is_image"].any() and not ds[i]["is_image"].all())
  steps = np.diff(np.round((b["video"][..., 0, 0, 0] + 1) * 127.5), axis=1)
  assert np.all(steps[~b["is_image"]] == 5)  # videos: consecutive frames
  assert not np.all(steps[b["is_image"]] == 5)  # images: frames from random times


@pytest.mark.parametrize("workers", [0, 2])
def test_iterator_state_restores_exactly(workers):
  """Resuming from a state gives the same batches, with or without worker processes
  (and the workers make the batches the threads make)."""
  view = P.StageView("base", frames=4, height=8, width=8)
  ds = P.make_dataset(_source(), view, batch_size=4, seed=2)
  ds[0]  # noqa: B018 (indexing first builds the batching closures that pickle refuses)
  it = P.make_iterator(ds)
  for _ in range(3):
    next(it)
  state = it.get_state()
  want = [next(it) for _ in range(4)]  # crosses an epoch boundary (12 examples / 4)
  it2 = P.make_iterator(ds, state, workers=workers)
  for w in want:
    got = next(it2)
    for k in w:
      np.testing.assert_array_equal(got[k], w[k])
  if workers:  # the workers' own state resumes the thread iterator exactly too
    state2 = it2.get_state()
    it3 = P.make_iterator(P.make_dataset(_source(), view, batch_size=4, seed=2), state2)
    it4 = P.make_iterator(P.make_dataset(_source(), view, batch_size=4, seed=2), state2,
                          workers=workers)
    for _ in range(2):
      a, b = next(it3), next(it4)
      for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    it2.close()
    it4.close()


def test_seed_and_process_sharding():
  view = P.StageView("base", frames=4, height=8, width=8)
  shard = lambda p: P.make_dataset(_source(), view, batch_size=2, seed=0,  # noqa: E731
                                   num_epochs=1, process_index=p, process_count=2)
  seen = [np.concatenate([_example_ids(b) for b in shard(p)]) for p in (0, 1)]
  # one epoch: each process sees its 6 examples once, and together they see all 12
  assert sorted(seen[0].tolist() + seen[1].tolist()) == list(range(12))
  s0 = P.make_dataset(_source(), view, batch_size=4, seed=0)[0]["video"]
  s1 = P.make_dataset(_source(), view, batch_size=4, seed=1)[0]["video"]
  assert not np.array_equal(s0, s1)
  again = P.make_dataset(_source(), view, batch_size=4, seed=0)[0]["video"]
  np.testing.assert_array_equal(s0, again)


def test_global_batch_sharded_over_devices():
  from videojax.parallel.sharding import make_mesh
  view = P.StageView("base", frames=4, height=8, width=8)
  batch = P.make_dataset(_source(), view, batch_size=8, seed=0)[0]
  g = P.to_global(batch, make_mesh({"data": 8}))
  assert g["video"].shape == (8, 4, 8, 8, 3) and len(g["video"].sharding.device_set) == 8
  np.testing.assert_array_equal(np.asarray(g["video"]), batch["video"])


def test_tokenizer():
  tok = WordTokenizer.from_captions(["a red circle moving left", "a blue square"], max_len=4)
  ids, mask = tok.encode("A red circle, moving!")
  assert tok.decode(ids) == "a red circle moving" and mask.tolist() == [1, 1, 1, 1]
  ids, mask = tok.encode("")
  assert ids.tolist() == [0, 0, 0, 0] and mask.sum() == 0
  assert tok.encode("a green circle")[0][1] == 1  # unknown word


def test_bad_pipeline_inputs():
  with pytest.raises(ValueError, match="Unknown stage kind 'vsr'"):
    P.StageView("vsr")
  with pytest.raises(ValueError, match="2 <= temporal_factor < frames"):
    P.StageView("tsr", frames=8, temporal_factor=8)
  assert P.StageView("tsr", frames=8, temporal_factor=2).input_frames == 4  # 0, 2, 4, 6
  assert P.StageView("tsr", frames=9, temporal_factor=4).input_frames == 3  # 0, 4, 8
  view = P.StageView("base", frames=10, height=8, width=8, frame_stride=3)
  with pytest.raises(ValueError, match="has 24 frames but the stage needs 28"):
    P.make_dataset(_source(), view, batch_size=2, seed=0)[0]
  with pytest.raises(ValueError, match="must be an integer multiple of the stage's 12x12"):
    P.make_dataset(_source(), P.StageView("base", 4, 12, 12), batch_size=2, seed=0)[0]
  with pytest.raises(ValueError, match=r"image_fraction must be in \[0, 1\]"):
    P.make_dataset(_source(), P.StageView(), batch_size=2, seed=0, image_fraction=2.0)
