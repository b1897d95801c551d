"""Chunked long-video inference equals the single pass, in bounded memory."""

import jax
import numpy as np
import pytest

from wmmt_jax.models import long_video
from wmmt_jax.models import mdp
from wmmt_jax.models import wmmt

WIDTHS = dict(embed_dim=8, qkv_dim=12, head_dim=16)


def _inputs(b, t, seed=0):
  rng = np.random.default_rng(seed)
  visual = rng.normal(size=(b, t, 10)).astype(np.float32)
  audio = rng.normal(size=(b, t, 6)).astype(np.float32)
  mask = np.ones((b, t), np.float32)
  mask[-1, t - t // 4:] = 0.0
  return visual, audio, mask


def _random_params(model, visual, audio, mask):
  # Random values at the init shapes: an eager `init` of WMMT costs far more
  # on CPU than the tests themselves.
  rng = np.random.default_rng(1)
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.key(0), visual, audio, mask, train=False))['params']
  return jax.tree.map(
      lambda x: (0.5 * rng.normal(size=x.shape)).astype(np.float32), shapes)


@pytest.mark.parametrize('settings,chunks', [
    # Chunks that split the video unevenly, and one that holds all of it.
    ({}, (5, 64)),
    (dict(intra_fe=False, multitask=False, fusion='mdp', tppa_norm='sigmoid'),
     (8,)),
    (dict(inter_fe=False, tppa_scale='qkv', tppa_residual=False,
          aggregation='mean', tppa_norm='none'), (8,)),
])
def test_chunked_forward_equals_single_pass(settings, chunks):
  model = wmmt.WMMT(**WIDTHS, **settings)
  visual, audio, mask = _inputs(2, 37)
  params = _random_params(model, visual, audio, mask)
  want = jax.jit(lambda p: model.apply({'params': p}, visual, audio, mask,
                                       train=False))(params)
  for chunk in chunks:
    got = long_video.forward(model, params, visual, audio, mask, chunk=chunk)
    assert set(got['cas']) == set(want['cas'])
    for task in want['cas']:
      np.testing.assert_allclose(got['cas'][task], want['cas'][task],
                                 rtol=1e-4, atol=1e-5)
      np.testing.assert_allclose(got['video_logits'][task],
                                 want['video_logits'][task],
                                 rtol=1e-4, atol=1e-5)


def _shapes(jaxpr, top=True):
  """(shape, at_top_level) of every value in a jaxpr, sub-jaxprs included."""
  for eqn in jaxpr.eqns:
    for var in eqn.outvars:
      yield tuple(getattr(var.aval, 'shape', ())), top
    for param in eqn.params.values():
      for sub in param if isinstance(param, (list, tuple)) else (param,):
        inner = getattr(sub, 'jaxpr', None)
        if inner is not None and hasattr(inner, 'eqns'):
          # A lax.map body (scan) runs on one chunk at a time.
          yield from _shapes(inner, top and eqn.primitive.name != 'scan')


def test_no_whole_video_activation_wider_than_the_features():
  model = wmmt.WMMT(**WIDTHS)
  t, chunk = 1000, 100
  visual, audio, mask = _inputs(1, t)
  params = jax.eval_shape(
      lambda: model.init(jax.random.key(0), visual[:, :8], audio[:, :8],
                         mask[:, :8], train=False))['params']
  jaxpr = jax.make_jaxpr(
      lambda p: long_video.forward(model, p, visual, audio, mask,
                                   chunk=chunk))(params).jaxpr
  shapes = list(_shapes(jaxpr))
  wide = (WIDTHS['qkv_dim'], WIDTHS['head_dim'])
  whole = [s for s, top in shapes if top and t in s and s[-1] in wide]
  assert not whole, whole
  # The Q/K/V and head activations exist per chunk.
  assert any(not top and chunk in s and s[-1] in wide for s, top in shapes)
  # The single pass does build them (the check can fail).
  single = jax.make_jaxpr(lambda p: model.apply(
      {'params': p}, visual, audio, mask, train=False))(params).jaxpr
  assert any(t in s and s[-1] in wide for s, _ in _shapes(single))


def test_forward_rejects_mdp():
  with pytest.raises(TypeError, match='WMMT'):
    long_video.forward(mdp.MDP(), {}, *_inputs(1, 4))


def test_eval_step_runs_long_batches_chunked():
  from wmmt_jax.evaluation import inference  # pylint: disable=g-import-not-at-top
  model = wmmt.WMMT(**WIDTHS)
  visual, audio, mask = _inputs(2, 24)
  params = _random_params(model, visual, audio, mask)
  batch = {'visual': visual, 'audio': audio, 'mask': mask,
           'index': np.arange(2), 'valid': np.ones(2)}
  one_pass = jax.jit(inference.make_eval_step(model, True))(params, batch)
  chunked_step = inference.make_eval_step(model, True, chunk_size=8)
  chunked = jax.jit(chunked_step)(params, batch)
  for key in ('video_probs', 'fas'):
    np.testing.assert_allclose(chunked[key], one_pass[key], rtol=1e-4,
                               atol=1e-5)
  np.testing.assert_array_equal(chunked['pred_class'], one_pass['pred_class'])
  # The chunked program holds no [B, T, qkv] activation outside the chunks.
  jaxpr = jax.make_jaxpr(chunked_step)(params, batch).jaxpr
  assert not [s for s, top in _shapes(jaxpr)
              if top and 24 in s and s[-1] == WIDTHS['qkv_dim']]


def test_eval_task_uses_the_modality_head_and_its_segments():
  from wmmt_jax.evaluation import inference  # pylint: disable=g-import-not-at-top
  from wmmt_jax.models import heads  # pylint: disable=g-import-not-at-top
  model = wmmt.WMMT(**WIDTHS)
  visual, audio, mask = _inputs(2, 12)
  params = _random_params(model, visual, audio, mask)
  batch = {'visual': visual, 'audio': audio, 'mask': mask,
           'index': np.arange(2), 'valid': np.ones(2)}
  outputs = model.apply({'params': params}, visual, audio, mask, train=False)
  for task, expert in (('v', wmmt.VISUAL_ONLY), ('a', wmmt.AUDIO_ONLY)):
    out = inference.make_eval_step(model, True, task=task)(params, batch)
    np.testing.assert_allclose(out['fas'], heads.fas(outputs['cas'][task]),
                               rtol=1e-6)
    np.testing.assert_array_equal(out['expert'], [expert, expert])

  class Record:
    fake_segments, visual_segments, audio_segments = 'all', 'vis', 'aud'
  assert [inference.segments(Record, t) for t in ('', 'v', 'a')] == [
      'all', 'vis', 'aud']
