"""Inference over an evaluation split: expert selection, proposals, metrics."""

import jax
import jax.numpy as jnp
import numpy as np

import input_pipeline
from wmmt_jax import parallel
from wmmt_jax.evaluation import metrics
from wmmt_jax.evaluation import proposals as proposals_lib
from wmmt_jax.models import heads
from wmmt_jax.models import long_video
from wmmt_jax.models import mdp
from wmmt_jax.models import wmmt


def make_eval_step(model, use_experts, chunk_size=0, task=''):
  """`(params, batch) -> per-video outputs`, with the batch's bookkeeping.

  WMMT's outputs go through expert selection (`wmmt.expert_select`), MDP's
  through `mdp.eval_outputs`. WMMT batches longer than `chunk_size` (> 0)
  run chunked (`long_video.forward`), in memory bounded by the chunk.
  `task` 'v' or 'a' localizes every video with `h_v` or `h_a` (Table IV's
  single-modality tasks).
  """

  def eval_step(params, batch):
    batch = dict(batch, **{k: batch[k].astype(jnp.float32)
                           for k in ('visual', 'audio')})
    if (chunk_size and isinstance(model, wmmt.WMMT) and
        batch['visual'].shape[1] > chunk_size):
      outputs = long_video.forward(model, params, batch['visual'],
                                   batch['audio'], batch['mask'],
                                   chunk=chunk_size)
    else:
      outputs = model.apply({'params': params}, batch['visual'],
                            batch['audio'], batch['mask'], train=False)
    if isinstance(model, mdp.MDP):
      out = mdp.eval_outputs(outputs)
    else:
      out = wmmt.expert_select(outputs, use_experts)
      if task:
        out['fas'] = heads.fas(outputs['cas'][task])
        out['expert'] = jnp.full_like(
            out['expert'], wmmt.VISUAL_ONLY if task == 'v' else
            wmmt.AUDIO_ONLY)
    out.update(index=batch['index'], valid=batch['valid'],
               length=batch['mask'].sum(axis=-1).astype(np.int32))
    return out

  return eval_step


def video_proposals(fas, fps, pred_class, eval_config):
  """Proposals `[K, 3]` (score, start_s, end_s) of one video.

  Best first, or in time order with `eval_config.proposal_order='temporal'`.

  Args:
    fas: `[T, 2]` real / forged probabilities of the selected head (MDP: its
      CAS), native length.
    fps: frames per second of the features.
    pred_class: the class predicted by `c_m`.
    eval_config: the `eval` config block.
  """
  if (pred_class == wmmt.REAL and eval_config.real_has_no_proposals and
      not eval_config.task):
    return np.zeros((0, 3), np.float32)
  if eval_config.proposal_method == 'mdp':
    props = proposals_lib.mdp_proposals(fas, fps, eval_config.max_proposals)
  else:
    props = proposals_lib.multi_threshold_proposals(
        fas[:, 1], fps, eval_config.thresholds, eval_config.nms_iou,
        eval_config.max_proposals)
  if eval_config.proposal_order == 'temporal':
    # MDP's lists, which its evaluator's AP matching takes in this order.
    props = props[np.argsort(props[:, 1], kind='stable')]
  return props


def metric_names(protocol):
  """The names `flat_scalars` gives a protocol's metrics (without prefix)."""
  spec = metrics.PROTOCOLS[protocol]
  return ([f'ap@{k}' for k in spec['ap_ious']] + ['map'] +
          [f'ar@{k}' for k in spec['ar_ns']] +
          ['mean_ar', 'video_accuracy', 'auc'])


def _ap_ar_scalars(results):
  out = {f'ap@{k}': v for k, v in results['ap'].items()}
  out['map'] = float(np.mean(list(results['ap'].values())))
  out.update({f'ar@{k}': v for k, v in results['ar'].items()})
  out['mean_ar'] = float(np.mean(list(results['ar'].values())))
  return out


def flat_scalars(results, prefix='eval'):
  """Results dict -> flat `{name: float}` for metric writers.

  The extra protocols' metrics are named `{protocol}/ap@0.5` etc.
  """
  out = _ap_ar_scalars(results)
  for key in ('video_accuracy', 'auc'):
    out[key] = results[key]
  for name, extra in results.get('protocols', {}).items():
    out.update({f'{name}/{k}': v for k, v in _ap_ar_scalars(extra).items()})
  if not prefix:
    return out
  return {f'{prefix}/{k}': v for k, v in out.items()}


