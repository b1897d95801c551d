"""Training and evaluation of WMMT: `train_and_evaluate(config, workdir)`.

Data parallelism is `jax.jit` over a 1-D `('data',)` mesh of all devices: the
batch is split on its first axis, the train state is replicated and XLA
inserts the gradient all-reduce. Checkpoints are Orbax's; a workdir that holds
one is resumed.
"""

import json
import os
from typing import Any

from absl import logging
from clu import metric_writers
from clu import periodic_actions
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import tensorflow as tf

import input_pipeline
from wmmt_jax import config_lib
from wmmt_jax import losses
from wmmt_jax import parallel
from wmmt_jax.evaluation import inference
from wmmt_jax.evaluation import results as results_lib
from wmmt_jax.models import wmmt


@flax.struct.dataclass
class TrainState:
  """The whole training state: a small pytree."""
  step: jax.Array
  params: Any
  opt_state: Any


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
  """The WMMT module for `config.model`."""
  m = config.model
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


def _dummy_inputs(config):
  t = config.dataset.num_frames
  return (jnp.zeros((1, t, config.dataset.visual_dim)),
          jnp.zeros((1, t, config.dataset.audio_dim)), jnp.ones((1, t)))


def init_state(model, tx, config, mesh):
  """Initialises the train state directly replicated over `mesh`.

  Returns:
    `(state, abstract_state)`; the abstract state carries the shardings that
    a checkpoint restore needs.
  """
  def init(rng):
    params = model.init({'params': rng}, *_dummy_inputs(config),
                        train=False)['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params))

  rng = jax.random.fold_in(jax.random.key(config.seed), 0)
  abstract = jax.eval_shape(init, rng)
  shardings = jax.tree.map(lambda _: parallel.replicated(mesh), abstract)
  state = jax.jit(init, out_shardings=shardings)(rng)
  abstract = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      abstract, shardings)
  return state, abstract


def make_train_step(model, tx, config):
  """The (unjitted) train step `(state, batch) -> (state, metrics)`."""
  dropout_key = jax.random.fold_in(jax.random.key(config.seed), 1)

  def train_step(state, batch):
    rng = jax.random.fold_in(dropout_key, state.step)

    def loss_fn(params):
      outputs = model.apply({'params': params}, batch['visual'],
                            batch['audio'], batch['mask'], train=True,
                            rngs={'dropout': rng})
      return losses.total_loss(outputs, batch['label'], batch['mask'],
                               config.loss)

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics['grad_norm'] = optax.global_norm(grads)
    return state.replace(step=state.step + 1, params=params,
                         opt_state=opt_state), metrics

  return train_step


def jit_train_step(train_step, mesh, state_shardings):
  """Jits the step: batch split over 'data', state replicated and donated."""
  return jax.jit(train_step,
                 in_shardings=(state_shardings, parallel.data_sharding(mesh)),
                 out_shardings=(state_shardings, parallel.replicated(mesh)),
                 donate_argnums=(0,))


def checkpoint_manager(workdir, config):
  """Orbax manager under `{workdir}/checkpoints`, keeping the last K."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=config.keep_checkpoints, create=True)
  return ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'),
                               options=options)


def _check_finite(metrics, step, last_checkpoint):
  bad = [k for k, v in metrics.items() if not np.all(np.isfinite(v))]
  if bad:
    where = (f'the last good checkpoint is step {last_checkpoint}'
             if last_checkpoint is not None else 'no checkpoint was written')
    raise FloatingPointError(
        f'Non-finite {", ".join(bad)} at or before step {step}; stopping '
        f'without saving, {where}.')


def _save_config(config, workdir):
  path = os.path.join(workdir, 'config.json')
  results_lib.write_json_atomic(path, json.loads(config.to_json_best_effort()))


def train_and_evaluate(config, workdir):
  """Trains WMMT on `config.dataset`, evaluates, writes `results.json`.

  Args:
    config: the run's ConfigDict (see configs/default.py).
    workdir: where checkpoints, logs, `predictions.json` and `results.json`
      go; a workdir holding a checkpoint is resumed from it.

  Returns:
    The results dict (`ap`, `ar`, `video_accuracy`, `auc`, ...).
  """
  config_lib.validate(config, jax.device_count())
  # Orbax needs absolute local paths (`--workdir=workdirs/x` is common);
  # URLs such as gs:// stay as they are.
  if '://' not in workdir:
    workdir = os.path.abspath(workdir)
  is_chief = jax.process_index() == 0
  tf.io.gfile.makedirs(workdir)
  if is_chief:
    _save_config(config, workdir)
  mesh = parallel.make_mesh()

  records, root = input_pipeline.get_records(config, workdir,
                                             config.dataset.train_split)
  eval_records, _ = input_pipeline.get_records(config, workdir,
                                               config.dataset.eval_split)
  model = create_model(config)
  tx = create_optimizer(config)
  state, abstract_state = init_state(model, tx, config, mesh)
  state_shardings = jax.tree.map(lambda x: x.sharding, abstract_state)

  mngr = checkpoint_manager(workdir, config)
  last_checkpoint = mngr.latest_step()
  if last_checkpoint is not None:
    logging.info('Resuming from checkpoint step %d in %s.', last_checkpoint,
                 workdir)
    state = mngr.restore(last_checkpoint,
                         args=ocp.args.StandardRestore(abstract_state))
  initial_step = int(jax.device_get(state.step))

  writer = create_writer(workdir, is_chief)
  if initial_step == 0:
    writer.write_hparams(dict(config.to_dict(), workdir=workdir))

  train_step = jit_train_step(make_train_step(model, tx, config), mesh,
                              state_shardings)
  train_ds = input_pipeline.create_train_dataset(
      config, records, root, start_step=initial_step,
      process_index=jax.process_index(), process_count=jax.process_count())
  train_iter = iter(train_ds.as_numpy_iterator())
  report = periodic_actions.ReportProgress(
      num_train_steps=config.total_steps, writer=writer)
  evaluator = inference.Evaluator(model, config, eval_records, root, mesh)

  pending = []
  for step in range(initial_step + 1, config.total_steps + 1):
    batch = parallel.to_global(next(train_iter), mesh)
    state, metrics = train_step(state, batch)
    pending.append(metrics)
    report(step)
    save = (step % config.checkpoint_every_steps == 0 or
            step == config.total_steps)
    if step % config.log_every_steps == 0 or save:
      summary = jax.tree.map(lambda *x: np.mean(np.stack(x)),
                             *jax.device_get(pending))
      pending = []
      # Checked before any save, so a bad state never replaces a good one.
      _check_finite(summary, step, last_checkpoint)
      writer.write_scalars(step, {f'train/{k}': v for k, v in summary.items()})
    if save:
      mngr.save(step, args=ocp.args.StandardSave(state))
      last_checkpoint = step
    if (config.eval_every_steps and step % config.eval_every_steps == 0 and
        step < config.total_steps):
      writer.write_scalars(
          step, inference.flat_scalars(evaluator.evaluate(state.params)))
  mngr.wait_until_finished()
  mngr.close()

  results = evaluator.evaluate(state.params)
  results['step'] = int(jax.device_get(state.step))
  writer.write_scalars(results['step'], inference.flat_scalars(results))
  writer.flush()
  if is_chief:
    results_lib.write_json_atomic(
        os.path.join(workdir, 'predictions.json'),
        results_lib.predictions_to_json(evaluator.last_predictions))
    results_lib.write_json_atomic(os.path.join(workdir, 'results.json'),
                                  results_lib.results_to_jsonable(results))
    print(results_lib.format_results_table(results), flush=True)
  return results
