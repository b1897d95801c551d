"""Pictures of a run (wmmt_jax/plots.py)."""

import logging
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import input_pipeline
from configs import default
from wmmt_jax import plots
from wmmt_jax import predict
from wmmt_jax import train
from wmmt_jax.evaluation import metrics

pytest.importorskip('matplotlib')
pytest.importorskip('sklearn')


class _Writer:
  """Records `write_images` calls, as a clu metric writer gets them."""

  def __init__(self):
    self.images = {}

  def write_images(self, step, images):
    self.images.update({k: (step, v) for k, v in images.items()})

  def flush(self):
    pass


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A tiny config, its synthetic test split and untrained parameters."""
  workdir = str(tmp_path_factory.mktemp('plots'))
  config = default.get_config('tiny')
  config.eval.protocol = 'wmmt'
  config.eval.plots = True  # Off in the tiny config.
  model = train.create_model(config)
  t = config.dataset.num_frames
  params = jax.jit(model.init, static_argnames='train')(
      {'params': jax.random.key(0)},
      jnp.zeros((1, t, config.dataset.visual_dim)),
      jnp.zeros((1, t, config.dataset.audio_dim)), jnp.ones((1, t)),
      train=False)['params']
  records, root = input_pipeline.get_records(config, workdir, 'test')
  return workdir, config, model, params, records, root


def test_pr_curve_ap_is_the_official_ap():
  rng = np.random.default_rng(0)
  ground_truth, predictions = {}, {}
  for i in range(40):
    starts = np.sort(rng.uniform(0, 8, rng.integers(0, 3)))
    ground_truth[f'v{i}'] = np.stack([starts, starts + 1], -1)
    k = rng.integers(0, 5)
    s = rng.uniform(0, 9, k)
    predictions[f'v{i}'] = np.stack([rng.uniform(size=k), s,
                                     s + rng.uniform(0.2, 2, k)], -1)
  ious = (0.1, 0.3, 0.5, 0.7)
  official = metrics.ap_ar_1d(predictions, ground_truth, ious, (1,))['ap']
  for iou in ious:
    recall, precision, ap = plots.pr_curve(predictions, ground_truth, iou)
    assert recall.shape == precision.shape
    assert np.all(np.diff(recall) >= 0)
    np.testing.assert_allclose(ap, official[iou], atol=1e-6)


def test_plot_run_writes_pngs_and_tensorboard_images(run):
  workdir, config, model, params, records, root = run
  predictor = predict.Predictor(config, model, params)
  predictions = {}
  for r in records:
    visual, audio = input_pipeline.pipeline.load_aligned(config, root, r)
    predictions[r.file] = predictor.predict(visual, audio,
                                            r.fps)['proposals']
  writer = _Writer()
  config.eval.plot_timelines_per_class = 1
  paths = plots.plot_run(workdir, config, model, params, records, root,
                         predictions, writer, step=7)
  names = sorted(os.path.basename(p) for p in paths)
  classes = sorted({plots.CLASS_NAMES[r.label] for r in records})
  assert names == sorted([f'timeline_{c}_1.png' for c in classes] +
                         ['pr_curve.png', 'tsne.png'])
  for path in paths:
    with open(path, 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  assert sorted(writer.images) == sorted(
      f'plots/{n[:-4]}' for n in names)
  for step, image in writer.images.values():
    assert step == 7 and image.dtype == np.uint8
    assert image.ndim == 4 and image.shape[0] == 1 and image.shape[-1] == 3


def test_timeline_without_ground_truth():
  video = {'fas': np.stack([np.linspace(1, 0, 50), np.linspace(0, 1, 50)],
                           -1), 'proposals': np.array([[0.9, 1.0, 1.8]]),
           'pred_class': 1, 'probs': np.array([0.1, 0.7, 0.1, 0.1]),
           'expert': 1, 'fps': 25.0}
  fig = plots.timeline_figure(video, None, title='v.npy')
  assert len(fig.axes) == 1
  assert fig.axes[0].get_xlim()[1] == pytest.approx(2.0)
  plots.close(fig)


def test_without_the_viz_extra_plots_are_skipped(run, monkeypatch, caplog):
  workdir, config, _, _, records, _ = run
  monkeypatch.setitem(sys.modules, 'matplotlib', None)
  monkeypatch.setitem(sys.modules, 'matplotlib.pyplot', None)
  monkeypatch.setattr(plots, '_MISSING_LOGGED', [])
  with caplog.at_level(logging.WARNING):
    assert plots.write_run_plots(workdir + '/none', config, records, {}, {},
                                 _Writer()) == []
    assert plots.timeline_figure({}, None) is None
  assert [r.getMessage() for r in caplog.records].count(
      'Plots skipped: matplotlib is not installed (pip install '
      '"wmmt_jax[viz]").') == 1
  assert not os.path.exists(workdir + '/none')
