"""Deterministic tf.data input pipelines for training and evaluation.

Training: the examples of global step s are the slice `[s B, (s + 1) B)` of the
concatenation of per-epoch permutations drawn from `(seed, epoch)`, and the
random window of each example is drawn from `(seed, s, slot)`. The stream is
therefore a pure function of `(config.seed, step)`: resuming at any step is
exact and needs no data-iterator checkpoint, and process p of P simply takes
its contiguous sub-slice of each global batch.

Evaluation: videos at native length, padded to a few bucket lengths so the
model compiles a handful of shapes; every process runs the same number of
batches, with padding rows marked by `valid = 0` and `index = -1`.

Both read a `FeatureSource`: `NpySource` (a `.npy` file per video and
modality, the audio aligned on every read) or `prepare.PreparedSource`
(records written once, read by random access, features in the stored dtype).
Each batch is assembled in one numpy function, its videos loaded in a
thread pool (reads and `np.take` release the GIL), into aligned buffers that
tf.data takes without a copy; the batches are the same whatever the source
(for float32 records).
"""

import atexit
from concurrent import futures
import functools
import queue
import sys
import threading
import time
import types
from typing import Callable, Optional, Sequence, Union

import ml_collections
import numpy as np
import tensorflow as tf

from input_pipeline import formats
from input_pipeline import synthetic

# SeedSequence stream tags (second entropy word), keeping the order of
# examples and the windows independent; distinct from synthetic.py's tags, as
# `seed` and `synthetic.seed` are often equal (the training order must not
# repeat the permutation that assigned the synthetic classes).
_STREAM_ORDER = 11
_STREAM_WINDOW = 12
# Threads reading `.npy` headers to plan evaluation batches (I/O bound).
_NUM_HEADER_THREADS = 16
# Threads loading the videos of batches (at most `FeatureSource.load_threads`
# per batch): reads of files and records and np.take release the GIL.
_NUM_LOAD_THREADS = 16
# Batches assembled at the same time (on top of `dataset.prefetch`).
_BATCHES_IN_FLIGHT = 2
# TensorFlow's tensor alignment (EIGEN_MAX_ALIGN_BYTES).
_TENSOR_ALIGN = 64

_TRAIN_SAMPLINGS = ('crop', 'bins')
_AUDIO_ALIGNS = ('avg_pool', 'linear')


class _ExitGuard:
  """Lets the interpreter exit while tf.data threads run numpy functions.

  Python finalises after atexit hooks; a tf.data thread inside a
  `tf.numpy_function` at that point can never take the GIL back, and the
  iterator's destructor then waits for it forever: the process hangs instead
  of exiting (e.g. a script that ends, or fails, while batches of real-width
  features are still being loaded). The hook below runs before finalisation:
  from then on calls return placeholder outputs at once (nobody consumes them
  any more), and it waits until no call has run for a moment, which means
  the prefetch buffers are full and the tf.data threads idle.
  """

  _QUIET_S = 0.2
  _MAX_WAIT_S = 60.0

  def __init__(self):
    self._lock = threading.Lock()
    self._active = 0
    self._last_end = 0.0
    self._closing = False

  def call(self, fn, placeholder, *args):
    """fn(*args), or placeholder(*args) once the interpreter is exiting."""
    with self._lock:
      closing = self._closing
      self._active += 1
    try:
      return placeholder(*args) if closing else fn(*args)
    finally:
      with self._lock:
        self._active -= 1
        self._last_end = time.monotonic()

  def drain(self):
    with self._lock:
      self._closing = True
    deadline = time.monotonic() + self._MAX_WAIT_S
    while time.monotonic() < deadline:
      with self._lock:
        if (not self._active and
            time.monotonic() - self._last_end > self._QUIET_S):
          return
      time.sleep(0.01)


_EXIT_GUARD = _ExitGuard()
atexit.register(_EXIT_GUARD.drain)


