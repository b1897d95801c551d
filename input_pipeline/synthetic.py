"""The embedded synthetic dataset: LAV-DF metadata, MDP-layout features.

`ensure_synthetic_dataset` writes, once per config, a small dataset that has
the structure of the real ones (DESIGN.md section 4) and forgery traces that a
weakly supervised localizer can find, so the whole system runs and learns
without downloads.

Feature model, per video and modality (width D, n steps at the modality's
rate: `fps` for visual, `audio_rate` for audio):

  mu ~ N(0, s_mu^2 I)                                identity of the video
  z_0 ~ N(0, s_z^2 I),  z_t = a z_{t-1} + s_z sqrt(1 - a^2) eps_t
  x_t = mu + z_t + s_w w_t                           real features

with eps_t, w_t ~ N(0, I), s_mu = _IDENTITY_STD = 1, a = _AR_COEF = 0.9,
s_w = _NOISE_STD = 0.1 and s_z^2 = 1 - s_w^2, so every frame has std 1 per
channel around `mu` (the unit of `shift`) and adjacent frames differ by a
small, smooth amount: Var(x_{t+1} - x_t) = V = 2 (1 - a) s_z^2 + 2 s_w^2
(0.218, i.e. std 0.47 per channel).

Only in a forged modality and only at the steps of its forged segments:

  x_t += shift * u + s_e e_t,   u = normalize(g + v),   e_t ~ N(0, I),
  s_e^2 = (deviation_factor^2 - 1) V / 2,

where g is a fixed global unit direction per modality (from `synthetic.seed`)
and v a per-video random unit direction, so the trace is learnable but not
one fixed vector; the extra white noise makes E|x_{t+1} - x_t|^2 inside a
segment exactly deviation_factor^2 times that of real frames. Durations,
identities and everything else have the same distribution for real and fake
videos.
"""

from concurrent import futures
import hashlib
import io
import json
import math
import os
import shutil
import uuid

import ml_collections
import numpy as np
from scipy import signal
import tensorflow as tf

from input_pipeline import formats

# Bump when the generator changes: it is part of the directory hash, so a
# stale dataset is never reused.
_FORMAT_VERSION = 1
# AR(1) coefficient per step: features drift smoothly over ~10 steps.
_AR_COEF = 0.9
# White noise on top of the AR process (per-channel std).
_NOISE_STD = 0.1
# Std of the per-video identity vector, per channel.
_IDENTITY_STD = 1.0
# LAV-DF's `audio_frames` counts 16 kHz waveform samples.
_AUDIO_SAMPLE_RATE = 16000
# Written last; a directory without it is incomplete.
_MARKER = 'COMPLETE'
SPLITS = ('train', 'test')
# Threads writing videos (generation is numpy, writes are I/O).
_NUM_WRITE_THREADS = min(16, (os.cpu_count() or 1) + 4)
# SeedSequence stream tags: the second entropy word keeps the streams apart.
# (SeedSequence pads short entropy with zeros, so [s, 1] == [s, 1, 0]; distinct
# tags at a fixed position avoid such collisions.)
_STREAM_SPLIT = 1
_STREAM_VIDEO = 2
_STREAM_DIRECTION = 3

# Every config field the generator reads; their values name the directory.
_HASHED_FIELDS = ('seed', 'num_train', 'num_test', 'fps', 'audio_rate',
                  'min_duration_s', 'max_duration_s', 'class_proportions',
                  'min_segment_s', 'max_segment_s', 'max_fakes', 'shift',
                  'deviation_factor')


def dataset_hash(config: ml_collections.ConfigDict) -> str:
  """Short hash of everything that determines the synthetic dataset."""
  syn = config.dataset.synthetic
  spec = {k: syn[k] for k in _HASHED_FIELDS}
  spec['class_proportions'] = [float(p) for p in spec['class_proportions']]
  spec.update(visual_dim=config.dataset.visual_dim,
              audio_dim=config.dataset.audio_dim, version=_FORMAT_VERSION)
  text = json.dumps(spec, sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:12]


def _segment_frame_range(syn) -> tuple[int, int]:
  """Segment lengths in frames allowed by [min_segment_s, max_segment_s]."""
  # The epsilon absorbs float error in e.g. 0.1 * 25.
  lo = max(1, math.ceil(syn.min_segment_s * syn.fps - 1e-6))
  hi = math.floor(syn.max_segment_s * syn.fps + 1e-6)
  return lo, hi


