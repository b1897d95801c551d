"""Tests of input_pipeline/record_file.py: indexed reads of ArrayRecord shards,
checked against ArrayRecordReader."""

import os

from array_record.python import array_record_module
import numpy as np
import pytest
import tensorflow as tf

from input_pipeline import record_file

_OPTIONS = 'group_size:1,uncompressed'


def write_shard(path, records, options=_OPTIONS, features=None):
  """Writes `records` (bytes) and, for the default options, their index with
  two features per record: its first and second half."""
  writer = array_record_module.ArrayRecordWriter(str(path), options)
  for r in records:
    writer.write(r)
  writer.close()
  if features is None:
    features = [[0, len(r) // 2, len(r) // 2, len(r) - len(r) // 2]
                for r in records]
  if options == _OPTIONS:
    record_file.write_index(str(path), np.array(features, np.int64))
  return str(path)


def random_records(rng, sizes):
  return [rng.integers(0, 256, int(s), dtype=np.uint8).tobytes()
          for s in sizes]


def check_shard(path, records, rng, num_slices):
  """Every record, and random byte ranges of its features, as written."""
  reader = array_record_module.ArrayRecordReader(path)
  shard = record_file.RecordFile.open(path, len(records), 2)
  assert shard is not None
  for i, r in enumerate(records):
    assert reader.read([i])[0] == r
    assert shard.read(i).tobytes() == r
  for _ in range(num_slices):
    i, k = int(rng.integers(len(records))), int(rng.integers(2))
    offset, size = shard.feature(i, k)
    start = int(rng.integers(size + 1))
    stop = int(rng.integers(start, size + 1))
    out = np.full(stop - start, 7, np.uint8)
    shard.read_feature(i, k, start, out)
    assert out.tobytes() == records[i][offset + start:offset + stop]


@pytest.mark.parametrize('low,high,num', [(1, 200, 300),
                                          (1, 300_000, 40)])
def test_reads_match_array_record_reader(tmp_path, low, high, num):
  # Small records put many chunks in one block; large ones span blocks.
  rng = np.random.default_rng(low + high)
  records = random_records(rng, rng.integers(low, high, num))
  path = write_shard(tmp_path / 'shard', records)
  check_shard(path, records, rng, 200)


def test_every_position_around_a_block_boundary(tmp_path):
  # The second chunk starts at each position from 220 bytes before the first
  # block boundary to 40 after: its header, its size varints and its record
  # each cut by the block header at every offset, and chunks ending exactly
  # on the boundary.
  rng = np.random.default_rng(0)
  tail = random_records(rng, [5, 70_000, 3, record_file.USABLE_BLOCK_SIZE, 1])
  for first in range(65_536 - 260, 65_536):
    records = [bytes(first)] + tail
    check_shard(write_shard(tmp_path / 'shard', records), records, rng, 4)


def test_feature_rows_of_any_dtype(tmp_path):
  rng = np.random.default_rng(1)
  visual = rng.standard_normal((300, 24)).astype(np.float16)
  audio = rng.standard_normal((300, 8)).astype(np.float32)
  head = b'x' * 13  # Odd offsets: the features are not aligned in the file.
  record = head + visual.tobytes() + audio.tobytes()
  path = write_shard(tmp_path / 'shard', [record], features=[
      [len(head), visual.nbytes, len(head) + visual.nbytes, audio.nbytes]])
  shard = record_file.RecordFile.open(path, 1, 2)
  rows = np.empty((100, 24), np.float16)
  shard.read_feature(0, 0, 50 * 48, rows)
  np.testing.assert_array_equal(rows, visual[50:150])
  out = np.zeros((3, 8), np.float32)
  shard.read_feature(0, 1, 297 * 32, out)
  np.testing.assert_array_equal(out, audio[297:])
  with pytest.raises(ValueError, match=r'has 9600 bytes; bytes 9568\.\.9632'):
    shard.read_feature(0, 1, 299 * 32, out[:2])
  with pytest.raises(ValueError, match='C-contiguous'):
    shard.read_feature(0, 0, 0, rows[:, :12])


def test_other_layouts_have_no_index(tmp_path):
  rng = np.random.default_rng(2)
  records = random_records(rng, [1000] * 20)
  for options in ('group_size:1', 'group_size:4,uncompressed'):
    path = write_shard(tmp_path / options.replace(':', '_'), records, options)
    # Compressed, or several records per chunk: not readable by offsets.
    assert record_file.index_records(path, len(records)) is None
    with pytest.raises(ValueError, match='cannot index it'):
      record_file.write_index(path, np.zeros((20, 4), np.int64))
    # No index file: the caller reads with ArrayRecordReader.
    assert record_file.RecordFile.open(path, len(records), 2) is None
  assert record_file.RecordFile.open('gs://bucket/shard', 1, 2) is None


def test_damaged_shards_fail_clearly(tmp_path):
  rng = np.random.default_rng(3)
  records = random_records(rng, [200_000] * 3)
  path = write_shard(tmp_path / 'shard', records)
  with pytest.raises(ValueError, match=r'index of shape \(3, 6\).*\[>= 4, 6\]'):
    record_file.RecordFile.open(path, 4, 2)
  with pytest.raises(ValueError, match='index of shape'):
    record_file.RecordFile.open(path, 3, 3)
  os.truncate(path, 300_000)
  with pytest.raises(ValueError, match='past the end of the file'):
    record_file.RecordFile.open(path, 3, 2)


def test_truncated_after_opening(tmp_path):
  rng = np.random.default_rng(4)
  records = random_records(rng, [200_000] * 3)
  path = write_shard(tmp_path / 'shard', records)
  shard = record_file.RecordFile.open(path, 3, 2)
  os.truncate(path, 400_000)
  with pytest.raises(ValueError, match='inside a record; the prepared data '
                     'is truncated'):
    shard.read(2)


def test_example_bytes_features():
  visual = np.arange(12, dtype=np.float32).tobytes()
  example = tf.train.Example(features=tf.train.Features(feature={
      'a/value': tf.train.Feature(bytes_list=tf.train.BytesList(
          value=[visual])),
      'n': tf.train.Feature(int64_list=tf.train.Int64List(value=[3, 300])),
      'b/value': tf.train.Feature(bytes_list=tf.train.BytesList(
          value=[b'', b'second'])),
      'f': tf.train.Feature(float_list=tf.train.FloatList(value=[1.5])),
  }))
  serialized = example.SerializeToString()
  for buf in (serialized, np.frombuffer(serialized, np.uint8)):
    got = record_file.example_bytes_features(buf, ['a/value', 'b/value',
                                                   'n', 'missing'])
    assert set(got) == {'a/value', 'b/value'}  # 'n' holds no bytes.
    offset, size = got['a/value']
    assert serialized[offset:offset + size] == visual
    assert got['b/value'][1] == 0  # The first value.
  with pytest.raises(ValueError, match='not a serialized tf.train.Example'):
    record_file.example_bytes_features(b'\x0f\x00', ['a/value'])
