r"""Training input pipeline throughput: prepared ArrayRecords vs `.npy` files.

Writes (once, cached in --workdir) a synthetic dataset at the real widths
(visual 2048, audio 1024 at 50 per second), videos of 8-32 s (200-800
frames at 25 fps), prepares it as float32, float16 and bfloat16 records
(`input_pipeline.prepare`), then times `pipeline.create_train_dataset` with
MDP's settings (T = 500, one random frame per bin, batch 32) on each source
and on the per-file `.npy` pipeline, after a warm-up pass (page cache warm).

  python benchmarks/pipeline_benchmark.py [--videos 256] [--seconds 20] \
      [--workdir /tmp/wmmt_pipeline_bench] [--sources float16,float32,npy]

Columns (the load average includes this benchmark): videos/s; MB/s of batch features delivered (B T (Dv + Da) x bytes
of the batch dtype); MB/s of feature bytes read (whole videos); CPU =
process CPU seconds per wall second (2.0 = both cores of a 2-core machine);
CPU ms per video, which other load on the machine disturbs least (2000 / it
estimates videos/s on two free cores).
"""

import argparse
import contextlib
import os
import sys
import tempfile
import time

import ml_collections

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf
from configs import default
from input_pipeline import pipeline
from input_pipeline import prepare
# pylint: enable=g-import-not-at-top,wrong-import-position

_SOURCES = ('float16', 'bfloat16', 'float32', 'npy')


def bench_config(videos: int) -> ml_collections.ConfigDict:
  """Real widths, MDP's training settings, a synthetic train split."""
  config = default.get_config('real_widths')
  config.batch_size = 32
  config.dataset.num_frames = 500
  config.dataset.train_sampling = 'bins'
  config.dataset.prefetch = 2
  syn = config.dataset.synthetic
  syn.num_train, syn.num_test = videos, 8
  syn.min_duration_s, syn.max_duration_s = 8.0, 32.0
  return config


def time_pipeline(config, source, seconds: float) -> dict:
  """Batches per second of `create_train_dataset(config, source)`."""
  ds = pipeline.create_train_dataset(config, source)
  it = ds.as_numpy_iterator()
  # Warm-up: thread pools, autotuning and a first read of every video.
  num_videos = len(source.records)
  for _ in range(max(4, -(-num_videos // config.batch_size))):
    batch = next(it)
  itemsize = batch['visual'].dtype.itemsize
  lengths = source.lengths()
  start, cpu_start = time.perf_counter(), time.process_time()
  steps = 0
  while time.perf_counter() - start < seconds:
    next(it)
    steps += 1
  wall = time.perf_counter() - start
  cpu = time.process_time() - cpu_start
  del it
  videos = steps * config.batch_size
  dims = source.visual_dim + source.audio_dim
  out_bytes = videos * config.dataset.num_frames * dims * itemsize
  stored = source.dtype.itemsize if isinstance(
      source, prepare.PreparedSource) else 4
  read_bytes = videos * float(lengths.mean()) * dims * stored
  return {
      'videos/s': videos / wall,
      'out MB/s': out_bytes / wall / 1e6,
      'read MB/s': read_bytes / wall / 1e6,
      'CPU': cpu / wall,
      'dtype': str(batch['visual'].dtype),
      # Other processes' load during the run (1-minute average).
      'load': os.getloadavg()[0],
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--videos', type=int, default=256)
  parser.add_argument('--seconds', type=float, default=20.0)
  parser.add_argument('--workdir', default='')
  parser.add_argument('--sources', default=','.join(_SOURCES))
  args = parser.parse_args()
  tf.config.set_visible_devices([], 'GPU')
  # Without --workdir the data (a few GB) goes to a temporary directory.
  with (contextlib.nullcontext(args.workdir) if args.workdir else
        tempfile.TemporaryDirectory(prefix='wmmt_pipeline_bench_')) as workdir:
    run(args, workdir)


def run(args, workdir: str):
  """Prepares the data in `workdir`, times each source, prints the table."""
  config = bench_config(args.videos)

  t = time.perf_counter()
  records, root = pipeline.get_records(config, workdir, 'train')
  print(f'{len(records)} videos, {root} ({time.perf_counter() - t:.0f} s)',
        flush=True)
  rows = []
  for name in args.sources.split(','):
    if name == 'npy':
      source = pipeline.NpySource(config, records, root)
    else:
      config.dataset.record_dtype = name
      t = time.perf_counter()
      data_dir = prepare.ensure_prepared(config, workdir)
      print(f'prepared {name}: {data_dir} ({time.perf_counter() - t:.0f} s)',
            flush=True)
      source = prepare.PreparedSource(data_dir, 'train')
    result = time_pipeline(config, source, args.seconds)
    label = 'npy files' if name == 'npy' else f'{name} records'
    rows.append((label, result))
    print(f'{label}: {result["videos/s"]:.0f} videos/s', flush=True)

  lengths = pipeline.NpySource(config, records, root).lengths()
  print(f'\nT = {config.dataset.num_frames}, bins, batch '
        f'{config.batch_size}, widths {config.dataset.visual_dim} + '
        f'{config.dataset.audio_dim}, {len(records)} videos of '
        f'{lengths.min()}-{lengths.max()} frames (mean {lengths.mean():.0f}), '
        f'{os.cpu_count()} CPUs')
  header = (f'{"source":<18}{"batch dtype":>12}{"videos/s":>10}'
            f'{"out MB/s":>10}{"read MB/s":>11}{"CPU":>6}'
            f'{"CPU ms/video":>14}{"load avg":>10}')
  print(header)
  print('-' * len(header))
  for label, r in rows:
    print(f'{label:<18}{r["dtype"]:>12}{r["videos/s"]:>10.0f}'
          f'{r["out MB/s"]:>10.0f}{r["read MB/s"]:>11.0f}{r["CPU"]:>6.2f}'
          f'{1000 * r["CPU"] / r["videos/s"]:>14.2f}{r["load"]:>10.1f}')


if __name__ == '__main__':
  main()
