"""The keys every config has, with their defaults; the other configs override them.

Sections: `model`, `data` (see `gla_jax.input_pipeline.default_data_config`),
`train`, `eval`, `explain`, `localize`. Durations are in steps. Every config is locked, so a
misspelt override (`--config.train.learning_rat=0.1`) fails instead of being
silently added.
"""
import ml_collections

from gla_jax import input_pipeline
from gla_jax import loc_metrics


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = ml_collections.ConfigDict(dict(
      preset='resnext101',     # resnext50 | resnext101 | resnext152 | tiny
      num_classes=101,
      dtype='float32',         # compute dtype: float32 | bfloat16 (parameters stay float32)
      stem_kernel=(7, 7, 7),   # conv1 (kT, kH, kW), odd; published weights need (7, 7, 7)
      max_pool=True,           # the max pool after conv1 (Hara's no_max_pool=False)
      temporal_strides=(1, 2, 2, 2),  # time stride of layer1..layer4 (Hara: as in space)
      gated=False,             # attention gates on the stages (gla_jax.gating)
      gate_normalization='softmax',  # softmax | sigmoid over (t, h, w)
      gate_head='concat',      # concat: one classifier | average: per-stage classifiers averaged
  ))
  config.data = input_pipeline.default_data_config()
  config.train = ml_collections.ConfigDict(dict(
      batch_size=32,           # global, over all devices and hosts
      num_steps=10_000,
      optimizer='sgd',         # sgd (Hara's recipe) | adamw
      learning_rate=0.1,       # peak, after warm-up
      schedule='cosine',       # cosine | step | constant
      warmup_steps=0,
      step_boundaries=(),      # for schedule='step': steps where the rate drops
      step_decay=0.1,          # multiplier at each boundary
      momentum=0.9,            # sgd only
      nesterov=False,          # sgd only
      weight_decay=1e-3,       # sgd: L2 on every parameter (Hara's); adamw: decoupled decay
      seed=0,
      init_checkpoint='',      # a converted checkpoint dir, a training workdir or a .pth file
      drop_head=False,         # re-initialise the classifier (new class count)
      freeze_until='',         # '' | conv1 | layer1 .. layer4: train only what follows (Hara's ft_begin_index)
      log_every=50,
      eval_every=1000,         # 0 = only at the end
      checkpoint_every=1000,   # 0 = only at the end (and at every evaluation)
      keep_checkpoints=3,      # the latest N are kept, and the best by best_metric besides
      best_metric='video_accuracy',  # clip_accuracy | clip_top5 | video_accuracy | video_top5
      tensorboard=True,        # TensorBoard events when tensorboardX (or TF + tensorboard) imports
      max_nonfinite_steps=10,  # consecutive steps with a NaN/inf loss or gradient (each one skipped,
                               # not applied) after which the run stops; see gla_jax.train
  ))
  config.eval = ml_collections.ConfigDict(dict(
      batch_size=32,
      max_batches=0,           # 0 = the whole evaluation split
      split='eval',            # data split: eval | train; results go to <workdir>/eval_<split>.json
      checkpoint='latest',     # which training checkpoint --mode=eval reads: latest | best
  ))
  config.explain = ml_collections.ConfigDict(dict(
      method='gradcam',        # gradcam | gradcam_pp | layercam | elementwise
      layers='stages',         # stages | blocks | comma-separated tap names
      aggregate='mean',        # mean | max | product | sum
      pooling='global',        # global | time
      normalization='minmax',  # minmax | tanh
      batch_size=8,
      max_clips=16,            # validation clips explained by the main job
  ))
  # Boxes and segments from the attention (gla_jax.localize), long videos
  # (--mode=explain/localize) and the evaluation against ground truth (--mode=loc_eval).
  config.localize = ml_collections.ConfigDict(dict(
      threshold=0.5,           # box: pixels >= threshold * max (Grad-CAM used 0.15, CAM 0.2)
      relative_to='frame',     # frame | clip: the max the threshold is a fraction of
      policy='largest',        # largest | all: box of the largest contour or of all of them
      temporal_threshold=0.5,  # segment: frames whose attention mass >= this * the peak frame's
      min_segment_frames=1,    # shorter segments are dropped (raise for flickering long videos)
      max_gap_frames=0,        # segments at most this many frames apart are merged
      clip_stride=0,           # sliding clips on long videos: frames between starts, 0 = num_frames // 2
      video_score='mean',      # a long video's class from its clips' probabilities: mean (Hara's
                               # video accuracy, trimmed videos) | max (the most confident clip,
                               # for untrimmed videos whose action fills few of the clips)
      weight_by_video_class=False,  # scale each clip's maps by its probability of the video's
                               # class before stitching (untrimmed videos: empty clips fade)
      thresholds=loc_metrics.DEFAULT_THRESHOLDS,  # box thresholds swept by --mode=loc_eval
      held_out_fraction=0.5,   # clips that choose each method's threshold; the rest are reported
      iou_threshold=0.5,       # a box is correct at IoU >= this
      pointing_tolerance=0.0,  # pointing game: px between the peak and the box (0 = inside)
      deletion_steps=20,       # deletion/insertion curve steps (RISE); 0 skips both AUCs
      curve_clips=16,          # evaluation clips the curves are computed on (they cost a forward
                               # pass per step, method and clip); 0 = all of them
      max_clips=64,            # evaluation clips of --mode=loc_eval (0 = the whole split)
      batch_size=8,            # clips per call in --mode=loc_eval (explanations, curve steps)
      seed=0,                  # which clips are held out
      num_pictures=2,          # loc_eval: example panels with ground-truth and predicted boxes
      write_gif=False,         # explain/localize: overlay.gif besides overlay.mp4 (Pillow)
      video_codec='mp4v',      # FourCC of overlay.mp4
  ))
  config.num_devices = 0       # 0 = every visible device
  config.distributed = False   # call jax.distributed.initialize() (multi-host)
  return config
