"""Config validation: every impossible value is refused with an error naming the key and fix.

Hand-picked wrong values, random wrong types and ranges, and every shipped
config (locked, valid).
"""
import random
import string

import ml_collections
import pytest

from configs import tiny
from gla_jax import validation


@pytest.mark.parametrize('section, key, value, message', [
    ('train', 'batch_size', 6, 'not divisible by the 4 devices'),
    ('eval', 'batch_size', 10, 'config.eval.batch_size=10'),
    ('model', 'preset', 'resnext18', 'Unknown model preset'),
    ('model', 'dtype', 'float16', 'dtype'),
    ('train', 'freeze_until', 'layer2', 'init_checkpoint'),
    ('train', 'schedule', 'linear', 'schedule'),
    ('train', 'best_metric', 'loss', 'best_metric'),
    ('train', 'warmup_steps', 100, 'warmup_steps'),
    ('train', 'optimizer', 'adam', 'optimizer'),
    ('model', 'stem_kernel', (3, 4, 3), 'odd'),
    ('model', 'temporal_strides', (1, 0, 2, 2), 'temporal_strides'),
    ('model', 'temporal_strides', (1, 2), 'temporal_strides'),
])
def test_config_errors_name_the_key(section, key, value, message):
  config = tiny.get_config()
  config[section][key] = value
  with pytest.raises(ValueError, match=message):
    validation.validate(config, num_devices=4)


@pytest.mark.parametrize('name, variant', [('demo', None), ('tiny', None), ('ucf101', 'tfds'),
                                           ('ucf101', 'folder'), ('kinetics', None)])
def test_every_config_is_locked_and_valid(name, variant, tmp_path):
  module = __import__(f'configs.{name}', fromlist=['get_config'])
  config = module.get_config(variant)
  with pytest.raises(AttributeError):
    config.train.learning_rat = 0.1                      # locked: a misspelt key fails
  if config.data.source == 'folder':
    config.data.root = str(tmp_path)
  validation.validate(config, num_devices=8)
  assert module.__doc__ and 'main.py --config=configs/' in module.__doc__   # its command


@pytest.mark.parametrize('key, value, error, message', [
    ('train.batch_size', 6, ValueError, r'not divisible by the 4 devices; use a multiple of 4'),
    ('data.num_frames', 0, ValueError, r'config.data.num_frames=0: must be >= 1'),
    ('data.crop_size', -4, ValueError, r'config.data.crop_size=-4: must be >= 1'),
    ('data.train_scales', (0.0,), ValueError, r'config.data.train_scales.*> 0'),
    ('data.std', (1.0, 0.0, 1.0), ValueError, r'config.data.std.*> 0'),
    ('data.source', 'folder', ValueError, r'config.data.root'),
    ('data.max_bad_fraction', 1.5, ValueError, r'max_bad_fraction=1.5: must be >= 0 and <= 1'),
    ('train.freeze_until', 'layer2', ValueError, r'set config.train.init_checkpoint'),
    ('train.warmup_steps', 100, ValueError, r'warmup_steps=100: must be in \[0, num_steps'),
    ('train.max_nonfinite_steps', 0, ValueError, r'max_nonfinite_steps=0: must be >= 1'),
    ('train.dampening', 1.5, ValueError, r'config.train.dampening=1.5: must be >= 0 and <= 1'),
    ('model.num_classes', None, TypeError, r'config.model.num_classes=None: must be an integer'),
    ('eval.split', 'test', ValueError, r"eval.split 'test'; choose one of \('train', 'eval'\)"),
])
def test_impossible_settings_name_the_key_and_fix(key, value, error, message):
  config = tiny.get_config()
  config.update_from_flattened_dict({key: value})
  with pytest.raises(error, match=message):
    validation.validate(config, num_devices=4)


def _flat_keys(config, sections=('model', 'data', 'train', 'eval')):
  keys = []
  for section in sections:
    for key, value in config[section].items():
      if isinstance(value, ml_collections.ConfigDict):
        keys += [f'{section}.{key}.{inner}' for inner in value.keys()]
      else:
        keys.append(f'{section}.{key}')
  return keys


# Keys whose any string is acceptable to validation (paths, names, opened later).
_FREE_TEXT = {'data.root', 'data.eval_root', 'data.annotations', 'data.train_split_file',
              'data.eval_split_file', 'data.tfds_name', 'data.tfds_train_split',
              'data.tfds_eval_split', 'data.tfds_data_dir', 'train.init_checkpoint'}


