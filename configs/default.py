"""Default WMMT config: the embedded synthetic dataset at small widths.

Runs end to end on a 2-core CPU in a few minutes:

  python -m wmmt_jax.main --config=configs/default.py --workdir=/tmp/wmmt

`get_config('tiny')` shrinks everything for tests and smoke runs;
`get_config('real_widths')` keeps the synthetic data but uses the real feature
widths (2048 visual, 1024 audio) and MDP's layer widths.
"""

import ml_collections


def get_config(arg=None):
  """Returns the default config. `arg='real_widths'` uses the real widths."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  # Global batch size; must divide over all devices.
  config.batch_size = 16
  config.total_steps = 2000
  config.learning_rate = 1e-3
  # Adam's betas and epsilon (torch and optax defaults).
  config.adam_b1 = 0.9
  config.adam_b2 = 0.999
  config.adam_eps = 1e-8
  # Torch-style L2 weight decay added to the gradient (MDP uses 5e-4); 0 = off.
  config.weight_decay = 0.0
  config.checkpoint_every_steps = 500
  config.keep_checkpoints = 3
  config.log_every_steps = 100
  # 0 = evaluate once at the end of training only.
  config.eval_every_steps = 0
  # A step with a non-finite loss, gradient or update: False = stop the run,
  # naming the step and the last good checkpoint (nothing bad is saved);
  # True = keep the parameters and optimiser state of that step and count it
  # in `train/skipped_steps`.
  config.skip_nonfinite_updates = False
  # A workdir whose config.json differs from this config in fields that
  # change the training itself (anything outside RESUME_SAFE_KEYS in
  # wmmt_jax/workdir.py) is refused; True resumes it anyway. The checkpoint's
  # array shapes must match the model either way.
  config.resume_allow_config_changes = False

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = 'synthetic'
  # Dataset root; '' = `{workdir}/data` for the synthetic dataset.
  config.dataset.root = ''
  # On-disk feature layout (DESIGN.md section 4): 'mdp' or 'generic'.
  config.dataset.layout = 'mdp'
  config.dataset.train_split = 'train'
  config.dataset.eval_split = 'test'
  # Videos of some classes only (input_pipeline.pipeline.SUBSETS): 'all',
  # 'real_and_both' / 'both_modified' (MDP's train / eval protocol) or
  # 'visual_only' (audio-only forgeries left out).
  config.dataset.train_subset = 'all'
  config.dataset.eval_subset = 'all'
  # Training length T: longer videos are cropped (or binned), shorter padded.
  config.dataset.num_frames = 128
  # 'crop': a random window of T frames; 'bins': MDP's one random frame per bin.
  config.dataset.train_sampling = 'crop'
  # Audio to visual length: 'avg_pool' (MDP) or 'linear' (UMMAFormer).
  config.dataset.audio_align = 'avg_pool'
  # 'ummaformer' layout only: append TSN flow (feats/tsn/flow) to the RGB
  # features; visual_dim is then 4096.
  config.dataset.use_flow = False
  # Audio features per second, for the length check of the validation;
  # 0 = the layout's (mdp 50, ummaformer 12.5; generic: no check).
  config.dataset.audio_rate = 0.0
  # Validation tolerances: relative length difference (plus 2 frames), and
  # seconds a segment may end past the video.
  config.dataset.length_tolerance = 0.1
  config.dataset.segment_tolerance_s = 0.1
  # Read the features from records prepared once (input_pipeline/prepare.py:
  # validated, then written as ArrayRecord shards through a TFDS builder,
  # under `prepared_dir`, '' = {root}/prepared), not from the .npy files.
  config.dataset.use_prepared = False
  config.dataset.prepared_dir = ''
  # Stored feature dtype: 'float32' (bit exact), 'float16' or 'bfloat16'
  # (half the size; the model computes in model.dtype either way).
  config.dataset.record_dtype = 'float32'
  # Videos that fail validation: False = stop with a report naming them;
  # True = leave them out, listed in validation_report.json.
  config.dataset.skip_invalid = False
  config.dataset.visual_dim = 64
  config.dataset.audio_dim = 32
  # Evaluation pads each video to the smallest bucket that holds it (longer
  # videos to a multiple of the largest), so compiles stay few.
  config.dataset.eval_length_buckets = (128, 256, 512)
  config.dataset.prefetch = 2

  # The embedded synthetic dataset (input_pipeline/synthetic.py).
  config.dataset.synthetic = ml_collections.ConfigDict()
  config.dataset.synthetic.seed = 0
  config.dataset.synthetic.num_train = 4096
  config.dataset.synthetic.num_test = 512
  config.dataset.synthetic.fps = 25.0
  # Audio features per second (wav2vec2-style is 50).
  config.dataset.synthetic.audio_rate = 50.0
  config.dataset.synthetic.min_duration_s = 2.0
  config.dataset.synthetic.max_duration_s = 5.0
  # Class proportions (real, both, visual only, audio only), LAV-DF-like.
  config.dataset.synthetic.class_proportions = (0.27, 0.25, 0.24, 0.24)
  config.dataset.synthetic.min_segment_s = 0.1
  config.dataset.synthetic.max_segment_s = 1.6
  config.dataset.synthetic.max_fakes = 2
  # Forgery traces (input_pipeline/synthetic.py): a shift along a forgery
  # direction (the shift vector's norm, in per-channel feature stds; for 64
  # channels, 8 is one std per channel) and a factor on the frame-to-frame
  # deviation. At these amplitudes the Table VII baseline reaches visibly
  # lower AP and AR than WMMT within the default steps.
  config.dataset.synthetic.shift = 8.0
  config.dataset.synthetic.deviation_factor = 3.0

  config.model = ml_collections.ConfigDict()
  # 'wmmt' (the paper) or 'mdp' (its predecessor, wmmt_jax/models/mdp.py,
  # trained with MDP's loss; configs/mdp_lavdf.py). MDP reads embed_dim,
  # qkv_dim, head_dim, dropout_rate, topk_ratio, dtype and the two below.
  config.model.name = 'wmmt'
  # MDP only: the visual features are averaged down to this width (MDP:
  # 2048 -> 1024); must divide dataset.visual_dim.
  config.model.pooled_visual_dim = 32
  # Width of the conv embedding of each modality (MDP: 512).
  config.model.embed_dim = 64
  # Width of TPPA's Q, K, V (MDP: 1024).
  config.model.qkv_dim = 128
  # Normalisation of TPPA's column sums: 'softmax' (paper), 'sigmoid', 'none' (MDP).
  config.model.tppa_norm = 'softmax'
  # Scale of Q K^T: 'key_input' = 1/sqrt(input width of the key side) (MDP),
  # 'qkv' = 1/sqrt(qkv_dim).
  config.model.tppa_scale = 'key_input'
  # Add each TPPA block's input to its output before the LayerNorm.
  config.model.tppa_residual = True
  config.model.intra_fe = True
  config.model.inter_fe = True
  # Multitask learning: h_v, h_a, c_v, c_a and expert selection (else h_m only).
  config.model.multitask = True
  # F_m: 'enhanced' = [F''_v, F''_a] (paper), 'mdp' = [A, V, att_v, att_a].
  config.model.fusion = 'enhanced'
  # Hidden width of each localization head (MDP: 1024).
  config.model.head_dim = 128
  config.model.dropout_rate = 0.7
  # Classification heads' temporal aggregation: 'topk' (MDP) or 'mean' (Eq. 2).
  config.model.aggregation = 'topk'
  # k = T // topk_ratio.
  config.model.topk_ratio = 5
  # Compute dtype: 'float32' or 'bfloat16' (parameters stay float32).
  config.model.dtype = 'float32'

  config.loss = ml_collections.ConfigDict()
  # Eq. 15: L = w_m L_m + w_v L_v + w_a L_a + w_dp L_dp.
  config.loss.weight_m = 0.8
  config.loss.weight_v = 0.1
  config.loss.weight_a = 0.1
  config.loss.weight_dp = 0.1
  config.loss.use_dp = True
  # Deviation measure f: 'mse', 'l1', 'l2', 'cosine', 'kl' (Table V).
  config.loss.dp_function = 'mse'
  # Deviation objective: 'a', 'v', 'm', 'a+v', 'a+v+m' (Table VI).
  config.loss.dp_objective = 'm'
  # 'sigmoid_sum' = Eq. 11 (sigmoid of the sum over t, then BCE);
  # 'topk_logits' = MDP (mean of the top T // dp_topk_ratio, BCE with logits).
  config.loss.dp_reduction = 'sigmoid_sum'
  config.loss.dp_topk_ratio = 5
  # What the deviation is measured on: 'features' (F''_v, F''_a, F_m, as in
  # the paper) or 'embeddings' (each head's hidden embedding, as in MDP).
  config.loss.dp_input = 'features'

  config.eval = ml_collections.ConfigDict()
  # 'wmmt', 'lavdf' or 'avdeepfake1m' (DESIGN.md section 5).
  config.eval.protocol = 'avdeepfake1m'
  # More protocols scored on the same predictions (results.json 'protocols').
  config.eval.extra_protocols = ()
  config.eval.batch_size = 8
  # 'mdp': runs where forged beats real; 'multi_threshold': thresholds + NMS.
  config.eval.proposal_method = 'mdp'
  config.eval.thresholds = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
  config.eval.nms_iou = 0.5
  config.eval.max_proposals = 100
  # After the final evaluation, {workdir}/plots (and TensorBoard images):
  # forgery timelines of a few videos per class, precision-recall curves at
  # the protocol's IoUs, t-SNE of video features before and after
  # enhancement (Fig. 4). Needs the [viz] extra; skipped without it.
  config.eval.plots = True
  config.eval.plot_timelines_per_class = 3
  config.eval.plot_tsne_videos = 1000
  # WMMT on videos (padded) longer than this many frames runs chunked
  # (wmmt_jax/models/long_video.py: same result, memory bounded by the
  # chunk); 0 = always one pass.
  config.eval.chunk_size = 4096
  # Modality-aware expert selection (needs model.multitask); else h_m always.
  config.eval.expert_selection = True
  # '' = the multimodal task (expert selection, all forged segments); 'v' /
  # 'a' = Table IV's single-modality tasks: h_v / h_a localize every video
  # (no real gate), scored against the visual / audio forged segments.
  config.eval.task = ''
  # Sec. III-F: a video that c_m calls real gets no proposals.
  config.eval.real_has_no_proposals = True
  # Each video's proposal list: 'score' (best first, the challenge format)
  # or 'temporal' (MDP's lists, in time order; AP matching follows it).
  config.eval.proposal_order = 'score'
  # AR's proposal order and ground truth: 'listed' and False score as the
  # official evaluator; MDP's evaluator takes proposals in 'temporal' order
  # and drops the ground truth of videos without proposals (True).
  config.eval.ar_order = 'listed'
  config.eval.drop_gt_without_proposals = False
  # '' = report the last step. A metric of the results table ('ap@0.75',
  # 'map', 'mean_ar', 'ar@20', 'video_accuracy', 'auc', ...) = keep the
  # parameters of the best evaluation (every eval_every_steps and at the end)
  # in {workdir}/best and report those, as MDP picks by AP@0.75.
  config.eval.best_metric = ''
  # An Orbax checkpoint of model variables ({'params': ...}, e.g. written by
  # `python -m wmmt_jax.convert mdp`): evaluate it and write results.json
  # without training. '' = train.
  config.eval.checkpoint = ''

  if arg == 'tiny':
    # Seconds-scale runs for tests and smoke checks.
    config.batch_size = 4
    config.total_steps = 6
    config.checkpoint_every_steps = 2
    config.log_every_steps = 2
    config.dataset.num_frames = 32
    config.dataset.visual_dim = 8
    config.dataset.audio_dim = 4
    config.dataset.eval_length_buckets = (32, 64)
    config.dataset.synthetic.num_train = 16
    config.dataset.synthetic.num_test = 8
    config.dataset.synthetic.min_duration_s = 1.0
    config.dataset.synthetic.max_duration_s = 2.0
    config.model.embed_dim = 8
    config.model.qkv_dim = 8
    config.model.head_dim = 8
    config.model.pooled_visual_dim = 4
    config.eval.batch_size = 4
    config.eval.plots = False
  elif arg == 'real_widths':
    config.dataset.visual_dim = 2048
    config.dataset.audio_dim = 1024
    config.model.embed_dim = 512
    config.model.qkv_dim = 1024
    config.model.head_dim = 1024
    config.model.pooled_visual_dim = 1024
  elif arg:
    raise ValueError(f"configs/default.py: unknown config arg {arg!r}; "
                     "expected '', 'tiny' or 'real_widths'.")
  return config
