"""WMMT losses: Eq. 3 (L_v, L_a), Eq. 4 (L_m), Eq. 11-14 (L_dp), Eq. 15.

All are plain functions of arrays, computed in float32, averaged over the
batch and masked over time.
"""

import jax
import jax.numpy as jnp

from wmmt_jax.models import heads

DP_FUNCTIONS = ('mse', 'l1', 'l2', 'cosine', 'kl')
DP_OBJECTIVES = ('a', 'v', 'm', 'a+v', 'a+v+m')
DP_REDUCTIONS = ('sigmoid_sum', 'topk_logits')
DP_INPUTS = ('features', 'embeddings')
_EPS = 1e-12


def binary_labels(label):
  """Video labels `[B]` (0-3) -> (visual forged, audio forged, any forged)."""
  visual = (label == 1) | (label == 2)
  audio = (label == 1) | (label == 3)
  return visual, audio, label != 0


def multiclass_ce(logits, label):
  """Eq. 4: cross entropy of softmax(`logits` `[B, C]`) against `label` `[B]`."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.mean(jnp.take_along_axis(logp, label[:, None], axis=-1))


def binary_ce(logits, target):
  """Eq. 3: BCE of the forged probability `softmax(logits)[:, 1]`.

  Args:
    logits: `[B, 2]` aggregated CAS (real, forged).
    target: `[B]` bool or {0, 1}, 1 = forged.
  """
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  y = target.astype(jnp.float32)
  return -jnp.mean(y * logp[:, 1] + (1.0 - y) * logp[:, 0])


def bce_with_logits(z, target):
  """Mean BCE of `sigmoid(z)` against `target` `[B]`, computed stably."""
  y = target.astype(jnp.float32)
  return jnp.mean(jax.nn.softplus(z) - y * z)


def adjacent_deviation(x, mask, function):
  """Eq. 12: deviation `f(m_t, m_{t+1})` of adjacent steps.

  Args:
    x: `[B, T, D]` features.
    mask: `[B, T]`.
    function: 'mse' (mean squared difference, Eq. 12), 'l1' (Manhattan),
      'l2' (Euclidean), 'cosine' (1 - cosine similarity) or 'kl'
      (KL(softmax(m_t) || softmax(m_{t+1})) over the feature axis).

  Returns:
    `([B, T - 1] deviations, [B, T - 1] pair mask)`; a pair is valid when both
    of its steps are.
  """
  x = x.astype(jnp.float32)
  a, b = x[:, :-1], x[:, 1:]
  mask = mask.astype(jnp.float32)
  pair_mask = mask[:, :-1] * mask[:, 1:]
  diff = a - b
  if function == 'mse':
    f = jnp.mean(diff**2, axis=-1)
  elif function == 'l1':
    f = jnp.sum(jnp.abs(diff), axis=-1)
  elif function == 'l2':
    sq = jnp.sum(diff**2, axis=-1)
    # sqrt has an infinite gradient at 0: keep it away from padded pairs.
    f = jnp.sqrt(jnp.where(pair_mask > 0, jnp.maximum(sq, _EPS), 1.0))
  elif function == 'cosine':
    dot = jnp.sum(a * b, axis=-1)
    norms = jnp.sqrt(jnp.maximum(jnp.sum(a * a, -1) * jnp.sum(b * b, -1),
                                 _EPS))
    f = 1.0 - dot / norms
  elif function == 'kl':
    la = jax.nn.log_softmax(a, axis=-1)
    lb = jax.nn.log_softmax(b, axis=-1)
    f = jnp.sum(jnp.exp(la) * (la - lb), axis=-1)
  else:
    raise ValueError(
        f'loss.dp_function: expected one of {DP_FUNCTIONS}, got {function!r}.')
  return f * pair_mask, pair_mask


def deviation_logit(x, mask, function, reduction, topk_ratio):
  """Temporal deviation of each video before the sigmoid of Eq. 11.

  'sigmoid_sum' is the paper's `sum_t f(m_t, m_{t+1})`; 'topk_logits' is MDP's
  mean of the top `n // topk_ratio` adjacent deviations (`n` = valid steps).

  Returns:
    `[B]` float32.
  """
  f, pair_mask = adjacent_deviation(x, mask, function)
  if reduction == 'sigmoid_sum':
    return jnp.sum(f, axis=-1)
  if reduction == 'topk_logits':
    # k follows the number of valid frames (MDP: T // 5 on T - 1 pairs).
    n_frames = jnp.sum(mask.astype(jnp.float32), axis=-1)
    n_pairs = jnp.sum(pair_mask, axis=-1)
    k = jnp.clip(jnp.floor(n_frames / topk_ratio), 1.0,
                 jnp.maximum(n_pairs, 1.0))
    neg = jnp.finfo(jnp.float32).min
    srt = -jnp.sort(-jnp.where(pair_mask > 0, f, neg), axis=-1)
    rank = jnp.arange(f.shape[-1], dtype=jnp.float32)[None]
    take = (rank < k[:, None]) & (srt > neg)
    return jnp.sum(jnp.where(take, srt, 0.0), axis=-1) / k
  raise ValueError(
      f'loss.dp_reduction: expected one of {DP_REDUCTIONS}, got {reduction!r}.')


def deviation_loss(x, mask, forged, function, reduction, topk_ratio):
  """Deviation perceiving loss on one objective (Eq. 11-14).

  `d = sigmoid(deviation)` and BCE against `psi(y)` = forged at all (Eq. 14),
  computed as BCE with logits, which equals Eq. 13 and does not overflow when
  the summed deviation is large.

  Args:
    x: `[B, T, D]` features of the objective.
    mask: `[B, T]`.
    forged: `[B]`, 1 when the video label is not 0.
    function: the deviation measure `f`.
    reduction: 'sigmoid_sum' or 'topk_logits'.
    topk_ratio: `r` of MDP's top-k.

  Returns:
    Scalar loss.
  """
  z = deviation_logit(x, mask, function, reduction, topk_ratio)
  return bce_with_logits(z, forged)


def total_loss(outputs, label, mask, loss_config):
  """Eq. 15: `L = w_m L_m + w_v L_v + w_a L_a + w_dp L_dp`.

  Args:
    outputs: the model's output dict (`video_logits`, `features`,
      `embeddings`); `L_v` and `L_a` enter only when the model has `h_v`, `h_a`.
    label: `[B]` int video labels 0-3.
    mask: `[B, T]`.
    loss_config: the `loss` config block.

  Returns:
    `(loss, metrics)` with each term in `metrics`.
  """
  visual, audio, forged = binary_labels(label)
  logits = outputs['video_logits']
  metrics = {'loss_m': multiclass_ce(logits['m'], label)}
  loss = loss_config.weight_m * metrics['loss_m']
  if 'v' in logits:
    metrics['loss_v'] = binary_ce(logits['v'], visual)
    metrics['loss_a'] = binary_ce(logits['a'], audio)
    loss += (loss_config.weight_v * metrics['loss_v'] +
             loss_config.weight_a * metrics['loss_a'])
  if loss_config.use_dp:
    source = outputs[loss_config.dp_input]
    objectives = loss_config.dp_objective.split('+')
    missing = [o for o in objectives if o not in source]
    if missing:
      raise ValueError(
          f'loss.dp_objective={loss_config.dp_objective!r} needs the '
          f'{missing} task(s), which need model.multitask=True.')
    metrics['loss_dp'] = sum(
        deviation_loss(source[o], mask, forged, loss_config.dp_function,
                       loss_config.dp_reduction, loss_config.dp_topk_ratio)
        for o in objectives)
    loss += loss_config.weight_dp * metrics['loss_dp']
  metrics['loss'] = loss
  return loss, metrics
