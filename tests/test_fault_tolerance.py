"""Fault injection: killed, preempted, poisoned and misdirected runs.

The end-to-end tests run the real `wmmt_jax.main` in subprocesses (through
`fault_injection_main.py`, which injects the fault named by WMMT_FAULT) on
the synthetic data with the tiny config: 8 steps, a checkpoint every 2, on
conftest.py's 4 fake CPU devices, whose compilation cache the subprocesses
share through the environment. The promise under test: a run killed at any
moment and restarted from its workdir ends bit for bit where an
uninterrupted run ends.

A subprocess spends most of its time importing and tracing, so after one
uninterrupted reference run (which fills the compilation cache) the
`scenarios` fixture runs every scenario's chain of runs side by side, and
each test checks its own scenario's record.

Start-up refusals, input errors and the skip option are also checked in
process, where they need no training.
"""

import errno
import hashlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import default
from input_pipeline import formats
from input_pipeline import pipeline
from input_pipeline import synthetic
from wmmt_jax import config_lib
from wmmt_jax import errors
from wmmt_jax import parallel
from wmmt_jax import preemption
from wmmt_jax import train
from wmmt_jax import workdir as workdir_lib

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_MAIN = os.path.join(_REPO, 'tests', 'fault_injection_main.py')
TOTAL_STEPS = 8
# One evaluation bucket (the test videos have at most 50 frames): one
# evaluation program to compile and trace per run.
_FLAGS = ('--config=configs/default.py:tiny',
          f'--config.total_steps={TOTAL_STEPS}',
          '--config.dataset.eval_length_buckets=(64,)')
# Generous: the CI machine may be shared and slow.
_TIMEOUT_S = 600
# Seeds of the random SIGKILL points.
_KILL_SEEDS = (0, 1, 2)


def _config(data_root):
  config = default.get_config('tiny')
  config.total_steps = TOTAL_STEPS
  config.dataset.eval_length_buckets = (64,)
  config.dataset.root = data_root
  return config


def _checkpoint_dir(workdir):
  return os.path.join(workdir, 'checkpoints')


class _Run:
  """One finished run of a scenario and its workdir's checkpoints after it."""

  def __init__(self, fault, returncode, output, workdir):
    self.fault = fault
    self.returncode = returncode
    self.output = output
    self.complete = workdir_lib.complete_steps(_checkpoint_dir(workdir))
    self.incomplete = workdir_lib.incomplete_checkpoints(
        _checkpoint_dir(workdir))

  def tail(self):
    return (f'--- {self.fault or "no fault"}: exit {self.returncode}, '
            f'checkpoints {self.complete}, incomplete {self.incomplete} ---\n'
            + '\n'.join(self.output.splitlines()[-40:]))


class _Scenario:
  """Runs in one workdir, one after the other: `[(fault, extra flags)]`."""

  def __init__(self, workdir, data_root, legs):
    self.workdir = workdir
    self.data_root = data_root
    self.legs = list(legs)
    self.runs = []
    # What the workdir held before, for a scenario that must not change it.
    self.before = None
    self._proc = None
    self._log = None
    self._started = 0.0

  def start_next(self):
    fault, extra = self.legs[len(self.runs)]
    os.makedirs(os.path.dirname(self.workdir), exist_ok=True)
    self._log = open(f'{self.workdir}.log{len(self.runs)}', 'w+')
    cmd = [sys.executable, _MAIN, f'--workdir={self.workdir}', *_FLAGS,
           f'--config.dataset.root={self.data_root}', *extra]
    self._proc = subprocess.Popen(
        cmd, cwd=_REPO, env=dict(os.environ, WMMT_FAULT=fault),
        stdout=self._log, stderr=subprocess.STDOUT, text=True)
    self._started = time.monotonic()

  @property
  def running(self):
    return self._proc is not None

  @property
  def waiting(self):
    return self._proc is None and len(self.runs) < len(self.legs)

  def poll(self):
    """Records the current run if it has ended; True if it has."""
    returncode = self._proc.poll()
    if returncode is None:
      if time.monotonic() - self._started < _TIMEOUT_S:
        return False
      self._proc.kill()
      self._proc.wait()
    self._log.seek(0)
    output = self._log.read()
    if returncode is None:
      output += f'\n[test: killed after {_TIMEOUT_S} s]'
    fault = self.legs[len(self.runs)][0]
    # A run the test had to kill has returncode None: no expectation holds.
    self.runs.append(_Run(fault, returncode, output, self.workdir))
    self._log.close()
    self._proc = None
    return True