class _RowLoaders:
  """Daemon threads that load the rows of batches.

  Not a concurrent.futures pool: its exit hook runs before `_ExitGuard`'s
  and refuses work that tf.data threads may still hand it. Daemon threads
  are left alone at exit, like tf.data's own.
  """

  def __init__(self, num_threads: int):
    self._tasks = queue.SimpleQueue()
    for i in range(num_threads):
      threading.Thread(target=self._work, name=f'wmmt_load_{i}',
                       daemon=True).start()

  def _work(self):
    while True:
      fn, arg, call = self._tasks.get()
      try:
        fn(arg)
      except BaseException as e:  # pylint: disable=broad-except
        call.errors.append(e)
      finally:
        call.done.release()

  def run(self, fn, num: int):
    """fn(i) for i < num, in the threads; raises the first error."""
    call = types.SimpleNamespace(done=threading.Semaphore(0), errors=[])
    for i in range(num):
      self._tasks.put((fn, i, call))
    for _ in range(num):
      call.done.acquire()
    if call.errors:
      raise call.errors[0]


_ROW_LOADERS = None
_ROW_LOADERS_LOCK = threading.Lock()


def _map_rows(fill, num_rows: int, num_tasks: int):
  """fill(row) for each row of a batch, `num_tasks` rows at a time.

  File and record reads and np.take release the GIL, so rows load in
  parallel. The first error propagates.
  """
  global _ROW_LOADERS
  with _ROW_LOADERS_LOCK:
    if _ROW_LOADERS is None:
      _ROW_LOADERS = _RowLoaders(_NUM_LOAD_THREADS)
  num_tasks = max(1, min(num_tasks, num_rows))

  def task(first):
    for row in range(first, num_rows, num_tasks):
      fill(row)

  _ROW_LOADERS.run(task, num_tasks)


def _aligned_view(raw: np.ndarray, shape: Sequence[int],
                  dtype: np.dtype) -> np.ndarray:
  """The `shape` array of `dtype` at the first aligned byte of `raw`."""
  nbytes = int(np.prod(shape)) * dtype.itemsize
  offset = -raw.ctypes.data % _TENSOR_ALIGN
  return raw[offset:offset + nbytes].view(dtype).reshape(shape)


def _aligned_empty(shape: Sequence[int], dtype) -> np.ndarray:
  """np.empty whose data starts at a `_TENSOR_ALIGN`-byte boundary.

  A numpy function's aligned outputs become tensors without a copy;
  misaligned ones (large numpy arrays start 16 bytes into a page) are
  copied element by element, at about 1 GB/s on a 2-core VM: for a batch of
  real-width features, longer than reading them.
  """
  dtype = np.dtype(dtype)
  raw = np.empty(int(np.prod(shape)) * dtype.itemsize + _TENSOR_ALIGN,
                 np.uint8)
  return _aligned_view(raw, shape, dtype)


