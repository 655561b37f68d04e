"""The layers of bench/, launch/ and models/ (the design card, and bench/__init__.py): a module imports
only from its own layer and those below it, counting imports inside functions and under
`if TYPE_CHECKING:`; an import inside a function defers a framework or a heavy optional library,
never a project module; the project's module-level imports form no cycle."""
from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
from helpers import REPO

from launch.base import BACKENDS

PACKAGES = ("bench", "launch", "models")

# Bottom to top. A module belongs to the layer of the longest entry that is its name or a package
# above it; "bench" itself (the package's __init__, which holds REPO) matches only exactly.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("errors, procs", ("bench", "bench.errors", "bench.procs")),
    ("models", ("models",)),
    ("launch (specs)", ("launch",)),
    ("data sets", ("bench.data.sets",)),  # declarations and numpy readers: config takes its choices from them
    ("config", ("bench.config",)),
    ("results", ("bench.results",)),
    ("measure, data", ("bench.measure", "bench.data")),
    ("backends", ("bench.backends",)),
    ("runner", ("bench.runner",)),
    ("sweep, report, predict", ("bench.sweep", "bench.report", "bench.predict")),
    # command lines and experiments: launch/local_cluster.py and `python -m models` are tools that
    # parse a configuration, so they sit above the layers they use, not in their folder's layer
    ("command lines", ("bench.cli", "bench.run", "bench.lab", "bench.collectives", "launch.local_cluster",
                       "launch.hosts.__main__", "launch.slurm.__main__", "models.__main__")),
)
EXACT = {"bench"}

# The only libraries a function may import, each for a reason; everything else (the project's own
# modules, the standard library, numpy) is imported at module top.
DEFERRED = {
    "tensorflow": "a framework: seconds to import, and chosen per run",
    "keras": "a framework: KERAS_BACKEND must be set before keras is first imported",
    "jax": "a framework: seconds to import, and chosen per run",
    "jaxlib": "a framework (JAX's runtime)",
    "horovod": "a framework: only the horovod strategy loads it, and it loads TensorFlow",
    "matplotlib": "only the report's plots draw; ~0.5 s to import and a font cache on first use",
    "mlperf_logging": "only --mllog writes MLPerf's log: a run without it needs no such package",
    "pandas": "only reading a CSV needs it; a run that appends its row skips ~0.7 s",
    "scipy": "only confidence intervals and tests of significance need scipy.stats (~1.5 s)",
    "sklearn": "only --data digits reads scikit-learn's data set (~2 s to import)",
    "tqdm": "only a progress bar the user asked for needs it",
    "h5py": "only checking an --init-weights file opens HDF5 itself",
    "pynvml": "only a GPU run's energy reads NVML (nvidia-ml-py), which CPU machines lack",
}
# every backend's framework too: a new backend (launch.base.BACKENDS) needs no line here
DEFERRED.update({b: "a backend's framework: chosen per run" for b in BACKENDS if b not in DEFERRED})


@dataclasses.dataclass(frozen=True)
class Import:
    path: Path          # the importing file
    line: int
    module: str         # the importing module's dotted name
    target: str         # the imported module (the most specific project module it names)
    in_function: bool
    type_checking: bool  # under `if TYPE_CHECKING:` (annotations only: no edge at run time)

    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


def _resolve(name: str) -> str:
    """The most specific project module a dotted name reaches (itself, or a package above it)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _scan() -> list[Import]:
    out = []
    for module, path in MODULES.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]

        def visit(node, in_function: bool, type_checking: bool):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.Import):
                    names = [a.name for a in child.names]
                elif isinstance(child, ast.ImportFrom):
                    base = child.module or ""
                    if child.level:
                        up = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                        base = ".".join(up + ([base] if base else []))
                    # `from pkg import mod` imports pkg.mod; `from mod import name` imports mod
                    names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in child.names]
                else:
                    names = []
                for name in dict.fromkeys(names):
                    out.append(Import(path, child.lineno, module, _resolve(name) if name.split(".")[0] in PACKAGES
                                      else name, in_function, type_checking))
                visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)),
                      type_checking or (isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test)))
        visit(ast.parse(path.read_text(), str(path)), False, False)
    return out


IMPORTS = _scan()


def layer_of(module: str) -> int | None:
    """The index in LAYERS of a project module's layer (None: no layer claims it)."""
    best, length = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or (p not in EXACT and module.startswith(p + "."))) and len(p) > length:
                best, length = i, len(p)
    return best


