"""Tests of input_pipeline/synthetic.py: the embedded synthetic dataset."""

import json
import os
import threading

import numpy as np
import pytest

from configs import default
from input_pipeline import formats
from input_pipeline import synthetic


def tiny_config(**synthetic_overrides):
  config = default.get_config()
  config.dataset.visual_dim = 8
  config.dataset.audio_dim = 4
  syn = config.dataset.synthetic
  syn.num_train = 16
  syn.num_test = 8
  syn.min_duration_s = 1.0
  syn.max_duration_s = 3.0
  syn.update(synthetic_overrides)
  return config


def _files(directory):
  out = {}
  for dirpath, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(dirpath, name)
      out[os.path.relpath(path, directory)] = path
  return out


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
  config = tiny_config()
  root = str(tmp_path_factory.mktemp('syn'))
  directory = synthetic.ensure_synthetic_dataset(root, config)
  return config, directory


def test_layout_and_metadata(dataset):
  config, directory = dataset
  syn = config.dataset.synthetic
  assert os.path.basename(directory) == (
      f'synthetic-{synthetic.dataset_hash(config)}')
  entries = json.load(open(os.path.join(directory, 'metadata.json')))
  assert len(entries) == syn.num_train + syn.num_test
  assert [e['file'] for e in entries] == [
      f'{"train" if i < 16 else "test"}/{i:06d}.mp4' for i in range(24)]
  real_files = {e['file'] for e in entries if e['original'] is None}
  for e in entries:
    assert e['split'] == e['file'].split('/')[0]
    assert syn.min_duration_s <= e['duration'] <= syn.max_duration_s
    assert e['video_frames'] == round(e['duration'] * syn.fps)
    assert e['audio_frames'] == round(e['duration'] * 16000)
    assert e['audio_channels'] == 1
    assert e['n_fakes'] == len(e['fake_periods'])
    fake = e['modify_video'] or e['modify_audio']
    assert (e['original'] is not None) == fake
    if fake:
      assert e['original'] in real_files
      assert e['original'].startswith(e['split'])
    visual, audio = formats.feature_paths(directory, 'mdp', e['split'],
                                          e['file'][-10:-4])
    v, a = np.load(visual), np.load(audio)
    assert v.dtype == np.float32 and a.dtype == np.float32
    assert v.shape == (e['video_frames'], 8)
    assert a.shape == (round(e['duration'] * syn.audio_rate), 4)
  # The reader accepts it.
  records = formats.read_lavdf_metadata(f'{directory}/metadata.json')
  assert all(r.fps == pytest.approx(syn.fps) for r in records)


def test_every_class_in_every_split(dataset):
  _, directory = dataset
  for split, n in (('train', 16), ('test', 8)):
    records = formats.read_lavdf_metadata(f'{directory}/metadata.json',
                                          splits=[split])
    labels = [r.label for r in records]
    assert len(labels) == n and set(labels) == {0, 1, 2, 3}


def test_class_counts():
  p = (0.27, 0.25, 0.24, 0.24)
  np.testing.assert_array_equal(synthetic.class_counts(p, 1024),
                                [276, 256, 246, 246])
  for n in range(4, 40):
    counts = synthetic.class_counts(p, n)
    assert counts.sum() == n and (counts >= 1).all()
  np.testing.assert_array_equal(synthetic.class_counts((1, 0, 1, 0), 5),
                                [3, 0, 2, 0])


def test_segments(dataset):
  config, directory = dataset
  syn = config.dataset.synthetic
  records = formats.read_lavdf_metadata(f'{directory}/metadata.json')
  for r in records:
    segs = r.fake_segments.astype(np.float64)
    if r.label == 0:
      assert segs.shape == (0, 2)
      continue
    assert 1 <= len(segs) <= syn.max_fakes
    assert (segs[:, 0] >= 0).all() and (segs[:, 1] <= r.duration + 1e-5).all()
    lengths = segs[:, 1] - segs[:, 0]
    assert (lengths >= 0.1 - 1e-5).all() and (lengths <= 1.6 + 1e-5).all()
    # Non-overlapping, in order, with a real frame between them.
    assert (segs[1:, 0] > segs[:-1, 1]).all()
    # On frame boundaries.
    np.testing.assert_allclose(segs * syn.fps, np.round(segs * syn.fps),
                               atol=1e-4)


