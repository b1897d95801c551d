"""Tests of input_pipeline/formats.py: metadata, feature files, alignment."""

import copy
import json
import math
import os

import ml_collections
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


def test_read_lavdf_metadata_full_file_fields_and_layout(tmp_path, monkeypatch):
  # The full metadata.json also has transcripts and word timestamps; any
  # whitespace; and entries cut by the chunk boundaries.
  entries = _entries()
  for e in entries:
    e.update(transcript='ça va — très bien', timestamps=[['ça', 0.0, 0.2]])
  path = tmp_path / 'metadata.json'
  path.write_text(json.dumps(entries, indent=2, ensure_ascii=False),
                  encoding='utf-8')
  expected = formats.read_lavdf_metadata(_write(tmp_path, _entries()))
  for chunk in (1, 7, 1 << 20):
    monkeypatch.setattr(formats, '_JSON_CHUNK_BYTES', chunk)
    records = formats.read_lavdf_metadata(str(path))
    assert records == expected
    for r, e in zip(records, expected):
      np.testing.assert_array_equal(r.fake_segments, e.fake_segments)


@pytest.mark.parametrize('text,expected', [
    ('', 'not valid JSON'),
    ('  \n', 'not valid JSON'),
    ('[', 'not valid JSON'),
    ('[ENTRY,', 'not valid JSON'),
    ('[ENTRY, {"file": "x.mp4"', 'not valid JSON'),
    ('[ENTRY ENTRY]', "expected ',' or ']'"),
    ('[] []', 'extra data'),
    ('[ENTRY, ]', 'not valid JSON'),
    ('"text"', 'expected a JSON list of video entries, got a JSON string'),
    ('x', 'not valid JSON'),
])
def test_json_list_errors(tmp_path, monkeypatch, text, expected):
  path = tmp_path / 'metadata.json'
  # Entries before a syntax error are read (and checked) first.
  path.write_text(text.replace('ENTRY', json.dumps(_entries()[0])))
  for chunk in (1, 1 << 20):
    monkeypatch.setattr(formats, '_JSON_CHUNK_BYTES', chunk)
    with pytest.raises(ValueError) as e:
      formats.read_lavdf_metadata(str(path))
    assert str(path) in str(e.value) and expected in str(e.value)


def test_json_list_edge_cases(tmp_path, monkeypatch):
  path = tmp_path / 'metadata.json'
  path.write_bytes(b'\xef\xbb\xbf [ ] \n')  # Byte order mark, empty list.
  assert formats.read_lavdf_metadata(str(path)) == []
  path.write_bytes(b'\xff[]')
  with pytest.raises(ValueError, match='not UTF-8'):
    formats.read_lavdf_metadata(str(path))
  # A top-level number cut by a chunk boundary is read whole.
  path.write_text('[12345678]')
  monkeypatch.setattr(formats, '_JSON_CHUNK_BYTES', 3)
  with pytest.raises(ValueError, match='entry 0: expected a JSON object, '
                     'got int'):
    formats.read_lavdf_metadata(str(path))
  # pylint: disable-next=protected-access
  assert list(formats._iter_json_list(str(path))) == [12345678]


