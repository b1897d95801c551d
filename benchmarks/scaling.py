"""Simulated data-parallel scaling on CPU: fake devices and local processes.

Train-step throughput of WMMT at a fixed global batch over

- 1, 2, 4, 8 fake CPU devices in one process
  (`--xla_force_host_platform_device_count`), and
- 1, 2, 4 processes of one CPU device each on localhost, joined through
  `jax.distributed` (gloo), as `launch/multiprocess_cpu.sh` runs them.

On one machine every "device" shares the same cores, so this measures the
overhead of the sharding and of the collectives, not a speed-up.

  python benchmarks/scaling.py
  python benchmarks/scaling.py --devices 1,2 --processes 1,2 --steps 5
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _worker(args):
  """One process of a measurement; process 0 prints its JSON figures."""
  # pylint: disable=g-import-not-at-top
  import jax
  if args.num_processes > 1:
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(f'localhost:{args.port}', args.num_processes,
                               args.process_id)
  import numpy as np
  sys.path.insert(0, _ROOT)
  from configs import default
  from wmmt_jax import parallel
  from wmmt_jax import train
  # pylint: enable=g-import-not-at-top
  config = default.get_config()
  config.batch_size = args.batch
  mesh = parallel.make_mesh()
  model = train.create_model(config)
  tx = train.create_optimizer(config)
  state, abstract = train.init_state(model, tx, config, mesh)
  step = train.jit_train_step(train.make_train_step(model, tx, config), mesh,
                              jax.tree.map(lambda x: x.sharding, abstract))
  local = args.batch // jax.process_count()
  rng = np.random.default_rng(jax.process_index())
  t = config.dataset.num_frames
  batch = parallel.to_global({
      'visual': rng.normal(size=(local, t, config.dataset.visual_dim)).astype(
          np.float32),
      'audio': rng.normal(size=(local, t, config.dataset.audio_dim)).astype(
          np.float32),
      'mask': np.ones((local, t), np.float32),
      'label': rng.integers(0, 4, size=local).astype(np.int32),
  }, mesh)
  for _ in range(2):
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(args.steps):
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  seconds = (time.perf_counter() - start) / args.steps
  if jax.process_index() == 0:
    print(json.dumps(dict(processes=jax.process_count(),
                          devices=jax.device_count(), batch=args.batch,
                          steps_per_s=1 / seconds,
                          videos_per_s=args.batch / seconds)))


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _measure(num_processes, devices_per_process, args):
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2',
             XLA_FLAGS='--xla_force_host_platform_device_count='
             f'{devices_per_process}')
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, __file__, '--worker', f'--num_processes={num_processes}',
       f'--process_id={i}', f'--port={port}', f'--batch={args.batch}',
       f'--steps={args.steps}'], env=env, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i in range(num_processes)]
  try:
    outs = [p.communicate(timeout=1200) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  if any(p.returncode for p in procs):
    return {'error': outs[0][1].strip().splitlines()[-1:]}
  return json.loads(outs[0][0].strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--devices', default='1,2,4,8')
  parser.add_argument('--processes', default='1,2,4')
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--num_processes', type=int, default=1,
                      help=argparse.SUPPRESS)
  parser.add_argument('--process_id', type=int, default=0,
                      help=argparse.SUPPRESS)
  parser.add_argument('--port', type=int, default=0, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    _worker(args)
    return
  rows = []
  for d in map(int, args.devices.split(',')):
    rows.append(('1 process', f'{d} devices', _measure(1, d, args)))
    print(rows[-1], flush=True)
  for p in map(int, args.processes.split(',')):
    rows.append((f'{p} processes', '1 device each', _measure(p, 1, args)))
    print(rows[-1], flush=True)
  print(f'\nWMMT train step, default widths, global batch {args.batch}, '
        f'T = 128; {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}')
  print(f'{"layout":<14} {"devices":<14} {"steps/s":>8} {"videos/s":>9}')
  for layout, devices, r in rows:
    if 'error' in r:
      print(f'{layout:<14} {devices:<14} failed: {r["error"]}')
    else:
      print(f'{layout:<14} {devices:<14} {r["steps_per_s"]:>8.2f} '
            f'{r["videos_per_s"]:>9.1f}')


if __name__ == '__main__':
  main()