def segments(record, task=''):
  """The ground truth a task is scored against: all forged segments, or with
  `task` 'v' / 'a' those of the visual / audio track (Table IV)."""
  if task == 'v':
    return record.visual_segments
  if task == 'a':
    return record.audio_segments
  return record.fake_segments


class Evaluator:
  """Runs the model over an evaluation split and scores it.

  Videos run at native length, padded to a few length buckets (one compile
  per bucket); every process runs the same number of batches and the outputs
  come back replicated, so the numbers do not depend on the process count.
  """

  def __init__(self, model, config, records, root, mesh):
    """Args: the model, the run's config, the split's records and their
    dataset root (or an `input_pipeline.pipeline.FeatureSource` and None),
    and the mesh."""
    self._config = config
    self._source = records
    if isinstance(records, input_pipeline.pipeline.FeatureSource):
      records = records.records
    self._records = records
    self._root = root
    self._mesh = mesh
    use_experts = config.eval.expert_selection and config.model.multitask
    self._step = jax.jit(
        make_eval_step(model, use_experts, config.eval.chunk_size,
                       config.eval.task),
        in_shardings=(parallel.replicated(mesh),
                      parallel.data_sharding(mesh)),
        out_shardings=parallel.replicated(mesh))
    self.last_predictions = None

  def predict(self, params):
    """Per-video outputs, in `records` order.

    Returns:
      A dict with `proposals` (file -> `[K, 3]`), `pred_class` `[N]`,
      `video_probs` `[N, 4]` and `expert` `[N]`.
    """
    n = len(self._records)
    pred_class = np.full((n,), -1, np.int32)
    expert = np.full((n,), -1, np.int32)
    video_probs = np.zeros((n, 4), np.float32)
    proposals = {}
    batches, _ = input_pipeline.create_eval_dataset(
        self._config, self._source, self._root,
        process_index=jax.process_index(), process_count=jax.process_count())
    for batch in batches:
      batch = {k: batch[k] for k in ('visual', 'audio', 'mask', 'index',
                                     'valid')}
      out = parallel.to_host(
          self._step(params, parallel.to_global(batch, self._mesh)))
      for row in np.flatnonzero(out['valid'] > 0):
        i = int(out['index'][row])
        record = self._records[i]
        pred_class[i] = out['pred_class'][row]
        expert[i] = out['expert'][row]
        video_probs[i] = out['video_probs'][row]
        fas = out['fas'][row, :out['length'][row]]
        proposals[record.file] = video_proposals(
            fas, record.fps, pred_class[i], self._config.eval)
    missing = np.flatnonzero(pred_class < 0)
    if missing.size:
      raise RuntimeError(
          f'Evaluation missed {missing.size} of {n} videos, e.g. '
          f'{self._records[missing[0]].file}: the eval pipeline must yield '
          'every record once.')
    return {'proposals': proposals, 'pred_class': pred_class,
            'video_probs': video_probs, 'expert': expert}

  def evaluate(self, params):
    """Predicts and scores the split with `config.eval.protocol`.

    Returns:
      `{'ap': {iou: v}, 'ar': {n: v}, 'video_accuracy': v, 'auc': v,
      'protocol': name}`, and for each of `config.eval.extra_protocols`
      its `{'ap': ..., 'ar': ...}` under `results['protocols'][name]`, from
      the same predictions; the proposals are kept in `last_predictions`.
    """
    pred = self.predict(params)
    self.last_predictions = pred['proposals']
    ground_truth = {r.file: segments(r, self._config.eval.task)
                    for r in self._records}

    def score(name):
      protocol = metrics.PROTOCOLS[name]
      return metrics.ap_ar_1d(
          pred['proposals'], ground_truth, protocol['ap_ious'],
          protocol['ar_ns'], ar_order=self._config.eval.ar_order,
          drop_gt_without_proposals=(
              self._config.eval.drop_gt_without_proposals))

    results = score(self._config.eval.protocol)
    extra = [p for p in self._config.eval.extra_protocols
             if p != self._config.eval.protocol]
    if extra:
      results['protocols'] = {name: score(name) for name in extra}
    labels = np.array([r.label for r in self._records], np.int32)
    results['video_accuracy'] = metrics.video_accuracy(pred['pred_class'],
                                                       labels)
    results['auc'] = metrics.binary_auc(1.0 - pred['video_probs'][:, 0],
                                        (labels != 0).astype(np.int32))
    results['protocol'] = self._config.eval.protocol
    return results