def _av1m_entries():
  clip = 'id00012/21Uxsk56VDQ/00001'
  return [
      dict(file=f'{clip}/real.mp4', original=None, split='train',
           modify_type='real', audio_model='', fake_segments=[],
           visual_fake_segments=[], audio_fake_segments=[],
           video_frames=100, audio_frames=64000),
      dict(file=f'{clip}/fake_video_fake_audio.mp4',
           original=f'{clip}/real.mp4', split='train',
           modify_type='both_modified', audio_model='your_tts',
           fake_segments=[[0.4, 1.0], [2, 2.52]],
           visual_fake_segments=[[0.4, 1.0], [2, 2.52]],
           audio_fake_segments=[[0.4, 1.0], [2, 2.52]],
           video_frames=80, audio_frames=51200),
      dict(file=f'{clip}/fake_video_real_audio.mp4',
           original=f'{clip}/real.mp4', split='val',
           modify_type='visual_modified', audio_model='',
           fake_segments=[[1.0, 1.5]], visual_fake_segments=[[1.0, 1.5]],
           audio_fake_segments=[], video_frames=125, audio_frames=80000),
      dict(file=f'{clip}/real_video_fake_audio.mp4',
           original=f'{clip}/real.mp4', split='val',
           modify_type='audio_modified', audio_model='vits',
           fake_segments=[[0.0, 0.5]], visual_fake_segments=[],
           audio_fake_segments=[[0.0, 0.5]], video_frames=50,
           audio_frames=32000),
      # Both modified, the modalities at different times.
      dict(file='id00013/abc/00002/fake_video_fake_audio.mp4',
           original='id00013/abc/00002/real.mp4', split='train',
           modify_type='both_modified', audio_model='your_tts',
           fake_segments=[[0.2, 0.6], [1.0, 1.2]],
           visual_fake_segments=[[0.2, 0.6]],
           audio_fake_segments=[[1.0, 1.2]], video_frames=75,
           audio_frames=48000),
  ]


def test_read_avdeepfake1m_metadata(tmp_path, monkeypatch):
  path = _write(tmp_path, _av1m_entries())
  records = formats.read_avdeepfake1m_metadata(path)
  assert [r.label for r in records] == [
      formats.LABEL_REAL, formats.LABEL_BOTH, formats.LABEL_VISUAL,
      formats.LABEL_AUDIO, formats.LABEL_BOTH]
  assert [r.video_id for r in records] == [
      'id00012/21Uxsk56VDQ/00001/real',
      'id00012/21Uxsk56VDQ/00001/fake_video_fake_audio',
      'id00012/21Uxsk56VDQ/00001/fake_video_real_audio',
      'id00012/21Uxsk56VDQ/00001/real_video_fake_audio',
      'id00013/abc/00002/fake_video_fake_audio']
  assert [r.split for r in records] == ['train', 'train', 'val', 'val',
                                        'train']
  assert [r.duration for r in records] == [4.0, 3.2, 5.0, 2.0, 3.0]
  assert all(r.fps == 25.0 for r in records)
  assert [r.video_frames for r in records] == [100, 80, 125, 50, 75]
  for r, e in zip(records, _av1m_entries()):
    assert r.file == e['file']
    for name, key in (('fake_segments', 'fake_segments'),
                      ('visual_segments', 'visual_fake_segments'),
                      ('audio_segments', 'audio_fake_segments')):
      segments = getattr(r, name)
      assert segments.dtype == np.float32 and segments.shape == (
          len(e[key]), 2)
      np.testing.assert_allclose(segments,
                                 np.reshape(e[key], (-1, 2)).astype(
                                     np.float32))
      assert not segments.flags.writeable
  val = formats.read_avdeepfake1m_metadata(path, splits=['val'])
  assert [r.label for r in val] == [2, 3]
  with pytest.raises(TypeError, match='list of split names'):
    formats.read_avdeepfake1m_metadata(path, splits='val')
  # Chunk boundaries anywhere give the same records.
  monkeypatch.setattr(formats, '_JSON_CHUNK_BYTES', 5)
  small = formats.read_avdeepfake1m_metadata(path)
  assert small == records
  for a, b in zip(small, records):
    for name in ('fake_segments', 'visual_segments', 'audio_segments'):
      np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


