"""Pictures of a run: video timelines, precision-recall curves, t-SNE (Fig. 4).

  python -m wmmt_jax.plots --workdir=W [--tensorboard]   # a finished run

After the final evaluation, `write_run_plots` writes `{workdir}/plots/`:

- `timeline_<class>_<n>.png`: for a few test videos of each class, the
  forgery activation sequence (FAS) of the head that expert selection chose,
  the proposals and the ground truth (all, visual and audio forged segments);
- `pr_curve.png`: precision-recall curves at the protocol's AP IoUs, with the
  official evaluator's matching (list order, IoU > t, float32), so the AP in
  the legend is the `results.json` one;
- `tsne.png`: t-SNE of video-level features before (the pre-trained
  features, mean-pooled over time) and after enhancement (`F''_a`, `F''_v`,
  `F_m`, mean-pooled), audio / visual / multimodal as the paper's Fig. 4,
  coloured by audio-forged, visual-forged and the 4 classes;

and logs the same images to TensorBoard (`writer.write_images`). matplotlib
and scikit-learn (the `[viz]` extra) are imported only here and only when
drawing; without them the plots are skipped with one log line.

Per-video data (`VideoOutputs`: what `predict.Predictor.predict` returns):
`pred_class`, `probs` `[4]`, `expert`, `fas` `[T, 2]` (native length),
`proposals` `[K, 3]`, `pooled` (`predict.pooled_features`, each `[D]`),
`fps`. `collect_video_outputs` computes it for the few videos that are
drawn (`select_videos`) with its own forward pass, so the Evaluator needs
no change; the PR curve uses every video's proposals (the Evaluator's
`last_predictions`) and the records' ground truth.
"""

import json
import os

from absl import app
from absl import flags
from absl import logging
import numpy as np

from input_pipeline import formats
from input_pipeline import pipeline
from wmmt_jax.evaluation import metrics
from wmmt_jax.evaluation import proposals as proposals_lib

PLOTS_SUBDIR = 'plots'
CLASS_NAMES = ('real', 'both_forged', 'visual_only', 'audio_only')
_EXPERTS = {1: 'h_m', 2: 'h_v', 3: 'h_a'}
_MISSING_LOGGED = []


def _pyplot():
  """matplotlib.pyplot on the Agg backend, or None (logged once)."""
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    return plt
  except ImportError:
    if not _MISSING_LOGGED:
      _MISSING_LOGGED.append(True)
      logging.warning('Plots skipped: matplotlib is not installed (pip '
                      'install "wmmt_jax[viz]").')
    return None


def _tsne_class():
  try:
    from sklearn.manifold import TSNE  # pylint: disable=g-import-not-at-top
    return TSNE
  except ImportError:
    logging.warning('t-SNE plot skipped: scikit-learn is not installed (pip '
                    'install "wmmt_jax[viz]").')
    return None


def close(fig):
  """Frees a figure."""
  plt = _pyplot()
  if plt is not None:
    plt.close(fig)


def _spans(ax, segments, y0, y1, color, label, alpha=0.6):
  for i, (start, end) in enumerate(np.asarray(segments).reshape(-1, 2)):
    ax.axvspan(start, end, ymin=y0, ymax=y1, color=color, alpha=alpha,
               lw=0, label=label if i == 0 else None)


