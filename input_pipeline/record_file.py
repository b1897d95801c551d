"""Reads prepared ArrayRecord shards with `preadv`, straight into batches.

`ArrayRecordReader.read` copies a record twice, hashes it and allocates
fresh buffers: on a 2-core VM, 1.4-2.5 ms of CPU per 3 MB video, and then the
pipeline copies the frames it samples into the batch. `RecordFile` instead
reads the sampled rows of a video's features from the file into the batch
rows with one `preadv` (the kernel's copy is the only one), from an index
written beside each shard when it is prepared (`write_index`).

It reads the shards the TFDS builder writes (one record per chunk, no
compression: `tfds_builder._ARRAY_RECORD_OPTIONS`), whose layout is the
documented Riegeli/records file format (github.com/google/riegeli,
doc/riegeli_records_file_format.md) that ArrayRecord files follow:

- a 24-byte block header at every multiple of 64 KiB, interrupting whatever
  spans it; the bytes between are the file's *content*;
- chunks, each a 40-byte header (`data_size` at byte 8, `chunk_type` at 24,
  `num_records` in the 7 bytes after it, `decoded_data_size` at 32), then
  `data_size` bytes of data, then padding up to `chunk_end`;
- a simple chunk ('r') of one uncompressed record: data = compression type
  0, varint64 size of the sizes, the sizes (one varint64: the record's size),
  then the record's bytes.

`index_records` walks a shard's chunk headers and checks each against the
format. The chunks' data hashes are not checked (that is what makes the
read cheap): damage inside a record's bytes goes unnoticed here, while
truncation and sizes that disagree with the index raise.
"""

import os
from typing import Optional, Sequence, Union

import numpy as np

BLOCK_SIZE = 1 << 16
BLOCK_HEADER_SIZE = 24
USABLE_BLOCK_SIZE = BLOCK_SIZE - BLOCK_HEADER_SIZE
CHUNK_HEADER_SIZE = 40
_SIGNATURE = 0x73
_SIMPLE = 0x72
# The compression type and two varint64s after a chunk header.
_DATA_PREFIX = 1 + 10 + 10
# Buffers per preadv call, under Linux's IOV_MAX (1024).
_MAX_IOVECS = 1000
# Where block headers land. Shared by all threads: nobody reads it.
_DISCARD = memoryview(bytearray(BLOCK_HEADER_SIZE))

# Suffix of a shard's index file (`write_index`).
INDEX_SUFFIX = '.wmmt_index.npy'
# Index columns: the record's first content byte (file position), its size,
# then (offset in the record, size) of each feature's bytes.
_RECORD_COLUMNS = 2


def _num_overhead_blocks(pos: int, size: int) -> int:
  return (size + (pos + USABLE_BLOCK_SIZE - 1) % BLOCK_SIZE) // USABLE_BLOCK_SIZE


def add_with_overhead(pos: int, size: int) -> int:
  """File position `size` content bytes after `pos`, past block headers."""
  return pos + size + _num_overhead_blocks(pos, size) * BLOCK_HEADER_SIZE


def _round_up_to_possible_chunk_boundary(pos: int) -> int:
  remaining = BLOCK_SIZE - 1 - (pos + BLOCK_SIZE - 1) % BLOCK_SIZE
  return pos + max(remaining - (USABLE_BLOCK_SIZE - 1), 0)


def chunk_end(chunk_begin: int, data_size: int, num_records: int) -> int:
  """Where the chunk beginning at `chunk_begin` ends (the format's rule)."""
  return max(add_with_overhead(chunk_begin, CHUNK_HEADER_SIZE + data_size),
             _round_up_to_possible_chunk_boundary(chunk_begin + num_records))


