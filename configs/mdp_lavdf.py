"""MDP (wenboxu98/MDP) on LAV-DF with its released code's protocol.

DESIGN.md section 3. Train:

  python -m wmmt_jax.main --config=configs/mdp_lavdf.py \
      --config.dataset.root=/data/LAV-DF --workdir=/tmp/mdp_lavdf

Evaluate MDP's released PyTorch weights without training:

  python -m wmmt_jax.convert mdp --torch-checkpoint model_best.pth.tar \
      --out /tmp/mdp_orbax
  python -m wmmt_jax.main --config=configs/mdp_lavdf.py \
      --config.dataset.root=/data/LAV-DF --workdir=/tmp/mdp_eval \
      --config.eval.checkpoint=/tmp/mdp_orbax

`get_config('synthetic')` runs the same protocol on the embedded synthetic
dataset at the real widths (a smoke run of the protocol, not of the data).
"""

from configs import default


def get_config(arg=None):
  """MDP's protocol on LAV-DF; `arg='synthetic'` on the synthetic data."""
  if arg not in (None, '', 'synthetic'):
    raise ValueError(f"configs/mdp_lavdf.py: unknown config arg {arg!r}; "
                     "expected '' or 'synthetic'.")
  config = default.get_config('real_widths')
  config.model.name = 'mdp'
  # MDP's widths: 2048 -> 1024 channel pooling, 512 embeddings, 1024 Q/K/V,
  # a 1024-wide head with dropout 0.7, video scores from the top T // 5.
  config.model.pooled_visual_dim = 1024
  config.model.embed_dim = 512
  config.model.qkv_dim = 1024
  config.model.head_dim = 1024
  config.model.dropout_rate = 0.7
  config.model.topk_ratio = 5

  # MDP's train.py: seed 3407, batch 32, torch Adam with lr 1e-5 and L2
  # weight decay 5e-4 added to the gradient, 200k iterations.
  config.seed = 3407
  config.batch_size = 32
  config.learning_rate = 1e-5
  config.weight_decay = 5e-4
  config.adam_b1 = 0.9
  config.adam_b2 = 0.999
  config.adam_eps = 1e-8
  config.total_steps = 200_000
  config.checkpoint_every_steps = 5_000
  config.log_every_steps = 500
  # MDP evaluates during training and keeps the model of the best AP@0.75.
  config.eval_every_steps = 5_000
  config.eval.best_metric = 'ap@0.75'

  # Loss: MSE between the softmax video scores and the one-hot label, plus
  # 0.2 x BCE-with-logits of the DP score (mdp.mdp_loss).
  config.loss.weight_dp = 0.2

  config.dataset.name = 'lavdf'
  config.dataset.root = ''
  config.dataset.layout = 'mdp'
  config.dataset.visual_dim = 2048
  config.dataset.audio_dim = 1024
  config.dataset.audio_align = 'avg_pool'
  config.dataset.use_prepared = True
  # Train on all real videos plus the fakes with both modalities modified;
  # evaluate on LAV-DF dev, both-modified fakes only.
  config.dataset.train_split = 'train'
  config.dataset.train_subset = 'real_and_both'
  config.dataset.eval_split = 'dev'
  config.dataset.eval_subset = 'both_modified'
  # T = 500, one random frame per bin (short videos repeat frames, no mask).
  config.dataset.num_frames = 500
  config.dataset.train_sampling = 'bins'
  # Test at native length (MDP: batch 1); the padding is masked out.
  config.dataset.eval_length_buckets = (512, 1024, 2048)

  # MDP's proposals: runs where the fake CAS beats the real one, scored by
  # the mean fake CAS, in time order; no thresholds, NMS or cap. Every video
  # gets proposals (no classification gate).
  config.eval.protocol = 'lavdf'
  config.eval.batch_size = 8
  config.eval.proposal_method = 'mdp'
  config.eval.proposal_order = 'temporal'
  config.eval.max_proposals = 100_000
  config.eval.real_has_no_proposals = False
  config.eval.expert_selection = False
  # MDP's evaluator: AR over proposals in time order, and the ground truth of
  # videos without proposals left out of AR.
  config.eval.ar_order = 'temporal'
  config.eval.drop_gt_without_proposals = True

  if arg == 'synthetic':
    config.dataset.name = 'synthetic'
    config.dataset.use_prepared = False
    config.dataset.eval_split = 'test'
    config.dataset.eval_length_buckets = (128, 256, 512)
    config.dataset.num_frames = 128
    config.batch_size = 8
    config.total_steps = 200
    config.checkpoint_every_steps = 100
    config.log_every_steps = 50
    config.eval_every_steps = 100
    config.dataset.synthetic.num_train = 256
    config.dataset.synthetic.num_test = 64
  return config