class _BufferPool:
  """`_aligned_empty` that reuses one pipeline's buffers once free.

  The kernel zeroes every new page on first touch: for fresh batches of
  real-width features that is about a fifth of the training pipeline's CPU
  time. Batches reach tf.data without a copy, and every tensor and array
  made from one holds a reference to its buffer, so a buffer that only the
  pool refers to is free. At most `size` buffers are kept; when all are in
  use (a consumer holding many batches), new ones are allocated.
  """

  def __init__(self, size: int):
    self._size = size
    self._buffers = []
    self._lock = threading.Lock()

  def empty(self, shape: Sequence[int], dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize + _TENSOR_ALIGN
    with self._lock:
      for k in range(len(self._buffers)):
        raw = self._buffers[k]
        # Referred to by the list, `raw` and getrefcount's argument only.
        if raw.nbytes == nbytes and sys.getrefcount(raw) == 3:
          return _aligned_view(raw, shape, dtype)
      raw = np.empty(nbytes, np.uint8)
      if len(self._buffers) < self._size:
        self._buffers.append(raw)
      return _aligned_view(raw, shape, dtype)


def _map_batches(ds: tf.data.Dataset, batch_fn, placeholder, dtypes,
                 shapes: dict[str, list]) -> tf.data.Dataset:
  """Maps each key of `ds` to the batch dict that `batch_fn(key)` builds.

  `batch_fn` returns numpy arrays, in the order of `shapes` and with
  `dtypes`; allocated with `_aligned_empty`, the large ones reach tf.data
  without a copy. `placeholder(key)` stands in once the interpreter exits
  (`_ExitGuard`). `_BATCHES_IN_FLIGHT` batches are built at a time.
  """
  def build(key):
    out = tf.numpy_function(
        functools.partial(_EXIT_GUARD.call, batch_fn, placeholder), [key],
        [tf.as_dtype(d) for d in dtypes], stateful=False)
    return {name: tf.ensure_shape(x, shape)
            for (name, shape), x in zip(shapes.items(), out)}

  return ds.map(build, num_parallel_calls=_BATCHES_IN_FLIGHT,
                deterministic=True)


# Named subsets of a split, by video class (`dataset.train_subset`,
# `dataset.eval_subset`).
SUBSETS = {
    'all': (formats.LABEL_REAL, formats.LABEL_BOTH, formats.LABEL_VISUAL,
            formats.LABEL_AUDIO),
    # MDP's protocol: train on real and both-modified videos...
    'real_and_both': (formats.LABEL_REAL, formats.LABEL_BOTH),
    # ... and evaluate on the both-modified ones of LAV-DF dev.
    'both_modified': (formats.LABEL_BOTH,),
    # For visual-only methods: audio-only forgeries left out.
    'visual_only': (formats.LABEL_REAL, formats.LABEL_BOTH,
                    formats.LABEL_VISUAL),
}


def select_subset(records: Sequence[formats.VideoRecord], subset: str,
                  key: str = 'subset') -> list[formats.VideoRecord]:
  """The records whose class belongs to the named subset, in order.

  Args:
    records: the records of a split.
    subset: a key of `SUBSETS`.
    key: the config key named in errors.
  """
  if subset not in SUBSETS:
    raise ValueError(f'{key}: unknown subset {subset!r}; expected one of '
                     f'{tuple(SUBSETS)}.')
  labels = SUBSETS[subset]
  return [r for r in records if r.label in labels]


def dataset_root(config: ml_collections.ConfigDict, workdir: str) -> str:
  """The directory holding `config.dataset`'s metadata and features.

  The synthetic dataset is written on first use under `dataset.root` (or
  `{workdir}/data` if empty); 'lavdf' and 'avdeepfake1m' need `dataset.root`.
  """
  name = config.dataset.name
  if name == 'synthetic':
    return synthetic.ensure_synthetic_dataset(
        config.dataset.root or f'{workdir}/data', config)
  if name not in ('lavdf', 'avdeepfake1m'):
    raise ValueError(f"dataset.name: unknown dataset {name!r}; expected "
                     "'synthetic', 'lavdf' or 'avdeepfake1m'.")
  if not config.dataset.root:
    raise ValueError(f'dataset.root: set it to the {name} directory that '
                     'holds its metadata and feats/ (--config.dataset.root'
                     '=...).')
  return config.dataset.root


def metadata_path(config: ml_collections.ConfigDict, root: str,
                  split: str) -> str:
  """The metadata file of a split: LAV-DF's one `metadata.json` (also the
  synthetic dataset's), AV-Deepfake1M's `{split}_metadata.json`."""
  if config.dataset.name == 'avdeepfake1m':
    return f'{root}/{split}_metadata.json'
  return f'{root}/metadata.json'


def get_records(config: ml_collections.ConfigDict, workdir: str,
                split: str, subset: str = 'all',
                subset_key: str = 'subset',
               ) -> tuple[list[formats.VideoRecord], str]:
  """The records of one split and the dataset root their features live in.

  For `dataset.name == 'synthetic'` the dataset is written on first use under
  `dataset.root` (or `{workdir}/data` if empty); for 'lavdf', `dataset.root`
  holds LAV-DF's `metadata.json`, for 'avdeepfake1m' its
  `{train,val}_metadata.json`, and the features in `dataset.layout`.
  `subset` (a key of `SUBSETS`) keeps the videos of some classes only;
  `subset_key` is the config key that named it, for errors.
  """
  root = dataset_root(config, workdir)
  path = metadata_path(config, root, split)
  if config.dataset.name == 'avdeepfake1m':
    records = formats.read_avdeepfake1m_metadata(path, splits=[split])
  else:
    records = formats.read_lavdf_metadata(path, splits=[split])
  if not records:
    raise ValueError(f'{path}: no entries with split {split!r} '
                     '(dataset.train_split / dataset.eval_split).')
  selected = select_subset(records, subset, subset_key)
  if not selected:
    raise ValueError(f'{subset_key}={subset!r}: none of the {len(records)} '
                     f'videos of split {split!r} in {path} belongs to it.')
  return selected, root


def _per_process(global_size: int, process_index: int, process_count: int,
                 key: str) -> int:
  """Per-process share of a global batch; errors name the config key."""
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f'process_index = {process_index} must be in '
                     f'[0, process_count = {process_count}).')
  if global_size < 1 or global_size % process_count:
    raise ValueError(f'{key} = {global_size} must be a positive multiple of '
                     f'the number of processes ({process_count}).')
  return global_size // process_count


