"""Tests of input_pipeline/prepare.py and tfds_builder.py: prepared records."""

import glob
import os
import shutil
import socket
import subprocess
import sys

from etils import epath
import ml_dtypes
import numpy as np
import pytest
import tensorflow_datasets as tfds

import batch_testing

from configs import default
from input_pipeline import formats
from input_pipeline import pipeline
from input_pipeline import prepare
from input_pipeline import record_file
from input_pipeline import tfds_builder

_HALF = {'float16': np.float16, 'bfloat16': ml_dtypes.bfloat16}


def tiny_config(record_dtype='float32'):
  config = default.get_config('tiny')
  config.dataset.record_dtype = record_dtype
  return config


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('workdir'))


@pytest.fixture(scope='module')
def prepared(workdir):
  """{record_dtype: data_dir} of the tiny synthetic dataset."""
  return {dtype: prepare.ensure_prepared(tiny_config(dtype), workdir)
          for dtype in ('float32', 'float16', 'bfloat16')}


def test_float32_round_trip_is_exact(workdir, prepared):
  config = tiny_config()
  assert len(set(prepared.values())) == 3  # The dtype names the directory.
  for split in ('train', 'test'):
    records, root = pipeline.get_records(config, workdir, split)
    source = prepare.PreparedSource(prepared['float32'], split)
    # Every record field, in metadata order, without reading an example.
    assert source.records == records
    for stored, record in zip(source.records, records):
      for k in ('fake_segments', 'visual_segments', 'audio_segments'):
        np.testing.assert_array_equal(getattr(stored, k), getattr(record, k))
    npy = pipeline.NpySource(config, records, root)
    np.testing.assert_array_equal(source.lengths(), npy.lengths())
    for i in range(len(records)):
      visual, audio = source.load(i)
      expected = pipeline.load_aligned(config, root, records[i])
      assert visual.dtype == audio.dtype == np.float32
      np.testing.assert_array_equal(visual, expected[0])
      np.testing.assert_array_equal(audio, expected[1])


@pytest.mark.parametrize('dtype', ['float16', 'bfloat16'])
def test_half_precision_round_trip(workdir, prepared, dtype):
  config = tiny_config()
  records, root = pipeline.get_records(config, workdir, 'test')
  source = prepare.PreparedSource(prepared[dtype], 'test')
  assert source.dtype == np.dtype(_HALF[dtype])
  for i in range(len(records)):
    visual, audio = source.load(i)
    for got, want in zip((visual, audio),
                         pipeline.load_aligned(config, root, records[i])):
      assert got.dtype == _HALF[dtype]
      # Exactly the rounded float32 features ...
      np.testing.assert_array_equal(got, want.astype(_HALF[dtype]))
      # ... so within half a unit in the last place.
      eps = float(ml_dtypes.finfo(_HALF[dtype]).eps)
      np.testing.assert_allclose(got.astype(np.float32), want, rtol=eps,
                                 atol=1e-6)


@pytest.mark.parametrize('sampling', ['crop', 'bins'])
def test_records_pipeline_matches_npy_pipeline(workdir, prepared, sampling):
  config = tiny_config()
  config.dataset.train_sampling = sampling
  records, root = pipeline.get_records(config, workdir, 'train')
  source = prepare.PreparedSource(prepared['float32'], 'train', records)
  for start_step in (0, 1000):
    batch_testing.assert_batches_equal(
        batch_testing.take(pipeline.create_train_dataset(config, source,
                                            start_step=start_step), 4),
        batch_testing.take(pipeline.create_train_dataset(config, records, root,
                                            start_step=start_step), 4))
  per_process = batch_testing.take(pipeline.create_train_dataset(
      config, source, process_index=1, process_count=2), 2)
  assert per_process[0]['visual'].shape == (2, 32, 8)


def test_records_eval_matches_npy_eval(workdir, prepared):
  config = tiny_config()
  records, root = pipeline.get_records(config, workdir, 'test')
  source = prepare.PreparedSource(prepared['float32'], 'test', records)
  batches, num = pipeline.create_eval_dataset(config, source)
  npy_batches, npy_num = pipeline.create_eval_dataset(config, records, root)
  assert num == npy_num == len(list(batches))
  batch_testing.assert_batches_equal(list(batches), list(npy_batches))


