"""The sharded train step, config validation and a resumed end-to-end run."""

import importlib.util
import json
import os

import chex
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import default
from wmmt_jax import config_lib
from wmmt_jax import parallel
from wmmt_jax import train


def _batch(config, rng):
  b, t = config.batch_size, config.dataset.num_frames
  mask = np.ones((b, t), np.float32)
  mask[0, t // 2:] = 0
  return {
      'visual': rng.normal(size=(b, t, config.dataset.visual_dim)).astype(
          np.float32),
      'audio': rng.normal(size=(b, t, config.dataset.audio_dim)).astype(
          np.float32),
      'mask': mask,
      'label': np.arange(b, dtype=np.int32) % 4,
  }


def test_sharded_step_on_four_devices_compiles_once():
  assert jax.device_count() == 4
  config = default.get_config('tiny')
  mesh = parallel.make_mesh()
  model = train.create_model(config)
  tx = train.create_optimizer(config)
  state, abstract = train.init_state(model, tx, config, mesh)
  shardings = jax.tree.map(lambda x: x.sharding, abstract)
  step_fn = chex.assert_max_traces(train.make_train_step(model, tx, config),
                                   n=1)
  step = train.jit_train_step(step_fn, mesh, shardings)
  rng = np.random.default_rng(0)
  losses = []
  for _ in range(3):
    batch = parallel.to_global(_batch(config, rng), mesh)
    assert len(batch['visual'].sharding.device_set) == 4
    state, metrics = step(state, batch)
    losses.append(float(metrics['loss']))
  assert int(state.step) == 3
  assert np.all(np.isfinite(losses))
  leaf = jax.tree.leaves(state.params)[0]
  assert leaf.sharding.is_fully_replicated
  assert len(leaf.sharding.device_set) == 4


@pytest.mark.parametrize('key,value,match', [
    ('loss.dp_function', 'l3', 'loss.dp_function'),
    ('dataset.num_frames', 0, 'dataset.num_frames'),
    ('dataset.num_frames', -5, 'dataset.num_frames'),
    ('batch_size', 6, 'batch_size=6 does not divide over the 4 devices'),
    ('eval.batch_size', 2, 'eval.batch_size=2'),
    ('model.tppa_norm', 'layer', 'model.tppa_norm'),
    ('eval.protocol', 'ava', 'eval.protocol'),
    ('model.dropout_rate', 1.0, 'model.dropout_rate'),
])
def test_bad_config_value_names_the_key(key, value, match):
  config = default.get_config('tiny')
  node = config
  *parents, leaf = key.split('.')
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(ValueError, match=match):
    config_lib.validate(config, 4)


def test_objective_needs_multitask():
  config = default.get_config('tiny')
  config.model.multitask = False
  config.loss.dp_objective = 'a+v'
  with pytest.raises(ValueError, match='loss.dp_objective'):
    config_lib.validate(config, 4)


def test_bad_value_stops_train_and_evaluate_before_writing(tmp_path):
  config = default.get_config('tiny')
  config.loss.dp_function = 'huber'
  with pytest.raises(ValueError, match='loss.dp_function'):
    train.train_and_evaluate(config, str(tmp_path / 'w'))
  assert not (tmp_path / 'w').exists()


def _params(workdir, step):
  path = os.path.join(workdir, 'checkpoints', str(step), 'default')
  return ocp.StandardCheckpointer().restore(path)['params']


@pytest.mark.slow
def test_train_and_evaluate_resumes_from_checkpoint(tmp_path):
  data = str(tmp_path / 'data')
  config = default.get_config('tiny')
  config.dataset.root = data
  straight = str(tmp_path / 'straight')
  plotted = default.get_config('tiny')
  plotted.dataset.root = data
  plotted.eval.plots = True
  results = train.train_and_evaluate(plotted, straight)
  if importlib.util.find_spec('matplotlib') and importlib.util.find_spec(
      'sklearn'):
    # The run's pictures, after the final evaluation (the [viz] extra).
    names = os.listdir(os.path.join(straight, 'plots'))
    assert any(n.startswith('timeline_') for n in names), names
  for key in ('ap', 'ar', 'video_accuracy', 'auc'):
    assert key in results
  with open(os.path.join(straight, 'results.json')) as f:
    written = json.load(f)
  assert set(written['ap']) == {'0.5', '0.75', '0.9', '0.95'}
  assert os.path.exists(os.path.join(straight, 'predictions.json'))
  # Compile counts are logged: at most one per eval length bucket (fewer on
  # persistent-cache hits), and the training loop's are in metrics.txt.
  assert 0 <= written['compiles'] <= len(config.dataset.eval_length_buckets)
  with open(os.path.join(straight, 'metrics.txt')) as f:
    assert 'train/compiles=' in f.read()

  # Stop after 4 steps, then run again to 6: it resumes from step 4.
  resumed = str(tmp_path / 'resumed')
  short = default.get_config('tiny')
  short.dataset.root = data
  short.total_steps = 4
  train.train_and_evaluate(short, resumed)
  assert ocp.CheckpointManager(
      os.path.join(resumed, 'checkpoints')).latest_step() == 4
  results2 = train.train_and_evaluate(config, resumed)
  assert results2['step'] == 6
  chex.assert_trees_all_equal(_params(straight, 6), _params(resumed, 6))
