"""The keys every config has, with their defaults; configs/*.py override them.

Sections: `model`, `data`, `train`, `eval`, `explain`, `localize`, and two top-level keys.
Durations are in steps. Every config is locked, so a misspelt override
(`--config.train.learning_rat=0.1`) fails instead of being silently added;
`gla_jax.validation.validate` checks every value before any work.
"""
import ml_collections

from gla_jax.data import sampling
from gla_jax.explain import compared_methods
from gla_jax.explain import loc_metrics


def base_config() -> ml_collections.ConfigDict:
  """Every section with its defaults (Hara's ResNeXt-101 recipe on 16 x 112 x 112 clips)."""
  config = ml_collections.ConfigDict()
  config.model = ml_collections.ConfigDict(dict(
      preset='resnext101',     # resnext50 | resnext101 | resnext152 | tiny
      num_classes=101,
      dtype='float32',         # compute dtype: float32 | bfloat16 (parameters stay float32)
      stem_kernel=(7, 7, 7),   # conv1 (kT, kH, kW), odd; published weights need (7, 7, 7)
      max_pool=True,           # the max pool after conv1 (Hara's no_max_pool=False)
      temporal_strides=(1, 2, 2, 2),  # time stride of layer1..layer4 (Hara: as in space)
      gated=False,             # attention gates on the stages (gla_jax.models.gating)
      gate_normalization='softmax',  # softmax | sigmoid over (t, h, w)
      gate_head='concat',      # concat: one classifier | average: per-stage classifiers averaged
  ))
  config.data = data_config()
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
      dampening=0.9,           # sgd only, Hara's: buf = momentum buf + (1 - dampening) (g + wd p),
                               # the first step undamped (PyTorch); nesterov=True uses 0 (his main.py)
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
                               # not applied) after which the run stops; see gla_jax.training
  ))
  config.eval = ml_collections.ConfigDict(dict(
      batch_size=32,
      max_batches=0,           # 0 = the whole evaluation split; N = at most N * batch_size clips
                               # of whole videos, round-robin over the classes (seeded by seed)
      seed=0,                  # which videos an evaluation capped by max_batches reads
      split='eval',            # data split: eval | train; results go to <workdir>/eval_<split>.json
      checkpoint='latest',     # which training checkpoint --mode=eval reads: latest | best
  ))
  config.explain = ml_collections.ConfigDict(dict(
      method='gradcam',        # gradcam | gradcam_pp | layercam | hirescam (alias elementwise) |
                               # xgradcam | gradcam_elementwise | eigencam | scorecam | ablationcam
      layers='stages',         # stages | blocks | comma-separated tap names
      aggregate='mean',        # mean | max | product | sum
      pooling='global',        # global | time
      normalization='minmax',  # minmax | tanh
      upsampling='half_pixel',  # half_pixel (PyTorch's interpolate) | receptive_field (cell i
                               # at stride * i, where its receptive field is centred)
      batch_size=8,
      max_clips=16,            # validation clips explained by the main job
      chunk_size=32,           # scorecam/ablationcam: channels per batched forward pass
                               # (each runs batch_size * chunk_size clips; memory grows with it)
  ))
  # Boxes and segments from the attention (gla_jax.explain.localize), long videos
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
      held_out_fraction=0.5,   # videos whose clips choose each method's threshold; the rest are
                               # reported (each video on one side)
      iou_threshold=0.5,       # a box is correct at IoU >= this
      frame_map_threshold=0.5,  # loc_eval: frame-mAP's IoU for a correct per-frame detection
      video_map_thresholds=(0.2, 0.5),  # loc_eval: video-mAP at each spatio-temporal IoU (delta)
      pointing_tolerance=0.0,  # pointing game: px between the peak and the box (0 = inside)
      deletion_steps=20,       # deletion/insertion curve steps (RISE); 0 skips both AUCs
      curve_clips=16,          # evaluation clips the curves are computed on (they cost a forward
                               # pass per step, method and clip); 0 = all of them
      road_clips=4,            # reported clips scored with ROAD (MoRF, LeRF at fractions 0.1-0.9)
                               # and average drop / increase in confidence; 0 skips them (each
                               # costs 18 forward passes and 18 imputations per method)
      max_clips=64,            # evaluation clips of --mode=loc_eval, whole videos round-robin over
                               # the classes (seeded by seed); 0 = the whole split
      batch_size=8,            # clips per call in --mode=loc_eval (explanations, curve steps)
      seed=0,                  # loc_eval: which videos are read (max_clips) and held out
      num_pictures=2,          # loc_eval: example panels with ground-truth and predicted boxes
      methods=compared_methods.DEFAULT_KINDS,  # loc_eval: the table's methods, names or kinds
                               # of explain.compared_methods (e.g. 'gradcam:layer3', 'layercam',
                               # 'scorecam'); () = all. Default: all but scorecam and ablationcam
                               # (a forward pass per channel and clip). gradcam:layer4 and
                               # global-local:* always
      upsamplings=(),          # loc_eval: half_pixel | receptive_field, each method once per one
                               # ('<method>@<upsampling>'); () = explain.upsampling only
      write_gif=False,         # explain/localize: overlay.gif besides overlay.mp4 (Pillow)
      video_codec='avc1',      # FourCC of the overlay: avc1 = H.264 in .mp4 (PyAV's libx264; mp4v
                               # with a warning where PyAV has none) | mp4v | MJPG (.avi) | XVID | FFV1
      colormap='jet',          # heat maps of overlays and panels: an OpenCV colour map (jet, turbo,
                               # viridis, inferno, ...; gla_jax.outputs.pictures.COLORMAPS)
  ))
  config.num_devices = 0       # 0 = every visible device
  config.distributed = False   # call jax.distributed.initialize() (multi-host)
  # The command line keeps compiled programs in <user cache>/gla_jax/jax_cache, so a second run
  # does not compile again (gla_jax/compile_cache.py); $GLA_JAX_COMPILATION_CACHE=0 turns it off too.
  config.compilation_cache = True
  return config