def _run_side_by_side(scenarios, max_running):
  """Runs each scenario's legs in order, up to `max_running` at a time."""
  scenarios = list(scenarios)
  while any(s.running or s.waiting for s in scenarios):
    for s in scenarios:
      if s.waiting and sum(t.running for t in scenarios) < max_running:
        s.start_next()
    time.sleep(0.2)
    for s in scenarios:
      if s.running:
        s.poll()


def _state(workdir, step):
  path = os.path.join(_checkpoint_dir(workdir), str(step), 'default')
  return ocp.StandardCheckpointer().restore(path)


def _assert_bitwise_equal(a, b):
  """Same tree, and every leaf has the same dtype, shape and bytes."""
  flat_a, tree_a = jax.tree_util.tree_flatten_with_path(a)
  flat_b, tree_b = jax.tree_util.tree_flatten_with_path(b)
  assert tree_a == tree_b
  for (path, x), (_, y) in zip(flat_a, flat_b):
    x, y = np.asarray(x), np.asarray(y)
    assert (x.dtype, x.shape) == (y.dtype, y.shape), path
    assert x.tobytes() == y.tobytes(), jax.tree_util.keystr(path)


def _read(path):
  with open(path, 'rb') as f:
    return f.read()


def _assert_same_run_end(workdir, reference):
  """Final train state, results.json and predictions.json are identical."""
  _assert_bitwise_equal(_state(workdir, TOTAL_STEPS),
                        _state(reference, TOTAL_STEPS))
  for name in ('results.json', 'predictions.json'):
    assert _read(os.path.join(workdir, name)) == _read(
        os.path.join(reference, name)), name


def _snapshot(directory):
  """{relative path: sha256} of every file under `directory`."""
  out = {}
  for root, _, files in os.walk(directory):
    for name in files:
      path = os.path.join(root, name)
      out[os.path.relpath(path, directory)] = hashlib.sha256(
          _read(path)).hexdigest()
  return out


def _assert_clean_exit(run, returncode):
  assert run.returncode == returncode, run.tail()
  assert 'Traceback' not in run.output, run.tail()


def _kill_steps():
  return sorted(random.Random(seed).randint(1, TOTAL_STEPS)
                for seed in _KILL_SEEDS)


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
  """The tiny synthetic dataset, written once for every run here."""
  root = str(tmp_path_factory.mktemp('data'))
  synthetic.ensure_synthetic_dataset(root, _config(root))
  return root


@pytest.fixture(scope='module')
def reference(tmp_path_factory, data_root):
  """An uninterrupted run's workdir (run alone: it fills the compile cache)."""
  scenario = _Scenario(str(tmp_path_factory.mktemp('reference') / 'w'),
                       data_root, [('', ())])
  _run_side_by_side([scenario], 1)
  assert scenario.runs[0].returncode == 0, scenario.runs[0].tail()
  return scenario.workdir


@pytest.fixture(scope='module')
def scenarios(tmp_path_factory, data_root, reference):
  """Every end-to-end scenario, run side by side; {name: _Scenario}.

  Kill, SIGTERM and NaN faults are injected at fixed or seeded steps by
  `fault_injection_main.py`; each scenario's last run (if any) restarts
  without a fault.
  """
  base = tmp_path_factory.mktemp('scenarios')
  other_model = str(base / 'other_model')
  shutil.copytree(reference, other_model)
  legs = {
      'twin': [('', ())],
      # One run killed at each seeded step in turn, then restarted to the end.
      'sigkill': [(f'sigkill_after_step:{k}', ()) for k in _kill_steps()] +
                 [('', ())],
      # Killed while checkpoint 2 is being written; preempted at step 5 (not
      # a checkpoint step: the save is the preemption's own); killed with
      # checkpoint 6 written but not committed; restarted to the end.
      'preempt': [('sigkill_in_save:2', ()), ('sigterm_after_step:5', ()),
                  ('sigkill_before_commit:6', ()), ('', ())],
      'nan': [('nan_at_step:5', ())],
      'other_model': [('', ('--config.model.embed_dim=16',))],
  }
  out = {name: _Scenario(str(base / name), data_root, chain)
         for name, chain in legs.items()}
  out['other_model'].before = _snapshot(other_model)
  # Longest chains first; 4 at a time keeps 2 cores busy without thrashing.
  _run_side_by_side(sorted(out.values(), key=lambda s: -len(s.legs)), 4)
  return out


