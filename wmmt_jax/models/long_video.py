"""WMMT inference on videos of any length, in chunks of time.

A single forward pass holds a few `[T, qkv_dim]` and `[T, head_dim]`
activations at once, which is what limits the length of a video. TPPA itself
is linear in `T` (`tppa.py`), but its column sums are global: every output
row depends on the whole video through `sum_i q_i` and, with the softmax,
through the normaliser over all `j`. `forward` therefore runs each layer over
fixed-size chunks of time (`jax.lax.map`, one compile per chunk size), with
the global quantities reduced in their own passes:

1. embeddings per chunk (the k = 3 convolution reads one frame of halo on
   each side);
2. per TPPA block: `sum_i q_i` over the chunks; the raw relevance `r_j` of
   each chunk; its normalisation over the whole `[B, T]` vector (small); then
   the block's output rows per chunk;
3. the localization heads per chunk (halo of one frame again) and the
   temporal aggregation of the small `[B, T, C]` CAS.

Only `[B, T, embed_dim]` features and the `[B, T]` relevance stay whole, and
the result equals the single pass (`WMMT.__call__`) up to the order of float
sums. The layers are the model's own modules, applied to the parameters'
subtrees, so the two cannot drift apart.
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from wmmt_jax.models import heads
from wmmt_jax.models import tppa
from wmmt_jax.models import wmmt

# Heads' and embeddings' k = 3 convolutions read one neighbour on each side.
_HALO = 1


def _chunk_map(fn, arrays, chunk, halo=0):
  """`fn` over chunks of time of `arrays` (`[B, T, ...]` each).

  Args:
    fn: `(*windows) -> pytree`; each window is `[B, chunk + 2 halo, ...]`,
      zero outside the video.
    arrays: arrays sharing `B` and `T`.
    chunk: rows per chunk.
    halo: extra rows on each side of each window.

  Returns:
    `fn`'s outputs stacked on a new leading chunk axis.
  """
  length = arrays[0].shape[1]
  n = math.ceil(length / chunk)
  padded = [
      jnp.pad(x, [(0, 0), (halo, n * chunk - length + halo)] +
              [(0, 0)] * (x.ndim - 2)) for x in arrays]

  def one(i):
    return fn(*[jax.lax.dynamic_slice_in_dim(x, i * chunk, chunk + 2 * halo,
                                             axis=1) for x in padded])

  return jax.lax.map(one, jnp.arange(n))


def _rows(stacked, length):
  """`[n, B, chunk, ...]` chunk outputs -> `[B, length, ...]`."""
  x = jnp.moveaxis(stacked, 0, 1)
  return x.reshape(x.shape[0], -1, *x.shape[3:])[:, :length]


def _row_map(fn, arrays, chunk, halo=0):
  """`fn` row-wise (with `halo`): `[B, T, ...]` in, `[B, T, ...]` out.

  `fn` gets windows with the halo and returns the `chunk` rows of its middle.
  """
  return _rows(_chunk_map(fn, arrays, chunk, halo), arrays[0].shape[1])


def _crop(x, halo):
  return x[:, halo:x.shape[1] - halo] if halo else x


def _enhance_block(model, params, x_q, x_kv, mask, chunk):
  """`tppa.EnhanceBlock` of `model` on `params`, chunked."""
  tppa_params = params['tppa']
  dense = lambda n, name, x: nn.Dense(n, dtype=model.dtype).apply(
      {'params': tppa_params[name]}, x)
  qkv = model.qkv_dim
  q_sum = jnp.sum(_chunk_map(
      lambda x, m: tppa.query_sum(dense(qkv, 'query', x), m), (x_q, mask),
      chunk), axis=0)
  scale = tppa.scale_dim(model.tppa_scale, x_kv.shape[-1], qkv)
  r = _row_map(
      lambda x: tppa.raw_relevance(q_sum, dense(qkv, 'key', x), scale),
      (x_kv,), chunk)
  r = tppa.normalize_relevance(r, mask, model.tppa_norm)

  def rows(xq, xkv, rj, m):
    v = dense(qkv, 'value', xkv)
    out = dense(xq.shape[-1], 'output', rj[..., None].astype(v.dtype) * v)
    if model.tppa_residual:
      out = out + xq
    out = nn.LayerNorm(dtype=model.dtype).apply({'params': params['norm']},
                                                out)
    return out * m[..., None].astype(out.dtype)

  return _row_map(rows, (x_q, x_kv, r, mask), chunk)


@functools.partial(jax.jit, static_argnames=('model', 'chunk'))
def forward(model, params, visual, audio, mask=None, *, chunk=4096):
  """WMMT's inference forward pass in chunks of `chunk` time steps.

  Args:
    model: a `wmmt.WMMT` (its settings; its parameters are `params`).
    params: `variables['params']` of `model`.
    visual: `[B, T, D_v]`, any `T`.
    audio: `[B, T, D_a]`, aligned to `T`.
    mask: `[B, T]`, 1 for valid steps; default all valid.
    chunk: time steps per chunk; memory grows with it, not with `T`
      (beyond the `[B, T, embed_dim]` features).

  Returns:
    `cas` and `video_logits` per task, as `WMMT.__call__(train=False)`
    (the `features` and `embeddings` of the whole video are not kept).
  """
  if not isinstance(model, wmmt.WMMT):
    raise TypeError(f'long_video.forward takes a WMMT, got {type(model)}.')
  if model.fusion not in wmmt.FUSIONS:
    raise ValueError(
        f'model.fusion: expected one of {wmmt.FUSIONS}, got {model.fusion!r}.')
  if mask is None:
    mask = jnp.ones(visual.shape[:2], jnp.float32)
  chunk = min(chunk, visual.shape[1])

  def embed(name, x, m):
    out = heads.Embed(model.embed_dim, model.dtype).apply(
        {'params': params[name]}, x, m)
    return _crop(out, _HALO)

  v = _row_map(functools.partial(embed, 'visual_embed'), (visual, mask),
               chunk, _HALO)
  a = _row_map(functools.partial(embed, 'audio_embed'), (audio, mask), chunk,
               _HALO)
  block = lambda name, x_q, x_kv: _enhance_block(model, params[name], x_q,
                                                 x_kv, mask, chunk)
  v1, a1 = v, a
  if model.intra_fe:
    v1 = block('intra_fe_visual', v, v)
    a1 = block('intra_fe_audio', a, a)
  v2, a2 = v1, a1
  if model.inter_fe:
    v2 = block('inter_fe_a2v', v1, a1)
    a2 = block('inter_fe_v2a', a1, v1)
  fused = (v2, a2) if model.fusion == 'enhanced' else (a, v, v2, a2)
  inputs = {'m': fused}
  head_specs = [('m', 4)]
  if model.multitask:
    inputs.update(v=(v2,), a=(a2,))
    head_specs += [('v', 2), ('a', 2)]

  out = {'cas': {}, 'video_logits': {}}
  for task, num_classes in head_specs:
    head = heads.LocalizationHead(num_classes, model.head_dim,
                                  model.dropout_rate, model.dtype)

    def head_rows(m, *xs, head=head, task=task):
      cas, _ = head.apply({'params': params[f'head_{task}']},
                          jnp.concatenate(xs, axis=-1), m, train=False)
      return _crop(cas, _HALO)

    cas = _row_map(head_rows, (mask, *inputs[task]), chunk, _HALO)
    out['cas'][task] = cas
    out['video_logits'][task] = heads.aggregate(cas, mask, model.aggregation,
                                                model.topk_ratio)
  return out