def test_deterministic_bytes(dataset, tmp_path):
  config, directory = dataset
  other = synthetic.ensure_synthetic_dataset(str(tmp_path), config)
  files, other_files = _files(directory), _files(other)
  assert sorted(files) == sorted(other_files)
  assert len(files) == 2 * 24 + 2  # Features, metadata and the marker.
  for name, path in files.items():
    with open(path, 'rb') as f, open(other_files[name], 'rb') as g:
      assert f.read() == g.read(), name


def test_seed_and_dims_change_the_directory():
  config = tiny_config()
  base = synthetic.dataset_hash(config)
  assert synthetic.dataset_hash(tiny_config()) == base
  assert synthetic.dataset_hash(tiny_config(seed=1)) != base
  assert synthetic.dataset_hash(tiny_config(shift=0.7)) != base
  config.dataset.audio_dim = 5
  assert synthetic.dataset_hash(config) != base


def test_reuse_does_not_rewrite(dataset):
  config, directory = dataset
  files = _files(directory)
  mtimes = {name: os.stat(path).st_mtime_ns for name, path in files.items()}
  root = os.path.dirname(directory)
  assert synthetic.ensure_synthetic_dataset(root, config) == directory
  assert {name: os.stat(path).st_mtime_ns
          for name, path in _files(directory).items()} == mtimes


def test_crashed_writer_leftovers(tmp_path):
  config = tiny_config(num_train=4, num_test=4)
  final = tmp_path / f'synthetic-{synthetic.dataset_hash(config)}'
  # A writer that died half way left its temporary directory.
  crashed = tmp_path / (final.name + '.tmp-0123')
  (crashed / 'feats').mkdir(parents=True)
  (crashed / 'metadata.json').write_text('[')
  directory = synthetic.ensure_synthetic_dataset(str(tmp_path), config)
  assert directory == str(final)
  assert len(formats.read_lavdf_metadata(f'{directory}/metadata.json')) == 8
  # Only our own temporary directory is cleaned up.
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
      [final.name, crashed.name])


def test_incomplete_final_directory_is_not_used(tmp_path):
  config = tiny_config(num_train=4, num_test=4)
  final = tmp_path / f'synthetic-{synthetic.dataset_hash(config)}'
  (final / 'feats').mkdir(parents=True)
  with pytest.raises(RuntimeError, match='no COMPLETE marker'):
    synthetic.ensure_synthetic_dataset(str(tmp_path), config)


