"""What a run shows and leaves behind: progress bar, metrics.jsonl, curves.png, TensorBoard.

The tqdm bar shows steps/s, clips/s, ETA and the latest loss; `metrics.jsonl`
has one JSON object per logged step ({"step", "time", "train/loss", ...}; a
resumed run first drops the lines after its checkpoint's step); `curves.png`
draws loss, accuracy and learning rate at the end (with matplotlib); TensorBoard
events (scalars, and pictures through `write_images`) are written with
tensorboardX (a dependency; TensorFlow's writer where only it is installed),
and a warning says so when a requested writer cannot work. Only
process 0 writes (`enabled=False` elsewhere). The workdir may be a URI
(`gla_jax.data.storage`): metrics.jsonl is then rewritten whole at each line
(an object store cannot append), and TensorBoard events go to gs:// and s3://
only (tensorboardX's writers; with TensorFlow, tf.io.gfile's).
"""
import importlib.util
import json
import math
import os
import sys
import time
from typing import Any, Dict, List, Sequence, Tuple

from absl import logging
import numpy as np
import tqdm

from gla_jax.data import storage
from gla_jax.outputs import pictures

METRICS_FILE = 'metrics.jsonl'
CURVES_FILE = 'curves.png'
TENSORBOARD_DIR = 'tensorboard'

# (panel title, [(metrics key, legend)]) of curves.png.
CURVE_PANELS = (
    ('loss', (('train/loss', 'train'), ('eval/loss', 'eval'))),
    ('accuracy', (('train/accuracy', 'train (batch)'), ('eval/clip_accuracy', 'eval clip'),
                  ('eval/video_accuracy', 'eval video'))),
    ('learning rate', (('train/learning_rate', 'lr'),)),
)
CURVE_SIZE = (1350, 420)    # curves.png: width, height in pixels
# Where TensorBoard events can go: local folders ('') and the URIs tensorboardX writes to.
_TENSORBOARD_SCHEMES = ('', 'gs', 's3')


def progress(total: int, desc: str, clips_per_item: int = 0, initial: int = 0,
             enabled: bool = True, unit: str = 'batch') -> tqdm.tqdm:
  """A tqdm bar on stderr; `clips_per_item` adds clips/s to it.

  tqdm's own rate is items per second and its ETA uses `total`; the clip rate
  is that rate times `clips_per_item`, set as the postfix on every refresh.
  """
  return _ClipBar(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled,
                  file=sys.stderr, dynamic_ncols=True, clips_per_item=clips_per_item,
                  # Fewer refreshes when stderr is a log file, not a terminal.
                  mininterval=0.5 if sys.stderr.isatty() else 30.0)


class _ClipBar(tqdm.tqdm):
  """tqdm with a clips/s field."""

  def __init__(self, *args, clips_per_item: int = 0, **kwargs):
    self._clips_per_item = clips_per_item
    self._extra: Dict[str, str] = {}
    super().__init__(*args, **kwargs)

  def set_extra(self, **fields: str) -> None:
    self._extra.update(fields)

  @property
  def format_dict(self):
    info = super().format_dict
    fields = dict(self._extra)
    rate = info.get('rate')
    if rate is None and info.get('elapsed') and info.get('n', 0) > info.get('initial', 0):
      rate = (info['n'] - info['initial']) / info['elapsed']
    if self._clips_per_item and rate:
      fields['clips/s'] = f'{rate * self._clips_per_item:.1f}'
    if fields:
      info['postfix'] = ', '.join(f'{k}={v}' for k, v in fields.items())
    return info


