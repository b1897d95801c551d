"""Predicts one video (or a folder of them) with a trained run.

  python -m wmmt_jax.predict --workdir=W --visual v.npy --audio a.npy \
      [--fps 25] [--png out.png] [--metadata metadata.json --file train/1.mp4]
  python -m wmmt_jax.predict --workdir=W --visual_dir feats/visual \
      --audio_dir feats/audio --output preds.jsonl [--png_dir pngs/]

Loads `W/config.json` and the parameters of `W/best` (the best evaluation,
`eval.best_metric`) if it exists, else of the newest checkpoint in
`W/checkpoints` (or `--checkpoint_step`). A video's visual features are
`[T, visual_dim]`, its audio features `[T_a, audio_dim]` at their own rate,
aligned to T with the run's `dataset.audio_align`. It prints one JSON
object:

  {"pred_class": 1, "class_name": "both_forged",
   "probs": {"real": .., "both_forged": .., "visual_only": ..,
             "audio_only": ..},
   "expert": "h_m", "segments": [[score, start_s, end_s], ...], ...}

`expert` is the head whose forgery activation sequence (FAS) gave the
segments (modality-aware expert selection: both forged -> h_m, visual only
-> h_v, audio only -> h_a), null when the video is predicted real and so
gets none (`eval.real_has_no_proposals`). Segments come from
`inference.video_proposals` with the run's `eval` config, best first, in
seconds at `--fps`. A folder gives one such line per `{id}.npy` found in
both folders (`id` added), as JSON lines.

`--png` draws the video's timeline (`plots.timeline_figure`): the chosen
head's FAS, the segments and, with `--metadata` and `--file`, the ground
truth.
"""

import functools
import glob
import json
import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from input_pipeline import formats
from input_pipeline import pipeline
from wmmt_jax import parallel
from wmmt_jax import train
from wmmt_jax import workdir as workdir_lib
from wmmt_jax.evaluation import inference
from wmmt_jax.models import long_video
from wmmt_jax.models import mdp
from wmmt_jax.models import wmmt

CLASS_NAMES = ('real', 'both_forged', 'visual_only', 'audio_only')
# `expert_select`'s `expert` (the class whose head was used) -> head name.
EXPERT_HEADS = {wmmt.BOTH: 'h_m', wmmt.VISUAL_ONLY: 'h_v',
                wmmt.AUDIO_ONLY: 'h_a'}


def load_config(workdir):
  """The run's config from `{workdir}/config.json`."""
  path = os.path.join(workdir, workdir_lib.CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path}: missing; --workdir must be a run '
                            'written by wmmt_jax.main / train_and_evaluate.')
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def restore_params(workdir, config, model, step=None):
  """`(params as numpy, checkpoint dir)` of a run.

  `{workdir}/best` (parameters only) if it exists and `step` is None, else
  step `step` (default: the newest) of `{workdir}/checkpoints` (the whole
  train state).
  """
  mesh = parallel.make_mesh()
  abstract = train.abstract_train_state(
      model, train.create_optimizer(config), config, mesh)
  best = os.path.join(os.path.abspath(workdir), train.BEST_SUBDIR)
  if step is None and workdir_lib.complete_steps(best):
    directory, target, pick = best, abstract.params, lambda s: s
  else:
    directory = os.path.join(os.path.abspath(workdir),
                             workdir_lib.CHECKPOINT_SUBDIR)
    target, pick = abstract, lambda s: s.params
  steps = workdir_lib.complete_steps(directory)
  if not steps:
    raise FileNotFoundError(f'{directory}: no complete checkpoint.')
  if step is None:
    step = steps[-1]
  elif step not in steps:
    raise ValueError(f'--checkpoint_step={step}: not in {directory} '
                     f'(steps {steps}).')
  mngr = ocp.CheckpointManager(directory)
  try:
    restored = mngr.restore(step, args=ocp.args.StandardRestore(target))
  finally:
    mngr.close()
  return parallel.to_host(pick(restored)), os.path.join(directory, str(step))


