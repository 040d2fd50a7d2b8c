"""ROAD and average drop / increase in confidence against independent references.

References: the imputation against scipy's sparse solver of ROAD's linear
system, built here pixel by pixel, and against pytorch-grad-cam's
NoisyLinearImputer (noise 0); the scores against pytorch-grad-cam's ROAD and
confidence metric classes on the same linear classifier in PyTorch and JAX;
hand-made clips whose answers are known.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg

from gla_jax.explain import faithfulness

torch = pytest.importorskip('torch')
from tests import grad_cam_reference  # noqa: E402

# ROAD's weights, written out independently of the module: edge neighbours 1/6, corners 1/12.
_WEIGHTS = {(dy, dx): (1 / 12 if dy and dx else 1 / 6)
            for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx}


def _road_system(removed, values):
  """ROAD's sparse system for one frame: A x = b over the removed pixels (raster order)."""
  height, width = removed.shape
  unknowns = {pixel: k for k, pixel in enumerate(zip(*np.nonzero(removed)))}
  matrix = scipy.sparse.lil_matrix((len(unknowns), len(unknowns)))
  right = np.zeros((len(unknowns), values.shape[-1]))
  for (y, x), k in unknowns.items():
    for (dy, dx), weight in _WEIGHTS.items():
      ny, nx = y + dy, x + dx
      if not (0 <= ny < height and 0 <= nx < width):
        continue
      matrix[k, k] += weight
      if removed[ny, nx]:
        matrix[k, unknowns[(ny, nx)]] -= weight
      else:
        right[k] += weight * values[ny, nx]
  return matrix.tocsc(), right, list(unknowns)


def _spsolve_fill(frame, removed):
  matrix, right, pixels = _road_system(removed, frame)
  solution = scipy.sparse.linalg.spsolve(matrix, right).reshape(len(pixels), -1)
  filled = frame.astype(np.float64).copy()
  for (y, x), value in zip(pixels, solution):
    filled[y, x] = value
  return filled


# The frames of the imputation tests: 3 of 10 x 10 (one compile).
FRAMES, HEIGHT, WIDTH = 3, 10, 10


def _frames_and_masks(seed=0):
  rng = np.random.default_rng(seed)
  frames = rng.normal(size=(FRAMES, HEIGHT, WIDTH, 3)).astype(np.float32)
  removed = rng.random((FRAMES, HEIGHT, WIDTH)) < 0.4
  removed[:, 2:6, 3:8] = True            # a blob with interior pixels
  removed[:, 0, :] = True                # a removed border row
  removed[2, 5:] = True                  # half a frame
  return frames, removed


def test_impute_equals_spsolve_of_road_system():
  frames, masks = _frames_and_masks()
  filled = np.asarray(faithfulness.impute(frames, masks, noise=0.0))
  for frame, removed, got in zip(frames, masks, filled):
    expected = _spsolve_fill(frame, removed)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    np.testing.assert_array_equal(got[~removed], frame[~removed])


@pytest.mark.filterwarnings('ignore::DeprecationWarning')   # pgc's np.float32(torch tensor)
def test_impute_equals_pytorch_grad_cam_imputer():
  grad_cam_reference.load()
  from pytorch_grad_cam.metrics import road
  frames, masks = _frames_and_masks(seed=5)
  filled = np.asarray(faithfulness.impute(frames, masks, noise=0.0))
  for frame, removed, got in zip(frames, masks, filled):
    reference = road.NoisyLinearImputer(noise=0.0)(
        torch.from_numpy(frame.transpose(2, 0, 1).copy()),
        torch.from_numpy((~removed).astype(np.float32)))           # ROAD's mask: 1 = kept
    np.testing.assert_allclose(got, reference.numpy().transpose(1, 2, 0), atol=1e-4)


