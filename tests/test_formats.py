"""Tests of input_pipeline/formats.py: metadata, feature files, alignment."""

import copy
import json
import math

import numpy as np
import pytest

from input_pipeline import formats


def adaptive_avg_pool_reference(x, out_len):
  """torch.nn.functional.adaptive_avg_pool1d over time, one bin at a time."""
  t_in = x.shape[0]
  out = np.zeros((out_len, x.shape[1]), np.float64)
  for i in range(out_len):
    start = math.floor(i * t_in / out_len)
    end = math.ceil((i + 1) * t_in / out_len)
    out[i] = x[start:end].astype(np.float64).mean(axis=0)
  return out


def linear_reference(x, out_len):
  """torch interpolate(mode='linear', align_corners=False), frame by frame."""
  t_in = x.shape[0]
  scale = t_in / out_len
  out = np.zeros((out_len, x.shape[1]), np.float64)
  for i in range(out_len):
    src = max(scale * (i + 0.5) - 0.5, 0.0)
    i0 = int(src)
    i1 = i0 + 1 if i0 < t_in - 1 else i0
    w = src - i0
    out[i] = (1 - w) * x[i0] + w * x[i1]
  return out


@pytest.mark.parametrize('t_in,t_out', [(50, 25), (37, 10), (100, 7),
                                        (7, 19), (3, 10), (1, 4), (12, 12)])
def test_align_audio_avg_pool_matches_adaptive_avg_pool(t_in, t_out):
  x = np.random.default_rng(t_in * 100 + t_out).normal(
      size=(t_in, 5)).astype(np.float32)
  out = formats.align_audio(x, t_out, 'avg_pool')
  assert out.shape == (t_out, 5) and out.dtype == np.float32
  np.testing.assert_allclose(out, adaptive_avg_pool_reference(x, t_out),
                             rtol=1e-6, atol=1e-6)
  if t_in == t_out:
    np.testing.assert_array_equal(out, x)


def test_align_audio_linear_by_hand():
  x = np.array([[0.], [10.], [20.], [30.]], np.float32)
  # Downsampling 4 -> 2: source positions 0.5 and 2.5.
  np.testing.assert_allclose(
      formats.align_audio(x, 2, 'linear')[:, 0], [5., 25.])
  # Upsampling 4 -> 8: positions (i + 0.5) / 2 - 0.5, clamped to [0, 3].
  np.testing.assert_allclose(
      formats.align_audio(x, 8, 'linear')[:, 0],
      [0., 2.5, 7.5, 12.5, 17.5, 22.5, 27.5, 30.])
  # Same length: the identity.
  np.testing.assert_allclose(formats.align_audio(x, 4, 'linear'), x)
  # 4 -> 3: positions 1/6, 3/2, 17/6.
  np.testing.assert_allclose(
      formats.align_audio(x, 3, 'linear')[:, 0],
      [10 / 6, 15., 170 / 6], rtol=1e-6)


@pytest.mark.parametrize('t_in,t_out', [(50, 25), (37, 10), (7, 19), (1, 3)])
def test_align_audio_linear_matches_reference(t_in, t_out):
  x = np.random.default_rng(t_in).normal(size=(t_in, 3)).astype(np.float32)
  np.testing.assert_allclose(formats.align_audio(x, t_out, 'linear'),
                             linear_reference(x, t_out), rtol=1e-6, atol=1e-6)


def test_align_audio_unknown_method():
  with pytest.raises(ValueError, match='dataset.audio_align'):
    formats.align_audio(np.zeros((4, 2)), 2, 'nearest')


def _entries():
  return [
      dict(file='train/000000.mp4', n_fakes=0, fake_periods=[], duration=4.0,
           original=None, modify_video=False, modify_audio=False,
           split='train', video_frames=100, audio_channels=1,
           audio_frames=64000),
      dict(file='train/000001.mp4', n_fakes=2,
           fake_periods=[[0.4, 1.0], [2.0, 2.52]], duration=3.2,
           original='train/000000.mp4', modify_video=True, modify_audio=False,
           split='train', video_frames=80, audio_channels=1,
           audio_frames=51200),
      dict(file='dev/000002.mp4', n_fakes=1, fake_periods=[[1, 2]],
           duration=5, original=None, modify_video=True, modify_audio=True,
           split='dev', video_frames=125, audio_channels=1,
           audio_frames=80000),
      dict(file='test/000003.mp4', n_fakes=1, fake_periods=[[0.0, 0.5]],
           duration=2.0, original=None, modify_video=False,
           modify_audio=True, split='test', video_frames=50,
           audio_channels=1, audio_frames=32000),
  ]