def _pool(x, mask):
  """Mean over the valid steps: `[B, T, D]` -> `[B, D]` float32."""
  m = mask.astype(jnp.float32)[..., None]
  return jnp.sum(x.astype(jnp.float32) * m, axis=1) / jnp.maximum(
      jnp.sum(m, axis=1), 1.0)


def pooled_features(outputs, visual, audio, mask):
  """Video-level features before and after enhancement (Fig. 4).

  Returns:
    `input_v` `[B, D_v]`, `input_a` `[B, D_a]`, `input_m` (both): the
    pre-trained features, mean-pooled over valid steps; and where the model
    has them, `enhanced_v` (`F''_v`), `enhanced_a` (`F''_a`) and
    `enhanced_m` (`F_m`), mean-pooled likewise.
  """
  out = {'input_v': _pool(visual, mask), 'input_a': _pool(audio, mask)}
  out['input_m'] = jnp.concatenate([out['input_v'], out['input_a']], -1)
  features = outputs.get('features', {}) if isinstance(outputs, dict) else {}
  for task in ('v', 'a', 'm'):
    if task in features:
      out[f'enhanced_{task}'] = _pool(features[task], mask)
  return out


@functools.lru_cache(maxsize=8)
def _predict_step(model, use_experts, chunk_size):
  """`(params, visual, audio, mask) -> outputs`, jitted once per model.

  As `inference.make_eval_step`: WMMT on videos longer than `chunk_size`
  (> 0) runs chunked (`long_video.forward`, the same result in bounded
  memory, without the enhanced features). Flax modules hash by their
  fields, so Predictors of the same model share the compiled programs.
  """

  def step(params, visual, audio, mask):
    if (chunk_size and isinstance(model, wmmt.WMMT) and
        visual.shape[1] > chunk_size):
      outputs = long_video.forward(model, params, visual, audio, mask,
                                   chunk=chunk_size)
    else:
      outputs = model.apply({'params': params}, visual, audio, mask,
                            train=False)
    if isinstance(model, mdp.MDP):
      out = mdp.eval_outputs(outputs)
    else:
      out = wmmt.expert_select(outputs, use_experts)
    out['pooled'] = pooled_features(outputs, visual, audio, mask)
    return out

  return jax.jit(step)


class Predictor:
  """Runs a trained model on single videos at native length.

  Each video is padded to its `dataset.eval_length_buckets` bucket, as in
  evaluation, so there is one compile per bucket; WMMT on videos longer
  than `eval.chunk_size` runs chunked, as in evaluation.
  """

  def __init__(self, config, model, params):
    self.config = config
    self.params = jax.device_put(params)
    self._step = _predict_step(
        model, bool(config.eval.expert_selection and config.model.multitask),
        int(config.eval.get('chunk_size', 0)))

  @classmethod
  def from_workdir(cls, workdir, step=None):
    """`(Predictor, checkpoint path)` of a run's workdir."""
    config = load_config(workdir)
    model = train.create_model(config)
    params, path = restore_params(workdir, config, model, step)
    return cls(config, model, params), path

  def predict(self, visual, audio, fps):
    """One video's prediction.

    Args:
      visual: `[T, D_v]` features.
      audio: `[T, D_a]` features, already aligned to T (`align`).
      fps: frames per second of the visual features.

    Returns:
      A dict with `pred_class`, `probs` `[4]`, `expert` (1 = h_m, 2 = h_v,
      3 = h_a), `fas` `[T, 2]` (the chosen head's real / forged
      probabilities), `proposals` `[K, 3]` (score, start_s, end_s),
      `pooled` (`pooled_features`, each `[D]`), `fps` and `num_frames`.
    """
    t = visual.shape[0]
    length = pipeline.bucket_length(t, self.config.dataset.eval_length_buckets)
    mask = np.zeros((1, length), np.float32)
    mask[0, :t] = 1.0

    def pad(x):
      out = np.zeros((1, length, x.shape[1]), np.float32)
      out[0, :t] = x
      return out

    out = jax.device_get(self._step(self.params, pad(visual), pad(audio),
                                    mask))
    pred = int(out['pred_class'][0])
    fas = np.asarray(out['fas'][0, :t], np.float32)
    return {
        'pred_class': pred,
        'probs': np.asarray(out['video_probs'][0], np.float32),
        'expert': int(out['expert'][0]),
        'fas': fas,
        'proposals': inference.video_proposals(fas, fps, pred,
                                               self.config.eval),
        'pooled': {k: np.asarray(v[0]) for k, v in out['pooled'].items()},
        'fps': float(fps),
        'num_frames': t,
    }

  def align(self, audio, num_frames):
    """Audio `[T_a, D_a]` aligned to the visual length, as the run did."""
    return formats.align_audio(audio, num_frames,
                               self.config.dataset.audio_align)

  def predict_files(self, visual_path, audio_path, fps):
    """`predict` on two `.npy` files (checked: 2-D, widths, finite)."""
    visual, audio = formats.load_features(
        visual_path, audio_path, self.config.dataset.visual_dim,
        self.config.dataset.audio_dim)
    return self.predict(visual, self.align(audio, visual.shape[0]), fps)