def test_conjugate_gradients_residual_is_small_on_a_large_hole():
  """A 64 x 64 frame with 90 % removed in one blob: the relative residual in ROAD's system."""
  size = 64
  yy, xx = np.mgrid[:size, :size]
  attention = np.exp(-((yy - size / 2) ** 2 + (xx - size / 3) ** 2) / (2 * (size / 3) ** 2))
  removed = attention >= np.quantile(attention, 0.1)
  frame = np.random.default_rng(0).normal(size=(size, size, 3)).astype(np.float32)
  limit = faithfulness.CG_ITERATIONS_PER_PIXEL * size            # impute's limit

  @jax.jit
  def solve(values, mask):
    return faithfulness.conjugate_gradients(*faithfulness.road_system(values, mask), limit)
  solution, iterations = solve(jnp.moveaxis(frame, -1, 0), removed)
  matrix, right, pixels = _road_system(removed, frame)
  x = np.asarray(solution, np.float64)[:, removed].T              # raster order, as pixels
  residual = np.linalg.norm(matrix @ x - right, axis=0) / np.linalg.norm(right, axis=0)
  assert residual.max() < 2 * faithfulness.CG_TOLERANCE, residual
  assert size < int(iterations) <= 3 * size < limit               # about 2 per pixel across


def test_impute_known_fills():
  yy, xx = np.mgrid[:HEIGHT, :WIDTH].astype(np.float32)
  hole = np.zeros((HEIGHT, WIDTH), bool)
  hole[2:7, 3:8] = True                                   # touches no border
  linear = np.stack([0.5 * yy - 0.25 * xx + 1, np.full_like(yy, 3.0), xx], axis=-1)
  everything = np.ones((HEIGHT, WIDTH), bool)             # no kept pixel: 0 (the mean colour)
  removed = np.stack([hole, everything, hole])
  frames = np.stack([linear, linear, np.zeros_like(linear)])
  filled = np.asarray(faithfulness.impute(frames, removed, noise=0.0))
  # The weighted neighbour mean of a linear image is the image: the fill recovers it.
  np.testing.assert_allclose(filled[0], linear, atol=1e-4)
  np.testing.assert_array_equal(filled[1], 0)
  np.testing.assert_array_equal(filled[2], 0)
  noisy = np.asarray(faithfulness.impute(frames, removed, noise=0.5, seed=3))
  added = (noisy - filled)[removed]                       # 150 pixels x 3 channels
  assert abs(added.std() - 0.5) < 0.1 and abs(added.mean()) < 0.1
  np.testing.assert_array_equal(noisy[~removed], frames[~removed])


def test_removal_masks_rank_the_whole_clip():
  attention = np.zeros((2, 2, 5), np.float32)
  attention[0] = np.arange(10).reshape(2, 5) / 10 + 0.05   # frame 0 above all of frame 1
  attention[1, 0, 0] = 0.01                                 # the rest of frame 1 ties at 0
  most, least = (np.asarray(m) for m in faithfulness.removal_masks(
      attention, np.array([0.25, 0.5], np.float32)))
  expected = np.zeros((2, 2, 2, 5), bool)      # [fraction, T, H, W]
  expected[0, 0, 1] = True                     # 5 of 20: frame 0's second row, its highest
  expected[1, 0] = True                        # 10 of 20: frame 0
  np.testing.assert_array_equal(most, expected)
  np.testing.assert_array_equal(least[1], ~most[1])
  # Least relevant first, 5 of 20: tied zeros, the last in raster order first.
  expected = np.zeros((2, 2, 5), bool)
  expected[1, 1] = True
  np.testing.assert_array_equal(least[0], expected)


def test_road_clips_remove_whole_frames_and_fill_them_with_zero():
  rng = np.random.default_rng(0)
  video = rng.normal(size=(2, 10, 10, 3)).astype(np.float32)
  attention = np.concatenate([0.5 + 0.5 * rng.random((1, 10, 10)),
                              0.5 * rng.random((1, 10, 10))])
  clips = np.asarray(faithfulness.road_clips(video, attention, noise=0.0))
  assert clips.shape == (18, 2, 10, 10, 3)
  half = faithfulness.FRACTIONS.index(0.5)
  morf, lerf = clips[half], clips[len(faithfulness.FRACTIONS) + half]
  np.testing.assert_array_equal(morf[0], 0)
  np.testing.assert_array_equal(morf[1], video[1])
  np.testing.assert_array_equal(lerf[0], video[0])
  np.testing.assert_array_equal(lerf[1], 0)


def _linear_classifier(seed, pixels, classes=4):
  rng = np.random.default_rng(seed)
  return (rng.normal(scale=0.1, size=(pixels, classes)).astype(np.float32),
          rng.normal(size=classes).astype(np.float32))


@jax.jit
def _linear_probability(weights, bias, clips, target):
  logits = clips.reshape(len(clips), -1) @ weights + bias
  return jax.nn.softmax(logits, axis=-1)[:, target]


