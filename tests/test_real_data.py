"""configs/lavdf.py and configs/avdeepfake1m.py on folders in those formats.

The folders are the tiny synthetic dataset written in each dataset's exact
metadata format and the MDP feature layout; the run validates and prepares
them as records, trains a few steps and evaluates, as the one-line command
`python -m wmmt_jax.main --config=configs/lavdf.py --config.dataset.root=R`
does.
"""

import json
import os
import shutil

import numpy as np
import pytest

from configs import avdeepfake1m
from configs import default
from configs import lavdf
from input_pipeline import formats
from input_pipeline import synthetic
from wmmt_jax import errors
from wmmt_jax import train

_MODIFY_TYPE = {formats.LABEL_REAL: 'real',
                formats.LABEL_BOTH: 'both_modified',
                formats.LABEL_VISUAL: 'visual_modified',
                formats.LABEL_AUDIO: 'audio_modified'}


@pytest.fixture(scope='module')
def lavdf_root(tmp_path_factory):
  """A LAV-DF-format folder (metadata.json, MDP layout), tiny widths."""
  return synthetic.ensure_synthetic_dataset(
      str(tmp_path_factory.mktemp('lavdf')), default.get_config('tiny'))


def _write_avdeepfake1m(lavdf_dir, out):
  """The same videos as AV-Deepfake1M: {train,val}_metadata.json and
  nested ids (`id00/<n>/real.mp4`), features moved to match."""
  with open(os.path.join(lavdf_dir, 'metadata.json')) as f:
    entries = json.load(f)
  records = {r.file: r for r in formats.read_lavdf_metadata(
      os.path.join(lavdf_dir, 'metadata.json'))}
  metadata = {'train': [], 'val': []}
  for entry in entries:
    record = records[entry['file']]
    split = 'train' if record.split == 'train' else 'val'
    kind = _MODIFY_TYPE[record.label]
    video_id = f'id00/{record.video_id}/{kind}'
    src_v, src_a = formats.feature_paths(lavdf_dir, 'mdp', record.split,
                                         record.video_id)
    dst_v, dst_a = formats.feature_paths(out, 'mdp', split, video_id)
    for src, dst in ((src_v, dst_v), (src_a, dst_a)):
      os.makedirs(os.path.dirname(dst), exist_ok=True)
      shutil.copy(src, dst)
    metadata[split].append({
        'file': f'{video_id}.mp4', 'original': None, 'split': split,
        'modify_type': kind, 'audio_model': '',
        'fake_segments': record.fake_segments.tolist(),
        'visual_fake_segments': record.visual_segments.tolist(),
        'audio_fake_segments': record.audio_segments.tolist(),
        'video_frames': record.video_frames,
        'audio_frames': int(record.duration * 16000)})
  for split, rows in metadata.items():
    with open(os.path.join(out, f'{split}_metadata.json'), 'w') as f:
      json.dump(rows, f)
  return out


def _shrink(config, root):
  """The paper's config at test sizes (widths, steps, buckets)."""
  tiny = default.get_config('tiny')
  config.dataset.root = root
  for key in ('visual_dim', 'audio_dim', 'num_frames', 'eval_length_buckets'):
    config.dataset[key] = tiny.dataset[key]
  for key in ('embed_dim', 'qkv_dim', 'head_dim'):
    config.model[key] = tiny.model[key]
  for key in ('batch_size', 'total_steps', 'checkpoint_every_steps',
              'log_every_steps'):
    config[key] = tiny[key]
  config.eval_every_steps = 0
  config.eval.batch_size = tiny.eval.batch_size
  config.eval.plots = False
  return config


def test_lavdf_config_prepares_trains_and_evaluates(lavdf_root, tmp_path):
  config = _shrink(lavdf.get_config(), lavdf_root)
  assert config.dataset.use_prepared
  results = train.train_and_evaluate(config, str(tmp_path / 'w'))
  # The paper's protocol, and LAV-DF's on the same predictions.
  assert results['protocol'] == 'wmmt'
  assert set(results['protocols']) == {'lavdf'}
  assert set(results['protocols']['lavdf']['ap']) == {0.5, 0.75, 0.95}
  prepared = os.listdir(os.path.join(lavdf_root, 'prepared'))
  assert len([p for p in prepared if '.tmp' not in p]) == 1
  with open(tmp_path / 'w' / 'predictions.json') as f:
    assert len(json.load(f)) == 8  # Every test video.


def test_avdeepfake1m_config_prepares_trains_and_evaluates(lavdf_root,
                                                           tmp_path):
  root = _write_avdeepfake1m(lavdf_root, str(tmp_path / 'av1m'))
  config = _shrink(avdeepfake1m.get_config(), root)
  results = train.train_and_evaluate(config, str(tmp_path / 'w'))
  assert results['protocol'] == 'avdeepfake1m'
  assert set(results['ap']) == {0.5, 0.75, 0.9, 0.95}
  with open(tmp_path / 'w' / 'predictions.json') as f:
    files = set(json.load(f))
  assert len(files) == 8 and all(f.startswith('id00/') for f in files)


def test_invalid_dataset_stops_with_the_report(lavdf_root, tmp_path):
  root = str(tmp_path / 'bad')
  shutil.copytree(lavdf_root, root, ignore=shutil.ignore_patterns('prepared'))
  records = formats.read_lavdf_metadata(os.path.join(root, 'metadata.json'))
  bad = next(r for r in records if r.split == 'train')
  visual, _ = formats.feature_paths(root, 'mdp', 'train', bad.video_id)
  x = np.load(visual)
  x[1, 2] = np.nan
  np.save(visual, x)
  config = _shrink(lavdf.get_config(), root)
  with pytest.raises(errors.InputDataError, match=bad.video_id):
    train.train_and_evaluate(config, str(tmp_path / 'w'))
  # With skip_invalid the bad video is left out and listed.
  config.dataset.skip_invalid = True
  train.train_and_evaluate(config, str(tmp_path / 'w2'))
  reports = [os.path.join(d, f) for d, _, fs in os.walk(
      os.path.join(root, 'prepared')) for f in fs
             if f == 'validation_report.json']
  assert reports and bad.video_id in open(reports[0]).read()
