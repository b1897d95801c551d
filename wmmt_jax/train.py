"""Training and evaluation of WMMT: `train_and_evaluate(config, workdir)`.

Data parallelism is `jax.jit` over a 1-D `('data',)` mesh of all devices: the
batch is split on its first axis, the train state is replicated and XLA
inserts the gradient all-reduce. Checkpoints are Orbax's; a workdir that holds
one is resumed.

Fault tolerance. A run killed at any moment and restarted from its workdir
ends with the parameters of an uninterrupted run, bit for bit on CPU: the
input order and the dropout keys are functions of `(seed, step)`, the
checkpoint holds the whole train state, and Orbax commits a checkpoint
atomically (a save cut short leaves a temporary directory that a restart
ignores and removes). SIGTERM saves the current step and stops
(`preemption.py`); a non-finite loss, gradient or state stops the run
without saving it, or with `skip_nonfinite_updates` the step is skipped;
start-up checks of the workdir (`workdir.py`) refuse an unwritable or full
one, or one holding another run's checkpoint, before anything is written.
"""

import contextlib
import errno
import os
import re
from typing import Any

from absl import logging
from clu import metric_writers
from clu import periodic_actions
from etils import epath
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import tensorflow as tf

from jax.experimental import multihost_utils

import input_pipeline
from input_pipeline import prepare
from wmmt_jax import compiles
from wmmt_jax import config_lib
from wmmt_jax import errors
from wmmt_jax import losses
from wmmt_jax import parallel
from wmmt_jax import plots
from wmmt_jax import preemption
from wmmt_jax import workdir as workdir_lib
from wmmt_jax.evaluation import inference
from wmmt_jax.evaluation import results as results_lib
from wmmt_jax.models import mdp
from wmmt_jax.models import wmmt

# The best evaluation's parameters (`config.eval.best_metric`).
BEST_SUBDIR = 'best'


@flax.struct.dataclass
class TrainState:
  """The whole training state: a small pytree.

  Attributes:
    step: steps taken, skipped ones included.
    params: the model's parameters.
    opt_state: the optimiser's state.
    skipped_steps: steps whose non-finite update was dropped
      (`skip_nonfinite_updates`); 0 otherwise.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  skipped_steps: jax.Array


class TextFileWriter(metric_writers.LoggingWriter):
  """Logs as clu's LoggingWriter and appends scalars to a readable text file."""

  def __init__(self, path):
    super().__init__()
    self._path = path

  def write_scalars(self, step, scalars):
    super().write_scalars(step, scalars)
    values = ', '.join(f'{k}={float(v):.6g}' for k, v in sorted(scalars.items()))
    with tf.io.gfile.GFile(self._path, 'a') as f:
      f.write(f'step {step}: {values}\n')


def create_writer(workdir, is_chief):
  """TensorBoard + `metrics.txt` + log on process 0; the log elsewhere."""
  if not is_chief:
    return metric_writers.LoggingWriter()
  return metric_writers.MultiWriter([
      metric_writers.SummaryWriter(workdir),
      TextFileWriter(os.path.join(workdir, 'metrics.txt'))])


def create_model(config):
  """The module `config.model.name` names: WMMT, or MDP at MDP's layout."""
  m = config.model
  if m.name == 'mdp':
    return mdp.MDP(
        visual_dim=config.dataset.visual_dim,
        audio_dim=config.dataset.audio_dim,
        pooled_visual_dim=m.pooled_visual_dim, embed_dim=m.embed_dim,
        qkv_dim=m.qkv_dim, head_dim=m.head_dim, dropout_rate=m.dropout_rate,
        topk_ratio=m.topk_ratio, dtype=jnp.dtype(m.dtype))
  return wmmt.WMMT(
      embed_dim=m.embed_dim, qkv_dim=m.qkv_dim, head_dim=m.head_dim,
      tppa_norm=m.tppa_norm, tppa_scale=m.tppa_scale,
      tppa_residual=m.tppa_residual, intra_fe=m.intra_fe,
      inter_fe=m.inter_fe, multitask=m.multitask, fusion=m.fusion,
      dropout_rate=m.dropout_rate, aggregation=m.aggregation,
      topk_ratio=m.topk_ratio, dtype=jnp.dtype(m.dtype))