def _check_dataset_config(config: ml_collections.ConfigDict):
  """Fails at construction, not inside tf.data, on bad dataset settings."""
  ds = config.dataset
  formats.feature_paths('', ds.layout, 'train', 'x')  # Checks dataset.layout.
  if ds.audio_align not in _AUDIO_ALIGNS:
    raise ValueError(f'dataset.audio_align: unknown method '
                     f'{ds.audio_align!r}; expected one of {_AUDIO_ALIGNS}.')
  if ds.num_frames < 1:
    raise ValueError(f'dataset.num_frames = {ds.num_frames}: expected >= 1.')
  if config.seed < 0:
    raise ValueError(f'seed = {config.seed}: expected an integer >= 0.')


def load_aligned(config: ml_collections.ConfigDict, root: str,
                 record: formats.VideoRecord) -> tuple[np.ndarray, np.ndarray]:
  """One video's features, audio aligned to the visual length.

  Returns:
    visual `[T_v, Dv]` float32 and audio `[T_v, Da]` float32 (resampled in
    time with `dataset.audio_align`); see `formats.load_video_features`.
  """
  return formats.load_video_features(root, config.dataset, record.split,
                                     record.video_id)


class FeatureSource:
  """Where the pipelines read each video's features from.

  Two implementations: `NpySource` (one `.npy` file per video and modality,
  aligned on every read) and `prepare.PreparedSource` (ArrayRecord examples
  written once by `prepare.ensure_prepared`).

  Attributes:
    records: the videos; pipeline indices point into this list.
    dtype: numpy dtype of the features `load` returns; the batches carry it
      (float16 / bfloat16 records stay half width until the device).
    visual_dim: Dv.
    audio_dim: Da.
    load_threads: videos of a batch loaded at a time.
  """

  records: Sequence[formats.VideoRecord]
  dtype: np.dtype = np.dtype(np.float32)
  visual_dim: int
  audio_dim: int
  # Many: `.npy` reads from remote storage mostly wait.
  load_threads: int = _NUM_LOAD_THREADS

  def length(self, i: int) -> int:
    """Native visual length T_v of video i."""
    raise NotImplementedError

  def lengths(self) -> np.ndarray:
    """`[N]` native lengths of all videos (plans evaluation batches)."""
    return np.array([self.length(i) for i in range(len(self.records))],
                    np.int64)

  def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
    """visual `[T_v, Dv]` and audio `[T_v, Da]` (aligned), in `dtype`."""
    raise NotImplementedError

  def load_into(self, i: int, frames_for: Callable[[int], np.ndarray],
                visual_out: np.ndarray, audio_out: np.ndarray) -> int:
    """Copies some frames of video i into the first rows of the outputs.

    Args:
      i: the video.
      frames_for: T_v -> `[n]` frame indices in [0, T_v), in any order.
      visual_out: `[>= n, Dv]` in `dtype`, C-contiguous.
      audio_out: `[>= n, Da]` in `dtype`, C-contiguous.

    Returns:
      n; rows n and beyond are left as they were.
    """
    visual, audio = self.load(i)
    frames = frames_for(visual.shape[0])
    n = len(frames)
    # The indices are in range; 'clip' spares numpy a temporary, and
    # np.take runs outside the GIL.
    np.take(visual, frames, axis=0, out=visual_out[:n], mode='clip')
    np.take(audio, frames, axis=0, out=audio_out[:n], mode='clip')
    return n


