"""pytorch-grad-cam (`grad-cam` 1.5.7) importable beside the CPU-only torch, for reference tests.

The torchvision wheel that grad-cam pulls in cannot load beside the CPU
torch (its C extension needs CUDA libraries: `operator torchvision::nms does
not exist`), and pytorch_grad_cam imports torchvision at import time:
`utils.image` takes `Compose`, `Normalize`, `ToTensor` from
`torchvision.transforms` (for `preprocess_image`), `sess` takes
`torchvision.transforms.functional.resize` and `utils.model_targets` imports
`torchvision` (for `ops.box_iou` of detection targets). It also imports
`sklearn.decomposition` (`KernelPCA` for KPCA_CAM, `NMF` for
DeepFeatureFactorization), which costs ~2 s of test time. None of these is
called on the path of the CAM classes the tests use, so `load()` imports
pytorch_grad_cam with stand-ins for exactly these modules in `sys.modules`,
and then puts `sys.modules` back: only pytorch_grad_cam's own modules hold the
stand-ins (which raise if called); any other importer gets the real packages.
"""
import contextlib
import importlib
import sys
import types

_STANDINS = {
    'torchvision': (),
    'torchvision.transforms': ('Compose', 'Normalize', 'ToTensor'),
    'torchvision.transforms.functional': ('resize',),
    'sklearn': (),
    'sklearn.decomposition': ('KernelPCA', 'NMF'),
}


def _unused(name: str):
  def call(*args, **kwargs):
    raise NotImplementedError(f'{name} is a stand-in (tests/grad_cam_reference.py), not '
                              'imported for pytorch-grad-cam: only its CAM classes work.')
  call.__name__ = name.rsplit('.', 1)[-1]
  return call


@contextlib.contextmanager
def _standins():
  """While entered, the modules of _STANDINS are stand-ins; afterwards sys.modules is as before."""
  previous = {name: sys.modules.get(name) for name in _STANDINS}
  modules = {name: types.ModuleType(name) for name in _STANDINS}
  for name, module in modules.items():
    module.__doc__ = 'Stand-in from tests/grad_cam_reference.py; nothing in it is callable.'
    for attribute in _STANDINS[name]:
      setattr(module, attribute, _unused(f'{name}.{attribute}'))
    parent, _, child = name.rpartition('.')
    if parent:
      setattr(modules[parent], child, module)
  sys.modules.update(modules)
  try:
    yield
  finally:
    for name, module in previous.items():
      if module is None:
        sys.modules.pop(name, None)
      else:
        sys.modules[name] = module


def load() -> types.ModuleType:
  """The `pytorch_grad_cam` package, imported with the stand-ins."""
  if 'pytorch_grad_cam' not in sys.modules:
    with _standins():
      importlib.import_module('pytorch_grad_cam')
  return sys.modules['pytorch_grad_cam']
