"""AP/AR against a slow literal port of the official evaluator, plus hand cases.

`reference_ap_ar` follows `src/loc_1d.rs` of the `avdeepfake1m` package line by
line with float32 scalars (DESIGN.md section 5); `ap_ar_1d` is the vectorised
version under test.
"""

import json

import numpy as np
import pytest

from wmmt_jax.evaluation import metrics

F32 = np.float32


def _iou(p, g):
  """Float32 IoU of two `(start, end)` pairs, as `iou_1d` in loc_1d.rs."""
  inter = max(min(p[1], g[1]) - max(p[0], g[0]), F32(0))
  union = max(p[1], g[1]) - min(p[0], g[0])
  with np.errstate(divide='ignore', invalid='ignore'):
    return F32(inter / union)


def _match_official(props, gts, t):
  """Each segment in order takes the first unused proposal in list order."""
  used = []
  for g in gts:
    for j, p in enumerate(props):
      if _iou(p[1:], g) > t and j not in used:
        used.append(j)
        break
  return [j in used for j in range(len(props))]


def _match_textbook(props, gts, t):
  """Proposals by descending score take the unused segment of best IoU."""
  order = sorted(range(len(props)), key=lambda j: -props[j][0])
  taken, tp = set(), [False] * len(props)
  for j in order:
    best, best_i = None, None
    for i, g in enumerate(gts):
      v = _iou(props[j][1:], g)
      if i not in taken and v > t and (best is None or v > best):
        best, best_i = v, i
    if best_i is not None:
      taken.add(best_i)
      tp[j] = True
  return tp


def _ap_from_pool(pool, n_labels, official):
  """AP of `[(score, is_tp)]`: the Rust curve, or the textbook sum from k=1."""
  pool = sorted(pool, key=lambda x: -x[0])  # Python's sort is stable.
  recall, precision, acc = [], [], 0
  for k, (_, hit) in enumerate(pool):
    acc += hit
    recall.append(F32(acc) / F32(n_labels))
    precision.append(F32(acc) / F32(k + 1))
  if official:
    # calc_ap_curve + calculate_ap: prepend (1, 0), reverse, running max of
    # precision, sum of |recall steps| times it.
    x = [F32(1)] + recall[::-1]
    y = [F32(0)] + precision[::-1]
    total, y_max = 0.0, None
    for m in range(len(x) - 1):
      y_max = y[m] if y_max is None or y[m] > y_max else y_max
      total += float(abs(x[m + 1] - x[m]) * y_max)
    return total
  total, prev = 0.0, F32(0)
  for k in range(len(pool)):
    total += float((recall[k] - prev) * max(precision[k:]))
    prev = recall[k]
  return total


def reference_ap_ar(predictions, ground_truth, ap_ious, ar_ns,
                    ar_ious=metrics.DEFAULT_AR_IOUS, official_quirks=True,
                    ar_order='listed', drop_gt_without_proposals=False):
  """Slow, literal version of `metrics.ap_ar_1d`."""
  videos = []
  for f, segs in ground_truth.items():
    props = [[F32(x) for x in row] for row in predictions.get(f, [])]
    gts = [[F32(x) for x in seg] for seg in segs]
    videos.append((props, gts))
  n_labels = sum(len(g) for _, g in videos)

  ap = {}
  for t in ap_ious:
    pool = []
    for props, gts in videos:
      match = _match_official if official_quirks else _match_textbook
      tp = match(props, gts, F32(t))
      pool += [(p[0], hit) for p, hit in zip(props, tp)]
    ap[t] = _ap_from_pool(pool, n_labels, official_quirks) if n_labels else 0.0

  ar = {}
  for n in ar_ns:
    tp = np.zeros(len(ar_ious))
    fn = np.zeros(len(ar_ious))
    for props, gts in videos:
      if not props:
        if not drop_gt_without_proposals:
          fn += len(gts)
        continue
      if ar_order == 'temporal':
        props = sorted(props, key=lambda p: p[1])
      first = props[:n]
      for g in gts:
        best = max(_iou(p[1:], g) for p in first)
        for i, t in enumerate(ar_ious):
          if best > F32(t):
            tp[i] += 1
          else:
            fn[i] += 1
    recall = [tp[i] / (tp[i] + fn[i]) if tp[i] + fn[i] else 0.0
              for i in range(len(ar_ious))]
    ar[n] = float(np.mean(recall))
  return {'ap': ap, 'ar': ar}


