"""`wmmt_jax.main` with one fault injected, for tests/test_fault_tolerance.py.

  WMMT_FAULT=KIND:STEP python tests/fault_injection_main.py --config=... \
      --workdir=...

KIND:
- `sigkill_after_step`: SIGKILL once train step STEP has been computed,
  before the loop saves or logs it.
- `sigterm_after_step`: SIGTERM to itself at the same point (a preemption
  notice arriving during step STEP).
- `sigkill_in_save`: SIGKILL as soon as `CheckpointManager.save(STEP)`
  returns, while the asynchronous write is under way.
- `sigkill_before_commit`: SIGKILL when Orbax is about to commit checkpoint
  STEP (every file written into its temporary directory, not yet renamed).
- `nan_at_step`: the visual inputs of step STEP are NaN, so its loss and
  gradients are.

The hooks wrap functions from outside; the production code has no test
branches. Without WMMT_FAULT this is plain `wmmt_jax.main`.
"""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint._src.path import atomicity

from wmmt_jax import main as wmmt_main
from wmmt_jax import train

KINDS = ('sigkill_after_step', 'sigterm_after_step', 'sigkill_in_save',
         'sigkill_before_commit', 'nan_at_step')


def _kill(signum, why):
  print(f'fault_injection_main: sending {signal.Signals(signum).name} '
        f'({why})', file=sys.stderr, flush=True)
  os.kill(os.getpid(), signum)


def _signal_after_step(fault_step, signum):
  jit_train_step = train.jit_train_step

  def patched(*args, **kwargs):
    step_fn = jit_train_step(*args, **kwargs)

    def wrapped(state, batch):
      state, metrics = step_fn(state, batch)
      # A host sync per step: fine in a test.
      if int(jax.device_get(state.step)) == fault_step:
        _kill(signum, f'after train step {fault_step}')
      return state, metrics
    return wrapped

  train.jit_train_step = patched


def _sigkill_in_save(fault_step):
  save = ocp.CheckpointManager.save

  def patched(self, step, *args, **kwargs):
    saved = save(self, step, *args, **kwargs)
    if step == fault_step:
      _kill(signal.SIGKILL, f'while checkpoint {step} is being written')
    return saved

  ocp.CheckpointManager.save = patched


def _sigkill_before_commit(fault_step):
  finalize = atomicity.AtomicRenameTemporaryPath.finalize

  async def patched(self, *args, **kwargs):
    if self.get_final().name == str(fault_step):
      _kill(signal.SIGKILL, f'before checkpoint {fault_step} is committed')
    return await finalize(self, *args, **kwargs)

  atomicity.AtomicRenameTemporaryPath.finalize = patched


def _nan_at_step(fault_step):
  # On the host batch, so the compiled train step is the usual one (and
  # comes from the compilation cache).
  next_batch = train._next_batch  # pylint: disable=protected-access

  def patched(train_iter, step):
    batch = next_batch(train_iter, step)
    if step == fault_step:
      batch = dict(batch, visual=np.full_like(batch['visual'], np.nan))
    return batch

  train._next_batch = patched  # pylint: disable=protected-access


def install(fault):
  """Installs the hook of `fault` ('KIND:STEP'); '' installs none."""
  if not fault:
    return
  kind, step = fault.split(':')
  step = int(step)
  if kind == 'sigkill_after_step':
    _signal_after_step(step, signal.SIGKILL)
  elif kind == 'sigterm_after_step':
    _signal_after_step(step, signal.SIGTERM)
  elif kind == 'sigkill_in_save':
    _sigkill_in_save(step)
  elif kind == 'sigkill_before_commit':
    _sigkill_before_commit(step)
  elif kind == 'nan_at_step':
    _nan_at_step(step)
  else:
    raise ValueError(f'WMMT_FAULT={fault!r}: unknown kind; expected one of '
                     f'{KINDS}.')


if __name__ == '__main__':
  install(os.environ.get('WMMT_FAULT', ''))
  jax.config.config_with_absl()
  app.run(wmmt_main.main)
