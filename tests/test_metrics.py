"""AP/AR against a slow literal port of the official evaluator, plus hand cases.

`reference_ap_ar` follows `src/loc_1d.rs` of the `avdeepfake1m` package line by
line with float32 scalars (DESIGN.md section 5); `ap_ar_1d` is the vectorised
version under test. Where the official compiled evaluator can be loaded
(`official.py`), the results are also compared with it bit for bit.
"""

import json

import numpy as np
import pytest

from wmmt_jax.evaluation import metrics
from wmmt_jax.evaluation import official

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
                    ar_order='listed', drop_gt_without_proposals=False,
                    fps=1.0):
  """Slow, literal version of `metrics.ap_ar_1d`."""
  videos = []
  for f, segs in ground_truth.items():
    # Proposal times in frames: `x / fps` in float32, as loc_1d.rs.
    props = [[F32(row[0]), F32(row[1]) / F32(fps), F32(row[2]) / F32(fps)]
             for row in predictions.get(f, [])]
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


def _official_or_skip():
  """The official compiled evaluator, or skips the test."""
  module = official.load()
  if module is None:
    pytest.skip('official avdeepfake1m extension not found (set '
                f'{official.ENV_VAR} to its file or directory)')
  return module


@pytest.mark.parametrize('seed', range(6))
def test_bit_for_bit_with_official(tmp_path, seed):
  module = _official_or_skip()
  predictions, ground_truth = _random_dataset(seed, n_videos=40 + 30 * seed)
  # The package panics on empty or missing lists: use its dummy row (an FP at
  # score 0, which ties with the dataset's zero scores, so both sides get it).
  padded = {f: [[float(x) for x in r] for r in predictions.get(f, [])]
            or [[0.0, 0.0, 0.0]] for f in ground_truth}
  (tmp_path / 'p.json').write_text(json.dumps(padded))
  (tmp_path / 'g.json').write_text(json.dumps(
      [{'file': f, 'fake_segments': s} for f, s in ground_truth.items()]))
  fps = (1.0, 25.0, 3.0)[seed % 3]
  # One AR count sums the AR thresholds in another order than several.
  for ar_ns in ((50, 30, 20, 10, 5), (3,)):
    ap_ious = (0.5, 0.75, 0.9, 0.95, 0.1, 0.3)
    want = module.ap_ar_1d(
        str(tmp_path / 'p.json'), str(tmp_path / 'g.json'), 'file',
        'fake_segments', fps, list(ap_ious), list(ar_ns),
        list(metrics.DEFAULT_AR_IOUS))
    got = metrics.ap_ar_1d(padded, ground_truth, ap_ious, ar_ns, fps=fps)
    # The official keys are float32 values; the results are float32 values.
    assert [got['ap'][t] for t in ap_ious] == [
        want['ap'][float(F32(t))] for t in ap_ious]
    assert got['ar'] == want['ar']


def _tiny_case(rng):
  """A small random case on a coarse grid: many ties and IoUs on thresholds."""
  fps = float(rng.choice([1.0, 2.0, 25.0]))
  predictions, ground_truth = {}, {}
  for v in range(rng.integers(1, 5)):
    f = f'v{v}'
    segs = []
    for _ in range(rng.integers(0, 4)):
      s = rng.integers(0, 8) / 2
      segs.append([s, s + rng.integers(0, 5) / 2])  # May be zero-length.
    ground_truth[f] = segs
    kind = rng.random()
    if kind < 0.1:
      continue  # Missing from the predictions.
    rows = []
    for _ in range(rng.integers(0, 7)):
      if segs and rng.random() < 0.6:
        g = segs[rng.integers(len(segs))]
        s = g[0] + rng.integers(-1, 2) / 2
        e = max(g[1] + rng.integers(-1, 2) / 2, s)
      else:
        s = rng.integers(0, 8) / 2
        e = s + rng.integers(0, 4) / 2
      # Times in frames when fps != 1, as the evaluator expects.
      rows.append([rng.integers(0, 5) / 4, s * fps, e * fps])
    predictions[f] = rows
  settings = dict(
      ap_ious=tuple(rng.choice([0.1, 0.3, 0.5, 0.6, 0.75, 0.95],
                               rng.integers(1, 4), replace=False)),
      ar_ns=tuple(int(n) for n in rng.choice(np.arange(1, 8),
                                            rng.integers(1, 4),
                                            replace=False)),
      ar_ious=tuple(rng.choice(metrics.DEFAULT_AR_IOUS, rng.integers(1, 4),
                               replace=False)),
      official_quirks=bool(rng.random() < 0.6),
      ar_order=str(rng.choice(metrics.AR_ORDERS)),
      drop_gt_without_proposals=bool(rng.random() < 0.3),
      fps=fps)
  return predictions, ground_truth, settings