def _jax_score_fn(weights, bias, target):
  return lambda clips: _linear_probability(weights, bias, jnp.asarray(clips), target)


@pytest.mark.filterwarnings('ignore::DeprecationWarning')   # pgc's np.float32(torch tensor)
def test_scores_equal_pytorch_grad_cam_metrics(monkeypatch):
  grad_cam_reference.load()
  from pytorch_grad_cam.metrics import cam_mult_image, road
  from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

  class Noiseless(road.NoisyLinearImputer):
    def __init__(self):
      super().__init__(noise=0.0)
  monkeypatch.setattr(road, 'NoisyLinearImputer', Noiseless)

  count, height, width = 3, 10, 10        # 100 pixels: np.percentile removes round(f * 100)
  rng = np.random.default_rng(2)
  images = rng.normal(size=(count, height, width, 3)).astype(np.float32)
  cams = rng.random((count, height, width)).astype(np.float32)
  targets = [1, 2, 1]                     # the predicted classes: 2 drops, 1 increase
  weights, bias = _linear_classifier(1, height * width * 3)

  class Linear(torch.nn.Module):
    def forward(self, x):                  # [N, C, H, W], flattened as the JAX clips
      return x.permute(0, 2, 3, 1).reshape(len(x), -1) @ torch.from_numpy(weights) + \
          torch.from_numpy(bias)
  model = Linear()
  tensor = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
  categories = [ClassifierOutputSoftmaxTarget(t) for t in targets]
  scores = [faithfulness.clip_scores(_jax_score_fn(weights, bias, t), images[i][None],
                                     cams[i][None], batch_size=4, noise=0.0)
            for i, t in enumerate(targets)]
  morf = np.array([s['morf'] - s['original'] for s in scores])       # [N, F]
  lerf = np.array([s['lerf'] - s['original'] for s in scores])
  for k in (0, 4, 8):                                    # fractions 0.1, 0.5, 0.9
    percentile = round(100 * (1 - faithfulness.FRACTIONS[k]))   # pgc keeps the pixels below
    np.testing.assert_allclose(
        morf[:, k], road.ROADMostRelevantFirst(percentile)(tensor, cams, categories, model),
        atol=1e-5)
    np.testing.assert_allclose(
        lerf[:, k], road.ROADLeastRelevantFirst(percentile)(tensor, cams, categories, model),
        atol=1e-5)
  morf_average = road.ROADMostRelevantFirstAverage()(tensor, cams, categories, model)
  lerf_average = road.ROADLeastRelevantFirstAverage()(tensor, cams, categories, model)
  np.testing.assert_allclose(morf.mean(1), morf_average, atol=1e-5)
  np.testing.assert_allclose(lerf.mean(1), lerf_average, atol=1e-5)
  summary = faithfulness.summarize(scores)
  np.testing.assert_allclose(summary['road_morf'], morf_average.mean(), atol=1e-5)
  np.testing.assert_allclose(summary['road_lerf'], lerf_average.mean(), atol=1e-5)
  # ROADCombined is (its LeRF average - its MoRF average) / 2, per image.
  np.testing.assert_allclose(summary['road_combined'],
                             np.mean((lerf_average - morf_average) / 2), atol=1e-5)
  drop = cam_mult_image.DropInConfidence()(tensor, cams, categories, model)
  increase = cam_mult_image.IncreaseInConfidence()(tensor, cams, categories, model)
  original = np.array([s['original'] for s in scores])
  np.testing.assert_allclose(summary['average_drop'], 100 * np.mean(drop / original), atol=1e-3)
  assert summary['increase_in_confidence'] == pytest.approx(100 * increase.mean())
  assert summary['average_drop'] > 1 and summary['increase_in_confidence'] == pytest.approx(
      100 / 3)


