"""Tests of input_pipeline/validation.py: every problem found, and skipping."""

import json
import os

import ml_collections
import numpy as np
import pytest

from input_pipeline import formats
from input_pipeline import validation

_NO_SEGMENTS = np.zeros((0, 2), np.float32)


def _config(layout='mdp', visual_dim=3, audio_dim=2, **kw):
  config = ml_collections.ConfigDict(dict(
      layout=layout, visual_dim=visual_dim, audio_dim=audio_dim,
      audio_align='avg_pool'))
  config.update(kw)
  return config


def _record(file, split, label=formats.LABEL_REAL, frames=50,
            segments=(), video_id=None):
  """A 25 fps record; fakes have `segments` in the modified modalities."""
  seg = np.asarray(segments, np.float32).reshape(-1, 2)
  visual = label in (formats.LABEL_BOTH, formats.LABEL_VISUAL)
  audio = label in (formats.LABEL_BOTH, formats.LABEL_AUDIO)
  if video_id is None:
    video_id = file.rpartition('/')[2].rpartition('.')[0]
  return formats.VideoRecord(
      file=file, video_id=video_id, split=split,
      label=label, duration=frames / 25, video_frames=frames, fps=25.0,
      fake_segments=seg, visual_segments=seg if visual else _NO_SEGMENTS,
      audio_segments=seg if audio else _NO_SEGMENTS)


def _save(path, x):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  np.save(path, x)


def _write_features(root, config, record, audio_rate=50.0):
  """Finite features of the record's video_frames (and matching audio)."""
  rng = np.random.default_rng(abs(hash(record.file)) % 2**32)
  specs = formats.feature_specs(root, config, record.split, record.video_id)
  audio_len = round(record.video_frames * audio_rate / record.fps)
  for spec in specs:
    length = audio_len if spec is specs[-1] else record.video_frames
    _save(spec.path, rng.normal(size=(length, spec.dim)).astype(np.float32))


def _dataset(root, config=None, audio_rate=50.0):
  """Four clean LAV-DF-like videos in two splits; returns (config, records)."""
  config = config or _config()
  records = [
      _record('train/000000.mp4', 'train'),
      _record('train/000001.mp4', 'train', formats.LABEL_VISUAL, 60,
              [[0.4, 1.0], [2.0, 2.4]]),
      _record('test/000002.mp4', 'test', formats.LABEL_BOTH, 40, [[1, 1.6]]),
      _record('test/000003.mp4', 'test', formats.LABEL_AUDIO, 55,
              [[0.0, 2.2]]),  # A segment to the very end.
  ]
  for r in records:
    _write_features(root, config, r, audio_rate)
  return config, records


def _paths(root, config, record):
  visual, audio = formats.video_feature_paths(root, config, record.split,
                                              record.video_id)
  return visual[0], audio


def test_clean_dataset(tmp_path):
  root = str(tmp_path)
  config, records = _dataset(root)
  report = validation.validate_dataset(root, config, records)
  assert report.problems == [] and report.bad_files == set()
  assert report.num_records == 4
  assert 'no problems in 4 videos' in report.summary()
  validation.check_or_skip(report, False, str(tmp_path / 'report.json'))
  assert not (tmp_path / 'report.json').exists()


def _only(report, kind):
  """The one problem of the report, which must be of `kind`."""
  assert [p.kind for p in report.problems] == [kind], report.summary()
  return report.problems[0]


