"""Proposals against a frame-by-frame numpy reference of MDP's rule."""

import numpy as np
import pytest

from wmmt_jax.evaluation import proposals


def runs_reference(mask):
  """Maximal runs of True as `[(first, last + 1)]`, one frame at a time."""
  runs, start = [], None
  for t, m in enumerate(mask):
    if m and start is None:
      start = t
    if not m and start is not None:
      runs.append((start, t))
      start = None
  if start is not None:
    runs.append((start, len(mask)))
  return runs


def test_mdp_proposals_hand_case():
  fas = np.array([[0, 1], [0, 1], [1, 0], [0, .5], [1, 1], [0, 2]], np.float32)
  got = proposals.mdp_proposals(fas, fps=25.0)
  # Runs: frames 0-1 (mean 1), frame 3 (0.5), frame 5 (2); the tie at frame 4
  # is real (strict >).
  want = np.array([[2.0, 5 / 25, 6 / 25],
                   [1.0, 0 / 25, 2 / 25],
                   [0.5, 3 / 25, 4 / 25]], np.float32)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert got.dtype == np.float32 and got.shape == (3, 3)


@pytest.mark.parametrize('seed', range(5))
def test_mdp_proposals_random(seed):
  rng = np.random.default_rng(seed)
  fas = rng.random((120, 2)).astype(np.float32)
  fps = 25.0
  got = proposals.mdp_proposals(fas, fps, max_proposals=1000)
  rows = [(fas[s:e, 1].mean(dtype=np.float64), s / fps, e / fps)
          for s, e in runs_reference(fas[:, 1] > fas[:, 0])]
  rows.sort(key=lambda r: -np.float32(r[0]))  # Stable: ties stay temporal.
  np.testing.assert_allclose(got, np.asarray(rows, np.float32), rtol=1e-6)


def test_mdp_proposals_sort_is_stable_and_capped():
  # Three runs of equal score: temporal order is kept, then the cap applies.
  fas = np.zeros((9, 2), np.float32)
  fas[[0, 3, 6], 1] = 1.0
  got = proposals.mdp_proposals(fas, fps=1.0, max_proposals=2)
  np.testing.assert_array_equal(got, [[1, 0, 1], [1, 3, 4]])


def test_mdp_proposals_runs_at_the_edges():
  fas = np.zeros((4, 2), np.float32)
  fas[[0, 3], 1] = 1.0
  got = proposals.mdp_proposals(fas, fps=2.0)
  np.testing.assert_array_equal(got, [[1, 0, 0.5], [1, 1.5, 2.0]])
  one = proposals.mdp_proposals(np.array([[0.0, 1.0]]), fps=1.0)
  np.testing.assert_array_equal(one, [[1, 0, 1]])


@pytest.mark.parametrize('fas', [np.zeros((5, 2)), np.zeros((0, 2)),
                                 np.ones((5, 2))])
def test_mdp_proposals_empty(fas):
  got = proposals.mdp_proposals(fas, fps=25.0)
  assert got.shape == (0, 3) and got.dtype == np.float32


def test_mdp_proposals_checks_input():
  with pytest.raises(ValueError, match='fas'):
    proposals.mdp_proposals(np.zeros((5, 4)), fps=25.0)
  with pytest.raises(ValueError, match='fps'):
    proposals.mdp_proposals(np.zeros((5, 2)), fps=0.0)


def test_segment_iou():
  a = np.array([[0, 10], [5, 6]])
  b = np.array([[0, 5], [20, 30], [0, 10]])
  got = proposals.segment_iou(a, b)
  want = np.array([[0.5, 0, 1], [0, 0, 0.1]], np.float32)
  assert got.dtype == np.float32 and got.shape == (2, 3)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  # Float32 arithmetic, as the official evaluator: 0.6 / 1.0 in float32 is
  # above float32(0.6).
  iou = proposals.segment_iou([[0.4, 1.0]], [[0.3, 1.3]])[0, 0]
  assert iou > np.float32(0.6)


def test_multi_threshold_proposals():
  score = np.array([.1, .6, .9, .7, .2, .8, .3])
  got = proposals.multi_threshold_proposals(score, fps=1.0,
                                            thresholds=(0.5, 0.65),
                                            nms_iou=0.3)
  # 0.5: runs 1-3 (mean 0.733) and 5 (0.8); 0.65: runs 2-3 (0.8) and 5 (again,
  # kept once). NMS drops 1-3, which overlaps 2-3 with IoU 2/3.
  want = np.array([[0.8, 5, 6], [0.8, 2, 4]], np.float32)
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_multi_threshold_nms_removes_overlaps():
  rng = np.random.default_rng(0)
  score = rng.random(200)
  got = proposals.multi_threshold_proposals(
      score, fps=25.0, thresholds=np.linspace(0.1, 0.9, 9), nms_iou=0.2,
      max_proposals=1000)
  iou = proposals.segment_iou(got[:, 1:], got[:, 1:])
  np.fill_diagonal(iou, 0)
  assert len(got) > 5 and (iou <= 0.2).all()
  assert (np.diff(got[:, 0]) <= 0).all()
  # Without NMS pruning (IoU must exceed 1), overlapping runs stay.
  loose = proposals.multi_threshold_proposals(
      score, fps=25.0, thresholds=np.linspace(0.1, 0.9, 9), nms_iou=1.0,
      max_proposals=1000)
  assert len(loose) > len(got)
  capped = proposals.multi_threshold_proposals(
      score, fps=25.0, thresholds=np.linspace(0.1, 0.9, 9), nms_iou=1.0,
      max_proposals=3)
  np.testing.assert_array_equal(capped, loose[:3])


def test_multi_threshold_empty():
  got = proposals.multi_threshold_proposals(np.zeros(10), 25.0, (0.5,), 0.5)
  assert got.shape == (0, 3) and got.dtype == np.float32


def test_nms_1d():
  rows = np.array([[0.5, 0, 10], [0.9, 1, 10], [0.7, 20, 30], [0.6, 0, 2]])
  got = proposals.nms_1d(rows, 0.5)
  # [0, 10] overlaps [1, 10] with IoU 0.9; [0, 2] with it 1/10.
  np.testing.assert_array_equal(got, [[0.9, 1, 10], [0.7, 20, 30],
                                      [0.6, 0, 2]])