def create_optimizer(config):
  """Adam with torch-style L2 weight decay (added to the gradient, not AdamW)."""
  return optax.chain(
      optax.add_decayed_weights(config.weight_decay),
      optax.scale_by_adam(b1=config.adam_b1, b2=config.adam_b2,
                          eps=config.adam_eps),
      optax.scale_by_learning_rate(config.learning_rate))


def compute_loss(config, outputs, batch):
  """`(loss, metrics)` of the model's outputs on a batch.

  WMMT: Eq. 15 (`losses.total_loss`). MDP: its own loss (`mdp.mdp_loss`),
  MSE on the video scores plus `loss.weight_dp` x its DP loss.
  """
  if config.model.name == 'mdp':
    return mdp.mdp_loss(outputs, batch['label'], config.loss.weight_dp)
  return losses.total_loss(outputs, batch['label'], batch['mask'],
                           config.loss)


def _dummy_inputs(config):
  t = config.dataset.num_frames
  return (jnp.zeros((1, t, config.dataset.visual_dim)),
          jnp.zeros((1, t, config.dataset.audio_dim)), jnp.ones((1, t)))


def _init_fn(model, tx, config):
  def init(rng):
    params = model.init({'params': rng}, *_dummy_inputs(config),
                        train=False)['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params),
                      skipped_steps=jnp.zeros((), jnp.int32))
  return init, jax.random.fold_in(jax.random.key(config.seed), 0)


def abstract_train_state(model, tx, config, mesh):
  """The train state's `ShapeDtypeStruct`s, replicated over `mesh`.

  Computes nothing (`jax.eval_shape`); the shardings are what a checkpoint
  restore needs.
  """
  init, rng = _init_fn(model, tx, config)
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                     sharding=parallel.replicated(mesh)),
      jax.eval_shape(init, rng))


def init_state(model, tx, config, mesh, abstract_state=None):
  """Initialises the train state directly replicated over `mesh`.

  Args:
    model: the WMMT module.
    tx: the optimiser.
    config: the run's config.
    mesh: the data mesh.
    abstract_state: `abstract_train_state(...)`, if already at hand (saves
      tracing the model once more).

  Returns:
    `(state, abstract_state)`; see `abstract_train_state`.
  """
  if abstract_state is None:
    abstract_state = abstract_train_state(model, tx, config, mesh)
  init, rng = _init_fn(model, tx, config)
  shardings = jax.tree.map(lambda x: x.sharding, abstract_state)
  return jax.jit(init, out_shardings=shardings)(rng), abstract_state


def _all_finite(tree):
  """Scalar bool: every floating-point leaf of `tree` is finite."""
  checks = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(checks)) if checks else jnp.bool_(True)


def make_train_step(model, tx, config):
  """The (unjitted) train step `(state, batch) -> (state, metrics)`.

  With `config.skip_nonfinite_updates`, a step whose loss or gradient norm
  is not finite (an overflowing sum of squares counts too) keeps the old
  parameters and optimiser state and counts itself in `skipped_steps`; the
  metrics then carry `update_skipped` (0 or 1) and the running
  `skipped_steps`. A finite update that still overflows a parameter is
  caught before the next save (`_save_checkpoint`).
  """
  dropout_key = jax.random.fold_in(jax.random.key(config.seed), 1)

  def train_step(state, batch):
    rng = jax.random.fold_in(dropout_key, state.step)
    batch = as_float32(batch)

    def loss_fn(params):
      outputs = model.apply({'params': params}, batch['visual'],
                            batch['audio'], batch['mask'], train=True,
                            rngs={'dropout': rng})
      return compute_loss(config, outputs, batch)

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics['grad_norm'] = optax.global_norm(grads)
    skipped_steps = state.skipped_steps
    if config.skip_nonfinite_updates:
      # A select inside the step rather than a host-side check: no per-step
      # device sync. The step still counts, so the input order and dropout
      # keys stay functions of the step.
      ok = jnp.isfinite(loss) & jnp.isfinite(metrics['grad_norm'])
      params, opt_state = jax.tree.map(
          lambda new, old: jnp.where(ok, new, old), (params, opt_state),
          (state.params, state.opt_state))
      skipped_steps = skipped_steps + (~ok).astype(jnp.int32)
      metrics['update_skipped'] = (~ok).astype(jnp.float32)
      metrics['skipped_steps'] = skipped_steps
    return state.replace(step=state.step + 1, params=params,
                         opt_state=opt_state,
                         skipped_steps=skipped_steps), metrics

  return train_step