def _random_dataset(seed, n_videos=50):
  """Proposals near and far from segments on a 1/25 s grid, tied scores.

  The frame grid puts some IoUs exactly on thresholds and the coarse scores
  make ties, so list order, strict `>` and the stable sort all matter.
  """
  rng = np.random.default_rng(seed)
  grid = 0.04
  predictions, ground_truth = {}, {}
  for v in range(n_videos):
    f = f'dev/{v:06d}.mp4'
    segs = []
    for _ in range(rng.integers(0, 4)):
      s = rng.integers(0, 200) * grid
      segs.append([s, s + rng.integers(1, 40) * grid])
    ground_truth[f] = segs
    kind = rng.random()
    if kind < 0.05:
      continue  # Missing from the predictions.
    if kind < 0.1:
      predictions[f] = []
      continue
    rows = []
    for _ in range(rng.integers(1, 15)):
      if segs and rng.random() < 0.6:
        g = segs[rng.integers(len(segs))]
        s = g[0] + rng.integers(-4, 5) * grid
        e = max(g[1] + rng.integers(-4, 5) * grid, s + grid)
      else:
        s = rng.integers(0, 200) * grid
        e = s + rng.integers(1, 40) * grid
      rows.append([rng.integers(0, 10) / 10, s, e])
    predictions[f] = np.asarray(rows, np.float32)
  # A prediction for a file that is not in the ground truth is ignored.
  predictions['dev/extra.mp4'] = np.asarray([[1.0, 0.0, 1.0]], np.float32)
  return predictions, ground_truth


def _assert_results_close(got, want):
  for key in ('ap', 'ar'):
    assert list(got[key]) == list(want[key])
    np.testing.assert_allclose(list(got[key].values()),
                               list(want[key].values()), atol=1e-6)


@pytest.mark.parametrize('protocol', sorted(metrics.PROTOCOLS))
@pytest.mark.parametrize('seed', [0, 1])
def test_matches_reference_official(protocol, seed):
  predictions, ground_truth = _random_dataset(seed)
  proto = metrics.PROTOCOLS[protocol]
  got = metrics.ap_ar_1d(predictions, ground_truth, **proto)
  want = reference_ap_ar(predictions, ground_truth, **proto)
  _assert_results_close(got, want)
  assert 0 < got['ap'][proto['ap_ious'][0]] <= 1
  assert 0 < got['ar'][proto['ar_ns'][0]] <= 1


@pytest.mark.parametrize('ar_order', metrics.AR_ORDERS)
@pytest.mark.parametrize('drop', [False, True])
def test_matches_reference_variants(ar_order, drop):
  predictions, ground_truth = _random_dataset(2)
  proto = metrics.PROTOCOLS['wmmt']
  flags = dict(official_quirks=False, ar_order=ar_order,
               drop_gt_without_proposals=drop)
  got = metrics.ap_ar_1d(predictions, ground_truth, **proto, **flags)
  want = reference_ap_ar(predictions, ground_truth, **proto, **flags)
  _assert_results_close(got, want)


def test_protocols():
  assert metrics.PROTOCOLS['avdeepfake1m']['ap_ious'] == (0.5, 0.75, 0.9, 0.95)
  assert metrics.PROTOCOLS['avdeepfake1m']['ar_ns'] == (50, 30, 20, 10, 5)
  assert metrics.PROTOCOLS['lavdf']['ap_ious'] == (0.5, 0.75, 0.95)
  assert metrics.PROTOCOLS['lavdf']['ar_ns'] == (100, 50, 20, 10)
  assert metrics.PROTOCOLS['wmmt']['ar_ns'] == (20, 10, 5, 2)
  np.testing.assert_array_equal(
      np.float32(metrics.PROTOCOLS['wmmt']['ap_ious']),
      np.float32(np.linspace(0.1, 0.7, 7)))
  # The official README's list and linspace give the same float32 values.
  listed = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
  np.testing.assert_array_equal(np.float32(metrics.DEFAULT_AR_IOUS),
                                np.float32(listed))