@pytest.mark.parametrize('index,mutate,key,expected', [
    (1, _delete('fake_segments'), 'fake_segments', 'missing key'),
    (1, _delete('modify_type'), 'modify_type', 'missing key'),
    (1, _delete('video_frames'), 'video_frames', 'missing key'),
    (1, _set('modify_type', 'fake'), 'modify_type', "one of 'real'"),
    (1, _set('video_frames', 0), 'video_frames', 'integer > 0'),
    (1, _set('split', ''), 'split', 'non-empty string'),
    (1, _set('visual_fake_segments', [[1.0, 0.5]]), 'visual_fake_segments',
     '0 <= start <= end'),
    (1, _set('audio_fake_segments', [[-1, 0.5]]), 'audio_fake_segments',
     '0 <= start <= end'),
    (1, _set('fake_segments', [[0.1, 0.2, 0.3]]), 'fake_segments',
     '[start, end]'),
    (0, _set('fake_segments', [[0.1, 0.2]]), 'fake_segments',
     "expected none when the video is not modified"),
    (1, _set('fake_segments', []), 'fake_segments', 'expected at least one'),
    (2, _set('audio_fake_segments', [[1.0, 1.5]]), 'audio_fake_segments',
     'expected none when the audio is not modified'),
    (3, _set('audio_fake_segments', []), 'audio_fake_segments',
     'expected at least one [start, end] segment where the audio'),
    (3, _set('visual_fake_segments', [[0.0, 0.5]]), 'visual_fake_segments',
     'expected none when the visual track is not modified'),
    (2, _set('visual_fake_segments', []), 'visual_fake_segments',
     'where the visual track is forged'),
])
def test_read_avdeepfake1m_metadata_malformed(tmp_path, index, mutate, key,
                                              expected):
  entries = _av1m_entries()
  mutate(entries[index])
  path = _write(tmp_path, entries)
  with pytest.raises(ValueError) as e:
    formats.read_avdeepfake1m_metadata(path)
  message = str(e.value)
  assert path in message and f'entry {index} ({entries[index]["file"]})' in (
      message)
  assert repr(key) in message and expected in message


def test_read_avdeepfake1m_metadata_other_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match='train_metadata.json'):
    formats.read_avdeepfake1m_metadata(str(tmp_path / 'train_metadata.json'))
  entries = _av1m_entries()
  entries[2] = 'not an object'
  with pytest.raises(ValueError, match='entry 2: expected a JSON object'):
    formats.read_avdeepfake1m_metadata(_write(tmp_path, entries))
  # The official loader's spelling of both_modified.
  entries = _av1m_entries()
  entries[1]['modify_type'] = 'both-modified'
  records = formats.read_avdeepfake1m_metadata(_write(tmp_path, entries))
  assert records[1].label == formats.LABEL_BOTH


def _ds_config(layout, visual_dim=3, audio_dim=2, **kw):
  config = ml_collections.ConfigDict(dict(
      layout=layout, visual_dim=visual_dim, audio_dim=audio_dim,
      audio_align='avg_pool'))
  config.update(kw)
  return config


def test_feature_layouts():
  assert formats.feature_paths('/d', 'ummaformer', 'val', 'a/b') == (
      '/d/feats/tsn/rgb/val/a/b.npy', '/d/feats/byola/val/a/b.npy')
  assert formats.video_feature_paths(
      '/d', _ds_config('ummaformer', use_flow=True), 'val', '1') == (
          ('/d/feats/tsn/rgb/val/1.npy', '/d/feats/tsn/flow/val/1.npy'),
          '/d/feats/byola/val/1.npy')
  assert formats.video_feature_paths('/d', _ds_config('ummaformer'), 'val',
                                     '1') == (('/d/feats/tsn/rgb/val/1.npy',),
                                              '/d/feats/byola/val/1.npy')
  assert formats.video_feature_paths('/d', _ds_config('mdp'), 'dev', '1') == (
      ('/d/feats/tsn/rgb/dev/1.npy',), '/d/feats/audio_context/dev/1.npy')
  assert formats.feature_dirs('gs://b', _ds_config('generic'), 'dev') == (
      ('gs://b/visual',), 'gs://b/audio')
  with pytest.raises(ValueError, match="dataset.use_flow = True: only the "
                     "'ummaformer'"):
    formats.video_feature_paths('/d', _ds_config('mdp', use_flow=True),
                                'train', '1')
  with pytest.raises(ValueError, match='dataset.layout'):
    formats.video_feature_paths('/d', _ds_config('tsn'), 'train', '1')
  with pytest.raises(ValueError, match='expected an even width'):
    formats.feature_specs('/d', _ds_config('ummaformer', visual_dim=5,
                                           use_flow=True), 'train', '1')


