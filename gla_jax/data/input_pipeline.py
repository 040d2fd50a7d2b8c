"""Input pipeline: clips sampled and augmented as Hara et al. do, batched for jit.

Three sources give the same batches (`config.data.source`):
  'synthetic'  the embedded generator (`gla_jax.synthetic`), rendered on demand;
  'folder'     video files `<root>/<class>/<file>` (UCF101/HMDB51 layout, or a
               folder written by `synthetic.export_video_folder`), decoded with
               `gla_jax.video_io`; optional UCF101 split files and annotations;
  'tfds'       a TensorFlow Datasets dataset (`ucf101` by default) read through
               `tfds.data_source` (random access; needs the ArrayRecord format).

Batch format (a dict of numpy arrays, the same for every source and split):
  video        float32 [B, T, S, S, 3]  RGB in [0, 255], minus `mean`, over `std`
  label        int32 [B]                class index (0 on padding rows)
  video_index  int32 [B]                index of the source video the clip comes
                                        from (-1 on padding rows), for video-level
                                        accuracy (average the clip scores per video)
  mask         bool [B]                 False on the padding rows that fill the
                                        last evaluation batch; always True in training
  boxes        float32 [B, T, 4]        only where the source has ground truth:
                                        (x0, y0, x1, y1), x1/y1 exclusive, in pixels
                                        of the S x S clip after crop, resize and
                                        flip; -1 where absent
  present      bool [B, T]              with `boxes`: the actor is visible in the
                                        crop (False also where the crop cut it out)
T = `num_frames`, S = `crop_size`. With `process_count` P > 1 each process gets
its B / P rows of the global batch.

Sampling (Hara et al., 3D-ResNets-PyTorch, `TemporalRandomCrop`,
`MultiScaleCornerCrop`, `RandomHorizontalFlip`, test-time `LoopPadding` and
`CenterCrop`):
  training    a random window of `num_frames` frames taken every `frame_stride`
              frames (start uniform over all windows that fit; Hara's code
              leaves out the last one, an off-by-one not copied here), loop-padded
              (indices repeat from the window's first frame) when the video is
              shorter; one square crop per clip of side `scale * min(H, W)`, the
              scale drawn from `train_scales` and the position from the 4 corners
              and the centre; resized to `crop_size`; flipped left-right with
              probability 0.5 when `flip`.
  evaluation  every non-overlapping window of `num_frames` strided frames,
              starting at frame 0, the last one loop-padded when the video does
              not divide evenly (as Hara's test set-up, which keeps that partial
              clip), at least one clip per video; the centre square of side
              min(H, W) resized to `crop_size`, no flip. This is the same region
              as Hara's `Scale(crop_size)` + `CenterCrop(crop_size)`: scaling
              the short side to S and cutting the centre S x S square is the
              centre min(H, W) square scaled by S / min(H, W); only the order of
              resampling differs.
  Resizing uses cv2 INTER_AREA when shrinking (PIL's bilinear in Hara's code
  also low-pass filters then) and INTER_LINEAR when enlarging.

Determinism: the rows of training step s are a function of (seed, s) only:
epoch e = s * B // N is a fresh permutation of the N videos drawn from
(seed, e), and each row's augmentation comes from (seed, s, row). So
`train_batches(..., start_step=k)` resumes exactly, results do not depend on
`workers`, and the rows of P processes concatenate to the 1-process batch.

Unreadable data: an example whose video cannot be read is not fatal. Reading
is retried `retries` times (a network file system or a TFDS reader may fail
once and then work; `video_io.VideoReadError`, a corrupt, truncated, missing
or non-video file, is not retried), then the video is recorded as unreadable,
with a warning naming it, and the example is replaced by the next video in
index order (video i + 1, i + 2, ...) with the same random draws. The
replacement depends on nothing but the files, so a resumed run reads the same
batches. Each training epoch ends with a report of the examples replaced
(`DataHealth`, which `train` logs and writes to metrics.jsonl); evaluation
leaves out the clips of unreadable videos (mask False). When more than
`max_bad_fraction` of a split's videos are unreadable the pipeline stops with
`BadDataError` listing them. With several processes each counts the videos of
its own rows.

Parallelism: `workers` threads (cv2 decoding, resizing and most numpy work
release the GIL) or, with `worker_type='process'`, processes; each task builds
whole examples, and `prefetch` batches are built ahead of the one consumed so
the accelerator does not wait. `workers=0` builds everything in the caller's
thread (debugging).
"""
import abc
import collections
import concurrent.futures
import math
import multiprocessing
import os
import time
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from absl import logging
import cv2
import ml_collections
import numpy as np

from gla_jax.data import annotations as annotations_lib
from gla_jax import config_checks
from gla_jax.data import video_io

Batch = Dict[str, np.ndarray]
Example = Dict[str, Any]

SPLITS = ('train', 'eval')
SOURCES = ('synthetic', 'folder', 'tfds')
VIDEO_EXTENSIONS = ('.avi', '.mp4', '.mkv', '.mov', '.webm', '.m4v', '.mpg', '.mpeg')

# Hara et al.'s preprocessing for their published weights (DESIGN.md section 2).
ACTIVITYNET_MEAN = (114.7748, 107.7354, 99.4750)
HARA_SCALES = (1.0, 0.841, 0.707, 0.595, 0.5)

# SeedSequence words that keep the random streams of the pipeline apart.
_EPOCH_STREAM = 0
_EXAMPLE_STREAM = 1


# ------------------------------------------------------------------------------
# Sources: random access to videos and their labels (and ground truth if any).
# ------------------------------------------------------------------------------