def _write(tmp_path, entries):
  path = tmp_path / 'metadata.json'
  path.write_text(json.dumps(entries))
  return str(path)


def test_read_lavdf_metadata(tmp_path):
  path = _write(tmp_path, _entries())
  records = formats.read_lavdf_metadata(path)
  assert [r.label for r in records] == [0, 2, 1, 3]
  assert [r.video_id for r in records] == ['000000', '000001', '000002',
                                           '000003']
  r = records[1]
  assert (r.file, r.split, r.duration, r.video_frames) == (
      'train/000001.mp4', 'train', 3.2, 80)
  assert r.fps == pytest.approx(25.0)
  assert r.fake_segments.dtype == np.float32
  np.testing.assert_allclose(r.fake_segments, [[0.4, 1.0], [2.0, 2.52]])
  np.testing.assert_allclose(r.visual_segments, r.fake_segments)
  assert r.audio_segments.shape == (0, 2)
  assert records[0].fake_segments.shape == (0, 2)
  np.testing.assert_allclose(records[3].audio_segments, [[0.0, 0.5]])
  assert records[3].visual_segments.shape == (0, 2)
  np.testing.assert_allclose(records[2].visual_segments, [[1, 2]])
  np.testing.assert_allclose(records[2].audio_segments, [[1, 2]])

  train = formats.read_lavdf_metadata(path, splits=['train'])
  assert [r.file for r in train] == ['train/000000.mp4', 'train/000001.mp4']
  dev_test = formats.read_lavdf_metadata(path, splits=('dev', 'test'))
  assert [r.label for r in dev_test] == [1, 3]
  with pytest.raises(TypeError, match='list of split names'):
    formats.read_lavdf_metadata(path, splits='train')


def _set(key, value):
  def mutate(entry):
    entry[key] = value
  return mutate


def _delete(key):
  def mutate(entry):
    del entry[key]
  return mutate


@pytest.mark.parametrize('mutate,key,expected', [
    (_delete('fake_periods'), 'fake_periods', 'missing key'),
    (_delete('modify_audio'), 'modify_audio', 'missing key'),
    (_delete('split'), 'split', 'missing key'),
    (_set('duration', 0), 'duration', '> 0'),
    (_set('duration', -1.5), 'duration', '> 0'),
    (_set('duration', '3.2'), 'duration', 'number'),
    (_set('video_frames', 80.5), 'video_frames', 'integer'),
    (_set('modify_video', 1), 'modify_video', 'bool'),
    (_set('n_fakes', 3), 'n_fakes', 'agree'),
    (_set('fake_periods', [[1.0, 0.5], [2.0, 2.5]]), 'fake_periods',
     '0 <= start <= end'),
    (_set('fake_periods', [[-0.1, 0.5], [2.0, 2.5]]), 'fake_periods',
     '0 <= start <= end'),
    (_set('fake_periods', [[0.1, 0.5, 0.7], [2.0, 2.5]]), 'fake_periods',
     '[start, end]'),
    (_set('fake_periods', [0.1, 0.5]), 'fake_periods', '[start, end]'),
    (_set('fake_periods', 'none'), 'fake_periods', '[start, end]'),
    (_set('file', 7), 'file', 'string'),
])
def test_read_lavdf_metadata_malformed(tmp_path, mutate, key, expected):
  entries = _entries()
  mutate(entries[1])
  path = _write(tmp_path, entries)
  with pytest.raises(ValueError) as e:
    formats.read_lavdf_metadata(path)
  message = str(e.value)
  assert path in message and 'entry 1' in message
  assert repr(key) in message and expected in message


def test_read_lavdf_metadata_fake_without_segments(tmp_path):
  entries = _entries()
  entries[3].update(n_fakes=0, fake_periods=[])
  with pytest.raises(ValueError, match=r"entry 3.*'fake_periods' is empty"):
    formats.read_lavdf_metadata(_write(tmp_path, entries))


