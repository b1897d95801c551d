"""Temporal property preserving attention (TPPA), Alg. 1 and Eq. 5-10.

TPPA scores every step `j` of the key side by its relevance to the whole query
side, `r_j = sum_i R_ij` with `R = Q K^T / sqrt(d)`, normalises `r` over time
and scales the value row `V_j` by `r_j`, so the output keeps the time order.
Because `sum_i q_i . k_j = (sum_i q_i) . k_j`, the column sums cost O(T d):
the `T x T` matrix `R` is never built.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from wmmt_jax.models import initializers

TPPA_NORMS = ('softmax', 'sigmoid', 'none')


def query_sum(q, mask):
  """`sum_i q_i` over valid steps, `[B, D]` float32 (the column-sum identity).

  The sum over up to ~10^6 queries is accumulated in float32 also under
  bfloat16 compute.
  """
  return jnp.einsum('btd,bt->bd', q.astype(jnp.float32),
                    mask.astype(jnp.float32))


def raw_relevance(q_sum, k, scale_dim):
  """`r_j = (sum_i q_i) . k_j / sqrt(scale_dim)`, `[B, T]` float32."""
  r = jnp.einsum('bd,btd->bt', q_sum, k.astype(jnp.float32))
  return r / jnp.sqrt(jnp.float32(scale_dim))


def normalize_relevance(r, mask, norm):
  """Eq. 6's normalisation of `r` `[B, T]` over the valid steps of a video."""
  mask = mask.astype(jnp.float32)
  if norm == 'softmax':
    r = jnp.where(mask > 0, r, -jnp.inf)
    r = jax.nn.softmax(r, axis=-1)
    r = jnp.where(mask > 0, r, 0.0)
  elif norm == 'sigmoid':
    r = jax.nn.sigmoid(r)
  elif norm != 'none':
    raise ValueError(
        f'model.tppa_norm: expected one of {TPPA_NORMS}, got {norm!r}.')
  return r * mask


def tppa_relevance(q, k, mask, scale_dim, norm):
  """Normalised column sums of `R = Q K^T / sqrt(scale_dim)` (Eq. 6 and 9).

  Args:
    q: `[B, T, D]` queries.
    k: `[B, T, D]` keys.
    mask: `[B, T]`, 1 for valid steps and 0 for padding. Padded queries do not
      enter the sum and padded keys get zero relevance.
    scale_dim: the `d` of `sqrt(d)`.
    norm: 'softmax' (over valid time steps), 'sigmoid' or 'none'.

  Returns:
    `[B, T]` float32 relevance `r`.
  """
  return normalize_relevance(raw_relevance(query_sum(q, mask), k, scale_dim),
                             mask, norm)


def scale_dim(scale, key_input_dim, qkv_dim):
  """The `d` of `sqrt(d)` for `model.tppa_scale`."""
  if scale == 'key_input':
    return key_input_dim
  if scale == 'qkv':
    return qkv_dim
  raise ValueError("model.tppa_scale: expected 'key_input' or 'qkv', got "
                   f'{scale!r}.')


class TPPA(nn.Module):
  """TPPA from `x_q` (queries) to `x_kv` (keys and values), Eq. 5-7 / 8-10.

  IntraFE calls it with `x_q = x_kv`; InterFE with the two modalities. The
  output row `j` is `Linear(r_j * V_j)`, as in MDP's released code.

  Attributes:
    qkv_dim: width of Q, K and V.
    out_dim: width of the output projection.
    norm: normalisation of `r` ('softmax', 'sigmoid', 'none').
    scale: 'key_input' = `sqrt(width of x_kv)` (MDP) or 'qkv' = `sqrt(qkv_dim)`.
    dtype: compute dtype.
  """
  qkv_dim: int
  out_dim: int
  norm: str = 'softmax'
  scale: str = 'key_input'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_q, x_kv, mask):
    """`x_q`, `x_kv`: `[B, T, D]`; mask `[B, T]`. Returns `([B, T, out_dim], r)`."""
    dense = lambda n, name: nn.Dense(
        n, dtype=self.dtype, kernel_init=initializers.torch_default_kernel,
        name=name)
    q = dense(self.qkv_dim, 'query')(x_q)
    k = dense(self.qkv_dim, 'key')(x_kv)
    v = dense(self.qkv_dim, 'value')(x_kv)
    r = tppa_relevance(q, k, mask,
                       scale_dim(self.scale, x_kv.shape[-1], self.qkv_dim),
                       self.norm)
    out = dense(self.out_dim, 'output')(r[..., None].astype(v.dtype) * v)
    return out, r


class EnhanceBlock(nn.Module):
  """One feature-enhancement block: TPPA, optional residual, LayerNorm.

  MDP's code puts a LayerNorm after each attention block. With `residual`
  the block's query input is added before the norm: without it the output at
  step `j` of InterFE is the other modality's value row `V_j`, and the own
  modality's per-step content only survives through the global query sum.
  """
  qkv_dim: int
  norm: str = 'softmax'
  scale: str = 'key_input'
  residual: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_q, x_kv, mask):
    """`x_q`, `x_kv`: `[B, T, D]`; mask `[B, T]`. Returns `[B, T, D]`."""
    out, _ = TPPA(self.qkv_dim, x_q.shape[-1], self.norm, self.scale,
                  self.dtype, name='tppa')(x_q, x_kv, mask)
    if self.residual:
      out = out + x_q
    out = nn.LayerNorm(dtype=self.dtype, name='norm')(out)
    return out * mask[..., None].astype(out.dtype)
