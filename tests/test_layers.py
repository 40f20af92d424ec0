"""The package's layers: each subpackage imports only those below it, so the diffusion
math tests without a network, the network without noise, and the cascade without the
trainer. Imports inside functions count too."""

import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "videojax")
# subpackage -> what it may import from videojax (besides itself)
ALLOWED = {
    "runtime": set(),
    "io": set(),
    "parallel": set(),
    "diffusion": set(),
    "nn": {"runtime"},
    "data": {"io", "nn", "parallel", "runtime"},
    "eval": {"data", "diffusion", "io", "nn", "runtime"},
    "cascade": {"diffusion", "io", "nn", "runtime"},
    "train": {"cascade", "data", "diffusion", "eval", "io", "nn", "parallel", "runtime"},
}


def _imports() -> dict[str, dict[str, set[str]]]:
  """{subpackage: {imported subpackage: files that import it}}."""
  found: dict[str, dict[str, set[str]]] = {}
  for root, _, files in os.walk(PACKAGE):
    for name in files:
      if not name.endswith(".py"):
        continue
      path = os.path.join(root, name)
      rel = os.path.relpath(path, PACKAGE)
      own = rel.split(os.sep)[0].removesuffix(".py")
      for node in ast.walk(ast.parse(open(path).read())):
        modules = []
        if isinstance(node, ast.Import):
          modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
          modules = [node.module]
          if node.module == "videojax":  # from videojax import diffusion
            modules = [f"videojax.{a.name}" for a in node.names]
        for m in modules:
          parts = m.split(".")
          if parts[0] == "videojax" and len(parts) > 1 and parts[1] != own:
            found.setdefault(own, {}).setdefault(parts[1], set()).add(rel)
  return found


def test_every_subpackage_has_a_layer():
  subpackages = {n.removesuffix(".py") for n in os.listdir(PACKAGE)
                 if not n.startswith(("_", ".")) and (n.endswith(".py") or
                                                      os.path.isdir(os.path.join(PACKAGE, n)))}
  new = subpackages - set(ALLOWED) - {"assets"}  # assets: data files, no code
  assert not new, f"{sorted(new)} need their place in ALLOWED (what may they import?)"


@pytest.mark.parametrize("subpackage", sorted(ALLOWED))
def test_imports_only_the_layers_below(subpackage):
  imports = _imports().get(subpackage, {})
  wrong = {target: sorted(files) for target, files in imports.items()
           if target not in ALLOWED[subpackage]}
  assert not wrong, f"videojax.{subpackage} imports layers above it: {wrong}"


def test_the_allowed_graph_has_no_cycle():
  state: dict[str, str] = {}

  def visit(node, path):
    if state.get(node) == "done":
      return
    assert state.get(node) != "open", f"import cycle: {' -> '.join(path + [node])}"
    state[node] = "open"
    for dep in ALLOWED[node]:
      visit(dep, path + [node])
    state[node] = "done"

  for node in ALLOWED:
    visit(node, [])
