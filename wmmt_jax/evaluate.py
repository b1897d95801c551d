r"""Standalone temporal forgery localisation evaluator (`wmmt-eval`).

Scores challenge-format predictions against LAV-DF or AV-Deepfake1M metadata
with exactly the numbers of the official evaluator (the `avdeepfake1m`
package; DESIGN.md section 5), without its dependencies and without its
panics, streaming inputs of any size:

  python -m wmmt_jax.evaluate --predictions P.json --metadata M.json \
      [--protocol avdeepfake1m|lavdf|wmmt] [--segments-key fake_segments] \
      [--file-key file] [--fps 1.0] [--ap-iou 0.5,0.75] [--ar-n 50 ...] \
      [--ar-iou ...] [--official-quirks on|off] [--ar-order listed|temporal] \
      [--strict] [--table]

stdout has one JSON object, `{"ap": {"0.5": v, ...}, "ar": {"50": v, ...}}`
(keys as the protocol writes them, values fractions in [0, 1]), or with
`--table` a readable table in percent. Warnings and errors go to stderr; the
exit status is 0, 1 for bad input (the message names the file, entry and
row) or 2 for bad flags.
"""

import argparse
import json
import sys
import warnings

from wmmt_jax.evaluation import metrics
from wmmt_jax.evaluation import ragged
from wmmt_jax.evaluation import results
from wmmt_jax.evaluation import streaming

PROG = 'wmmt-eval'


def _number_list(kind):
  """An argparse type: a comma-separated list of `kind` numbers."""

  def parse(text):
    """`'0.5,0.75'` -> `[0.5, 0.75]`."""
    try:
      values = [kind(x) for x in text.split(',') if x.strip()]
    except ValueError:
      raise argparse.ArgumentTypeError(
          f'expected {kind.__name__} numbers separated by commas, got '
          f'{text!r}') from None
    if not values:
      raise argparse.ArgumentTypeError(f'no numbers in {text!r}')
    return values

  return parse


def build_parser():
  """The command line of `wmmt-eval` / `python -m wmmt_jax.evaluate`."""
  parser = argparse.ArgumentParser(
      prog=PROG,
      description=('Temporal forgery localisation AP@IoU and AR@N, exactly '
                   'as the official AV-Deepfake1M / LAV-DF evaluator.'))
  parser.add_argument(
      '--predictions', required=True,
      help='challenge-format JSON: {file: [[score, start, end], ...]}, each '
           'list best first.')
  parser.add_argument(
      '--metadata', required=True,
      help='LAV-DF or AV-Deepfake1M metadata JSON (a list of objects).')
  parser.add_argument(
      '--protocol', default='avdeepfake1m', choices=sorted(metrics.PROTOCOLS),
      help='thresholds and segments key (default: %(default)s).')
  parser.add_argument(
      '--segments-key', default=None,
      help='metadata field with the forged segments (default: fake_segments '
           'for avdeepfake1m, fake_periods for lavdf, whichever the metadata '
           'has for wmmt).')
  parser.add_argument('--file-key', default='file',
                      help='metadata field with the file name.')
  parser.add_argument(
      '--fps', type=float, default=1.0,
      help='prediction times are frames at this rate (divided by it, as the '
           'official evaluator); metadata stays in seconds.')
  parser.add_argument(
      '--ap-iou', type=_number_list(float), action='append',
      help='AP IoU thresholds, repeatable or comma-separated (default: the '
           "protocol's).")
  parser.add_argument(
      '--ar-n', type=_number_list(int), action='append',
      help="AR proposal counts (default: the protocol's).")
  parser.add_argument(
      '--ar-iou', type=_number_list(float), action='append',
      help='AR IoU thresholds, averaged (default: 0.5:0.05:0.95).')
  parser.add_argument(
      '--official-quirks', choices=('on', 'off'), default='on',
      help='on: official list-order matching, first AP step left out; off: '
           'textbook AP with score-order matching.')
  parser.add_argument(
      '--ar-order', choices=metrics.AR_ORDERS, default='listed',
      help="temporal: AR over proposals sorted by start, without ground truth "
           "of videos that have no proposals (MDP's evaluator).")
  parser.add_argument(
      '--strict', action='store_true',
      help='predictions for files not in the metadata are an error.')
  parser.add_argument('--table', action='store_true',
                      help='print a table in percent instead of JSON.')
  return parser


def _flat(lists):
  """Values of a repeatable list flag, flattened; None when not given."""
  return None if lists is None else [x for part in lists for x in part]


def _report(caught):
  """Prints caught warnings to stderr."""
  for w in caught:
    print(f'{PROG}: warning: {w.message}', file=sys.stderr)


def main(argv=None):
  """Runs the evaluator; returns the exit status.

  Args:
    argv: arguments without the program name; default `sys.argv[1:]`.
  """
  parser = build_parser()
  args = parser.parse_args(argv)
  if not args.fps > 0 or args.fps == float('inf'):
    parser.error(f'--fps must be a finite number > 0, got {args.fps}')
  ar_ns = _flat(args.ar_n)
  if ar_ns and min(ar_ns) < 1:
    parser.error(f'--ar-n must be >= 1, got {min(ar_ns)}')
  segments_key = (args.segments_key,) if args.segments_key else (
      metrics.SEGMENTS_KEYS[args.protocol])
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always', metrics.EvaluationWarning)
    try:
      # Metadata first: it is small, so its errors come before minutes of
      # reading predictions.
      metadata = streaming.read_metadata(args.metadata, args.file_key,
                                         segments_key)
      predictions = streaming.read_predictions(args.predictions)
      scores = metrics.ap_ar(
          predictions, metadata, args.protocol, fps=args.fps,
          ap_ious=_flat(args.ap_iou), ar_ns=ar_ns,
          ar_ious=_flat(args.ar_iou),
          official_quirks=args.official_quirks == 'on',
          ar_order=args.ar_order, strict=args.strict,
          names=(args.predictions, args.metadata))
    except (ragged.InputError, OSError) as e:
      _report(caught)
      print(f'{PROG}: error: {e}', file=sys.stderr)
      return 1
  _report(caught)
  if args.table:
    print(results.format_results_table(dict(scores, protocol=args.protocol)))
  else:
    print(json.dumps(results.results_to_jsonable(scores)))
  return 0


def run():
  """Console-script entry point (`wmmt-eval`)."""
  sys.exit(main())


if __name__ == '__main__':
  run()
