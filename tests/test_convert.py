"""MDP checkpoint conversion: layouts, key checks, the command line."""

import pickle
import sys

import jax
import numpy as np
import pytest

from wmmt_jax import convert
from wmmt_jax.models import mdp

SMALL = dict(visual_dim=8, audio_dim=6, pooled_visual_dim=4, embed_dim=4,
             qkv_dim=6, head_dim=5)


def _random_state_dict(model=None, seed=0):
  """A numpy state_dict with MDP's keys and `model`'s PyTorch shapes."""
  rng = np.random.default_rng(seed)
  abstract = convert.mdp_abstract_variables(model)
  torch_shapes = convert.mdp_params_to_torch(
      jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), abstract))
  return {k: rng.normal(size=v.shape).astype(np.float32)
          for k, v in torch_shapes.items()}


def test_key_map_covers_every_parameter_once():
  abstract = convert.mdp_abstract_variables(mdp.MDP(**SMALL))['params']
  flax_paths = {tuple(k.key for k in path) for path, _ in
                jax.tree_util.tree_flatten_with_path(abstract)[0]}
  mapped = [path for _, path, _ in convert.MDP_KEY_MAP]
  assert len(mapped) == len(set(mapped)) == len(flax_paths) == 31
  assert set(mapped) == flax_paths


def test_layouts():
  model = mdp.MDP(**SMALL)
  state_dict = _random_state_dict(model)
  params = convert.mdp_params_from_torch(state_dict, model)['params']
  # Conv1d [out, in, k] -> [k, in, out]; Linear [out, in] -> [in, out].
  w = state_dict['visual_embed.f_embed.0.weight']
  np.testing.assert_array_equal(params['visual_embed']['kernel'][2, 1, 3],
                                w[3, 1, 2])
  w = state_dict['cross_attention_visual2audio.query_layer.weight']
  np.testing.assert_array_equal(params['inter_fe_v2a']['query']['kernel'],
                                w.T)
  w = state_dict['aness_module.f_cls.0.weight']
  np.testing.assert_array_equal(params['head']['cls']['kernel'][0],
                                w[..., 0].T)
  np.testing.assert_array_equal(params['audio_norm']['scale'],
                                state_dict['audio_layerNorm.weight'])


def test_round_trip_numpy():
  model = mdp.MDP(**SMALL)
  state_dict = _random_state_dict(model)
  back = convert.mdp_params_to_torch(
      convert.mdp_params_from_torch(state_dict, model))
  assert list(back) == list(state_dict)
  for key, value in state_dict.items():
    np.testing.assert_array_equal(back[key], value)


def test_round_trip_through_pytorch_module():
  torch = pytest.importorskip('torch')
  import mdp_torch_reference  # pylint: disable=g-import-not-at-top
  net = mdp_torch_reference.MDP(**SMALL)
  state_dict = {k: v.numpy() for k, v in net.state_dict().items()}
  variables = convert.mdp_params_from_torch(state_dict, mdp.MDP(**SMALL))
  back = convert.mdp_params_to_torch(variables)
  other = mdp_torch_reference.MDP(**SMALL)
  # strict=True: the keys are exactly the module's.
  other.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()})
  for key, value in net.state_dict().items():
    assert torch.equal(other.state_dict()[key], value), key


def test_bad_state_dict_lists_every_problem():
  model = mdp.MDP(**SMALL)
  state_dict = _random_state_dict(model)
  del state_dict['audio_layerNorm.bias']
  state_dict['module.visual_layerNorm.weight'] = np.zeros(4)
  state_dict['aness_module.f_cls.0.weight'] = np.zeros((2, 5))
  state_dict['visual_embed.f_embed.0.bias'] = np.zeros(3)
  with pytest.raises(ValueError) as e:
    convert.mdp_params_from_torch(state_dict, model, source='ckpt.pth')
  message = str(e.value)
  assert 'ckpt.pth' in message
  for text in ('missing keys: audio_layerNorm.bias',
               'unexpected keys: module.visual_layerNorm.weight',
               'aness_module.f_cls.0.weight: got (2, 5), expected (2, 5, 1)',
               'visual_embed.f_embed.0.bias: got (3,), expected (4,)'):
    assert text in message


def test_cli_on_numpy_pickle_restores_same_params(tmp_path, capsys):
  state_dict = _random_state_dict()  # MDP's real widths, as the CLI uses.
  path = tmp_path / 'mdp.pkl'
  with open(path, 'wb') as f:
    pickle.dump(state_dict, f)
  out = tmp_path / 'flax'
  convert.main(['mdp', '--torch-checkpoint', str(path), '--out', str(out)])
  assert 'Orbax checkpoint' in capsys.readouterr().out
  restored = convert.mdp_params_to_torch(convert.load_mdp_checkpoint(out))
  for key, value in state_dict.items():
    np.testing.assert_array_equal(np.asarray(restored[key]), value)
  with pytest.raises(SystemExit, match='--force'):
    convert.main(['mdp', '--torch-checkpoint', str(path), '--out', str(out)])


def test_reads_torch_save_of_state_dict(tmp_path):
  """MDP's own format: torch.save(model.state_dict(), 'model_best.pth.tar')."""
  torch = pytest.importorskip('torch')
  import mdp_torch_reference  # pylint: disable=g-import-not-at-top
  net = mdp_torch_reference.MDP(**SMALL)
  path = tmp_path / 'model_best.pth.tar'
  torch.save(net.state_dict(), path)
  state_dict = convert.load_state_dict(path)
  assert list(state_dict) == list(net.state_dict())
  for key, value in net.state_dict().items():
    np.testing.assert_array_equal(state_dict[key], value.numpy())


def test_pth_without_torch_says_how_to_install(tmp_path, monkeypatch):
  path = tmp_path / 'model_best.pth.tar'
  with open(path, 'wb') as f:  # What torch.save writes: a zip archive.
    f.write(b'PK\x05\x06' + b'\0' * 18)
  monkeypatch.setitem(sys.modules, 'torch', None)
  with pytest.raises(ImportError, match=r"pip install -e '\.\[torch\]'"):
    convert.load_state_dict(path)