@pytest.mark.parametrize('which,kind,array,expected', [
    ('audio', 'missing_feature', None, 'feature file not found'),
    ('visual', 'missing_feature', None, "dataset.layout = 'mdp'"),
    ('visual', 'wrong_width', np.zeros((60, 5)), 'dataset.visual_dim = 3'),
    ('audio', 'wrong_width', np.zeros((120, 3)), 'dataset.audio_dim = 2'),
    ('audio', 'non_finite', np.full((120, 2), np.nan), 'NaN or Inf'),
    ('visual', 'non_finite',
     np.concatenate([np.zeros((59, 3)), [[0, np.inf, 0]]]),
     'first at time 59, channel 1'),
    ('visual', 'empty', np.zeros((0, 3)), 'zero-length'),
    ('audio', 'wrong_shape', np.zeros((120, 2, 1)), '2-D'),
    ('visual', 'unreadable', b'not an array', 'not a readable .npy'),
    ('visual', 'unreadable', b'\x93NUMPY\x01\x00v\x00{', 'not a readable'),
    ('audio', 'length_mismatch', np.zeros((80, 2)),
     '80 audio frames but 60 visual frames at 25 fps make 120'),
    ('visual', 'length_mismatch', np.zeros((30, 3)),
     '30 visual frames but train/000001.mp4 has video_frames = 60'),
])
def test_feature_problems(tmp_path, which, kind, array, expected):
  root = str(tmp_path)
  config, records = _dataset(root)
  record = records[1]
  path = dict(zip(('visual', 'audio'), _paths(root, config, record)))[which]
  if array is None:
    os.remove(path)
  elif isinstance(array, bytes):
    with open(path, 'wb') as f:
      f.write(array)
  else:
    np.save(path, array)
  report = validation.validate_dataset(root, config, records)
  # A shorter visual also disagrees with the audio: one problem per file.
  assert all(p.file == record.file for p in report.problems)
  [problem] = [p for p in report.problems if p.path == path]
  assert problem.kind == kind
  assert path in problem.message and expected in problem.message
  assert report.bad_files == {record.file}
  assert path in report.summary()


def test_lengths_within_tolerance(tmp_path):
  root = str(tmp_path)
  config, records = _dataset(root)
  visual, audio = _paths(root, config, records[1])
  # 60 frames: visual within 10% + 2 frames, audio (120) too.
  np.save(visual, np.zeros((67, 3)))
  np.save(audio, np.zeros((145, 2)))  # 67 * 2 = 134 +- 15.4.
  assert validation.validate_dataset(root, config, records).problems == []
  config.length_tolerance = 0.0
  kinds = [p.kind for p in validation.validate_dataset(root, config,
                                                       records).problems]
  assert kinds == ['length_mismatch', 'length_mismatch']


def test_audio_rate_of_the_layout_or_config(tmp_path):
  root = str(tmp_path)
  # UMMAFormer's audio is 12.5 per second: 60 frames -> 30.
  config, records = _dataset(root, _config('ummaformer'), audio_rate=12.5)
  assert validation.validate_dataset(root, config, records).problems == []
  config.audio_rate = 50.0
  report = validation.validate_dataset(root, config, records)
  assert {p.kind for p in report.problems} == {'length_mismatch'}
  assert len(report.bad_files) == 4
  assert 'dataset.audio_rate = 50' in report.problems[0].message
  # 'generic' has no rate: no check unless dataset.audio_rate is set.
  generic = tmp_path / 'generic'
  config, records = _dataset(str(generic), _config('generic'),
                             audio_rate=7.0)
  assert validation.validate_dataset(str(generic), config,
                                     records).problems == []
  config.audio_rate = 7.0
  assert validation.validate_dataset(str(generic), config,
                                     records).problems == []
  config.audio_rate = 50.0
  assert len(validation.validate_dataset(str(generic), config,
                                         records).problems) == 4


def test_ummaformer_flow(tmp_path):
  root = str(tmp_path)
  config = _config('ummaformer', visual_dim=6, use_flow=True)
  config, records = _dataset(root, config, audio_rate=12.5)
  assert validation.validate_dataset(root, config, records).problems == []
  rgb, flow = formats.video_feature_paths(root, config, 'train', '000001')[0]
  np.save(flow, np.zeros((50, 3)))
  problem = _only(validation.validate_dataset(root, config, records),
                  'length_mismatch')
  assert problem.path == flow and rgb in problem.message
  np.save(flow, np.zeros((60, 6)))
  problem = _only(validation.validate_dataset(root, config, records),
                  'wrong_width')
  assert 'expects 3 per file (rgb + flow)' in problem.message
  os.remove(flow)
  problem = _only(validation.validate_dataset(root, config, records),
                  'missing_feature')
  assert problem.path == flow