def content_index(pos):
  """Content index of the byte at file position `pos` (not in a header)."""
  return pos - BLOCK_HEADER_SIZE * (pos // BLOCK_SIZE + 1)


def file_position(index):
  """File position of the content byte `index` (inverse of content_index)."""
  return index + BLOCK_HEADER_SIZE * (index // USABLE_BLOCK_SIZE + 1)


def varint(buf, pos: int) -> tuple[int, int]:
  """(value, position after) of the varint64 at `buf[pos]` (protobuf)."""
  result = shift = 0
  while pos < len(buf) and shift < 64:
    byte = buf[pos]
    pos += 1
    result |= (byte & 0x7F) << shift
    if byte < 0x80:
      return result, pos
    shift += 7
  raise ValueError(f'truncated or overlong varint at byte {pos}')


def _fields(buf, start: int, end: int):
  """(field number, value start, value end) of a message's length-delimited
  fields (protobuf wire format); other wire types are skipped."""
  pos = start
  while pos < end:
    key, pos = varint(buf, pos)
    wire = key & 7
    if wire == 2:
      size, pos = varint(buf, pos)
      if pos + size > end:
        raise ValueError(f'not a serialized tf.train.Example (a field of '
                         f'{size} bytes at byte {pos} overruns its message).')
      yield key >> 3, pos, pos + size
      pos += size
    elif wire == 0:
      _, pos = varint(buf, pos)
    elif wire in (1, 5):
      pos += 8 if wire == 1 else 4
    else:
      raise ValueError(f'not a serialized tf.train.Example (wire type '
                       f'{wire} at byte {pos}).')


def example_bytes_features(serialized: Union[bytes, np.ndarray],
                           keys: Sequence[str]) -> dict[str, tuple[int, int]]:
  """(offset, size) of the first bytes value of each named feature.

  Walks the tf.train.Example wire format (Example.features = 1;
  Features.feature = 1, map entries of key = 1, value = 2; Feature.bytes_list
  = 1; BytesList.value = 1) without copying the values: the features of a
  real-width video are megabytes, and parsing the message would copy them
  twice. Keys not found (or without bytes) are left out.
  """
  # Indexing a memoryview gives ints for bytes and uint8 arrays alike.
  serialized = memoryview(serialized).cast('B')
  wanted = {k.encode(): k for k in keys}
  out = {}
  for field, start, end in _fields(serialized, 0, len(serialized)):
    if field != 1:
      continue
    for entry_field, entry_start, entry_end in _fields(serialized, start, end):
      if entry_field != 1:
        continue
      key = value = None
      for f, s, e in _fields(serialized, entry_start, entry_end):
        if f == 1:
          key = bytes(serialized[s:e])
        elif f == 2:
          value = (s, e)
      if key not in wanted or value is None:
        continue
      for f, s, e in _fields(serialized, *value):
        if f == 1:  # bytes_list
          for g, vs, ve in _fields(serialized, s, e):
            if g == 1:
              out[wanted[key]] = (vs, ve - vs)
              break
  return out


def _pread_content(fd: int, pos: int, size: int, file_size: int) -> bytes:
  """Up to `size` content bytes from file position `pos` on, fewer at the
  end of the file (small reads of chunk headers while indexing)."""
  out = bytearray()
  while len(out) < size and pos < file_size:
    if pos % BLOCK_SIZE == 0:
      pos += BLOCK_HEADER_SIZE
    got = os.pread(fd, min(size - len(out), BLOCK_SIZE - pos % BLOCK_SIZE),
                   pos)
    if not got:
      break
    out += got
    pos += len(got)
  return bytes(out)


def index_records(path: str, num_records: int
                  ) -> Optional[tuple[np.ndarray, np.ndarray]]:
  """(starts, sizes) `[num_records]` int64 of the first records of a shard.

  `starts` are file positions of each record's first byte. Returns None if
  the file does not hold them as one uncompressed record per simple chunk
  (other ArrayRecord options).
  """
  fd = os.open(path, os.O_RDONLY)
  try:
    return _index_records(fd, os.fstat(fd).st_size, num_records)
  finally:
    os.close(fd)


def _index_records(fd: int, file_size: int, num_records: int):
  starts = np.empty(num_records, np.int64)
  sizes = np.empty(num_records, np.int64)
  pos, found = 0, 0
  while found < num_records:
    head = _pread_content(fd, pos, CHUNK_HEADER_SIZE + _DATA_PREFIX, file_size)
    if len(head) < CHUNK_HEADER_SIZE:
      return None
    data_size = int.from_bytes(head[8:16], 'little')
    chunk_type = head[24]
    chunk_records = int.from_bytes(head[25:32], 'little')
    decoded_size = int.from_bytes(head[32:40], 'little')
    end = chunk_end(pos, data_size, chunk_records)
    if end > file_size or (pos == 0 and chunk_type != _SIGNATURE):
      return None
    if chunk_type == _SIMPLE:
      if chunk_records != 1 or data_size < 2 or head[CHUNK_HEADER_SIZE] != 0:
        return None  # Several records per chunk, or compressed.
      try:
        sizes_size, at = varint(head, CHUNK_HEADER_SIZE + 1)
        record_size, after = varint(head, at)
      except ValueError:
        return None
      values = at + sizes_size - CHUNK_HEADER_SIZE  # Offset in the data.
      if (after - at != sizes_size or record_size != decoded_size or
          values + record_size != data_size):
        return None
      first = content_index(add_with_overhead(pos, CHUNK_HEADER_SIZE) - 1) + 1
      starts[found] = file_position(first + values)
      sizes[found] = record_size
      found += 1
    elif chunk_type != _SIGNATURE and chunk_records:
      return None  # Records in a chunk of another kind (transposed).
    pos = end
  return starts, sizes


def write_index(path: str, features: np.ndarray):
  """Writes the index of the shard at `path` (`path + INDEX_SUFFIX`).

  Args:
    path: a finished local shard, one uncompressed record per chunk.
    features: `[N, 2 F]` int64, per record the (offset, size) of each of F
      features' bytes within the record.

  Raises:
    ValueError: the shard is not laid out as `RecordFile` reads.
  """
  index = index_records(path, len(features))
  if index is None:
    raise ValueError(f'{path}: not one uncompressed record per chunk; '
                     'cannot index it.')
  table = np.column_stack([index[0], index[1],
                           np.asarray(features, np.int64)])
  with open(path + INDEX_SUFFIX, 'wb') as f:
    np.save(f, table)


class RecordFile:
  """Random access to an indexed shard (`write_index`); thread-safe.

  Attributes:
    path: the shard.
    index: `[N, 2 + 2 F]` int64: record start, record size, then (offset,
      size) of each feature's bytes.
  """

  def __init__(self, path: str, index: np.ndarray):
    self.path = path
    self.index = index
    self._fd = os.open(path, os.O_RDONLY)
    size = os.fstat(self._fd).st_size
    if len(index) and add_with_overhead(int(index[-1, 0]),
                                        int(index[-1, 1])) > size:
      os.close(self._fd)
      raise ValueError(f'{path}: its index reaches past the end of the file '
                       f'({size} bytes); the prepared data is truncated, '
                       'delete it to prepare again.')

  @classmethod
  def open(cls, path: str, num_records: int,
           num_features: int) -> Optional['RecordFile']:
    """The shard with its index, or None where there is none (remote files,
    shards written without one).

    Args:
      path: the shard.
      num_records: records the index must cover (at least).
      num_features: F, the features indexed per record.
    """
    if '://' in path or not os.path.exists(path + INDEX_SUFFIX):
      return None
    index = np.load(path + INDEX_SUFFIX)
    columns = _RECORD_COLUMNS + 2 * num_features
    if (index.ndim != 2 or index.shape[1] != columns or
        len(index) < num_records or index.dtype != np.int64):
      raise ValueError(f'{path}{INDEX_SUFFIX}: index of shape {index.shape} '
                       f'{index.dtype}, expected [>= {num_records}, {columns}] '
                       'int64; the prepared data is damaged, delete it to '
                       'prepare again.')
    return cls(path, index)

  def read(self, i: int) -> np.ndarray:
    """Record i's bytes, `[size]` uint8, in a new buffer."""
    out = np.empty(int(self.index[i, 1]), np.uint8)
    self._read_content(content_index(int(self.index[i, 0])), out)
    return out

  def feature(self, i: int, k: int) -> tuple[int, int]:
    """(offset in the record, size) of feature k's bytes in record i."""
    return (int(self.index[i, _RECORD_COLUMNS + 2 * k]),
            int(self.index[i, _RECORD_COLUMNS + 2 * k + 1]))

  def read_feature(self, i: int, k: int, start: int, out: np.ndarray):
    """Bytes [start, start + out.nbytes) of feature k of record i into out.

    `out` is C-contiguous, of any dtype (e.g. rows of a batch): the file's
    bytes land there with no other copy.
    """
    offset, size = self.feature(i, k)
    if not out.flags.c_contiguous:
      raise ValueError('read_feature: out must be C-contiguous.')
    if start < 0 or start + out.nbytes > size:
      raise ValueError(f'{self.path}: record {i} feature {k} has {size} '
                       f'bytes; bytes {start}..{start + out.nbytes} asked.')
    self._read_content(content_index(int(self.index[i, 0])) + offset + start,
                       out.reshape(-1).view(np.uint8))

  def _read_content(self, first: int, out: np.ndarray):
    """The content bytes from content index `first` on into `out` (uint8):
    one preadv per `_MAX_IOVECS` / 2 blocks, block headers diverted to
    `_DISCARD`."""
    view = memoryview(out)
    size = len(view)
    done = min(size, USABLE_BLOCK_SIZE - first % USABLE_BLOCK_SIZE)
    buffers = [view[:done]]
    while done < size:
      take = min(size - done, USABLE_BLOCK_SIZE)
      buffers += (_DISCARD[:BLOCK_HEADER_SIZE], view[done:done + take])
      done += take
    pos = file_position(first)
    for a in range(0, len(buffers), _MAX_IOVECS):
      group = buffers[a:a + _MAX_IOVECS]
      nbytes = sum(map(len, group))
      self._readv(group, pos, nbytes)
      pos += nbytes

  def _readv(self, buffers: list, pos: int, nbytes: int):
    """preadv of `buffers` from `pos`, finishing short reads."""
    got = os.preadv(self._fd, buffers, pos)
    if got == nbytes:
      return
    for buf in buffers:
      size = len(buf)
      while got < size:
        done = max(got, 0)
        more = os.preadv(self._fd, [buf[done:]], pos + done)
        if more <= 0:
          raise ValueError(f'{self.path}: the file ends at byte {pos + done}, '
                           'inside a record; the prepared data is truncated, '
                           'delete it to prepare again.')
        got = done + more
      pos += size
      got -= size

  def close(self):
    if self._fd >= 0:
      os.close(self._fd)
      self._fd = -1

  def __del__(self):
    try:
      self.close()
    except (AttributeError, TypeError, OSError):
      pass  # At interpreter exit, `os` may be gone already.