def test_scores_known_answer_informative_pixels_first():
  """Only a 10 % region is read; the map ranks it first, the rest of the clip is 0."""
  video = np.zeros((2, 10, 10, 3), np.float32)
  region = np.zeros((2, 10, 10), bool)
  region[0, 3:7, 2:7] = True                              # 20 of the 200 pixels
  video[region] = 1.0
  attention = np.where(region, 1.0, 0.5 * np.random.default_rng(0).random(region.shape))

  def score_fn(clips):                  # P(class 0) of logits (4 * mean over the region, 0)
    evidence = 4 * np.asarray(clips)[:, region].mean(axis=(1, 2))
    return 1 / (1 + np.exp(-evidence))
  scores = faithfulness.clip_scores(score_fn, video, attention, noise=0.0)
  original = 1 / (1 + np.exp(-4.0))
  assert scores['original'] == pytest.approx(original)
  # MoRF removes the region first; it is filled from zeros: the evidence is gone.
  np.testing.assert_allclose(scores['morf'], 0.5, atol=1e-5)
  # LeRF removes 90 % at most: never the region, the score does not move.
  np.testing.assert_allclose(scores['lerf'], original, atol=1e-6)
  # The map is 1 on the region: the multiplied clip reads the same.
  assert scores['multiplied'] == pytest.approx(original)
  summary = faithfulness.summarize([scores])
  assert summary['road_morf'] == pytest.approx(0.5 - original, abs=1e-5)
  assert summary['road_lerf'] == pytest.approx(0.0, abs=1e-6)
  assert summary['road_combined'] == pytest.approx((original - 0.5) / 2, abs=1e-5)
  assert summary['average_drop'] == pytest.approx(0.0, abs=1e-4)
  assert summary['increase_in_confidence'] == 0.0
  half = faithfulness.clip_scores(score_fn, video, np.full(region.shape, 0.5), noise=0.0)
  assert half['multiplied'] == pytest.approx(1 / (1 + np.exp(-2.0)))
  assert faithfulness.summarize([half])['average_drop'] == pytest.approx(
      100 * (original - 1 / (1 + np.exp(-2.0))) / original, rel=1e-5)


def test_method_scores_on_collected_clips():
  rng = np.random.default_rng(0)
  mean, std = (120.0, 110.0, 100.0), (60.0, 50.0, 40.0)
  video = rng.integers(0, 256, size=(3, 1, 10, 10, 3), dtype=np.uint8)
  maps = {'a': rng.random((3, 1, 10, 10)), 'b': rng.random((3, 1, 10, 10))}
  weights, bias = _linear_classifier(2, 300)
  clips = dict(video=video, target=np.array([1, 0, 3]), maps=maps)
  bars = []

  class Bar:
    def __init__(self, total, desc, unit):
      self.total, self.count, self.closed = total, 0, False
      bars.append(self)

    def update(self, n=1):
      self.count += n

    def close(self):
      self.closed = True

  score_fns = {}
  result = faithfulness.method_scores(
      lambda i: score_fns.setdefault(i, _jax_score_fn(weights, bias, clips['target'][i])), clips,
      [2, 0], mean, std, 8, Bar(4, 'ROAD', 'map'))
  assert sorted(score_fns) == [0, 2]
  assert set(result) == {'a', 'b'} and set(result['a']) == set(faithfulness.SCORES)
  assert bars[0].total == bars[0].count == 4 and bars[0].closed
  normalised = (video.astype(np.float64) - mean) / std
  for name in maps:
    expected = faithfulness.summarize([faithfulness.clip_scores(
        _jax_score_fn(weights, bias, clips['target'][i]), normalised[i], maps[name][i],
        seed=i) for i in (2, 0)])
    for key in faithfulness.SCORES:
      assert result[name][key] == pytest.approx(expected[key], rel=1e-5, abs=1e-6)
  assert result['a'] != result['b']


@pytest.mark.parametrize('call, message', [
    (lambda: faithfulness.impute(np.zeros((2, 4, 4)), np.zeros((2, 4, 4), bool)),
     r'frames \[B, H, W, C\]'),
    (lambda: faithfulness.impute(np.zeros((1, 4, 4, 3)), np.zeros((1, 4, 4), bool), noise=-1),
     r'noise=-1'),
    (lambda: faithfulness.road_clips(np.zeros((1, 4, 4, 3)), np.zeros((1, 4, 4)), (0.5, 1.0)),
     r'each in \(0, 1\)'),
    (lambda: faithfulness.clip_scores(None, np.zeros((1, 4, 4, 3)), np.zeros((1, 4, 5))),
     r'same T, H, W'),
    (lambda: faithfulness.summarize([]), r'at least one clip'),
    (lambda: faithfulness.method_scores(None, dict(maps={}), [], (0,) * 3, (1,) * 3, 8, None),
     r'ROAD needs at least one clip'),
])
def test_bad_input_is_refused(call, message):
  with pytest.raises(ValueError, match=message):
    call()