def test_property_against_reference_on_random_cases():
  """Thousands of small random cases: vectorised code == the slow loops."""
  rng = np.random.default_rng(1234)
  for case in range(2000):
    predictions, ground_truth, settings = _tiny_case(rng)
    got = metrics.ap_ar_1d(predictions, ground_truth, **settings)
    want = reference_ap_ar(predictions, ground_truth, **settings)
    for key in ('ap', 'ar'):
      np.testing.assert_allclose(
          list(got[key].values()), list(want[key].values()), atol=1e-6,
          err_msg=f'case {case}: {predictions} {ground_truth} {settings}')


def test_fps_divides_proposal_times_only():
  # Proposals in frames at 25 fps; ground truth in seconds.
  ground_truth = {'a': [[1.0, 2.0]]}
  frames = {'a': [[0.9, 25.0, 50.0]]}
  seconds = {'a': [[0.9, 1.0, 2.0]]}
  at_25 = metrics.ap_ar_1d(frames, ground_truth, (0.5,), (1,), fps=25.0,
                           official_quirks=False)
  assert at_25 == metrics.ap_ar_1d(seconds, ground_truth, (0.5,), (1,),
                                   official_quirks=False)
  assert at_25['ap'][0.5] == pytest.approx(1.0)
  assert metrics.ap_ar_1d(frames, ground_truth, (0.5,), (1,))['ar'][1] == 0.0
  with pytest.raises(ValueError, match='fps'):
    metrics.ap_ar_1d(frames, ground_truth, (0.5,), (1,), fps=0)


def _unrolled_fold(xs):
  """ndarray's `unrolled_fold` with `+`, transcribed loop by loop."""
  acc = F32(0)
  p = [F32(0)] * 8
  while len(xs) >= 8:
    p = [F32(p[i] + xs[i]) for i in range(8)]
    xs = xs[8:]
  for a, b in ((0, 4), (1, 5), (2, 6), (3, 7)):
    acc = F32(acc + F32(p[a] + p[b]))
  for x in xs[:7]:
    acc = F32(acc + x)
  return acc


@pytest.mark.parametrize('n', [0, 1, 7, 8, 9, 23, 64, 1001])
def test_rust_sum_order(n):
  x = np.random.default_rng(n).random(n).astype(np.float32) * 1e3
  want = _unrolled_fold(list(x))
  assert metrics._rust_sum(x) == want
  # Sparse form: zeros left out.
  x[::3] = 0
  nz = np.flatnonzero(x)
  assert metrics._rust_sum(x[nz], nz, n) == _unrolled_fold(list(x))


def test_sort_keys_give_the_stable_descending_order():
  rng = np.random.default_rng(0)
  scores = rng.choice(np.float32([-2, -0.5, -0.0, 0, 0.25, 1, 3e38, -1e-40]),
                      500)
  keys = metrics._sort_keys(scores)
  want = np.argsort(-scores, kind='stable')  # -0.0 == 0.0, ties in order.
  np.testing.assert_array_equal(np.argsort(keys), want)
  assert metrics._sort_keys(np.float32([1, np.nan])) is None


def test_ap_counts_ranks_across_videos_with_ties():
  # Pooled in ground-truth order, stable by score: the 0.5 TP of 'b' ranks
  # after the 0.5 FP of 'a'.
  ground_truth = {'a': [[0, 1]], 'b': [[0, 1]]}
  predictions = {'a': [[0.9, 0, 1], [0.5, 5, 6]], 'b': [[0.5, 0, 1]]}
  res = metrics.ap_ar_1d(predictions, ground_truth, (0.5,), (1,))
  # Ranks: TP (0.9), FP (0.5, a), TP (0.5, b): the step at rank 3 counts,
  # with precision 2/3: AP = 0.5 * 2/3.
  assert res['ap'][0.5] == pytest.approx(1 / 3)


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
