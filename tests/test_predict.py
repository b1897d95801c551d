"""Prediction for single videos with a trained run (wmmt_jax/predict.py)."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import input_pipeline
from configs import default
from input_pipeline import formats
from wmmt_jax import predict
from wmmt_jax import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A tiny trained run: `(workdir, test records, dataset root)`."""
  workdir = str(tmp_path_factory.mktemp('predict') / 'run')
  config = default.get_config('tiny')
  train.train_and_evaluate(config, workdir)
  records, root = input_pipeline.get_records(config, workdir, 'test')
  return workdir, records, root


def _paths(root, record):
  """The video's visual and audio `.npy` files."""
  (visual,), audio = formats.video_feature_paths(
      root, default.get_config('tiny').dataset, record.split, record.video_id)
  return visual, audio


def test_predictor_gives_the_evaluation_proposals(run):
  workdir, records, root = run
  predictor, checkpoint = predict.Predictor.from_workdir(workdir)
  assert checkpoint == os.path.join(workdir, 'checkpoints', '6')
  with open(os.path.join(workdir, 'predictions.json')) as f:
    evaluated = json.load(f)
  for record in records:
    visual_path, audio_path = _paths(root, record)
    out = predictor.predict_files(visual_path, audio_path, record.fps)
    assert out['fas'].shape == (out['num_frames'], 2)
    np.testing.assert_allclose(
        out['proposals'], np.reshape(evaluated[record.file], (-1, 3)),
        rtol=1e-5, atol=1e-6)


def test_cli_prints_json_and_draws_png(run, tmp_path):
  workdir, records, root = run
  record = next(r for r in records if r.label != 0)
  visual_path, audio_path = _paths(root, record)
  png = tmp_path / 'timeline.png'
  out = subprocess.run(
      [sys.executable, '-m', 'wmmt_jax.predict', f'--workdir={workdir}',
       f'--visual={visual_path}', f'--audio={audio_path}', f'--png={png}',
       f'--metadata={root}/metadata.json', f'--file={record.file}'],
      cwd=REPO, check=True, capture_output=True, text=True).stdout
  result = json.loads(out)
  assert set(result) >= {'pred_class', 'class_name', 'probs', 'expert',
                         'segments', 'file', 'png', 'checkpoint'}
  assert result['class_name'] == predict.CLASS_NAMES[result['pred_class']]
  assert list(result['probs']) == list(predict.CLASS_NAMES)
  assert sum(result['probs'].values()) == pytest.approx(1.0, abs=1e-5)
  assert result['expert'] in (None, 'h_m', 'h_v', 'h_a')
  assert (result['expert'] is None) == (result['pred_class'] == 0)
  duration = result['num_frames'] / 25.0
  for score, start, end in result['segments']:
    assert 0.0 <= score <= 1.0 and 0.0 <= start < end <= duration + 1e-6
  assert result['file'] == record.file
  assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_folder_gives_json_lines(run, tmp_path):
  workdir, records, root = run
  predictor, _ = predict.Predictor.from_workdir(workdir)
  for record in records[:2]:
    for kind, path in zip(('v', 'a'), _paths(root, record)):
      os.makedirs(tmp_path / kind, exist_ok=True)
      os.symlink(path, tmp_path / kind / f'{record.video_id}.npy')
  _, by_id = predict.read_metadata(f'{root}/metadata.json', predictor.config)
  out = io.StringIO()
  n = predict.predict_folder(predictor, str(tmp_path / 'v'),
                             str(tmp_path / 'a'), 25.0, out, by_id)
  lines = [json.loads(l) for l in out.getvalue().splitlines()]
  assert n == len(lines) == 2
  assert [l['id'] for l in lines] == sorted(r.video_id for r in records[:2])
  assert {l['file'] for l in lines} == {r.file for r in records[:2]}


def test_wrong_feature_width_names_the_file(run, tmp_path):
  workdir, _, _ = run
  predictor, _ = predict.Predictor.from_workdir(workdir)
  np.save(tmp_path / 'v.npy', np.zeros((20, 5), np.float32))
  np.save(tmp_path / 'a.npy', np.zeros((40, 4), np.float32))
  with pytest.raises(ValueError, match='v.npy'):
    predictor.predict_files(str(tmp_path / 'v.npy'), str(tmp_path / 'a.npy'),
                            25.0)


@pytest.mark.slow
def test_plots_of_a_finished_run(run):
  # `python -m wmmt_jax.plots --workdir=W`; plot_run itself is in test_plots.
  pytest.importorskip('matplotlib')
  pytest.importorskip('sklearn')
  from wmmt_jax import plots  # pylint: disable=g-import-not-at-top
  workdir, records, _ = run
  paths = plots.plot_workdir(workdir)
  names = {os.path.basename(p) for p in paths}
  assert {'pr_curve.png', 'tsne.png'} <= names
  assert len(names) == 2 + sum(
      min(3, sum(r.label == c for r in records)) for c in range(4))
