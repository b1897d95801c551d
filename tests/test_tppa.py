"""TPPA against a naive numpy version of Eq. 5-10 that builds R."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wmmt_jax.models import tppa


def _dense(p, x):
  return x @ np.asarray(p['kernel'], np.float64) + np.asarray(p['bias'],
                                                              np.float64)


def tppa_reference(params, x_q, x_kv, mask, norm, scale_dim):
  """One video: Eq. 5 projections, R = Q K^T / sqrt(d), column sums, Eq. 7."""
  q = _dense(params['query'], x_q)
  k = _dense(params['key'], x_kv)
  v = _dense(params['value'], x_kv)
  valid = mask > 0
  big_r = q @ k.T / np.sqrt(scale_dim)  # [T, T]: R_ij, i query, j key.
  r = big_r[valid].sum(axis=0)  # column sums over valid queries.
  if norm == 'softmax':
    e = np.where(valid, np.exp(r - r[valid].max()), 0.0)
    r = e / e.sum()
  elif norm == 'sigmoid':
    r = 1.0 / (1.0 + np.exp(-r))
  r = np.where(valid, r, 0.0)
  return _dense(params['output'], r[:, None] * v), r


@pytest.mark.parametrize('norm', ['softmax', 'sigmoid', 'none'])
@pytest.mark.parametrize('scale', ['key_input', 'qkv'])
def test_tppa_matches_naive_relevance_matrix(norm, scale):
  rng = np.random.default_rng(0)
  b, t, d_q, d_kv = 2, 7, 5, 3
  x_q = rng.normal(size=(b, t, d_q)).astype(np.float32)
  x_kv = rng.normal(size=(b, t, d_kv)).astype(np.float32)
  mask = np.ones((b, t), np.float32)
  mask[1, 4:] = 0.0
  module = tppa.TPPA(qkv_dim=6, out_dim=4, norm=norm, scale=scale)
  variables = jax.jit(module.init)(jax.random.key(0), x_q, x_kv, mask)
  out, r = jax.jit(module.apply)(variables, x_q, x_kv, mask)
  scale_dim = d_kv if scale == 'key_input' else 6
  for i in range(b):
    want_out, want_r = tppa_reference(variables['params'], x_q[i], x_kv[i],
                                      mask[i], norm, scale_dim)
    np.testing.assert_allclose(r[i], want_r, rtol=1e-4, atol=1e-5)
    # Padded steps get no weight; their output is the output bias.
    np.testing.assert_allclose(out[i], want_out, rtol=1e-4, atol=1e-4)


def test_padding_does_not_change_valid_steps():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(1, 6, 4)).astype(np.float32)
  module = tppa.EnhanceBlock(qkv_dim=8, norm='softmax')
  variables = jax.jit(module.init)(jax.random.key(0), x, x, np.ones((1, 6)))
  apply = jax.jit(module.apply)
  short = apply(variables, x, x, np.ones((1, 6)))
  padded_x = np.concatenate([x, rng.normal(size=(1, 5, 4))], axis=1)
  padded_mask = np.concatenate([np.ones((1, 6)), np.zeros((1, 5))], axis=1)
  padded = apply(variables, padded_x, padded_x, padded_mask)
  np.testing.assert_allclose(padded[:, :6], short, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(padded[:, 6:], 0.0)


def test_no_t_by_t_array():
  """The column-sum identity: nothing of size T x T is ever materialised."""
  t = 512
  module = tppa.TPPA(qkv_dim=8, out_dim=8)
  x = jnp.ones((1, t, 8))
  variables = module.init(jax.random.key(0), x, x, jnp.ones((1, t)))
  jaxpr = jax.make_jaxpr(lambda v: module.apply(v, x, x, jnp.ones((1, t))))(
      variables)
  for eqn in jaxpr.jaxpr.eqns:
    for var in eqn.outvars:
      assert np.prod(var.aval.shape) < t * t, eqn


def test_unknown_norm_names_config_key():
  with pytest.raises(ValueError, match='model.tppa_norm'):
    tppa.tppa_relevance(jnp.ones((1, 2, 3)), jnp.ones((1, 2, 3)),
                        jnp.ones((1, 2)), 3, 'layer')
