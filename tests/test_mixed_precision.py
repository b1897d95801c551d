"""bfloat16 compute (float32 parameters and losses) trains as float32 does."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from wmmt_jax import train

# Stated tolerance: bfloat16 training ends within this distance of float32
# in video accuracy and in mAP, on the same data, seed and steps.
TOLERANCE = 0.1


def _config(dtype, data):
  config = default.get_config('tiny')
  config.dataset.root = data
  config.model.dtype = dtype
  config.total_steps = 120
  config.checkpoint_every_steps = 120
  config.log_every_steps = 60
  config.batch_size = 8
  config.learning_rate = 3e-3
  config.dataset.visual_dim = 16
  config.dataset.audio_dim = 8
  config.model.embed_dim = 16
  config.model.qkv_dim = 16
  config.model.head_dim = 16
  config.dataset.synthetic.num_train = 128
  config.dataset.synthetic.num_test = 48
  return config


def test_bfloat16_parameters_and_losses_stay_float32():
  config = _config('bfloat16', '')
  model = train.create_model(config)
  visual = jnp.zeros((1, 8, 16))
  audio = jnp.zeros((1, 8, 8))
  mask = jnp.ones((1, 8))
  variables = jax.eval_shape(lambda: model.init(
      jax.random.key(0), visual, audio, mask, train=False))
  assert {np.dtype(x.dtype) for x in jax.tree.leaves(variables)} == {
      np.dtype(np.float32)}
  params = jax.tree.map(lambda x: jnp.full(x.shape, 0.1, x.dtype),
                        variables['params'])
  outputs = model.apply({'params': params}, visual, audio, mask, train=False)
  assert outputs['cas']['m'].dtype == jnp.bfloat16
  loss, metrics = train.compute_loss(
      config, outputs, {'label': jnp.array([1]), 'mask': mask})
  assert loss.dtype == jnp.float32
  assert all(v.dtype == jnp.float32 for v in metrics.values())


@pytest.mark.slow
def test_bfloat16_training_matches_float32(tmp_path):
  data = str(tmp_path / 'data')
  results = {dtype: train.train_and_evaluate(_config(dtype, data),
                                             str(tmp_path / dtype))
             for dtype in ('float32', 'bfloat16')}
  summary = {dtype: (r['video_accuracy'], np.mean(list(r['ap'].values())))
             for dtype, r in results.items()}
  # Both learned something (4 classes: chance accuracy is about 0.25)...
  assert summary['float32'][0] > 0.5, summary
  # ... and bfloat16 ends where float32 does, within the tolerance.
  np.testing.assert_allclose(summary['bfloat16'], summary['float32'],
                             atol=TOLERANCE, err_msg=str(summary))