def _check_config(config: ml_collections.ConfigDict):
  """Raises ValueError naming the `dataset.synthetic` field at fault."""
  syn = config.dataset.synthetic

  def fail(key, expected):
    raise ValueError(f'dataset.synthetic.{key} = {syn[key]!r}: expected '
                     f'{expected}.')

  for key in ('num_train', 'num_test'):
    if syn[key] < 0:
      fail(key, 'an integer >= 0')
  for key in ('fps', 'audio_rate', 'min_duration_s', 'min_segment_s'):
    if not syn[key] > 0:
      fail(key, 'a number > 0')
  if syn.max_duration_s < syn.min_duration_s:
    fail('max_duration_s', f'>= min_duration_s = {syn.min_duration_s}')
  lo, hi = _segment_frame_range(syn)
  if hi < lo:
    fail('max_segment_s', 'a range [min_segment_s, max_segment_s] that holds '
         f'a whole number of frames at fps = {syn.fps}')
  if round(syn.min_duration_s * syn.fps) < lo:
    fail('min_duration_s', f'a video long enough for the shortest segment '
         f'(min_segment_s = {syn.min_segment_s})')
  if syn.max_fakes < 1:
    fail('max_fakes', 'an integer >= 1')
  p = np.asarray(syn.class_proportions, np.float64)
  if p.shape != (formats.NUM_CLASSES,) or (p < 0).any() or p.sum() <= 0:
    fail('class_proportions', '4 non-negative numbers (real, both, visual '
         'only, audio only) with a positive sum')
  if syn.deviation_factor < 1:
    fail('deviation_factor', 'a number >= 1')
  for key in ('visual_dim', 'audio_dim'):
    if config.dataset[key] < 1:
      raise ValueError(f'dataset.{key} = {config.dataset[key]!r}: expected an '
                       'integer >= 1.')


def class_counts(proportions, n: int) -> np.ndarray:
  """Exact per-class counts summing to n (largest remainder).

  Every class with a positive proportion gets at least one video when n
  allows, so each split of even a tiny dataset has all four classes.
  """
  p = np.asarray(proportions, np.float64)
  p = p / p.sum()
  raw = p * n
  counts = np.floor(raw).astype(np.int64)
  order = np.argsort(-(raw - counts), kind='stable')
  counts[order[:n - counts.sum()]] += 1
  missing = [c for c in range(len(p)) if p[c] > 0 and counts[c] == 0]
  if n >= np.count_nonzero(p):
    for c in missing:
      counts[np.argmax(counts)] -= 1
      counts[c] += 1
  return counts


def global_direction(config: ml_collections.ConfigDict,
                     modality: str) -> np.ndarray:
  """The fixed unit forgery direction g of a modality, `[D]` float64."""
  index = ('visual', 'audio').index(modality)
  dim = config.dataset[f'{modality}_dim']
  rng = np.random.default_rng(
      [config.dataset.synthetic.seed, _STREAM_DIRECTION, index])
  g = rng.standard_normal(dim)
  return g / np.linalg.norm(g)


def _draw_segments(rng: np.random.Generator, num_frames: int,
                   syn) -> np.ndarray:
  """1..max_fakes non-overlapping segments inside the video, `[N, 2]` frames.

  Lengths are uniform in [min_segment_s, max_segment_s], rounded to whole
  frames; segments are separated by at least one real frame so they stay
  distinct segments. Videos too short for all of them get fewer.
  """
  lo, hi = _segment_frame_range(syn)
  n = int(rng.integers(1, syn.max_fakes + 1))
  lengths = np.clip(
      np.round(rng.uniform(syn.min_segment_s, syn.max_segment_s, n) *
               syn.fps), lo, hi).astype(np.int64)
  while n > 1 and lengths[:n].sum() + n - 1 > num_frames:
    n -= 1
  lengths = np.minimum(lengths[:n], num_frames)
  free = num_frames - lengths.sum() - (n - 1)
  # Sorted uniform offsets into the free frames place the segments in order.
  offsets = np.sort(rng.integers(0, free + 1, size=n))
  starts = offsets + np.concatenate([[0], np.cumsum(lengths[:-1] + 1)])
  return np.stack([starts, starts + lengths], axis=1)


