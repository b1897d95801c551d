r"""Times the temporal-localisation evaluator against the official one.

Generates (deterministically, cached in --workdir) AV-Deepfake1M-like data,
100,000 videos x 100 proposals by default, and times, each in a fresh
process so that peak memory is its own:

- ours, in memory: `wmmt_jax.evaluation.ap_ar` on `{file: [100, 3] array}`
  and the metadata as a list of dicts (the data are built before the clock
  starts);
- ours, files to result: `python -m wmmt_jax.evaluate` (streaming readers +
  the same metrics), in process;
- the official `avdeepfake1m` evaluator (Rust, `ap_ar_1d` on the same two
  files), when its compiled module can be loaded (`official.py`: pass
  --official or set WMMT_OFFICIAL_EVALUATOR to the `.so` or its directory).

It prints a table of wall and CPU seconds and peak RSS (best of --repeats),
the ratios, and whether the numbers agree bit for bit.

  python benchmarks/eval_benchmark.py [--videos 100000] [--proposals 100] \
      [--repeats 3] [--official /tmp/avdf] [--skip-official] [--workdir DIR]

The 1.1-million-video memory check is the same script with
`--videos 1100000 --skip-official --only files` (about 2 GB of JSON).
"""

import argparse
import contextlib
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# pylint: disable=g-import-not-at-top,wrong-import-position
from wmmt_jax import evaluate
from wmmt_jax.evaluation import metrics
from wmmt_jax.evaluation import official
from wmmt_jax.evaluation import streaming
# pylint: enable=g-import-not-at-top,wrong-import-position

PROTOCOL = 'avdeepfake1m'
_BLOCK = 2000  # Videos generated at a time.


def _video_block(rng, first, count, proposals):
  """Metadata entries and prediction rows of videos `first .. first+count-1`.

  Videos of 5-15 s on a 25 fps grid; three in four are forged with 1-3
  segments; proposals are scored best first, a fifth of them near a segment.
  """
  entries, rows_of = [], []
  for v in range(first, first + count):
    duration = round(float(rng.uniform(5, 15)), 2)
    segs = []
    if rng.random() < 0.75:
      for _ in range(rng.integers(1, 4)):
        s = round(float(rng.integers(0, int(duration * 25) - 10)) / 25, 2)
        segs.append([s, round(s + float(rng.integers(2, 50)) / 25, 2)])
    entries.append({'file': f'test/{v:07d}.mp4', 'duration': duration,
                    'n_fakes': len(segs), 'fake_segments': segs})
    start = rng.uniform(0, duration, proposals)
    end = start + rng.uniform(0.04, 2.0, proposals)
    if segs:
      near = rng.random(proposals) < 0.2
      pick = rng.integers(len(segs), size=proposals)
      seg = np.asarray(segs)[pick]
      start = np.where(near, seg[:, 0] + rng.normal(0, 0.1, proposals), start)
      end = np.where(near, seg[:, 1] + rng.normal(0, 0.1, proposals), end)
    start = np.round(start * 25) / 25
    end = np.maximum(np.round(end * 25) / 25, start)
    score = np.sort(rng.random(proposals))[::-1]
    rows_of.append(np.stack([score, start, end], axis=1))
  return entries, rows_of


def generate(workdir, videos, proposals, seed=0):
  """Writes (once) predictions and metadata JSON; returns their paths."""
  tag = f'{videos}x{proposals}_s{seed}'
  pred_path = os.path.join(workdir, f'predictions_{tag}.json')
  meta_path = os.path.join(workdir, f'metadata_{tag}.json')
  if os.path.exists(pred_path) and os.path.exists(meta_path):
    return pred_path, meta_path
  os.makedirs(workdir, exist_ok=True)
  rng = np.random.default_rng(seed)
  tmp_pred, tmp_meta = pred_path + '.tmp', meta_path + '.tmp'
  with open(tmp_pred, 'w') as fp, open(tmp_meta, 'w') as fm:
    fp.write('{')
    fm.write('[')
    for first in range(0, videos, _BLOCK):
      entries, rows_of = _video_block(rng, first,
                                      min(_BLOCK, videos - first), proposals)
      for entry, rows in zip(entries, rows_of):
        sep = ', ' if first or entry is not entries[0] else ''
        body = ', '.join(f'[{s:.4f}, {a:.2f}, {b:.2f}]'
                         for s, a, b in rows.tolist())
        fp.write(f'{sep}{json.dumps(entry["file"])}: [{body}]')
        fm.write(sep + json.dumps(entry))
    fp.write('}\n')
    fm.write(']\n')
  os.replace(tmp_pred, pred_path)
  os.replace(tmp_meta, meta_path)
  return pred_path, meta_path


def _in_memory_inputs(pred_path, meta_path):
  """The files as a researcher holds them: arrays per video, metadata dicts."""
  table = streaming.read_predictions(pred_path)
  predictions = {f: table.video(i) for i, f in enumerate(table.files)}
  with open(meta_path) as f:
    metadata = json.load(f)
  return predictions, metadata