class Source(abc.ABC):
  """Random access to the videos of one split (the interface of the sources).

  Attributes:
    class_names: label i is class_names[i].
    has_boxes: load() returns 'boxes' and 'present'.
  """
  class_names: List[str]
  has_boxes: bool = False

  @abc.abstractmethod
  def __len__(self) -> int:
    """Number of videos."""

  @abc.abstractmethod
  def num_frames(self, index: int) -> int:
    """Frame count of video `index` (what clip sampling plans with)."""

  @abc.abstractmethod
  def load(self, index: int, frame_indices: np.ndarray) -> Example:
    """Frames `frame_indices` (each in [0, num_frames(index))) of video `index`.

    Returns:
      dict: 'video' uint8 [len(frame_indices), H, W, 3] RGB, 'label' int, and
      with has_boxes 'boxes' float32 [len, 4] in the video's pixels and
      'present' bool [len].
    """

  def describe(self, index: int) -> str:
    """How messages name video `index` (a file path where there is one)."""
    return f'{type(self).__name__} video {index}'


class SyntheticSource(Source):
  """Clips of `gla_jax.synthetic`, rendered on access ('eval' reads 'val')."""

  has_boxes = True

  def __init__(self, data_config: ml_collections.ConfigDict, split: str):
    # Imported here so the folder and tfds sources work without the generator.
    from gla_jax.data import synthetic  # pylint: disable=g-import-not-at-top
    settings = data_config.synthetic
    self.config = synthetic.SyntheticConfig.from_difficulty(
        settings.difficulty, num_frames=settings.num_frames, height=settings.height,
        width=settings.width, seed=settings.seed)
    size = settings.train_size if split == 'train' else settings.val_size
    self.dataset = synthetic.SyntheticDataset(
        self.config, 'train' if split == 'train' else 'val', size)
    self.class_names = list(self.dataset.class_names)

  def __len__(self) -> int:
    return len(self.dataset)

  def num_frames(self, index: int) -> int:
    return self.config.num_frames

  def load(self, index: int, frame_indices: np.ndarray) -> Example:
    item = self.dataset[index]
    return dict(video=item['video'][frame_indices], label=int(item['label']),
                boxes=item['boxes'][frame_indices], present=item['present'][frame_indices])


def _resolve(path: str, folder: str) -> str:
  return path if os.path.isabs(path) else os.path.join(folder, path)