def test_records_are_read_through_their_index(workdir, prepared, tmp_path):
  config = tiny_config('float16')
  config.dataset.train_sampling = 'bins'
  source = prepare.PreparedSource(prepared['float16'], 'train')
  # Without shard indices (shards written by other means): ArrayRecordReader
  # and the example walk give the same batches.
  copy = tmp_path / 'copy'
  shutil.copytree(prepared['float16'], copy)
  indices = glob.glob(f'{copy}/**/*{record_file.INDEX_SUFFIX}',
                      recursive=True)
  assert indices
  for path in indices:
    os.remove(path)
  fallback = prepare.PreparedSource(str(copy), 'train')
  batch_testing.assert_batches_equal(
      batch_testing.take(pipeline.create_train_dataset(config, source), 3),
      batch_testing.take(pipeline.create_train_dataset(config, fallback), 3))
  for i in range(len(source.records)):
    for got, want in zip(source.load(i), fallback.load(i)):
      np.testing.assert_array_equal(got, want)
  readers = [r for r in source._readers if r is not None]
  assert readers and all(isinstance(r, record_file.RecordFile)
                         for r in readers)
  assert not any(isinstance(r, record_file.RecordFile)
                 for r in fallback._readers)


def test_load_into_any_frames(workdir, prepared):
  source = prepare.PreparedSource(prepared['float16'], 'test')
  length = source.length(0)
  visual, audio = source.load(0)
  rng = np.random.default_rng(0)
  for frames in (np.arange(length), np.arange(2, length - 1), [length - 1],
                 np.sort(rng.integers(0, length, 2 * length)),
                 rng.permutation(length)[:5], [3, 3, 1]):
    frames = np.asarray(frames)
    out_v = np.full((len(frames) + 1, visual.shape[1]), 9, visual.dtype)
    out_a = np.full((len(frames) + 1, audio.shape[1]), 9, audio.dtype)
    assert source.load_into(0, lambda n, f=frames: f, out_v, out_a) == len(
        frames)
    np.testing.assert_array_equal(out_v[:-1], visual[frames])
    np.testing.assert_array_equal(out_a[:-1], audio[frames])
    assert (out_v[-1] == 9).all() and (out_a[-1] == 9).all()
  with pytest.raises(ValueError, match=f'frames 0..{length} asked of a '
                     f'video of {length}'):
    source.load_into(0, lambda n: np.arange(n + 1), out_v, out_a)


def test_half_precision_batches_keep_their_dtype(workdir, prepared):
  config = tiny_config()
  config.dataset.train_sampling = 'bins'
  records, root = pipeline.get_records(config, workdir, 'train')
  source = prepare.PreparedSource(prepared['float16'], 'train')
  half = batch_testing.take(pipeline.create_train_dataset(config, source), 3)
  full = batch_testing.take(pipeline.create_train_dataset(config, records, root), 3)
  for h, f in zip(half, full):
    assert h['visual'].dtype == h['audio'].dtype == np.float16
    np.testing.assert_array_equal(h['visual'], f['visual'].astype(np.float16))
    np.testing.assert_array_equal(h['mask'], f['mask'])
    np.testing.assert_array_equal(h['label'], f['label'])


