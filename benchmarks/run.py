"""The benchmark suite: train steps, input pipeline, end to end, evaluation.

  python benchmarks/run.py            # full: B = 32, T = 500, real widths
  python benchmarks/run.py --quick    # seconds, small shapes (CI smoke test)

Writes `benchmarks/results/<machine>.json` and `<machine>.md` (or under
`--out`) and prints the markdown table:

- train-step throughput (videos/s) of WMMT and MDP, float32 and bfloat16
  compute (float32 parameters, optimiser state and losses), with the step's
  FLOPs from XLA's cost analysis and, on GPU, the % of the chip's peak;
- input pipeline throughput on prepared records (float16 ArrayRecords,
  `input_pipeline.prepare`): videos/s and MB/s delivered;
- end to end: the WMMT train loop fed by that pipeline, steps/s and the
  fraction of wall time spent waiting for input;
- evaluation throughput: videos/s of `Evaluator.evaluate` (forward pass,
  proposals and metrics) on the synthetic test split;
- XLA compilations during the training loop and one evaluation pass;
- peak host memory (RSS) and, where the backend reports it, peak device
  memory.

The data are the embedded synthetic dataset at the run's widths, written and
prepared once under `--workdir`. Timings exclude compilation and warm-up.
"""

import argparse
import json
import os
import platform
import resource
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import numpy as np
import tensorflow as tf

from configs import default
from configs import lavdf
from configs import mdp_lavdf
import input_pipeline
from input_pipeline import prepare
from wmmt_jax import compiles
from wmmt_jax import parallel
from wmmt_jax import train
from wmmt_jax.evaluation import inference
# pylint: enable=g-import-not-at-top,wrong-import-position

# Dense peak FLOP/s by device kind (float32 without tensor cores, bfloat16
# with), for the % of peak column; other devices leave it empty.
_PEAK_FLOPS = {
    'H100': {'float32': 67e12, 'bfloat16': 989e12},
    'H200': {'float32': 67e12, 'bfloat16': 989e12},
    'A100': {'float32': 19.5e12, 'bfloat16': 312e12},
}


def machine_name():
  """`cpu-2core`, `nvidia-h100-80gb-hbm3`, ... for the results file name."""
  device = jax.devices()[0]
  if device.platform == 'cpu':
    return f'cpu-{os.cpu_count()}core'
  return device.device_kind.lower().replace(' ', '-')


def _peak_flops(dtype):
  kind = jax.devices()[0].device_kind
  for name, peaks in _PEAK_FLOPS.items():
    if name in kind:
      return peaks[dtype]
  return None


def _configs(quick):
  """(name, config) of the models to time, at the benchmark's shapes."""
  if quick:
    out = []
    for name in ('wmmt', 'mdp'):
      config = default.get_config('tiny')
      config.model.name = name
      out.append((name, config))
    return out
  wmmt_config = lavdf.get_config()
  mdp_config = mdp_lavdf.get_config()
  for config in (wmmt_config, mdp_config):
    config.batch_size = 32
    config.dataset.num_frames = 500
  return [('wmmt', wmmt_config), ('mdp', mdp_config)]


def _random_batch(config, rng, dtype=np.float32):
  b, t = config.batch_size, config.dataset.num_frames
  return {
      'visual': rng.normal(size=(b, t, config.dataset.visual_dim)).astype(
          dtype),
      'audio': rng.normal(size=(b, t, config.dataset.audio_dim)).astype(
          dtype),
      'mask': np.ones((b, t), np.float32),
      'label': rng.integers(0, 4, size=b).astype(np.int32),
  }


def _build_step(config, mesh):
  model = train.create_model(config)
  tx = train.create_optimizer(config)
  state, abstract = train.init_state(model, tx, config, mesh)
  step = train.jit_train_step(train.make_train_step(model, tx, config), mesh,
                              jax.tree.map(lambda x: x.sharding, abstract))
  return model, state, step


