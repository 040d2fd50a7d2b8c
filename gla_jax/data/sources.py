"""Sources: random access to the videos of a split, their labels and any ground truth.

Three sources (`config.data.source`):
  'synthetic'  the embedded generator (`gla_jax.data.synthetic`), rendered on demand;
  'folder'     video files `<root>/<class>/<file>` (UCF101/HMDB51 layout, or a
               folder written by `synthetic.export_video_folder`), decoded with
               `gla_jax.data.video_io`; optional UCF101 split files and annotations;
               the folder may be a URI (`gla_jax.data.storage`: gs://...), whose
               videos are then copied to a local temporary file for each read;
  'tfds'       a dataset prepared by TensorFlow Datasets (`ucf101/ucf101_1` by
               default), its ArrayRecord files read without TensorFlow
               (`gla_jax.data.tfds_prepared`).
"""
import abc
from typing import Any, Dict, List, Optional, Tuple

from absl import logging
import cv2
import ml_collections
import numpy as np

from gla_jax.data import annotations as annotations_lib
from gla_jax.data import storage
from gla_jax.data import synthetic
from gla_jax.data import synthetic_scenes
from gla_jax.data import synthetic_settings
from gla_jax.data import tfds_prepared
from gla_jax.data import video_io

Example = Dict[str, Any]

SPLITS = ('train', 'eval')
SOURCES = ('synthetic', 'folder', 'tfds')
VIDEO_EXTENSIONS = ('.avi', '.mp4', '.mkv', '.mov', '.webm', '.m4v', '.mpg', '.mpeg')


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

  def label(self, index: int) -> int:
    """Class of video `index` (for a class-stratified evaluation subset); here from one frame."""
    return int(self.load(index, np.zeros(1, np.int64))['label'])


