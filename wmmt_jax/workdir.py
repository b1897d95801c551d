"""Start-up checks of a workdir, done before a run writes anything there.

- Writable: the directory can be created and a probe file written in it.
- Room: the file system has space for the checkpoints still to be written.
- Resumable: a checkpoint already there holds arrays of this model's shapes
  and dtypes (Orbax's metadata against the abstract train state), and its
  `config.json` agrees with this config up to the fields that may change
  between the restarts of one run (`RESUME_SAFE_KEYS`).

Each failure raises `errors.WorkdirError` naming the path and what differs;
nothing in the workdir is overwritten or deleted.
"""

import json
import os
import shutil
import uuid

from absl import logging
from etils import epath
import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorflow as tf

from wmmt_jax import errors

CHECKPOINT_SUBDIR = 'checkpoints'
CONFIG_FILE = 'config.json'
# Orbax's item name of a single-item CheckpointManager.
_ITEM = 'default'

# Config fields (and subtrees) that may differ between the restarts of one
# run: they set how long it runs, how often it logs, saves and evaluates, how
# it is evaluated, where the same data lives and what a non-finite step does,
# not the parameters of the steps that run normally. (total_steps is safe
# because no learning-rate schedule depends on it.)
RESUME_SAFE_KEYS = (
    'total_steps', 'checkpoint_every_steps', 'keep_checkpoints',
    'log_every_steps', 'eval_every_steps', 'skip_nonfinite_updates',
    'resume_allow_config_changes', 'dataset.root', 'dataset.prefetch',
    'dataset.eval_split', 'dataset.eval_subset', 'dataset.eval_length_buckets',
    'eval')

# Orbax writes a few hundred bytes of metadata per array beside the data.
_METADATA_BYTES_PER_ARRAY = 2048
# Room kept for logs, TensorBoard events and the JSON outputs.
_LOG_ROOM_BYTES = 64 << 20
# Differences listed in an error message; the rest are counted.
_MAX_LISTED = 8


def _reason(e):
  return getattr(e, 'message', None) or str(e) or type(e).__name__


def _mib(n):
  return f'{n / 2**20:.1f} MiB'


def check_writable(workdir):
  """Creates `workdir` if missing and writes (then removes) a probe file.

  Raises:
    errors.WorkdirError: naming the workdir and the OS's reason.
  """
  probe = os.path.join(workdir, f'.write-probe-{uuid.uuid4().hex}')
  try:
    tf.io.gfile.makedirs(workdir)
    with tf.io.gfile.GFile(probe, 'w') as f:
      f.write('probe\n')
    tf.io.gfile.remove(probe)
  except (OSError, tf.errors.OpError) as e:
    raise errors.WorkdirError(
        f'--workdir {workdir} is not writable: {_reason(e)}. Use a directory '
        'in which this user can create files.') from e


def checkpoint_bytes(abstract_state):
  """Estimated size of one checkpoint of `abstract_state` in bytes."""
  leaves = jax.tree.leaves(abstract_state)
  data = sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
             for x in leaves)
  return data + _METADATA_BYTES_PER_ARRAY * len(leaves)


def free_bytes(path):
  """Free bytes on the local file system holding `path`."""
  return shutil.disk_usage(path).free


def check_free_space(workdir, num_checkpoints, bytes_per_checkpoint):
  """Raises WorkdirError if `num_checkpoints` (plus logs) will not fit.

  Object stores (`gs://...`) have no free-space figure and are not checked.
  """
  if '://' in workdir:
    return
  needed = num_checkpoints * bytes_per_checkpoint + _LOG_ROOM_BYTES
  free = free_bytes(workdir)
  if free < needed:
    raise errors.WorkdirError(
        f'--workdir {workdir}: {_mib(free)} free on its file system, but the '
        f'run needs about {_mib(needed)} ({num_checkpoints} checkpoint(s) of '
        f'{_mib(bytes_per_checkpoint)} plus {_mib(_LOG_ROOM_BYTES)} for logs). '
        'Free some space or use another --workdir.')


def complete_steps(checkpoint_dir):
  """Steps of the complete (committed) checkpoints, ascending.

  A save interrupted by a kill leaves an Orbax temporary directory
  (`<step>.orbax-checkpoint-tmp-*`, or on object stores a step without its
  commit file), which is not listed.
  """
  if not tf.io.gfile.isdir(checkpoint_dir):
    return []
  return sorted(ocp.path.step.checkpoint_steps(checkpoint_dir))


def incomplete_checkpoints(checkpoint_dir):
  """Names of the interrupted saves' temporary directories."""
  if not tf.io.gfile.isdir(checkpoint_dir):
    return []
  return sorted(p.get().name
                for p in ocp.path.step.all_temporary_paths(checkpoint_dir))


def _key_name(key):
  for attr in ('key', 'name', 'idx'):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def array_specs(tree):
  """`{'params.x.kernel': (shape, dtype name)}` of a tree of arrays.

  Dict keys, attribute names and sequence indices all become path parts, so
  a live TrainState and the tree in Orbax's metadata give the same names.
  """
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {'.'.join(_key_name(k) for k in path):
              (tuple(x.shape), np.dtype(x.dtype).name) for path, x in flat}


