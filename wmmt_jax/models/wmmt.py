"""WMMT: the whole model (Sec. III, Fig. 2) and modality-aware expert selection."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from wmmt_jax.models import heads
from wmmt_jax.models import tppa

FUSIONS = ('enhanced', 'mdp')
# Video classes (DESIGN.md section 1).
REAL, BOTH, VISUAL_ONLY, AUDIO_ONLY = 0, 1, 2, 3


class WMMT(nn.Module):
  """Weakly supervised multimodal temporal forgery localization.

  Embeddings -> IntraFE (TPPA of each modality with itself) -> InterFE (TPPA
  across modalities, Eq. 8-10) -> localization heads `h_v`, `h_a` on
  `F''_v`, `F''_a` and `h_m` on `F_m`; the classification heads aggregate each
  CAS over time. Switching off `intra_fe`, `inter_fe` and `multitask` gives the
  Table VII baseline (`h_m` on the concatenated embeddings).
  """
  embed_dim: int = 512
  qkv_dim: int = 1024
  head_dim: int = 1024
  tppa_norm: str = 'softmax'
  tppa_scale: str = 'key_input'
  tppa_residual: bool = True
  intra_fe: bool = True
  inter_fe: bool = True
  multitask: bool = True
  fusion: str = 'enhanced'
  dropout_rate: float = 0.7
  aggregation: str = 'topk'
  topk_ratio: int = 5
  dtype: Any = jnp.float32

  def _block(self, name):
    return tppa.EnhanceBlock(self.qkv_dim, self.tppa_norm, self.tppa_scale,
                             self.tppa_residual, self.dtype, name=name)

  def _head(self, num_classes, name):
    return heads.LocalizationHead(num_classes, self.head_dim,
                                  self.dropout_rate, self.dtype, name=name)

  @nn.compact
  def __call__(self, visual, audio, mask, *, train):
    """Forward pass.

    Args:
      visual: `[B, T, D_v]` visual features.
      audio: `[B, T, D_a]` audio features, already aligned to `T`.
      mask: `[B, T]`, 1 for valid steps.
      train: enables dropout.

    Returns:
      A dict with, for each task `t` in ('v', 'a', 'm') that exists:
      `cas[t]` `[B, T, C_t]`, `video_logits[t]` `[B, C_t]` (aggregated CAS;
      the video probabilities are its softmax), `features[t]` (`F''_v`,
      `F''_a`, `F_m`) and `embeddings[t]` (the head's hidden embedding).
    """
    if self.fusion not in FUSIONS:
      raise ValueError(
          f'model.fusion: expected one of {FUSIONS}, got {self.fusion!r}.')
    v = heads.Embed(self.embed_dim, self.dtype, name='visual_embed')(visual,
                                                                     mask)
    a = heads.Embed(self.embed_dim, self.dtype, name='audio_embed')(audio, mask)
    v1, a1 = v, a
    if self.intra_fe:
      v1 = self._block('intra_fe_visual')(v, v, mask)
      a1 = self._block('intra_fe_audio')(a, a, mask)
    v2, a2 = v1, a1
    if self.inter_fe:
      # F''_v: queries from the visual side, keys and values from the audio.
      v2 = self._block('inter_fe_a2v')(v1, a1, mask)
      a2 = self._block('inter_fe_v2a')(a1, v1, mask)
    if self.fusion == 'enhanced':
      fused = jnp.concatenate([v2, a2], axis=-1)
    else:
      fused = jnp.concatenate([a, v, v2, a2], axis=-1)

    features = {'m': fused}
    head_specs = [('m', 4)]
    if self.multitask:
      features.update(v=v2, a=a2)
      head_specs += [('v', 2), ('a', 2)]
    out = {'cas': {}, 'video_logits': {}, 'features': features,
           'embeddings': {}}
    for task, num_classes in head_specs:
      cas, emb = self._head(num_classes, f'head_{task}')(
          features[task], mask, train=train)
      out['cas'][task] = cas
      out['embeddings'][task] = emb
      out['video_logits'][task] = heads.aggregate(
          cas, mask, self.aggregation, self.topk_ratio)
    return out


def expert_select(outputs, use_experts=True):
  """Modality-aware expert selection at inference (Sec. III-C.3).

  `c_m` predicts the class; 1 (both forged) uses `h_m`, 2 (visual only) `h_v`,
  3 (audio only) `h_a`, 0 means the video is real. Without experts (or without
  the single-modality heads) `h_m` localizes every video.

  Args:
    outputs: the model's output dict.
    use_experts: whether to select experts.

  Returns:
    A dict with `video_probs` `[B, 4]`, `pred_class` `[B]`, `expert` `[B]`
    (the class whose head was used: 1 = m, 2 = v, 3 = a) and `fas`
    `[B, T, 2]` (per-step real and forged probability of the chosen head).
  """
  probs = nn.softmax(outputs['video_logits']['m'].astype(jnp.float32))
  pred = jnp.argmax(probs, axis=-1)
  fas_m = heads.fas(outputs['cas']['m'])
  forged_m = 1.0 - fas_m[..., REAL]
  fas = jnp.stack([fas_m[..., REAL], forged_m], axis=-1)
  expert = jnp.full_like(pred, BOTH)
  if use_experts and 'v' in outputs['cas']:
    sel = pred[:, None, None]
    fas = jnp.where(sel == VISUAL_ONLY, heads.fas(outputs['cas']['v']), fas)
    fas = jnp.where(sel == AUDIO_ONLY, heads.fas(outputs['cas']['a']), fas)
    expert = jnp.where((pred == VISUAL_ONLY) | (pred == AUDIO_ONLY), pred,
                       expert)
  return {'video_probs': probs, 'pred_class': pred, 'expert': expert,
          'fas': fas}