@pytest.mark.slow
def test_same_seed_gives_bitwise_identical_runs(reference, scenarios):
  twin = scenarios['twin']
  assert twin.runs[0].returncode == 0, twin.runs[0].tail()
  steps = workdir_lib.complete_steps(_checkpoint_dir(reference))
  assert steps == [4, 6, 8]  # keep_checkpoints = 3 of 2, 4, 6, 8.
  assert twin.runs[0].complete == steps
  for step in steps:
    _assert_bitwise_equal(_state(twin.workdir, step),
                          _state(reference, step))
  _assert_same_run_end(twin.workdir, reference)


@pytest.mark.slow
def test_sigkill_at_random_steps_then_restart_is_bitwise_identical(
    reference, scenarios):
  scenario = scenarios['sigkill']
  *killed, finished = scenario.runs
  resume_from = None
  for run, k in zip(killed, _kill_steps()):
    assert run.returncode == -signal.SIGKILL, run.tail()
    assert f'sending SIGKILL (after train step {k})' in run.output
    if resume_from is not None:
      assert f'Resuming from checkpoint step {resume_from} ' in run.output
    # Killed before the loop saved step k: only earlier steps can be there.
    assert all(s < k for s in run.complete), run.tail()
    resume_from = run.complete[-1] if run.complete else None
  assert finished.returncode == 0, finished.tail()
  if resume_from is not None:
    assert f'Resuming from checkpoint step {resume_from} ' in finished.output
  _assert_same_run_end(scenario.workdir, reference)


@pytest.mark.slow
def test_sigterm_saves_the_current_step_and_restart_continues(
    reference, scenarios):
  _, preempted, resumed, finished = scenarios['preempt'].runs
  _assert_clean_exit(preempted, preemption.EXIT_CODE)
  assert 'Preempted: saved checkpoint step 5' in preempted.output
  assert preempted.complete == [2, 4, 5], preempted.tail()
  assert not preempted.incomplete, preempted.tail()
  for run in (resumed, finished):
    assert 'Resuming from checkpoint step 5 ' in run.output, run.tail()
  assert finished.returncode == 0, finished.tail()
  _assert_same_run_end(scenarios['preempt'].workdir, reference)


@pytest.mark.slow
def test_kill_during_checkpoint_save_then_restart(reference, scenarios):
  in_save, preempted, before_commit, finished = scenarios['preempt'].runs
  # Killed while checkpoint 2 was being written (asynchronously): only the
  # temporary directory is there, and the next run starts afresh.
  assert in_save.returncode == -signal.SIGKILL, in_save.tail()
  assert 'sending SIGKILL (while checkpoint 2 is being written)' in (
      in_save.output)
  assert not in_save.complete, in_save.tail()
  assert [n.split('.')[0] for n in in_save.incomplete] == ['2']
  assert 'Removing 1 incomplete checkpoint(s)' in preempted.output
  assert 'Resuming' not in preempted.output
  # Killed with checkpoint 6 written but not committed: 5 is the newest.
  assert before_commit.returncode == -signal.SIGKILL, before_commit.tail()
  assert 'sending SIGKILL (before checkpoint 6 is committed)' in (
      before_commit.output)
  assert before_commit.complete == [2, 4, 5], before_commit.tail()
  assert [n.split('.')[0] for n in before_commit.incomplete] == ['6']
  assert finished.returncode == 0, finished.tail()
  assert 'Removing 1 incomplete checkpoint(s)' in finished.output
  assert not finished.incomplete, finished.tail()
  _assert_same_run_end(scenarios['preempt'].workdir, reference)


@pytest.mark.slow
def test_nan_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
    reference, scenarios):
  scenario = scenarios['nan']
  run, = scenario.runs
  _assert_clean_exit(run, 1)
  assert 'Non-finite' in run.output and 'at step 5;' in run.output
  assert 'The last good checkpoint is step 4' in run.output
  # Detected at the next log step (6), before its save.
  assert run.complete == [2, 4], run.tail()
  _assert_bitwise_equal(_state(scenario.workdir, 4), _state(reference, 4))
  assert not os.path.exists(os.path.join(scenario.workdir, 'results.json'))


