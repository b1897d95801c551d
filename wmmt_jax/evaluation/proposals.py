"""Forged-segment proposals from a forgery activation sequence (FAS).

Two ways to turn per-frame scores of one video into `(score, start_s, end_s)`
rows, best first (the AV-Deepfake1M challenge format, DESIGN.md section 5):

- `mdp_proposals`: MDP's rule (DESIGN.md section 3, "Proposals"): a frame is
  forged when its forged activation beats its real one; each maximal run of
  forged frames is one segment, scored by its mean forged activation. No
  thresholds, no NMS.
- `multi_threshold_proposals`: runs above several thresholds, pooled and pruned
  by 1-D NMS, which gives more (and more varied) proposals for AR@N.

Time conversion follows MDP's released code (wenboxu98/MDP, `train.py`
`test_all` and `core/generate_proposal.py` `_seglabel2proposal` with `rso=1`):
a run of frames `s .. e-1` becomes `[s / fps, e / fps]`, i.e. the end is the
exclusive frame index, `(last_frame + 1) / fps`.
"""

import numpy as np


def interval_iou(a_start, a_end, b_start, b_end):
  """IoU of 1-D intervals, broadcasting, in float32 like the official evaluator.

  IoU = intersection / (max end - min start) (DESIGN.md section 5). For
  overlapping intervals this is the usual union; for disjoint ones the
  intersection is 0 either way. The arithmetic is float32 on purpose: the
  published numbers come from a float32 evaluator, and IoUs that sit on a
  threshold land on the other side in float64. A zero-length union gives nan
  (0 / 0), which compares False with every threshold, as in the official code.

  Args:
    a_start: starts of the first intervals, any shape broadcastable with the rest.
    a_end: ends of the first intervals.
    b_start: starts of the second intervals.
    b_end: ends of the second intervals.

  Returns:
    float32 array of the broadcast shape.
  """
  a_start, a_end, b_start, b_end = (
      np.asarray(x, np.float32) for x in (a_start, a_end, b_start, b_end))
  inter = np.maximum(np.minimum(a_end, b_end) - np.maximum(a_start, b_start),
                     np.float32(0))
  union = np.maximum(a_end, b_end) - np.minimum(a_start, b_start)
  with np.errstate(divide='ignore', invalid='ignore'):
    return (inter / union).astype(np.float32, copy=False)


def segment_iou(a, b):
  """Pairwise IoU of two sets of segments, computed in float32.

  Args:
    a: `[N, 2]` segments `(start, end)`.
    b: `[M, 2]` segments `(start, end)`.

  Returns:
    `[N, M]` float32 IoU = intersection / (max end - min start).
  """
  a = np.asarray(a, np.float32).reshape(-1, 2)
  b = np.asarray(b, np.float32).reshape(-1, 2)
  return interval_iou(a[:, None, 0], a[:, None, 1], b[None, :, 0],
                      b[None, :, 1])


def _runs(mask):
  """Maximal runs of True in a `[T]` bool mask as `(starts, ends)`, end exclusive."""
  edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
  return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def _run_rows(mask, score, fps):
  """One `(score, start_s, end_s)` row per run of `mask`, in temporal order.

  Args:
    mask: `[T]` bool, True for forged frames.
    score: `[T]` per-frame forged score; a run's score is its mean.
    fps: frames per second of `mask`.

  Returns:
    `[K, 3]` float32 rows (float32 before any sorting, so ties are ties of
    the values returned).
  """
  starts, ends = _runs(mask)
  # Run means from a float64 prefix sum: exact enough and O(T) for any number
  # of runs.
  csum = np.concatenate([[0.0], np.cumsum(score, dtype=np.float64)])
  means = (csum[ends] - csum[starts]) / (ends - starts)
  return np.stack([means, starts / float(fps), ends / float(fps)],
                  axis=1).astype(np.float32)


def _best_first(rows, max_proposals):
  """Sorts `[K, 3]` rows by score descending (stable) and keeps the first ones."""
  order = np.argsort(-rows[:, 0], kind='stable')
  return rows[order][:max_proposals]