def data_config() -> ml_collections.ConfigDict:
  """The `config.data` section with its defaults; override fields in configs/*.py.

  Keys:
    source: 'synthetic', 'folder' or 'tfds'.
    num_frames: frames per clip T.
    frame_stride: take every k-th frame (a clip spans num_frames * k frames).
    crop_size: output height and width S.
    train_scales: crop side as a fraction of min(H, W), one drawn per clip.
      Hara's scales suit real videos; on synthetic clips a 0.5 corner crop can
      cut the actor out, so synthetic configs may prefer milder scales.
    flip: random horizontal flip in training.
    mean, std: per-channel normalisation of RGB in [0, 255]: (x - mean) / std.
      The defaults are what Hara's published weights expect.
    workers: parallel workers building examples (0: in the calling thread).
    worker_type: 'thread' (default) or 'process' (spawned processes; may help
      the numpy-heavy synthetic generator, see benchmarks/input_bench.py).
    prefetch: batches built ahead of the one being consumed.
    max_bad_fraction: the fraction of a split's videos that may be unreadable
      (skipped and replaced, see the module docstring) before the run stops
      with `BadDataError`. The default 0.01 tolerates a few broken files in a
      real dataset (95 of UCF101's 9537 training videos) but stops a run whose
      folder or codec is wrong; 0 stops at the first unreadable video.
    retries: extra attempts at reading an example whose source raised
      (anything but `video_io.VideoReadError`), with a short back-off.
    random_labels_seed: -1 (off), or the seed of a fixed random label for every
      TRAINING video (`read_tasks.random_labels`: classes balanced, the same
      in every epoch and on resume; evaluation keeps the true labels), for the
      data randomisation test of Adebayo et al. 2018 (studies/sanity_checks.py).
    synthetic: generator settings (`synthetic_settings.SyntheticConfig`): difficulty
      (a key of `synthetic_settings.DIFFICULTIES`: default, hard, demo, demo_hard,
      natural), train_size and val_size (videos per split; eval
      reads 'val'), num_frames (frames generated per video; may exceed the
      clip's num_frames), height, width (the generated frame size; may exceed
      crop_size), seed.
    root: folder of the train split videos, `<root>/<class>/<file>`.
    eval_root: folder of the eval split videos; '' = root (UCF101: both splits
      in one folder; `export_video_folder` writes one folder per split).
    annotations: annotations.json of a folder (boxes, segments, frame counts,
      class order); relative paths are taken in each split's folder; '' =
      `<folder>/annotations.json` if it exists, else none.
    train_split_file, eval_split_file: UCF101-style lists (`trainlist01.txt`:
      `<class>/<file> <label 1-based>`; `testlist01.txt`: `<class>/<file>`);
      relative paths are taken in the split's folder; '' = every video of the
      folder (from the annotations if present, else all class sub-folders).
    tfds_name, tfds_train_split, tfds_eval_split, tfds_data_dir: the TFDS
      dataset (`name/config[:version]`), its split names, and its data_dir
      ('' = TFDS's default). `ucf101/ucf101_1` keeps UCF101's 320x240 frames
      (split 1); `ucf101` alone is TFDS's first config, `ucf101_1_256`, whose
      videos were resized to 256x256 when prepared (read with a warning).
  """
  return ml_collections.ConfigDict(dict(
      source='synthetic',
      num_frames=16,
      frame_stride=1,
      crop_size=112,
      train_scales=sampling.HARA_SCALES,
      flip=True,
      mean=sampling.ACTIVITYNET_MEAN,
      std=(1.0, 1.0, 1.0),
      workers=2,
      worker_type='thread',
      prefetch=2,
      max_bad_fraction=0.01,
      retries=2,
      random_labels_seed=-1,
      synthetic=dict(
          difficulty='default',
          train_size=1024,
          val_size=256,
          num_frames=16,
          height=112,
          width=112,
          seed=0,
      ),
      root='',
      eval_root='',
      annotations='',
      train_split_file='',
      eval_split_file='',
      tfds_name='ucf101/ucf101_1',   # undistorted frames, split 1 (not ucf101_1_256's squares)
      tfds_train_split='train',
      tfds_eval_split='test',
      tfds_data_dir='',
  ))
