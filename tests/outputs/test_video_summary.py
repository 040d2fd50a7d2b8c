"""The terminal summary of explain/localize (gla_jax/outputs/video_summary.py) on hand-made records."""
from gla_jax.outputs import video_summary


def _record(video_score):
  return dict(video='walk.avi', fps=25.0, class_name='move_left', probability=0.99,
              top=[dict(class_name='move_left', probability=0.99),
                   dict(class_name='grow', probability=0.88),
                   dict(class_name='shrink', probability=0.56)],
              video_score=video_score, output='runs/demo/localize/walk',
              segments=[dict(start_frame=24, end_frame=30, start_s=0.96, end_s=1.2)])


def test_lines_give_classes_seconds_and_inclusive_frames():
  assert video_summary.title(_record('mean'), True) == 'Localization of walk.avi: move_left (p=0.99)'
  assert video_summary.lines(_record('mean')) == [
      'top 3:    move_left 0.99, grow 0.88, shrink 0.56',
      'segments: 0.96-1.20 s (frames 24-29)',
      'outputs:  runs/demo/localize/walk']


def test_max_scores_say_they_are_each_class_best_clip():
  """With video_score='max' the top classes' figures need not sum to 1: the line says why."""
  first = video_summary.lines(_record('max'))[0]
  assert first.endswith("(each class's most confident clip)")
