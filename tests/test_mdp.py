"""MDP port: shapes, the MDP-specific pieces, and parity with PyTorch.

The parity reference is tests/mdp_torch_reference.py, MDP's network written
from DESIGN.md section 3 with MDP's state_dict keys.
"""

import chex
import jax
import numpy as np
import pytest

from wmmt_jax import convert
from wmmt_jax.models import mdp

# Small widths for the tests that need no real-width run.
SMALL = dict(visual_dim=64, audio_dim=24, pooled_visual_dim=32, embed_dim=16,
             qkv_dim=24, head_dim=40)


def _inputs(b, t, visual_dim, audio_dim, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(b, t, visual_dim)).astype(np.float32),
          rng.normal(size=(b, t, audio_dim)).astype(np.float32))


def test_forward_shapes():
  model = mdp.MDP(**SMALL)
  visual, audio = _inputs(2, 12, 64, 24)
  # Random values at the init shapes: jitting MDP.init costs seconds of
  # compile on CPU (random bits for every kernel).
  rng = np.random.default_rng(0)
  variables = jax.tree.map(
      lambda x: rng.normal(size=x.shape).astype(np.float32),
      convert.mdp_abstract_variables(model))
  out = jax.jit(model.apply, static_argnames='train')(variables, visual,
                                                      audio, train=False)
  chex.assert_shape(out['cas'], (2, 12, 2))
  chex.assert_shape(out['aness'], (2, 12))
  chex.assert_shape(out['video_scores'], (2, 2))
  chex.assert_shape(out['embeddings'], (2, 12, 40))
  chex.assert_shape(out['dp_score'], (2,))
  np.testing.assert_allclose(out['video_scores'].sum(-1), 1.0, rtol=1e-6)


def test_pool_channels_is_mean_of_adjacent_pairs():
  x = np.random.default_rng(0).normal(size=(2, 3, 8)).astype(np.float32)
  want = (x[..., 0::2] + x[..., 1::2]) / 2
  np.testing.assert_allclose(mdp.pool_channels(x, 4), want, rtol=1e-6)
  with pytest.raises(ValueError, match='pooled_visual_dim'):
    mdp.pool_channels(x, 3)


def test_wrong_input_width_names_attribute():
  model = mdp.MDP(**SMALL)
  with pytest.raises(ValueError, match='MDP.audio_dim'):
    model.init(jax.random.key(0), *_inputs(1, 10, 64, 7), train=False)


def test_mdp_loss_matches_numpy():
  scores = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]], np.float32)
  dp = np.array([0.5, 2.0, -1.0], np.float32)
  label = np.array([0, 3, 1])  # 4-class labels: any non-zero is fake.
  fake = np.array([0.0, 1.0, 1.0])
  one_hot = np.stack([1 - fake, fake], axis=1)
  bce = np.log1p(np.exp(dp)) - fake * dp
  want = np.mean((scores - one_hot)**2) + 0.2 * np.mean(bce)
  loss, metrics = mdp.mdp_loss({'video_scores': scores, 'dp_score': dp},
                               label)
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  np.testing.assert_allclose(metrics['loss_dp'], np.mean(bce), rtol=1e-6)


def _max_rel(x, ref):
  """max |x - ref| relative to max |ref| (CAS and embeddings are ReLU'd)."""
  x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
  return np.abs(x - ref).max() / np.abs(ref).max()


def test_forward_matches_pytorch_mdp():
  """Real widths, eval mode, random weights and inputs.

  The video-level outputs are compared with PyTorch float32 directly. CAS,
  `aness` and embeddings are ill-conditioned in MDP itself: its column sums
  are not normalised, so rows of the attention output whose sum is near 0
  are nearly constant and their LayerNorm amplifies float32 rounding;
  PyTorch float32 is 1e-5 to 4e-5 (relative) away from PyTorch float64
  there. So for those the reference is PyTorch float64, and ours must be
  within 1e-5 of it or at least as close as PyTorch float32 is.
  """
  torch = pytest.importorskip('torch')
  import mdp_torch_reference  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  net = mdp_torch_reference.MDP().eval()
  visual, audio = _inputs(2, 40, 2048, 1024)
  variables = convert.mdp_params_from_torch(
      {k: v.numpy().copy() for k, v in net.state_dict().items()})
  with torch.no_grad():
    want32 = net.forward_all(torch.from_numpy(visual), torch.from_numpy(audio))
    want64 = net.double().forward_all(torch.from_numpy(visual).double(),
                                      torch.from_numpy(audio).double())
  got = jax.jit(lambda v, x, y: mdp.MDP().apply(v, x, y, train=False))(
      variables, visual, audio)
  for key in ('cas', 'aness', 'video_scores', 'embeddings', 'dp_score'):
    chex.assert_shape(got[key], want32[key].shape)
  for key in ('video_scores', 'dp_score'):
    assert _max_rel(got[key], want32[key].numpy()) < 1e-5, key
  for key in ('cas', 'aness', 'embeddings'):
    ours = _max_rel(got[key], want64[key].numpy())
    theirs = _max_rel(want32[key].numpy(), want64[key].numpy())
    assert ours < max(1e-5, theirs), (key, ours, theirs)


def test_loss_and_gradients_match_pytorch_mdp():
  """Training mode with dropout off on both sides (their RNGs differ)."""
  torch = pytest.importorskip('torch')
  import mdp_torch_reference  # pylint: disable=g-import-not-at-top
  torch.manual_seed(1)
  net = mdp_torch_reference.MDP(dropout_rate=0.0, **SMALL).train()
  visual, audio = _inputs(4, 40, 64, 24, seed=1)
  label = np.array([0, 1, 1, 0])
  video_scores, _, _, dp_score = net(torch.from_numpy(visual),
                                     torch.from_numpy(audio))
  want_loss = mdp_torch_reference.mdp_loss(
      video_scores, torch.from_numpy(np.eye(2, dtype=np.float32)[label]),
      dp_score)
  want_loss.backward()
  want_grads = {k: p.grad.numpy() for k, p in net.named_parameters()}

  model = mdp.MDP(dropout_rate=0.0, **SMALL)
  variables = convert.mdp_params_from_torch(
      {k: v.detach().numpy() for k, v in net.state_dict().items()}, model)

  def loss_fn(params):
    out = model.apply({'params': params}, visual, audio, train=True)
    return mdp.mdp_loss(out, label)[0]

  loss, grads = jax.jit(jax.value_and_grad(loss_fn))(variables['params'])
  np.testing.assert_allclose(loss, want_loss.item(), rtol=1e-5)
  grads = convert.mdp_params_to_torch({'params': grads})
  assert grads.keys() == want_grads.keys()
  for key, want in want_grads.items():
    assert _max_rel(grads[key], want) < 1e-4, key
