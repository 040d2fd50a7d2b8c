"""Paths on every file system `etils.epath` reaches: local folders and gs://, s3://, az://, hf://.

Workdirs, dataset roots and output folders go through this module, so a run
writes to a bucket as it writes to a local folder. A local path is made
absolute (as `os.path.abspath` would); a URI is kept as it is (never
`<cwd>/gs:/bucket/...`). epath reaches a URI through TensorFlow's `tf.io.gfile`
when TensorFlow is importable, else through fsspec, which needs `gcsfs` for
gs:// and `s3fs` for s3://; Orbax writes its array files through TensorStore,
which has GCS and S3 drivers of its own.

Object stores have no appends, no atomic renames, and no file name for the
libraries that write to local files only (OpenCV, PyAV, Pillow); the helpers
here do what works on both:
  write_text              local: a temporary sibling renamed over the file, so a
                          reader never sees half of it; a URI: one upload, which an
                          object store shows whole or not at all;
  append_text             local: an append; a URI: the object rewritten, extended;
  local_file_for_writing  a local file name whose file is then copied to the URI;
  local_copy              a local copy of a URI's file, for readers of files only.
"""
import contextlib
import os
import re
import shutil
import tempfile
from typing import Iterator, Union

from etils import epath

PathLike = Union[str, os.PathLike]
# The URI schemes epath routes (etils 1.15: gs, s3, az, hf).
SCHEMES = ('gs', 's3', 'az', 'hf')
_URI = re.compile(r'^([A-Za-z][A-Za-z0-9+.-]*)://')


def scheme(value: PathLike) -> str:
  """The URI scheme of `value` ('gs' for gs://bucket/x), '' for a local path."""
  found = _URI.match(os.fspath(value))
  return found.group(1).lower() if found else ''


def is_uri(value: PathLike) -> bool:
  """Whether `value` is a URI (`scheme://...`) rather than a local path."""
  return bool(scheme(value))


def is_absolute(value: PathLike) -> bool:
  """A URI, or an absolute local path."""
  return is_uri(value) or os.path.isabs(os.fspath(value))


def absolute(value: PathLike) -> str:
  """`value` as an absolute path: a URI as it is, a local path through `os.path.abspath`.

  Raises:
    ValueError: a URI of a scheme epath does not reach (e.g. ftp://), with the
      ones it does.
  """
  text = os.fspath(value)
  found = scheme(text)
  if not found:
    return os.path.abspath(text)
  if found not in SCHEMES:
    raise ValueError(f'{text!r}: no file system is reached by {found}:// here; use a local '
                     f'path or a URI of {", ".join(s + "://" for s in SCHEMES)} (etils.epath).')
  return found + text[len(found):]   # epath knows the schemes in lower case only.


def path(value: PathLike) -> epath.Path:
  """`absolute(value)` as an `epath.Path` (local or URI)."""
  return epath.Path(absolute(value))


def join(base: PathLike, *parts: str) -> str:
  """`base/part/...` as text (a URI keeps its `scheme://`)."""
  return os.fspath(epath.Path(os.fspath(base)).joinpath(*parts))


def exists(value: PathLike) -> bool:
  return path(value).exists()


def is_dir(value: PathLike) -> bool:
  return path(value).is_dir()


def is_file(value: PathLike) -> bool:
  """Whether `value` is an existing file (an object, on a bucket)."""
  return path(value).is_file()


def list_names(value: PathLike) -> list:
  """The names of the entries of a folder (unsorted, as `os.listdir`)."""
  return [entry.name for entry in path(value).iterdir()]


def make_dirs(value: PathLike) -> None:
  """Creates the folder and its parents; nothing where they exist (a no-op on most buckets)."""
  path(value).mkdir(parents=True, exist_ok=True)


def read_text(value: PathLike) -> str:
  return path(value).read_text()


def write_text(value: PathLike, text: str) -> None:
  """Writes `text` to the file whole: readers see the old content or the new, never half.

  The folder is created if missing.
  """
  target = path(value)
  target.parent.mkdir(parents=True, exist_ok=True)
  if is_uri(target):
    target.write_text(text)   # An upload appears only once complete.
    return
  temporary = target.with_name(target.name + '.tmp')
  temporary.write_text(text)
  os.replace(temporary, target)


def append_text(value: PathLike, text: str) -> None:
  """Appends `text` to the file (created if missing); on a URI, rewrites the object extended."""
  target = path(value)
  if not is_uri(target):
    with target.open('a') as f:
      f.write(text)
    return
  write_text(target, (target.read_text() if target.exists() else '') + text)


def remove_tree(value: PathLike) -> None:
  """Deletes a folder and everything in it; nothing when it is missing."""
  target = path(value)
  if target.exists():
    target.rmtree()


@contextlib.contextmanager
def local_file_for_writing(value: PathLike) -> Iterator[str]:
  """A local file name to write `value` through, for writers of local files only.

  A local `value` is its own file name. For a URI the name is a temporary
  file of the same name (so the same extension, which OpenCV reads the format
  from), copied to the URI when the block ends without an error.
  """
  if not is_uri(value):
    yield os.fspath(value)
    return
  target = path(value)
  target.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(prefix='gla_jax_') as folder:
    local = os.path.join(folder, target.name)
    yield local
    with open(local, 'rb') as source, target.open('wb') as destination:
      shutil.copyfileobj(source, destination)


@contextlib.contextmanager
def local_copy(value: PathLike) -> Iterator[str]:
  """A local file name holding `value`'s bytes, for readers of local files only.

  A local `value` is returned as it is; a URI's file is copied to a temporary
  file of the same name, deleted when the block ends.
  """
  text = os.fspath(value)
  if not is_uri(text):
    yield text
    return
  source_path = path(text)
  with tempfile.TemporaryDirectory(prefix='gla_jax_') as folder:
    local = os.path.join(folder, source_path.name)
    with source_path.open('rb') as source, open(local, 'wb') as destination:
      shutil.copyfileobj(source, destination)
    yield local