def _measure(which, pred_path, meta_path, official_path):
  """Runs one evaluator in this process; returns timing and its result."""
  proto = metrics.PROTOCOLS[PROTOCOL]
  if which == 'memory':
    predictions, metadata = _in_memory_inputs(pred_path, meta_path)
    run = lambda: metrics.ap_ar(predictions, metadata, PROTOCOL)
  elif which == 'files':
    def run():
      """The command line in process, its stdout parsed."""
      out = io.StringIO()
      with contextlib.redirect_stdout(out):
        status = evaluate.main(['--predictions', pred_path, '--metadata',
                                meta_path, '--protocol', PROTOCOL])
      if status:
        raise RuntimeError(f'wmmt-eval exited with {status}')
      return json.loads(out.getvalue())
  else:
    module = official.load(official_path)
    run = lambda: module.ap_ar_1d(
        pred_path, meta_path, 'file', 'fake_segments', 1.0,
        list(proto['ap_ious']), list(proto['ar_ns']), list(proto['ar_ious']))
  wall, cpu = time.perf_counter(), time.process_time()
  result = run()
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  ap = {float(np.float32(k)): float(v) for k, v in result['ap'].items()}
  ar = {int(k): float(v) for k, v in result['ar'].items()}
  return dict(wall=wall, cpu=cpu, peak=peak, ap=ap, ar=ar)


def _child(which, pred_path, meta_path, official_path):
  """Runs `_measure` in a fresh process, for a clean peak RSS."""
  cmd = [sys.executable, os.path.abspath(__file__), '--child', which,
         '--child-files', pred_path, meta_path]
  if official_path:
    cmd += ['--official', official_path]
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if proc.returncode:
    raise RuntimeError(f'{which} failed:\n{proc.stderr[-3000:]}')
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
  """Command line: see the module docstring."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--videos', type=int, default=100_000)
  parser.add_argument('--proposals', type=int, default=100)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--workdir', default=os.path.join(
      tempfile.gettempdir(), 'wmmt_eval_benchmark'))
  parser.add_argument('--official', default=None,
                      help='official `_evaluation` .so or its directory.')
  parser.add_argument('--skip-official', action='store_true')
  parser.add_argument('--only', choices=('memory', 'files', 'official'),
                      action='append')
  parser.add_argument('--child', help=argparse.SUPPRESS)
  parser.add_argument('--child-files', nargs=2, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    print(json.dumps(_measure(args.child, *args.child_files, args.official)))
    return

  t = time.perf_counter()
  pred_path, meta_path = generate(args.workdir, args.videos, args.proposals,
                                  args.seed)
  size = os.path.getsize(pred_path) + os.path.getsize(meta_path)
  print(f'data: {args.videos} videos x {args.proposals} proposals, '
        f'{size / 1e6:.0f} MB of JSON in {pred_path} '
        f'({time.perf_counter() - t:.0f} s to generate or find)')
  which = args.only or ['memory', 'files', 'official']
  if 'official' in which and (args.skip_official or
                              official.find_extension(args.official) is None):
    which = [w for w in which if w != 'official']
    if not args.skip_official:
      print('official evaluator not found: pass --official or set '
            f'{official.ENV_VAR} (e.g. pip install --target /tmp/avdf '
            '--no-deps avdeepfake1m)')

  names = {'memory': 'ours, ap_ar in memory',
           'files': 'ours, files -> result',
           'official': 'official (Rust), files -> result'}
  best = {}
  for w in which:
    runs = [_child(w, pred_path, meta_path, args.official)
            for _ in range(args.repeats)]
    best[w] = min(runs, key=lambda r: r['wall'])
    best[w]['walls'] = [r['wall'] for r in runs]

  print(f'\n{"evaluator":34s} {"wall s":>8s} {"cpu s":>8s} {"peak RSS":>9s}'
        '   all walls')
  for w, r in best.items():
    walls = ' '.join(f'{x:.1f}' for x in r['walls'])
    print(f'{names[w]:34s} {r["wall"]:8.2f} {r["cpu"]:8.2f} '
          f'{r["peak"] / 2**30:7.2f} G   {walls}')
  if 'official' in best:
    ref = best['official']
    for w in ('files', 'memory'):
      if w in best:
        print(f'official / {names[w]}: '
              f'wall x{ref["wall"] / best[w]["wall"]:.2f}, '
              f'cpu x{ref["cpu"] / best[w]["cpu"]:.2f}')
    for w in ('files', 'memory'):
      if w in best:
        same = best[w]['ap'] == ref['ap'] and best[w]['ar'] == ref['ar']
        print(f'{names[w]} == official, bit for bit: {same}')
  for w, r in best.items():
    print(f'{names[w]}: ap {r["ap"]} ar {r["ar"]}')


if __name__ == '__main__':
  main()