def _spec_str(spec):
  shape, dtype = spec
  return f'{dtype}[{",".join(map(str, shape))}]'


def array_differences(saved, expected):
  """Lines describing how two `array_specs` differ; empty if they agree."""
  lines = []
  # Parameters first: they say more than the optimiser's copies of them.
  for key in sorted(saved.keys() | expected.keys(),
                    key=lambda k: (not k.startswith('params.'), k)):
    if key not in expected:
      lines.append(f'{key} is in the checkpoint but not in this model')
    elif key not in saved:
      lines.append(f'{key} ({_spec_str(expected[key])}) is not in the '
                   'checkpoint')
    elif saved[key] != expected[key]:
      lines.append(f'{key} is {_spec_str(saved[key])} in the checkpoint, '
                   f'{_spec_str(expected[key])} in this model')
  return lines


def flatten(tree, prefix=''):
  """A nested JSON dict as `{'a.b.c': value}`."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(flatten(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def config_as_json(config):
  """The config as `config.json` holds it (tuples become lists)."""
  return json.loads(config.to_json_best_effort())


def config_differences(saved, current):
  """`[(key, saved value, current value)]` of differing config fields.

  Args:
    saved: a run's `config.json`, as a dict.
    current: `config_as_json` of this config.

  Fields present in only one of them (added or removed by a code change)
  are left out.
  """
  saved, current = flatten(saved), flatten(current)
  return [(k, saved[k], current[k])
          for k in sorted(saved.keys() & current.keys())
          if saved[k] != current[k]]


def is_resume_safe(key):
  """True if config field `key` may change between restarts of one run."""
  return any(key == k or key.startswith(k + '.') for k in RESUME_SAFE_KEYS)


def _listed(lines):
  shown = '; '.join(lines[:_MAX_LISTED])
  more = len(lines) - _MAX_LISTED
  return shown + (f'; and {more} more' if more > 0 else '')


def check_resumable(workdir, config, abstract_state):
  """Checks that this config can resume the workdir's newest checkpoint.

  Args:
    workdir: the run's workdir.
    config: this run's config.
    abstract_state: the train state's `ShapeDtypeStruct`s.

  Returns:
    The newest complete checkpoint's step, or None if there is none.

  Raises:
    errors.WorkdirError: the checkpoint's arrays differ from this model's
      (always), or `config.json` differs in fields outside
      `RESUME_SAFE_KEYS` (unless `config.resume_allow_config_changes`). The
      message names the differing arrays and config keys.
  """
  checkpoint_dir = os.path.join(workdir, CHECKPOINT_SUBDIR)
  steps = complete_steps(checkpoint_dir)
  if not steps:
    return None
  step = steps[-1]
  step_dir = os.path.join(checkpoint_dir, str(step))
  handler = ocp.StandardCheckpointHandler()
  try:
    metadata = handler.metadata(epath.Path(step_dir) / _ITEM)
  except Exception as e:  # pylint: disable=broad-except
    raise errors.WorkdirError(
        f'{step_dir}: cannot read the checkpoint\'s metadata ({_reason(e)}). '
        'Nothing in the workdir was changed; use another --workdir.') from e
  finally:
    handler.close()
  arrays = array_differences(array_specs(metadata), array_specs(abstract_state))

  changed = []
  config_path = os.path.join(workdir, CONFIG_FILE)
  if tf.io.gfile.exists(config_path):
    with tf.io.gfile.GFile(config_path) as f:
      changed = config_differences(json.load(f), config_as_json(config))
  unsafe = [c for c in changed if not is_resume_safe(c[0])]
  refuse_config = unsafe and not config.resume_allow_config_changes
  if arrays or refuse_config:
    parts = [f'--workdir {workdir} holds checkpoint step {step} of a '
             'different run, which this config cannot resume.']
    if unsafe:
      parts.append('config.json differs in ' + _listed(
          [f'{k} ({old!r} there, {new!r} here)' for k, old, new in unsafe])
                   + '.')
    if arrays:
      parts.append('Checkpoint arrays differ: ' + _listed(arrays) + '.')
    parts.append('Nothing in the workdir was changed. Use a new --workdir, '
                 'or the config this workdir was written with.')
    if not arrays:
      parts.append('To resume with these changes anyway, set '
                   '--config.resume_allow_config_changes=True.')
    raise errors.WorkdirError(' '.join(parts))
  if changed:
    logging.warning(
        'Resuming checkpoint step %d of %s with config changes: %s', step,
        workdir, ', '.join(f'{k}: {old!r} -> {new!r}'
                           for k, old, new in changed))
  return step


def check(workdir, config, abstract_state):
  """All start-up checks of `workdir` for a run of `config`.

  Returns:
    The newest complete checkpoint's step, or None.

  Raises:
    errors.WorkdirError: unwritable, too little space, or a checkpoint this
      config cannot resume.
  """
  check_writable(workdir)
  step = check_resumable(workdir, config, abstract_state)
  existing = len(complete_steps(os.path.join(workdir, CHECKPOINT_SUBDIR)))
  # Orbax writes a new checkpoint before it deletes the oldest one.
  to_write = max(config.keep_checkpoints + 1 - existing, 1)
  check_free_space(workdir, to_write, checkpoint_bytes(abstract_state))
  return step