def _read_split_file(path: str) -> List[Tuple[str, Optional[int]]]:
  """(relative path, 1-based label or None) per non-empty line."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'Split file {path!r} does not exist; set '
                            'train_split_file/eval_split_file to an existing list or '
                            "'' to use every video of the folder.")
  entries = []
  with open(path) as f:
    for line_number, line in enumerate(f, 1):
      fields = line.split()
      if not fields:
        continue
      if len(fields) > 2 or (len(fields) == 2 and not fields[1].lstrip('-').isdigit()):
        raise ValueError(f'{path}:{line_number}: expected "<class>/<file> [label]", '
                         f'got {line.strip()!r}.')
      entries.append((fields[0], int(fields[1]) if len(fields) == 2 else None))
  if not entries:
    raise ValueError(f'Split file {path!r} lists no video; check the file.')
  return entries


def _read_class_index(path: str) -> List[str]:
  """Class names of a UCF101 classInd.txt ("<label 1-based> <name>" lines)."""
  pairs = []
  with open(path) as f:
    for line in f:
      fields = line.split()
      if fields:
        pairs.append((int(fields[0]), fields[1]))
  pairs.sort()
  if [label for label, _ in pairs] != list(range(1, len(pairs) + 1)):
    raise ValueError(f'{path!r}: labels must be 1..{len(pairs)}, each once.')
  return [name for _, name in pairs]


class FolderSource(Source):
  """Video files under `<folder>/<class>/<file>`, decoded with OpenCV.

  Class order: the annotation file's "classes"; else a classInd.txt in the
  folder or beside the split file (UCF101 ships one with its split lists);
  else the sorted sub-folder names (the UCF101 order too). A split-file label
  that disagrees with the class of the file's folder raises, since it means the
  class order differs from the one the labels were written with.
  Frame counts come from the annotations, else from the container header.
  """

  def __init__(self, data_config: ml_collections.ConfigDict, split: str):
    folder = data_config.root if split == 'train' else (data_config.eval_root or data_config.root)
    if not folder:
      raise ValueError("data.source='folder' needs data.root (and data.eval_root "
                       'when the eval videos are in another folder); set it to the '
                       'folder holding <class>/<video> files.')
    if not os.path.isdir(folder):
      raise FileNotFoundError(f'Video folder {folder!r} (data.root/eval_root) does not exist.')
    self.folder = folder
    split_file = data_config.train_split_file if split == 'train' else data_config.eval_split_file

    annotations = None
    if data_config.annotations:
      annotations_path = _resolve(data_config.annotations, folder)
      if not os.path.isfile(annotations_path):
        raise FileNotFoundError(f'Annotation file {annotations_path!r} (data.annotations) '
                                "does not exist; fix the path or set '' for none.")
    else:
      annotations_path = os.path.join(folder, 'annotations.json')
    if os.path.isfile(annotations_path):
      # Validated: a box outside its frame or a wrong frame count is named here,
      # not met later as a wrong crop or an index error.
      annotations = annotations_lib.load(annotations_path)
    self.has_boxes = annotations is not None
    self._annotations = {} if annotations is None else {
        video['path']: video for video in annotations['videos']}

    split_path = _resolve(split_file, folder) if split_file else None
    entries = _read_split_file(split_path) if split_path else None
    self.class_names = self._class_names(annotations, split_path)
    class_ids = {name: i for i, name in enumerate(self.class_names)}

    if entries is not None:
      pass
    elif annotations is not None:
      entries = [(video['path'], None) for video in annotations['videos']]
    else:
      entries = [(f'{name}/{file}', None) for name in self.class_names
                 for file in sorted(os.listdir(os.path.join(folder, name)))
                 if file.lower().endswith(VIDEO_EXTENSIONS)]
    if not entries:
      raise ValueError(f'No video found in {folder!r}; expected <class>/<file> with one '
                       f'of the extensions {VIDEO_EXTENSIONS}.')
    self.paths, self.labels = [], []
    for relative, one_based in entries:
      class_name = relative.split('/')[0]
      if relative in self._annotations:
        label = int(self._annotations[relative]['label'])
      elif class_name in class_ids:
        label = class_ids[class_name]
      elif one_based is not None:
        label = one_based - 1
      else:
        raise ValueError(f'{relative!r}: its folder {class_name!r} is not a known class '
                         f'({len(self.class_names)} classes); fix the split file or the classes.')
      if one_based is not None and one_based - 1 != label:
        raise ValueError(
            f'{relative!r}: the split file says label {one_based} (1-based) but the class '
            f'order gives {label + 1} ({self.class_names[label]!r}); the class order differs '
            'from the one of the split file: provide its classInd.txt or annotations.')
      if not 0 <= label < len(self.class_names):
        raise ValueError(f'{relative!r}: label {label} outside the {len(self.class_names)} classes.')
      self.paths.append(relative)
      self.labels.append(label)
    self._frame_counts: Dict[int, int] = {}

  def _class_names(self, annotations, split_path) -> List[str]:
    if annotations is not None:
      return list(annotations['classes'])
    candidates = [os.path.join(self.folder, 'classInd.txt')]
    if split_path:
      candidates.append(os.path.join(os.path.dirname(split_path), 'classInd.txt'))
    for candidate in candidates:
      if os.path.isfile(candidate):
        return _read_class_index(candidate)
    names = sorted(name for name in os.listdir(self.folder)
                   if os.path.isdir(os.path.join(self.folder, name)))
    if not names:
      raise ValueError(f'{self.folder!r} has no class sub-folders; expected '
                       '<root>/<class>/<video files>.')
    return names

  def __len__(self) -> int:
    return len(self.paths)

  def path(self, index: int) -> str:
    return os.path.join(self.folder, *self.paths[index].split('/'))

  def describe(self, index: int) -> str:
    return self.path(index)

  def num_frames(self, index: int) -> int:
    annotation = self._annotations.get(self.paths[index])
    if annotation is not None:
      return int(annotation['num_frames'])
    if index not in self._frame_counts:
      count = video_io.video_info(self.path(index)).num_frames
      if count <= 0:  # Header without a count: decode once to know.
        count = len(video_io.read_video(self.path(index)))
      self._frame_counts[index] = count
    return self._frame_counts[index]

  def load(self, index: int, frame_indices: np.ndarray) -> Example:
    first, last = int(frame_indices.min()), int(frame_indices.max())
    frames = video_io.read_video(self.path(index), max_frames=last - first + 1, start=first)
    # The header count may overstate what decodes in a non-strict world; wrap
    # like the loop padding rather than index past the end.
    video = frames[(frame_indices - first) % len(frames)]
    example = dict(video=video, label=self.labels[index])
    if self.has_boxes:
      boxes = np.full((len(frame_indices), 4), -1, np.float32)
      present = np.zeros(len(frame_indices), bool)
      annotation = self._annotations.get(self.paths[index])
      if annotation is not None:
        frame_boxes = annotation['boxes']
        for row, t in enumerate(frame_indices):
          if t < len(frame_boxes) and frame_boxes[t] is not None:
            boxes[row] = frame_boxes[t]
            present[row] = True
        # Annotations are in the pixels of the frame size they record; a copy
        # of the videos re-encoded at another size keeps valid boxes.
        height, width = video.shape[1:3]
        size = (annotation.get('height', height), annotation.get('width', width))
        if size != (height, width):
          scale = np.array([width / size[1], height / size[0]] * 2, np.float32)
          boxes[present] *= scale
      example.update(boxes=boxes, present=present)
    return example


class TfdsSource(Source):
  """A TFDS video dataset read with `tfds.data_source` (random access).

  Frames are kept encoded (`tfds.decode.SkipDecoding`) and only the ones a
  clip uses are decoded (cv2.imdecode), so a training clip costs 16 JPEG
  decodes instead of the whole video's. Random access needs the dataset in
  ArrayRecord format in `data_dir`; nothing is downloaded.
  """

  def __init__(self, data_config: ml_collections.ConfigDict, split: str):
    # Imported only here: TensorFlow Datasets is heavy and optional.
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    name = data_config.tfds_name
    split_name = data_config.tfds_train_split if split == 'train' else data_config.tfds_eval_split
    data_dir = data_config.tfds_data_dir or None
    try:
      self._data = tfds.data_source(name, split=split_name, data_dir=data_dir, download=False,
                                    decoders={'video': tfds.decode.SkipDecoding()})
    except Exception as e:  # TFDS raises many types here; all mean "not usable as is".
      raise RuntimeError(
          f'tfds.data_source({name!r}, split={split_name!r}, data_dir={data_dir!r}) failed: '
          f'{type(e).__name__}: {e}. The dataset must already be prepared in data_dir '
          '(nothing is downloaded) in the ArrayRecord format that random access needs: '
          f'`tfds build {name} --data_dir=DIR --file_format=array_record` (UCF101 also '
          'needs its manual download), or convert an existing TFRecord copy with '
          '`tfds convert_format`.') from e
    info = getattr(self._data, 'dataset_info', None) or tfds.builder(name, data_dir=data_dir).info
    self._name = f'{name}/{split_name}'
    self.class_names = list(info.features['label'].names)
    self._frame_counts: Dict[int, int] = {}

  def __len__(self) -> int:
    return len(self._data)

  def num_frames(self, index: int) -> int:
    if index not in self._frame_counts:
      self._frame_counts[index] = len(self._data[index]['video'])
    return self._frame_counts[index]

  def describe(self, index: int) -> str:
    return f'TFDS {self._name} example {index}'

  def load(self, index: int, frame_indices: np.ndarray) -> Example:
    item = self._data[index]
    encoded = item['video']
    self._frame_counts[index] = len(encoded)
    if isinstance(encoded, np.ndarray) and encoded.dtype == np.uint8 and encoded.ndim == 4:
      video = encoded[frame_indices]  # A dataset that stores raw frames.
    else:
      unique, inverse = np.unique(frame_indices, return_inverse=True)
      decoded = np.stack([self._decode(encoded[t], index, t) for t in unique])
      video = decoded[inverse]
    return dict(video=video, label=int(item['label']))

  @staticmethod
  def _decode(data: bytes, index: int, t: int) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
      raise video_io.VideoReadError(f'Frame {t} of TFDS example {index} does not decode as '
                                    'an image; the dataset files are corrupt: rebuild them.')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def create_source(data_config: ml_collections.ConfigDict, split: str) -> Source:
  """The `data_config.source` source of `split` ('train' or 'eval')."""
  if split not in SPLITS:
    raise ValueError(f'Unknown split {split!r}; use one of {SPLITS}.')
  sources = dict(synthetic=SyntheticSource, folder=FolderSource, tfds=TfdsSource)
  if data_config.source not in sources:
    raise ValueError(f'Unknown data.source {data_config.source!r}; use one of {SOURCES}.')
  source = sources[data_config.source](data_config, split)
  if len(source) == 0:
    raise ValueError(f'The {split!r} split of data.source={data_config.source!r} has no '
                     'video; check its size, folder or split names.')
  return source


# ------------------------------------------------------------------------------
# Sampling and augmentation (pure numpy/cv2 functions of explicit arguments).
# ------------------------------------------------------------------------------


def loop_pad(indices: np.ndarray, length: int) -> np.ndarray:
  """Repeats `indices` cyclically up to `length` (Hara's LoopPadding)."""
  return np.resize(np.asarray(indices, np.int64), length)


def train_frame_indices(num_frames: int, clip_frames: int, stride: int,
                        rng: np.random.Generator) -> np.ndarray:
  """A random window of `clip_frames` frames every `stride`, loop-padded.

  Returns:
    int64 [clip_frames], each in [0, num_frames).
  """
  span = (clip_frames - 1) * stride + 1
  start = int(rng.integers(0, max(num_frames - span, 0) + 1))
  return loop_pad(np.arange(start, min(start + span, num_frames), stride), clip_frames)


def eval_clip_starts(num_frames: int, clip_frames: int, stride: int) -> np.ndarray:
  """First frames of the non-overlapping evaluation clips (at least one)."""
  return np.arange(0, max(num_frames, 1), clip_frames * stride)


def eval_frame_indices(num_frames: int, start: int, clip_frames: int, stride: int) -> np.ndarray:
  """Frames of the evaluation clip starting at `start`, loop-padded."""
  end = min(start + clip_frames * stride, num_frames)
  return loop_pad(np.arange(start, max(end, start + 1), stride), clip_frames)


def corner_crop(height: int, width: int, scale: float, position: int) -> Tuple[int, int, int]:
  """Hara's MultiScaleCornerCrop box: (x0, y0, side).

  Args:
    height, width: frame size.
    scale: side as a fraction of min(height, width).
    position: 0 centre, 1 top-left, 2 top-right, 3 bottom-left, 4 bottom-right.
  """
  side = max(1, int(min(height, width) * scale))
  x0, y0 = {0: ((width - side) // 2, (height - side) // 2),
            1: (0, 0), 2: (width - side, 0),
            3: (0, height - side), 4: (width - side, height - side)}[position]
  return x0, y0, side


def transform_boxes(boxes: np.ndarray, present: np.ndarray, x0: int, y0: int, side: int,
                    size: int, flip: bool) -> Tuple[np.ndarray, np.ndarray]:
  """Maps boxes through crop (x0, y0, side) -> resize to `size` -> optional flip.

  Boxes are continuous pixel-edge coordinates (x1/y1 exclusive), so a crop is
  a shift, a resize a scaling by size / side, and a flip x -> size - x with the
  edges swapped. A box cut out by the crop becomes absent.

  Args:
    boxes: float [T, 4] (x0, y0, x1, y1) in the frame, -1 where absent.
    present: bool [T].
    x0, y0, side: the crop square in the frame.
    size: output side.
    flip: mirrored left-right after the resize.

  Returns:
    boxes float32 [T, 4] in the output clip (-1 where absent), present bool [T].
  """
  scale = size / side
  out = (np.asarray(boxes, np.float32) - np.array([x0, y0, x0, y0], np.float32)) * scale
  out = np.clip(out, 0, size)
  visible = np.asarray(present, bool) & (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
  if flip:
    out = np.stack([size - out[:, 2], out[:, 1], size - out[:, 0], out[:, 3]], axis=1)
  out[~visible] = -1
  return out.astype(np.float32), visible


def crop_resize(video: np.ndarray, x0: int, y0: int, side: int, size: int) -> np.ndarray:
  """Crops the square (x0, y0, side) of every frame and resizes it to size x size."""
  crop = video[:, y0:y0 + side, x0:x0 + side]
  if side == size:
    return np.array(crop)
  interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
  return np.stack([cv2.resize(frame, (size, size), interpolation=interpolation)
                   for frame in crop])


class _Augment:
  """Crop/resize/flip/normalise settings, picklable for process workers."""

  def __init__(self, data_config: ml_collections.ConfigDict):
    self.num_frames = int(data_config.num_frames)
    self.stride = int(data_config.frame_stride)
    self.crop_size = int(data_config.crop_size)
    self.scales = tuple(float(s) for s in data_config.train_scales)
    self.flip = bool(data_config.flip)
    self.mean = np.asarray(data_config.mean, np.float32)
    self.inv_std = 1.0 / np.asarray(data_config.std, np.float32)

  def normalise(self, video: np.ndarray) -> np.ndarray:
    """(video - mean) / std in float32, for uint8 [T, S, S, 3]."""
    # Broadcasting over a last axis of 3 runs numpy's inner loop 3 elements at
    # a time; rows of S * 3 values with the mean tiled along them are ~2x faster.
    rows = np.ascontiguousarray(video).reshape(-1, video.shape[-2] * 3)
    out = rows.astype(np.float32)
    out -= np.tile(self.mean, video.shape[-2])
    out *= np.tile(self.inv_std, video.shape[-2])
    return out.reshape(video.shape)

  def finish(self, example: Example, x0: int, y0: int, side: int, flip: bool) -> Example:
    video = crop_resize(example['video'], x0, y0, side, self.crop_size)
    if flip:
      video = video[:, :, ::-1]
    out = dict(video=self.normalise(video), label=example['label'])
    if 'boxes' in example:
      out['boxes'], out['present'] = transform_boxes(
          example['boxes'], example['present'], x0, y0, side, self.crop_size, flip)
    return out


# ------------------------------------------------------------------------------
# Reading examples despite unreadable videos.
# ------------------------------------------------------------------------------

# Seconds before the first retry of a failed read; doubled for each further one.
_RETRY_DELAY_S = 0.05
# Unreadable videos listed in a BadDataError before the rest are counted.
_MAX_LISTED = 20


class BadDataError(RuntimeError):
  """More videos of a split are unreadable than `data.max_bad_fraction` allows."""


class _ReadPolicy(NamedTuple):
  """How hard a task tries to read (a picklable argument of process tasks).

  Attributes:
    retries: extra attempts at a video whose source raised (not VideoReadError).
    attempts: videos tried in turn for one training example (the first and its
      replacements); more unreadable ones in a row exceed the tolerated count.
  """
  retries: int
  attempts: int


class _Outcome(NamedTuple):
  """What a reading task returns.

  Attributes:
    value: an Example (training), the list of a video's clips (evaluation), or
      None when no video could be read.
    video_index: the video the value comes from (a replacement's index).
    failures: (video index, description, problem) of each video that failed.
  """
  value: Any
  video_index: int
  failures: Tuple[Tuple[int, str, str], ...]


def _problem(error: BaseException) -> str:
  return f'{type(error).__name__}: {error}'


def _read(source: Source, video_index: int, read: Callable[[], Any], retries: int) -> Any:
  """`read()`, tried `retries` more times after an error other than VideoReadError."""
  for attempt in range(retries):
    try:
      return read()
    except video_io.VideoReadError:
      raise   # A corrupt, truncated, missing or non-video file reads the same next time.
    except Exception as error:  # pylint: disable=broad-except
      # Any other failure of a source (network file system, TFDS reader) may be transient.
      logging.warning('Reading %s failed (%s); retry %d of %d.', source.describe(video_index),
                      _problem(error), attempt + 1, retries)
      time.sleep(_RETRY_DELAY_S * 2 ** attempt)
  return read()


def _train_example(source: Source, augment: _Augment, video_index: int, seed: int, step: int,
                   row: int, policy: _ReadPolicy) -> _Outcome:
  """The clip of (step, row) from `video_index`, or from the next readable video after it.

  A replacement video gets the random draws the original would have had
  (the generator restarts from (seed, step, row)), so which example replaces
  which depends only on the files.
  """
  failures = []
  for offset in range(policy.attempts):
    candidate = (video_index + offset) % len(source)

    def read(candidate=candidate):
      rng = np.random.default_rng([seed, _EXAMPLE_STREAM, step, row])
      frame_indices = train_frame_indices(source.num_frames(candidate), augment.num_frames,
                                          augment.stride, rng)
      return source.load(candidate, frame_indices), rng

    try:
      example, rng = _read(source, candidate, read, policy.retries)
    except Exception as error:  # pylint: disable=broad-except
      failures.append((candidate, source.describe(candidate), _problem(error)))
      continue
    height, width = example['video'].shape[1:3]
    scale = augment.scales[int(rng.integers(len(augment.scales)))]
    x0, y0, side = corner_crop(height, width, scale, int(rng.integers(5)))
    flip = augment.flip and bool(rng.integers(2))
    return _Outcome(augment.finish(example, x0, y0, side, flip), candidate, tuple(failures))
  return _Outcome(None, video_index, tuple(failures))


def _eval_examples(source: Source, augment: _Augment, video_index: int, starts: Sequence[int],
                   policy: _ReadPolicy) -> _Outcome:
  """Evaluation clips of one video at `starts`, decoding the video once (None if unreadable)."""

  def read():
    num_frames = source.num_frames(video_index)
    clips = [eval_frame_indices(num_frames, start, augment.num_frames, augment.stride)
             for start in starts]
    return source.load(video_index, np.concatenate(clips))

  try:
    example = _read(source, video_index, read, policy.retries)
  except Exception as error:  # pylint: disable=broad-except
    return _Outcome(None, video_index,
                    ((video_index, source.describe(video_index), _problem(error)),))
  height, width = example['video'].shape[1:3]
  x0, y0, side = corner_crop(height, width, 1.0, 0)
  examples = []
  for k in range(len(starts)):
    rows = slice(k * augment.num_frames, (k + 1) * augment.num_frames)
    examples.append(augment.finish({key: (value[rows] if key != 'label' else value)
                                    for key, value in example.items()}, x0, y0, side, False))
  return _Outcome(examples, video_index, ())


class DataHealth:
  """The unreadable videos one pipeline met: warned about once each, counted, limited.

  `train_batches` and `eval_batches` fill it. Training reports once per
  epoch: `pop_epoch_reports` gives the records the training loop logs and
  writes to metrics.jsonl. Counts live in memory: a resumed run counts anew.

  Args:
    split: 'train' or 'eval', for messages.
    max_bad_fraction: `data.max_bad_fraction`.

  Attributes:
    unreadable: {description: problem} of every unreadable video, in the order met.
    skipped: training examples replaced, or evaluation clips left out, in all.
  """

  def __init__(self, split: str, max_bad_fraction: float):
    self.split = split
    self.max_bad_fraction = float(max_bad_fraction)
    self.unreadable: Dict[str, str] = {}
    self.skipped = 0
    self.size = 0
    self._epoch_skipped: Dict[int, int] = collections.Counter()
    self._epochs_done = 0
    self._reports: List[Dict[str, float]] = []

  def attach(self, size: int, epochs_done: int = 0) -> None:
    """Sets the split's video count and the epochs already done (a resumed run's)."""
    self.size, self._epochs_done = size, epochs_done

  @property
  def allowed(self) -> int:
    """How many unreadable videos are tolerated: floor(max_bad_fraction * videos)."""
    return int(math.floor(self.max_bad_fraction * self.size + 1e-9))

  def policy(self, retries: int) -> _ReadPolicy:
    return _ReadPolicy(retries=retries, attempts=max(1, min(self.size, self.allowed + 1)))

  def record(self, failures: Sequence[Tuple[int, str, str]], skipped: int, epoch: int = 0
             ) -> None:
    """Notes one example's failed videos and how many examples or clips they cost.

    Raises:
      BadDataError: more unreadable videos than tolerated.
    """
    if not failures:
      return
    for _, description, problem in failures:
      if description not in self.unreadable:
        self.unreadable[description] = problem
        logging.warning(
            'Skipping unreadable %s video %s (%s); %s. %d unreadable so far, %d of %d '
            'tolerated (config.data.max_bad_fraction=%g).', self.split, description, problem,
            'its examples are replaced by the next video' if self.split == 'train'
            else 'its clips are left out of the evaluation', len(self.unreadable),
            self.allowed, self.size, self.max_bad_fraction)
    self.skipped += skipped
    self._epoch_skipped[epoch] += skipped
    if len(self.unreadable) > self.allowed:
      raise BadDataError(self._too_many())

  def no_readable_video(self) -> BadDataError:
    return BadDataError(f'No readable {self.split} video left: every video tried failed.\n'
                        + self._listing())

  def _listing(self) -> str:
    lines = [f'  {description}: {problem}'
             for description, problem in list(self.unreadable.items())[:_MAX_LISTED]]
    more = len(self.unreadable) - _MAX_LISTED
    return '\n'.join(lines + ([f'  ... and {more} more.'] if more > 0 else []))

  def _too_many(self) -> str:
    return (f'{len(self.unreadable)} of the {self.size} {self.split} videos are unreadable, more '
            f'than config.data.max_bad_fraction={self.max_bad_fraction:g} tolerates '
            f'({self.allowed}):\n{self._listing()}\nRe-create or re-download these files, or '
            'remove them (from the folder, split file or annotations); or raise '
            'config.data.max_bad_fraction to train without them.')

  def end_epochs(self, epochs_done: int) -> None:
    """Reports every epoch up to `epochs_done` (completed epochs) not reported yet."""
    while self._epochs_done < epochs_done:
      epoch = self._epochs_done
      skipped = self._epoch_skipped.pop(epoch, 0)
      self._epochs_done += 1
      report = {'data/epoch': float(epoch + 1), 'data/skipped_examples': float(skipped),
                'data/unreadable_videos': float(len(self.unreadable))}
      if skipped:
        logging.warning('Epoch %d: %d examples replaced; unreadable videos so far: %s.',
                        epoch + 1, skipped, ', '.join(self.unreadable))
      else:
        logging.info('Epoch %d: every example was read.', epoch + 1)
      self._reports.append(report)

  def pop_epoch_reports(self) -> List[Dict[str, float]]:
    """The epoch reports since the last call: data/epoch, data/skipped_examples, ..."""
    reports, self._reports = self._reports, []
    return reports


# ------------------------------------------------------------------------------
# Workers, prefetching and batches.
# ------------------------------------------------------------------------------

# Process workers keep their source here (set once by the pool initializer) so
# each task pickles only a few integers.
_WORKER_STATE: Dict[str, Any] = {}


def _init_process_worker(source: Source, augment: _Augment) -> None:
  # Each process parallelises over examples already: keep cv2 single-threaded.
  cv2.setNumThreads(1)
  _WORKER_STATE.update(source=source, augment=augment)


def _process_train_task(*args) -> _Outcome:
  return _train_example(_WORKER_STATE['source'], _WORKER_STATE['augment'], *args)


def _process_eval_task(*args) -> _Outcome:
  return _eval_examples(_WORKER_STATE['source'], _WORKER_STATE['augment'], *args)


class _Runner:
  """Runs example-building tasks inline, on threads, or on spawned processes."""

  def __init__(self, data_config: ml_collections.ConfigDict, source: Source, augment: _Augment):
    # Values checked by gla_jax.validation.validate_data, which every mode runs first.
    self.workers = int(data_config.workers)
    self.kind = data_config.worker_type
    self.source, self.augment = source, augment
    self.pool = None
    if self.workers and self.kind == 'thread':
      self.pool = concurrent.futures.ThreadPoolExecutor(self.workers, 'input_pipeline')
    elif self.workers:
      # Spawn, not fork: the parent may run JAX threads, which fork would copy
      # in an undefined state.
      self.pool = concurrent.futures.ProcessPoolExecutor(
          self.workers, mp_context=multiprocessing.get_context('spawn'),
          initializer=_init_process_worker, initargs=(source, augment))

  def submit(self, task: Callable, process_task: Callable, *args) -> concurrent.futures.Future:
    if self.pool is None:
      future = concurrent.futures.Future()
      future.set_result(task(self.source, self.augment, *args))
      return future
    if self.kind == 'thread':
      return self.pool.submit(task, self.source, self.augment, *args)
    return self.pool.submit(process_task, *args)

  def close(self) -> None:
    if self.pool is not None:
      self.pool.shutdown(wait=False, cancel_futures=True)


def _empty_batch(rows: int, augment: _Augment, has_boxes: bool) -> Batch:
  size, frames = augment.crop_size, augment.num_frames
  batch = dict(video=np.zeros((rows, frames, size, size, 3), np.float32),
               label=np.zeros(rows, np.int32),
               video_index=np.full(rows, -1, np.int32),
               mask=np.zeros(rows, bool))
  if has_boxes:
    batch.update(boxes=np.full((rows, frames, 4), -1, np.float32),
                 present=np.zeros((rows, frames), bool))
  return batch


def _fill_row(batch: Batch, row: int, example: Example, video_index: int) -> None:
  batch['video'][row] = example['video']
  batch['label'][row] = example['label']
  batch['video_index'][row] = video_index
  batch['mask'][row] = True
  if 'boxes' in batch:
    batch['boxes'][row] = example['boxes']
    batch['present'][row] = example['present']


def _prefetched(plans: Iterator[Any], submit: Callable, assemble: Callable,
                prefetch: int) -> Iterator[Batch]:
  """Submits the tasks of `prefetch` + 1 batches ahead and yields them in order."""
  pending = collections.deque()
  for plan in plans:
    pending.append((plan, submit(plan)))
    if len(pending) > prefetch:
      yield assemble(*pending.popleft())
  while pending:
    yield assemble(*pending.popleft())


def _local_rows(batch_size: int, process_index: int, process_count: int) -> range:
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index}, process_count={process_count}: need '
                     '0 <= process_index < process_count.')
  if batch_size < 1 or batch_size % process_count:
    raise ValueError(f'Global batch size {batch_size} must be a positive multiple of the '
                     f'{process_count} processes; each process reads batch_size / '
                     'process_count rows.')
  rows = batch_size // process_count
  return range(process_index * rows, (process_index + 1) * rows)


def epoch_permutation(seed: int, epoch: int, size: int) -> np.ndarray:
  """The order of the `size` videos in training epoch `epoch`."""
  return np.random.default_rng([seed, _EPOCH_STREAM, epoch]).permutation(size)


def train_batches(data_config: ml_collections.ConfigDict, batch_size: int, seed: int,
                  start_step: int = 0, process_index: int = 0, process_count: int = 1,
                  health: Optional[DataHealth] = None) -> Iterator[Batch]:
  """Endless training batches; batch k of the iterator is step start_step + k.

  Args:
    data_config: the `config.data` section.
    batch_size: GLOBAL batch size (all processes together).
    seed: data seed (video order and augmentation).
    start_step: first step to produce: resuming at the checkpoint's step
      continues the exact sequence of an uninterrupted run.
    process_index, process_count: this process reads rows
      [p * B / P, (p + 1) * B / P) of every global batch.
    health: receives the unreadable videos and the epoch reports (module
      docstring); None keeps them internal (warnings and the limit still apply).

  Yields:
    Batches (module docstring) of batch_size / process_count rows; mask all
    True. `video_index` is the video each row was read from (a replacement's
    index where a video was unreadable).

  Raises:
    BadDataError: (from `next`) more unreadable videos than
      `data.max_bad_fraction` tolerates.
  """
  if start_step < 0:
    raise ValueError(f'start_step={start_step}: must be >= 0.')
  rows = _local_rows(batch_size, process_index, process_count)
  source = create_source(data_config, 'train')
  augment = _Augment(data_config)
  runner = _Runner(data_config, source, augment)
  size = len(source)
  health = health if health is not None else DataHealth(
      'train', data_config.max_bad_fraction)
  health.attach(size, epochs_done=start_step * batch_size // size)
  policy = health.policy(int(data_config.retries))
  permutations: Dict[int, np.ndarray] = {}

  def video_of(position: int) -> int:
    epoch, offset = divmod(position, size)
    if epoch not in permutations:
      permutations.clear()  # Steps only move forward: keep the current epoch(s).
      permutations[epoch] = epoch_permutation(seed, epoch, size)
    return int(permutations[epoch][offset])

  def plans() -> Iterator[Tuple[int, List[int]]]:
    step = start_step
    while True:
      yield step, [video_of(step * batch_size + row) for row in rows]
      step += 1

  def submit(plan):
    step, videos = plan
    return [runner.submit(_train_example, _process_train_task, video, seed, step, row, policy)
            for video, row in zip(videos, rows)]

  def assemble(plan, futures):
    step, _ = plan
    batch = _empty_batch(len(rows), augment, source.has_boxes)
    for local, (future, row) in enumerate(zip(futures, rows)):
      outcome = future.result()
      health.record(outcome.failures, skipped=1, epoch=(step * batch_size + row) // size)
      if outcome.value is None:
        raise health.no_readable_video()
      _fill_row(batch, local, outcome.value, outcome.video_index)
    health.end_epochs((step + 1) * batch_size // size)
    return batch

  try:
    yield from _prefetched(plans(), submit, assemble, int(data_config.prefetch))
  finally:
    runner.close()


def eval_clips(source: Source, data_config: ml_collections.ConfigDict,
               health: Optional[DataHealth] = None) -> np.ndarray:
  """Every evaluation clip of `source` in order: int64 [K, 2] (video index, first frame).

  A video whose frame count cannot be read has no clip; it goes to `health`
  (a new one, for its warnings and limit, when None).
  """
  clip_frames, stride = int(data_config.num_frames), int(data_config.frame_stride)
  if health is None:
    health = DataHealth('eval', data_config.max_bad_fraction)
    health.attach(len(source))
  retries = int(data_config.retries)

  def frame_count(index: int) -> Tuple[int, Tuple[Tuple[int, str, str], ...]]:
    try:
      return _read(source, index, lambda: source.num_frames(index), retries), ()
    except Exception as error:  # pylint: disable=broad-except
      return 0, ((index, source.describe(index), _problem(error)),)

  # Frame counts may need a header read (folder) or a record read (tfds) per
  # video: ask for them in parallel, they are I/O-bound.
  with concurrent.futures.ThreadPoolExecutor(max(1, int(data_config.workers))) as pool:
    counts = list(pool.map(frame_count, range(len(source))))
  for _, failures in counts:
    health.record(failures, skipped=1)
  clips = [(index, start) for index, (count, failures) in enumerate(counts) if not failures
           for start in eval_clip_starts(count, clip_frames, stride)]
  return np.array(clips, np.int64).reshape(-1, 2)


def num_eval_batches(data_config: ml_collections.ConfigDict, split: str, batch_size: int) -> int:
  """How many batches `eval_batches` yields (the same on every process)."""
  return math.ceil(len(eval_clips(create_source(data_config, split), data_config)) / batch_size)


def eval_batches(data_config: ml_collections.ConfigDict, split: str, batch_size: int,
                 process_index: int = 0, process_count: int = 1) -> Iterator[Batch]:
  """One pass over every evaluation clip of every video of `split`.

  Global batch b holds clips [b * B, (b + 1) * B) of `eval_clips` order
  (videos in order, clips in time order); the last one is padded with
  mask=False rows (zero video, label 0, video_index -1) so every batch has the
  same shape. Every process yields the same number of batches. The clips of an
  unreadable video are padding rows too (module docstring), so the metrics
  cover the readable videos.

  Args:
    data_config: the `config.data` section.
    split: 'train' or 'eval'.
    batch_size: GLOBAL batch size.
    process_index, process_count: as in `train_batches`.

  Yields:
    Batches (module docstring) of batch_size / process_count rows.
  """
  rows = _local_rows(batch_size, process_index, process_count)
  source = create_source(data_config, split)
  augment = _Augment(data_config)
  runner = _Runner(data_config, source, augment)
  health = DataHealth(split, data_config.max_bad_fraction)
  health.attach(len(source))
  policy = health.policy(int(data_config.retries))
  try:
    clips = eval_clips(source, data_config, health)
    num_batches = math.ceil(len(clips) / batch_size)

    def plans() -> Iterator[List[Tuple[int, List[int], List[int]]]]:
      for b in range(num_batches):
        # This process's clips of batch b, grouped into runs of one video so
        # each video is decoded once per batch.
        groups = []
        for local, position in enumerate(range(b * batch_size + rows.start,
                                               b * batch_size + rows.stop)):
          if position >= len(clips):
            break
          video, start = (int(v) for v in clips[position])
          if groups and groups[-1][0] == video:
            groups[-1][1].append(local)
            groups[-1][2].append(start)
          else:
            groups.append((video, [local], [start]))
        yield groups

    def submit(groups):
      return [runner.submit(_eval_examples, _process_eval_task, video, starts, policy)
              for video, _, starts in groups]

    def assemble(groups, futures):
      batch = _empty_batch(len(rows), augment, source.has_boxes)
      for (video, locals_, _), future in zip(groups, futures):
        outcome = future.result()
        # The clips of an unreadable video stay padding rows (mask False).
        health.record(outcome.failures, skipped=len(locals_))
        for local, example in zip(locals_, outcome.value or ()):
          _fill_row(batch, local, example, video)
      return batch

    yield from _prefetched(plans(), submit, assemble, int(data_config.prefetch))
    if health.skipped:
      logging.warning('Evaluation of %r left out %d clips of %d unreadable videos: %s.', split,
                      health.skipped, len(health.unreadable), ', '.join(health.unreadable))
  finally:
    runner.close()


def center_clip(frames: np.ndarray, data_config: ml_collections.ConfigDict
                ) -> Tuple[np.ndarray, np.ndarray]:
  """Evaluation preprocessing of raw frames, for explaining arbitrary videos.

  Args:
    frames: uint8 [T, H, W, 3] RGB.
    data_config: `config.data` (crop size, mean, std).

  Returns:
    (uint8 [T, S, S, 3] the centre square resized to `crop_size`, for drawing;
     float32 [T, S, S, 3] the same normalised, for the model).
  """
  augment = _Augment(data_config)
  x0, y0, side = corner_crop(frames.shape[1], frames.shape[2], 1.0, 0)
  crop = crop_resize(frames, x0, y0, side, augment.crop_size)
  return crop, augment.normalise(crop)