@pytest.mark.parametrize('ground_truth', [
    {'a': [[0, 1], [2, 3], [4, 5]]},
    {'a': [[0, 1], [2, 3]], 'b': [[1, 2]]},
    {'a': [[0, 1]], 'b': [[1, 2]], 'c': [[3, 4]], 'real': []},
])
def test_perfect_predictions(ground_truth):
  predictions = {
      f: [[0.9 - 0.1 * i, s, e] for i, (s, e) in enumerate(segs)]
      for f, segs in ground_truth.items()}
  proto = dict(ap_ious=(0.5, 0.95), ar_ns=(1, 10))
  official = metrics.ap_ar_1d(predictions, ground_truth, **proto)
  textbook = metrics.ap_ar_1d(predictions, ground_truth, **proto,
                              official_quirks=False)
  # The official sum leaves out the first recall step: 2 of 3 steps remain.
  assert official['ap'] == pytest.approx({0.5: 2 / 3, 0.95: 2 / 3}, abs=1e-6)
  assert textbook['ap'] == pytest.approx({0.5: 1.0, 0.95: 1.0}, abs=1e-6)
  assert official['ar'][10] == 1.0


def test_list_order_matching_steals_the_match():
  ground_truth = {'a': [[0.0, 10.0]]}
  worse_first = {'a': [[0.1, 0.0, 10.0], [0.9, 0.0, 10.0]]}
  best_first = {'a': [[0.9, 0.0, 10.0], [0.1, 0.0, 10.0]]}

  def ap(predictions, **kw):
    return metrics.ap_ar_1d(predictions, ground_truth, (0.5,), (1,),
                            **kw)['ap'][0.5]

  # Listed first, the 0.1 proposal takes the segment: the pooled ranking is
  # FP (0.9) then TP (0.1), so AP = 1 * prec_2 = 0.5.
  assert ap(worse_first) == pytest.approx(0.5)
  # Best first, the TP is rank 1, whose step the official sum leaves out.
  assert ap(best_first) == pytest.approx(0.0)
  # Score-order matching does not depend on the list order.
  assert ap(worse_first, official_quirks=False) == pytest.approx(1.0)
  assert ap(best_first, official_quirks=False) == pytest.approx(1.0)


def test_strict_threshold():
  ground_truth = {'a': [[0.0, 1.0]]}
  predictions = {'a': [[0.9, 0.0, 0.5]]}  # IoU exactly 0.5.
  res = metrics.ap_ar_1d(predictions, ground_truth, (0.5, 0.49), (1,),
                         ar_ious=(0.5,), official_quirks=False)
  assert res['ap'] == {0.5: 0.0, 0.49: pytest.approx(1.0)}
  assert res['ar'] == {1: 0.0}


def test_float32_iou_on_threshold():
  # IoU = 0.6 / 1.0 is exactly 0.6 in float64 but 0.60000008 in float32,
  # above float32(0.6): a float64 evaluator would call this a miss.
  g, p = (0.3, 1.3), (0.4, 1.0)
  iou64 = (min(p[1], g[1]) - max(p[0], g[0])) / (max(p[1], g[1]) -
                                                 min(p[0], g[0]))
  assert not iou64 > 0.6
  res = metrics.ap_ar_1d({'a': [[0.9, *p]]}, {'a': [g]}, (0.6,), (1,),
                         ar_ious=(0.6,), official_quirks=False)
  assert res['ap'][0.6] == pytest.approx(1.0)
  assert res['ar'][1] == 1.0


@pytest.mark.parametrize('missing', [None, [], np.zeros((0, 3))])
def test_video_without_proposals(missing):
  ground_truth = {'a': [[0, 1], [2, 3]], 'b': [[5, 6]]}
  predictions = {'a': [[0.9, 0, 1], [0.8, 2, 3]]}
  if missing is not None:
    predictions['b'] = missing
  res = metrics.ap_ar_1d(predictions, ground_truth, (0.5,), (1, 2))
  # N_gt = 3: recall steps 1/3, 2/3; the second one counts.
  assert res['ap'][0.5] == pytest.approx(1 / 3)
  assert res['ar'] == pytest.approx({1: 1 / 3, 2: 2 / 3})
  dropped = metrics.ap_ar_1d(predictions, ground_truth, (0.5,), (1, 2),
                             drop_gt_without_proposals=True)
  # MDP's evaluator drops 'b' from AR only.
  assert dropped['ap'][0.5] == pytest.approx(1 / 3)
  assert dropped['ar'] == pytest.approx({1: 0.5, 2: 1.0})


