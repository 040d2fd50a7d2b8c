"""Work on gs:// paths against a fake GCS server on the loopback (tests/test_cloud_paths.py).

`python -m tests.fake_gcs_worker REPORT.json LOCAL_DIR` serves gcp-storage-emulator's
handler (in memory, bucket `bucket`) on 127.0.0.1, points gcsfs (etils.epath's
backend without TensorFlow) and TensorStore at it, hides TensorFlow as
requirements.txt's environment lacks it, and with a `gs://bucket/runs/tiny`
workdir: writes and resumes the reports, writes evaluation results, lists
checkpoint folders, resolves weights, opens a folder dataset uploaded to the
bucket next to its local copy, and writes, explains and localizes the demo
video. What it finds goes to REPORT.json. Orbax's array files are not written
to the bucket: TensorStore's reads and writes against this emulator fail at
random ('Malformed StorageGeneration'), so the converted weights stay local.
"""
import importlib.machinery
import importlib.util
import sys


class _PathFinderWithoutTensorFlow(importlib.machinery.PathFinder):
  """Finds every module but TensorFlow's (so etils.epath takes fsspec, as without it)."""

  @classmethod
  def find_spec(cls, name, path=None, target=None):
    if name == 'tensorflow' or name.startswith('tensorflow.'):
      return None
    return super().find_spec(name, path, target)


sys.meta_path[:] = [_PathFinderWithoutTensorFlow if finder is importlib.machinery.PathFinder
                    else finder for finder in sys.meta_path]

# pylint: disable=g-import-not-at-top,wrong-import-position
import functools
import http.server
import io
import json
import logging
import os
import tempfile
import threading

BUCKET = 'bucket'


def _start_fake_gcs() -> object:
  """The emulator on a free loopback port, with every client's environment pointed at it."""
  from gcp_storage_emulator import server as emulator
  from gcp_storage_emulator.handlers import buckets
  from gcp_storage_emulator.storage import Storage
  logging.getLogger('gcp_storage_emulator').setLevel(logging.CRITICAL)   # Every 404 is logged.
  store = Storage(use_memory_fs=True)
  buckets.create_bucket(BUCKET, store)
  # The emulator's request handler in a threaded server: its own serves one connection at a
  # time, and TensorStore's parallel requests then time out ("Malformed StorageGeneration").
  httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0),
                                          functools.partial(emulator.RequestHandler, store))
  httpd.daemon_threads = True
  threading.Thread(target=httpd.serve_forever, daemon=True).start()
  url = f'http://127.0.0.1:{httpd.server_port}'
  config_dir = tempfile.mkdtemp(prefix='fsspec_config_')
  with open(os.path.join(config_dir, 'gcs.json'), 'w') as f:
    # The emulator lacks the moveTo API: gcsfs falls back to copy + delete at once
    # instead of after its 6 retries with back-off.
    json.dump({'gcs': {'token': 'anon', 'retries': 2}}, f)
  os.environ.update(
      STORAGE_EMULATOR_HOST=url,            # gcsfs and google-cloud-storage
      TENSORSTORE_GCS_HTTP_URL=url,         # TensorStore's gcs driver (Orbax)
      GOOGLE_AUTH_TOKEN_FOR_TESTING='fake',  # TensorStore: no credential lookup
      GOOGLE_CLOUD_PROJECT='fake',
      FSSPEC_CONFIG_DIR=config_dir,
      # gcsfs's zonal/HNS bucket probe goes to a gRPC endpoint the emulator lacks.
      GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT='false')
  return httpd


def main(report_path: str, local_dir: str) -> None:
  httpd = _start_fake_gcs()
  try:
    _run(report_path, local_dir)
  finally:
    httpd.shutdown()