def timeline_figure(video, record=None, title=''):
  """One video's timeline; None without matplotlib.

  Top: the chosen head's forged probability over time (and the real one,
  dashed), proposals shaded with their scores. Bottom band: the ground
  truth of `record` (all forged segments, and the visual / audio ones), if
  given.

  Args:
    video: `VideoOutputs` of the video.
    record: its `formats.VideoRecord`, or None.
    title: first line of the title (e.g. the file).
  """
  plt = _pyplot()
  if plt is None:
    return None
  fas = np.asarray(video['fas'])
  fps = video['fps']
  t = (np.arange(fas.shape[0]) + 0.5) / fps
  rows = 2 if record is not None else 1
  fig, axes = plt.subplots(
      rows, 1, figsize=(10, 3.6 if rows == 2 else 2.8), sharex=True,
      gridspec_kw={'height_ratios': [3, 1] if rows == 2 else [1]},
      squeeze=False)
  ax = axes[0, 0]
  for score, start, end in np.asarray(video['proposals']).reshape(-1, 3):
    ax.axvspan(start, end, color='tab:orange', alpha=0.25, lw=0)
    ax.text((start + end) / 2, 1.02, f'{score:.2f}', ha='center',
            va='bottom', fontsize=7, color='tab:orange')
  ax.plot(t, fas[:, 1], color='tab:red', lw=1.5, label='forged')
  ax.plot(t, fas[:, 0], color='tab:blue', lw=1, ls='--', label='real')
  ax.axvspan(0, 0, color='tab:orange', alpha=0.25, label='proposals')
  ax.set_ylim(0, 1.12)
  ax.set_ylabel('FAS')
  ax.legend(loc='upper left', bbox_to_anchor=(1.005, 1.0), fontsize=7)
  pred = video['pred_class']
  probs = ' '.join(f'{CLASS_NAMES[i]}={p:.2f}'
                   for i, p in enumerate(video['probs']))
  expert = _EXPERTS.get(video['expert'], '?') if len(
      video['proposals']) or pred else 'none'
  lines = [title] if title else []
  if record is not None:
    lines[-1:] = [f'{lines[-1] if lines else record.file}  (true: '
                  f'{CLASS_NAMES[record.label]})']
  lines.append(f'predicted {CLASS_NAMES[pred]} [{probs}], expert {expert}')
  ax.set_title('\n'.join(lines), fontsize=8)
  if record is not None:
    gt = axes[1, 0]
    _spans(gt, record.fake_segments, 0.67, 1.0, 'black', 'all forged')
    _spans(gt, record.visual_segments, 0.34, 0.66, 'tab:green', 'visual')
    _spans(gt, record.audio_segments, 0.0, 0.33, 'tab:purple', 'audio')
    gt.set_yticks([1 / 6, 0.5, 5 / 6], ['audio', 'visual', 'all'],
                  fontsize=7)
    gt.set_ylim(0, 1)
    gt.set_ylabel('truth', fontsize=8)
    duration = max(record.duration, t[-1] + 0.5 / fps)
  else:
    duration = t[-1] + 0.5 / fps
  axes[-1, 0].set_xlim(0, duration)
  axes[-1, 0].set_xlabel('time (s)')
  fig.tight_layout()
  return fig


def pr_curve(predictions, ground_truth, iou):
  """Precision and recall over the pooled proposals, as the official AP.

  In each video, each ground-truth segment in order takes the first unused
  proposal in list order with IoU > `iou` (float32); all proposals are
  pooled and stable-sorted by descending score.

  Args:
    predictions: `{file: [K, 3]}` (score, start_s, end_s).
    ground_truth: `{file: [N, 2]}` seconds; the scored videos.
    iou: the threshold.

  Returns:
    `(recall [P], precision [P], ap)`; AP leaves out the first step as the
    official evaluator does (`metrics.ap_ar_1d` gives the same number).
  """
  t = np.float32(iou)
  scores, hits, n_gt = [], [], 0
  for file, gts in ground_truth.items():
    gts = np.asarray(gts, np.float32).reshape(-1, 2)
    props = np.asarray(predictions.get(file, np.zeros((0, 3))),
                       np.float32).reshape(-1, 3)
    n_gt += len(gts)
    used = np.zeros(len(props), bool)
    for start, end in gts:
      if not len(props):
        break
      ious = proposals_lib.interval_iou(props[:, 1], props[:, 2],
                                        np.float32(start), np.float32(end))
      free = np.flatnonzero((ious > t) & ~used)
      if free.size:
        used[free[0]] = True
    scores.append(props[:, 0])
    hits.append(used)
  scores = np.concatenate(scores) if scores else np.zeros(0, np.float32)
  hits = np.concatenate(hits) if hits else np.zeros(0, bool)
  order = np.argsort(-scores, kind='stable')
  tp = np.cumsum(hits[order])
  k = np.arange(1, len(order) + 1)
  precision = tp / np.maximum(k, 1)
  recall = tp / max(n_gt, 1)
  # max_{j >= k} prec_j, then sum_{k >= 2} (rec_k - rec_{k-1}) * that.
  envelope = np.maximum.accumulate(precision[::-1])[::-1]
  ap = float(np.sum(np.diff(recall) * envelope[1:])) if len(k) > 1 else 0.0
  return recall, precision, ap


def pr_figure(predictions, records, ap_ious):
  """Precision-recall curves at `ap_ious`; None without matplotlib."""
  plt = _pyplot()
  if plt is None:
    return None
  ground_truth = {r.file: r.fake_segments for r in records}
  fig, ax = plt.subplots(figsize=(5.5, 4.5))
  cmap = plt.get_cmap('viridis')
  for i, iou in enumerate(ap_ious):
    recall, precision, ap = pr_curve(predictions, ground_truth, iou)
    ax.plot(recall, precision, color=cmap(i / max(len(ap_ious) - 1, 1)),
            lw=1.2, label=f'IoU>{iou:g}: AP {100 * ap:.2f}')
  ax.set_xlabel('recall')
  ax.set_ylabel('precision')
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1.02)
  n_segments = sum(len(g) for g in ground_truth.values())
  ax.set_title(f'{len(records)} videos, {n_segments} forged segments',
               fontsize=9)
  ax.legend(fontsize=7, loc='lower left')
  fig.tight_layout()
  return fig


