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
"""

import atexit
from concurrent import futures
import functools
import threading
import time
from typing import Sequence

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


def get_records(config: ml_collections.ConfigDict, workdir: str,
                split: str, subset: str = 'all',
                subset_key: str = 'subset',
               ) -> tuple[list[formats.VideoRecord], str]:
  """The records of one split and the dataset root their features live in.

  For `dataset.name == 'synthetic'` the dataset is written on first use under
  `dataset.root` (or `{workdir}/data` if empty); for 'lavdf', `dataset.root`
  holds LAV-DF's `metadata.json` and the features in `dataset.layout`.
  `subset` (a key of `SUBSETS`) keeps the videos of some classes only;
  `subset_key` is the config key that named it, for errors.
  """
  name = config.dataset.name
  if name == 'synthetic':
    root = synthetic.ensure_synthetic_dataset(
        config.dataset.root or f'{workdir}/data', config)
  elif name == 'lavdf':
    root = config.dataset.root
    if not root:
      raise ValueError('dataset.root: set it to the LAV-DF directory that '
                       'holds metadata.json and feats/ (--config.dataset.root'
                       '=...).')
  else:
    raise ValueError(f"dataset.name: unknown dataset {name!r}; expected "
                     "'synthetic' or 'lavdf'.")
  records = formats.read_lavdf_metadata(f'{root}/metadata.json',
                                        splits=[split])
  if not records:
    raise ValueError(f'{root}/metadata.json: no entries with split '
                     f'{split!r} (dataset.train_split / dataset.eval_split).')
  selected = select_subset(records, subset, subset_key)
  if not selected:
    raise ValueError(f'{subset_key}={subset!r}: none of the {len(records)} '
                     f'videos of split {split!r} in {root}/metadata.json '
                     'belongs to it.')
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
    time with `dataset.audio_align`).
  """
  visual_path, audio_path = formats.feature_paths(
      root, config.dataset.layout, record.split, record.video_id)
  visual, audio = formats.load_features(visual_path, audio_path,
                                        config.dataset.visual_dim,
                                        config.dataset.audio_dim)
  return visual, formats.align_audio(audio, visual.shape[0],
                                     config.dataset.audio_align)


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