class NpySource(FeatureSource):
  """Per-video `.npy` files in `dataset.layout`, aligned on every read."""

  def __init__(self, config: ml_collections.ConfigDict,
               records: Sequence[formats.VideoRecord], root: str):
    self.records = list(records)
    self.visual_dim = config.dataset.visual_dim
    self.audio_dim = config.dataset.audio_dim
    self._config = config
    self._root = root

  def length(self, i: int) -> int:
    return feature_lengths(self._config, self._root, self.records[i:i + 1])[0]

  def lengths(self) -> np.ndarray:
    return np.array(feature_lengths(self._config, self._root, self.records),
                    np.int64)

  def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
    # Looked up at call time: tests replace `load_aligned`.
    return load_aligned(self._config, self._root, self.records[i])


def as_source(config: ml_collections.ConfigDict, records_or_source,
              root: Optional[str]) -> FeatureSource:
  """A FeatureSource as is, or records + root as an `NpySource`."""
  if isinstance(records_or_source, FeatureSource):
    if root is not None:
      raise ValueError('root is only used with a list of records; a '
                       'FeatureSource knows where its features are.')
    return records_or_source
  if root is None:
    raise ValueError('A list of records needs the dataset root its .npy '
                     'features live in (or pass a FeatureSource).')
  return NpySource(config, records_or_source, root)


@functools.lru_cache(maxsize=8)
def _epoch_permutation(seed: int, num_records: int, epoch: int) -> np.ndarray:
  perm = np.random.default_rng([seed, _STREAM_ORDER, epoch]).permutation(
      num_records)
  perm.flags.writeable = False
  return perm


def train_indices(seed: int, num_records: int, global_batch_size: int,
                  step: int, process_index: int = 0,
                  process_count: int = 1) -> np.ndarray:
  """Record indices of one process's share of global batch `step`.

  Global example k = step * B + slot is entry `k % num_records` of the
  permutation of epoch `k // num_records`; process p takes slots
  `[p b, (p + 1) b)` with b = B / P. Pure arithmetic: skipping steps loads
  nothing.

  Returns:
    `[b]` int64 indices into the records.
  """
  b = global_batch_size // process_count
  k = step * global_batch_size + process_index * b + np.arange(b)
  epochs, positions = np.divmod(k, num_records)
  out = np.empty(b, np.int64)
  for epoch in np.unique(epochs):
    sel = epochs == epoch
    out[sel] = _epoch_permutation(seed, num_records, int(epoch))[positions[sel]]
  return out


def bin_frames(rng: np.random.Generator, length: int,
               num_frames: int) -> np.ndarray:
  """MDP's `random_perturb`: one random frame in each of T bins, `[T]`.

  Bin i starts at floor(i L / T); its frame is uniform in [start_i,
  start_{i+1}] (MDP includes the next bin's start), the last bin's in
  [start, L - 1]. Videos shorter than T repeat frames; L == T is the identity.
  """
  if length == num_frames:
    return np.arange(num_frames)
  start = (np.arange(num_frames) * length) // num_frames
  high = np.empty_like(start)
  high[:-1] = start[1:]
  high[-1] = max(start[-1], length - 1)
  return rng.integers(start, high + 1)