def test_orphan_features(tmp_path):
  root = str(tmp_path)
  config, records = _dataset(root)
  orphan = f'{root}/feats/audio_context/test/999999.npy'
  _save(orphan, np.zeros((4, 2)))
  # Files of a split not validated are not orphans.
  _save(f'{root}/feats/tsn/rgb/dev/000009.npy', np.zeros((4, 3)))
  problem = _only(validation.validate_dataset(root, config, records),
                  'orphan_feature')
  assert problem.file == problem.path == orphan
  assert "no record of split 'test' has video id '999999'" in problem.message
  report = validation.validate_dataset(root, config, records)
  assert report.bad_files == set()
  # Only the test split: the train files are not looked at.
  test = [r for r in records if r.split == 'test']
  assert _only(validation.validate_dataset(root, config, test),
               'orphan_feature').path == orphan


def test_nested_ids_and_generic_layout(tmp_path):
  # AV-Deepfake1M ids keep the clip directories.
  root = str(tmp_path / 'av1m')
  config = _config('ummaformer')
  records = [_record(f'id0/{clip}/{v}.mp4', split, frames=50,
                     video_id=f'id0/{clip}/{v}')
             for clip, v, split in (('clip/00001', 'real', 'train'),
                                    ('clip/00001', 'fake_video_real_audio',
                                     'train'),
                                    ('clip/00003', 'real', 'val'))]
  for r in records:
    _write_features(root, config, r, 12.5)
  assert validation.validate_dataset(root, config, records).problems == []
  orphan = f'{root}/feats/byola/train/id0/clip/00002/real.npy'
  _save(orphan, np.zeros((4, 2)))
  problem = _only(validation.validate_dataset(root, config, records),
                  'orphan_feature')
  assert "video id 'id0/clip/00002/real'" in problem.message
  # 'generic' has one directory for all splits: the same id in two splits
  # is one file, and every split's records name its files.
  root = str(tmp_path / 'generic')
  config = _config('generic')
  records = [_record('train/000001.mp4', 'train'),
             _record('test/000002.mp4', 'test')]
  for r in records:
    _write_features(root, config, r)
  assert validation.validate_dataset(root, config, records).problems == []
  report = validation.validate_dataset(root, config, records[:1])
  assert [p.kind for p in report.problems] == ['orphan_feature'] * 2
  clash = records + [_record('test/000001.mp4', 'test')]
  report = validation.validate_dataset(root, config, clash)
  assert [p.kind for p in report.problems] == ['duplicate_id'] * 2
  assert report.bad_files == {'train/000001.mp4', 'test/000001.mp4'}
  assert 'test/000001.mp4' in report.problems[0].message
  # In 'mdp' the two are in different split directories: no clash.
  root = str(tmp_path / 'mdp')
  for r in clash:
    _write_features(root, _config(), r)
  assert validation.validate_dataset(root, _config(), clash).problems == []


def test_duplicates(tmp_path):
  root = str(tmp_path)
  config, records = _dataset(root)
  twice = records + [records[2]]
  report = validation.validate_dataset(root, config, twice)
  assert [p.kind for p in report.problems] == ['duplicate_id'] * 2
  assert all(p.file == 'test/000002.mp4' and '2 metadata entries' in
             p.message for p in report.problems)
  # Another file with the same id in the same split reads the same features.
  same_id = records + [_record('test/other/000002.avi', 'test', frames=40)]
  report = validation.validate_dataset(root, config, same_id)
  assert [p.kind for p in report.problems] == ['duplicate_id'] * 2
  visual, _ = _paths(root, config, records[2])
  assert all(p.path == visual for p in report.problems)
  assert "video id '000002'" in report.problems[0].message
  assert report.bad_files == {'test/000002.mp4', 'test/other/000002.avi'}