def base_features(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
  """Real features: identity + AR(1) drift + white noise, `[n, dim]` float64."""
  s_z = math.sqrt(1.0 - _NOISE_STD**2)
  identity = _IDENTITY_STD * rng.standard_normal(dim)
  innovations = rng.standard_normal((n, dim))
  innovations[0] *= s_z  # z_0 from the stationary distribution.
  innovations[1:] *= s_z * math.sqrt(1.0 - _AR_COEF**2)
  drift = signal.lfilter([1.0], [1.0, -_AR_COEF], innovations, axis=0)
  return identity + drift + _NOISE_STD * rng.standard_normal((n, dim))


def add_traces(x: np.ndarray, rng: np.random.Generator, segments: np.ndarray,
               direction: np.ndarray, shift: float,
               deviation_factor: float) -> np.ndarray:
  """Adds forgery traces in place to the steps `[start, end)` of `segments`.

  Args:
    x: `[n, D]` real features (base_features).
    rng: the video's trace generator.
    segments: `[N, 2]` step indices at this modality's rate.
    direction: `[D]` global unit direction g of the modality.
    shift: shift along u, in per-frame stds.
    deviation_factor: factor on the adjacent-frame deviation.

  Returns:
    x.
  """
  v = rng.standard_normal(x.shape[1])
  u = direction + v / np.linalg.norm(v)
  u /= np.linalg.norm(u)
  s_z2 = 1.0 - _NOISE_STD**2
  adjacent_var = 2.0 * (1.0 - _AR_COEF) * s_z2 + 2.0 * _NOISE_STD**2
  extra_std = math.sqrt((deviation_factor**2 - 1.0) * adjacent_var / 2.0)
  for start, end in segments:
    x[start:end] += shift * u + extra_std * rng.standard_normal(
        (end - start, x.shape[1]))
  return x


def _modality_features(seed_seq: np.random.SeedSequence, n: int, dim: int,
                       segments, direction, syn) -> np.ndarray:
  # Separate generators for the real features and the traces: a fake video's
  # features equal those of the real video it would otherwise be, outside
  # its segments.
  base_seq, trace_seq = seed_seq.spawn(2)
  x = base_features(np.random.default_rng(base_seq), n, dim)
  if segments is not None:
    add_traces(x, np.random.default_rng(trace_seq), segments, direction,
               syn.shift, syn.deviation_factor)
  return x.astype(np.float32)


def make_video(config: ml_collections.ConfigDict, split_index: int,
               video_index: int, label: int, directions):
  """One video: (metadata entry without file/split/original, visual, audio).

  A pure function of (synthetic.seed, split_index, video_index, label), so
  videos are independent of each other and of the writing order.

  Returns:
    entry: dict of LAV-DF fields.
    visual: `[video_frames, visual_dim]` float32.
    audio: `[round(duration * audio_rate), audio_dim]` float32.
  """
  syn = config.dataset.synthetic
  seed_seq = np.random.SeedSequence(
      [syn.seed, _STREAM_VIDEO, split_index, video_index])
  meta_seq, visual_seq, audio_seq = seed_seq.spawn(3)
  rng = np.random.default_rng(meta_seq)
  frames = max(1, round(rng.uniform(syn.min_duration_s, syn.max_duration_s) *
                        syn.fps))
  # Whole frames, so fps = video_frames / duration is exactly `fps`.
  duration = frames / syn.fps
  modify_video = label in (formats.LABEL_BOTH, formats.LABEL_VISUAL)
  modify_audio = label in (formats.LABEL_BOTH, formats.LABEL_AUDIO)
  if label == formats.LABEL_REAL:
    frame_segments = np.zeros((0, 2), np.int64)
  else:
    frame_segments = _draw_segments(rng, frames, syn)
  # Segment bounds are frame boundaries: representable at the visual rate.
  periods = [[float(s) / syn.fps, float(e) / syn.fps]
             for s, e in frame_segments]
  audio_len = max(1, round(duration * syn.audio_rate))
  audio_segments = np.clip(
      np.round(frame_segments / syn.fps * syn.audio_rate).astype(np.int64),
      0, audio_len)
  audio_segments[:, 1] = np.maximum(audio_segments[:, 1],
                                    audio_segments[:, 0] + 1)
  visual = _modality_features(
      visual_seq, frames, config.dataset.visual_dim,
      frame_segments if modify_video else None, directions[0], syn)
  audio = _modality_features(
      audio_seq, audio_len, config.dataset.audio_dim,
      audio_segments if modify_audio else None, directions[1], syn)
  entry = {
      'n_fakes': len(periods),
      'fake_periods': periods,
      'duration': duration,
      'modify_video': modify_video,
      'modify_audio': modify_audio,
      'video_frames': frames,
      'audio_channels': 1,
      'audio_frames': round(duration * _AUDIO_SAMPLE_RATE),
  }
  return entry, visual, audio


def _save_npy(path: str, x: np.ndarray):
  buf = io.BytesIO()
  np.save(buf, x, allow_pickle=False)
  with tf.io.gfile.GFile(path, 'wb') as f:
    f.write(buf.getvalue())


def _write_dataset(directory: str, config: ml_collections.ConfigDict):
  """Writes every file of the dataset into `directory`, the marker last."""
  syn = config.dataset.synthetic
  directions = (global_direction(config, 'visual'),
                global_direction(config, 'audio'))
  jobs = []  # (split_index, split, index within split, global id, label)
  originals = {}  # global id -> file of a real video of the same split
  first_id = 0
  for split_index, (split, num) in enumerate(
      zip(SPLITS, (syn.num_train, syn.num_test))):
    for path in formats.feature_paths(directory, 'mdp', split, 'x'):
      tf.io.gfile.makedirs(os.path.dirname(path))
    rng = np.random.default_rng([syn.seed, _STREAM_SPLIT, split_index])
    labels = rng.permutation(
        np.repeat(np.arange(formats.NUM_CLASSES),
                  class_counts(syn.class_proportions, num)))
    real = [first_id + i for i in range(num) if labels[i] == 0]
    # LAV-DF names the real video a fake was made from; here it is nominal
    # (the features are independent of it).
    picks = rng.integers(0, max(len(real), 1), size=num)
    for i in range(num):
      if labels[i] and real:
        originals[first_id + i] = f'{split}/{real[picks[i]]:06d}.mp4'
      jobs.append((split_index, split, i, first_id + i, int(labels[i])))
    first_id += num

  def write_video(job):
    split_index, split, i, video_id, label = job
    entry, visual, audio = make_video(config, split_index, i, label,
                                      directions)
    visual_path, audio_path = formats.feature_paths(directory, 'mdp', split,
                                                    f'{video_id:06d}')
    _save_npy(visual_path, visual)
    _save_npy(audio_path, audio)
    return dict(file=f'{split}/{video_id:06d}.mp4', split=split,
                original=originals.get(video_id), **entry)

  # numpy's generators and file writes release the GIL; the result does not
  # depend on the thread schedule (each video has its own generators).
  with futures.ThreadPoolExecutor(_NUM_WRITE_THREADS) as pool:
    entries = list(pool.map(write_video, jobs))
  with tf.io.gfile.GFile(f'{directory}/metadata.json', 'w') as f:
    f.write(json.dumps(entries))
  with tf.io.gfile.GFile(f'{directory}/{_MARKER}', 'w') as f:
    f.write(f'synthetic dataset {dataset_hash(config)} complete\n')


def ensure_synthetic_dataset(root: str,
                             config: ml_collections.ConfigDict) -> str:
  """Writes the synthetic dataset under `root` unless it is there already.

  Args:
    root: parent directory, local or `gs://`.
    config: the full config; reads `dataset.synthetic.*`,
      `dataset.visual_dim` and `dataset.audio_dim`.

  Returns:
    The dataset directory `{root}/synthetic-{hash}` (MDP layout plus
    `metadata.json`).
  """
  _check_config(config)
  root = root.rstrip('/') or '/'
  final = f'{root}/synthetic-{dataset_hash(config)}'
  if tf.io.gfile.exists(f'{final}/{_MARKER}'):
    return final
  if '://' in root:
    # Object stores have no atomic directory rename. Writing in place is safe
    # there: each object write is atomic and the bytes are deterministic, so
    # concurrent writers write the same content, and a crash leaves no
    # marker, so the next call rewrites the directory.
    _write_dataset(final, config)
    return final
  # Local: write a private temporary sibling and rename it into place
  # atomically. A crashed writer leaves only its own temporary directory,
  # which nobody reads; of concurrent writers, the first rename wins.
  tmp = f'{final}.tmp-{uuid.uuid4().hex}'
  try:
    _write_dataset(tmp, config)
    try:
      os.rename(tmp, final)
    except OSError:
      if not tf.io.gfile.exists(f'{final}/{_MARKER}'):
        raise RuntimeError(
            f'{final} exists but has no {_MARKER} marker, so it was not '
            'written by ensure_synthetic_dataset or was damaged; delete it '
            'to regenerate the synthetic dataset.') from None
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp, ignore_errors=True)
  return final
