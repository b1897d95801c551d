"""Tests of input_pipeline/pipeline.py: deterministic train and eval data."""

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import batch_testing

from configs import default
from input_pipeline import formats
from input_pipeline import pipeline


def tiny_config():
  config = default.get_config()
  config.seed = 3
  config.batch_size = 4
  config.eval.batch_size = 4
  config.dataset.num_frames = 40
  config.dataset.eval_length_buckets = (32, 64)
  config.dataset.visual_dim = 8
  config.dataset.audio_dim = 4
  syn = config.dataset.synthetic
  syn.num_train = 16
  syn.num_test = 8
  syn.min_duration_s = 1.0
  syn.max_duration_s = 3.0
  return config


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  config = tiny_config()
  workdir = str(tmp_path_factory.mktemp('workdir'))
  train, root = pipeline.get_records(config, workdir, 'train')
  test, test_root = pipeline.get_records(config, workdir, 'test')
  assert root == test_root and root.startswith(f'{workdir}/data/synthetic-')
  assert len(train) == 16 and len(test) == 8
  assert all(r.split == 'test' for r in test)
  return config, train, test, root


def test_lavdf_reads_a_dataset_in_lavdf_layout(data):
  config, train, _, root = data
  # The synthetic dataset is in LAV-DF's layout, so it reads as LAV-DF.
  lavdf = tiny_config()
  lavdf.dataset.name = 'lavdf'
  lavdf.dataset.root = root
  records, lavdf_root = pipeline.get_records(lavdf, '/nonexistent', 'train')
  assert lavdf_root == root and records == train
  lavdf.dataset.root = ''
  with pytest.raises(ValueError, match='dataset.root'):
    pipeline.get_records(lavdf, '/nonexistent', 'train')
  lavdf.dataset.root = root
  with pytest.raises(ValueError, match="split 'dev'"):
    pipeline.get_records(lavdf, '/nonexistent', 'dev')
  del config


@pytest.mark.parametrize('sampling', ['crop', 'bins'])
def test_train_shapes_and_masks(data, sampling):
  config, train, _, root = data
  config = config.copy_and_resolve_references()
  config.dataset.train_sampling = sampling
  ds = pipeline.create_train_dataset(config, train, root)
  for step, batch in enumerate(batch_testing.take(ds, 6)):
    assert batch['visual'].shape == (4, 40, 8)
    assert batch['audio'].shape == (4, 40, 4)
    assert batch['mask'].shape == (4, 40)
    assert batch['label'].shape == (4,)
    assert batch['visual'].dtype == np.float32
    assert batch['audio'].dtype == np.float32
    assert batch['mask'].dtype == np.float32
    assert batch['label'].dtype == np.int32
    index = pipeline.train_indices(config.seed, len(train), 4, step)
    np.testing.assert_array_equal(batch['label'],
                                  [train[i].label for i in index])
    lengths = np.array([train[i].video_frames for i in index])
    if sampling == 'crop':
      np.testing.assert_array_equal(batch['mask'].sum(1),
                                    np.minimum(lengths, 40))
      # Padding is zero.
      assert not (batch['visual'] * (1 - batch['mask'][..., None])).any()
    else:
      assert (batch['mask'] == 1).all()


def test_train_crop_is_a_window_of_aligned_features(data):
  config, train, _, root = data
  batches = batch_testing.take(pipeline.create_train_dataset(config, train, root), 4)
  for step, batch in enumerate(batches):
    index = pipeline.train_indices(config.seed, len(train), 4, step)
    for row, i in enumerate(index):
      visual, audio = pipeline.load_aligned(config, root, train[i])
      n = int(batch['mask'][row].sum())
      # The audio was aligned to the full video before cropping.
      starts = [s for s in range(len(visual) - n + 1)
                if np.array_equal(visual[s:s + n], batch['visual'][row, :n])]
      assert len(starts) == 1
      s = starts[0]
      np.testing.assert_array_equal(batch['audio'][row, :n], audio[s:s + n])
      np.testing.assert_array_equal(
          audio, formats.align_audio(
              np.load(formats.feature_paths(root, 'mdp', 'train',
                                            train[i].video_id)[1]),
              len(visual), 'avg_pool'))


def test_bin_frames_matches_mdp_bins():
  rng = np.random.default_rng(0)
  for length, t in [(100, 7), (7, 20), (20, 20), (41, 40), (1, 5)]:
    for _ in range(20):
      idx = pipeline.bin_frames(rng, length, t)
      assert idx.shape == (t,)
      assert ((0 <= idx) & (idx < length)).all()
      if length == t:
        np.testing.assert_array_equal(idx, np.arange(t))
        continue
      # MDP random_perturb: bin i from floor(i L / T) to the next bin's start
      # (inclusive); the last bin to L - 1.
      samples = np.arange(t) * length / t
      for i in range(t):
        lo = int(samples[i])
        if i < t - 1:
          hi = int(samples[i + 1]) if int(samples[i + 1]) != lo else lo
        else:
          hi = length - 1 if lo < length - 1 else lo
        assert lo <= idx[i] <= hi