def train_window(visual: np.ndarray, audio: np.ndarray, num_frames: int,
                 sampling: str, rng: np.random.Generator):
  """Cuts one training example of exactly T frames.

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
  length = visual.shape[0]
  if sampling == 'bins':
    idx = bin_frames(rng, length, num_frames)
    return visual[idx], audio[idx], np.ones(num_frames, np.float32)
  if sampling != 'crop':
    raise ValueError(f'dataset.train_sampling: unknown sampling {sampling!r}; '
                     f'expected one of {_TRAIN_SAMPLINGS}.')
  if length >= num_frames:
    start = int(rng.integers(0, length - num_frames + 1))
    return (visual[start:start + num_frames], audio[start:start + num_frames],
            np.ones(num_frames, np.float32))
  return _pad_to(visual, audio, num_frames)


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


def create_train_dataset(config: ml_collections.ConfigDict,
                         records: Sequence[formats.VideoRecord], root: str, *,
                         start_step: int = 0, process_index: int = 0,
                         process_count: int = 1) -> tf.data.Dataset:
  """Infinite training batches of this process, starting at `start_step`.

  Args:
    config: reads `seed`, `batch_size` (global) and `dataset.*`.
    records: the training records.
    root: dataset root the features live in.
    start_step: global step of the first batch (resume); nothing earlier is
      loaded.
    process_index: this process.
    process_count: number of processes.

  Returns:
    A dataset of dicts, b = batch_size / process_count, T =
    `dataset.num_frames`: `visual` `[b, T, Dv]` float32, `audio` `[b, T, Da]`
    float32, `mask` `[b, T]` float32 (1 = real frame, 0 = padding), `label`
    `[b]` int32.
  """
  _check_dataset_config(config)
  b = _per_process(config.batch_size, process_index, process_count,
                   'batch_size')
  ds_config = config.dataset
  if ds_config.train_sampling not in _TRAIN_SAMPLINGS:
    raise ValueError(f'dataset.train_sampling: unknown sampling '
                     f'{ds_config.train_sampling!r}; expected one of '
                     f'{_TRAIN_SAMPLINGS}.')
  if not records:
    raise ValueError('create_train_dataset: no training records.')
  records = list(records)
  seed, global_batch, t = config.seed, config.batch_size, ds_config.num_frames
  dims = ds_config.visual_dim, ds_config.audio_dim

  def indices_fn(step):
    return train_indices(seed, len(records), global_batch, int(step),
                         process_index, process_count)

  def placeholder(step, slot, index):
    del step, slot, index
    return (np.zeros((t, dims[0]), np.float32),
            np.zeros((t, dims[1]), np.float32), np.zeros(t, np.float32),
            np.int32(0))

  def load_fn(step, slot, index):
    record = records[index]
    visual, audio = load_aligned(config, root, record)
    # Drawn from (seed, step, global slot): the same window whatever the
    # process count, and exact on resume.
    rng = np.random.default_rng([seed, _STREAM_WINDOW, int(step), int(slot)])
    visual, audio, mask = train_window(visual, audio, t,
                                       ds_config.train_sampling, rng)
    return visual, audio, mask, np.int32(record.label)

  def step_examples(step):
    index = tf.numpy_function(
        functools.partial(_EXIT_GUARD.call, indices_fn, indices_fn), [step],
        tf.int64, stateful=False)
    index = tf.ensure_shape(index, [b])
    slot = tf.range(process_index * b, (process_index + 1) * b,
                    dtype=tf.int64)
    return tf.fill([b], step), slot, index

  def load(step, slot, index):
    visual, audio, mask, label = tf.numpy_function(
        functools.partial(_EXIT_GUARD.call, load_fn, placeholder),
        [step, slot, index], [tf.float32, tf.float32, tf.float32, tf.int32],
        stateful=False)
    return {
        'visual': tf.ensure_shape(visual, [t, dims[0]]),
        'audio': tf.ensure_shape(audio, [t, dims[1]]),
        'mask': tf.ensure_shape(mask, [t]),
        'label': tf.ensure_shape(label, []),
    }

  ds = tf.data.Dataset.counter(start_step, dtype=tf.int64)
  ds = ds.map(step_examples).unbatch()
  ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  # Each step contributes exactly b examples, so batches align with steps.
  ds = ds.batch(b, drop_remainder=True)
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
  paths = [
      formats.feature_paths(root, config.dataset.layout, r.split,
                            r.video_id)[0] for r in records
  ]
  with futures.ThreadPoolExecutor(_NUM_HEADER_THREADS) as pool:
    shapes = list(pool.map(formats.read_npy_shape, paths))
  for path, shape in zip(paths, shapes):
    if len(shape) != 2 or shape[0] == 0:
      raise ValueError(f'{path}: expected a non-empty 2-D [time, '
                       f'{config.dataset.visual_dim}] feature array, got '
                       f'shape {shape}.')
  return [shape[0] for shape in shapes]


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
    config: ml_collections.ConfigDict, records: Sequence[formats.VideoRecord],
    root: str, *, process_index: int = 0,
    process_count: int = 1) -> tuple[EvalBatches, int]:
  """Evaluation batches of this process at native length.

  Each video is zero-padded to the smallest of `dataset.eval_length_buckets`
  that holds it (longer videos: a multiple of the largest). Every batch holds
  one bucket; global batches of `eval.batch_size` rows are split over the
  processes like training batches, so each process runs the same number of
  batches (some rows, or whole batches, are padding).

  Returns:
    (batches, num_batches); `batches` can be iterated any number of times
    and yields dicts of numpy arrays. Each batch (b = eval.batch_size /
    process_count, L = its bucket length): `visual` `[b, L, Dv]` float32,
    `audio`
    `[b, L, Da]` float32, `mask` `[b, L]` float32 (native length in ones),
    `label` `[b]` int32, `index` `[b]` int32 (into `records`, -1 = padding),
    `valid` `[b]` float32 (1 = a real row).
  """
  _check_dataset_config(config)
  b = _per_process(config.eval.batch_size, process_index, process_count,
                   'eval.batch_size')
  buckets = config.dataset.eval_length_buckets
  if not buckets or min(buckets) < 1:
    raise ValueError(f'dataset.eval_length_buckets = {buckets!r}: expected '
                     'one or more lengths >= 1.')
  records = list(records)
  plan = eval_plan(feature_lengths(config, root, records), buckets,
                   config.eval.batch_size)
  rows = np.array([i for _, chunk in plan
                   for i in chunk[process_index * b:(process_index + 1) * b]],
                  np.int64)
  row_lengths = np.repeat(np.array([n for n, _ in plan], np.int64), b)
  dims = config.dataset.visual_dim, config.dataset.audio_dim

  def padding_row(index, length):
    del index
    return (np.zeros((length, dims[0]), np.float32),
            np.zeros((length, dims[1]), np.float32),
            np.zeros(length, np.float32), np.int32(0))

  def load_fn(index, length):
    if index < 0:
      return padding_row(index, length)
    record = records[index]
    visual, audio = load_aligned(config, root, record)
    if visual.shape[0] > length:
      raise ValueError(
          f'{record.file}: {visual.shape[0]} visual frames, but its feature '
          f'file had at most {length} when the batches were planned.')
    return _pad_to(visual, audio, int(length)) + (np.int32(record.label),)

  def load(index, length):
    visual, audio, mask, label = tf.numpy_function(
        functools.partial(_EXIT_GUARD.call, load_fn, padding_row),
        [index, length], [tf.float32, tf.float32, tf.float32, tf.int32],
        stateful=False)
    return {
        'visual': tf.ensure_shape(visual, [None, dims[0]]),
        'audio': tf.ensure_shape(audio, [None, dims[1]]),
        'mask': tf.ensure_shape(mask, [None]),
        'label': tf.ensure_shape(label, []),
        'index': tf.cast(index, tf.int32),
        'valid': tf.cast(index >= 0, tf.float32),
    }

  ds = tf.data.Dataset.from_tensor_slices((rows, row_lengths))
  ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  # Rows of one batch share a length, so plain batching keeps the buckets.
  ds = ds.batch(b, drop_remainder=True)
  ds = ds.prefetch(config.dataset.prefetch).with_options(_options())
  return EvalBatches(ds, len(plan)), len(plan)