def as_float32(batch):
  """Features of half-precision records (`dataset.record_dtype`) as float32,
  on the device: the host sends half the bytes."""
  return dict(batch, **{k: batch[k].astype(jnp.float32)
                        for k in ('visual', 'audio')})


def feature_source(config, workdir, split, records, root):
  """The pipelines' source of `records`: `.npy` files or prepared records.

  With `dataset.use_prepared`, the first run validates the dataset and
  prepares it (`input_pipeline.prepare`); on several processes process 0
  does that while the others wait, then all read it. A dataset that fails
  validation raises InputDataError with the validation's report.
  """
  try:
    if config.dataset.use_prepared and jax.process_count() > 1:
      if jax.process_index() == 0:
        prepare.ensure_prepared(config, workdir)
      multihost_utils.sync_global_devices('wmmt_jax: dataset prepared')
    return prepare.create_source(config, workdir, split, records, root)
  except (ValueError, FileNotFoundError) as e:
    raise errors.InputDataError(f'Preparing the {split} split of '
                                f'{config.dataset.name} failed: {e}') from e


def jit_train_step(train_step, mesh, state_shardings):
  """Jits the step: batch split over 'data', state replicated and donated."""
  return jax.jit(train_step,
                 in_shardings=(state_shardings, parallel.data_sharding(mesh)),
                 out_shardings=(state_shardings, parallel.replicated(mesh)),
                 donate_argnums=(0,))


def checkpoint_manager(workdir, config):
  """Orbax manager under `{workdir}/checkpoints`, keeping the last K.

  Saves are asynchronous and committed atomically: a save cut short leaves a
  temporary directory that `latest_step` ignores and that the manager
  removes when it starts (so create it only after `workdir_lib.check`: a
  refused start deletes nothing).
  """
  options = ocp.CheckpointManagerOptions(
      max_to_keep=config.keep_checkpoints, create=True,
      cleanup_tmp_directories=True)
  return ocp.CheckpointManager(
      os.path.join(workdir, workdir_lib.CHECKPOINT_SUBDIR), options=options)


def _last_good(last_checkpoint, checkpoint_dir):
  if last_checkpoint is None:
    return 'No checkpoint was written yet'
  return (f'The last good checkpoint is step {last_checkpoint} '
          f'({checkpoint_dir}/{last_checkpoint}); the same command resumes '
          'from it')


def _nonfinite_error(what, step, last_checkpoint, checkpoint_dir):
  return errors.NonFiniteError(
      f'{what} at step {step}; stopped without saving it. '
      f'{_last_good(last_checkpoint, checkpoint_dir)}. Fix the cause first '
      '(e.g. a lower learning_rate, with '
      '--config.resume_allow_config_changes=True), or set '
      '--config.skip_nonfinite_updates=True to skip such steps.')


def _check_finite(history, first_step, last_checkpoint, checkpoint_dir):
  """Raises NonFiniteError naming the first step with a non-finite metric.

  Args:
    history: per-step host metrics of steps `first_step, first_step + 1...`.
    first_step: the step of `history[0]`.
    last_checkpoint: the newest good checkpoint's step, or None.
    checkpoint_dir: where it is.

  Steps whose update was skipped (`update_skipped`) are not faults.
  """
  for step, metrics in enumerate(history, first_step):
    if metrics.get('update_skipped', 0):
      continue
    bad = sorted(k for k, v in metrics.items() if not np.all(np.isfinite(v)))
    if bad:
      values = ', '.join(f'{k}={float(metrics[k])}' for k in bad)
      raise _nonfinite_error(f'Non-finite {values}', step, last_checkpoint,
                             checkpoint_dir)


def _summarize(history):
  """Means over the steps whose update was applied, and the skip count."""
  kept = [m for m in history if not m.get('update_skipped', 0)]
  summary = {}
  if kept:
    summary = {k: np.mean([m[k] for m in kept]) for k in kept[0]
               if k not in ('update_skipped', 'skipped_steps')}
  if 'skipped_steps' in history[-1]:
    summary['skipped_steps'] = history[-1]['skipped_steps']
  return summary


