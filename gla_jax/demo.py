"""The main job's demo: a long synthetic video with one action, localized end to end.

The main job (`--config=demo`) ends by writing a validation video
`DEMO_VIDEO_CLIPS` clips long whose action lasts one clip, explaining it with
sliding clips and localizing the action in it; the overlay video, panels and
`localization.json` show the result, compared here with the generator's truth.
"""
from typing import Any, Dict

import ml_collections

from gla_jax import video_explanation
from gla_jax.data import sources
from gla_jax.data import storage
from gla_jax.data import synthetic
from gla_jax.data import video_io
from gla_jax.explain import localize
from gla_jax.outputs import explanation_files
from gla_jax.outputs import reports

# The long demo video: clips of the config's length, this many clips long.
DEMO_VIDEO_CLIPS = 4
DEMO_VIDEO_NAME = 'synthetic_long_video'


def write_demo_video(config: ml_collections.ConfigDict, path: str) -> Dict[str, Any]:
  """A long synthetic validation video with one action segment, as a video file.

  The video is `DEMO_VIDEO_CLIPS` clip lengths long; the action segment is one
  clip length (`config.data.num_frames`) at the training speeds.

  Returns:
    Its ground truth: label, class name, the segment and the number of frames.
  """
  generator = sources.SyntheticSource(config.data, 'eval').config
  clip_frames = int(config.data.num_frames)
  num_frames = DEMO_VIDEO_CLIPS * clip_frames
  # The action lasts one clip length, as in training: a longer segment makes the
  # generator slow the motion to keep the actor in the frame (a 16-frame
  # move_left in the demo's 32-pixel frames ran at 0.97 px/frame, against the
  # 1.9-3.8 the network learned from, and the demo model called it grow).
  clip = synthetic.generate_video(generator, index=0, num_frames=num_frames, split='val',
                                  segment_frames=(clip_frames, clip_frames))
  with storage.local_file_for_writing(path) as local:   # OpenCV writes local files only.
    video_io.write_video(local, clip.video, fps=25.0, codec='MJPG')
  start, end = (int(v) for v in clip.segment)
  return dict(video=path, label=int(clip.label), class_name=clip.class_name,
              segment=[start, end], num_frames=num_frames)


def localize_demo_video(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """Writes the long demo video, localizes the action in it, and compares with its truth."""
  storage.make_dirs(storage.join(workdir, 'videos'))
  truth = write_demo_video(config, storage.join(workdir, 'videos', DEMO_VIDEO_NAME + '.avi'))
  loaded = video_explanation.load_for_workdir(config, workdir)
  result = video_explanation.explain_video(
      truth['video'], model=loaded.model, variables=loaded.variables, config=config,
      class_names=loaded.class_names, progress=False)
  out_dir = result.save(explanation_files.output_dir(workdir, truth['video'], True))
  segments = [(int(start), int(end)) for start, end in result.segments]
  if config.train.tensorboard:   # Beside the training curves and loc_eval's panels.
    reports.write_images(workdir, {'long_video/overlay': result.overlay_frames()[
        overlay_frame_index(segments, result.num_frames)]})
  return dict(truth, output=out_dir, predicted_class=result.class_name,
              predicted_segments=segments,
              temporal_iou=float(localize.temporal_iou(segments, [tuple(truth['segment'])])))


def overlay_frame_index(segments, num_frames: int) -> int:
  """The frame shown in TensorBoard: the middle of the first segment, else of the video."""
  start, end = segments[0] if segments else (0, num_frames)
  return (start + end - 1) // 2
