"""Temporal forgery localisation and video classification metrics.

`ap_ar_1d` and `ap_ar` reproduce the official AV-Deepfake1M evaluator (the
`avdeepfake1m` package, `src/loc_1d.rs`; the same algorithm as LAV-DF's
`metrics.py`), quirks included (DESIGN.md section 5):

- float32 throughout: times, IoUs, thresholds, and the AP and AR sums, added
  in the order the Rust code adds them, so results are bit for bit the
  official ones;
- with `fps` other than 1, proposal times are frames: divided by `fps`
  (float32), while ground truth stays in seconds;
- AP matching walks the ground truth of a video in order and gives each segment
  the first unused proposal in *list* order with IoU strictly > t;
- AP pools all proposals, sorts them by score (stable) and leaves out the first
  step of the precision-recall sum, so a perfect result on 3 segments scores
  2/3;
- AR@N takes the first N proposals in list order and lets one proposal recall
  several segments.

Switches cover the textbook AP (`official_quirks=False`) and MDP's own
evaluator (`ar_order='temporal'`, `drop_gt_without_proposals=True`).

Unlike the official package, nothing panics: a video with an empty list or
missing from the predictions has no proposals (its segments are misses).

Inputs are flat (`ragged.RaggedRows`: one float32 array plus offsets), and
the work is vectorised over (ground-truth segment, proposal) pairs of the same
video, in batches of videos so that memory stays bounded: 100,000 videos x 100
proposals take seconds, 1.1 million take well under 24 GB.
"""

import functools
import warnings

import numpy as np

from wmmt_jax.evaluation import ragged
from wmmt_jax.evaluation import streaming
from wmmt_jax.evaluation.proposals import interval_iou

# 0.5:0.05:0.95 as the float32 values the official evaluator compares with.
# (`[0.5, 0.55, ..., 0.95]` and `np.linspace(0.5, 0.95, 10)` give the same ten
# float32 numbers.)
DEFAULT_AR_IOUS = tuple(
    float(x) for x in np.linspace(0.5, 0.95, 10).astype(np.float32))

# Evaluation protocols: AP IoU thresholds, AR proposal counts and AR IoUs, so
# `ap_ar_1d(predictions, ground_truth, **PROTOCOLS[name])` works.
PROTOCOLS = {
    'avdeepfake1m': dict(
        ap_ious=(0.5, 0.75, 0.9, 0.95),
        ar_ns=(50, 30, 20, 10, 5),
        ar_ious=DEFAULT_AR_IOUS),
    'lavdf': dict(
        ap_ious=(0.5, 0.75, 0.95),
        ar_ns=(100, 50, 20, 10),
        ar_ious=DEFAULT_AR_IOUS),
    # The WMMT paper's tables (Table I-III).
    'wmmt': dict(
        ap_ious=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7),
        ar_ns=(20, 10, 5, 2),
        ar_ious=DEFAULT_AR_IOUS),
}

# The metadata field with the forged segments, per protocol. The WMMT paper
# scores both data sets, so 'wmmt' takes whichever of the two the metadata has.
SEGMENTS_KEYS = {
    'avdeepfake1m': ('fake_segments',),
    'lavdf': ('fake_periods',),
    'wmmt': ('fake_segments', 'fake_periods'),
}

AR_ORDERS = ('listed', 'temporal')

# Pairs (segment x proposal of its video) per batch: bounds the memory of the
# pairwise arrays (~60 bytes a pair) whatever the input size.
_PAIRS_PER_BATCH = 1 << 21


class EvaluationWarning(UserWarning):
  """Inputs that are scored, but probably not as the caller meant."""