def bench_train_step(name, config, dtype, steps, mesh):
  """Videos/s of one jitted train step on a batch already on the devices."""
  config = config.copy_and_resolve_references()
  config.model.dtype = dtype
  _, state, step = _build_step(config, mesh)
  batch = parallel.to_global(_random_batch(config, np.random.default_rng(0)),
                             mesh)
  compiled = step.lower(state, batch).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float((cost or {}).get('flops', 0.0))
  state, metrics = step(state, batch)  # Warm-up (and the jit cache).
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  seconds = (time.perf_counter() - start) / steps
  peak = _peak_flops(dtype)
  return {
      'model': name, 'dtype': dtype, 'batch': config.batch_size,
      'frames': config.dataset.num_frames,
      'videos_per_s': config.batch_size / seconds,
      'step_s': seconds, 'gflop_per_step': flops / 1e9,
      'achieved_tflops': flops / seconds / 1e12,
      'percent_of_peak': 100 * flops / seconds / peak if peak else None,
  }


def _data_config(quick, workdir):
  """The WMMT config whose synthetic data, prepared, feed the pipeline."""
  config = _configs(quick)[0][1].copy_and_resolve_references()
  config.dataset.name = 'synthetic'
  config.dataset.root = os.path.join(workdir, 'data')
  config.dataset.use_prepared = True
  config.dataset.record_dtype = 'float16'
  config.dataset.train_sampling = 'bins'
  syn = config.dataset.synthetic
  if quick:
    syn.num_train, syn.num_test = 32, 16
  else:
    syn.num_train, syn.num_test = 512, 128
    syn.min_duration_s, syn.max_duration_s = 8.0, 32.0
  config.eval.plots = False
  return config


