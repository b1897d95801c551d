"""Train-step throughput of MDP: ours (JAX, jit) against PyTorch (eager).

One run measures both, side by side, on the same weights and inputs: MDP's
real widths, training mode (dropout 0.7), MDP's loss and MDP's optimiser
(Adam, lr 1e-5, L2 weight decay 5e-4 added to the gradient). Compilation and
warm-up steps are excluded. The PyTorch model is tests/mdp_torch_reference.py.

  python benchmarks/mdp_vs_torch.py                 # B = 8, T = 500
  python benchmarks/mdp_vs_torch.py --steps 10 --repeats 3

CPU figures depend on the load of the machine: check `uptime` and repeat.
"""

import argparse
import os
import sys
import time

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)
sys.path.insert(0, os.path.join(_ROOT, 'tests'))

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import torch

import mdp_torch_reference
from wmmt_jax import convert
from wmmt_jax import train
from wmmt_jax.models import mdp
# pylint: enable=g-import-not-at-top,wrong-import-position

# MDP's optimiser (train.py of wenboxu98/MDP).
OPTIMIZER = dict(learning_rate=1e-5, weight_decay=5e-4, adam_b1=0.9,
                 adam_b2=0.999, adam_eps=1e-8)


def _time_steps(step, warmup, steps):
  """Runs `step()` (which must block) `warmup + steps` times.

  Returns:
    `[steps, 2]`: wall-clock and process CPU seconds of each timed step. The
    CPU time (all threads) is far less sensitive than the wall clock to
    other programs sharing the cores.
  """
  for _ in range(warmup):
    step()
  times = []
  for _ in range(steps):
    wall, cpu = time.perf_counter(), time.process_time()
    step()
    times.append((time.perf_counter() - wall, time.process_time() - cpu))
  return np.array(times)


def make_jax_step(state_dict, visual, audio, label):
  """One jitted train step of `wmmt_jax.models.MDP`, blocking; compiled."""
  model = mdp.MDP()
  params = convert.mdp_params_from_torch(state_dict)['params']
  params = jax.tree.map(jnp.asarray, params)
  tx = train.create_optimizer(ml_collections.ConfigDict(OPTIMIZER))
  opt_state = tx.init(params)
  dropout_key = jax.random.key(0)

  def train_step(params, opt_state, step, visual, audio, label):
    def loss_fn(params):
      out = model.apply({'params': params}, visual, audio, train=True,
                        rngs={'dropout': jax.random.fold_in(dropout_key,
                                                            step)})
      return mdp.mdp_loss(out, label)[0]
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, step + 1, loss

  train_step = jax.jit(train_step, donate_argnums=(0, 1))
  batch = tuple(jnp.asarray(x) for x in (visual, audio, label))
  state = [params, opt_state, jnp.zeros((), jnp.int32)]

  def step():
    params, opt_state, step_count, loss = train_step(*state, *batch)
    state[:] = [params, opt_state, step_count]  # The old ones were donated.
    loss.block_until_ready()

  start = time.perf_counter()
  step()  # Compiles.
  print(f'JAX compile + first step: {time.perf_counter() - start:.1f} s',
        flush=True)
  return step


def make_torch_step(net, visual, audio, label):
  """One eager train step of the PyTorch MDP."""
  net.train()
  optimizer = torch.optim.Adam(
      net.parameters(), lr=OPTIMIZER['learning_rate'],
      betas=(OPTIMIZER['adam_b1'], OPTIMIZER['adam_b2']),
      eps=OPTIMIZER['adam_eps'], weight_decay=OPTIMIZER['weight_decay'])
  visual, audio = torch.from_numpy(visual), torch.from_numpy(audio)
  one_hot = torch.from_numpy(np.eye(2, dtype=np.float32)[label])

  def step():
    optimizer.zero_grad()
    video_scores, _, _, dp_score = net(visual, audio)
    mdp_torch_reference.mdp_loss(video_scores, one_hot, dp_score).backward()
    optimizer.step()

  return step


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--frames', type=int, default=500)
  parser.add_argument('--steps', type=int, default=5, help='timed steps')
  parser.add_argument('--warmup', type=int, default=1,
                      help='untimed steps before each timed block')
  parser.add_argument('--repeats', type=int, default=2,
                      help='alternate the two frameworks this many times')
  parser.add_argument('--torch-threads', type=int, default=2)
  args = parser.parse_args()

  torch.set_num_threads(args.torch_threads)
  torch.manual_seed(0)
  rng = np.random.default_rng(0)
  b, t = args.batch, args.frames
  visual = rng.normal(size=(b, t, 2048)).astype(np.float32)
  audio = rng.normal(size=(b, t, 1024)).astype(np.float32)
  label = rng.integers(0, 2, size=b)
  net = mdp_torch_reference.MDP()
  state_dict = {k: v.numpy().copy() for k, v in net.state_dict().items()}
  print(f'MDP train step, B = {b}, T = {t}, real widths; JAX {jax.__version__}'
        f' on {jax.devices()[0].platform} ({os.cpu_count()} cores), PyTorch '
        f'{torch.__version__} with {torch.get_num_threads()} threads; '
        f'load average {os.getloadavg()[0]:.2f}', flush=True)

  steps = (('JAX (jit)', make_jax_step(state_dict, visual, audio, label)),
           ('PyTorch (eager)', make_torch_step(net, visual, audio, label)))
  rows = []
  for repeat in range(args.repeats):
    for name, step in steps:
      wall, cpu = np.median(_time_steps(step, args.warmup, args.steps),
                            axis=0)
      rows.append((repeat, name, wall, b / wall, cpu, os.getloadavg()[0]))
  # Medians over the timed steps; "load" is the 1-minute load average.
  print(f'\n{"run":>3}  {"framework":<16} {"wall s/step":>11} '
        f'{"videos/s":>8} {"CPU s/step":>10} {"load":>5}')
  for repeat, name, wall, rate, cpu, load in rows:
    print(f'{repeat:>3}  {name:<16} {wall:>11.3f} {rate:>8.2f} {cpu:>10.3f} '
          f'{load:>5.2f}')


if __name__ == '__main__':
  main()