_all_finite_jit = jax.jit(_all_finite)


def _is_disk_full(e):
  while e is not None:
    if ((isinstance(e, OSError) and e.errno == errno.ENOSPC) or
        'No space left on device' in str(e)):
      return True
    e = e.__cause__ or e.__context__
  return False


def _save_error(e, checkpoint_dir, what):
  """WorkdirError for a failed save, naming the newest complete checkpoint."""
  reason = 'the disk is full' if _is_disk_full(e) else 'the write failed'
  steps = workdir_lib.complete_steps(checkpoint_dir)
  newest = (f'The newest complete checkpoint is step {steps[-1]}'
            if steps else 'No complete checkpoint exists yet')
  return errors.WorkdirError(
      f'{what} in {checkpoint_dir} failed: {reason} ({type(e).__name__}: '
      f'{e}). {newest}; free space (or fix the directory) and run the same '
      'command again to resume from it.')


def _save_checkpoint(mngr, step, state, last_checkpoint):
  """Saves `state` as `step`, unless a value in it is not finite.

  The metrics of the steps before were checked already; this catches a
  finite gradient that still made a parameter overflow.
  """
  checkpoint_dir = str(mngr.directory)
  finite = _all_finite_jit(state)
  if not bool(np.asarray(finite.addressable_data(0))):
    raise _nonfinite_error('Non-finite parameters or optimiser state', step,
                           last_checkpoint, checkpoint_dir)
  try:
    # Also raises the error of an earlier asynchronous save.
    mngr.save(step, args=ocp.args.StandardSave(state))
  except Exception as e:  # pylint: disable=broad-except
    raise _save_error(e, checkpoint_dir,
                      f'Saving checkpoint step {step} (or an earlier one)'
                     ) from e


def _wait_for_saves(mngr, step):
  """Waits for the asynchronous saves; a failure becomes a WorkdirError."""
  try:
    mngr.wait_until_finished()
  except Exception as e:  # pylint: disable=broad-except
    raise _save_error(e, str(mngr.directory),
                      f'Saving checkpoint step {step}') from e


def _restore(mngr, step, abstract_state):
  try:
    return mngr.restore(step, args=ocp.args.StandardRestore(abstract_state))
  except Exception as e:  # pylint: disable=broad-except
    raise errors.WorkdirError(
        f'Restoring checkpoint step {step} from {mngr.directory} failed '
        f'({type(e).__name__}: {e}). Use another --workdir, or move that '
        'step directory aside to resume from the one before it.') from e


def _input_error(e, what):
  """InputDataError from a tf.data error raised inside a numpy function.

  tf.data wraps the Python error (which names the file) between the op's
  name and the Python traceback; the message keeps the error line only.
  """
  message = re.sub(r'^\{\{[^}]*\}\}\s*', '', e.message).strip()
  message = message.splitlines()[0] if message else type(e).__name__
  return errors.InputDataError(f'{what} failed: {message}')


def _next_batch(train_iter, step):
  try:
    return next(train_iter)
  except tf.errors.OpError as e:
    raise _input_error(e, f'Reading the training batch of step {step}') from e


def _evaluate(evaluator, params):
  """Evaluates; `results['compiles']` counts the XLA compiles it caused."""
  before = compiles.count()
  try:
    results = evaluator.evaluate(params)
  except tf.errors.OpError as e:
    raise _input_error(e, 'Reading the evaluation data') from e
  results['compiles'] = compiles.count() - before
  logging.info('Evaluation compiled %d program(s) (one per length bucket '
               'seen for the first time).', results['compiles'])
  return results


def best_manager(workdir, config):
  """Orbax manager of the best evaluation's parameters, `{workdir}/best`.

  It keeps one checkpoint: the parameters whose evaluation scored highest in
  `config.eval.best_metric` (the metrics are saved with them, so a resumed
  run keeps comparing against the best so far).
  """
  metric = config.eval.best_metric
  options = ocp.CheckpointManagerOptions(
      max_to_keep=1, best_fn=lambda metrics: metrics[metric],
      best_mode='max', create=True, cleanup_tmp_directories=True)
  return ocp.CheckpointManager(os.path.join(workdir, BEST_SUBDIR),
                               options=options)