def bench_pipeline(config, workdir, seconds):
  """Videos/s and MB/s of the training pipeline on prepared records."""
  records, root = input_pipeline.get_records(config, workdir, 'train')
  source = prepare.create_source(config, workdir, 'train', records, root)
  it = input_pipeline.create_train_dataset(config, source).as_numpy_iterator()
  for _ in range(max(4, -(-len(records) // config.batch_size))):
    batch = next(it)
  start, n = time.perf_counter(), 0
  while time.perf_counter() - start < seconds:
    next(it)
    n += 1
  wall = time.perf_counter() - start
  item = batch['visual'].dtype.itemsize
  per_video = config.dataset.num_frames * (
      config.dataset.visual_dim + config.dataset.audio_dim) * item
  videos = n * config.batch_size
  return {'videos_per_s': videos / wall,
          'mb_per_s': videos * per_video / wall / 2**20,
          'record_dtype': str(batch['visual'].dtype)}, source


def bench_end_to_end(config, source, steps, mesh):
  """The train loop fed by the pipeline: steps/s, input wait, compiles."""
  _, state, step = _build_step(config, mesh)
  it = input_pipeline.create_train_dataset(config, source).as_numpy_iterator()
  state, metrics = step(state, parallel.to_global(next(it), mesh))
  jax.block_until_ready(metrics)
  before = compiles.count()
  waited = 0.0
  start = time.perf_counter()
  for _ in range(steps):
    t = time.perf_counter()
    # The host waits here only if the pipeline is behind: the step before
    # was dispatched asynchronously and runs meanwhile.
    batch = parallel.to_global(next(it), mesh)
    waited += time.perf_counter() - t
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  wall = time.perf_counter() - start
  return {'steps_per_s': steps / wall,
          'videos_per_s': steps * config.batch_size / wall,
          'input_wait_fraction': waited / wall,
          'train_loop_compiles': compiles.count() - before}, state


def bench_eval(config, workdir, params, mesh):
  """Videos/s of a whole evaluation pass (second pass: compiles excluded)."""
  records, root = input_pipeline.get_records(config, workdir, 'test')
  model = train.create_model(config)
  evaluator = inference.Evaluator(model, config, records, root, mesh)
  before = compiles.count()
  evaluator.evaluate(params)
  first_pass_compiles = compiles.count() - before
  start = time.perf_counter()
  evaluator.evaluate(params)
  wall = time.perf_counter() - start
  return {'videos_per_s': len(records) / wall, 'videos': len(records),
          'eval_compiles': first_pass_compiles,
          'length_buckets': list(config.dataset.eval_length_buckets)}


def _memory():
  out = {'peak_host_rss_mb': resource.getrusage(
      resource.RUSAGE_SELF).ru_maxrss / 1024}
  stats = jax.devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    out['peak_device_mb'] = stats['peak_bytes_in_use'] / 2**20
  return out


def _fmt(x, digits=2):
  return '' if x is None else f'{x:.{digits}f}'


def markdown(results):
  """The results as a markdown report."""
  lines = [f'# Benchmarks on {results["machine"]}', '',
           f'{results["device"]}; JAX {results["jax"]}; '
           f'{"quick" if results["quick"] else "full"} mode; '
           f'{results["date"]}.', '',
           '| train step | dtype | B | T | videos/s | GFLOP/step | TFLOP/s '
           '| % of peak |', '| --- | --- | --- | --- | --- | --- | --- | --- |']
  for r in results['train_step']:
    lines.append(
        f'| {r["model"]} | {r["dtype"]} | {r["batch"]} | {r["frames"]} | '
        f'{_fmt(r["videos_per_s"])} | {_fmt(r["gflop_per_step"], 1)} | '
        f'{_fmt(r["achieved_tflops"], 3)} | {_fmt(r["percent_of_peak"], 1)} |')
  p, e, v, m = (results['pipeline'], results['end_to_end'],
                results['evaluation'], results['memory'])
  lines += [
      '', '| measure | value |', '| --- | --- |',
      f'| input pipeline ({p["record_dtype"]} records), videos/s | '
      f'{_fmt(p["videos_per_s"], 0)} |',
      f'| input pipeline, MB/s delivered | {_fmt(p["mb_per_s"], 0)} |',
      f'| end to end (WMMT, pipeline attached), steps/s | '
      f'{_fmt(e["steps_per_s"], 3)} |',
      f'| end to end, videos/s | {_fmt(e["videos_per_s"])} |',
      f'| end to end, fraction of time waiting for input | '
      f'{_fmt(e["input_wait_fraction"], 3)} |',
      f'| evaluation (forward, proposals, metrics), videos/s | '
      f'{_fmt(v["videos_per_s"], 1)} |',
      f'| XLA compiles in the training loop | {e["train_loop_compiles"]} |',
      f'| XLA compiles in the first evaluation pass (buckets '
      f'{v["length_buckets"]}) | {v["eval_compiles"]} |',
      f'| peak host RSS, MB | {_fmt(m["peak_host_rss_mb"], 0)} |',
      f'| peak device memory, MB | {_fmt(m.get("peak_device_mb"), 0)} |',
  ]
  return '\n'.join(lines) + '\n'


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true',
                      help='small shapes, a few steps (CI smoke test)')
  parser.add_argument('--out', default=os.path.join(_ROOT, 'benchmarks',
                                                    'results'))
  parser.add_argument('--workdir', default='/tmp/wmmt_benchmarks')
  parser.add_argument('--steps', type=int, default=None)
  args = parser.parse_args()
  tf.config.set_visible_devices([], 'GPU')
  compiles.count()  # Starts counting.
  steps = args.steps or (2 if args.quick else 5)
  workdir = os.path.join(args.workdir, 'quick' if args.quick else 'full')
  mesh = parallel.make_mesh()

  results = {
      'machine': machine_name(), 'quick': args.quick,
      'device': f'{jax.device_count()} x {jax.devices()[0].device_kind}',
      'jax': jax.__version__, 'python': platform.python_version(),
      'date': time.strftime('%Y-%m-%d %H:%M'), 'train_step': []}
  for name, config in _configs(args.quick):
    for dtype in ('float32', 'bfloat16'):
      results['train_step'].append(
          bench_train_step(name, config, dtype, steps, mesh))
      print(json.dumps(results['train_step'][-1]), flush=True)
  config = _data_config(args.quick, workdir)
  results['pipeline'], source = bench_pipeline(config, workdir,
                                               2.0 if args.quick else 20.0)
  print(json.dumps(results['pipeline']), flush=True)
  results['end_to_end'], state = bench_end_to_end(config, source, steps, mesh)
  print(json.dumps(results['end_to_end']), flush=True)
  results['evaluation'] = bench_eval(config, workdir, state.params, mesh)
  print(json.dumps(results['evaluation']), flush=True)
  results['memory'] = _memory()

  os.makedirs(args.out, exist_ok=True)
  base = os.path.join(args.out, results['machine'] +
                      ('-quick' if args.quick else ''))
  with open(base + '.json', 'w') as f:
    json.dump(results, f, indent=1)
  report = markdown(results)
  with open(base + '.md', 'w') as f:
    f.write(report)
  print(report)
  print(f'Wrote {base}.json and {base}.md')


if __name__ == '__main__':
  main()
