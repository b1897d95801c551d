r"""Times the metadata readers of `input_pipeline.formats` on 1.1M entries.

Generates, in a temporary directory (or --workdir), a LAV-DF `metadata.json`
(with the full file's `transcript` and word `timestamps`) and an
AV-Deepfake1M `train_metadata.json` of --entries entries each, with the
classes in AV-Deepfake1M's proportions, then reads each file in a fresh
process so that the peak resident memory (`ru_maxrss`) is the reader's own.
Prints a table: entries, file MB, seconds, peak MB, and the peak above the
process's memory before the read (the interpreter, numpy and TensorFlow).

  python benchmarks/metadata_benchmark.py [--entries 1100000] [--workdir D]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_BLOCK = 10_000  # Entries generated at a time.
_FPS = 25
_WORDS = ('we', 'have', 'to', 'be', 'there', 'before', 'the', 'meeting',
          'starts', 'tomorrow', 'morning', 'okay')
_MODIFY_TYPES = ('real', 'both_modified', 'visual_modified', 'audio_modified')
_VARIANTS = ('real', 'fake_video_fake_audio', 'fake_video_real_audio',
             'real_video_fake_audio')
# AV-Deepfake1M: 286,721 real and 860,039 fake videos.
_CLASS_P = (0.25, 0.25, 0.25, 0.25)


def _segments(rng, frames, n):
  """n sorted [start, end] seconds on the frame grid."""
  bounds = np.sort(rng.integers(0, frames + 1, size=2 * n)) / _FPS
  return bounds.reshape(n, 2).round(2).tolist()


def _lavdf_entry(rng, i, label, frames, splits):
  split = splits[i % len(splits)]
  n = 0 if label == 0 else int(rng.integers(1, 4))
  words = [_WORDS[w] for w in rng.integers(0, len(_WORDS), size=10)]
  step = frames / _FPS / len(words)
  return {
      'file': f'{split}/{i:07d}.mp4',
      'n_fakes': n,
      'fake_periods': _segments(rng, frames, n) if n else [],
      'timestamps': [[w, round(k * step, 3), round((k + 1) * step, 3)]
                     for k, w in enumerate(words)],
      'duration': frames / _FPS,
      'transcript': ' '.join(words),
      'original': None if label == 0 else f'{split}/{i - 1:07d}.mp4',
      'modify_video': label in (1, 2),
      'modify_audio': label in (1, 3),
      'split': split,
      'video_frames': frames,
      'audio_channels': 1,
      'audio_frames': frames * 640,
  }


def _avdeepfake1m_entry(rng, i, label, frames, split):
  n = 0 if label == 0 else int(rng.integers(1, 4))
  segments = _segments(rng, frames, n) if n else []
  clip = f'id{i // 4000:05d}/v{i // 40:07d}/{i % 40:05d}'
  return {
      'file': f'{clip}/{_VARIANTS[label]}.mp4',
      'original': None if label == 0 else f'{clip}/real.mp4',
      'split': split,
      'modify_type': _MODIFY_TYPES[label],
      'audio_model': 'your_tts' if label in (1, 3) else '',
      'fake_segments': segments,
      'visual_fake_segments': segments if label in (1, 2) else [],
      'audio_fake_segments': segments if label in (1, 3) else [],
      'video_frames': frames,
      'audio_frames': frames * 640,
  }


def generate(path, fmt, entries, seed=0):
  """Writes a metadata file of `entries` entries, a block at a time."""
  rng = np.random.default_rng([seed, len(fmt)])
  with open(path, 'w') as f:
    f.write('[')
    for first in range(0, entries, _BLOCK):
      count = min(_BLOCK, entries - first)
      labels = rng.choice(4, size=count, p=_CLASS_P)
      frames = rng.integers(100, 400, size=count)
      parts = []
      for k in range(count):
        i = first + k
        if fmt == 'lavdf':
          entry = _lavdf_entry(rng, i, labels[k], int(frames[k]),
                               ('train', 'dev', 'test'))
        else:
          entry = _avdeepfake1m_entry(rng, i, labels[k], int(frames[k]),
                                      'train')
        parts.append(json.dumps(entry))
      f.write((', ' if first else '') + ', '.join(parts))
    f.write(']')


def _child(fmt, path):
  """Reads `path` in this process; prints seconds and memory as JSON."""
  sys.path.insert(0, REPO)
  # pylint: disable-next=g-import-not-at-top
  from input_pipeline import formats
  before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  read = getattr(formats, f'read_{fmt}_metadata')
  start = time.perf_counter()
  records = read(path)
  seconds = time.perf_counter() - start
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  print(json.dumps(dict(records=len(records), seconds=seconds, before=before,
                        peak=peak)))


def measure(fmt, path):
  proc = subprocess.run(
      [sys.executable, os.path.abspath(__file__), '--child', fmt, path],
      capture_output=True, text=True, check=False,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  if proc.returncode:
    raise RuntimeError(f'reading {path} failed:\n{proc.stderr}')
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--entries', type=int, default=1_100_000)
  parser.add_argument('--workdir', default='',
                      help='where to write the files (default: a temporary '
                      'directory, deleted afterwards)')
  parser.add_argument('--formats', default='lavdf,avdeepfake1m')
  parser.add_argument('--child', nargs=2, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    _child(*args.child)
    return
  with tempfile.TemporaryDirectory() as tmp:
    workdir = args.workdir or tmp
    os.makedirs(workdir, exist_ok=True)
    rows = []
    for fmt in args.formats.split(','):
      name = 'metadata.json' if fmt == 'lavdf' else 'train_metadata.json'
      path = os.path.join(workdir, f'{fmt}_{args.entries}_{name}')
      if not os.path.exists(path):
        start = time.perf_counter()
        generate(path, fmt, args.entries)
        print(f'generated {path} in {time.perf_counter() - start:.1f} s',
              flush=True)
      result = measure(fmt, path)
      assert result['records'] == args.entries, result
      rows.append((fmt, result['records'], os.path.getsize(path) / 2**20,
                   result['seconds'], result['peak'] / 2**20,
                   (result['peak'] - result['before']) / 2**20))
  print(f'{"format":<14}{"entries":>10}{"file MB":>10}{"seconds":>10}'
        f'{"peak MB":>10}{"read MB":>10}')
  for fmt, n, mb, seconds, peak, above in rows:
    print(f'{fmt:<14}{n:>10,}{mb:>10.1f}{seconds:>10.2f}{peak:>10.0f}'
          f'{above:>10.0f}')
  print('peak MB: ru_maxrss of the reading process; read MB: the peak above '
        'its memory before the read (Python, numpy, TensorFlow).')


if __name__ == '__main__':
  main()