def test_train_is_deterministic_and_resumable(data):
  config, train, _, root = data
  first = batch_testing.take(pipeline.create_train_dataset(config, train, root), 7)
  again = batch_testing.take(pipeline.create_train_dataset(config, train, root), 7)
  batch_testing.assert_batches_equal(first, again)
  resumed = batch_testing.take(
      pipeline.create_train_dataset(config, train, root, start_step=3), 4)
  batch_testing.assert_batches_equal(first[3:], resumed)
  other_seed = config.copy_and_resolve_references()
  other_seed.seed = 4
  different = batch_testing.take(pipeline.create_train_dataset(other_seed, train, root), 1)
  assert not np.array_equal(first[0]['visual'], different[0]['visual'])


def test_start_step_loads_nothing_before_it(data):
  config, train, _, root = data
  # Records 0..15 are only read by the steps that use them: replace every
  # record not used at step 1000 with a missing file.
  index = set(pipeline.train_indices(config.seed, len(train), 4, 1000))
  broken = [r if i in index else dataclasses.replace(r, video_id='missing')
            for i, r in enumerate(train)]
  batch = batch_testing.take(pipeline.create_train_dataset(config, broken, root,
                                              start_step=1000), 1)[0]
  full = batch_testing.take(pipeline.create_train_dataset(config, train, root,
                                             start_step=1000), 1)[0]
  batch_testing.assert_batches_equal([batch], [full])


def test_processes_concatenate_to_the_global_batch(data):
  config, train, _, root = data
  single = batch_testing.take(pipeline.create_train_dataset(config, train, root), 5)
  per_process = [
      batch_testing.take(pipeline.create_train_dataset(config, train, root,
                                          process_index=p, process_count=2),
            5) for p in range(2)
  ]
  for step in range(5):
    for k in single[step]:
      np.testing.assert_array_equal(
          single[step][k],
          np.concatenate([per_process[0][step][k], per_process[1][step][k]]))
  assert per_process[0][0]['visual'].shape == (2, 40, 8)


def test_train_indices_epochs():
  # 10 records, global batch 4: every epoch is a permutation of all records.
  order = np.concatenate(
      [pipeline.train_indices(0, 10, 4, s) for s in range(10)])
  for epoch in range(4):
    assert sorted(order[epoch * 10:(epoch + 1) * 10]) == list(range(10))
  assert not np.array_equal(order[:10], order[10:20])
  two = [pipeline.train_indices(0, 10, 4, 7, p, 2) for p in range(2)]
  np.testing.assert_array_equal(np.concatenate(two),
                                pipeline.train_indices(0, 10, 4, 7))


def test_train_errors(data):
  config, train, _, root = data
  bad = config.copy_and_resolve_references()
  bad.batch_size = 6
  with pytest.raises(ValueError, match='batch_size = 6'):
    pipeline.create_train_dataset(bad, train, root, process_index=0,
                                  process_count=4)
  bad = config.copy_and_resolve_references()
  bad.dataset.train_sampling = 'uniform'
  with pytest.raises(ValueError, match='dataset.train_sampling'):
    pipeline.create_train_dataset(bad, train, root)
  bad = config.copy_and_resolve_references()
  bad.dataset.audio_align = 'nearest'
  with pytest.raises(ValueError, match='dataset.audio_align'):
    pipeline.create_train_dataset(bad, train, root)
  bad = config.copy_and_resolve_references()
  bad.dataset.layout = 'umma'
  with pytest.raises(ValueError, match='dataset.layout'):
    pipeline.create_train_dataset(bad, train, root)
  bad = config.copy_and_resolve_references()
  bad.dataset.name = 'kinetics'
  with pytest.raises(ValueError, match='dataset.name'):
    pipeline.get_records(bad, '/tmp', 'train')


def test_missing_features_name_the_file(data):
  config, train, _, root = data
  broken = [dataclasses.replace(r, video_id='nope') for r in train]
  ds = pipeline.create_train_dataset(config, broken, root)
  with pytest.raises(tf.errors.OpError, match=r'feats/tsn/rgb/train/nope.npy'):
    batch_testing.take(ds, 1)


def _eval_batches(config, records, root, process_index=0, process_count=1):
  batches, num = pipeline.create_eval_dataset(
      config, records, root, process_index=process_index,
      process_count=process_count)
  out = list(batches)
  assert len(out) == num == len(batches)
  return out