def _bad_value(key, default, rng):
  """A value `key` cannot take: a wrong type, None, or out of range."""
  if isinstance(default, bool):
    return rng.choice([None, 'yes', 1])
  if isinstance(default, (int, float)):
    return rng.choice([None, 'many', [1], -7, True] if isinstance(default, int)
                      else [None, 'fast', -3.5, float('nan'), (1.0,)])
  if isinstance(default, str):
    return rng.choice([None, 3, ['a']] if key in _FREE_TEXT else [None, 3, 'no_such_choice'])
  if isinstance(default, tuple):
    return rng.choice([None, 'abc', ('x', 'y', 'z'), (float('inf'),) * 3])
  raise AssertionError(f'{key}: no bad value for {default!r}')


def test_random_bad_config_values_name_the_key():
  """30 random overrides of wrong type or range: an error naming the key, never a JAX one."""
  rng = random.Random(6)
  config = tiny.get_config()
  keys = _flat_keys(config)
  seen = set()
  for trial in range(30):
    key = rng.choice(keys)
    default = config[key.split('.')[0]]
    for part in key.split('.')[1:]:
      default = default[part]
    fresh = tiny.get_config()
    if trial % 6 == 5:   # A misspelt key.
      position = rng.randrange(len(key.split('.')[-1]))
      name = key.split('.')[-1]
      misspelt = '.'.join(key.split('.')[:-1] + [name[:position] + rng.choice(
          string.ascii_lowercase.replace(name[position], '')) + name[position + 1:]])
      with pytest.raises((AttributeError, KeyError), match='Did you mean'):
        fresh.update_from_flattened_dict({misspelt: 1})
      continue
    value = _bad_value(key, default, rng)
    seen.add(key)
    try:
      fresh.update_from_flattened_dict({key: value})   # ml_collections' own type check.
      validation.validate(fresh, num_devices=4)
    except (TypeError, ValueError) as error:
      assert key.split('.')[-1] in str(error), (key, value, error)
      assert 'jax' not in type(error).__module__, (key, value, error)
    else:
      pytest.fail(f'config.{key}={value!r} was accepted')
  assert len(seen) >= 15


@pytest.mark.parametrize('key, value, message', [
    ('explain.method', 'gradcam++', r"config.explain.method 'gradcam\+\+'; choose one of"),
    ('explain.layers', 'layer9', r"config.explain.layers='layer9': Unknown layers"),
    ('explain.aggregate', 'median', r'config.explain.aggregate'),
    ('explain.upsampling', 'nearest',
     r"config.explain.upsampling 'nearest'; choose one of \('half_pixel', 'receptive_field'\)"),
    ('explain.batch_size', 0, r'config.explain.batch_size=0: must be >= 1'),
    ('localize.threshold', 1.5, r'config.localize.threshold=1.5: must be .* <= 1'),
    ('localize.relative_to', 'video', r'config.localize.relative_to'),
    ('localize.clip_stride', 9, r'config.localize.clip_stride=9: .*<= 8'),
    ('localize.held_out_fraction', 1.0, r'held_out_fraction=1.0: use a fraction in \(0, 1\)'),
    ('localize.video_score', 'median', r'config.localize.video_score'),
    ('localize.video_codec', 'x264v', r'config.localize.video_codec=.x264v.: must be a FourCC'),
    ('localize.thresholds', (0.5, 0.0), r'config.localize.thresholds'),
])
def test_explain_and_localize_sections_are_checked(key, value, message):
  config = tiny.get_config()
  config.update_from_flattened_dict({key: value})
  with pytest.raises(ValueError, match=message):
    validation.validate(config)


def test_every_explain_and_localize_key_refuses_bad_values():
  """Each key of the two sections once checked only when used, with three bad values each."""
  rng = random.Random(0)
  config = tiny.get_config()
  for key in _flat_keys(config, ('explain', 'localize')):
    section, name = key.split('.')
    for _ in range(3):
      fresh = tiny.get_config()
      value = _bad_value(key, config[section][name], rng)
      try:
        fresh.update_from_flattened_dict({key: value})
      except (TypeError, ValueError):
        continue   # ml_collections refuses the type itself.
      with pytest.raises((TypeError, ValueError), match=name):
        validation.validate(fresh)


@pytest.mark.parametrize('mode', ['train', 'evaluate', 'convert', 'explain', 'loc_eval',
                                  'main_job'])
def test_every_mode_refuses_a_bad_config_before_any_work(mode, tmp_path):
  """A bad `explain.method` used to fail the main job only after training."""
  from gla_jax import jobs   # pylint: disable=g-import-not-at-top  (imports every package)
  config = tiny.get_config()
  config.explain.method = 'gradcam++'
  extra = {'convert': (str(tmp_path / 'missing.pth'),),
           'explain': (str(tmp_path / 'missing.avi'),)}.get(mode, ())
  with pytest.raises(ValueError, match=r'config.explain.method'):
    getattr(jobs, mode)(config, str(tmp_path / 'work'), *extra)
  assert not (tmp_path / 'work').exists()
