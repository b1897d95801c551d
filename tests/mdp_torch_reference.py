"""MDP in PyTorch, written from DESIGN.md section 3: the parity reference.

Same layers, same order and the same state_dict keys as MDP's released
`core/model.py` (wenboxu98/MDP), with the widths as arguments so tests can
shrink them. Each layer is computed as MDP computes it: the full `T x T`
score matrix, its sum over queries, two-pass LayerNorms, etc., so that the
JAX port's shortcuts are checked against the plain formulas. MDP's unused
members (a second Dropout(0.6), r_hard, m, M) hold no parameters and are
left out. Used by tests/test_mdp.py, tests/test_convert.py and
benchmarks/mdp_vs_torch.py.
"""

import torch
from torch import nn


class ConvEmbed(nn.Module):
  """MDP's `visual_Module` / `audio_Module`: Conv1d(k=3, p=1) + ReLU."""

  def __init__(self, input_dim, output_dim):
    super().__init__()
    self.f_embed = nn.Sequential(
        nn.Conv1d(input_dim, output_dim, kernel_size=3, stride=1, padding=1),
        nn.ReLU())

  def forward(self, x):
    """`[B, T, D_in]` -> `[B, T, D_out]`."""
    return self.f_embed(x.permute(0, 2, 1)).permute(0, 2, 1)


class CrossModalAttention(nn.Module):
  """TPPA as MDP computes it: `r_j = sum_i (Q K^T)_ij / sqrt(D_kv)`."""

  def __init__(self, input_dim_kv, input_dim_q, attention_dim):
    super().__init__()
    self.query_layer = nn.Linear(input_dim_q, attention_dim)
    self.key_layer = nn.Linear(input_dim_kv, attention_dim)
    self.value_layer = nn.Linear(input_dim_kv, attention_dim)
    self.output_layer = nn.Linear(attention_dim, input_dim_q)

  def forward(self, x_q, x_kv):
    """`x_q` `[B, T, D_q]` queries, `x_kv` `[B, T, D_kv]` -> `[B, T, D_q]`."""
    query = self.query_layer(x_q)
    key = self.key_layer(x_kv)
    value = self.value_layer(x_kv)
    scores = torch.matmul(query, key.transpose(1, 2)) / (x_kv.shape[-1]**0.5)
    relevance = scores.sum(dim=1, keepdim=True).transpose(2, 1)  # [B, T, 1]
    return self.output_layer(relevance * value)


class ForgeryActivationModule(nn.Module):
  """MDP's head: embedding, dropout, bias-free k=1 classifier, DP pairs."""

  def __init__(self, input_dim, hidden_dim, num_classes, dropout_rate):
    super().__init__()
    self.f_embed = nn.Sequential(
        nn.Conv1d(input_dim, hidden_dim, kernel_size=3, stride=1, padding=1),
        nn.ReLU())
    self.f_cls = nn.Sequential(
        nn.Conv1d(hidden_dim, num_classes, kernel_size=1, stride=1,
                  padding=0, bias=False),
        nn.ReLU())
    self.dropout = nn.Dropout(p=dropout_rate)

  def forward(self, x):
    """`[B, T, D]` -> embeddings, cas, aness, adjacent-pair MSE `[B, T-1]`."""
    out = self.f_embed(x.permute(0, 2, 1))
    embeddings = out.permute(0, 2, 1)
    # The DP pairs are taken before dropout, as in MDP.
    mse_per_pair = torch.mean(
        (embeddings[:, :-1, :] - embeddings[:, 1:, :])**2, dim=2)
    cas = self.f_cls(self.dropout(out)).permute(0, 2, 1)
    return embeddings, cas, cas.sum(dim=2), mse_per_pair


class MDP(nn.Module):
  """MDP's network; state_dict keys as in DESIGN.md section 3."""

  def __init__(self, visual_dim=2048, audio_dim=1024, pooled_visual_dim=1024,
               embed_dim=512, qkv_dim=1024, head_dim=1024, num_classes=2,
               dropout_rate=0.7, topk_ratio=5):
    super().__init__()
    del visual_dim  # The pool takes any multiple of pooled_visual_dim.
    self.topk_ratio = topk_ratio
    self.aness_module = ForgeryActivationModule(4 * embed_dim, head_dim,
                                                num_classes, dropout_rate)
    self.softmax = nn.Softmax(dim=1)
    self.adaptive_pool = nn.AdaptiveAvgPool1d(pooled_visual_dim)
    self.visual_embed = ConvEmbed(pooled_visual_dim, embed_dim)
    self.visual_layerNorm = nn.LayerNorm(embed_dim)
    self.audio_embed = ConvEmbed(audio_dim, embed_dim)
    self.audio_layerNorm = nn.LayerNorm(embed_dim)
    self.cross_attention_audio2visual = CrossModalAttention(
        embed_dim, embed_dim, qkv_dim)
    self.cross_attention_audio2visual_layerNorm = nn.LayerNorm(embed_dim)
    self.cross_attention_visual2audio = CrossModalAttention(
        embed_dim, embed_dim, qkv_dim)
    self.cross_attention_visual2audio_layerNorm = nn.LayerNorm(embed_dim)

  @staticmethod
  def _topk_mean(x, k):
    """Mean of the `k` largest values over time (dim 1)."""
    return x.sort(descending=True, dim=1)[0][:, :k].mean(1)

  def forward_all(self, visual, audio):
    """Everything MDP computes, as a dict (the tests compare each part)."""
    visual = self.visual_layerNorm(
        self.visual_embed(self.adaptive_pool(visual)))
    audio = self.audio_layerNorm(self.audio_embed(audio))
    att_v = self.cross_attention_audio2visual_layerNorm(
        self.cross_attention_audio2visual(visual, audio))
    att_a = self.cross_attention_visual2audio_layerNorm(
        self.cross_attention_visual2audio(audio, visual))
    x = torch.cat((audio, visual, att_v, att_a), dim=2)
    k = x.shape[1] // self.topk_ratio
    embeddings, cas, aness, mse_per_pair = self.aness_module(x)
    return {
        'video_scores': self.softmax(self._topk_mean(cas, k)),
        'aness': aness,
        'cas': cas,
        'embeddings': embeddings,
        # MDP's k for the T - 1 pairs is the frames' T // 5.
        'dp_score': self._topk_mean(mse_per_pair, k),
    }

  def forward(self, visual, audio):
    """MDP's outputs: `(video_scores, aness, cas[, dp_score in training])`."""
    out = self.forward_all(visual, audio)
    if self.training:
      return out['video_scores'], out['aness'], out['cas'], out['dp_score']
    return out['video_scores'], out['aness'], out['cas']


def mdp_loss(video_scores, label, dp_score, dp_weight=0.2):
  """MDP's `TotalLoss_weak`: MSE to the one-hot label + 0.2 x DP BCE.

  Args:
    video_scores: `[B, C]` softmax scores.
    label: `[B, C]` one-hot float labels, as MDP's dataset gives them.
    dp_score: `[B]` DP logits.
    dp_weight: weight of the DP loss.
  """
  target = torch.argmax(label, dim=1, keepdim=True)
  one_hot = torch.zeros_like(video_scores).scatter_(1, target, 1.0)
  loss_cls = nn.functional.mse_loss(video_scores, one_hot)
  loss_dp = nn.functional.binary_cross_entropy_with_logits(
      dp_score.unsqueeze(-1), target.float())
  return loss_cls + dp_weight * loss_dp