def test_eval_covers_every_record_once(data):
  config, _, test, root = data
  batches = _eval_batches(config, test, root)
  seen = []
  for batch in batches:
    b, length = batch['mask'].shape
    assert b == 4 and length in (32, 64, 128)
    assert batch['visual'].shape == (4, length, 8)
    assert batch['audio'].shape == (4, length, 4)
    assert batch['label'].dtype == np.int32
    assert batch['index'].dtype == np.int32
    assert batch['valid'].dtype == np.float32
    np.testing.assert_array_equal(batch['valid'], batch['index'] >= 0)
    for row, i in enumerate(batch['index']):
      if i < 0:
        assert not batch['mask'][row].any() and not batch['visual'][row].any()
        continue
      seen.append(i)
      record = test[i]
      n = record.video_frames
      assert pipeline.bucket_length(n, (32, 64)) == length
      np.testing.assert_array_equal(batch['mask'][row],
                                    np.arange(length) < n)
      assert batch['label'][row] == record.label
      visual, audio = pipeline.load_aligned(config, root, record)
      np.testing.assert_array_equal(batch['visual'][row, :n], visual)
      np.testing.assert_array_equal(batch['audio'][row, :n], audio)
      assert not batch['visual'][row, n:].any()
  assert sorted(seen) == list(range(len(test)))
  # Buckets in increasing length, indices increasing within one.
  lengths = [b['mask'].shape[1] for b in batches]
  assert lengths == sorted(lengths)
  # Re-iterable: a second pass gives the same batches.
  again, _ = pipeline.create_eval_dataset(config, test, root)
  batch_testing.assert_batches_equal(list(again), batches)


def test_eval_processes(data):
  config, _, test, root = data
  single = _eval_batches(config, test, root)
  per_process = [_eval_batches(config, test, root, p, 2) for p in range(2)]
  assert len(per_process[0]) == len(per_process[1]) == len(single)
  for step, batch in enumerate(single):
    for k in batch:
      np.testing.assert_array_equal(
          batch[k], np.concatenate([per_process[0][step][k],
                                    per_process[1][step][k]]), err_msg=k)
  with pytest.raises(ValueError, match='eval.batch_size = 4'):
    pipeline.create_eval_dataset(config, test, root, process_count=3)


def test_eval_plan():
  lengths = [10, 70, 5, 64, 65, 300, 33]
  plan = pipeline.eval_plan(lengths, (64, 32), 2)
  assert [(n, list(i)) for n, i in plan] == [
      (32, [0, 2]), (64, [3, 6]), (128, [1, 4]), (320, [5, -1])]
  plan = pipeline.eval_plan(lengths, (64, 32), 4)
  assert [(n, list(i)) for n, i in plan] == [
      (32, [0, 2, -1, -1]), (64, [3, 6, -1, -1]), (128, [1, 4, -1, -1]),
      (320, [5, -1, -1, -1])]
  assert pipeline.eval_plan([], (32,), 2) == []


_EXIT_SCRIPT = '''
import sys, time
sys.path.insert(0, {repo!r})
from configs import default
from input_pipeline import formats, pipeline
{setup}
config = default.get_config()
config.dataset.visual_dim, config.dataset.audio_dim = 8, 4
config.dataset.num_frames = 40
records = formats.read_lavdf_metadata({root!r} + '/metadata.json', ['train'])
load = pipeline.load_aligned

def slow_load(*args):
  time.sleep(0.2)
  return load(*args)

pipeline.load_aligned = slow_load
ds = pipeline.create_train_dataset(config, records, {root!r})
it = ds.as_numpy_iterator()
next(it)
print('exiting', flush=True)
'''


def test_interpreter_exits_while_loading(data):
  """Exit with tf.data threads inside numpy functions does not hang."""
  _, _, _, root = data
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  script = _EXIT_SCRIPT.format(repo=repo, root=root, setup='')
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  result = subprocess.run([sys.executable, '-c', script], env=env,
                          capture_output=True, text=True, timeout=90)
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'exiting' in result.stdout


def test_buffer_pool_reuses_only_free_buffers():
  pool = pipeline._BufferPool(2)
  a = pool.empty((4, 8), np.float16)
  assert a.ctypes.data % pipeline._TENSOR_ALIGN == 0
  address = a.ctypes.data
  b = pool.empty((4, 8), np.float16)
  assert b.ctypes.data != address  # `a` is in use.
  view = a[1:]
  del a
  assert pool.empty((4, 8), np.float16).ctypes.data not in (
      address, b.ctypes.data)  # A view of `a` keeps it in use.
  del view
  assert pool.empty((4, 8), np.float16).ctypes.data == address
  # Another shape: a buffer of its own.
  assert pool.empty((2, 8), np.float16).ctypes.data != address


def test_held_batches_are_never_overwritten(data):
  # Batch buffers are reused once free: batches a consumer keeps (here all
  # 10, while the pipeline prefetches more) stay as they were made.
  config, train, _, root = data
  held = batch_testing.take(pipeline.create_train_dataset(config, train, root),
                            10)
  for step in (0, 4, 9):
    batch_testing.assert_batches_equal(
        held[step:step + 1],
        batch_testing.take(pipeline.create_train_dataset(
            config, train, root, start_step=step), 1))