def test_batch_buffers_are_aligned():
  # TensorFlow takes aligned numpy outputs without a copy.
  for shape, dtype in [((3, 5, 7), np.float16), ((1,), ml_dtypes.bfloat16),
                       ((32, 500, 64), np.float32)]:
    x = pipeline._aligned_empty(shape, dtype)
    assert x.shape == shape and x.dtype == dtype and x.flags.c_contiguous
    assert x.ctypes.data % pipeline._TENSOR_ALIGN == 0


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_batches_of_each_dtype(workdir, prepared, dtype):
  config = tiny_config()
  config.dataset.train_sampling = 'bins'
  records, root = pipeline.get_records(config, workdir, 'train')
  source = prepare.PreparedSource(prepared[dtype], 'train')
  got = batch_testing.take(pipeline.create_train_dataset(config, source), 3)
  want = batch_testing.take(pipeline.create_train_dataset(config, records, root), 3)
  stored = np.float32 if dtype == 'float32' else _HALF[dtype]
  for g, w in zip(got, want):
    assert g['visual'].dtype == g['audio'].dtype == stored
    for k in ('visual', 'audio'):
      np.testing.assert_array_equal(g[k], w[k].astype(stored))
    for k in ('mask', 'label'):
      np.testing.assert_array_equal(g[k], w[k])
  test_records, _ = pipeline.get_records(config, workdir, 'test')
  batches, _ = pipeline.create_eval_dataset(
      config, prepare.PreparedSource(prepared[dtype], 'test'))
  npy_batches, _ = pipeline.create_eval_dataset(config, test_records, root)
  for g, w in zip(batches, npy_batches):
    np.testing.assert_array_equal(g['visual'], w['visual'].astype(stored))
    np.testing.assert_array_equal(g['index'], w['index'])


def test_subsets_read_no_examples(workdir, prepared, monkeypatch):
  config = tiny_config()
  records, root = pipeline.get_records(config, workdir, 'train')
  subset = [r for r in records if r.label in (0, 1)][::-1]

  def no_reads(self, i):
    raise AssertionError(f'read example {i}')

  # Records, lengths and the evaluation plan come from the metadata.
  monkeypatch.setattr(prepare.PreparedSource, 'read', no_reads)
  source = prepare.PreparedSource(prepared['float32'], 'train', subset)
  assert source.records == subset
  np.testing.assert_array_equal(
      source.lengths(), pipeline.NpySource(config, subset, root).lengths())
  monkeypatch.undo()
  np.testing.assert_array_equal(
      source.load(0)[0], pipeline.load_aligned(config, root, subset[0])[0])
  other = [r for r in pipeline.get_records(config, workdir, 'test')[0]]
  with pytest.raises(ValueError, match='not in the prepared data'):
    prepare.PreparedSource(prepared['float32'], 'train', other)
  with pytest.raises(ValueError, match="no split 'dev'"):
    prepare.PreparedSource(prepared['float32'], 'dev')


def test_tfds_load_and_data_source(workdir, prepared):
  records, _ = pipeline.get_records(tiny_config(), workdir, 'test')
  data_dir = prepared['float16']
  builder = tfds.builder('wmmt_features/synthetic_float16', data_dir=data_dir)
  assert set(builder.info.splits) == {'train', 'test'}
  source = builder.as_data_source('test')
  assert [source[i]['file'].decode() for i in range(len(source))] == [
      r.file for r in records]
  # PreparedSource finds the features in the serialized examples itself.
  ours = prepare.PreparedSource(data_dir, 'test')
  for i in range(len(source)):
    for k, x in zip(('visual', 'audio'), ours.load(i)):
      np.testing.assert_array_equal(x, source[i][k])
  loaded = list(tfds.load('wmmt_features/synthetic_float16',
                          data_dir=data_dir, split='test').as_numpy_iterator())
  assert len(loaded) == len(records)
  for i, example in enumerate(loaded):
    assert example['label'] == records[i].label
    assert example['visual'].dtype == np.float16
    np.testing.assert_array_equal(example['visual'], source[i]['visual'])
  data_source = tfds.data_source('wmmt_features/synthetic_float16',
                                 data_dir=data_dir, split='train')
  assert len(data_source) == 16


def test_tfds_build_command(workdir, tmp_path):
  """What `tfds build input_pipeline/tfds_builder.py ...` runs.

  The `tfds` launcher itself needs apache-beam (tensorflow/datasets#5463);
  its build command does not.
  """
  # pylint: disable-next=g-import-not-at-top
  from tensorflow_datasets.scripts.cli import build, cli_utils
  _, root = pipeline.get_records(tiny_config(), workdir, 'train')
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  build.Args(
      positional_datasets=[os.path.join(repo, 'input_pipeline',
                                        'tfds_builder.py')],
      paths=cli_utils.PathOptions(data_dir=epath.Path(tmp_path),
                                  manual_dir=epath.Path(root)),
      generation=cli_utils.GenerationOptions(config='synthetic')).execute()
  source = prepare.PreparedSource(str(tmp_path), 'test')
  # Widths come from the files.
  assert (source.visual_dim, source.audio_dim) == (8, 4)
  assert source.records == pipeline.get_records(tiny_config(), workdir,
                                                'test')[0]


