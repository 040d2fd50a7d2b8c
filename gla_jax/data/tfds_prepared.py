"""A video dataset prepared by TensorFlow Datasets, read from its files without TensorFlow.

TFDS's own readers (`tfds.data_source`, `tfds.builder`, `builder_from_directory`)
build the dataset's feature objects, and TFDS 4.9's `tfds.features.Video` calls
TensorFlow when it is built, so none of them opens a video dataset where
TensorFlow is not installed (requirements.txt). The prepared files need none of
it: `dataset_info.json` (splits, shard lengths, file format), `features.json`
(feature types and shapes), `<feature>.labels.txt` (class names) and ArrayRecord
shards of serialized `tf.train.Example`s. They are read here with TFDS's parts that
need no TensorFlow (name parsing, split arithmetic, the Example proto) and
`array_record`; a video's frames stay encoded until a clip decodes the ones it uses.
The data_dir may be a URI: the metadata is read through `gla_jax.data.storage`
(etils.epath), the shards by array_record's own reader (which reaches gs://).
"""
import json
from typing import List, Optional, Tuple

from gla_jax.data import storage

DATASET_INFO = 'dataset_info.json'
FEATURES = 'features.json'


def _tfds():
  # Imported only here: TensorFlow Datasets is optional (config.data.source='tfds').
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds


def _builder_class(dataset: str):
  """TFDS's registered builder of `dataset` (its configs; importing it needs no TensorFlow)."""
  try:
    return _tfds().core.registered.imported_builder_cls(dataset)
  except Exception:  # pylint: disable=broad-except
    return None   # Not a TFDS catalogue dataset (one prepared from custom code).


def _versions(config_dir: str) -> List[str]:
  """The versions prepared in `config_dir`, newest first."""
  tfds = _tfds()
  found = [entry for entry in (storage.list_names(config_dir) if storage.is_dir(config_dir)
                               else [])
           if tfds.core.Version.is_valid(entry)
           and storage.is_file(storage.join(config_dir, entry, DATASET_INFO))]
  return sorted(found, key=tfds.core.Version, reverse=True)


class UnknownSplitError(ValueError):
  """The split (or split expression, 'train[:10%]') is not one of the dataset's."""