def train_frames(length: int, num_frames: int, sampling: str,
                 rng: np.random.Generator) -> np.ndarray:
  """Frames of one training example: `[n]` indices into `[0, length)`.

  'crop': a random window of T frames if length > T, else the whole video
  (n = length < T: the example is zero-padded to T); 'bins': `bin_frames`
  (n = T). Draws from `rng` exactly as `train_window`.
  """
  if sampling == 'bins':
    return bin_frames(rng, length, num_frames)
  if sampling != 'crop':
    raise ValueError(f'dataset.train_sampling: unknown sampling {sampling!r}; '
                     f'expected one of {_TRAIN_SAMPLINGS}.')
  if length >= num_frames:
    start = int(rng.integers(0, length - num_frames + 1))
    return np.arange(start, start + num_frames)
  return np.arange(length)


def train_window(visual: np.ndarray, audio: np.ndarray, num_frames: int,
                 sampling: str, rng: np.random.Generator):
  """Cuts one training example of exactly T frames (numpy reference).

  Args:
    visual: `[L, Dv]` features.
    audio: `[L, Da]` features aligned to the visual length.
    num_frames: T.
    sampling: 'crop' = a random window of T frames if L > T, else the whole
      video zero-padded; 'bins' = `bin_frames` (mask all ones).
    rng: the example's generator.

  Returns:
    visual `[T, Dv]`, audio `[T, Da]`, mask `[T]` float32 (1 = real frame).
  """
  idx = train_frames(visual.shape[0], num_frames, sampling, rng)
  return _pad_to(visual[idx], audio[idx], num_frames)


def _pad_to(visual: np.ndarray, audio: np.ndarray, length: int):
  """Zero-pads `[L, D]` features to `length`; returns (visual, audio, mask)."""
  n = visual.shape[0]
  pad = ((0, length - n), (0, 0))
  mask = np.zeros(length, np.float32)
  mask[:n] = 1.0
  return np.pad(visual, pad), np.pad(audio, pad), mask


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  return options