def test_read_lavdf_metadata_real_with_segments(tmp_path):
  entries = _entries()
  entries[0].update(n_fakes=1, fake_periods=[[0.0, 1.0]])
  with pytest.raises(ValueError, match=r"entry 0.*neither"):
    formats.read_lavdf_metadata(_write(tmp_path, entries))


def test_read_lavdf_metadata_bad_split_entry_when_filtering(tmp_path):
  entries = _entries()
  del entries[2]['split']
  with pytest.raises(ValueError, match=r"entry 2.*'split'"):
    formats.read_lavdf_metadata(_write(tmp_path, entries), splits=['train'])


def test_read_lavdf_metadata_file_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match='nope.json'):
    formats.read_lavdf_metadata(str(tmp_path / 'nope.json'))
  bad = tmp_path / 'bad.json'
  bad.write_text('[{"file": ')
  with pytest.raises(ValueError, match='bad.json: not valid JSON'):
    formats.read_lavdf_metadata(str(bad))
  obj = tmp_path / 'obj.json'
  obj.write_text('{"a": 1}')
  with pytest.raises(ValueError, match='obj.json: expected a JSON list'):
    formats.read_lavdf_metadata(str(obj))
  not_dict = copy.deepcopy(_entries())
  not_dict[1] = [1, 2]
  with pytest.raises(ValueError, match='entry 1: expected a JSON object'):
    formats.read_lavdf_metadata(_write(tmp_path, not_dict))


def test_feature_paths():
  assert formats.feature_paths('/d/', 'mdp', 'train', '000001') == (
      '/d/feats/tsn/rgb/train/000001.npy',
      '/d/feats/audio_context/train/000001.npy')
  assert formats.feature_paths('gs://b/x', 'generic', 'dev', '7') == (
      'gs://b/x/visual/7.npy', 'gs://b/x/audio/7.npy')
  with pytest.raises(ValueError, match='dataset.layout'):
    formats.feature_paths('/d', 'umma', 'train', '1')


def _save(tmp_path, name, x):
  path = tmp_path / name
  np.save(path, x)
  return str(path)


def test_load_features(tmp_path):
  v = np.arange(30, dtype=np.float64).reshape(10, 3)
  a = np.ones((20, 2), np.float16)
  visual, audio = formats.load_features(_save(tmp_path, 'v.npy', v),
                                        _save(tmp_path, 'a.npy', a), 3, 2)
  assert visual.dtype == np.float32 and audio.dtype == np.float32
  np.testing.assert_array_equal(visual, v)
  np.testing.assert_array_equal(audio, a)
  assert formats.read_npy_shape(str(tmp_path / 'v.npy')) == (10, 3)


@pytest.mark.parametrize('bad,error,expected', [
    (None, FileNotFoundError, 'not found'),
    (np.full((4, 2), np.nan), ValueError, 'NaN or Inf'),
    (np.array([[0., 1.], [np.inf, 0.]]), ValueError, 'NaN or Inf'),
    (np.zeros((4, 3)), ValueError, 'dataset.audio_dim = 2'),
    (np.zeros((4, 2, 1)), ValueError, '2-D'),
    (np.zeros(4), ValueError, '2-D'),
    (np.zeros((0, 2)), ValueError, 'zero-length'),
])
def test_load_features_errors(tmp_path, bad, error, expected):
  visual_path = _save(tmp_path, 'v.npy', np.zeros((4, 3)))
  audio_path = str(tmp_path / 'bad_audio.npy')
  if bad is not None:
    np.save(audio_path, bad)
  with pytest.raises(error) as e:
    formats.load_features(visual_path, audio_path, 3, 2)
  assert audio_path in str(e.value) and expected in str(e.value)


def test_load_features_wrong_visual_width(tmp_path):
  visual_path = _save(tmp_path, 'v.npy', np.zeros((4, 5)))
  audio_path = _save(tmp_path, 'a.npy', np.zeros((4, 2)))
  with pytest.raises(ValueError, match=r'v.npy: .*dataset.visual_dim = 3'):
    formats.load_features(visual_path, audio_path, 3, 2)


def test_load_features_not_npy(tmp_path):
  path = tmp_path / 'v.npy'
  path.write_bytes(b'not an array')
  with pytest.raises(ValueError, match='v.npy: not a readable .npy'):
    formats.load_features(str(path), str(path), 3, 2)
