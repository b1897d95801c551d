"""MDP's PyTorch checkpoints <-> Flax variables of `wmmt_jax.models.MDP`.

MDP saves `torch.save(model.state_dict(), 'model_best.pth.tar')`: a plain
state_dict (no wrapper, no 'module.' prefix), whose keys DESIGN.md section 3
lists. Conv1d weights are `[out, in, k]` in PyTorch and `[k, in, out]` in
Flax; Linear weights `[out, in]` and `[in, out]`.

Command line (writes an Orbax checkpoint of the Flax variables):

  python -m wmmt_jax.convert mdp --torch-checkpoint model_best.pth.tar \
      --out /path/to/mdp_flax

`--torch-checkpoint` may also be a pickle of a dict `key -> numpy array`,
which needs no PyTorch. `load_mdp_checkpoint(directory)` reads the result.
"""

import argparse
import collections.abc
import os
import pickle
import sys
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from wmmt_jax.models import mdp

# How a parameter is stored in PyTorch relative to Flax. Both transposes
# reverse the axes, so each is its own inverse.
_CONV, _LINEAR, _SAME = 'conv', 'linear', 'same'


def _mdp_key_map():
  """`[(torch key, Flax param path, layout)]` for every MDP parameter."""
  rows = [
      ('aness_module.f_embed.0.weight', ('head', 'embed', 'kernel'), _CONV),
      ('aness_module.f_embed.0.bias', ('head', 'embed', 'bias'), _SAME),
      ('aness_module.f_cls.0.weight', ('head', 'cls', 'kernel'), _CONV),
  ]
  for modality in ('visual', 'audio'):
    rows += [
        (f'{modality}_embed.f_embed.0.weight', (f'{modality}_embed', 'kernel'),
         _CONV),
        (f'{modality}_embed.f_embed.0.bias', (f'{modality}_embed', 'bias'),
         _SAME),
        (f'{modality}_layerNorm.weight', (f'{modality}_norm', 'scale'), _SAME),
        (f'{modality}_layerNorm.bias', (f'{modality}_norm', 'bias'), _SAME),
    ]
  for torch_name, flax_name in (('audio2visual', 'inter_fe_a2v'),
                                ('visual2audio', 'inter_fe_v2a')):
    prefix = f'cross_attention_{torch_name}'
    for layer in ('query', 'key', 'value', 'output'):
      rows += [
          (f'{prefix}.{layer}_layer.weight', (flax_name, layer, 'kernel'),
           _LINEAR),
          (f'{prefix}.{layer}_layer.bias', (flax_name, layer, 'bias'), _SAME),
      ]
    rows += [
        (f'{prefix}_layerNorm.weight', (f'{flax_name}_norm', 'scale'), _SAME),
        (f'{prefix}_layerNorm.bias', (f'{flax_name}_norm', 'bias'), _SAME),
    ]
  return rows


MDP_KEY_MAP = _mdp_key_map()


def _relayout(x, layout):
  """PyTorch <-> Flax layout of one array (the same map both ways)."""
  x = np.asarray(x)
  if layout == _SAME:
    return x
  return np.ascontiguousarray(np.transpose(x))  # Reverses all axes.


def _get(tree, path):
  for name in path:
    tree = tree[name]
  return tree


def _set(tree, path, value):
  for name in path[:-1]:
    tree = tree.setdefault(name, {})
  tree[path[-1]] = value


def mdp_abstract_variables(model=None, num_frames=8):
  """Shapes and dtypes of `model`'s variables, `{'params': ...}`, no compute.

  Args:
    model: an `MDP` (default: MDP's widths).
    num_frames: any `T` (the parameters do not depend on it).
  """
  model = mdp.MDP() if model is None else model
  visual = jax.ShapeDtypeStruct((1, num_frames, model.visual_dim), jnp.float32)
  audio = jax.ShapeDtypeStruct((1, num_frames, model.audio_dim), jnp.float32)
  return jax.eval_shape(
      lambda v, a: model.init(jax.random.key(0), v, a, train=False), visual,
      audio)


def mdp_params_from_torch(state_dict, model=None, source='the state_dict'):
  """MDP's PyTorch state_dict -> Flax variables of `model`.

  Args:
    state_dict: mapping of MDP's parameter names to arrays (numpy arrays
      or torch tensors).
    model: the `MDP` whose shapes the arrays must have (default: MDP's
      widths).
    source: what `state_dict` came from, for error messages.

  Returns:
    `{'params': ...}`, a nested dict of numpy arrays for `model.apply`.

  Raises:
    ValueError: naming every missing, unexpected or mis-shaped key at once.
  """
  abstract = mdp_abstract_variables(model)['params']
  known = {key for key, _, _ in MDP_KEY_MAP}
  missing = [key for key in known if key not in state_dict]
  unexpected = [key for key in state_dict if key not in known]
  misshaped = []
  params = {}
  for key, path, layout in MDP_KEY_MAP:
    if key not in state_dict:
      continue
    value = _to_numpy(state_dict[key])
    # The PyTorch shape is the Flax shape reversed, or the same.
    want = _get(abstract, path).shape
    want = want if layout == _SAME else want[::-1]
    if value.shape != want:
      misshaped.append(f'{key}: got {value.shape}, expected {want}')
      continue
    _set(params, path, _relayout(value, layout))
  if missing or unexpected or misshaped:
    problems = []
    if missing:
      problems.append('missing keys: ' + ', '.join(sorted(missing)))
    if unexpected:
      problems.append('unexpected keys: ' + ', '.join(sorted(unexpected)))
    if misshaped:
      problems.append('wrong shapes: ' + '; '.join(misshaped))
    raise ValueError(f'{source} is not an MDP state_dict for this model:\n  ' +
                     '\n  '.join(problems))
  return {'params': params}


