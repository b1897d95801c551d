"""Inference time and peak memory of WMMT against video length.

One forward pass of WMMT at MDP's real widths (visual 2048, audio 1024,
embeddings 512, Q/K/V 1024, heads 1024) on one video of T frames, chunked
(`wmmt_jax.models.long_video`) and, up to `--single_max`, as the single pass.
Each (T, method) runs in its own process, so the peak resident memory it
reports (`ru_maxrss`) is that run's alone; the time is the median of the
timed passes after the compile.

  python benchmarks/long_video.py                       # T = 512 ... 65536
  python benchmarks/long_video.py --lengths 512,4096 --chunk 2048

Time should grow linearly with T: the `s/kframe` column stays flat.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)


def _run_one(length, method, chunk, repeats):
  """Times one forward pass in this process; returns a dict of figures."""
  # pylint: disable=g-import-not-at-top
  import jax
  import numpy as np
  from wmmt_jax.models import long_video
  from wmmt_jax.models import wmmt
  # pylint: enable=g-import-not-at-top
  model = wmmt.WMMT(embed_dim=512, qkv_dim=1024, head_dim=1024)
  rng = np.random.default_rng(0)
  visual = rng.normal(size=(1, length, 2048)).astype(np.float32)
  audio = rng.normal(size=(1, length, 1024)).astype(np.float32)
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.key(0), visual[:, :8], audio[:, :8], np.ones((1, 8)),
      train=False))
  params = jax.tree.map(
      lambda x: (0.02 * rng.normal(size=x.shape)).astype(np.float32),
      shapes)['params']
  if method == 'chunked':
    run = lambda: long_video.forward(model, params, visual, audio,
                                     chunk=chunk)
  else:
    mask = np.ones((1, length), np.float32)
    apply = jax.jit(lambda p, v, a, m: model.apply(
        {'params': p}, v, a, m, train=False)['cas'])
    run = lambda: apply(params, visual, audio, mask)
  start = time.perf_counter()
  jax.block_until_ready(run())
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(run())
    times.append(time.perf_counter() - start)
  return dict(length=length, method=method, chunk=chunk,
              compile_and_first_s=first, seconds=float(np.median(times)),
              peak_rss_mb=resource.getrusage(
                  resource.RUSAGE_SELF).ru_maxrss / 1024,
              device=str(jax.devices()[0].platform))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--lengths', default='512,4096,32768,65536')
  parser.add_argument('--chunk', type=int, default=4096)
  parser.add_argument('--single_max', type=int, default=32768,
                      help='longest T also run as the single pass')
  parser.add_argument('--repeats', type=int, default=2)
  parser.add_argument('--one', default='', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.one:
    length, method = args.one.split(':')
    print(json.dumps(_run_one(int(length), method, args.chunk,
                              args.repeats)))
    return

  rows = []
  for length in map(int, args.lengths.split(',')):
    for method in ('chunked', 'single'):
      if method == 'single' and length > args.single_max:
        continue
      proc = subprocess.run(
          [sys.executable, __file__, f'--one={length}:{method}',
           f'--chunk={args.chunk}', f'--repeats={args.repeats}'],
          capture_output=True, text=True, check=False)
      if proc.returncode:
        errors = [l for l in proc.stderr.splitlines() if 'Error' in l]
        rows.append(dict(length=length, method=method,
                         error=(errors or ['exit status %d' %
                                           proc.returncode])[-1]))
      else:
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
      print(json.dumps(rows[-1]), flush=True)

  print(f'\nWMMT forward, real widths, B = 1, chunk = {args.chunk}; '
        f'{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}')
  print(f'{"T":>8} {"method":<8} {"s/pass":>8} {"s/kframe":>9} '
        f'{"peak MB":>8} {"1st s":>6}')
  for r in rows:
    if 'error' in r:
      print(f'{r["length"]:>8} {r["method"]:<8} failed: {r["error"]}')
      continue
    print(f'{r["length"]:>8} {r["method"]:<8} {r["seconds"]:>8.2f} '
          f'{1000 * r["seconds"] / r["length"]:>9.4f} '
          f'{r["peak_rss_mb"]:>8.0f} {r["compile_and_first_s"]:>6.1f}')


if __name__ == '__main__':
  main()
