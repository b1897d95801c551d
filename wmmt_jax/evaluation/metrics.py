"""Temporal forgery localisation and video classification metrics.

`ap_ar_1d` reproduces the official AV-Deepfake1M evaluator (the `avdeepfake1m`
package, `src/loc_1d.rs`; the same algorithm as LAV-DF's `metrics.py`),
quirks included (DESIGN.md section 5):

- float32 throughout: times, IoUs and thresholds;
- AP matching walks the ground truth of a video in order and gives each segment
  the first unused proposal in *list* order with IoU strictly > t;
- AP leaves out the first step of the precision-recall sum, so a perfect result
  on 3 segments scores 2/3;
- AR@N takes the first N proposals in list order and lets one proposal recall
  several segments.

Switches cover the textbook AP (`official_quirks=False`) and MDP's own
evaluator (`ar_order='temporal'`, `drop_gt_without_proposals=True`).

Everything is vectorised over (ground-truth segment, proposal) pairs of the
same video, so 30k videos x 100 proposals take seconds.
"""

import numpy as np

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

AR_ORDERS = ('listed', 'temporal')


def _as_rows(value, width, what, file):
  """`value` as a float32 `[K, width]` array; None or empty gives `[0, width]`."""
  if value is None:
    return np.zeros((0, width), np.float32)
  rows = np.asarray(value, np.float32)
  if rows.size == 0:
    return np.zeros((0, width), np.float32)
  if rows.ndim != 2 or rows.shape[1] != width:
    raise ValueError(f'{what}[{file!r}] must be [K, {width}], got shape '
                     f'{rows.shape}.')
  return rows


class _Pairs:
  """All (ground-truth segment, proposal) pairs of the same video, flattened.

  Proposals and segments of all videos are concatenated in ground-truth file
  order; pairs are ordered by (segment, proposal list index).
  """

  def __init__(self, predictions, ground_truth):
    files = list(ground_truth)
    props = [_as_rows(predictions.get(f), 3, 'predictions', f) for f in files]
    gts = [_as_rows(ground_truth[f], 2, 'ground_truth', f) for f in files]
    n_prop = np.array([len(p) for p in props], np.int64)
    n_gt = np.array([len(g) for g in gts], np.int64)
    # Exclusive prefix sums: where each video's rows start.
    prop_off, gt_off = np.cumsum(n_prop) - n_prop, np.cumsum(n_gt) - n_gt
    self.props = (np.concatenate(props) if props
                  else np.zeros((0, 3), np.float32))
    self.gts = np.concatenate(gts) if gts else np.zeros((0, 2), np.float32)
    self.n_videos = len(files)
    self.n_prop, self.prop_off = n_prop, prop_off

    # Per proposal: its video and its index in the video's list.
    self.prop_video = np.repeat(np.arange(self.n_videos), n_prop)
    self.prop_index = np.arange(len(self.props)) - prop_off[self.prop_video]
    # Per ground-truth segment: its video and its index in the video.
    self.gt_video = np.repeat(np.arange(self.n_videos), n_gt)
    self.gt_index = np.arange(len(self.gts)) - gt_off[self.gt_video]
    self.gt_has_props = n_prop[self.gt_video] > 0

    # Pairs: each segment against every proposal of its video, list order.
    per_gt = n_prop[self.gt_video]
    self.pair_gt = np.repeat(np.arange(len(self.gts)), per_gt)
    block_start = np.cumsum(per_gt) - per_gt
    within = np.arange(len(self.pair_gt)) - block_start[self.pair_gt]
    self.pair_prop = prop_off[self.gt_video[self.pair_gt]] + within
    # Where each segment's block of pairs starts (segments with proposals).
    self.gt_block_start = block_start[self.gt_has_props]
    p, g = self.props[self.pair_prop], self.gts[self.pair_gt]
    self.iou = interval_iou(p[:, 1], p[:, 2], g[:, 0], g[:, 1])


def _greedy_match(rank, outer, inner, n_outer, n_inner):
  """Greedy one-to-one matching, vectorised over videos.

  Each `outer` item, in order of its `rank` within its video, takes the first
  still unused `inner` item among its candidate pairs. Items of one rank belong
  to different videos, so they never compete and a whole rank is one step.
  The `P` pairs are the candidates only (IoU above the threshold), sorted by
  (rank, outer, preference), so "first" means "preferred".

  Args:
    rank: `[P]` rank of the pair's outer item within its video.
    outer: `[P]` global id of the outer item.
    inner: `[P]` global id of the inner item.
    n_outer: number of outer items.
    n_inner: number of inner items.

  Returns:
    `(outer_matched [n_outer], inner_matched [n_inner])` bool arrays.
  """
  outer_hit = np.zeros(n_outer, bool)
  inner_used = np.zeros(n_inner, bool)
  if rank.size == 0:
    return outer_hit, inner_used
  cuts = np.flatnonzero(np.diff(rank)) + 1
  for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, rank.size]):
    o, i = outer[lo:hi], inner[lo:hi]
    free = ~inner_used[i]
    o, i = o[free], i[free]
    if o.size == 0:
      continue
    first = np.flatnonzero(np.r_[True, o[1:] != o[:-1]])
    outer_hit[o[first]] = True
    inner_used[i[first]] = True
  return outer_hit, inner_used