def to_json(prediction, eval_config):
  """The JSON object of a `Predictor.predict` result."""
  pred = prediction['pred_class']
  no_proposals = (pred == wmmt.REAL and eval_config.real_has_no_proposals)
  return {
      'pred_class': pred,
      'class_name': CLASS_NAMES[pred],
      'probs': {name: float(p) for name, p in zip(CLASS_NAMES,
                                                  prediction['probs'])},
      'expert': None if no_proposals else EXPERT_HEADS.get(
          prediction['expert']),
      'segments': [[float(x) for x in row] for row in prediction['proposals']],
      'num_frames': prediction['num_frames'],
      'fps': prediction['fps'],
  }


def read_metadata(path, config):
  """`{file: record}` and `{video_id: record}` of a metadata file, in the
  run's dataset format (AV-Deepfake1M or LAV-DF style)."""
  if config.dataset.name == 'avdeepfake1m':
    records = formats.read_avdeepfake1m_metadata(path)
  else:
    records = formats.read_lavdf_metadata(path)
  return ({r.file: r for r in records}, {r.video_id: r for r in records})


def write_png(path, prediction, record=None, title=''):
  """Draws a prediction's timeline to `path`; False without matplotlib."""
  from wmmt_jax import plots  # pylint: disable=g-import-not-at-top
  fig = plots.timeline_figure(prediction, record, title=title)
  if fig is None:
    return False
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=100)
  plots.close(fig)
  return True


def predict_video(predictor, visual_path, audio_path, fps, record=None,
                  png=''):
  """The JSON object of one video (`to_json`), its timeline drawn to `png`.

  Args:
    predictor: a `Predictor`.
    visual_path: `.npy` `[T, visual_dim]`.
    audio_path: `.npy` `[T_a, audio_dim]`.
    fps: frames per second of the visual features.
    record: the video's metadata record (ground truth in the timeline).
    png: where to draw the timeline; '' = nowhere.
  """
  prediction = predictor.predict_files(visual_path, audio_path, fps)
  result = to_json(prediction, predictor.config.eval)
  if record is not None:
    result['file'] = record.file
  title = record.file if record is not None else visual_path
  if png and write_png(png, prediction, record, title):
    result['png'] = png
  return result


def folder_ids(visual_dir, audio_dir):
  """Video ids (paths under the folders, no `.npy`) present in both."""
  ids = []
  for path in sorted(glob.glob(os.path.join(visual_dir, '**', '*.npy'),
                               recursive=True)):
    vid = os.path.relpath(path, visual_dir)[:-len('.npy')]
    if os.path.exists(os.path.join(audio_dir, vid + '.npy')):
      ids.append(vid)
    else:
      logging.warning('%s: no audio features %s; skipped.', path,
                      os.path.join(audio_dir, vid + '.npy'))
  return ids


