"""Evaluation metrics on hand-made logits with known answers; the Evaluator on a known source."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from gla_jax import models
from gla_jax import parallel
from gla_jax import validation
from gla_jax.data import loader
from gla_jax.data import sources
from gla_jax.models import building
from gla_jax.training import evaluate
from tests.data import small_data


def test_top_k_ranks_and_ties():
  logits = np.array([[0, 1, 2, 3, 4, 5, 6],     # label 0 is last: rank 6
                     [6, 5, 4, 3, 2, 1, 0],     # label 4: four classes before it
                     [1, 1, 1, 1, 1, 1, 1],     # label 0 ties all: lowest index first
                     [1, 1, 1, 1, 1, 1, 1],     # label 6 ties all: six classes before it
                     [0, 0, 9, 0, 0, 9, 0]],    # label 5 ties class 2, which comes first
                    np.float32)
  labels = np.array([0, 4, 0, 6, 5])
  np.testing.assert_array_equal(evaluate.label_rank(logits, labels), [6, 4, 0, 6, 1])
  np.testing.assert_array_equal(evaluate.top_k_correct(logits, labels, 5),
                                [False, True, True, False, True])
  result = evaluate.compute_metrics(logits, labels, np.arange(5), np.ones(5, bool))
  assert result['clip_accuracy'] == pytest.approx(1 / 5)
  assert result['clip_top5'] == pytest.approx(3 / 5)
  # The confusion matrix's prediction is the top-1 class (argmax, first on ties).
  assert result['clip_confusion'][0, 6] == 1 and result['clip_confusion'][5, 2] == 1


def test_video_accuracy_averages_softmax_scores_and_ignores_padding():
  # Video 7 (label 2): clip A says class 1, clip B says class 2 more strongly.
  # softmax([0, 5, 4]) = [.005, .727, .268]; softmax([0, 0, 3]) = [.045, .045, .909];
  # mean = [.025, .386, .588] -> class 2. Video 3 (label 0): one clip, correct.
  # Video 9 (label 1): two clips saying class 0 -> wrong.
  # Padding rows: mask False, label 0, video_index -1, logits that would be "correct".
  logits = np.array([[0, 5, 4], [0, 0, 3], [5, 0, 0], [3, 1, 0], [2, 0, 1],
                     [9, 0, 0], [9, 0, 0]], np.float32)
  labels = np.array([2, 2, 0, 1, 1, 0, 0])
  video_index = np.array([7, 7, 3, 9, 9, -1, -1])
  mask = np.array([True] * 5 + [False] * 2)
  accumulator = evaluate.MetricAccumulator(3)
  # Two batches, video 9's clips split between them.
  accumulator.add(logits[:4], labels[:4], video_index[:4], mask[:4])
  accumulator.add(logits[4:], labels[4:], video_index[4:], mask[4:])
  result = accumulator.result()
  assert result['num_clips'] == 5 and result['num_videos'] == 3
  assert result['clip_accuracy'] == pytest.approx(2 / 5)        # rows 1 and 2
  assert result['video_accuracy'] == pytest.approx(2 / 3)       # videos 7 and 3
  assert result['video_top5'] == 1.0                            # 3 classes: top-5 is all
  np.testing.assert_array_equal(result['clip_confusion'], [[1, 0, 0], [2, 0, 0], [0, 1, 1]])
  np.testing.assert_array_equal(result['video_confusion'], [[1, 0, 0], [1, 0, 0], [0, 0, 1]])


def test_metric_input_errors():
  accumulator = evaluate.MetricAccumulator(3)
  with pytest.raises(ValueError, match='No evaluation clip'):
    accumulator.result()
  accumulator.add(np.zeros((2, 3)), np.array([0, 0]), np.array([4, 4]), np.ones(2, bool))
  with pytest.raises(ValueError, match='Video 4'):     # the same video with another label
    accumulator.add(np.zeros((1, 3)), np.array([2]), np.array([4]), np.ones(1, bool))
  with pytest.raises(ValueError, match='expected 3'):
    accumulator.add(np.zeros((1, 5)), np.array([0]), np.array([1]), np.ones(1, bool))


@pytest.fixture(scope='module')
def tiny_evaluation():
  """The tiny config and a random-init tiny model (its predictions are what they are)."""
  config = tiny.get_config()
  with config.unlocked():
    config.data.max_bad_fraction = 0.1
  model = building.create_model(config)
  variables = models.init_variables(model, jax.random.key(0), (1, 8, 16, 16, 3))
  return config, model, variables


def _direct_scores(model, variables, config, clips):
  """Clip logits of `clips` (video, start) of a ClassSortedSource, built by hand."""
  frames = np.array([(16 * video + start + np.arange(8)) % 256 for video, start in clips])
  video = np.broadcast_to(frames[:, :, None, None, None].astype(np.float32), (len(clips), 8, 16,
                                                                              16, 3))
  video = (video - np.asarray(config.data.mean, np.float32)) / np.asarray(config.data.std,
                                                                           np.float32)
  forward = jax.jit(functools.partial(model.apply, train=False))   # One program, not eager ops.
  return np.asarray(forward(variables, jnp.asarray(video)), np.float64)


def test_evaluator_counts_real_clips_and_caps_with_a_subset_across_classes(
    monkeypatch, tiny_evaluation):
  """A video mid-split is unreadable (its rows are masked padding); the cap takes whole videos."""
  config, model, variables = tiny_evaluation
  source = small_data.ClassSortedSource(unreadable={13})        # 8 classes x 4 videos, in order
  monkeypatch.setattr(sources, 'create_source', lambda data_config, split: source)
  mesh = parallel.make_mesh(None)

  result = evaluate.Evaluator(config, model, mesh)(variables)
  clips = source.clips()
  logits = _direct_scores(model, variables, config, clips)
  labels = np.array([source.labels[video] for video, _ in clips])
  assert result['num_clips'] == len(clips) and result['num_videos'] == 31
  np.testing.assert_array_equal(result['clip_confusion'].sum(axis=1), np.bincount(labels))
  assert result['clip_accuracy'] == pytest.approx(np.mean(logits.argmax(axis=1) == labels))
  videos = np.array([video for video, _ in clips])
  probs = np.exp(logits - logits.max(axis=1, keepdims=True))
  probs /= probs.sum(axis=1, keepdims=True)
  video_correct = [probs[videos == v].mean(axis=0).argmax() == source.labels[v]
                   for v in np.unique(videos)]
  assert result['video_accuracy'] == pytest.approx(np.mean(video_correct))

  # eval.max_batches = 2 of 8 clips: whole videos of every class, not the first 16 clips.
  with config.unlocked():
    config.eval.max_batches = 2
  try:
    capped = evaluate.Evaluator(config, model, mesh)
    result = capped(variables)
  finally:
    with config.unlocked():
      config.eval.max_batches = 0
  subset = [tuple(clip) for clip in loader.eval_clips(source, config.data, max_clips=16,
                                                      seed=int(config.eval.seed)).tolist()
            if clip[0] != 13]
  assert capped.num_batches <= 2 and result['num_clips'] == len(subset)
  seen = result['clip_confusion'].sum(axis=1)
  np.testing.assert_array_equal(seen, np.bincount([source.labels[v] for v, _ in subset],
                                                  minlength=8))
  assert (seen > 0).sum() >= 5


def test_eval_seed_is_validated():
  config = tiny.get_config()
  config.eval.seed = -1
  with pytest.raises(ValueError, match=r'config.eval.seed=-1: must be >= 0'):
    validation.validate(config, num_devices=4)


def test_the_eval_step_normalises_uint8_clips_like_numpy(tiny_evaluation):
  config, model, variables = tiny_evaluation
  std = (50.0, 60.0, 70.0)                        # not the tiny config's 1: the division shows
  batches = loader.eval_batches(config.data, 'eval', batch_size=8)
  batch = next(batches)
  batches.close()
  assert batch['video'].dtype == np.uint8
  normalised = ((batch['video'].astype(np.float32) - np.asarray(config.data.mean, np.float32))
                / np.asarray(std, np.float32))
  step = jax.jit(functools.partial(evaluate.eval_step, model=model, mean=config.data.mean,
                                   std=std))
  outputs = step(variables, {key: batch[key] for key in ('video', 'label', 'video_index', 'mask')})
  logits = np.asarray(jax.jit(functools.partial(model.apply, train=False))(variables, normalised),
                      np.float64)
  np.testing.assert_allclose(outputs['logits'], logits, rtol=1e-5, atol=1e-5)
  shifted = logits - logits.max(axis=1, keepdims=True)
  losses = np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(8), batch['label']]
  np.testing.assert_allclose(outputs['loss'], losses, rtol=1e-5)