def create_train_dataset(
    config: ml_collections.ConfigDict,
    source: Union[FeatureSource, Sequence[formats.VideoRecord]],
    root: Optional[str] = None, *, start_step: int = 0, process_index: int = 0,
    process_count: int = 1) -> tf.data.Dataset:
  """Infinite training batches of this process, starting at `start_step`.

  Args:
    config: reads `seed`, `batch_size` (global) and `dataset.*`.
    source: the training videos: a FeatureSource (e.g.
      `prepare.PreparedSource`), or a list of records whose `.npy` features
      live under `root`.
    root: dataset root, with a list of records only.
    start_step: global step of the first batch (resume); nothing earlier is
      loaded.
    process_index: this process.
    process_count: number of processes.

  Returns:
    A dataset of dicts, b = batch_size / process_count, T =
    `dataset.num_frames`: `visual` `[b, T, Dv]` and `audio` `[b, T, Da]` in
    `source.dtype` (float32 for `.npy` and float32 records), `mask` `[b, T]`
    float32 (1 = real frame, 0 = padding), `label` `[b]` int32.
  """
  _check_dataset_config(config)
  b = _per_process(config.batch_size, process_index, process_count,
                   'batch_size')
  ds_config = config.dataset
  if ds_config.train_sampling not in _TRAIN_SAMPLINGS:
    raise ValueError(f'dataset.train_sampling: unknown sampling '
                     f'{ds_config.train_sampling!r}; expected one of '
                     f'{_TRAIN_SAMPLINGS}.')
  source = as_source(config, source, root)
  if not source.records:
    raise ValueError('create_train_dataset: no training records.')
  num_records = len(source.records)
  labels = np.array([r.label for r in source.records], np.int32)
  seed, global_batch, t = config.seed, config.batch_size, ds_config.num_frames
  sampling = ds_config.train_sampling
  dims, dtype = (source.visual_dim, source.audio_dim), source.dtype

  # Batches alive at once: being built, prefetched, and held by the
  # consumer (the current and the next step's).
  pool = _BufferPool(2 * (_BATCHES_IN_FLIGHT + ds_config.prefetch + 3))

  def batch_fn(step):
    step = int(step)
    index = train_indices(seed, num_records, global_batch, step,
                          process_index, process_count)
    visual = pool.empty((b, t, dims[0]), dtype)
    audio = pool.empty((b, t, dims[1]), dtype)
    mask = np.zeros((b, t), np.float32)

    def fill(row):
      # Drawn from (seed, step, global slot): the same window whatever the
      # process count, and exact on resume.
      slot = process_index * b + row
      rng = np.random.default_rng([seed, _STREAM_WINDOW, step, slot])
      n = source.load_into(
          int(index[row]),
          lambda length: train_frames(length, t, sampling, rng),
          visual[row], audio[row])
      visual[row, n:] = 0
      audio[row, n:] = 0
      mask[row, :n] = 1.0

    _map_rows(fill, b, source.load_threads)
    return visual, audio, mask, labels[index]

  def placeholder(step):
    del step
    return (np.zeros((b, t, dims[0]), dtype), np.zeros((b, t, dims[1]), dtype),
            np.zeros((b, t), np.float32), np.zeros(b, np.int32))

  shapes = dict(visual=[b, t, dims[0]], audio=[b, t, dims[1]], mask=[b, t],
                label=[b])
  dtypes = [dtype, dtype, np.float32, np.int32]
  ds = tf.data.Dataset.counter(start_step, dtype=tf.int64)
  ds = _map_batches(ds, batch_fn, placeholder, dtypes, shapes)
  return ds.prefetch(ds_config.prefetch).with_options(_options())