def _check_fps(fps):
  if not fps > 0:
    raise ValueError(f'fps must be > 0, got {fps!r}.')


def mdp_proposals(fas, fps, max_proposals=100):
  """MDP's proposals: runs of frames where the forged activation wins.

  Frame `t` is forged when `fas[t, 1] > fas[t, 0]` (strict, as MDP's argmax,
  which picks 'real' on a tie). Each maximal run of forged frames `s .. e-1`
  becomes one row `(mean(fas[s:e, 1]), s / fps, e / fps)`.

  Args:
    fas: `[T, 2]` forgery activation sequence of one video at its native
      length (no padding); column 0 real, column 1 forged.
    fps: frames per second of `fas` (MDP: video_frames / duration).
    max_proposals: keep at most this many rows.

  Returns:
    `[K, 3]` float32 rows `(score, start_s, end_s)`, sorted by score
    descending (ties keep temporal order), `K <= max_proposals`; `[0, 3]` when
    no frame is forged.
  """
  fas = np.asarray(fas)
  if fas.ndim != 2 or fas.shape[1] != 2:
    raise ValueError(f'fas must be [T, 2] (real, forged), got {fas.shape}.')
  _check_fps(fps)
  forged = fas[:, 1] > fas[:, 0]
  rows = _run_rows(forged, fas[:, 1], fps)
  return _best_first(rows, max_proposals)


def nms_1d(rows, iou_threshold):
  """Greedy 1-D non-maximum suppression.

  Walks the rows best score first (stable) and drops every row whose IoU with
  an already kept row is > `iou_threshold` (so 0 drops any overlap).

  Args:
    rows: `[K, 3]` rows `(score, start, end)`.
    iou_threshold: IoU above which the lower-scored row is dropped.

  Returns:
    `[K', 3]` kept rows, best first.
  """
  rows = np.asarray(rows).reshape(-1, 3)
  rows = rows[np.argsort(-rows[:, 0], kind='stable')]
  keep = np.ones(len(rows), bool)
  for i in range(len(rows)):
    if not keep[i]:
      continue
    rest = np.flatnonzero(keep[i + 1:]) + i + 1
    iou = interval_iou(rows[i, 1], rows[i, 2], rows[rest, 1], rows[rest, 2])
    keep[rest[iou > iou_threshold]] = False
  return rows[keep]


def multi_threshold_proposals(forged_score, fps, thresholds, nms_iou,
                              max_proposals=100):
  """Runs above several thresholds, pooled, pruned by NMS.

  For each threshold, every maximal run of frames with `forged_score > thr` is
  a candidate scored by its mean `forged_score`. The same run found at several
  thresholds is kept once; the pool then goes through greedy 1-D NMS.

  Args:
    forged_score: `[T]` per-frame forged probability of one video (no padding).
    fps: frames per second of `forged_score`.
    thresholds: iterable of score thresholds.
    nms_iou: NMS drops a proposal whose IoU with a better one is > this.
    max_proposals: keep at most this many rows.

  Returns:
    `[K, 3]` float32 rows `(score, start_s, end_s)`, best first (ties keep
    threshold then temporal order); `[0, 3]` when no frame passes a threshold.
  """
  score = np.asarray(forged_score)
  if score.ndim != 1:
    raise ValueError(f'forged_score must be [T], got {score.shape}.')
  _check_fps(fps)
  pool = [_run_rows(score > thr, score, fps) for thr in thresholds]
  if not pool:
    return np.zeros((0, 3), np.float32)
  rows = np.concatenate(pool, axis=0)
  # Identical runs carry no new information; np.unique sorts, so recover the
  # first occurrence to keep the pool order for stable ties.
  _, first = np.unique(rows[:, 1:], axis=0, return_index=True)
  rows = rows[np.sort(first)]
  return _best_first(nms_1d(rows, nms_iou), max_proposals)