def mdp_params_to_torch(variables):
  """Flax variables of `MDP` -> MDP's PyTorch state_dict, as numpy arrays.

  `torch.load_state_dict({k: torch.from_numpy(v) ...})` on MDP's model then
  runs the same network in the released PyTorch code.

  Args:
    variables: `{'params': ...}` as `MDP.init` or `mdp_params_from_torch`
      give.

  Returns:
    `{torch key: np.ndarray}` in MDP's key order.
  """
  params = variables['params']
  return {key: _relayout(_get(params, path), layout)
          for key, path, layout in MDP_KEY_MAP}


def _to_numpy(value):
  if hasattr(value, 'detach'):  # A torch tensor.
    return value.detach().cpu().numpy()
  return np.asarray(value)


def _torch_load(path):
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        f'Reading the PyTorch checkpoint {path} needs PyTorch: '
        "pip install -e '.[torch]' (or pass a pickle of numpy arrays).") from e
  return torch.load(path, map_location='cpu', weights_only=True)


def load_state_dict(path):
  """Reads an MDP checkpoint: a `.pth` of `torch.save` or a numpy pickle.

  Args:
    path: a file written by `torch.save(model.state_dict(), path)` (MDP's
      `model_best.pth.tar`), or a pickle of a dict `key -> np.ndarray`.

  Returns:
    `{key: np.ndarray}`.
  """
  # torch.save writes a zip archive; anything else is tried as a pickle,
  # which also catches PyTorch's legacy format (a pickled magic number).
  obj = None
  if not zipfile.is_zipfile(path):
    with open(path, 'rb') as f:
      try:
        obj = pickle.load(f)
      except (pickle.UnpicklingError, EOFError) as e:
        raise ValueError(f'{path}: neither a torch.save checkpoint nor a '
                         'pickle of numpy arrays.') from e
  if not isinstance(obj, collections.abc.Mapping):
    obj = _torch_load(path)
  if not isinstance(obj, collections.abc.Mapping):
    raise ValueError(f'{path}: expected a mapping of parameter names to '
                     f'arrays (a state_dict), got {type(obj).__name__}.')
  return {key: _to_numpy(value) for key, value in obj.items()}


def save_checkpoint(variables, directory, force=False):
  """Writes `variables` as an Orbax (StandardCheckpointer) checkpoint.

  Args:
    variables: a pytree of arrays.
    directory: the checkpoint directory; it must not exist unless `force`.
    force: overwrite an existing `directory`.
  """
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.abspath(directory), variables, force=force)
  checkpointer.wait_until_finished()
  checkpointer.close()


def load_mdp_checkpoint(directory, model=None):
  """Restores the variables `convert mdp` wrote, for `model` (default MDP).

  Returns:
    `{'params': ...}` of jax arrays.
  """
  checkpointer = ocp.StandardCheckpointer()
  variables = checkpointer.restore(os.path.abspath(directory),
                                   mdp_abstract_variables(model))
  checkpointer.close()
  return variables


def _convert_mdp(args):
  state_dict = load_state_dict(args.torch_checkpoint)
  variables = mdp_params_from_torch(state_dict, source=args.torch_checkpoint)
  if os.path.exists(args.out) and not args.force:
    raise SystemExit(f'--out {args.out} exists; pass --force to overwrite.')
  save_checkpoint(variables, args.out, force=args.force)
  count = sum(x.size for x in jax.tree.leaves(variables))
  print(f'Wrote {len(MDP_KEY_MAP)} MDP tensors ({count:,} parameters) from '
        f'{args.torch_checkpoint} to the Orbax checkpoint {args.out}.')


def main(argv=None):
  """`python -m wmmt_jax.convert mdp --torch-checkpoint F --out DIR`."""
  parser = argparse.ArgumentParser(
      prog='python -m wmmt_jax.convert',
      description='Convert PyTorch checkpoints to Orbax checkpoints of Flax '
      'variables.')
  commands = parser.add_subparsers(dest='command', required=True)
  mdp_parser = commands.add_parser(
      'mdp', help="MDP's model_best.pth.tar -> wmmt_jax.models.MDP variables.")
  mdp_parser.add_argument(
      '--torch-checkpoint', required=True,
      help='torch.save(model.state_dict()) file, or a pickle of a dict of '
      'numpy arrays with the same keys.')
  mdp_parser.add_argument('--out', required=True,
                          help='Orbax checkpoint directory to write.')
  mdp_parser.add_argument('--force', action='store_true',
                          help='Overwrite --out if it exists.')
  args = parser.parse_args(argv)
  _convert_mdp(args)


if __name__ == '__main__':
  main(sys.argv[1:])