# Enough for a picture; scikit-learn's default (1000) doubles the time.
_TSNE_ITERATIONS = 500
# Fig. 4's panels: (title, pooled key before, pooled key after, colouring).
_TSNE_PANELS = (
    ('audio', 'input_a', 'enhanced_a', 'audio'),
    ('visual', 'input_v', 'enhanced_v', 'visual'),
    ('multimodal', 'input_m', 'enhanced_m', 'class'),
)


def _colour_labels(labels, kind):
  labels = np.asarray(labels)
  if kind == 'audio':
    return np.isin(labels, (formats.LABEL_BOTH, formats.LABEL_AUDIO)).astype(
        int), ('real audio', 'forged audio')
  if kind == 'visual':
    return np.isin(labels, (formats.LABEL_BOTH, formats.LABEL_VISUAL)).astype(
        int), ('real visual', 'forged visual')
  return labels, CLASS_NAMES


def tsne_figure(videos, labels, seed=0):
  """Fig. 4: t-SNE before (top) and after (bottom) enhancement.

  Args:
    videos: `VideoOutputs` (their `pooled` features are used).
    labels: `[N]` the videos' classes.
    seed: t-SNE's random state.

  Returns:
    The figure, or None without matplotlib / scikit-learn or with fewer
    than 5 videos. Panels whose features the model lacks (`F''_v`, `F''_a`
    without MTL) are left empty.
  """
  plt = _pyplot()
  tsne = _tsne_class() if plt is not None else None
  if tsne is None or len(videos) < 5:
    return None
  fig, axes = plt.subplots(2, 3, figsize=(12, 7.5), squeeze=False)
  colours = plt.get_cmap('tab10')
  for col, (name, before, after, kind) in enumerate(_TSNE_PANELS):
    colour_of, names = _colour_labels(labels, kind)
    for row, key in enumerate((before, after)):
      ax = axes[row, col]
      ax.set_xticks([])
      ax.set_yticks([])
      stage = 'pre-trained' if row == 0 else 'enhanced'
      if key not in videos[0]['pooled']:
        ax.set_title(f'{stage} {name}: not in this model', fontsize=9)
        continue
      x = np.stack([v['pooled'][key] for v in videos]).astype(np.float64)
      x = (x - x.mean(0)) / (x.std(0) + 1e-6)
      emb = tsne(n_components=2, perplexity=min(30.0, (len(x) - 1) / 3),
                 init='pca', max_iter=_TSNE_ITERATIONS,
                 random_state=seed).fit_transform(x)
      for c in np.unique(colour_of):
        sel = colour_of == c
        ax.scatter(emb[sel, 0], emb[sel, 1], s=6, color=colours(int(c)),
                   label=names[int(c)])
      ax.set_title(f'({"abcdef"[3 * row + col]}) {stage} {name}', fontsize=9)
      ax.legend(fontsize=7, markerscale=2, loc='best')
  fig.tight_layout()
  return fig


def select_videos(records, per_class=3, tsne_max=1000, seed=0):
  """Which evaluation videos to draw.

  Returns:
    `(timeline indices, t-SNE indices)` into `records`: the first
    `per_class` videos of each class, and up to `tsne_max` videos drawn
    without replacement (seeded), sorted.
  """
  labels = np.array([r.label for r in records])
  timeline = [int(i) for c in range(len(CLASS_NAMES))
              for i in np.flatnonzero(labels == c)[:per_class]]
  n = len(records)
  rng = np.random.default_rng(seed)
  tsne = np.sort(rng.choice(n, size=min(n, tsne_max), replace=False))
  return timeline, [int(i) for i in tsne]


def collect_video_outputs(predictor, records, root, indices):
  """`{index: VideoOutputs}` of `records[indices]` (`predict.Predictor`)."""
  out = {}
  for i in indices:
    record = records[i]
    visual, audio = pipeline.load_aligned(predictor.config, root, record)
    out[i] = predictor.predict(visual, audio, record.fps)
  return out