def _save_best(mngr, step, params, results):
  """Offers the parameters of an evaluation at `step` to the best manager."""
  if step in mngr.all_steps():
    return  # Evaluated before a restart; the same parameters.
  try:
    mngr.save(step, args=ocp.args.StandardSave(params),
              metrics=inference.flat_scalars(results, prefix=''))
  except Exception as e:  # pylint: disable=broad-except
    raise _save_error(e, str(mngr.directory),
                      f'Saving the evaluated parameters of step {step}') from e


def _pick_best(mngr, evaluator, results, abstract_params, metric):
  """The results of the best evaluation, re-evaluated from its parameters.

  Args:
    mngr: `best_manager`, holding the final step's parameters too.
    evaluator: the run's evaluator.
    results: the final step's results.
    abstract_params: the parameters' `ShapeDtypeStruct`s.
    metric: `config.eval.best_metric`.

  Returns:
    `(results, params)`: the best step's results (with the final step's
    metrics under `last_step` when it is another step) and its parameters
    (None when the final step is the best).
  """
  _wait_for_saves(mngr, results['step'])
  best_step = mngr.best_step()
  if best_step is None or best_step == results['step']:
    return dict(results, best_metric=metric), None
  logging.info('Reporting step %d, the best by %s; the last step is %d.',
               best_step, metric, results['step'])
  params = _restore(mngr, best_step, abstract_params)
  last = dict(inference.flat_scalars(results, prefix=''),
              step=results['step'])
  best = _evaluate(evaluator, params)
  best.update(step=best_step, best_metric=metric, last_step=last)
  return best, params


def _write_results(workdir, evaluator, results, writer, is_chief):
  """Logs the results; process 0 writes them and the predictions."""
  writer.write_scalars(results['step'], inference.flat_scalars(results))
  writer.flush()
  if is_chief:
    results_lib.write_json_atomic(
        os.path.join(workdir, 'predictions.json'),
        results_lib.predictions_to_json(evaluator.last_predictions))
    results_lib.write_json_atomic(os.path.join(workdir, 'results.json'),
                                  results_lib.results_to_jsonable(results))
    print(results_lib.format_results_table(results), flush=True)


def _abstract_variables(model, config, mesh):
  """`{'params': ...}` `ShapeDtypeStruct`s of `model`, replicated."""
  return {'params': abstract_train_state(model, create_optimizer(config),
                                         config, mesh).params}


def restore_variables(path, abstract_variables, config):
  """Restores model variables (`convert mdp`'s checkpoints) for evaluation.

  Raises:
    errors.WorkdirError: `path` is not an Orbax checkpoint, or its arrays
      differ from the model's (each difference named).
  """
  path = path if '://' in path else os.path.abspath(path)
  handler = ocp.StandardCheckpointHandler()
  try:
    metadata = handler.metadata(epath.Path(path))
  except Exception as e:  # pylint: disable=broad-except
    raise errors.WorkdirError(
        f'eval.checkpoint={path}: not a readable Orbax checkpoint of model '
        f'variables ({type(e).__name__}: {e}); write one with `python -m '
        'wmmt_jax.convert mdp --torch-checkpoint F --out DIR`.') from e
  finally:
    handler.close()
  differences = workdir_lib.array_differences(
      workdir_lib.array_specs(metadata),
      workdir_lib.array_specs(abstract_variables))
  if differences:
    raise errors.WorkdirError(
        f'eval.checkpoint={path} does not fit model.name='
        f'{config.model.name!r} with dataset.visual_dim='
        f'{config.dataset.visual_dim}, dataset.audio_dim='
        f'{config.dataset.audio_dim} and the model widths of this config: '
        + '; '.join(differences[:8]) +
        (f'; and {len(differences) - 8} more' if len(differences) > 8 else '')
        + '.')
  checkpointer = ocp.StandardCheckpointer()
  try:
    return checkpointer.restore(path, abstract_variables)
  finally:
    checkpointer.close()


