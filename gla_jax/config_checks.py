"""Checks of single config values, with errors that name the key and what it accepts.

A locked `ml_collections.ConfigDict` already refuses unknown keys ("Did you
mean ...?") and values of another type (a string for an int field), but it
accepts None for any field, True for an int field, and any elements in a
tuple field, and it knows nothing of ranges. These helpers close those gaps
before the values reach numpy or JAX, whose errors would not say which key is
wrong: a wrong type raises TypeError, a value out of range ValueError, both
starting with `config.<section>.<key>=<value>`.
"""
import math
import numbers
from typing import Any, Optional, Sequence, Tuple

import ml_collections


def _name(section: str, key: str) -> str:
  """`config.<section>.<key>`; section '' for a top-level key, e.g. 'data.synthetic' when nested."""
  return f'config.{section}.{key}' if section else f'config.{key}'


def _bounds(minimum: Optional[float], maximum: Optional[float], above: Optional[float]) -> str:
  parts = []
  if above is not None:
    parts.append(f'> {above}')
  if minimum is not None:
    parts.append(f'>= {minimum}')
  if maximum is not None:
    parts.append(f'<= {maximum}')
  return ' ' + ' and '.join(parts) if parts else ''


def _hint(hint: str) -> str:
  return f' ({hint})' if hint else ''


def _in_range(value: float, minimum: Optional[float], maximum: Optional[float],
              above: Optional[float]) -> bool:
  return ((minimum is None or value >= minimum) and (maximum is None or value <= maximum)
          and (above is None or value > above))


def is_integer(value: Any) -> bool:
  """An int (numpy's too), not a bool."""
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
  """A finite real number, not a bool."""
  return (isinstance(value, numbers.Real) and not isinstance(value, bool)
          and math.isfinite(value))


def integer(config: ml_collections.ConfigDict, section: str, key: str,
            minimum: Optional[int] = None, maximum: Optional[int] = None, hint: str = '') -> int:
  """`config[key]` as an int in [minimum, maximum]; `hint` is added to the error in brackets."""
  value, bounds = config[key], _bounds(minimum, maximum, None) + _hint(hint)
  if not is_integer(value):
    raise TypeError(f'{_name(section, key)}={value!r}: must be an integer{bounds}.')
  if not _in_range(value, minimum, maximum, None):
    raise ValueError(f'{_name(section, key)}={value}: must be{bounds}.')
  return int(value)


def number(config: ml_collections.ConfigDict, section: str, key: str,
           minimum: Optional[float] = None, maximum: Optional[float] = None,
           above: Optional[float] = None, hint: str = '') -> float:
  """`config[key]` as a finite float in range (`above` is an exclusive lower bound)."""
  value, bounds = config[key], _bounds(minimum, maximum, above) + _hint(hint)
  if not is_number(value):
    raise TypeError(f'{_name(section, key)}={value!r}: must be a finite number{bounds}.')
  if not _in_range(value, minimum, maximum, above):
    raise ValueError(f'{_name(section, key)}={value}: must be{bounds}.')
  return float(value)


def numbers_tuple(config: ml_collections.ConfigDict, section: str, key: str,
                  length: Optional[int] = None, minimum: Optional[float] = None,
                  maximum: Optional[float] = None, above: Optional[float] = None,
                  integers: bool = False, non_empty: bool = False) -> Tuple[float, ...]:
  """`config[key]` as a tuple of finite numbers (ints with `integers`), each in range."""
  value = config[key]
  kind = 'integers' if integers else 'finite numbers'
  what = (f'a tuple of {length} {kind}' if length is not None
          else f'a {"non-empty " if non_empty else ""}tuple of {kind}')
  bounds = _bounds(minimum, maximum, above)
  check = is_integer if integers else is_number
  if not isinstance(value, (tuple, list)) or not all(check(v) for v in value):
    each = f' each{bounds}' if bounds else ''
    raise TypeError(f'{_name(section, key)}={value!r}: must be {what}{each}.')
  if (length is not None and len(value) != length) or (non_empty and not value):
    raise ValueError(f'{_name(section, key)}={tuple(value)}: must be {what}.')
  if not all(_in_range(v, minimum, maximum, above) for v in value):
    raise ValueError(f'{_name(section, key)}={tuple(value)}: each value must be{bounds}.')
  return tuple(int(v) if integers else float(v) for v in value)


def boolean(config: ml_collections.ConfigDict, section: str, key: str) -> bool:
  """`config[key]`, which must be True or False."""
  value = config[key]
  if not isinstance(value, bool):
    raise TypeError(f'{_name(section, key)}={value!r}: must be True or False.')
  return value


def string(config: ml_collections.ConfigDict, section: str, key: str) -> str:
  """`config[key]`, which must be a string (possibly empty)."""
  value = config[key]
  if not isinstance(value, str):
    raise TypeError(f"{_name(section, key)}={value!r}: must be a string ('' for none).")
  return value


def choice(config: ml_collections.ConfigDict, section: str, key: str,
           choices: Sequence[Any]) -> Any:
  """`config[key]`, which must be one of `choices`."""
  value = config[key]
  if value not in tuple(choices):
    raise ValueError(f'Unknown {_name(section, key)} {value!r}; choose one of {tuple(choices)}.')
  return value
