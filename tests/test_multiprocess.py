"""Several JAX processes on localhost (gloo) against one, through main.py.

`launch/multiprocess_cpu.sh` starts the processes; each test has a timeout
and kills every process it started if it fails.
"""

import json
import os
import signal
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from wmmt_jax import workdir as workdir_lib

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SCRIPT = os.path.join(_ROOT, 'launch', 'multiprocess_cpu.sh')
_TIMEOUT_S = 540


def _env(**extra):
  env = dict(os.environ, PYTHON=sys.executable, JAX_PLATFORMS='cpu',
             PYTHONPATH=_ROOT, **extra)
  env.pop('XLA_FLAGS', None)  # The script and the tests set the devices.
  return env


def _kill_group(proc):
  """Kills a process started with `start_new_session` and all its children."""
  if proc.poll() is None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _run(args, env, timeout=_TIMEOUT_S):
  proc = subprocess.Popen(args, cwd=_ROOT, env=env, start_new_session=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
  try:
    out, _ = proc.communicate(timeout=timeout)
  finally:
    _kill_group(proc)
  return proc.returncode, out


def _logs(workdir):
  logs = os.path.join(workdir, 'logs')
  if not os.path.isdir(logs):
    return ''
  return '\n'.join(
      f'--- {name}\n' + ''.join(open(os.path.join(logs, name)).readlines()[-15:])
      for name in sorted(os.listdir(logs)) if name.endswith('.log'))


def _params(workdir, step):
  """The checkpoint's parameters as numpy, whatever topology saved them."""
  path = os.path.join(workdir, 'checkpoints', str(step), 'default')
  checkpointer = ocp.StandardCheckpointer()
  metadata = checkpointer.metadata(path).item_metadata
  target = jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), metadata)
  return checkpointer.restore(path, target)['params']


# tppa_norm=sigmoid: under the softmax, TPPA's key bias adds the same
# `q_sum . b_k` to every `r_j`, which the softmax cancels, so its gradient is
# zero in exact arithmetic and float noise (~1e-9, which depends on the
# all-reduce order) is all Adam sees: its update `g / (sqrt(v) + eps)` turns
# that noise into steps of up to the learning rate. Every other parameter
# has a real gradient, so the comparison holds them all to 1e-6.
_FLAGS = ('--config.total_steps=8', '--config.checkpoint_every_steps=4',
          '--config.log_every_steps=4', '--config.learning_rate=0.003',
          '--config.model.tppa_norm=sigmoid')


@pytest.mark.slow
def test_two_processes_of_two_devices_equal_one_process_of_four(tmp_path):
  data = str(tmp_path / 'data')
  flags = (*_FLAGS, f'--config.dataset.root={data}')
  one = str(tmp_path / 'one_process')
  rc, out = _run(
      [sys.executable, '-m', 'wmmt_jax.main', '--config=configs/default.py:tiny',
       f'--workdir={one}', *flags],
      _env(XLA_FLAGS='--xla_force_host_platform_device_count=4'))
  assert rc == 0, out[-3000:]

  two = str(tmp_path / 'two_processes')
  rc, out = _run(['bash', _SCRIPT, 'configs/default.py:tiny', two, *flags],
                 _env(NUM_PROCESSES='2', DEVICES_PER_PROCESS='2'))
  assert rc == 0, out + _logs(two)
  log0 = open(os.path.join(two, 'logs', 'process_0.log')).read()
  assert 'JAX process 0 / 2' in log0

  got, want = _params(two, 8), _params(one, 8)
  chex.assert_trees_all_equal_shapes(got, want)
  diff = max(float(np.max(np.abs(a - b)))
             for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)))
  assert diff <= 1e-6, diff
  for name in ('results.json', 'predictions.json'):
    with open(os.path.join(one, name)) as f, open(os.path.join(two,
                                                                name)) as g:
      a, b = json.load(f), json.load(g)
    a.pop('compiles', None)
    b.pop('compiles', None)
    assert a == b, name
  # Only process 0 writes logs and results: one TensorBoard file.
  assert len([f for f in os.listdir(two) if f.startswith('events.')]) == 1


@pytest.mark.slow
def test_dead_worker_ends_the_survivor_and_keeps_the_checkpoint(tmp_path):
  workdir = str(tmp_path / 'w')
  flags = ('--config.total_steps=100000', '--config.checkpoint_every_steps=2',
           '--config.log_every_steps=2', '--heartbeat_timeout_s=5',
           f'--config.dataset.root={tmp_path / "data"}')
  proc = subprocess.Popen(
      ['bash', _SCRIPT, 'configs/default.py:tiny', workdir, *flags],
      cwd=_ROOT, env=_env(), start_new_session=True, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True)
  checkpoints = os.path.join(workdir, 'checkpoints')
  try:
    deadline = time.monotonic() + _TIMEOUT_S
    while not [s for s in workdir_lib.complete_steps(checkpoints) if s >= 4]:
      assert proc.poll() is None, proc.stdout.read() + _logs(workdir)
      assert time.monotonic() < deadline, _logs(workdir)
      time.sleep(0.5)
    with open(os.path.join(workdir, 'logs', 'process_1.pid')) as f:
      os.kill(int(f.read()), signal.SIGKILL)
    killed = time.monotonic()
    # The survivor notices the missed heartbeats and ends; it must not wait
    # in a collective forever.
    out, _ = proc.communicate(timeout=120)
    waited = time.monotonic() - killed
  finally:
    _kill_group(proc)
  assert proc.returncode != 0, out
  assert 'process 1 exited with status 137' in out, out
  log0 = open(os.path.join(workdir, 'logs', 'process_0.log')).read()
  assert 'stopped sending heartbeats' in log0, _logs(workdir)
  assert waited < 120
  # The last complete checkpoint restores.
  steps = workdir_lib.complete_steps(checkpoints)
  assert steps and steps[-1] >= 4
  params = _params(workdir, steps[-1])
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(params))