def predict_folder(predictor, visual_dir, audio_dir, fps, out, by_id=None,
                   png_dir=''):
  """Writes one JSON line per video id of both folders to `out`.

  Args:
    predictor: a `Predictor`.
    visual_dir: `{id}.npy` visual features (ids may contain directories).
    audio_dir: `{id}.npy` audio features.
    fps: frames per second of the visual features.
    out: a text file.
    by_id: `{video_id: record}` (`read_metadata`), for the ground truth.
    png_dir: draw `{png_dir}/{id}.png` timelines; '' = none.

  Returns:
    The number of videos.
  """
  ids = folder_ids(visual_dir, audio_dir)
  for vid in ids:
    record = (by_id or {}).get(vid)
    result = predict_video(
        predictor, os.path.join(visual_dir, vid + '.npy'),
        os.path.join(audio_dir, vid + '.npy'), fps, record,
        os.path.join(png_dir, vid + '.png') if png_dir else '')
    out.write(json.dumps(dict(result, id=vid)) + '\n')
    out.flush()
  return len(ids)


FLAGS = flags.FLAGS


def define_flags():
  """The command line's flags (defined only when run as a program, so that
  importing this module next to wmmt_jax.main defines no duplicate)."""
  flags.DEFINE_string('workdir', None, 'The run: config.json and '
                      'checkpoints.')
  flags.DEFINE_integer('checkpoint_step', None, 'This step of '
                       'W/checkpoints instead of W/best or the newest.')
  flags.DEFINE_string('visual', '', 'Visual features .npy [T, visual_dim].')
  flags.DEFINE_string('audio', '', 'Audio features .npy [T_a, audio_dim].')
  flags.DEFINE_string('visual_dir', '', 'A folder of visual {id}.npy.')
  flags.DEFINE_string('audio_dir', '', 'A folder of audio {id}.npy.')
  flags.DEFINE_float('fps', 25.0, 'Frames per second of the visual '
                     'features.')
  flags.DEFINE_string('png', '', 'Write the timeline of the video here.')
  flags.DEFINE_string('png_dir', '', 'Folder mode: a timeline {id}.png '
                      'each.')
  flags.DEFINE_string('output', '', 'Write the JSON (lines) here; default '
                      'stdout.')
  flags.DEFINE_string('metadata', '', 'Metadata with the ground truth (the '
                      "run's dataset format), for the timeline.")
  flags.DEFINE_string('file', '', "The video's `file` in --metadata, e.g. "
                      'train/000001.mp4 (folder mode matches ids instead).')
  flags.mark_flag_as_required('workdir')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  single = bool(FLAGS.visual or FLAGS.audio)
  folder = bool(FLAGS.visual_dir or FLAGS.audio_dir)
  if single == folder or (single and not (FLAGS.visual and FLAGS.audio)) or (
      folder and not (FLAGS.visual_dir and FLAGS.audio_dir)):
    raise app.UsageError('Give --visual and --audio (one video), or '
                         '--visual_dir and --audio_dir (a folder).')
  predictor, checkpoint = Predictor.from_workdir(FLAGS.workdir,
                                                 FLAGS.checkpoint_step)
  by_file, by_id = ({}, {})
  if FLAGS.metadata:
    by_file, by_id = read_metadata(FLAGS.metadata, predictor.config)
  record = None
  if FLAGS.file:
    record = by_file.get(FLAGS.file)
    if record is None:
      raise app.UsageError(f'--file={FLAGS.file}: not in --metadata='
                           f'{FLAGS.metadata or "(none given)"}.')
  out = open(FLAGS.output, 'w') if FLAGS.output else sys.stdout
  try:
    if single:
      result = predict_video(predictor, FLAGS.visual, FLAGS.audio, FLAGS.fps,
                             record, FLAGS.png)
      result.update(visual=FLAGS.visual, audio=FLAGS.audio,
                    checkpoint=checkpoint)
      out.write(json.dumps(result, indent=None if FLAGS.output else 1)
                + '\n')
    else:
      n = predict_folder(predictor, FLAGS.visual_dir, FLAGS.audio_dir,
                         FLAGS.fps, out, by_id, FLAGS.png_dir)
      logging.info('Predicted %d videos with %s.', n, checkpoint)
  finally:
    if out is not sys.stdout:
      out.close()


if __name__ == '__main__':
  define_flags()
  jax.config.config_with_absl()
  app.run(main)