def test_one_proposal_recalls_two_segments():
  # IoUs 1.0 and 1 / 1.05 = 0.952: both above every AR threshold.
  ground_truth = {'a': [[0.0, 1.0], [0.0, 1.05]]}
  res = metrics.ap_ar_1d({'a': [[0.9, 0.0, 1.0]]}, ground_truth, (0.5,), (1,))
  assert res['ar'][1] == 1.0


def test_ar_temporal_order():
  ground_truth = {'a': [[0.0, 1.0]]}
  predictions = {'a': [[0.9, 5.0, 6.0], [0.8, 0.0, 1.0]]}
  listed = metrics.ap_ar_1d(predictions, ground_truth, (0.5,), (1, 2))
  temporal = metrics.ap_ar_1d(predictions, ground_truth, (0.5,), (1, 2),
                              ar_order='temporal')
  assert listed['ar'] == {1: 0.0, 2: 1.0}
  assert temporal['ar'] == {1: 1.0, 2: 1.0}
  with pytest.raises(ValueError, match='ar_order'):
    metrics.ap_ar_1d(predictions, ground_truth, (0.5,), (1,), ar_order='x')


def test_no_ground_truth_segments():
  with np.errstate(all='raise'):
    for gt in ({}, {'real': []}):
      res = metrics.ap_ar_1d({'real': [[0.5, 0, 1]]}, gt,
                             **metrics.PROTOCOLS['lavdf'])
      assert all(v == 0.0 for v in res['ap'].values())
      assert all(v == 0.0 for v in res['ar'].values())


def test_bad_shape_names_the_file():
  with pytest.raises(ValueError, match="'a'"):
    metrics.ap_ar_1d({'a': [[0.5, 0.0]]}, {'a': [[0, 1]]}, (0.5,), (1,))


def test_matches_official_package_if_installed(tmp_path):
  evaluation = pytest.importorskip('avdeepfake1m.evaluation')
  predictions, ground_truth = _random_dataset(3)
  # The package panics on empty or missing lists: use its dummy row (an FP at
  # score 0, which ties with the dataset's zero scores, so both sides get it).
  padded = {f: [[float(x) for x in r] for r in predictions.get(f, [])]
            or [[0.0, 0.0, 0.0]] for f in ground_truth}
  (tmp_path / 'p.json').write_text(json.dumps(padded))
  (tmp_path / 'g.json').write_text(json.dumps(
      [{'file': f, 'fake_segments': s} for f, s in ground_truth.items()]))
  for proto in metrics.PROTOCOLS.values():
    want = evaluation.ap_ar_1d(
        str(tmp_path / 'p.json'), str(tmp_path / 'g.json'), 'file',
        'fake_segments', 1.0, list(proto['ap_ious']), list(proto['ar_ns']),
        list(proto['ar_ious']))
    got = metrics.ap_ar_1d(padded, ground_truth, **proto)
    np.testing.assert_allclose(list(got['ap'].values()),
                               list(want['ap'].values()), atol=1e-6)
    np.testing.assert_allclose(list(got['ar'].values()),
                               list(want['ar'].values()), atol=1e-6)


def test_video_accuracy():
  assert metrics.video_accuracy([0, 1, 2, 3], [0, 1, 3, 3]) == 0.75
  assert np.isnan(metrics.video_accuracy([], []))
  with pytest.raises(ValueError):
    metrics.video_accuracy([0, 1], [0])


def _pairwise_auc(scores, labels):
  """Fraction of (positive, negative) pairs ordered right, ties one half."""
  pos = [s for s, l in zip(scores, labels) if l == 1]
  neg = [s for s, l in zip(scores, labels) if l == 0]
  wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
  return wins / (len(pos) * len(neg))


@pytest.mark.parametrize('seed', range(4))
def test_binary_auc_against_pairwise(seed):
  rng = np.random.default_rng(seed)
  scores = rng.integers(0, 6, 40) / 5  # Many ties.
  labels = rng.integers(0, 2, 40)
  assert metrics.binary_auc(scores, labels) == pytest.approx(
      _pairwise_auc(scores, labels))


def test_binary_auc_edge_cases():
  assert metrics.binary_auc([0.1, 0.9], [0, 1]) == 1.0
  assert metrics.binary_auc([0.9, 0.1], [0, 1]) == 0.0
  assert metrics.binary_auc([0.5, 0.5], [0, 1]) == 0.5
  assert np.isnan(metrics.binary_auc([0.1, 0.9], [1, 1]))
  with pytest.raises(ValueError):
    metrics.binary_auc([0.1, 0.9], [0, 2])