def _greedy_match(rank, outer, inner, n_outer, n_inner):
  """Greedy one-to-one matching, vectorised over videos.

  Each `outer` item, in order of its `rank` within its video, takes the first
  still unused `inner` item among its candidate pairs. Items of one rank belong
  to different videos, so they never compete and a whole rank is one step.
  The `P` pairs are the candidates only (IoU above the threshold), sorted by
  (rank, outer, preference), so "first" means "preferred".

  Args:
    rank: `[P]` rank of the pair's outer item within its video.
    outer: `[P]` id of the outer item.
    inner: `[P]` id of the inner item.
    n_outer: number of outer items.
    n_inner: number of inner items.

  Returns:
    `(outer_matched [n_outer], inner_matched [n_inner])` bool arrays.
  """
  outer_hit = np.zeros(n_outer, bool)
  inner_used = np.zeros(n_inner, bool)
  if rank.size == 0:
    return outer_hit, inner_used
  cuts = (np.flatnonzero(np.diff(rank)) + 1).tolist()
  for lo, hi in zip([0] + cuts, cuts + [rank.size]):
    o, i = outer[lo:hi], inner[lo:hi]
    free = ~inner_used[i]
    o, i = o[free], i[free]
    if o.size == 0:
      continue
    new_outer = np.ones(o.size, bool)
    np.not_equal(o[1:], o[:-1], out=new_outer[1:])
    first = np.flatnonzero(new_outer)
    outer_hit[o[first]] = True
    inner_used[i[first]] = True
  return outer_hit, inner_used