def figure_to_array(fig):
  """`[H, W, 3]` uint8 RGB of a drawn figure."""
  fig.canvas.draw()
  return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def write_run_plots(workdir, config, records, predictions, videos,
                    writer=None, step=0, timeline=None):
  """Writes `{workdir}/plots/*.png` and logs them as TensorBoard images.

  Args:
    workdir: the run's workdir.
    config: the run's config (`eval.protocol` gives the PR curves' IoUs).
    records: the evaluation records, in the Evaluator's order.
    predictions: `{file: [K, 3]}` proposals of every record
      (`Evaluator.last_predictions`); None skips the PR curve.
    videos: `{index into records: VideoOutputs}` (`collect_video_outputs`);
      the timelines are drawn for `select_videos`' timeline indices found
      in it, the t-SNE over all of it.
    writer: a clu metric writer, or None.
    step: the step the images are logged at.
    timeline: indices of the videos to draw timelines of (default
      `select_videos(records)`'s).

  Returns:
    The paths written (empty without matplotlib).
  """
  if _pyplot() is None:
    return []
  directory = os.path.join(workdir, PLOTS_SUBDIR)
  os.makedirs(directory, exist_ok=True)
  figures = {}
  if timeline is None:
    timeline, _ = select_videos(records)
  seen = {}
  for i in timeline:
    if i not in videos:
      continue
    record = records[i]
    name = CLASS_NAMES[record.label]
    seen[name] = seen.get(name, 0) + 1
    figures[f'timeline_{name}_{seen[name]}'] = timeline_figure(
        videos[i], record, title=record.file)
  if predictions is not None:
    ious = metrics.PROTOCOLS[config.eval.protocol]['ap_ious']
    figures['pr_curve'] = pr_figure(predictions, records, ious)
  if videos:
    order = sorted(videos)
    figures['tsne'] = tsne_figure([videos[i] for i in order],
                                  [records[i].label for i in order],
                                  seed=config.get('seed', 0))
  paths, images = [], {}
  for name, fig in figures.items():
    if fig is None:
      continue
    path = os.path.join(directory, f'{name}.png')
    fig.savefig(path, dpi=100)
    paths.append(path)
    images[f'plots/{name}'] = figure_to_array(fig)[None]
    close(fig)
  if writer is not None and images:
    writer.write_images(step, images)
    writer.flush()
  logging.info('Wrote %d plots to %s.', len(paths), directory)
  return paths


def plot_run(workdir, config, model, params, records, root, predictions,
             writer=None, step=0):
  """Everything `write_run_plots` needs, from the run's objects: one call.

  The hook after the final evaluation. Runs the model on the drawn videos
  only (`select_videos`: `eval.plot_timelines_per_class` timelines per
  class, default 3; `eval.plot_tsne_videos` videos in the t-SNE, default
  1000) on this process's devices, without collectives: call it on process
  0 only. Does nothing with `eval.plots=False`. A failure is logged, not
  raised: the results are written before and stay valid.

  Args:
    workdir, config, records, predictions, writer, step: as
      `write_run_plots`.
    model: the run's module (`train.create_model`).
    params: the parameters whose results are reported (replicated arrays or
      numpy).
    root: the dataset root of `records`.

  Returns:
    The paths written.
  """
  eval_config = config.eval
  if not eval_config.get('plots', True) or _pyplot() is None:
    return []
  from wmmt_jax import parallel  # pylint: disable=g-import-not-at-top
  from wmmt_jax import predict  # pylint: disable=g-import-not-at-top
  try:
    predictor = predict.Predictor(config, model, parallel.to_host(params))
    timeline, tsne = select_videos(
        records, eval_config.get('plot_timelines_per_class', 3),
        eval_config.get('plot_tsne_videos', 1000),
        seed=config.get('seed', 0))
    videos = collect_video_outputs(predictor, records, root,
                                   sorted(set(timeline) | set(tsne)))
    return write_run_plots(workdir, config, records, predictions, videos,
                           writer, step, timeline)
  except Exception:  # pylint: disable=broad-except
    logging.exception('Writing the plots of %s failed; the results are '
                      'unaffected.', workdir)
    return []


def plot_workdir(workdir, tensorboard=False):
  """The plots of a finished run, from its files (`predictions.json`, the
  checkpoint `predict.Predictor.from_workdir` picks); returns the paths."""
  from wmmt_jax import predict  # pylint: disable=g-import-not-at-top
  from wmmt_jax import train  # pylint: disable=g-import-not-at-top
  predictor, checkpoint = predict.Predictor.from_workdir(workdir)
  # Asked for explicitly: drawn also where the run had `eval.plots=False`.
  config = predictor.config.copy_and_resolve_references()
  config.eval.plots = True
  records, root = pipeline.get_records(
      config, workdir, config.dataset.eval_split, config.dataset.eval_subset)
  with open(os.path.join(workdir, 'predictions.json')) as f:
    predictions = json.load(f)
  step = int(os.path.basename(checkpoint))
  writer = train.create_writer(workdir, True) if tensorboard else None
  return plot_run(workdir, config, train.create_model(config),
                  predictor.params, records, root, predictions, writer, step)


def define_flags():
  """The command line's flags (defined only when run as a program)."""
  flags.DEFINE_string('workdir', None, 'A finished run.')
  flags.DEFINE_bool('tensorboard', False, 'Also log the images to the '
                    "run's TensorBoard.")
  flags.mark_flag_as_required('workdir')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  for path in plot_workdir(flags.FLAGS.workdir, flags.FLAGS.tensorboard):
    print(path)


if __name__ == '__main__':
  define_flags()
  app.run(main)
