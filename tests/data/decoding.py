"""Test and benchmark instruments for video decoding: a frame counter and a reference decode."""
import contextlib
from typing import Iterator, List

import cv2
import numpy as np

from gla_jax.data import video_io


def sequential_decode(path: str) -> np.ndarray:
  """Every frame by plain sequential OpenCV decoding (the reference), uint8 RGB [N, H, W, 3]."""
  capture, frames = cv2.VideoCapture(path), []
  while True:
    ok, frame = capture.read()
    if not ok:
      break
    frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
  capture.release()
  return np.stack(frames)


@contextlib.contextmanager
def counting_decoded_frames() -> Iterator[List[int]]:
  """Counts the frames OpenCV (`grab`, `read`) and PyAV (`container.decode`) decode.

  Yields a one-element list whose entry is the count so far.
  """
  counter = [0]
  av, real_capture = video_io.av, cv2.VideoCapture

  class CountingCapture:   # A wrapper, not a subclass: cv2.VideoCapture subclasses crash at exit.
    def __init__(self, *args):
      self._inner = real_capture(*args)

    def __getattr__(self, name):
      return getattr(self._inner, name)

    def grab(self):
      ok = self._inner.grab()
      counter[0] += bool(ok)
      return ok

    def read(self, *args):
      ok, frame = self._inner.read(*args)
      counter[0] += bool(ok)
      return ok, frame

  class CountingContainer:
    def __init__(self, inner):
      self._inner = inner

    def __getattr__(self, name):
      return getattr(self._inner, name)

    def decode(self, *args, **kwargs):
      for frame in self._inner.decode(*args, **kwargs):
        counter[0] += 1
        yield frame

  cv2.VideoCapture = CountingCapture
  real_open = av.open if av is not None else None
  if av is not None:
    av.open = lambda *a, **k: CountingContainer(real_open(*a, **k))
  try:
    yield counter
  finally:
    cv2.VideoCapture = real_capture
    if av is not None:
      av.open = real_open
