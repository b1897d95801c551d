"""Embeddings, localization heads and the classification heads' aggregation."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from wmmt_jax.models import initializers

AGGREGATIONS = ('topk', 'mean')


def _masked(x, mask):
  return x * mask[..., None].astype(x.dtype)


class Embed(nn.Module):
  """Per-modality embedding: Conv1d(k=3) + ReLU, then LayerNorm (MDP).

  Padded steps are zeroed after each layer, so a video's outputs do not depend
  on how much padding follows it.
  """
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask):
    """`x`: `[B, T, D_in]`, mask `[B, T]`. Returns `[B, T, features]`."""
    x = _masked(x.astype(self.dtype), mask)
    x = nn.Conv(self.features, (3,), padding=[(1, 1)], dtype=self.dtype,
                kernel_init=initializers.torch_default_kernel, name='conv')(x)
    x = nn.relu(x)
    x = nn.LayerNorm(dtype=self.dtype, name='norm')(x)
    return _masked(x, mask)


class LocalizationHead(nn.Module):
  """A localization head `h` producing a class activation sequence (CAS).

  As MDP's head: Conv1d(k=3) + ReLU gives the embedding, then dropout and a
  bias-free Conv1d(k=1) + ReLU give the CAS `[B, T, num_classes]`. The forgery
  activation sequence (FAS) of the paper is the per-step softmax of the CAS.
  """
  num_classes: int
  hidden_dim: int
  dropout_rate: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask, *, train):
    """Returns `(cas [B, T, C], embedding [B, T, hidden_dim])`."""
    emb = nn.Conv(self.hidden_dim, (3,), padding=[(1, 1)], dtype=self.dtype,
                  kernel_init=initializers.torch_default_kernel, name='embed')(x)
    emb = _masked(nn.relu(emb), mask)
    h = nn.Dropout(self.dropout_rate, deterministic=not train)(emb)
    cas = nn.Conv(self.num_classes, (1,), use_bias=False, dtype=self.dtype,
                  kernel_init=initializers.torch_default_kernel, name='cls')(h)
    cas = _masked(nn.relu(cas), mask)
    return cas, emb


def masked_topk_mean(x, mask, ratio):
  """Mean of the `k = max(1, n // ratio)` largest values over time.

  `n` is the number of valid steps of each video, so with no padding and
  `T = 500` this is MDP's top-100 mean.

  Args:
    x: `[B, T, C]` values.
    mask: `[B, T]`.
    ratio: the `r` of `k = T // r`.

  Returns:
    `[B, C]`.
  """
  x = x.astype(jnp.float32)
  valid = mask.astype(jnp.float32)[..., None]
  n = jnp.sum(valid, axis=1)  # [B, 1]
  k = jnp.clip(jnp.floor(n / ratio), 1.0, None)
  neg = jnp.finfo(jnp.float32).min
  srt = -jnp.sort(-jnp.where(valid > 0, x, neg), axis=1)  # descending
  rank = jnp.arange(x.shape[1], dtype=jnp.float32)[None, :, None]
  take = (rank < k[:, None, :]) & (srt > neg)
  return jnp.sum(jnp.where(take, srt, 0.0), axis=1) / k


def aggregate(cas, mask, method, ratio):
  """Temporal aggregation of a classification head (Eq. 2, before `sigma`).

  Args:
    cas: `[B, T, C]`.
    mask: `[B, T]`.
    method: 'mean' (Eq. 2) or 'topk' (MDP: mean of the top `T // ratio`).
    ratio: the top-k ratio.

  Returns:
    `[B, C]` video-level logits; the classification head's `sigma` is a
    softmax over classes.
  """
  if method == 'mean':
    m = mask.astype(jnp.float32)[..., None]
    return jnp.sum(cas.astype(jnp.float32) * m, axis=1) / jnp.maximum(
        jnp.sum(m, axis=1), 1.0)
  if method == 'topk':
    return masked_topk_mean(cas, mask, ratio)
  raise ValueError(
      f'model.aggregation: expected one of {AGGREGATIONS}, got {method!r}.')


def fas(cas):
  """Forgery activation sequence: per-step softmax of a CAS, `[..., T, C]`."""
  return jax.nn.softmax(cas.astype(jnp.float32), axis=-1)