class SyntheticSource(Source):
  """Clips of `gla_jax.data.synthetic`, rendered on access ('eval' reads 'val')."""

  has_boxes = True

  def __init__(self, data_config: ml_collections.ConfigDict, split: str):
    settings = data_config.synthetic
    self.config = synthetic_settings.SyntheticConfig.from_difficulty(
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

  def label(self, index: int) -> int:
    return int(synthetic_scenes.sample_params(self.config, index, self.dataset.split).label)

  def load(self, index: int, frame_indices: np.ndarray) -> Example:
    item = self.dataset[index]
    return dict(video=item['video'][frame_indices], label=int(item['label']),
                boxes=item['boxes'][frame_indices], present=item['present'][frame_indices])


def _resolve(path: str, folder: str) -> str:
  return path if storage.is_absolute(path) else storage.join(folder, path)


def _read_split_file(path: str) -> List[Tuple[str, Optional[int]]]:
  """(relative path, 1-based label or None) per non-empty line."""
  if not storage.is_file(path):
    raise FileNotFoundError(f'Split file {path!r} does not exist; set '
                            'train_split_file/eval_split_file to an existing list or '
                            "'' to use every video of the folder.")
  entries = []
  for line_number, line in enumerate(storage.read_text(path).splitlines(), 1):
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
  for line in storage.read_text(path).splitlines():
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
    if not storage.is_dir(folder):
      raise FileNotFoundError(f'Video folder {folder!r} (data.root/eval_root) does not exist.')
    self.folder = folder
    split_file = data_config.train_split_file if split == 'train' else data_config.eval_split_file

    annotations = None
    if data_config.annotations:
      annotations_path = _resolve(data_config.annotations, folder)
      if not storage.is_file(annotations_path):
        raise FileNotFoundError(f'Annotation file {annotations_path!r} (data.annotations) '
                                "does not exist; fix the path or set '' for none.")
    else:
      annotations_path = storage.join(folder, 'annotations.json')
    if storage.is_file(annotations_path):
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
                 for file in sorted(storage.list_names(storage.join(folder, name)))
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
        raise ValueError(
            f'{relative!r}: label {label} outside the {len(self.class_names)} classes.')
      self.paths.append(relative)
      self.labels.append(label)
    self._frame_counts: Dict[int, int] = {}

  def _class_names(self, annotations, split_path) -> List[str]:
    if annotations is not None:
      return list(annotations['classes'])
    candidates = [storage.join(self.folder, 'classInd.txt')]
    if split_path:
      candidates.append(storage.join(storage.path(split_path).parent, 'classInd.txt'))
    for candidate in candidates:
      if storage.is_file(candidate):
        return _read_class_index(candidate)
    names = sorted(entry.name for entry in storage.path(self.folder).iterdir()
                   if entry.is_dir())
    if not names:
      raise ValueError(f'{self.folder!r} has no class sub-folders; expected '
                       '<root>/<class>/<video files>.')
    return names

  def __len__(self) -> int:
    return len(self.paths)

  def path(self, index: int) -> str:
    return storage.join(self.folder, *self.paths[index].split('/'))

  def describe(self, index: int) -> str:
    return self.path(index)

  def label(self, index: int) -> int:
    return self.labels[index]

  def num_frames(self, index: int) -> int:
    annotation = self._annotations.get(self.paths[index])
    if annotation is not None:
      return int(annotation['num_frames'])
    if index not in self._frame_counts:
      with storage.local_copy(self.path(index)) as local:   # OpenCV reads local files only.
        count = video_io.video_info(local).num_frames
        if count <= 0:  # Header without a count: decode once to know.
          count = len(video_io.read_video(local))
      self._frame_counts[index] = count
    return self._frame_counts[index]

  def load(self, index: int, frame_indices: np.ndarray) -> Example:
    first, last = int(frame_indices.min()), int(frame_indices.max())
    with storage.local_copy(self.path(index)) as local:   # PyAV/OpenCV read local files only.
      frames = video_io.read_video(local, max_frames=last - first + 1, start=first)
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


_WARNED_SQUARE = set()   # The TFDS datasets already warned about (resolved names).


class TfdsSource(Source):
  """A video dataset prepared by TFDS (`ucf101/ucf101_1`), read without TensorFlow.

  `tfds_prepared` reads the prepared ArrayRecord files (random access) in
  `data_dir`; nothing is downloaded. Frames stay encoded and only the ones a
  clip uses are decoded (cv2.imdecode), so a training clip costs 16 JPEG
  decodes instead of the whole video's. A config whose frames have a fixed
  square size (`ucf101` alone is `ucf101_1_256`: every 320x240 video resized to
  256x256 when prepared) is read, with a warning: Hara's recipe and the
  published weights take undistorted frames.
  """

  def __init__(self, data_config: ml_collections.ConfigDict, split: str):
    name = data_config.tfds_name
    split_key = 'tfds_train_split' if split == 'train' else 'tfds_eval_split'
    split_name = data_config[split_key]
    data_dir = data_config.tfds_data_dir or tfds_prepared.default_data_dir()
    try:
      builder_dir, resolved = tfds_prepared.find(name, data_dir)
    except FileNotFoundError as e:
      raise FileNotFoundError(
          f'config.data.tfds_name={name!r}: {e} Prepare it there first (nothing is downloaded '
          f'here) in the ArrayRecord format that random access needs: `tfds build {name} '
          f'--data_dir={data_dir} --file_format=array_record` (building needs TensorFlow, '
          'ffmpeg and importlib_resources, which TFDS 4.9.10 uses but does not install), or set '
          'config.data.tfds_data_dir to where it is.') from e
    try:
      self._split = tfds_prepared.PreparedSplit(builder_dir, split_name)
    except tfds_prepared.UnknownSplitError as e:
      raise ValueError(f'config.data.{split_key}={split_name!r} ({resolved}): {e}') from e
    except ValueError as e:
      raise ValueError(f'config.data.tfds_name={name!r} ({resolved}): {e}') from e
    self._name = f'{resolved}/{split_name}'
    self.class_names = list(self._split.class_names)
    self._frame_counts: Dict[int, int] = {}
    _, height, width, _ = self._split.video_shape
    if height is not None and height == width and resolved not in _WARNED_SQUARE:
      _WARNED_SQUARE.add(resolved)   # Once per dataset: every split and mode opens it.
      keeping = tfds_prepared.frame_keeping_configs(resolved)
      logging.warning(
          'config.data.tfds_name=%r is %s, whose frames were all resized to %dx%d squares when '
          'it was prepared, squashing videos that are not square (UCF101\'s are 320x240); '
          'Hara\'s recipe crops undistorted frames, and the published weights were trained on '
          'them: set config.data.tfds_name to a config that keeps the frames%s.', name,
          resolved, height, width,
          ' (' + ' or '.join(repr(c) for c in keeping) + ')' if keeping else '')

  def __len__(self) -> int:
    return len(self._split)

  def num_frames(self, index: int) -> int:
    if index not in self._frame_counts:
      self._frame_counts[index] = len(self._split.example(index)[0])
    return self._frame_counts[index]

  def label(self, index: int) -> int:
    return self._split.example(index)[1]

  def describe(self, index: int) -> str:
    return f'TFDS {self._name} example {index}'

  def load(self, index: int, frame_indices: np.ndarray) -> Example:
    encoded, label = self._split.example(index)
    self._frame_counts[index] = len(encoded)
    unique, inverse = np.unique(frame_indices, return_inverse=True)
    decoded = np.stack([self._decode(encoded[t], index, t) for t in unique])
    return dict(video=decoded[inverse.reshape(-1)], label=label)

  def _decode(self, data: bytes, index: int, t: int) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
      raise video_io.VideoReadError(f'Frame {t} of {self.describe(index)} does not decode as '
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


def class_names_or_indices(data_config: ml_collections.ConfigDict, num_classes: int) -> List[str]:
  """The evaluation source's class names, or `class_<k>` where it cannot be opened or disagrees."""
  try:
    names = list(create_source(data_config, 'eval').class_names)
  except (OSError, ValueError, ImportError) as error:
    logging.warning('Class names unavailable (%s); using indices.', error)
    names = []
  if len(names) != num_classes:
    names = [f'class_{k}' for k in range(num_classes)]
  return names