def _project(imp: Import) -> bool:
    return imp.target.split(".")[0] in PACKAGES


def test_the_scan_sees_imports_at_every_depth():
    """The scan itself: module level, inside functions, inside methods and under TYPE_CHECKING."""
    kinds = {(i.in_function, i.type_checking) for i in IMPORTS}
    assert {(False, False), (True, False), (False, True)} <= kinds
    assert len(MODULES) > 60 and all(i.module in MODULES for i in IMPORTS)


def test_every_module_has_a_layer():
    """A new module or subpackage is placed in LAYERS (the design card's table) before it lands."""
    missing = [m for m in MODULES if layer_of(m) is None]
    assert not missing, f"modules in no layer (add them to LAYERS in tests/test_layers.py): {missing}"


def test_layers_only_point_down():
    """No module imports a module of a higher layer: at module level, inside a function, or for
    an annotation under TYPE_CHECKING."""
    bad = []
    for imp in IMPORTS:
        if not _project(imp):
            continue
        here, there = layer_of(imp.module), layer_of(imp.target)
        if here is not None and there is not None and there > here:
            how = ("inside a function" if imp.in_function else "under TYPE_CHECKING" if imp.type_checking
                   else "at module level")
            bad.append(f"{imp.where()}: {imp.module} (layer {LAYERS[here][0]!r}) imports {imp.target} "
                       f"(layer {LAYERS[there][0]!r}) {how}")
    if bad:
        pytest.fail("lower layers import upper ones:\n  " + "\n  ".join(bad), pytrace=False)


def test_imports_inside_functions_only_defer_a_framework_or_heavy_library():
    """A project import inside a function hides a dependency (or a cycle) from the reader and from
    the layer order; a standard-library or numpy import there saves nothing."""
    bad = [f"{imp.where()}: imports {imp.target} inside a function"
           + (" (a project module: import it at module top)" if _project(imp) else "")
           for imp in IMPORTS if imp.in_function and imp.target.split(".")[0] not in DEFERRED]
    if bad:
        pytest.fail(f"imports inside functions that defer nothing heavy (only {', '.join(DEFERRED)} may be "
                    "deferred; see DEFERRED):\n  " + "\n  ".join(bad), pytrace=False)


def test_no_import_cycles_between_modules():
    """Module-level imports among the project's own modules (those that run on import: not the ones
    under TYPE_CHECKING) form no cycle."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    lines: dict[tuple[str, str], str] = {}
    for imp in IMPORTS:
        if _project(imp) and not imp.in_function and not imp.type_checking and imp.target != imp.module:
            graph[imp.module].add(imp.target)
            lines.setdefault((imp.module, imp.target), imp.where())
    state: dict[str, int] = {}

    def visit(m, trail):
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycle = [*trail[trail.index(d):], m, d] if d in trail else [m, d]
                steps = [f"{a} -> {b} ({lines[a, b]})" for a, b in zip(cycle, cycle[1:])]
                pytest.fail("import cycle:\n  " + "\n  ".join(steps), pytrace=False)
            if d not in state:
                visit(d, [*trail, m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])


def test_each_backend_is_a_subpackage_only_the_loader_names():
    """Adding a backend is one subpackage: nothing outside bench/backends/<name>/ imports it (the
    loader, bench/backends/__init__.py, reaches it by name at run time), and the backend-neutral
    modules beside it serve every backend."""
    backends = {p.parent.name for p in (REPO / "bench" / "backends").glob("*/__init__.py")}
    assert {"tensorflow", "jax"} <= backends
    bad = [f"{imp.where()}: {imp.module} imports {imp.target}" for imp in IMPORTS
           for name in backends
           if (imp.target == f"bench.backends.{name}" or imp.target.startswith(f"bench.backends.{name}."))
           and not imp.module.startswith(f"bench.backends.{name}.") and imp.module != f"bench.backends.{name}"]
    if bad:
        pytest.fail("a backend's subpackage imported from outside it:\n  " + "\n  ".join(bad), pytrace=False)
