"""Aggregation (Eq. 2 / MDP top-k), heads and expert selection."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wmmt_jax.models import heads
from wmmt_jax.models import wmmt


def test_topk_mean_matches_numpy():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 23, 2)).astype(np.float32)
  mask = np.ones((3, 23), np.float32)
  mask[1, 10:] = 0
  mask[2, 3:] = 0
  got = heads.masked_topk_mean(x, mask, 5)
  for b in range(3):
    n = int(mask[b].sum())
    k = max(1, n // 5)
    for c in range(2):
      want = np.sort(x[b, :n, c])[::-1][:k].mean()
      np.testing.assert_allclose(got[b, c], want, rtol=1e-6)


def test_topk_is_mdp_top100_on_500_frames():
  x = np.arange(500, dtype=np.float32)[None, :, None]
  got = heads.masked_topk_mean(x, np.ones((1, 500)), 5)
  np.testing.assert_allclose(got[0, 0], np.arange(400, 500).mean())


def test_mean_aggregation_ignores_padding():
  x = np.array([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]], np.float32)
  got = heads.aggregate(x, np.array([[1.0, 1.0, 0.0]]), 'mean', 5)
  np.testing.assert_allclose(got, [[2.0, 3.0]])


def test_unknown_aggregation_names_key():
  with pytest.raises(ValueError, match='model.aggregation'):
    heads.aggregate(jnp.ones((1, 2, 2)), jnp.ones((1, 2)), 'max', 5)


def _outputs(cas_m, cas_v, cas_a):
  return {'cas': {'m': cas_m, 'v': cas_v, 'a': cas_a},
          'video_logits': {'m': cas_m.mean(axis=1)}}


def test_expert_selection_routes_each_class_to_its_head():
  t = 4
  cas_v = jnp.tile(jnp.array([0.0, 3.0]), (4, t, 1))  # v says forged.
  cas_a = jnp.tile(jnp.array([3.0, 0.0]), (4, t, 1))  # a says real.
  # c_m predicts class b for video b.
  cas_m = jnp.tile(jnp.eye(4)[:, None, :] * 5.0, (1, t, 1))
  out = wmmt.expert_select(_outputs(cas_m, cas_v, cas_a))
  np.testing.assert_array_equal(out['pred_class'], [0, 1, 2, 3])
  np.testing.assert_array_equal(out['expert'], [1, 1, 2, 3])
  np.testing.assert_allclose(out['fas'][2], heads.fas(cas_v)[2])
  np.testing.assert_allclose(out['fas'][3], heads.fas(cas_a)[3])
  p_m = heads.fas(cas_m)[1]
  np.testing.assert_allclose(out['fas'][1][:, 1], 1.0 - p_m[:, 0], rtol=1e-6)
  off = wmmt.expert_select(_outputs(cas_m, cas_v, cas_a), use_experts=False)
  np.testing.assert_array_equal(off['expert'], [1, 1, 1, 1])


@pytest.mark.parametrize('flags', [
    dict(), dict(intra_fe=False, inter_fe=False, multitask=False),
    dict(fusion='mdp', tppa_norm='none', tppa_residual=False)])
def test_wmmt_shapes_and_padding_invariance(flags):
  rng = np.random.default_rng(0)
  model = wmmt.WMMT(embed_dim=8, qkv_dim=16, head_dim=16, **flags)
  v = rng.normal(size=(1, 9, 6)).astype(np.float32)
  a = rng.normal(size=(1, 9, 4)).astype(np.float32)
  variables = jax.jit(model.init, static_argnames='train')(
      jax.random.key(0), v, a, np.ones((1, 9)), train=False)
  apply = jax.jit(model.apply, static_argnames='train')
  out = apply(variables, v, a, np.ones((1, 9)), train=False)
  tasks = {'m'} if flags.get('multitask') is False else {'m', 'v', 'a'}
  assert set(out['cas']) == tasks
  assert out['cas']['m'].shape == (1, 9, 4)
  pad = lambda x: np.concatenate([x, np.ones((1, 7, x.shape[-1]))], axis=1)
  mask = np.concatenate([np.ones((1, 9)), np.zeros((1, 7))], axis=1)
  padded = apply(variables, pad(v), pad(a), mask, train=False)
  for task in tasks:
    np.testing.assert_allclose(padded['cas'][task][:, :9], out['cas'][task],
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(padded['video_logits'][task],
                               out['video_logits'][task], rtol=1e-4,
                               atol=1e-5)