@pytest.mark.slow
def test_mismatched_model_workdir_is_refused_and_left_unchanged(scenarios):
  scenario = scenarios['other_model']
  run, = scenario.runs
  _assert_clean_exit(run, 1)
  assert 'holds checkpoint step 8 of a different run' in run.output
  assert 'model.embed_dim (8 there, 16 here)' in run.output
  assert re.search(r'params\.\S+ is float32\[[\d,]+\] in the checkpoint, '
                   r'float32\[[\d,]+\] in this model', run.output)
  assert _snapshot(scenario.workdir) == scenario.before


# In process: refusals, input errors, the skip option, the helpers.


def test_same_shapes_other_config_is_refused_unless_allowed(reference,
                                                            data_root,
                                                            tmp_path):
  workdir = str(tmp_path / 'ablation')
  shutil.copytree(reference, workdir)
  before = _snapshot(workdir)
  config = _config(data_root)
  config.loss.dp_function = 'l1'  # Table V: same shapes, another run.
  with pytest.raises(errors.WorkdirError,
                     match=r"loss.dp_function \('mse' there, 'l1' here\).*"
                     'resume_allow_config_changes=True'):
    train.train_and_evaluate(config, workdir)
  assert _snapshot(workdir) == before

  # Resume-safe fields (how long, how often, how evaluated) may change.
  config = _config(data_root)
  config.total_steps = 10
  config.eval.batch_size = 8
  abstract = train.abstract_train_state(
      train.create_model(config), train.create_optimizer(config), config,
      parallel.make_mesh())
  assert workdir_lib.check_resumable(workdir, config, abstract) == 8


def test_unwritable_workdir_is_refused(tmp_path, data_root):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  with pytest.raises(errors.WorkdirError, match='is not writable'):
    train.train_and_evaluate(_config(data_root), str(blocker / 'w'))
  assert blocker.read_text() == 'not a directory'


def test_full_disk_is_refused_at_start_up(reference, data_root, tmp_path,
                                          monkeypatch):
  workdir = str(tmp_path / 'full')
  shutil.copytree(reference, workdir)
  before = _snapshot(workdir)
  monkeypatch.setattr(workdir_lib, 'free_bytes', lambda path: 1 << 20)
  with pytest.raises(errors.WorkdirError, match=r'1\.0 MiB free'):
    train.train_and_evaluate(_config(data_root), workdir)
  assert _snapshot(workdir) == before


class _FullDiskManager:
  directory = '/nowhere/checkpoints'

  def save(self, step, args):
    del step, args
    raise OSError(errno.ENOSPC, 'No space left on device')


def test_failed_save_names_the_cause():
  state = {'w': jnp.ones(3)}
  with pytest.raises(errors.WorkdirError,
                     match='step 6 .*the disk is full.*No complete checkpoint'):
    train._save_checkpoint(_FullDiskManager(), 6, state, 4)


def test_non_finite_state_is_never_saved():
  state = {'w': jnp.array([1.0, jnp.inf])}
  with pytest.raises(errors.NonFiniteError,
                     match='at step 6.*last good checkpoint is step 4'):
    train._save_checkpoint(_FullDiskManager(), 6, state, 4)


def _first_step_using(config, records, record_index):
  for step in range(config.total_steps):
    if record_index in pipeline.train_indices(
        config.seed, len(records), config.batch_size, step):
      return step + 1  # The loop's steps count from 1.
  raise AssertionError('record unused')