def bucket_length(length: int, buckets: Sequence[int]) -> int:
  """Smallest bucket >= length; beyond the largest, a multiple of it."""
  buckets = sorted(buckets)
  for bucket in buckets:
    if length <= bucket:
      return bucket
  return -(-length // buckets[-1]) * buckets[-1]


def eval_plan(lengths: Sequence[int], buckets: Sequence[int],
              global_batch_size: int) -> list[tuple[int, np.ndarray]]:
  """Global evaluation batches: [(padded length, `[B]` indices, -1 = pad)].

  Videos are grouped by bucket (shortest first), in index order within one;
  the last batch of a bucket is padded with -1.
  """
  padded = np.array([bucket_length(n, buckets) for n in lengths], np.int64)
  plan = []
  for length in np.unique(padded):
    members = np.flatnonzero(padded == length)
    num = -(-len(members) // global_batch_size)
    rows = np.full(num * global_batch_size, -1, np.int64)
    rows[:len(members)] = members
    for chunk in rows.reshape(num, global_batch_size):
      plan.append((int(length), chunk))
  return plan


def feature_lengths(config: ml_collections.ConfigDict, root: str,
                    records: Sequence[formats.VideoRecord]) -> list[int]:
  """Native visual lengths T_v, from the `.npy` headers only."""
  with futures.ThreadPoolExecutor(_NUM_HEADER_THREADS) as pool:
    return list(pool.map(
        lambda r: formats.read_visual_length(root, config.dataset, r.split,
                                             r.video_id), records))


class EvalBatches:
  """Re-iterable evaluation batches as numpy dicts (a pass per `iter`)."""

  def __init__(self, dataset: tf.data.Dataset, num_batches: int):
    self.dataset = dataset
    self._num_batches = num_batches

  def __iter__(self):
    return self.dataset.as_numpy_iterator()

  def __len__(self):
    return self._num_batches


def create_eval_dataset(
    config: ml_collections.ConfigDict,
    source: Union[FeatureSource, Sequence[formats.VideoRecord]],
    root: Optional[str] = None, *, process_index: int = 0,
    process_count: int = 1) -> tuple[EvalBatches, int]:
  """Evaluation batches of this process at native length.

  Each video is zero-padded to the smallest of `dataset.eval_length_buckets`
  that holds it (longer videos: a multiple of the largest). Every batch holds
  one bucket; global batches of `eval.batch_size` rows are split over the
  processes like training batches, so each process runs the same number of
  batches (some rows, or whole batches, are padding).

  Args:
    config: reads `eval.batch_size` and `dataset.*`.
    source: the evaluation videos: a FeatureSource, or a list of records
      whose `.npy` features live under `root`.
    root: dataset root, with a list of records only.
    process_index: this process.
    process_count: number of processes.

  Returns:
    (batches, num_batches); `batches` can be iterated any number of times
    and yields dicts of numpy arrays. Each batch (b = eval.batch_size /
    process_count, L = its bucket length): `visual` `[b, L, Dv]` and `audio`
    `[b, L, Da]` in `source.dtype`, `mask` `[b, L]` float32 (native length
    in ones), `label` `[b]` int32, `index` `[b]` int32 (into the records, -1
    = padding), `valid` `[b]` float32 (1 = a real row).
  """
  _check_dataset_config(config)
  b = _per_process(config.eval.batch_size, process_index, process_count,
                   'eval.batch_size')
  buckets = config.dataset.eval_length_buckets
  if not buckets or min(buckets) < 1:
    raise ValueError(f'dataset.eval_length_buckets = {buckets!r}: expected '
                     'one or more lengths >= 1.')
  source = as_source(config, source, root)
  plan = eval_plan(source.lengths(), buckets, config.eval.batch_size)
  # This process's rows of each global batch.
  rows = [chunk[process_index * b:(process_index + 1) * b] for _, chunk in plan]
  labels = np.array([r.label for r in source.records], np.int32)
  dims, dtype = (source.visual_dim, source.audio_dim), source.dtype

  def batch_fn(k):
    length, index = plan[int(k)][0], rows[int(k)]
    visual = _aligned_empty((b, length, dims[0]), dtype)
    audio = _aligned_empty((b, length, dims[1]), dtype)
    mask = np.zeros((b, length), np.float32)

    def fill(row):
      n = 0
      if index[row] >= 0:
        record = source.records[index[row]]

        def frames_for(num_frames):
          if num_frames > length:
            raise ValueError(
                f'{record.file}: {num_frames} visual frames, but its '
                f'features had at most {length} when the batches were '
                'planned.')
          return np.arange(num_frames)

        n = source.load_into(int(index[row]), frames_for, visual[row],
                             audio[row])
        mask[row, :n] = 1.0
      visual[row, n:] = 0
      audio[row, n:] = 0

    _map_rows(fill, b, source.load_threads)
    valid = index >= 0
    return (visual, audio, mask, np.where(valid, labels[index], 0),
            index.astype(np.int32), valid.astype(np.float32))

  def placeholder(k):
    length = plan[int(k)][0]
    return (np.zeros((b, length, dims[0]), dtype),
            np.zeros((b, length, dims[1]), dtype),
            np.zeros((b, length), np.float32), np.zeros(b, np.int32),
            np.full(b, -1, np.int32), np.zeros(b, np.float32))

  visual, audio, mask, label, index, valid = [b, None, dims[0]], [
      b, None, dims[1]], [b, None], [b], [b], [b]
  shapes = dict(visual=visual, audio=audio, mask=mask, label=label,
                index=index, valid=valid)
  dtypes = [dtype, dtype, np.float32, np.int32, np.int32, np.float32]
  ds = tf.data.Dataset.range(len(plan))
  ds = _map_batches(ds, batch_fn, placeholder, dtypes, shapes)
  ds = ds.prefetch(config.dataset.prefetch).with_options(_options())
  return EvalBatches(ds, len(plan)), len(plan)