def evaluate_checkpoint(config, workdir):
  """Evaluates the variables in `config.eval.checkpoint`; no training.

  Writes `predictions.json`, `results.json` and the logs to `workdir`, as
  the end of `train_and_evaluate` does.

  Returns:
    The results dict, with the checkpoint's path under `checkpoint`.
  """
  config_lib.validate(config, jax.device_count())
  if '://' not in workdir:
    workdir = os.path.abspath(workdir)
  is_chief = jax.process_index() == 0
  workdir_lib.check_writable(workdir)
  mesh = parallel.make_mesh()
  model = create_model(config)
  variables = restore_variables(config.eval.checkpoint,
                                _abstract_variables(model, config, mesh),
                                config)
  if is_chief:
    _save_config(config, workdir)
  eval_records, root = input_pipeline.get_records(
      config, workdir, config.dataset.eval_split, config.dataset.eval_subset,
      'dataset.eval_subset')
  evaluator = inference.Evaluator(
      model, config, feature_source(config, workdir, config.dataset.eval_split,
                                    eval_records, root), None, mesh)
  results = _evaluate(evaluator, variables['params'])
  results.update(step=0, checkpoint=config.eval.checkpoint)
  writer = create_writer(workdir, is_chief)
  _write_results(workdir, evaluator, results, writer, is_chief)
  if is_chief:
    plots.plot_run(workdir, config, model, variables['params'], eval_records,
                   root, evaluator.last_predictions, writer, results['step'])
  return results


def _save_config(config, workdir):
  path = os.path.join(workdir, workdir_lib.CONFIG_FILE)
  results_lib.write_json_atomic(path, workdir_lib.config_as_json(config))


