"""MDP's training and evaluation protocol (configs/mdp_lavdf.py) end to end."""

import json
import os

import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import default
from configs import mdp_lavdf
from input_pipeline import formats
from input_pipeline import pipeline
from wmmt_jax import config_lib
from wmmt_jax import convert
from wmmt_jax import errors
from wmmt_jax import train
from wmmt_jax.evaluation import inference
from wmmt_jax.models import mdp


def _tiny_mdp_config():
  """MDP's protocol at test sizes on the tiny synthetic dataset."""
  config = default.get_config('tiny')
  reference = mdp_lavdf.get_config()
  for key in ('name', 'dropout_rate', 'topk_ratio'):
    config.model[key] = reference.model[key]
  config.loss.weight_dp = reference.loss.weight_dp
  for key in ('train_subset', 'eval_subset', 'train_sampling'):
    config.dataset[key] = reference.dataset[key]
  for key in ('best_metric', 'proposal_order', 'max_proposals',
              'real_has_no_proposals', 'ar_order',
              'drop_gt_without_proposals'):
    config.eval[key] = reference.eval[key]
  config.eval.protocol = 'wmmt'
  config.eval.best_metric = 'ap@0.1'
  config.eval_every_steps = 2
  config.dataset.synthetic.num_test = 16
  return config


def test_mdp_lavdf_config_is_mdps_protocol():
  config = mdp_lavdf.get_config()
  config_lib.validate(config, 1)
  assert config.model.name == 'mdp'
  assert (config.batch_size, config.learning_rate, config.weight_decay,
          config.seed) == (32, 1e-5, 5e-4, 3407)
  assert (config.dataset.num_frames, config.dataset.train_sampling) == (
      500, 'bins')
  assert (config.dataset.train_subset, config.dataset.eval_split,
          config.dataset.eval_subset) == ('real_and_both', 'dev',
                                          'both_modified')
  assert config.loss.weight_dp == 0.2
  assert config.eval.best_metric == 'ap@0.75'
  model = train.create_model(config)
  assert isinstance(model, mdp.MDP)
  assert (model.visual_dim, model.audio_dim, model.pooled_visual_dim,
          model.embed_dim, model.qkv_dim, model.head_dim) == (
              2048, 1024, 1024, 512, 1024, 1024)
  config_lib.validate(mdp_lavdf.get_config('synthetic'), 1)


@pytest.mark.parametrize('key,value,match', [
    ('model.name', 'mdp2', 'model.name'),
    ('model.pooled_visual_dim', 3, 'model.pooled_visual_dim=3 must divide'),
    ('dataset.train_subset', 'fakes', 'dataset.train_subset'),
    ('eval.best_metric', 'ap@0.8', 'eval.best_metric'),
    ('eval.ar_order', 'score', 'eval.ar_order'),
    ('eval.proposal_order', 'listed', 'eval.proposal_order'),
])
def test_validate_names_bad_mdp_fields(key, value, match):
  config = _tiny_mdp_config()
  section, name = key.split('.')
  config[section][name] = value
  with pytest.raises(ValueError, match=match):
    config_lib.validate(config, 1)


def _record(label, file='x.mp4'):
  empty = np.zeros((0, 2), np.float32)
  return formats.VideoRecord(file, 'x', 'train', label, 1.0, 25, 25.0, empty,
                             empty, empty)


def test_subsets_select_classes():
  records = [_record(label, f'{label}.mp4') for label in (0, 1, 2, 3, 1, 0)]
  labels = lambda name: [r.label for r in pipeline.select_subset(records,
                                                                 name)]
  assert labels('all') == [0, 1, 2, 3, 1, 0]
  assert labels('real_and_both') == [0, 1, 1, 0]
  assert labels('both_modified') == [1, 1]
  assert labels('visual_only') == [0, 1, 2, 1, 0]
  with pytest.raises(ValueError, match='dataset.eval_subset'):
    pipeline.select_subset(records, 'nope', 'dataset.eval_subset')


