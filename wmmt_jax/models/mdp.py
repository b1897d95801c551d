"""MDP, the released PyTorch predecessor (wenboxu98/MDP), layer for layer.

DESIGN.md section 3. The forward pass is `core/model.py`'s `MDP.forward`:
channel pooling of the visual features 2048 -> 1024, a Conv1d(k=3) + ReLU +
LayerNorm embedding per modality, two cross-modal TPPA blocks without
normalisation of the column sums (`att_v`: queries visual, keys and values
audio; `att_a` the reverse), each followed by a LayerNorm, the concatenation
`[A, V, att_v, att_a]` and one localization head. The layers are the ones
WMMT is built from (`tppa.TPPA`, `heads.LocalizationHead`, `heads.aggregate`,
`losses.deviation_logit`); only MDP's own choices are written here.
`wmmt_jax.convert` loads MDP's PyTorch checkpoints into this module.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from wmmt_jax import losses
from wmmt_jax.models import heads
from wmmt_jax.models import initializers
from wmmt_jax.models import tppa


def pool_channels(x, out_dim):
  """Torch `AdaptiveAvgPool1d(out_dim)` over the feature axis.

  MDP applies the pool to `[B, T, 2048]`, whose last axis PyTorch takes as
  the length, so it averages features, not time. With `D = r * out_dim` the
  adaptive bins are the consecutive groups of `r` features.

  Args:
    x: `[B, T, D]`.
    out_dim: output width; must divide `D` (MDP: 2048 -> 1024).

  Returns:
    `[B, T, out_dim]`.
  """
  d = x.shape[-1]
  if d % out_dim:
    raise ValueError(f'MDP.pooled_visual_dim={out_dim} must divide the visual '
                     f'feature width {d}.')
  return jnp.mean(x.reshape(*x.shape[:-1], out_dim, d // out_dim), axis=-1)


class MDP(nn.Module):
  """MDP's network (`core/model.py`), with MDP's widths as defaults.

  Attributes:
    visual_dim: width of the visual input (TSN RGB: 2048).
    audio_dim: width of the audio input (1024).
    pooled_visual_dim: the visual features are averaged down to this width.
    embed_dim: width of each modality's embedding and attention output.
    qkv_dim: width of Q, K and V.
    head_dim: width of the head's hidden embedding.
    num_classes: CAS classes (0 real, 1 fake).
    dropout_rate: dropout before the head's classifier.
    topk_ratio: `k = T // topk_ratio` for the video scores and the DP score.
    layer_norm_epsilon: PyTorch's LayerNorm default, 1e-5 (Flax's is 1e-6).
    dtype: compute dtype.
  """
  visual_dim: int = 2048
  audio_dim: int = 1024
  pooled_visual_dim: int = 1024
  embed_dim: int = 512
  qkv_dim: int = 1024
  head_dim: int = 1024
  num_classes: int = 2
  dropout_rate: float = 0.7
  topk_ratio: int = 5
  layer_norm_epsilon: float = 1e-5
  dtype: Any = jnp.float32

  def _layer_norm(self, x, mask, name):
    # Two-pass variance as torch computes it: the attention outputs are not
    # normalised before this LayerNorm, so their mean can dwarf their spread.
    x = nn.LayerNorm(epsilon=self.layer_norm_epsilon, use_fast_variance=False,
                     dtype=self.dtype, name=name)(x)
    return x * mask[..., None].astype(x.dtype)

  def _embed(self, x, mask, modality):
    """`visual_Module` / `audio_Module` and their LayerNorm, `[B, T, E]`."""
    x = x.astype(self.dtype) * mask[..., None].astype(self.dtype)
    x = nn.Conv(self.embed_dim, (3,), padding=[(1, 1)], dtype=self.dtype,
                kernel_init=initializers.torch_default_kernel,
                name=f'{modality}_embed')(x)
    return self._layer_norm(nn.relu(x), mask, f'{modality}_norm')

  def _inter_fe(self, x_q, x_kv, mask, name):
    """`CrossModalAttention` and its LayerNorm: TPPA without normalisation."""
    out, _ = tppa.TPPA(self.qkv_dim, self.embed_dim, norm='none',
                       scale='key_input', dtype=self.dtype, name=name)(
                           x_q, x_kv, mask)
    return self._layer_norm(out, mask, f'{name}_norm')

  @nn.compact
  def __call__(self, visual, audio, mask=None, *, train):
    """Forward pass of MDP.

    Args:
      visual: `[B, T, visual_dim]` visual features.
      audio: `[B, T, audio_dim]` audio features, already pooled to `T`.
      mask: optional `[B, T]`, 1 for valid steps. MDP has no padding; the
        default (all valid) computes exactly MDP's forward pass.
      train: enables dropout (needs a 'dropout' rng).

    Returns:
      A dict with `cas` `[B, T, C]`, `aness` `[B, T]` (sum of the CAS over
      classes, MDP's second output), `video_logits` `[B, C]` (per class, the
      mean of the top `T // topk_ratio` CAS values), `video_scores` `[B, C]`
      (their softmax), `embeddings` `[B, T, head_dim]` (the head's embedding,
      before dropout) and `dp_score` `[B]` (MDP's deviation logit: the mean
      of the top `T // topk_ratio` adjacent-frame mean squared differences of
      the embeddings). With `T < topk_ratio` MDP's `k` is 0 (a NaN mean);
      here it is 1.
    """
    for name, x, width in (('visual', visual, self.visual_dim),
                           ('audio', audio, self.audio_dim)):
      if x.ndim != 3 or x.shape[-1] != width:
        raise ValueError(f'MDP: {name} features must be [B, T, {width}] '
                         f'(MDP.{name}_dim), got {x.shape}.')
    if mask is None:
      mask = jnp.ones(visual.shape[:2], jnp.float32)
    v = self._embed(pool_channels(visual, self.pooled_visual_dim), mask,
                    'visual')
    a = self._embed(audio, mask, 'audio')
    att_v = self._inter_fe(v, a, mask, 'inter_fe_a2v')
    att_a = self._inter_fe(a, v, mask, 'inter_fe_v2a')
    fused = jnp.concatenate([a, v, att_v, att_a], axis=-1)
    cas, emb = heads.LocalizationHead(
        self.num_classes, self.head_dim, self.dropout_rate, self.dtype,
        name='head')(fused, mask, train=train)
    video_logits = heads.aggregate(cas, mask, 'topk', self.topk_ratio)
    return {
        'cas': cas,
        'aness': jnp.sum(cas, axis=-1),
        'video_logits': video_logits,
        'video_scores': jax.nn.softmax(video_logits, axis=-1),
        'embeddings': emb,
        'dp_score': losses.deviation_logit(emb, mask, 'mse', 'topk_logits',
                                           self.topk_ratio),
    }


def mdp_loss(outputs, label, dp_weight=0.2):
  """MDP's training loss (`core/loss.py`, `TotalLoss_weak`).

  `MSE(video_scores, one_hot(fake))`, averaged over batch and classes
  (`P2SGradLoss`, an `nn.MSELoss()` on the softmax scores), plus
  `dp_weight` x BCE-with-logits of `dp_score` against "fake" (`DPLoss`).

  Args:
    outputs: `MDP`'s output dict (`video_scores`, `dp_score`).
    label: `[B]` int video labels; 0 is real and any other value (MDP's
      binary 1, or the 4-class labels 1-3) is fake.
    dp_weight: weight of the DP loss (MDP: 0.2).

  Returns:
    `(loss, metrics)` with `loss_cls`, `loss_dp` and `loss` in `metrics`.
  """
  fake = label != 0
  scores = outputs['video_scores'].astype(jnp.float32)
  target = jax.nn.one_hot(fake.astype(jnp.int32), scores.shape[-1])
  loss_cls = jnp.mean((scores - target)**2)
  loss_dp = losses.bce_with_logits(outputs['dp_score'], fake)
  loss = loss_cls + dp_weight * loss_dp
  return loss, {'loss_cls': loss_cls, 'loss_dp': loss_dp, 'loss': loss}


def eval_outputs(outputs):
  """MDP's per-video evaluation outputs, in the form of `wmmt.expert_select`.

  MDP is a binary model: the video is forged when its fake score beats its
  real one, which maps onto the 4-class labels as REAL or BOTH (MDP's
  protocol evaluates real and both-modified videos only). Its proposals come
  from the raw CAS (`proposals.mdp_proposals`: frames where the fake CAS
  beats the real one, scored by the mean fake CAS), not from a softmax.

  Args:
    outputs: `MDP`'s output dict.

  Returns:
    `pred_class` `[B]` (0 real, 1 forged), `video_probs` `[B, 4]` (MDP's
    two video scores, then zeros), `fas` `[B, T, 2]` (the CAS) and `expert`
    `[B]` (always 1: the one head).
  """
  scores = outputs['video_scores'].astype(jnp.float32)
  pred = (scores[:, 1] > scores[:, 0]).astype(jnp.int32)
  return {
      'pred_class': pred,
      'video_probs': jnp.pad(scores, ((0, 0), (0, 2))),
      'fas': outputs['cas'].astype(jnp.float32),
      'expert': jnp.ones_like(pred),
  }
