"""The package's layout: one way imports, no cycle, modules of one concern and modest size."""
import ast
import collections
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = REPO / 'gla_jax'
MAX_LINES = 450
# What each lower layer may import from the project (besides itself).
ALLOWED = {
    'gla_jax.models': (),
    'gla_jax.data': (),
    'gla_jax.explain': ('gla_jax.models', 'gla_jax.data.sampling'),
}


def _module_name(path: pathlib.Path) -> str:
  name = '.'.join(path.relative_to(REPO).with_suffix('').parts)
  return name[:-len('.__init__')] if name.endswith('.__init__') else name


def _imports():
  """{module: the project modules it imports anywhere in its code}."""
  modules = {_module_name(path): path for path in PACKAGE.rglob('*.py')}
  graph = collections.defaultdict(set)
  for name, path in modules.items():
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('gla_jax'):
        for alias in node.names:
          full = f'{node.module}.{alias.name}'
          graph[name].add(full if full in modules else node.module)
      elif isinstance(node, ast.Import):
        graph[name].update(a.name for a in node.names if a.name.startswith('gla_jax'))
  return modules, {name: graph[name] - {name} for name in modules}


def test_no_import_cycle():
  modules, graph = _imports()
  state = {}

  def visit(name, path):
    state[name] = 'open'
    for other in sorted(graph[name]):
      if other == 'gla_jax' or other not in modules:
        continue
      if state.get(other) == 'open':
        pytest.fail('import cycle: ' + ' -> '.join(path + [other]))
      if other not in state:
        visit(other, path + [other])
    state[name] = 'done'

  for name in sorted(modules):
    if name not in state:
      visit(name, [name])


@pytest.mark.parametrize('layer', sorted(ALLOWED))
def test_lower_layers_import_nothing_above_them(layer):
  _, graph = _imports()
  for name, imported in graph.items():
    if name == layer or name.startswith(layer + '.'):
      upward = [other for other in imported
                if not other.startswith(layer) and other != 'gla_jax.config_checks'
                and not any(other == a or other.startswith(a + '.') for a in ALLOWED[layer])]
      assert not upward, f'{name} imports {upward}'


def test_modules_are_of_modest_size():
  sizes = {_module_name(p): len(p.read_text().splitlines()) for p in PACKAGE.rglob('*.py')}
  assert not {name: n for name, n in sizes.items() if n > MAX_LINES}


def test_no_sys_path_edits_and_no_missing_design_file():
  for path in REPO.glob('**/*.py'):
    if (path == pathlib.Path(__file__).resolve()
        or any(part.startswith('.') or part in ('runs', 'build') for part in path.parts)):
      continue
    text = path.read_text()
    assert 'sys.path' not in text, path
    assert 'DESIGN.md' not in text, path