def test_mdp_eval_outputs_and_temporal_proposals():
  scores = np.array([[0.7, 0.3], [0.2, 0.8], [0.5, 0.5]], np.float32)
  cas = np.zeros((3, 10, 2), np.float32)
  out = mdp.eval_outputs({'video_scores': scores, 'cas': cas})
  np.testing.assert_array_equal(out['pred_class'], [0, 1, 0])
  np.testing.assert_array_equal(out['video_probs'][:, :2], scores)
  np.testing.assert_array_equal(out['video_probs'][:, 2:], 0)
  np.testing.assert_array_equal(out['fas'], cas)

  # Raw CAS: runs 2-3 (mean fake 2.0) and 6-8 (mean fake 5.0).
  fas = np.zeros((10, 2), np.float32)
  fas[:, 0] = 1.0
  fas[2:4, 1] = 2.0
  fas[6:9, 1] = 5.0
  config = _tiny_mdp_config().eval
  got = inference.video_proposals(fas, 25.0, 0, config)
  np.testing.assert_allclose(got, [[2.0, 2 / 25, 4 / 25],
                                   [5.0, 6 / 25, 9 / 25]], rtol=1e-6)
  config.proposal_order = 'score'
  got = inference.video_proposals(fas, 25.0, 0, config)
  np.testing.assert_allclose(got[:, 0], [5.0, 2.0])


def test_compute_loss_is_mdp_loss_for_mdp():
  config = _tiny_mdp_config()
  outputs = {'video_scores': np.array([[0.6, 0.4], [0.1, 0.9]], np.float32),
             'dp_score': np.array([0.3, -1.0], np.float32)}
  batch = {'label': np.array([0, 2]), 'mask': np.ones((2, 4), np.float32)}
  loss, _ = train.compute_loss(config, outputs, batch)
  want, _ = mdp.mdp_loss(outputs, batch['label'], dp_weight=0.2)
  np.testing.assert_allclose(loss, want, rtol=1e-6)


@pytest.fixture(scope='module')
def mdp_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('mdp_run'))
  config = _tiny_mdp_config()
  results = train.train_and_evaluate(config, workdir)
  return config, workdir, results


def test_mdp_run_reports_best_evaluation(mdp_run):
  config, workdir, results = mdp_run
  with open(os.path.join(workdir, 'results.json')) as f:
    saved = json.load(f)
  assert saved['best_metric'] == 'ap@0.1'
  best_dir = os.path.join(workdir, train.BEST_SUBDIR)
  kept = [int(d) for d in os.listdir(best_dir) if d.isdigit()]
  assert kept == [results['step']]
  assert results['step'] in (2, 4, 6)
  if results['step'] != config.total_steps:
    # The final step scored lower (Orbax keeps the first of equal scores).
    assert results['last_step']['step'] == config.total_steps
    assert results['last_step']['ap@0.1'] < results['ap'][0.1]
  # Only the subsets' videos were evaluated: both-modified fakes.
  with open(os.path.join(workdir, 'predictions.json')) as f:
    predicted = json.load(f)
  records, _ = pipeline.get_records(config, workdir, 'test')
  both = {r.file for r in records if r.label == formats.LABEL_BOTH}
  assert set(predicted) == both and both


def test_evaluate_converted_checkpoint_without_training(mdp_run, tmp_path):
  config, workdir, results = mdp_run
  # The best parameters, as `convert mdp` writes them.
  mngr = ocp.CheckpointManager(os.path.join(workdir, train.BEST_SUBDIR))
  params = mngr.restore(results['step'], args=ocp.args.StandardRestore())
  mngr.close()
  checkpoint = str(tmp_path / 'converted')
  convert.save_checkpoint({'params': params}, checkpoint)

  eval_config = _tiny_mdp_config()
  eval_config.eval.checkpoint = checkpoint
  eval_dir = str(tmp_path / 'eval')
  got = train.train_and_evaluate(eval_config, eval_dir)
  assert got['checkpoint'] == checkpoint
  assert got['ap'] == results['ap'] and got['ar'] == results['ar']
  assert not os.path.exists(os.path.join(eval_dir, 'checkpoints'))
  with open(os.path.join(eval_dir, 'predictions.json')) as f, open(
      os.path.join(workdir, 'predictions.json')) as g:
    assert json.load(f) == json.load(g)

  eval_config.model.head_dim = 16
  with pytest.raises(errors.WorkdirError, match='head.embed.kernel'):
    train.train_and_evaluate(eval_config, str(tmp_path / 'eval2'))
  eval_config.eval.checkpoint = str(tmp_path / 'missing')
  with pytest.raises(errors.WorkdirError, match='not a readable Orbax'):
    train.train_and_evaluate(eval_config, str(tmp_path / 'eval3'))