def default_data_dir() -> str:
  """TFDS's default data_dir: $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
  return _tfds().core.constants.get_default_data_dir()


def find(name: str, data_dir: str) -> Tuple[str, str]:
  """(builder directory, resolved 'dataset/config:version') of `name` in `data_dir`.

  `name` is TFDS's `dataset[/config][:version]`; like `tfds.builder`, a missing
  config is the builder's default (its first BUILDER_CONFIGS entry: for `ucf101`,
  `ucf101_1_256`) and a missing version the newest prepared one.

  Raises:
    FileNotFoundError: nothing prepared under that name in `data_dir`.
  """
  tfds = _tfds()
  dataset_name, kwargs = tfds.core.naming.parse_builder_name_kwargs(name)
  dataset, config, version = dataset_name.name, kwargs.get('config'), kwargs.get('version')
  dataset_dir = storage.join(data_dir, dataset)
  if not config:
    builder_class = _builder_class(dataset)
    if builder_class is not None and builder_class.BUILDER_CONFIGS:
      config = builder_class.default_builder_config.name
    elif storage.is_file(storage.join(dataset_dir, '.config', 'metadata.json')):
      config = json.loads(storage.read_text(
          storage.join(dataset_dir, '.config', 'metadata.json'))).get('default_config_name')
  config_dir = storage.join(dataset_dir, config) if config else dataset_dir
  versions = _versions(config_dir)
  if version:
    versions = [v for v in versions if tfds.core.Version(v).match(str(version))]
  if not versions:
    listed = config_dir if storage.is_dir(config_dir) else dataset_dir  # versions, else configs
    prepared = sorted(entry for entry in storage.list_names(listed)
                      if not entry.startswith('.')) if storage.is_dir(listed) else []
    raise FileNotFoundError(
        f'No prepared {dataset}{"/" + config if config else ""}'
        f'{":" + str(version) if version else ""} in {config_dir!r}'
        f'{f" (in {listed!r}: {prepared})" if prepared else ""}.')
  resolved = f'{dataset}{"/" + config if config else ""}:{versions[0]}'
  return storage.join(config_dir, versions[0]), resolved


class PreparedSplit:
  """One split of a prepared dataset: random access to its serialized examples.

  Attributes:
    video_shape: the `video` feature's [T, H, W, C], None where a size varies.
    class_names: the `label` feature's names.
  """

  def __init__(self, builder_dir: str, split: str):
    tfds = _tfds()
    from array_record.python import array_record_data_source  # pylint: disable=g-import-not-at-top
    info = tfds.core.dataset_info.read_proto_from_builder_dir(builder_dir)
    file_format = info.file_format or 'tfrecord'   # TFDS's default, and the format of old copies.
    if file_format != 'array_record':
      raise ValueError(
          f'{builder_dir!r} is in the {file_format} format, which has no random access: '
          'convert a copy with `tfds convert_format --dataset_version_dir=<that dir> '
          '--out_file_format=array_record --out_dir=<new dir>`.')
    template = tfds.core.ShardedFileTemplate(data_dir=builder_dir, dataset_name=info.name,
                                             filetype_suffix=file_format)
    splits = tfds.core.SplitDict.from_proto(repeated_split_infos=info.splits,
                                            filename_template=template)
    try:
      instructions = splits[split].file_instructions
    except Exception as e:  # TFDS's split parser raises several types; all mean a bad split.
      raise UnknownSplitError(f'{type(e).__name__}: {e}') from e
    self._records = array_record_data_source.ArrayRecordDataSource(instructions)
    self.video_shape, self.encoding, self.class_names = self._read_features(builder_dir)

  @staticmethod
  def _read_features(builder_dir: str) -> Tuple[Tuple[Optional[int], ...], str, List[str]]:
    features = json.loads(storage.read_text(storage.join(builder_dir, FEATURES))).get(
        'featuresDict', {}).get('features', {})
    video, label = features.get('video', {}), features.get('label', {})
    if 'video' not in video or 'classLabel' not in label:
      raise ValueError(f'{builder_dir!r}: expected a `video` feature (tfds.features.Video) and '
                       f'a `label` feature (ClassLabel), found {sorted(features)}.')
    if video['video'].get('dtype', 'uint8') != 'uint8':
      raise ValueError(f'{builder_dir!r}: video frames of dtype {video["video"]["dtype"]}; '
                       'only uint8 frames are read.')
    shape = tuple(None if int(d) < 0 else int(d) for d in video['video']['shape']['dimensions'])
    names_path = storage.join(builder_dir, 'label.labels.txt')
    if storage.is_file(names_path):
      names = [line.strip() for line in storage.read_text(names_path).splitlines()
               if line.strip()]
    else:
      names = [f'class_{k}' for k in range(int(label['classLabel']['numClasses']))]
    return shape, video['video'].get('encodingFormat', 'png'), names

  def __len__(self) -> int:
    return len(self._records)

  def example(self, index: int) -> Tuple[List[bytes], int]:
    """(the encoded frames, the label) of example `index`."""
    from tensorflow_datasets.proto import tf_example_pb2  # pylint: disable=g-import-not-at-top
    features = tf_example_pb2.Example.FromString(self._records[index]).features.feature
    return list(features['video'].bytes_list.value), int(features['label'].int64_list.value[0])


def frame_keeping_configs(resolved: str) -> List[str]:
  """Configs of the same builder (and split number) whose frames keep their size.

  UCF101's configs say it with width = height = None (`ucf101_1`); a builder
  without such attributes names none.
  """
  dataset, config = resolved.split(':')[0].partition('/')[::2]
  builder_class = _builder_class(dataset)
  configs = list(getattr(builder_class, 'BUILDER_CONFIGS', None) or [])
  current = next((c for c in configs if c.name == config), None)
  return [f'{dataset}/{c.name}' for c in configs
          if getattr(c, 'width', 0) is None and getattr(c, 'height', 0) is None
          and getattr(c, 'split_number', None) == getattr(current, 'split_number', None)]