def _run(report_path: str, local_dir: str) -> None:
  """Does the work of the module docstring; writes the report."""
  import jax
  jax.config.update('jax_num_cpu_devices', 4)
  jax.config.update('jax_disable_most_optimizations', True)
  import numpy as np

  from configs import tiny
  from gla_jax import demo
  from gla_jax import models
  from gla_jax import weights
  from gla_jax.data import sources
  from gla_jax.data import storage
  from gla_jax.data import synthetic
  from gla_jax.models import building
  from gla_jax.outputs import reports
  from gla_jax.training import checkpoints
  from gla_jax.training import evaluate

  report = {'tensorflow_found': importlib.util.find_spec('tensorflow') is not None}
  gs = f'gs://{BUCKET}/runs/tiny'
  config = tiny.get_config()

  # Reports: metrics.jsonl appended, then cut back by a resumed run; curves.png; eval JSON.
  reporter = reports.Reporter(gs, total_steps=3, tensorboard=False)
  for step in (1, 2, 3):
    reporter.write(step, {'train/loss': 1.0 / step})
  reporter.close()
  reports.Reporter(gs, total_steps=3, start_step=2, tensorboard=False).close()
  report['metrics_steps'] = [record['step'] for record in reports.read_metrics(gs)]
  report['curves_png'] = storage.path(storage.join(gs, 'curves.png')).read_bytes()[:8].hex()
  written = evaluate.write_results(gs, 'eval', {'clip_accuracy': 0.5, 'confusion': np.eye(2)},
                                   ['a', 'b'], step=2)
  report['eval'] = dict(path=written, record=json.loads(storage.read_text(written)))

  # Checkpoint listing: a complete step counts, an unfinished save's folder does not.
  report['checkpoints_before'] = checkpoints.has_training_checkpoints(gs)
  unfinished = storage.join(gs, checkpoints.CHECKPOINTS_DIR, '4.orbax-checkpoint-tmp-1', 'state')
  storage.write_text(storage.join(unfinished, 'x'), '')
  report['checkpoints_unfinished'] = checkpoints.has_training_checkpoints(gs)
  storage.write_text(storage.join(gs, checkpoints.CHECKPOINTS_DIR, '3', 'state', 'x'), '')
  report['checkpoints_complete'] = checkpoints.has_training_checkpoints(gs)
  with checkpoints.TrainCheckpointManager(storage.join(gs, checkpoints.CHECKPOINTS_DIR),
                                          read_only=True) as manager:
    report['manager_directory'] = manager.directory
  storage.remove_tree(storage.join(gs, checkpoints.CHECKPOINTS_DIR))
  report['checkpoints_removed'] = checkpoints.has_training_checkpoints(gs)

  # Weights: converted ones on the local disk (Orbax arrays), the workdir on gs://.
  model = building.create_model(config)
  converted = os.path.join(local_dir, 'converted')
  weights.save_variables(converted, jax.device_get(models.init_variables(
      model, jax.random.key(0), building.clip_shape(config))), {'preset': 'tiny'})
  config.train.init_checkpoint = converted
  found = weights.for_config(config, gs, model)
  report['weights'] = dict(kind=found.kind, path=found.path)

  # A folder dataset: written locally, uploaded, opened from both places.
  generator = sources.SyntheticSource(config.data, 'eval').config
  folder = os.path.join(local_dir, 'videos')
  synthetic.export_video_folder(folder, generator, split='val', size=3)
  for root, _, files in os.walk(folder):
    for name in files:
      relative = os.path.relpath(os.path.join(root, name), folder)
      with open(os.path.join(root, name), 'rb') as f:
        storage.path(f'gs://{BUCKET}/videos/{relative}').write_bytes(f.read())
  examples = {}
  for where, root in (('gs', f'gs://{BUCKET}/videos'), ('local', folder)):
    data_config = config.data.copy_and_resolve_references()
    data_config.unlock()
    data_config.update(source='folder', root=root, eval_root=root)
    source = sources.create_source(data_config, 'eval')
    examples[where] = dict(names=source.class_names, paths=source.paths, labels=source.labels,
                           frames=[source.num_frames(i) for i in range(len(source))],
                           clip=source.load(1, np.arange(4))['video'].tolist())
  report['folder'] = examples

  # The demo video written to gs://, read back, explained and localized into gs://.
  config.localize.write_gif = True
  long_video = demo.localize_demo_video(config, gs)
  out_dir = long_video['output']
  report['demo'] = dict(output=out_dir, video=long_video['video'],
                        files=sorted(storage.list_names(out_dir)),
                        layers=sorted(storage.list_names(storage.join(out_dir, 'layers'))),
                        clips_video=json.loads(storage.read_text(
                            storage.join(out_dir, 'clips.json')))['video'],
                        attention_shape=list(np.load(io.BytesIO(storage.path(storage.join(
                            out_dir, 'attention.npy')).read_bytes())).shape),
                        gif=storage.path(storage.join(out_dir, 'overlay.gif')).read_bytes()[:6]
                        .decode('ascii'),
                        num_frames=long_video['num_frames'])
  report['listing'] = sorted(storage.list_names(gs))
  report['local_litter'] = sorted(name for name in os.listdir(os.getcwd())
                                  if name.startswith('gs:'))
  with open(report_path, 'w') as f:
    json.dump(report, f, indent=1)


if __name__ == '__main__':
  main(*sys.argv[1:])
