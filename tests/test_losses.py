"""Each loss against a numpy version written from Eq. 3, 4, 11-15."""

import ml_collections
import numpy as np
import pytest

from wmmt_jax import losses


def _softmax(x):
  e = np.exp(x - x.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def _f_reference(a, b, function):
  """Eq. 12 and the Table V alternatives, for one pair of vectors."""
  d = a - b
  if function == 'mse':
    return np.mean(d**2)
  if function == 'l1':
    return np.sum(np.abs(d))
  if function == 'l2':
    return np.sqrt(np.sum(d**2))
  if function == 'cosine':
    return 1.0 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
  p, q = _softmax(a), _softmax(b)
  return np.sum(p * np.log(p / q))


def _pair_values(x, mask, function):
  n = int(mask.sum())
  return np.array([_f_reference(x[t], x[t + 1], function)
                   for t in range(n - 1)])


def _bce(p, y):
  return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def _data(seed=0, b=4, t=12, d=5):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(b, t, d)).astype(np.float32) * 0.3
  mask = np.ones((b, t), np.float32)
  mask[1, 8:] = 0
  mask[3, 5:] = 0
  return x, mask


def test_multiclass_ce_eq4():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(5, 4)).astype(np.float32)
  label = np.array([0, 1, 2, 3, 1])
  p = _softmax(logits.astype(np.float64))
  want = -np.mean(np.log(p[np.arange(5), label]))
  np.testing.assert_allclose(losses.multiclass_ce(logits, label), want,
                             rtol=1e-5)


def test_binary_ce_eq3():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(6, 2)).astype(np.float32)
  y = np.array([0, 1, 1, 0, 1, 0])
  y_hat = _softmax(logits.astype(np.float64))[:, 1]
  np.testing.assert_allclose(losses.binary_ce(logits, y),
                             np.mean(_bce(y_hat, y)), rtol=1e-5)


def test_binary_labels_eq14():
  visual, audio, forged = losses.binary_labels(np.array([0, 1, 2, 3]))
  np.testing.assert_array_equal(visual, [False, True, True, False])
  np.testing.assert_array_equal(audio, [False, True, False, True])
  np.testing.assert_array_equal(forged, [False, True, True, True])


@pytest.mark.parametrize('function', losses.DP_FUNCTIONS)
def test_adjacent_deviation(function):
  x, mask = _data()
  got, pair_mask = losses.adjacent_deviation(x, mask, function)
  for b in range(x.shape[0]):
    want = _pair_values(x[b].astype(np.float64), mask[b], function)
    np.testing.assert_allclose(got[b, :len(want)], want, rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_array_equal(got[b, len(want):], 0.0)
    assert pair_mask[b].sum() == len(want)


@pytest.mark.parametrize('function', losses.DP_FUNCTIONS)
def test_deviation_loss_sigmoid_sum_eq11_13(function):
  x, mask = _data()
  # Keep sum_t f moderate so the naive sigmoid-then-log is finite.
  x = x * (0.05 if function in ('l1', 'l2') else 1.0)
  forged = np.array([1, 0, 1, 0])
  got = losses.deviation_loss(x, mask, forged, function, 'sigmoid_sum', 5)
  d = np.array([1 / (1 + np.exp(-_pair_values(x[b].astype(np.float64),
                                              mask[b], function).sum()))
                for b in range(4)])
  np.testing.assert_allclose(got, np.mean(_bce(d, forged)), rtol=1e-4)


def test_deviation_loss_topk_logits_mdp():
  x, mask = _data(t=30)
  forged = np.array([0, 1, 1, 0])
  got = losses.deviation_loss(x, mask, forged, 'mse', 'topk_logits', 5)
  want = []
  for b in range(4):
    f = _pair_values(x[b].astype(np.float64), mask[b], 'mse')
    k = max(1, int(mask[b].sum()) // 5)
    z = np.sort(f)[::-1][:k].mean()
    want.append(_bce(1 / (1 + np.exp(-z)), forged[b]))
  np.testing.assert_allclose(got, np.mean(want), rtol=1e-4)


def test_sigmoid_sum_is_stable_for_large_deviation():
  x = np.zeros((1, 500, 4), np.float32)
  x[0, ::2] = 100.0
  got = losses.deviation_loss(x, np.ones((1, 500)), np.array([0]), 'mse',
                              'sigmoid_sum', 5)
  assert np.isfinite(got) and got > 1e5


def _loss_config(**kw):
  c = ml_collections.ConfigDict(dict(
      weight_m=0.8, weight_v=0.1, weight_a=0.1, weight_dp=0.1, use_dp=True,
      dp_function='mse', dp_objective='a+v+m', dp_reduction='sigmoid_sum',
      dp_topk_ratio=5, dp_input='features'))
  c.update(kw)
  return c


def test_total_loss_eq15():
  x, mask = _data(b=4, t=10, d=3)
  rng = np.random.default_rng(3)
  outputs = {
      'video_logits': {'m': rng.normal(size=(4, 4)),
                       'v': rng.normal(size=(4, 2)),
                       'a': rng.normal(size=(4, 2))},
      'features': {'m': x, 'v': x[..., :2], 'a': x[..., 1:]},
  }
  label = np.array([0, 1, 2, 3])
  config = _loss_config()
  total, metrics = losses.total_loss(outputs, label, mask, config)
  y_v = np.array([0, 1, 1, 0])
  y_a = np.array([0, 1, 0, 1])
  l_m = -np.mean(np.log(_softmax(outputs['video_logits']['m'])[
      np.arange(4), label]))
  l_v = np.mean(_bce(_softmax(outputs['video_logits']['v'])[:, 1], y_v))
  l_a = np.mean(_bce(_softmax(outputs['video_logits']['a'])[:, 1], y_a))
  l_dp = 0.0
  for key in ('a', 'v', 'm'):
    feats = outputs['features'][key].astype(np.float64)
    d = np.array([1 / (1 + np.exp(-_pair_values(feats[b], mask[b],
                                                 'mse').sum()))
                  for b in range(4)])
    l_dp += np.mean(_bce(d, label != 0))
  np.testing.assert_allclose(metrics['loss_dp'], l_dp, rtol=1e-4)
  np.testing.assert_allclose(
      total, 0.8 * l_m + 0.1 * l_v + 0.1 * l_a + 0.1 * l_dp, rtol=1e-4)
  # Without the deviation loss and the single-modality heads: L_m only.
  no_mtl = {'video_logits': {'m': outputs['video_logits']['m']},
            'features': {'m': x}}
  total, _ = losses.total_loss(no_mtl, label, mask, _loss_config(
      use_dp=False))
  np.testing.assert_allclose(total, 0.8 * l_m, rtol=1e-5)


def test_objective_needing_multitask_names_key():
  outputs = {'video_logits': {'m': np.zeros((1, 4))},
             'features': {'m': np.zeros((1, 3, 2))}}
  with pytest.raises(ValueError, match='loss.dp_objective'):
    losses.total_loss(outputs, np.array([1]), np.ones((1, 3)),
                      _loss_config(dp_objective='a+v'))


def test_unknown_function_names_key():
  with pytest.raises(ValueError, match='loss.dp_function'):
    losses.adjacent_deviation(np.zeros((1, 3, 2)), np.ones((1, 3)), 'l3')