def _write_video(root, config, split, video_id, lengths, rng, dtype=None):
  """Random features for each of the video's files; returns the arrays."""
  arrays = []
  for spec, length in zip(formats.feature_specs(root, config, split,
                                                video_id), lengths):
    x = rng.normal(size=(length, spec.dim)).astype(dtype or np.float32)
    os.makedirs(os.path.dirname(spec.path), exist_ok=True)
    np.save(spec.path, x)
    arrays.append(x)
  return arrays


@pytest.mark.parametrize('layout,use_flow,align,lengths', [
    ('mdp', False, 'avg_pool', (10, 20)),
    ('mdp', False, 'linear', (10, 20)),
    ('ummaformer', False, 'linear', (12, 6)),
    ('ummaformer', True, 'linear', (12, 12, 6)),
    ('ummaformer', True, 'avg_pool', (12, 11, 6)),  # Flow a frame short.
    ('ummaformer', True, 'linear', (12, 14, 6)),  # Flow 2 frames long.
    ('generic', False, 'avg_pool', (7, 3)),
])
def test_load_video_features(tmp_path, layout, use_flow, align, lengths):
  visual_dim = 6 if use_flow else 3
  config = _ds_config(layout, visual_dim=visual_dim, use_flow=use_flow,
                      audio_align=align)
  root = str(tmp_path)
  arrays = _write_video(root, config, 'val', 'id0/clip/real', lengths,
                        np.random.default_rng(0), dtype=np.float16)
  visual, audio = formats.load_video_features(root, config, 'val',
                                              'id0/clip/real')
  t = lengths[0]
  assert visual.shape == (t, visual_dim) and visual.dtype == np.float32
  assert audio.shape == (t, 2) and audio.dtype == np.float32
  expected = arrays[0]
  if use_flow:
    flow = arrays[1][:t]
    flow = np.concatenate([flow, np.repeat(flow[-1:], t - len(flow), 0)])
    expected = np.concatenate([expected, flow], axis=1)
  np.testing.assert_array_equal(visual, expected.astype(np.float32))
  np.testing.assert_allclose(
      audio, formats.align_audio(arrays[-1].astype(np.float32), t, align),
      rtol=1e-6)
  assert formats.read_visual_length(root, config, 'val', 'id0/clip/real') == t


def test_load_video_features_real_widths(tmp_path):
  rng = np.random.default_rng(1)
  root = str(tmp_path)
  mdp = _ds_config('mdp', visual_dim=2048, audio_dim=1024)
  _write_video(root, mdp, 'test', '000001', (5, 10), rng)
  visual, audio = formats.load_video_features(root, mdp, 'test', '000001')
  assert visual.shape == (5, 2048) and audio.shape == (5, 1024)
  umma = _ds_config('ummaformer', visual_dim=4096, audio_dim=2048,
                    use_flow=True, audio_align='linear')
  _write_video(root, umma, 'train', '000001', (6, 6, 3), rng)
  visual, audio = formats.load_video_features(root, umma, 'train', '000001')
  assert visual.shape == (6, 4096) and audio.shape == (6, 2048)