def _fail_after(monkeypatch, n):
  """Makes the n+1-th video load fail (a crash in mid-preparation)."""
  calls = []
  load = tfds_builder.load_aligned_features

  def failing(*args):
    calls.append(1)
    if len(calls) > n:
      raise OSError('disk went away')
    return load(*args)

  monkeypatch.setattr(tfds_builder, 'load_aligned_features', failing)
  return calls


def _dead_pid():
  process = subprocess.Popen([sys.executable, '-c', ''])
  process.wait()
  return process.pid


def test_interrupted_preparation_is_never_read(tmp_path, monkeypatch):
  config = tiny_config()
  config.dataset.prepared_dir = str(tmp_path / 'prepared')
  workdir = str(tmp_path / 'w')
  _fail_after(monkeypatch, 10)
  with pytest.raises(OSError, match='disk went away'):
    prepare.ensure_prepared(config, workdir)
  # Nothing left: no final directory, no temporary one.
  assert os.listdir(tmp_path / 'prepared') == []
  # A preparer killed outright leaves its temporary directory; the next run
  # deletes it (its process is gone) and builds anew.
  final = prepare.prepared_path(
      config, pipeline.dataset_root(config, workdir))
  stale = f'{final}.tmp-{socket.gethostname()}-{_dead_pid()}-0123abcd'
  os.makedirs(f'{stale}/wmmt_features')
  monkeypatch.undo()
  assert prepare.ensure_prepared(config, workdir) == final
  assert os.listdir(tmp_path / 'prepared') == [os.path.basename(final)]
  assert len(prepare.PreparedSource(final, 'train').records) == 16


def test_preparation_is_reused(tmp_path, monkeypatch):
  config = tiny_config('float16')
  config.dataset.prepared_dir = str(tmp_path / 'prepared')
  workdir = str(tmp_path / 'w')
  first = prepare.ensure_prepared(config, workdir)
  marker = os.path.join(first, prepare.MARKER)
  mtime = os.stat(marker).st_mtime_ns
  calls = _fail_after(monkeypatch, 0)
  assert prepare.ensure_prepared(config, workdir) == first
  assert not calls and os.stat(marker).st_mtime_ns == mtime
  # A setting that changes the content prepares anew.
  config.dataset.audio_align = 'linear'
  monkeypatch.undo()
  assert prepare.ensure_prepared(config, workdir) != first


def test_invalid_videos_fail_or_are_skipped(tmp_path):
  pytest.importorskip('input_pipeline.validation')
  config = tiny_config()
  config.dataset.root = str(tmp_path / 'data')
  config.dataset.prepared_dir = str(tmp_path / 'prepared')
  records, root = pipeline.get_records(config, '', 'train')
  visual_path, _ = formats.feature_paths(root, 'mdp', 'train',
                                         records[3].video_id)
  bad = np.load(visual_path)
  bad[2, 1] = np.nan
  np.save(visual_path, bad)
  with pytest.raises(ValueError):
    prepare.ensure_prepared(config, '')
  assert os.listdir(tmp_path / 'prepared') == []
  config.dataset.skip_invalid = True
  data_dir = prepare.ensure_prepared(config, '')
  assert os.path.exists(os.path.join(data_dir,
                                     tfds_builder.VALIDATION_REPORT))
  kept = prepare.PreparedSource(data_dir, 'train').records
  assert [r.file for r in kept] == [r.file for r in records
                                    if r.file != records[3].file]
  # Reused without skip_invalid: refused, naming the report.
  config.dataset.skip_invalid = False
  with pytest.raises(ValueError, match='skip_invalid'):
    prepare.ensure_prepared(config, '')
