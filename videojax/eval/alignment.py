"""Text alignment of generated `moving_shapes` videos, judged from pixels alone.

Every caption word of the `moving_shapes` dataset (`videojax.data.moving_shapes`) is
visible in its video, so a sample's alignment with its prompt is checked exactly:
`parse_caption` reads what was asked, `judge` reads what was drawn, `score` compares
the two over a set of samples. Plain numpy (and scipy.ndimage for connected
components); it runs on the host after sampling, at any resolution >= 16x16 and any
frame count >= 2.

How `judge` reads a video (e = 0.3 * min(H, W), the spec's object extent; thresholds
are relative to palette distances or to e, so one setting serves every resolution):
  background  the per-channel median of all pixels (objects cover <= 18% of a
              frame), named by the nearest background of the palette.
  foreground  pixels farther from that median than FOREGROUND (0.5) x the distance
              from the background to its nearest object colour (101 on gray, to
              purple; 220 on white; 237 on black): pixels about half covered or more.
              Noise of sigma 10 per channel crosses 50 in ~1.5e-5 of pixels.
  objects     8-connected foreground components of at least MIN_AREA x e^2 pixels
              (the smallest shape, the triangle, has 0.5 e^2): smaller specks are
              noise, or splinters of a nearby object that its window takes in.
  colour      the component's median pixel fitted to each palette line
              background -> colour (coverage in [0.25, 1.25]); the nearest line wins,
              so partly covered or blurred pixels still name the right colour.
  coverage    per pixel, the projection of (pixel - background) onto that line, in
              [0, 1], over the pixels within max(3, 0.1 e) (chessboard distance) of
              the component and nearer to it than to any other object, so blur tails
              count but a neighbour's edge does not. Coverage below a floor is set to
              0: NOISE_FLOOR, or the NOISE_QUANTILE quantile of the coverage of
              background pixels (> 2 pixels from any foreground) if that is higher,
              which follows the noise, clipped at black or white or not.
  shape       from cumulants of the coverage, which a Gaussian blur leaves unchanged
              from the third order on: the vertical third cumulant over A^1.5 is
              -0.0210 for the apex-up triangle and 0 for circle and square (its mass
              sits low); the fourth cumulant along the diagonals minus that along the
              axes, over A^2, is 1/240 = 0.0042 for the square and 0 for the circle.
              Each threshold sits half-way between the ideal values. Pixel sampling
              moves them by ~0.002 at e = 4.8 (16x16) and by < 0.0002 from 32x32 up;
              a 3x3 box blur, not isotropic, adds 1/3 px^4 to every shape's numerator
              (+0.001 at 16x16), so a box-blurred 16x16 circle can read as a square.
              The shape must also be clean, its values within SKEW_BAND and
              SQUARENESS_BAND of its ideal ones (bands that narrow as e grows, as wide
              as rendered, noisy and blurred clips need), else it is None: a square
              with rounded corners, a blunt triangle or a blob is no shape.
  direction   the least-squares slope of the coverage centroid over clip time; the
              larger relative component (x over W, y over H) names the direction if
              the object travels at least MIN_TRAVEL of the spec's 0.5 x frame, else
              None (a still object moves in no direction).
  consistent  every frame holds exactly the expected number of objects, of distinct
              colours, the same colours in every frame, each object's area within a
              factor AREA_TOLERANCE of its median over frames (the spec's objects never
              leave the frame, so their area is constant).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from videojax.data import moving_shapes as ms

ATTRIBUTES: tuple[str, ...] = ("background", "color", "shape", "direction", "single_object")

FOREGROUND = 0.5  # fraction of the background -> nearest colour distance
NOISE_FLOOR = 0.03  # least coverage counted (a few uint8 steps), or with noise:
NOISE_QUANTILE = 0.999  # the background's own coverage at this quantile
GROW, GROW_PIXELS = 0.1, 3  # window: pixels within max(3, 0.1 e) of the component
MIN_AREA = 0.2  # least foreground pixels of an object, in units of e^2
AREA_TOLERANCE = 1.5  # each frame's area within [median / 1.5, median * 1.5]
MIN_TRAVEL = 0.25  # least centroid travel, fraction of the spec's travel (0.5 x frame)
TRIANGLE_SKEW = -0.0105  # half the apex-up triangle's kappa3_y / A^1.5 (-0.0210)
SQUARE_KURTOSIS = 0.0021  # half the square's (kappa4_diag - kappa4_axis) / A^2 (1/240)
# A clean shape: its cumulants within a band of the ideal shape's (triangle skew -0.0210;
# squareness 1/240 for the square and 0 for the circle; skew 0 for square and circle),
# of half-width C / e^2 + D: pixel sampling, noise of sigma 6 and a 3x3 box blur move a
# rendered shape's values by up to about that (measured from 16x16 to 64x64).
SKEW_BAND = (0.15, 0.001)  # (C, D) of the skew band
SQUARENESS_BAND = (0.03, 0.0006)  # (C, D): corners rounded by 2 px at 64x64 fail

_BACKGROUNDS = np.array(list(ms.BACKGROUNDS.values()), np.float64)  # [3, 3]
_COLORS = np.array(list(ms.COLORS.values()), np.float64)  # [6, 3]
_SQUARE = np.ones((3, 3), bool)  # 8-neighbourhood
_OBJECT = r"a (\S+) (\S+) moving (\S+)"
_CAPTION = re.compile(rf"{_OBJECT}(?: and {_OBJECT})? on a (\S+) background")


def parse_caption(caption: str) -> dict[str, Any]:
  """Reads a `moving_shapes` caption (one or two objects).

  Args:
    caption: e.g. 'a red circle moving left on a gray background' or 'a red circle
      moving left and a blue square moving up on a white background'. Case and
      repeated spaces are ignored.

  Returns:
    {'background': str, 'objects': [{'color', 'shape', 'direction'}, ...]}.
  """
  text = " ".join(caption.lower().split())
  match = _CAPTION.fullmatch(text)
  if match is None:
    raise ValueError(
        f"Caption {caption!r} is outside the moving_shapes grammar; expected 'a COLOR "
        "SHAPE moving DIRECTION on a BACKGROUND background', optionally with a second "
        "'and a COLOR SHAPE moving DIRECTION' object.")
  words = match.groups()
  objects = [dict(zip(("color", "shape", "direction"), words[i:i + 3]))
             for i in (0, 3) if words[i] is not None]
  vocab = {"color": ms.COLORS, "shape": ms.SHAPES, "direction": ms.DIRECTIONS}
  for obj in objects:
    for key, word in obj.items():
      if word not in vocab[key]:
        raise ValueError(f"Unknown {key} {word!r} in caption {caption!r}; expected one "
                         f"of {list(vocab[key])}.")
  if words[6] not in ms.BACKGROUNDS:
    raise ValueError(f"Unknown background {words[6]!r} in caption {caption!r}; expected "
                     f"one of {list(ms.BACKGROUNDS)}.")
  if len(objects) == 2 and objects[0]["color"] == objects[1]["color"]:
    raise ValueError(f"Caption {caption!r} names two {objects[0]['color']} objects; the "
                     "grammar requires two different colours.")
  return {"background": words[6], "objects": objects}


def _colour_of(pixel: np.ndarray, bg: np.ndarray) -> int:
  """Index in COLORS of the palette line bg -> colour nearest to `pixel` [3]."""
  d = _COLORS - bg  # [6, 3]
  a = np.clip(d @ (pixel - bg) / np.sum(d * d, axis=1), 0.25, 1.25)  # [6]
  return int(np.argmin(np.linalg.norm(pixel - (bg + a[:, None] * d), axis=1)))


def _features(cov: np.ndarray) -> dict[str, Any]:
  """Area, centroid (x, y) and shape cumulants of a coverage map [H, W]."""
  ys, xs = np.nonzero(cov)
  w = cov[ys, xs]  # [K]
  area = float(w.sum())
  x, y = xs + 0.5, ys + 0.5
  cx, cy = float(w @ x / area), float(w @ y / area)
  dx, dy = x - cx, y - cy

  def kappa4(u):  # fourth cumulant of the coverage along u
    return w @ u**4 / area - 3 * (w @ u**2 / area) ** 2

  axis = (kappa4(dx) + kappa4(dy)) / 2
  diag = (kappa4((dx + dy) / np.sqrt(2)) + kappa4((dx - dy) / np.sqrt(2))) / 2
  return {"area": area, "centroid": (cx, cy), "skew": float(w @ dy**3 / area) / area**1.5,
          "squareness": float(diag - axis) / area**2}


def _frame_objects(frame: np.ndarray, fg: np.ndarray, bg: np.ndarray, floors: np.ndarray,
                   extent: float) -> list[dict[str, Any]]:
  """The objects (components of `fg` [H, W]) of one frame [H, W, 3], largest first."""
  labels, n = ndimage.label(fg, structure=_SQUARE)  # 8-connected
  counts = np.bincount(labels.ravel(), minlength=n + 1)  # [n + 1] pixels per label
  big = [k for k in range(1, n + 1) if counts[k] >= MIN_AREA * extent**2]
  grow = max(GROW_PIXELS, round(GROW * extent))
  # Chessboard distance of every pixel to each object; a pixel joins the window of the
  # object strictly nearest to it (within `grow`), so neighbours' soft edges stay out.
  dist = np.stack([ndimage.distance_transform_cdt(labels != k, metric="chessboard")
                   for k in big] + [np.full(fg.shape, grow + 1)])  # [N + 1, H, W]
  found = []
  for i, label in enumerate(big):
    mask = labels == label  # [H, W]
    colour = _colour_of(np.median(frame[mask], axis=0), bg)
    window = (dist[i] <= grow) & (dist[i] < np.delete(dist, i, axis=0).min(axis=0))
    d = _COLORS[colour] - bg
    cov = np.clip((frame - bg) @ d / (d @ d), 0.0, 1.0) * window  # [H, W]
    cov[cov < floors[colour]] = 0.0
    if cov.any():  # else its pixels lie off its colour's line: not an object
      found.append({"color": list(ms.COLORS)[colour], **_features(cov)})
  return sorted(found, key=lambda o: -o["area"])


def _consistent(per_frame: list[list[dict[str, Any]]], count: int) -> bool:
  """Whether every frame shows `count` objects of the same distinct colours, steady size."""
  colours = [sorted(o["color"] for o in objs) for objs in per_frame]
  if any(len(c) != count or len(set(c)) != count or c != colours[0] for c in colours):
    return False
  for colour in colours[0]:
    areas = np.array([o["area"] for objs in per_frame for o in objs if o["color"] == colour])
    median = np.median(areas)
    if areas.max() > AREA_TOLERANCE * median or areas.min() < median / AREA_TOLERANCE:
      return False
  return True


def _track(colour: str, per_frame: list[list[dict[str, Any]]], shape_hw: tuple[int, int]
           ) -> dict[str, Any]:
  """Shape and direction of the object of one colour, over the frames it appears in."""
  times, xy, skew, square, area = [], [], [], [], 0.0
  for t, objs in enumerate(per_frame):
    for o in objs:
      if o["color"] == colour:  # the largest of this colour in frame t
        times.append(t / (len(per_frame) - 1))
        xy.append(o["centroid"])
        skew.append(o["skew"])
        square.append(o["squareness"])
        area += o["area"]
        break
  skew, square = float(np.mean(skew)), float(np.mean(square))
  if skew < TRIANGLE_SKEW:
    shape = "triangle"
  else:
    shape = "square" if square > SQUARE_KURTOSIS else "circle"
  e2 = (ms.EXTENT * min(shape_hw)) ** 2
  skew_tol = SKEW_BAND[0] / e2 + SKEW_BAND[1]
  square_tol = SQUARENESS_BAND[0] / e2 + SQUARENESS_BAND[1]
  clean = {"triangle": skew <= 2 * TRIANGLE_SKEW + skew_tol,
           "square": square >= 2 * SQUARE_KURTOSIS - square_tol and abs(skew) <= skew_tol,
           "circle": abs(square) <= square_tol and abs(skew) <= skew_tol}[shape]
  if not clean:
    shape = None  # ragged: not cleanly the shape its cumulants are nearest to
  direction = None
  if len(times) >= 2 and np.ptp(times) > 0:
    slope = np.polyfit(np.array(times), np.array(xy), 1)[0]  # [2] pixels per clip
    rel = slope / np.array([shape_hw[1], shape_hw[0]])  # fraction of W, H per clip
    axis = int(np.argmax(np.abs(rel)))
    if abs(rel[axis]) >= MIN_TRAVEL * ms.TRAVEL:
      direction = [["left", "right"], ["up", "down"]][axis][int(rel[axis] > 0)]
  return {"color": colour, "shape": shape, "direction": direction,
          "frames": len(times), "area": area / max(len(times), 1), "skew": skew,
          "squareness": square}


def judge(video: np.ndarray, num_objects: int = 1) -> dict[str, Any]:
  """Reads a `moving_shapes` video's background, objects and their motion.

  Args:
    video: uint8 [T, H, W, 3], T >= 2, H and W >= 16.
    num_objects: how many objects to expect (1 or 2): the `num_objects` colours with
      the largest total area are reported, and `consistent` checks for that count.

  Returns:
    A dict: 'background' (palette name); 'objects', a list of up to `num_objects`
    dicts with 'color', 'shape', 'direction' (None when it does not move),
    'frames' (how many frames show it) and 'area' (mean soft area, pixels);
    'color', 'shape', 'direction' of the largest object (None if there is none);
    'num_components' per frame; 'consistent' (exactly `num_objects` steady objects
    in every frame, see the module docstring) and 'single_object' (exactly one).
  """
  video = np.asarray(video)
  if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
    raise ValueError(f"judge expects a uint8 video [T, H, W, 3], got {video.dtype} "
                     f"{video.shape}; convert a float video in [-1, 1] with "
                     "np.round((v + 1) * 127.5).clip(0, 255).astype(np.uint8).")
  frames, height, width, _ = video.shape
  ms.check_size(frames, height, width)
  if num_objects not in (1, 2):
    raise ValueError(f"num_objects must be 1 or 2, got {num_objects}.")
  pixels = video.astype(np.float64)  # [T, H, W, 3]
  bg = np.median(pixels.reshape(-1, 3).T, axis=1)  # [3] (contiguous rows: faster)
  bg_index = int(np.argmin(np.linalg.norm(_BACKGROUNDS - bg, axis=1)))
  nearest = np.min(np.linalg.norm(_COLORS - _BACKGROUNDS[bg_index], axis=1))
  fg = np.linalg.norm(pixels - bg, axis=-1) > FOREGROUND * nearest  # [T, H, W]
  extent = ms.EXTENT * min(height, width)
  far = ~ndimage.binary_dilation(fg, _SQUARE[None], iterations=2)  # [T, H, W] no tails
  floors = np.full(len(_COLORS), NOISE_FLOOR)  # [6] per colour line
  if far.sum() >= 200:  # noise level: how far the background's own pixels reach
    d = _COLORS - bg  # [6, 3]
    cov = d @ (pixels[far] - bg).T / np.sum(d * d, axis=1)[:, None]  # [6, K]
    floors = np.maximum(floors, np.quantile(cov, NOISE_QUANTILE, axis=1))
  per_frame = [_frame_objects(pixels[t], fg[t], bg, floors, extent) for t in range(frames)]
  totals: dict[str, float] = {}
  for objs in per_frame:
    for o in objs:
      totals[o["color"]] = totals.get(o["color"], 0.0) + o["area"]
  ranked = sorted(totals, key=lambda c: -totals[c])[:num_objects]
  objects = [_track(c, per_frame, (height, width)) for c in ranked]
  first = objects[0] if objects else {}
  return {"background": list(ms.BACKGROUNDS)[bg_index], "objects": objects,
          "color": first.get("color"), "shape": first.get("shape"),
          "direction": first.get("direction"),
          "num_components": [len(objs) for objs in per_frame],
          "consistent": _consistent(per_frame, num_objects),
          "single_object": _consistent(per_frame, 1)}


def _compare(expected: dict[str, Any], judged: dict[str, Any]) -> dict[str, bool]:
  """Per-attribute correctness; objects are matched in the order that agrees most."""
  want = expected["objects"]
  got = judged["objects"] + [{}] * (len(want) - len(judged["objects"]))
  best = None
  for order in itertools.permutations(got, len(want)):
    hits = {k: all(o.get(k) == w[k] for o, w in zip(order, want))
            for k in ("color", "shape", "direction")}
    agree = sum(o.get(k) == w[k] for o, w in zip(order, want) for k in hits)
    if best is None or agree > best[0]:
      best = (agree, hits)
  return {"background": judged["background"] == expected["background"], **best[1],
          "single_object": bool(judged["consistent"])}


def score(videos: Sequence[np.ndarray] | np.ndarray, captions: Sequence[str]
          ) -> dict[str, Any]:
  """Text alignment of videos with the captions they were generated from.

  Args:
    videos: uint8 [N, T, H, W, 3], or a sequence of N uint8 [T, H, W, 3].
    captions: N `moving_shapes` captions (one or two objects each).

  Returns:
    {attribute: accuracy} for each of ATTRIBUTES, where 'single_object' is whether
    the video shows exactly the caption's objects as steady components (one, for the
    single-object captions it is named after); 'all_correct' (all attributes right);
    'count' (N); 'records', per example {'caption', 'expected', 'judged',
    'correct': {attribute: bool}, 'all_correct'}.
  """
  if len(videos) != len(captions):
    raise ValueError(f"score got {len(videos)} videos but {len(captions)} captions; "
                     "pass one caption per video.")
  if not len(captions):
    raise ValueError("score got no videos; pass at least one video and caption.")
  records = []
  for video, caption in zip(videos, captions):
    expected = parse_caption(caption)
    judged = judge(video, num_objects=len(expected["objects"]))
    correct = _compare(expected, judged)
    records.append({"caption": caption, "expected": expected, "judged": judged,
                    "correct": correct, "all_correct": all(correct.values())})
  result: dict[str, Any] = {
      k: float(np.mean([r["correct"][k] for r in records])) for k in ATTRIBUTES}
  result["all_correct"] = float(np.mean([r["all_correct"] for r in records]))
  return {**result, "count": len(records), "records": records}