def _average_precision(is_tp, score_order, n_labels, skip_first_step):
  """AP of pooled proposals (DESIGN.md section 5).

  Args:
    is_tp: `[P]` bool, all proposals in pooled order.
    score_order: `[P]` indices sorting the pool by descending score (stable).
    n_labels: number of ground-truth segments.
    skip_first_step: leave out the k = 1 term, as the official code does.

  Returns:
    `sum_k (rec_k - rec_{k-1}) * max_{j >= k} prec_j` as a Python float.
  """
  if n_labels == 0 or is_tp.size == 0:
    return 0.0
  acc = np.cumsum(is_tp[score_order], dtype=np.float32)
  prec = acc / np.arange(1, acc.size + 1, dtype=np.float32)
  rec = acc / np.float32(n_labels)
  envelope = np.maximum.accumulate(prec[::-1])[::-1]
  drec = np.diff(rec, prepend=np.float32(0))
  terms = drec * envelope
  if skip_first_step:
    terms = terms[1:]
  return float(np.sum(terms, dtype=np.float64))


def ap_ar_1d(predictions, ground_truth, ap_ious, ar_ns,
             ar_ious=DEFAULT_AR_IOUS, *, official_quirks=True,
             ar_order='listed', drop_gt_without_proposals=False):
  """AP@IoU and AR@N of temporal forgery localisation, as the official evaluator.

  Only files of `ground_truth` are scored (as the official evaluator, which
  walks the metadata); a file missing from `predictions`, or with an empty
  list, has no proposals and its segments count as misses (the official
  package panics there; its usual dummy row `[0, 0, 0]` gives the same result
  as long as every real score is > 0, since the dummy is an FP at score 0).

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
    predictions: dict file -> `[K, 3]` rows `(score, start_s, end_s)`, best
      first as in the challenge format (any array-like; may be empty).
    ground_truth: dict file -> `[N, 2]` forged segments `(start_s, end_s)`;
      empty for a real video.
    ap_ious: AP IoU thresholds.
    ar_ns: AR proposal counts.
    ar_ious: AR IoU thresholds, averaged.
    official_quirks: official list-order matching and skipped first AP step.
    ar_order: 'listed' or 'temporal'.
    drop_gt_without_proposals: MDP's AR denominator.

  Returns:
    `{'ap': {float(iou): ap}, 'ar': {int(n): ar}}` with Python floats in
    [0, 1]; 0.0 everywhere when there is no ground-truth segment.
  """
  if ar_order not in AR_ORDERS:
    raise ValueError(f'ar_order must be one of {AR_ORDERS}, got {ar_order!r}.')
  pairs = _Pairs(predictions, ground_truth)
  n_labels = len(pairs.gts)
  scores = pairs.props[:, 0]

  # AP. Pairs are ordered by (segment, proposal list index); `rank` is what the
  # matching walks in order within a video.
  if official_quirks:
    # Outer = segments in order, inner = proposals, preferring list order.
    rank = pairs.gt_index[pairs.pair_gt]
    order = np.argsort(rank, kind='stable')
    outer, inner = pairs.pair_gt[order], pairs.pair_prop[order]
  else:
    # Outer = proposals by descending score within the video, inner =
    # segments, preferring higher IoU, then the earlier segment.
    by_score = np.lexsort((-scores, pairs.prop_video))
    score_rank = np.empty(len(scores), np.int64)
    score_rank[by_score] = np.arange(len(scores)) - pairs.prop_off[
        pairs.prop_video[by_score]]
    rank = score_rank[pairs.pair_prop]
    order = np.lexsort((pairs.gt_index[pairs.pair_gt], -pairs.iou,
                        pairs.pair_prop, rank))
    outer, inner = pairs.pair_prop[order], pairs.pair_gt[order]
  rank, iou = rank[order], pairs.iou[order]

  # Stable, as the official Rust `sort_by`: ties keep the pooled order.
  score_order = np.argsort(-scores, kind='stable')
  ap = {}
  for t in ap_ious:
    hit = iou > np.float32(t)
    outer_hit, inner_hit = _greedy_match(
        rank[hit], outer[hit], inner[hit],
        n_labels if official_quirks else len(scores),
        len(scores) if official_quirks else n_labels)
    is_tp = inner_hit if official_quirks else outer_hit
    ap[float(t)] = _average_precision(is_tp, score_order, n_labels,
                                      skip_first_step=official_quirks)

  # AR. Position of each proposal in the order AR@N takes them from.
  if ar_order == 'listed':
    position = pairs.prop_index
  else:
    by_start = np.lexsort((pairs.props[:, 1], pairs.prop_video))
    position = np.empty(len(scores), np.int64)
    position[by_start] = pairs.prop_index
  pair_position = position[pairs.pair_prop]
  ar_t = np.asarray(ar_ious, np.float32)
  counted = pairs.gt_has_props if drop_gt_without_proposals else np.ones(
      n_labels, bool)
  n_counted = int(counted.sum())
  ar = {}
  for n in ar_ns:
    tp = np.zeros(len(ar_t), np.int64)
    if pairs.gt_block_start.size:
      # Best IoU of each segment over the first n proposals of its video; fmax
      # skips the nan placeholders (and nan IoUs, as Rust's f32::max does).
      masked = np.where(pair_position < n, pairs.iou, np.float32(np.nan))
      best = np.fmax.reduceat(masked, pairs.gt_block_start)
      tp = (best[:, None] > ar_t[None, :]).sum(axis=0)
    if n_counted == 0:
      ar[int(n)] = 0.0
    else:
      recall = tp.astype(np.float32) / np.float32(n_counted)
      ar[int(n)] = float(np.mean(recall, dtype=np.float64))
  return {'ap': ap, 'ar': ar}


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