def test_concurrent_writers(tmp_path, monkeypatch):
  config = tiny_config(num_train=8, num_test=4)
  results, errors = [], []
  # All writers finish writing before any renames: two of them lose the race.
  barrier = threading.Barrier(3, timeout=30)
  write_dataset = synthetic._write_dataset

  def write_and_wait(directory, config):
    write_dataset(directory, config)
    barrier.wait()

  monkeypatch.setattr(synthetic, '_write_dataset', write_and_wait)

  def write():
    try:
      results.append(synthetic.ensure_synthetic_dataset(str(tmp_path),
                                                         config))
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)

  threads = [threading.Thread(target=write) for _ in range(3)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors
  assert len(set(results)) == 1
  assert [p.name for p in tmp_path.iterdir()] == [
      os.path.basename(results[0])]
  assert len(formats.read_lavdf_metadata(f'{results[0]}/metadata.json')) == 12


def test_bad_config_names_the_field(tmp_path):
  with pytest.raises(ValueError, match='dataset.synthetic.deviation_factor'):
    synthetic.ensure_synthetic_dataset(str(tmp_path),
                                       tiny_config(deviation_factor=0.5))
  with pytest.raises(ValueError, match='dataset.synthetic.class_proportions'):
    synthetic.ensure_synthetic_dataset(str(tmp_path),
                                       tiny_config(class_proportions=(1, 1)))
  with pytest.raises(ValueError, match='dataset.synthetic.max_segment_s'):
    synthetic.ensure_synthetic_dataset(
        str(tmp_path), tiny_config(min_segment_s=0.5, max_segment_s=0.4))


def _directions(config):
  return (synthetic.global_direction(config, 'visual'),
          synthetic.global_direction(config, 'audio'))


def _audio_segments(entry, syn):
  return np.round(np.asarray(entry['fake_periods']).reshape(-1, 2) *
                  syn.audio_rate).astype(int)


def _frame_segments(entry, syn):
  return np.round(np.asarray(entry['fake_periods']).reshape(-1, 2) *
                  syn.fps).astype(int)


def _inside(n, segments):
  inside = np.zeros(n, bool)
  for s, e in segments:
    inside[s:e] = True
  return inside


def test_traces_only_in_forged_modality_and_segments():
  """A fake video equals its real counterpart outside the forged parts."""
  config = tiny_config()
  syn = config.dataset.synthetic
  directions = _directions(config)
  for i in range(12):
    _, v_real, a_real = synthetic.make_video(config, 0, i, 0, directions)
    for label in (1, 2, 3):
      entry, v, a = synthetic.make_video(config, 0, i, label, directions)
      assert v.shape == v_real.shape and a.shape == a_real.shape
      v_forged = _inside(len(v), _frame_segments(entry, syn))
      a_forged = _inside(len(a), _audio_segments(entry, syn))
      changed_v = (v != v_real).any(axis=1)
      changed_a = (a != a_real).any(axis=1)
      if label in (1, 2):
        np.testing.assert_array_equal(changed_v, v_forged)
      else:
        assert not changed_v.any()
      if label in (1, 3):
        np.testing.assert_array_equal(changed_a, a_forged)
      else:
        assert not changed_a.any()


def test_trace_statistics():
  """Shift along g and deviation factor inside segments, none elsewhere."""
  config = tiny_config(min_duration_s=4.0, max_duration_s=10.0)
  config.dataset.visual_dim = 16
  config.dataset.audio_dim = 8
  syn = config.dataset.synthetic
  directions = _directions(config)
  stats = {m: {'shift': [], 'ratio_num': 0.0, 'ratio_den': 0.0}
           for m in ('forged', 'unforged')}
  for i in range(400):
    label = (2, 3)[i % 2]
    entry, v, a = synthetic.make_video(config, 1, i, label, directions)
    v_seg, a_seg = _frame_segments(entry, syn), _audio_segments(entry, syn)
    per_modality = ((v, v_seg, directions[0]), (a, a_seg, directions[1]))
    for m, (x, seg, g) in enumerate(per_modality):
      kind = 'forged' if (m == 0) == (label == 2) else 'unforged'
      inside = _inside(len(x), seg)
      proj = x.astype(np.float64) @ g
      stats[kind]['shift'].append(proj[inside].mean() - proj[~inside].mean())
      sq = (np.diff(x.astype(np.float64), axis=0)**2).sum(axis=1)
      both_in = inside[1:] & inside[:-1]
      both_out = ~inside[1:] & ~inside[:-1]
      stats[kind]['ratio_num'] += sq[both_in].mean()
      stats[kind]['ratio_den'] += sq[both_out].mean()
  # u = normalize(g + v) has u.g ~ 1/sqrt(2), so the mean shift along g is
  # ~0.7 shift; the slow AR drift makes each video's estimate noisy (std of
  # the mean over 200 videos ~0.05).
  forged_shift = np.mean(stats['forged']['shift'])
  unforged_shift = np.mean(stats['unforged']['shift'])
  assert 0.4 * syn.shift < forged_shift < 1.1 * syn.shift, forged_shift
  assert abs(unforged_shift) < 0.12, unforged_shift
  forged_ratio = stats['forged']['ratio_num'] / stats['forged']['ratio_den']
  unforged_ratio = (stats['unforged']['ratio_num'] /
                    stats['unforged']['ratio_den'])
  assert forged_ratio == pytest.approx(syn.deviation_factor**2, rel=0.15)
  assert unforged_ratio == pytest.approx(1.0, rel=0.1)


def test_real_features_have_unit_frame_std():
  rng = np.random.default_rng(0)
  x = synthetic.base_features(rng, 20000, 4)
  centred = x - x.mean(axis=0)
  np.testing.assert_allclose(centred.std(axis=0), 1.0, atol=0.05)
  # Adjacent frames are close: AR(1) with coefficient 0.9.
  diff_var = np.diff(x, axis=0).var(axis=0)
  np.testing.assert_allclose(diff_var, 2 * 0.1 * 0.99 + 2 * 0.01, rtol=0.1)
