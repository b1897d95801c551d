"""Table IV: single-task vs multitask training of T_a and T_v (Sec. IV-D).

  python -m wmmt_jax.sweep --sweep=configs/experiments/table4.py \
      --workdir_root=/tmp/table4 --set dataset.root=/data/LAV-DF

Training side, as the paper describes it: "T_a only" trains the audio task
alone (L_a), "T_v only" the visual task alone (L_v), and "with MTL" trains
T_a and T_v jointly (L_a + L_v); the multimodal task T_m is left out of all
four ("its MTL effect is not analyzed separately"), so `loss.weight_m = 0`.
The deviation loss is kept, measured on the trained task(s) (an objective on
T_m would train the other modality through F_m). The architecture (IntraFE,
InterFE) is the base's: the paper does not say it changes.

Evaluation "on T_a" / "on T_v": `eval.task` 'a' / 'v' takes the proposals
of `h_a` / `h_v` for every video and scores them against the audio / visual
forged segments (`VideoRecord.audio_segments` / `visual_segments`).
"""

from configs.experiments import base

# The report's headers for the fields this table varies.
COLUMN_NAMES = {'loss.weight_m': 'w_m', 'loss.weight_v': 'w_v',
                'loss.weight_a': 'w_a', 'loss.dp_objective': 'L_dp on',
                'eval.task': 'on'}


def get_config(arg=None):
  return base.get_config(arg)


def get_hyper(arg=None):
  """T_a only, T_v only, T_a with MTL, T_v with MTL (training side only)."""
  del arg
  single_a = {'loss.weight_m': 0.0, 'loss.weight_v': 0.0,
              'loss.dp_objective': 'a', 'eval.task': 'a'}
  single_v = {'loss.weight_m': 0.0, 'loss.weight_a': 0.0,
              'loss.dp_objective': 'v', 'eval.task': 'v'}
  joint = {'loss.weight_m': 0.0, 'loss.dp_objective': 'a+v'}
  return [
      dict(single_a, row='T_a only'),
      dict(single_v, row='T_v only'),
      # The same training, evaluated on T_a and on T_v.
      dict(joint, row='T_a with MTL', **{'eval.task': 'a'}),
      dict(joint, row='T_v with MTL', **{'eval.task': 'v'}),
  ]