class _TensorBoard:
  """Scalars and images to TensorBoard event files through whichever writer is installed.

  tensorboardX (a dependency) writes; where only TensorFlow and tensorboard are
  installed, flax's writer. A writer that cannot work (none installed, a URI
  scheme it cannot reach, a missing cloud library) logs a warning and leaves
  the writer inactive: the run goes on without events.
  """

  def __init__(self, logdir: str):
    self._writer, self._kind = None, None
    if storage.scheme(logdir) not in _TENSORBOARD_SCHEMES:
      logging.warning('No TensorBoard events in %s: the writers reach local folders, gs:// and '
                      's3:// only; set config.train.tensorboard=False to silence this.', logdir)
      return
    if importlib.util.find_spec('tensorboardX') is not None:
      import tensorboardX  # pylint: disable=g-import-not-at-top
      try:
        self._writer, self._kind = tensorboardX.SummaryWriter(logdir), 'tensorboardX'
      except ImportError as error:   # gs:// needs google-cloud-storage, s3:// boto3.
        logging.warning('No TensorBoard events in %s: %s', logdir, error)
    elif (importlib.util.find_spec('tensorflow') is not None
          and importlib.util.find_spec('tensorboard') is not None):
      # Checked before importing: TensorFlow takes seconds to import, and its
      # tf.summary.scalar needs the tensorboard package.
      from flax.metrics import tensorboard  # pylint: disable=g-import-not-at-top
      self._writer, self._kind = tensorboard.SummaryWriter(logdir), 'flax'
    else:
      logging.warning('No TensorBoard events in %s: tensorboardX is not installed. Install it '
                      '(pip install -r requirements.txt, or pip install tensorboardX), or set '
                      'config.train.tensorboard=False.', logdir)

  @property
  def active(self) -> bool:
    return self._writer is not None

  def scalars(self, step: int, values: Dict[str, float]) -> None:
    for tag, value in values.items():
      if self._kind == 'tensorboardX':
        self._writer.add_scalar(tag, value, step)
      elif self._kind == 'flax':
        self._writer.scalar(tag, value, step)
    if self._writer is not None:
      self._writer.flush()

  def images(self, step: int, images: Dict[str, np.ndarray]) -> None:
    """uint8 RGB images [H, W, 3] by tag."""
    for tag, image in images.items():
      image = np.asarray(image)
      if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f'TensorBoard image {tag!r}: need uint8 [H, W, 3] RGB, got '
                         f'{image.dtype} {image.shape}.')
      if self._kind == 'tensorboardX':
        self._writer.add_image(tag, image, step, dataformats='HWC')
      elif self._kind == 'flax':
        self._writer.image(tag, image, step)
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()


def write_images(workdir: str, images: Dict[str, np.ndarray], step: int = 0) -> bool:
  """Adds uint8 RGB `images` {tag: [H, W, 3]} to `<workdir>/tensorboard` at `step`.

  For the pictures of a run (the localization panels, an overlay frame), next
  to the training curves. Returns whether a writer wrote them (else a warning
  said why).
  """
  writer = _TensorBoard(storage.join(workdir, TENSORBOARD_DIR))
  try:
    writer.images(step, images)
  finally:
    writer.close()
  return writer.active


class Reporter:
  """Training-side reporting: the progress bar, metrics.jsonl, TensorBoard, curves.png.

  Args:
    workdir: where the files go.
    total_steps: the run's last step (the bar's total).
    start_step: the step the run (re)starts from; lines of metrics.jsonl after
      it are dropped.
    clips_per_step: the global batch size, for clips/s.
    tensorboard: write TensorBoard events if a writer is importable.
    enabled: False on processes other than 0: nothing is shown or written.
  """

  def __init__(self, workdir: str, total_steps: int, start_step: int = 0,
               clips_per_step: int = 0, tensorboard: bool = True, enabled: bool = True):
    self.workdir, self.enabled = workdir, enabled
    self.metrics_path = storage.join(workdir, METRICS_FILE)
    self._tensorboard = None
    self._bar = progress(total_steps, 'train', clips_per_step, initial=start_step,
                         enabled=enabled, unit='step')
    if not enabled:
      return
    storage.make_dirs(workdir)
    _truncate_after(self.metrics_path, start_step)
    if tensorboard:
      self._tensorboard = _TensorBoard(storage.join(workdir, TENSORBOARD_DIR))

  def tick(self, step: int) -> None:
    """Advances the bar to `step` (called after every step)."""
    self._bar.update(step - self._bar.n)

  def write(self, step: int, metrics: Dict[str, float]) -> None:
    """Appends `metrics` of `step` to metrics.jsonl and TensorBoard; shows them."""
    if not self.enabled:
      return
    values = {key: float(value) for key, value in metrics.items()}
    storage.append_text(self.metrics_path,
                        json.dumps({'step': int(step), 'time': time.time(), **values}) + '\n')
    if self._tensorboard is not None:
      self._tensorboard.scalars(step, values)
    shown = {key.split('/')[-1]: f'{value:.4g}' for key, value in values.items()
             if key in ('train/loss', 'train/accuracy', 'eval/clip_accuracy',
                        'eval/video_accuracy')}
    self._bar.set_extra(**shown)
    self._bar.refresh()
    # Through tqdm, so the line lands above the bar rather than in the middle of it.
    self._bar.write(f'step {step}: ' + ', '.join(f'{k} {v:.5g}' for k, v in values.items()),
                    file=sys.stderr)

  def close(self) -> None:
    """Closes the bar and TensorBoard, then draws curves.png from metrics.jsonl."""
    self._bar.close()
    if not self.enabled:
      return
    if self._tensorboard is not None:
      self._tensorboard.close()
    records = read_metrics(self.workdir)
    if records:
      try:
        write_curves(records, storage.join(self.workdir, CURVES_FILE))
      except (OSError, RuntimeError, ValueError) as e:   # A picture is not worth a failed run.
        logging.warning('Could not draw %s: %s', CURVES_FILE, e)


