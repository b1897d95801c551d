"""Start-up validation of a config: a bad value stops before any work."""

import input_pipeline
from wmmt_jax import losses
from wmmt_jax.evaluation import inference
from wmmt_jax.models import heads
from wmmt_jax.models import tppa
from wmmt_jax.models import wmmt

_PROTOCOLS = ('wmmt', 'lavdf', 'avdeepfake1m')


def _get(config, key):
  value = config
  for part in key.split('.'):
    value = value[part]
  return value


def _choice(config, key, allowed):
  value = _get(config, key)
  if value not in allowed:
    raise ValueError(f'{key}: expected one of {tuple(allowed)}, got {value!r}.')


def _positive(config, key, allow_zero=False):
  value = _get(config, key)
  if not isinstance(value, (int, float)) or isinstance(value, bool) or (
      value < 0 if allow_zero else value <= 0):
    bound = '>= 0' if allow_zero else '> 0'
    raise ValueError(f'{key}: expected a number {bound}, got {value!r}.')


def _bool(config, key):
  value = _get(config, key)
  if not isinstance(value, bool):
    raise ValueError(f'{key}: expected True or False, got {value!r}.')


def validate(config, num_devices):
  """Raises ValueError naming the first config key with a bad value.

  Args:
    config: the run's ConfigDict.
    num_devices: the global device count; batch sizes must divide over it.
  """
  for key in ('batch_size', 'total_steps', 'learning_rate',
              'checkpoint_every_steps', 'keep_checkpoints', 'log_every_steps',
              'dataset.num_frames', 'model.embed_dim', 'model.qkv_dim',
              'model.head_dim', 'model.topk_ratio', 'eval.batch_size',
              'eval.max_proposals', 'loss.dp_topk_ratio'):
    _positive(config, key)
  for key in ('weight_decay', 'eval_every_steps', 'eval.chunk_size',
              'loss.weight_m',
              'loss.weight_v', 'loss.weight_a', 'loss.weight_dp'):
    _positive(config, key, allow_zero=True)
  for key in ('skip_nonfinite_updates', 'resume_allow_config_changes',
              'eval.drop_gt_without_proposals', 'eval.plots',
              'dataset.use_flow', 'dataset.use_prepared',
              'dataset.skip_invalid'):
    _bool(config, key)
  if not 0.0 <= config.model.dropout_rate < 1.0:
    raise ValueError('model.dropout_rate: expected a value in [0, 1), got '
                     f'{config.model.dropout_rate!r}.')
  for key in ('batch_size', 'eval.batch_size'):
    value = _get(config, key)
    if value % num_devices:
      raise ValueError(
          f'{key}={value} does not divide over the {num_devices} devices; '
          f'use a multiple of {num_devices}.')
  _choice(config, 'model.name', ('wmmt', 'mdp'))
  if config.model.name == 'mdp':
    _positive(config, 'model.pooled_visual_dim')
    if config.dataset.visual_dim % config.model.pooled_visual_dim:
      raise ValueError(
          f'model.pooled_visual_dim={config.model.pooled_visual_dim} must '
          f'divide dataset.visual_dim={config.dataset.visual_dim} (MDP '
          'averages groups of adjacent visual channels).')
  _choice(config, 'dataset.train_subset', input_pipeline.SUBSETS)
  _choice(config, 'dataset.eval_subset', input_pipeline.SUBSETS)
  _choice(config, 'eval.proposal_order', ('score', 'temporal'))
  _choice(config, 'eval.ar_order', ('listed', 'temporal'))
  _choice(config, 'eval.task', ('', 'v', 'a'))
  if config.eval.task and (config.model.name != 'wmmt' or
                           not config.model.multitask):
    raise ValueError(f'eval.task={config.eval.task!r} scores the h_v / h_a '
                     'head, which needs model.name=wmmt and '
                     'model.multitask=True.')
  _choice(config, 'model.tppa_norm', tppa.TPPA_NORMS)
  _choice(config, 'model.tppa_scale', ('key_input', 'qkv'))
  _choice(config, 'model.fusion', wmmt.FUSIONS)
  _choice(config, 'model.aggregation', heads.AGGREGATIONS)
  _choice(config, 'model.dtype', ('float32', 'bfloat16'))
  _choice(config, 'loss.dp_function', losses.DP_FUNCTIONS)
  _choice(config, 'loss.dp_objective', losses.DP_OBJECTIVES)
  _choice(config, 'loss.dp_reduction', losses.DP_REDUCTIONS)
  _choice(config, 'loss.dp_input', losses.DP_INPUTS)
  _choice(config, 'eval.protocol', _PROTOCOLS)
  for name in config.eval.extra_protocols:
    if name not in _PROTOCOLS:
      raise ValueError(f'eval.extra_protocols: expected names from '
                       f'{_PROTOCOLS}, got {name!r}.')
  if config.eval.best_metric:
    _choice(config, 'eval.best_metric',
            inference.metric_names(config.eval.protocol))
  if not isinstance(config.eval.checkpoint, str):
    raise ValueError('eval.checkpoint: expected a checkpoint path or "", got '
                     f'{config.eval.checkpoint!r}.')
  _choice(config, 'eval.proposal_method', ('mdp', 'multi_threshold'))
  _choice(config, 'dataset.train_sampling', ('crop', 'bins'))
  _choice(config, 'dataset.audio_align', ('avg_pool', 'linear'))
  _choice(config, 'dataset.name', ('synthetic', 'lavdf', 'avdeepfake1m'))
  _choice(config, 'dataset.record_dtype', ('float32', 'float16', 'bfloat16'))
  for key in ('dataset.audio_rate', 'dataset.length_tolerance',
              'dataset.segment_tolerance_s'):
    _positive(config, key, allow_zero=True)
  if config.dataset.use_flow and config.dataset.layout != 'ummaformer':
    raise ValueError('dataset.use_flow=True needs dataset.layout='
                     f"'ummaformer' (TSN flow), got {config.dataset.layout!r}.")
  _choice(config, 'dataset.layout', input_pipeline.formats.LAYOUTS)
  if (config.loss.use_dp and config.loss.dp_objective != 'm' and
      not config.model.multitask):
    raise ValueError(
        f'loss.dp_objective={config.loss.dp_objective!r} uses the visual or '
        'audio task, which needs model.multitask=True (or use objective m).')