def test_corrupt_feature_file_mid_stream_names_the_file(data_root, tmp_path):
  root = str(tmp_path / 'data')
  shutil.copytree(data_root, root)
  config = _config(root)
  config.checkpoint_every_steps = 1
  records, dataset_dir = pipeline.get_records(config, '', 'train')
  # A video first read at step 3 or later, so training is under way.
  index, step = next((i, s) for i in range(len(records))
                     if (s := _first_step_using(config, records, i)) >= 3)
  path, _ = formats.feature_paths(dataset_dir, 'mdp', 'train',
                                  records[index].video_id)
  data = _read(path)
  with open(path, 'wb') as f:
    f.write(data[:len(data) // 2])
  workdir = str(tmp_path / 'w')
  with pytest.raises(errors.InputDataError) as e:
    train.train_and_evaluate(config, workdir)
  message = str(e.value)
  assert f'training batch of step {step} failed' in message
  assert f'{path}: not a readable .npy array' in message
  assert 'Traceback' not in message and '{{' not in message
  assert workdir_lib.complete_steps(_checkpoint_dir(workdir)) == list(
      range(max(1, step - 3), step))


def test_skip_nonfinite_updates_keeps_state_and_counts():
  config = default.get_config('tiny')
  config.skip_nonfinite_updates = True
  # The skip is model-agnostic: the smallest model compiles fastest.
  config.model.intra_fe = config.model.inter_fe = False
  config.model.multitask = config.loss.use_dp = False
  mesh = parallel.make_mesh()
  model = train.create_model(config)
  tx = train.create_optimizer(config)
  state, abstract = train.init_state(model, tx, config, mesh)
  step = train.jit_train_step(
      train.make_train_step(model, tx, config), mesh,
      jax.tree.map(lambda x: x.sharding, abstract))
  rng = np.random.default_rng(0)
  b, t = config.batch_size, config.dataset.num_frames
  batch = {
      'visual': rng.normal(size=(b, t, config.dataset.visual_dim)).astype(
          np.float32),
      'audio': rng.normal(size=(b, t, config.dataset.audio_dim)).astype(
          np.float32),
      'mask': np.ones((b, t), np.float32),
      'label': np.arange(b, dtype=np.int32) % 4,
  }
  before = jax.device_get(state)
  poisoned = dict(batch, visual=np.full_like(batch['visual'], np.nan))
  state, metrics = step(state, parallel.to_global(poisoned, mesh))
  assert int(state.step) == 1 and int(state.skipped_steps) == 1
  assert float(metrics['update_skipped']) == 1.0
  chex.assert_trees_all_equal(jax.device_get(state.params), before.params)
  chex.assert_trees_all_equal(jax.device_get(state.opt_state),
                              before.opt_state)
  state, metrics = step(state, parallel.to_global(batch, mesh))
  assert int(state.step) == 2 and int(state.skipped_steps) == 1
  assert float(metrics['update_skipped']) == 0.0
  assert np.isfinite(float(metrics['loss']))
  assert bool(train._all_finite(state.params))
  leaf = jax.tree.leaves(state.params)[0]
  assert not np.array_equal(np.asarray(leaf),
                            jax.tree.leaves(before.params)[0])


def test_summary_and_check_skip_the_skipped_steps():
  history = [
      {'loss': np.float32(1.0), 'update_skipped': np.float32(0),
       'skipped_steps': np.int32(0)},
      {'loss': np.float32(np.nan), 'update_skipped': np.float32(1),
       'skipped_steps': np.int32(1)},
      {'loss': np.float32(3.0), 'update_skipped': np.float32(0),
       'skipped_steps': np.int32(1)},
  ]
  train._check_finite(history, 1, None, '/c')
  assert train._summarize(history) == {'loss': 2.0, 'skipped_steps': 1}
  history[1]['update_skipped'] = np.float32(0)
  with pytest.raises(errors.NonFiniteError,
                     match='loss=nan at step 2;.*No checkpoint was written'):
    train._check_finite(history, 1, None, '/c')


def test_preemption_watcher_notes_sigterm_and_restores_the_handler():
  previous = signal.getsignal(signal.SIGTERM)
  with preemption.PreemptionWatcher(None) as watcher:
    assert not watcher.reached(1)
    os.kill(os.getpid(), signal.SIGTERM)
    assert watcher.reached(2)
  assert signal.getsignal(signal.SIGTERM) is previous


def test_config_differences_and_resume_safe_keys():
  saved = {'seed': 0, 'total_steps': 6, 'eval': {'batch_size': 4},
           'model': {'embed_dim': 8, 'old_field': 1}}
  current = {'seed': 0, 'total_steps': 8, 'eval': {'batch_size': 8},
             'model': {'embed_dim': 16, 'new_field': 2}}
  assert workdir_lib.config_differences(saved, current) == [
      ('eval.batch_size', 4, 8), ('model.embed_dim', 8, 16),
      ('total_steps', 6, 8)]
  assert workdir_lib.is_resume_safe('eval.batch_size')
  assert workdir_lib.is_resume_safe('total_steps')
  assert not workdir_lib.is_resume_safe('eval_every_step')
  assert not workdir_lib.is_resume_safe('model.embed_dim')
  assert not workdir_lib.is_resume_safe('learning_rate')


@pytest.mark.parametrize('key', ['skip_nonfinite_updates',
                                 'resume_allow_config_changes'])
def test_bad_fault_tolerance_config_values_name_the_key(key):
  values = default.get_config('tiny').to_dict()
  values[key] = 'yes'
  with pytest.raises(ValueError, match=key):
    config_lib.validate(ml_collections.ConfigDict(values), 4)