def read_metrics(workdir: str) -> List[Dict[str, Any]]:
  """The records of `<workdir>/metrics.jsonl` (empty if none)."""
  path = storage.join(workdir, METRICS_FILE)
  if not storage.is_file(path):
    return []
  records = []
  for line in storage.read_text(path).splitlines():
    line = line.strip()
    if line:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        # A run killed mid-write leaves a partial last line.
        logging.warning('Skipping an unreadable line of %s.', path)
  return records


def _truncate_after(path: str, step: int) -> None:
  """Drops the lines of metrics.jsonl logged after `step` (a resumed run redoes them)."""
  records = read_metrics(os.fspath(storage.path(path).parent))
  if not any(record.get('step', 0) > step for record in records):
    return
  storage.write_text(path, ''.join(json.dumps(r) + '\n' for r in records
                                   if r.get('step', 0) <= step))


# ------------------------------------------------------------------------------
# curves.png
# ------------------------------------------------------------------------------


def _series(records: Sequence[Dict[str, Any]], key: str) -> Tuple[np.ndarray, np.ndarray]:
  points = [(r['step'], r[key]) for r in records if key in r and math.isfinite(r[key])]
  if not points:
    return np.zeros(0), np.zeros(0)
  steps, values = np.array(points, np.float64).T
  return steps, values


def _draw_panel(axes, title: str, curves: Sequence[Tuple[str, np.ndarray, np.ndarray]],
                step_range: Tuple[float, float]) -> None:
  """One panel: its curves, a grid, 'step' on x and the legend below the axes."""
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  axes.set_title(title)
  axes.set_xlabel('step')
  axes.grid(True, color='0.9')
  axes.xaxis.set_major_locator(ticker.MaxNLocator(nbins=5, integer=True))
  axes.yaxis.set_major_locator(ticker.MaxNLocator(nbins=6))
  axes.ticklabel_format(axis='both', style='sci', scilimits=(-3, 4), useOffset=False)
  low, high = step_range
  axes.set_xlim(low, high if high > low else low + 1)
  if not curves:
    axes.text(0.5, 0.5, 'no data', transform=axes.transAxes, ha='center', va='center',
              color='0.6')
    return
  for label, steps, values in curves:
    # Markers where the points are few (an evaluation every N steps, a short run).
    axes.plot(steps, values, label=label, linewidth=1.5, marker='o' if len(steps) <= 30 else None,
              markersize=3)
  axes.legend(loc='upper center', bbox_to_anchor=(0.5, -0.2), ncol=len(curves), frameon=False,
              fontsize='small')


def write_curves(records: Sequence[Dict[str, Any]], path: str) -> str:
  """Draws loss, accuracy and learning rate of `records` (metrics.jsonl lines) into a PNG.

  With matplotlib's Agg canvas (no display, no pyplot state): three panels of
  `CURVE_SIZE` pixels in all, each legend below its axes, not over the curves.
  """
  steps = [r['step'] for r in records if 'step' in r]
  step_range = (float(min(steps, default=0)), float(max(steps, default=1)))
  fig, _ = pictures.plot_figure(CURVE_SIZE)
  for axes, (title, keys) in zip(fig.subplots(1, len(CURVE_PANELS)), CURVE_PANELS):
    curves = []
    for key, label in keys:
      xs, ys = _series(records, key)
      if xs.size:
        curves.append((label, xs, ys))
    _draw_panel(axes, title, curves, step_range)
  with storage.local_file_for_writing(path) as local:   # matplotlib writes local files.
    fig.savefig(local, format='png', dpi=pictures.PLOT_DPI, facecolor='white')
  return path