def test_load_video_features_errors(tmp_path):
  rng = np.random.default_rng(2)
  root = str(tmp_path)
  config = _ds_config('ummaformer', visual_dim=6, use_flow=True)
  (rgb, flow), audio = formats.video_feature_paths(root, config, 'val', 'v')
  _write_video(root, config, 'val', 'v', (12, 9, 6), rng)
  with pytest.raises(formats.FeatureError) as e:
    formats.load_video_features(root, config, 'val', 'v')
  assert e.value.kind == 'length_mismatch' and flow in str(e.value)
  assert rgb in str(e.value) and 'within 2 frames' in str(e.value)
  np.save(flow, np.zeros((12, 4)))
  with pytest.raises(ValueError) as e:
    formats.load_video_features(root, config, 'val', 'v')
  assert flow in str(e.value) and 'feature width is 4' in str(e.value)
  assert 'expects 3 per file' in str(e.value)
  np.save(flow, np.zeros((12, 3)))
  os.remove(audio)
  with pytest.raises(FileNotFoundError, match=f'{audio}: feature file not'):
    formats.load_video_features(root, config, 'val', 'v')
  np.save(audio, np.full((6, 2), np.nan))
  with pytest.raises(ValueError, match=f'{audio}: features contain NaN'):
    formats.load_video_features(root, config, 'val', 'v')
  np.save(rgb, np.zeros((0, 3)))
  with pytest.raises(ValueError, match=f'{rgb}: zero-length'):
    formats.read_visual_length(root, config, 'val', 'v')


def test_check_feature_file(tmp_path, monkeypatch):
  monkeypatch.setattr(formats, '_CHECK_CHUNK_BYTES', 16)  # 2 rows of 2.
  path = str(tmp_path / 'a.npy')
  spec = formats.FeatureSpec(path, 2, 'dataset.audio_dim = 2',
                             'set dataset.audio_dim to the width')
  x = np.zeros((9, 2), np.float32)
  np.save(path, x)
  assert formats.check_feature_file(spec) == (9, 2)
  x[7, 1] = np.inf
  np.save(path, x)
  with pytest.raises(formats.FeatureError,
                     match=r'NaN or Inf \(first at time 7, channel 1\)'):
    formats.check_feature_file(spec)
  # Finite values whose sum overflows are fine.
  np.save(path, np.full((9, 2), 3e38, np.float32))
  assert formats.check_feature_file(spec) == (9, 2)
  np.save(path, np.zeros((4, 2), np.int16))
  assert formats.check_feature_file(spec) == (4, 2)
  data = open(path, 'rb').read()
  with open(path, 'wb') as f:
    f.write(data[:-4])  # Truncated.
  with pytest.raises(formats.FeatureError) as e:
    formats.check_feature_file(spec)
  assert e.value.kind == 'unreadable' and path in str(e.value)
  np.save(path, np.array(['a', 'b']).reshape(1, 2))
  with pytest.raises(formats.FeatureError, match='expected numeric'):
    formats.check_feature_file(spec)


@pytest.mark.parametrize('array', [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.arange(6, dtype=np.float16).reshape(2, 3),
    np.asfortranarray(np.arange(6, dtype='>f8').reshape(2, 3)),
    np.zeros((0, 5), np.float32),
    np.arange(3, dtype=np.int64),
])
def test_npy_reader_matches_numpy(tmp_path, array):
  # Our parser (no ast: thread-safe on CPython < 3.11.8) reads what np.save
  # wrote, header fields and data.
  path = str(tmp_path / 'x.npy')
  np.save(path, array)
  got = formats._read_npy(path)  # pylint: disable=protected-access
  np.testing.assert_array_equal(got, array)
  assert got.dtype == array.dtype and got.shape == array.shape
  assert formats.read_npy_header(path) == (array.shape, array.dtype)
  if array.ndim == 2 and array.size and array.dtype.kind == 'f':
    # The memory-mapped check reads the same header.
    spec = formats.FeatureSpec(path, array.shape[1], 'dataset.visual_dim', '')
    assert formats.check_feature_file(spec) == array.shape


def test_npy_reader_names_bad_files(tmp_path):
  path = tmp_path / 'bad.npy'
  path.write_bytes(b'not numpy at all')
  with pytest.raises(formats.FeatureError, match='bad.npy.*magic'):
    formats._read_npy(str(path))  # pylint: disable=protected-access
  np.save(str(path), np.zeros((4, 4), np.float32))
  path.write_bytes(path.read_bytes()[:-8])
  with pytest.raises(formats.FeatureError, match='shorter'):
    formats._read_npy(str(path))  # pylint: disable=protected-access