def train_and_evaluate(config, workdir):
  """Trains WMMT on `config.dataset`, evaluates, writes `results.json`.

  Args:
    config: the run's ConfigDict (see configs/default.py).
    workdir: where checkpoints, logs, `predictions.json` and `results.json`
      go; a workdir holding a checkpoint is resumed from its newest complete
      one.

  With `config.eval.checkpoint` set, nothing is trained: that checkpoint is
  evaluated (`evaluate_checkpoint`). With `config.eval.best_metric` set, the
  results (and predictions) are those of the evaluation that scored best in
  it, as MDP picks its checkpoint by AP@0.75.

  Returns:
    The results dict (`ap`, `ar`, `video_accuracy`, `auc`, `step`, ...).

  Raises:
    errors.RunError: a fault explained by its message (unusable workdir,
      non-finite values, unreadable input).
    preemption.Preempted: SIGTERM; the current step was saved.
  """
  if config.eval.checkpoint:
    return evaluate_checkpoint(config, workdir)
  config_lib.validate(config, jax.device_count())
  # Orbax needs absolute local paths (`--workdir=workdirs/x` is common);
  # URLs such as gs:// stay as they are.
  if '://' not in workdir:
    workdir = os.path.abspath(workdir)
  is_chief = jax.process_index() == 0
  mesh = parallel.make_mesh()
  model = create_model(config)
  tx = create_optimizer(config)
  abstract_state = abstract_train_state(model, tx, config, mesh)
  # Before anything is written, so that a refused workdir stays as it was.
  last_checkpoint = workdir_lib.check(workdir, config, abstract_state)
  if is_chief:
    _save_config(config, workdir)

  records, root = input_pipeline.get_records(
      config, workdir, config.dataset.train_split,
      config.dataset.train_subset, 'dataset.train_subset')
  eval_records, _ = input_pipeline.get_records(
      config, workdir, config.dataset.eval_split, config.dataset.eval_subset,
      'dataset.eval_subset')
  train_source = feature_source(config, workdir, config.dataset.train_split,
                                records, root)
  eval_source = feature_source(config, workdir, config.dataset.eval_split,
                               eval_records, root)
  checkpoint_dir = os.path.join(workdir, workdir_lib.CHECKPOINT_SUBDIR)
  incomplete = workdir_lib.incomplete_checkpoints(checkpoint_dir)
  if incomplete:
    logging.warning('Removing %d incomplete checkpoint(s) of interrupted '
                    'saves: %s.', len(incomplete), ', '.join(incomplete))
  mngr = checkpoint_manager(workdir, config)
  best_mngr = best_manager(workdir, config) if config.eval.best_metric else None
  if last_checkpoint is not None:
    logging.info('Resuming from checkpoint step %d in %s.', last_checkpoint,
                 workdir)
    state = _restore(mngr, last_checkpoint, abstract_state)
  else:
    state, _ = init_state(model, tx, config, mesh, abstract_state)
  initial_step = int(parallel.to_host(state.step))

  writer = create_writer(workdir, is_chief)
  if initial_step == 0:
    writer.write_hparams(dict(config.to_dict(), workdir=workdir))

  state_shardings = jax.tree.map(lambda x: x.sharding, abstract_state)
  train_step = jit_train_step(make_train_step(model, tx, config), mesh,
                              state_shardings)
  train_ds = input_pipeline.create_train_dataset(
      config, train_source, start_step=initial_step,
      process_index=jax.process_index(), process_count=jax.process_count())
  train_iter = iter(train_ds.as_numpy_iterator())
  report = periodic_actions.ReportProgress(
      num_train_steps=config.total_steps, writer=writer)
  evaluator = inference.Evaluator(model, config, eval_source, None, mesh)

  history = []
  # XLA compiles of the training loop, evaluations left out: one for the
  # step, plus a few small ones (checks before a save).
  compiles_at_start, eval_compiles = compiles.count(), 0
  try:
    with preemption.PreemptionWatcher(mngr) as watcher:
      for step in range(initial_step + 1, config.total_steps + 1):
        batch = parallel.to_global(_next_batch(train_iter, step), mesh)
        state, metrics = train_step(state, batch)
        history.append(metrics)
        report(step)
        preempted = watcher.reached(step)
        save = (step % config.checkpoint_every_steps == 0 or
                step == config.total_steps or preempted)
        if step % config.log_every_steps == 0 or save:
          # The only host syncs of the loop: at log and save steps.
          host = parallel.to_host(history)
          history = []
          # Checked before any save, so a bad state never replaces a good one.
          _check_finite(host, step - len(host) + 1, last_checkpoint,
                        checkpoint_dir)
          summary = _summarize(host)
          skipped = int(sum(m.get('update_skipped', 0) for m in host))
          if skipped:
            logging.warning(
                'Skipped %d non-finite update(s) in steps %d-%d; %d so far.',
                skipped, step - len(host) + 1, step,
                summary['skipped_steps'])
          summary['compiles'] = (compiles.count() - compiles_at_start -
                                 eval_compiles)
          writer.write_scalars(
              step, {f'train/{k}': v for k, v in summary.items()})
        if save:
          _save_checkpoint(mngr, step, state, last_checkpoint)
          last_checkpoint = step
        if preempted:
          _wait_for_saves(mngr, step)
          raise preemption.Preempted(step, checkpoint_dir)
        if (config.eval_every_steps and step % config.eval_every_steps == 0
            and step < config.total_steps):
          results = _evaluate(evaluator, state.params)
          eval_compiles += results['compiles']
          writer.write_scalars(step, inference.flat_scalars(results))
          if best_mngr:
            _save_best(best_mngr, step, state.params, results)
    _wait_for_saves(mngr, last_checkpoint)
  except BaseException:
    # Let saves of good states already under way finish, so the checkpoint
    # an error message names is complete (a failing one reported itself).
    with contextlib.suppress(Exception):
      mngr.wait_until_finished()
    for manager in filter(None, (mngr, best_mngr)):
      with contextlib.suppress(Exception):
        manager.wait_until_finished()
      with contextlib.suppress(Exception):
        manager.close()
    writer.flush()
    raise
  mngr.close()

  results = _evaluate(evaluator, state.params)
  results['step'] = int(parallel.to_host(state.step))
  reported_params = state.params
  if best_mngr:
    _save_best(best_mngr, results['step'], state.params, results)
    results, best_params = _pick_best(best_mngr, evaluator, results,
                                      abstract_state.params,
                                      config.eval.best_metric)
    best_mngr.close()
    if best_params is not None:
      reported_params = best_params
  _write_results(workdir, evaluator, results, writer, is_chief)
  if is_chief:
    plots.plot_run(workdir, config, model, reported_params, eval_records,
                   root, evaluator.last_predictions, writer, results['step'])
    writer.flush()
  return results