def _rust_sum(values, positions=None, length=None):
  """Float32 sum in the order of ndarray's `sum` (`unrolled_fold`).

  Eight running float32 partial sums over `x[8j + l]`, combined as
  `0 + (p0 + p4) + (p1 + p5) + (p2 + p6) + (p3 + p7)`, then the tail of
  `length % 8` values added one by one. Adding in this order makes the AP and
  AR values bit for bit the official ones.

  Args:
    values: float32 values, nonnegative when `positions` is given.
    positions: increasing int positions of `values` in an array of `length`
      that is zero elsewhere (adding +0.0 changes no partial sum), or None
      for a dense array.
    length: length of that array.

  Returns:
    The float32 sum.
  """
  values = np.asarray(values, np.float32)
  if positions is None:
    positions = np.arange(values.size)
    length = values.size
  main = 8 * (length // 8)
  in_main = positions < main
  lane_values, lane = values[in_main], positions[in_main] % 8
  p = np.zeros(8, np.float32)
  for l in range(8):
    v = lane_values[lane == l]
    if v.size:
      # cumsum, unlike np.sum, adds sequentially.
      p[l] = np.cumsum(v, dtype=np.float32)[-1]
  acc = np.float32(0)
  for a, b in ((0, 4), (1, 5), (2, 6), (3, 7)):
    acc = np.float32(acc + np.float32(p[a] + p[b]))
  for v in values[~in_main]:
    acc = np.float32(acc + v)
  return acc


def _rust_mean_column(values, contiguous):
  """Mean of float32 `values` as ndarray's `mean` of one column of a matrix.

  A column with stride 1 (a one-column matrix) is summed by `unrolled_fold`;
  any other column left to right.
  """
  values = np.asarray(values, np.float32)
  if contiguous:
    total = _rust_sum(values)
  else:
    total = np.float32(0)
    for v in values:
      total = np.float32(total + v)
  return np.float32(total / np.float32(values.size))


def _sort_keys(scores):
  """uint64 keys whose ascending order is the official pooled ranking.

  The official evaluator sorts the pool with a stable `sort_by` on
  descending score. A stable argsort of 10^8 floats is slow; unique keys
  (order-preserving bits of the descending score above the pool index) sort
  fast and give the same order.

  Returns:
    `[P]` uint64 keys, or None when that does not work (NaN scores, more than
    2^32 proposals) and a stable argsort must do.
  """
  n = scores.size
  if n >= 1 << 32 or np.isnan(scores).any():
    return None
  # + 0 turns -0.0 into +0.0: the two compare equal, as in Rust.
  bits = (scores + np.float32(0)).view(np.uint32)
  # Descending order as uint32: positive floats (sign 0) flip their other 31
  # bits, so larger comes first, and sort before negative floats, whose bits
  # already grow with magnitude.
  flip = bits >> 31
  flip -= np.uint32(1)
  flip &= np.uint32(0x7FFFFFFF)
  bits ^= flip
  keys = bits.astype(np.uint64)
  del bits, flip
  keys <<= np.uint64(32)
  keys |= np.arange(n, dtype=np.uint64)
  return keys


def _pool_ranks(scores, subsets):
  """1-based ranks, in the official pooled order, of subsets of the pool.

  Args:
    scores: `[P]` float32 scores of the pool.
    subsets: list of int arrays of pool indices.

  Returns:
    A list of int64 rank arrays, one per subset.
  """
  keys = _sort_keys(scores)
  if keys is None:
    order = np.argsort(-scores, kind='stable')
    rank = np.empty(scores.size, np.int64)
    rank[order] = np.arange(1, scores.size + 1)
    return [rank[s] for s in subsets]
  wanted = [keys[s] for s in subsets]
  keys.sort()
  return [np.searchsorted(keys, w) + 1 for w in wanted]


def _average_precision(tp_ranks, n_pool, n_labels, skip_first_step):
  """AP of the pooled proposals (DESIGN.md section 5), bit for bit official.

  `calc_ap_curve` + `calculate_ap` of the official code, in float32: the
  running TP count `acc`, precision `acc / (k as f32 + 1)`, recall
  `acc / n_labels`, the curve reversed behind a `(1, 0)` point, and
  `sum |recall step| * running max of precision`. Only true positives
  change the recall, and the running max of precision from rank k on is a
  max over true positives (precision only falls between them), so the sum
  needs just the ranks of the true positives.

  Args:
    tp_ranks: increasing 1-based ranks of the true positives in the pool.
    n_pool: number of pooled proposals.
    n_labels: number of ground-truth segments.
    skip_first_step: leave out the step from recall 0 at rank 1, as the
      official code does; False gives the textbook sum from k = 1.

  Returns:
    AP as a Python float; 0.0 without labels or proposals.
  """
  if n_labels == 0 or n_pool == 0 or tp_ranks.size == 0:
    return 0.0
  # The Rust running count is a float32 sum of ones: it stops at 2^24.
  acc = np.minimum(np.arange(1, tp_ranks.size + 1), 2**24).astype(np.float32)
  before = np.minimum(np.arange(tp_ranks.size), 2**24).astype(np.float32)
  labels = np.float32(n_labels)
  step = np.abs(before / labels - acc / labels)
  # `i as f32 + 1.0` for the 0-based index i = rank - 1.
  precision = acc / ((tp_ranks - 1).astype(np.float32) + np.float32(1))
  best = np.maximum.accumulate(precision[::-1])[::-1]
  terms = step * best
  # Term of rank k sits at position n_pool - k + 1 of the summed array
  # (n_pool terms, or n_pool + 1 with the first step kept).
  position = n_pool - tp_ranks + 1
  if skip_first_step:
    keep = tp_ranks > 1
    terms, position = terms[keep], position[keep]
  length = n_pool if skip_first_step else n_pool + 1
  return float(_rust_sum(terms[::-1], position[::-1], length))


def _batches(cost, budget):
  """Cuts videos into consecutive batches of about `budget` total cost.

  Args:
    cost: `[V]` nonnegative cost of each video.
    budget: target cost of a batch; a video above it is a batch alone.

  Returns:
    `[B + 1]` int64 batch edges, `0 ... V`.
  """
  total = np.cumsum(cost)
  if not total.size:
    return np.zeros(1, np.int64)
  marks = np.arange(budget, total[-1], budget)
  edges = np.searchsorted(total, marks, side='right')
  return np.unique(np.concatenate([[0], edges, [total.size]]))


class _Batch:
  """Proposals and segments of consecutive videos, and all their pairs.

  Pairs are ordered by (segment, proposal list index): each segment against
  every proposal of its video. Indices are local to the batch.
  """

  def __init__(self, rows, n_prop, gts, n_gt, fps):
    self.scores = rows[:, 0]
    times = rows[:, 1:3]
    if fps != 1:
      # Proposal times in frames, ground truth in seconds: the official
      # `x / fps` in float32.
      times = times / np.float32(fps)
    self.start, self.end = times[:, 0], times[:, 1]
    n_videos = n_prop.size
    self.prop_off = np.cumsum(n_prop) - n_prop
    self.prop_video = np.repeat(np.arange(n_videos), n_prop)
    gt_off = np.cumsum(n_gt) - n_gt
    self.gt_video = np.repeat(np.arange(n_videos), n_gt)
    self.gt_index = np.arange(len(gts)) - gt_off[self.gt_video]

    per_gt = n_prop[self.gt_video]
    self.per_gt = per_gt
    self.pair_gt = np.repeat(np.arange(len(gts)), per_gt)
    self.block_start = np.cumsum(per_gt) - per_gt
    within = np.arange(self.pair_gt.size) - np.repeat(self.block_start, per_gt)
    self.within = within
    self.pair_prop = np.repeat(self.prop_off[self.gt_video], per_gt) + within
    self.iou = interval_iou(self.start[self.pair_prop],
                            self.end[self.pair_prop],
                            np.repeat(gts[:, 0], per_gt),
                            np.repeat(gts[:, 1], per_gt))

  def match_listed(self, t):
    """Official AP matching at IoU > t: `[K]` bool, proposal is a TP."""
    cand = np.flatnonzero(self.iou > np.float32(t))
    gt = self.pair_gt[cand]
    rank = self.gt_index[gt]
    if rank.size and rank.max() > 0:
      order = np.argsort(rank, kind='stable')
      cand, gt, rank = cand[order], gt[order], rank[order]
    _, prop_hit = _greedy_match(rank, gt, self.pair_prop[cand],
                                self.gt_video.size, self.scores.size)
    return prop_hit

  def match_by_score(self, t):
    """Textbook AP matching at IoU > t: `[K]` bool, proposal is a TP.

    Proposals of a video in descending score order (ties in list order) each
    take the unused segment of best IoU, the earlier segment on a tie.
    """
    cand = np.flatnonzero(self.iou > np.float32(t))
    prop, gt = self.pair_prop[cand], self.pair_gt[cand]
    rank = self.score_rank[prop]
    order = np.lexsort((self.gt_index[gt], -self.iou[cand], prop, rank))
    prop_hit, _ = _greedy_match(rank[order], prop[order], gt[order],
                                self.scores.size, self.gt_video.size)
    return prop_hit

  @functools.cached_property
  def score_rank(self):
    """`[K]` rank of each proposal by descending score in its video."""
    by_score = np.lexsort((-self.scores, self.prop_video))
    rank = np.empty(self.scores.size, np.int64)
    rank[by_score] = (np.arange(self.scores.size) -
                      self.prop_off[self.prop_video[by_score]])
    return rank

  def ar_iou(self, ar_order):
    """Pair IoUs with each segment's block in the order AR@N takes proposals."""
    if ar_order == 'listed':
      return self.iou
    # Temporal: stable sort by start within each video; `list_index[q]` is
    # the list index of the q-th proposal in temporal order.
    by_start = np.lexsort((self.start, self.prop_video))
    list_index = by_start - self.prop_off[self.prop_video[by_start]]
    # Pair p is (segment, q-th proposal in temporal order); its IoU sits at
    # the segment's block start plus that proposal's list index.
    pair = (np.arange(self.iou.size) - self.within +
            list_index[self.pair_prop])
    return self.iou[pair]

  def best_iou_of_first(self, iou, n):
    """`[S]` best IoU of each segment with proposals over its first n pairs.

    nan when all of them are nan; fmax skips nan as Rust's f32::max does.
    """
    has = self.per_gt > 0
    starts = self.block_start[has]
    if not starts.size:
      return np.zeros(0, np.float32)
    index = np.empty(2 * starts.size, np.int64)
    index[0::2] = starts
    index[1::2] = starts + np.minimum(self.per_gt[has], n)
    # reduceat over [start, end) ranges; the odd ranges are thrown away, and
    # the appended nan keeps the last end a valid index.
    padded = np.append(iou, np.float32(np.nan))
    return np.fmax.reduceat(padded, index)[0::2]


def _score(props, gts, video_index, ap_ious, ar_ns, ar_ious, *, fps,
           official_quirks, ar_order, drop_gt_without_proposals):
  """AP and AR of aligned flat inputs; see `ap_ar_1d` for the algorithm.

  Args:
    props: `RaggedRows` of `[score, start, end]` proposals.
    gts: `RaggedRows` of `[start, end]` ground-truth segments: the videos that
      are scored, in pooling order.
    video_index: `[len(gts)]` index into `props` of each scored video, -1 when
      it has no predictions.
    ap_ious, ar_ns, ar_ious: thresholds and counts.
    fps: proposal times are divided by it.
    official_quirks: list-order matching and the first AP step left out.
    ar_order: 'listed' or 'temporal'.
    drop_gt_without_proposals: AR counts only segments of videos with
      proposals.

  Returns:
    `{'ap': {float(iou): ap}, 'ar': {int(n): ar}}`.
  """
  n_gt = gts.lengths
  present = video_index >= 0
  n_prop = np.zeros(len(gts), np.int64)
  n_prop[present] = props.lengths[video_index[present]]
  pool_off = np.zeros(len(gts) + 1, np.int64)
  np.cumsum(n_prop, out=pool_off[1:])
  n_pool = int(pool_off[-1])
  n_labels = int(n_gt.sum())

  # The pool, in metadata order then list order, as the official
  # concatenation; for each AP threshold, the pool indices of the TPs.
  pool_scores = np.empty(n_pool, np.float32)
  tp_index = [[] for _ in ap_ious]
  ar_t = np.asarray(ar_ious, np.float32)
  ar_tp = np.zeros((len(ar_ns), ar_t.size), np.int64)

  edges = _batches(n_prop * n_gt + n_prop + n_gt, _PAIRS_PER_BATCH)
  for v0, v1 in zip(edges[:-1], edges[1:]):
    rows, counts = ragged.gather(props, video_index[v0:v1])
    batch = _Batch(rows, counts, gts.rows[gts.offsets[v0]:gts.offsets[v1]],
                   n_gt[v0:v1], fps)
    lo, hi = pool_off[v0], pool_off[v1]
    pool_scores[lo:hi] = batch.scores
    for i, t in enumerate(ap_ious):
      match = batch.match_listed if official_quirks else batch.match_by_score
      tp_index[i].append(np.flatnonzero(match(t)) + lo)
    iou = batch.ar_iou(ar_order)
    for i, n in enumerate(ar_ns):
      best = batch.best_iou_of_first(iou, n)
      ar_tp[i] += (best[:, None] > ar_t[None, :]).sum(axis=0)
    del batch, rows, iou

  tp_index = [np.concatenate(x) if x else np.zeros(0, np.int64)
              for x in tp_index]
  ranks = _pool_ranks(pool_scores, tp_index) if n_labels else tp_index
  del pool_scores
  ap = {}
  for i, t in enumerate(ap_ious):
    ap[float(t)] = _average_precision(np.sort(ranks[i]), n_pool, n_labels,
                                      skip_first_step=official_quirks)

  counted = int(n_gt[n_prop > 0].sum()) if drop_gt_without_proposals else (
      n_labels)
  ar = {}
  for i, n in enumerate(ar_ns):
    # tp / (tp + fn) in float32 per threshold, then ndarray's mean of the
    # threshold column of a [thresholds, ns] matrix.
    tp = ar_tp[i].astype(np.float32)
    fn = (counted - ar_tp[i]).astype(np.float32)
    total = tp + fn
    recall = np.divide(tp, total, out=np.zeros_like(tp), where=total != 0)
    ar[int(n)] = float(_rust_mean_column(recall, contiguous=len(ar_ns) == 1))
  return {'ap': ap, 'ar': ar}


def _check_settings(ap_ious, ar_ns, ar_ious, fps, ar_order):
  """Raises ValueError on thresholds, counts or fps the evaluator cannot use."""
  if ar_order not in AR_ORDERS:
    raise ValueError(f'ar_order must be one of {AR_ORDERS}, got {ar_order!r}.')
  if not np.isfinite(fps) or not fps > 0:
    raise ValueError(f'fps must be a finite number > 0, got {fps!r}.')
  for n in ar_ns:
    if int(n) != n or n < 1:
      raise ValueError(f'AR proposal counts must be integers >= 1, got {n!r}.')
  for t in (*ap_ious, *ar_ious):
    if not np.isfinite(t):
      raise ValueError(f'IoU thresholds must be finite, got {t!r}.')
  if not ar_ious and ar_ns:
    raise ValueError('AR needs at least one IoU threshold.')


def _as_table(value, width, what):
  """A `RaggedRows` as is, or one built from a `{file: rows}` mapping."""
  if isinstance(value, ragged.RaggedRows):
    if value.width != width:
      raise ValueError(f'{what} rows must have {width} values, got '
                       f'{value.width}.')
    return value
  return ragged.RaggedRows.from_mapping(value, width, what)


def ap_ar_1d(predictions, ground_truth, ap_ious, ar_ns,
             ar_ious=DEFAULT_AR_IOUS, *, official_quirks=True,
             ar_order='listed', drop_gt_without_proposals=False, fps=1.0):
  """AP@IoU and AR@N of temporal forgery localisation, as the official one.

  Only files of `ground_truth` are scored (as the official evaluator, which
  walks the metadata); a file missing from `predictions`, or with an empty
  list, has no proposals and its segments count as misses (the official
  package panics there; its usual dummy row `[0, 0, 0]` gives the same result
  as long as every real score is > 0, since the dummy is an FP at score 0).
  Values are not checked here (training evaluation must not stop on a NaN
  score); `ap_ar` checks every row.

  AP at threshold t (`official_quirks=True`): in each video, each ground-truth
  segment in order takes the first unused proposal in list order with IoU > t.
  All proposals of all videos are pooled and stable-sorted by score, and
  AP = sum_{k >= 2} (rec_k - rec_{k-1}) max_{j >= k} prec_j with recall over
  every ground-truth segment. `official_quirks=False` gives the textbook AP:
  proposals of a video in descending score order each take the unused segment
  of best IoU > t, and the sum starts at k = 1. Both keep float32 and strict >.

  AR@N: per video the first N proposals (`ar_order='listed'`: list order;
  `'temporal'`: after a stable sort by start time, as MDP's evaluator sees its
  temporally ordered lists); a segment is recalled when any of them has
  IoU > t; TP and FN pooled over all segments; mean over `ar_ious`.
  `drop_gt_without_proposals=True` leaves segments of videos without proposals
  out of AR (MDP's evaluator). To reproduce MDP's AP as well, pass each list in
  temporal order, since AP matching follows list order.

  Args:
    predictions: dict file -> `[K, 3]` rows `(score, start, end)`, best
      first as in the challenge format (any array-like; may be empty), or a
      `ragged.RaggedRows` of them (the last of repeated files counts).
    ground_truth: dict file -> `[N, 2]` forged segments `(start_s, end_s)`;
      empty for a real video. Or a `ragged.RaggedRows`, whose repeated files
      are each scored, as the official evaluator does with repeated metadata
      entries.
    ap_ious: AP IoU thresholds.
    ar_ns: AR proposal counts.
    ar_ious: AR IoU thresholds, averaged.
    official_quirks: official list-order matching and skipped first AP step.
    ar_order: 'listed' or 'temporal'.
    drop_gt_without_proposals: MDP's AR denominator.
    fps: proposal times are in frames at this rate (divided by it, in
      float32); ground truth is in seconds. 1 for times in seconds.

  Returns:
    `{'ap': {float(iou): ap}, 'ar': {int(n): ar}}` with Python floats in
    [0, 1] (float32 values); AP is 0.0 when there is no ground-truth
    segment (the official code gives NaN there).
  """
  _check_settings(ap_ious, ar_ns, ar_ious, fps, ar_order)
  props = _as_table(predictions, 3, 'predictions')
  gts = _as_table(ground_truth, 2, 'ground_truth')
  video_index, _ = align(props, gts)
  return _score(props, gts, video_index, ap_ious, ar_ns, ar_ious, fps=fps,
                official_quirks=official_quirks, ar_order=ar_order,
                drop_gt_without_proposals=drop_gt_without_proposals)


def align(props, gts):
  """Which predictions belong to which scored video.

  Args:
    props: `RaggedRows` of predictions.
    gts: `RaggedRows` of ground truth.

  Returns:
    `(video_index, stats)`: `[len(gts)]` int64 index into `props` (-1 when
    the file has no predictions; the last of repeated prediction files), and
    a dict of counts for warnings: `missing` (scored videos without
    predictions), `missing_segments` (their segments), `extra` (prediction
    files not in the ground truth) with `extra_example`, and `duplicates`
    (repeated prediction files).
  """
  unique = set(props.files)
  if len(unique) == len(props.files) and props.files == gts.files:
    # Predictions written in metadata order: no lookups.
    video_index = np.arange(len(gts), dtype=np.int64)
    extra = []
  else:
    index = {f: i for i, f in enumerate(props.files)}
    video_index = np.fromiter((index.get(f, -1) for f in gts.files),
                              np.int64, count=len(gts))
    scored = set(gts.files)
    extra = [f for f in index if f not in scored]
  missing = video_index < 0
  stats = dict(
      missing=int(missing.sum()),
      missing_segments=int(gts.lengths[missing].sum()),
      extra=len(extra), extra_example=extra[0] if extra else None,
      duplicates=len(props.files) - len(unique))
  return video_index, stats


def ap_ar(predictions, metadata, protocol='avdeepfake1m', *,
          segments_key=None, file_key='file', fps=1.0, ap_ious=None,
          ar_ns=None, ar_ious=None, official_quirks=True, ar_order='listed',
          drop_gt_without_proposals=None, strict=False,
          names=('predictions', 'metadata')):
  """Scores predictions against metadata with a protocol; checks every input.

  The library face of the standalone evaluator (`python -m wmmt_jax.evaluate`
  reads the two JSON files and calls this): the same algorithm as `ap_ar_1d`
  (official by default), with the protocol's thresholds unless overridden, and
  with the inputs checked: a malformed row (NaN or infinite value,
  end < start) raises `ragged.InputError` naming the file and the row.
  Videos of the metadata missing from the predictions count as videos
  without proposals (all misses) and are reported with an
  `EvaluationWarning`; so are predictions for files not in the metadata
  (ignored, or an error with `strict=True`).

  Args:
    predictions: `{file: [[score, start, end], ...]}` (lists or arrays) or a
      `ragged.RaggedRows` (`streaming.read_predictions`).
    metadata: the metadata as loaded from JSON (a list of dicts with
      `file_key` and the segments key), a `{file: [[start, end], ...]}`
      dict, or a `ragged.RaggedRows` (`streaming.read_metadata`).
    protocol: a key of `PROTOCOLS`: default thresholds and segments key.
    segments_key: metadata field with the segments (`fake_segments` in
      AV-Deepfake1M, `fake_periods` in LAV-DF); default from `protocol`.
    file_key: metadata field with the file name.
    fps: proposal times are frames at this rate; 1 for seconds.
    ap_ious: AP thresholds, default the protocol's.
    ar_ns: AR proposal counts, default the protocol's.
    ar_ious: AR thresholds, default the protocol's.
    official_quirks: False for the textbook AP (see `ap_ar_1d`).
    ar_order: 'listed' (official) or 'temporal' (MDP's evaluator).
    drop_gt_without_proposals: AR without segments of videos that have no
      proposals; default True with `ar_order='temporal'` (MDP's evaluator),
      else False.
    strict: predictions for files not in the metadata are an error.
    names: how the two inputs are named in messages (e.g. their paths).

  Returns:
    `{'ap': {float(iou): ap}, 'ar': {int(n): ar}}`, Python floats in [0, 1].

  Raises:
    ragged.InputError: malformed input, or extra predictions with `strict`.
    ValueError: unknown protocol or unusable settings.
  """
  if protocol not in PROTOCOLS:
    raise ValueError(f'protocol must be one of {sorted(PROTOCOLS)}, got '
                     f'{protocol!r}.')
  proto = PROTOCOLS[protocol]
  ap_ious = tuple(proto['ap_ious'] if ap_ious is None else ap_ious)
  ar_ns = tuple(proto['ar_ns'] if ar_ns is None else ar_ns)
  ar_ious = tuple(proto['ar_ious'] if ar_ious is None else ar_ious)
  if drop_gt_without_proposals is None:
    drop_gt_without_proposals = ar_order == 'temporal'
  _check_settings(ap_ious, ar_ns, ar_ious, fps, ar_order)
  pred_name, meta_name = names

  props = _as_table(predictions, 3, pred_name)
  if isinstance(metadata, (list, tuple)):
    keys = (segments_key,) if segments_key else SEGMENTS_KEYS[protocol]
    gts = streaming.segments_from_entries(metadata, file_key, keys, meta_name)
  else:
    gts = _as_table(metadata, 2, meta_name)
  ragged.check_rows(props, pred_name, is_proposal=True)
  ragged.check_rows(gts, meta_name, is_proposal=False)

  video_index, stats = align(props, gts)
  if stats['extra']:
    message = (f'{pred_name}: {stats["extra"]} of {len(props)} predicted '
               f'files are not in {meta_name} (e.g. '
               f'{stats["extra_example"]!r})')
    if strict:
      raise ragged.InputError(message + '.')
    warnings.warn(message + '; they are ignored.', EvaluationWarning,
                  stacklevel=2)
  if stats['missing']:
    warnings.warn(
        f'{pred_name}: {stats["missing"]} of {len(gts)} videos of '
        f'{meta_name} have no predictions; their {stats["missing_segments"]} '
        'forged segments count as misses.', EvaluationWarning, stacklevel=2)
  if stats['duplicates']:
    warnings.warn(
        f'{pred_name}: {stats["duplicates"]} files appear more than once; the '
        'last entry of each counts.', EvaluationWarning, stacklevel=2)
  repeated = len(gts) - len(set(gts.files))
  if repeated:
    warnings.warn(
        f'{meta_name}: {repeated} entries repeat a file; each is scored, as '
        'the official evaluator does.', EvaluationWarning, stacklevel=2)
  return _score(props, gts, video_index, ap_ious, ar_ns, ar_ious, fps=fps,
                official_quirks=official_quirks, ar_order=ar_order,
                drop_gt_without_proposals=drop_gt_without_proposals)


def video_accuracy(pred_class, label):
  """Fraction of videos whose predicted class equals the label.

  Args:
    pred_class: `[N]` predicted classes.
    label: `[N]` true classes.

  Returns:
    Accuracy in [0, 1]; nan for N = 0.
  """
  pred_class, label = np.asarray(pred_class), np.asarray(label)
  if pred_class.shape != label.shape:
    raise ValueError(f'pred_class {pred_class.shape} and label {label.shape} '
                     'must have the same shape.')
  if pred_class.size == 0:
    return float('nan')
  return float(np.mean(pred_class == label))


def _average_ranks(x):
  """1-based ranks of `[N]` values, ties sharing their average rank."""
  order = np.argsort(x, kind='stable')
  xs = x[order]
  # Group boundaries of equal values in sorted order.
  starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
  ends = np.r_[starts[1:], xs.size]
  avg = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
  ranks = np.empty(x.size, np.float64)
  ranks[order] = np.repeat(avg, ends - starts)
  return ranks


def binary_auc(scores, labels):
  """ROC AUC via the Mann-Whitney rank statistic, ties counting one half.

  Args:
    scores: `[N]` scores, higher = more likely positive.
    labels: `[N]` labels in {0, 1}.

  Returns:
    AUC in [0, 1]; nan when one of the classes is absent.
  """
  scores = np.asarray(scores, np.float64).reshape(-1)
  labels = np.asarray(labels).reshape(-1)
  if scores.shape != labels.shape:
    raise ValueError(f'scores {scores.shape} and labels {labels.shape} must '
                     'have the same shape.')
  if not np.isin(labels, (0, 1)).all():
    raise ValueError('labels must be 0 or 1.')
  pos = labels == 1
  n_pos, n_neg = int(pos.sum()), int((~pos).sum())
  if n_pos == 0 or n_neg == 0:
    return float('nan')
  rank_sum = _average_ranks(scores)[pos].sum()
  return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