@pytest.mark.parametrize('field,segments,expected', [
    ('fake_segments', [[1.0, 2.5]], '[1, 2.5] s is not inside the video of '
     '2 s'),
    ('visual_segments', [[-0.5, 0.5]], 'visual_segments [-0.5, 0.5]'),
    ('audio_segments', [[1.5, 1.0]], 'audio_segments [1.5, 1]'),
    ('fake_segments', [[0.1, 0.2], [1.0, 2.2], [1.5, 3.0]],
     '(2 such segments)'),
])
def test_segments_outside(tmp_path, field, segments, expected):
  root = str(tmp_path)
  config, records = _dataset(root)
  seg = np.asarray(segments, np.float32)
  records[0] = formats.VideoRecord(**{
      **{k: getattr(records[0], k) for k in (
          'file', 'video_id', 'split', 'label', 'duration', 'video_frames',
          'fps', 'fake_segments', 'visual_segments', 'audio_segments')},
      field: seg})
  problem = _only(validation.validate_dataset(root, config, records),
                  'segment_outside')
  assert problem.file == 'train/000000.mp4' and problem.path == ''
  assert problem.message.startswith('train/000000.mp4: ')
  assert expected in problem.message
  # Within the tolerance (0.1 s by default) past the end is fine.
  records[0] = _record('train/000000.mp4', 'train', formats.LABEL_BOTH, 50,
                       [[1.0, 2.08]])
  assert validation.validate_dataset(root, config, records).problems == []
  config.segment_tolerance_s = 0.0
  _only(validation.validate_dataset(root, config, records), 'segment_outside')


def test_summary_lists_the_first_twenty(tmp_path):
  root = str(tmp_path)
  config = _config()
  records = [_record(f'train/{i:06d}.mp4', 'train') for i in range(25)]
  report = validation.validate_dataset(root, config, records)
  assert len(report.problems) == 50  # Visual and audio of each.
  assert len(report.bad_files) == 25
  summary = report.summary()
  assert summary.startswith('Dataset validation: 50 problems; 25 of 25 '
                            'videos have one.')
  assert 'missing_feature 50' in summary
  assert 'The first 20:' in summary and '... and 30 more (50 in all).' in (
      summary)
  listed = [line for line in summary.splitlines() if '[missing_feature]' in
            line]
  assert len(listed) == 20
  assert listed[0].endswith(
      f"{root}/feats/tsn/rgb/train/000000.npy: feature file not found; "
      "expected it for train/000000.mp4 (dataset.layout = 'mdp').")
  report = validation.validate_dataset(root, config, records[:2],
                                       max_listed=3)
  assert 'The first 3:' in report.summary()
  assert '... and 1 more (4 in all).' in report.summary()


def test_check_or_skip(tmp_path):
  root = str(tmp_path / 'data')
  config, records = _dataset(root)
  os.remove(_paths(root, config, records[3])[1])
  _save(f'{root}/feats/tsn/rgb/train/123.npy', np.zeros((3, 3)))
  report = validation.validate_dataset(root, config, records)
  report_path = str(tmp_path / 'out' / 'validation.json')
  with pytest.raises(ValueError) as e:
    validation.check_or_skip(report, False, report_path)
  message = str(e.value)
  assert message.startswith(report.summary())
  assert 'dataset.skip_invalid=True' in message and report_path in message
  assert not os.path.exists(report_path)

  validation.check_or_skip(report, True, report_path)
  with open(report_path) as f:
    written = json.load(f)
  assert written['num_problems'] == 2 and written['num_records'] == 4
  assert written['bad_files'] == ['test/000003.mp4']
  assert [p['kind'] for p in written['problems']] == ['missing_feature',
                                                      'orphan_feature']
  assert set(written['problems'][0]) == {'file', 'path', 'kind', 'message'}
  assert os.listdir(tmp_path / 'out') == ['validation.json']  # No temp file.
  # Written again: replaced whole.
  report.problems = report.problems[:1]
  validation.check_or_skip(report, True, report_path)
  with open(report_path) as f:
    assert json.load(f)['num_problems'] == 1


def test_real_widths(tmp_path):
  root = str(tmp_path)
  config = _config(visual_dim=2048, audio_dim=1024)
  records = [_record(f'dev/{i:06d}.mp4', 'dev', frames=8) for i in range(3)]
  for r in records:
    _write_features(root, config, r)
  assert validation.validate_dataset(root, config, records).problems == []
  config.audio_dim = 768
  report = validation.validate_dataset(root, config, records)
  assert [p.kind for p in report.problems] == ['wrong_width'] * 3
  assert 'feature width is 1024 but dataset.audio_dim = 768' in (
      report.problems[0].message)


def test_bad_config(tmp_path):
  with pytest.raises(ValueError, match='dataset.layout'):
    validation.validate_dataset(str(tmp_path), _config('tsn'), [])
  with pytest.raises(ValueError, match='dataset.use_flow'):
    validation.validate_dataset(str(tmp_path), _config(use_flow=True), [])
