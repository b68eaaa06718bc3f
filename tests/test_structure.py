"""The package's shape: small modules and no import loops, read from the sources (nothing is
imported, so an import inside a function counts as much as one at the top)."""

import ast
import gc
import graphlib
import pathlib
import sys
import traceback

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "i2i_jax"
MAX_LINES = 400


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def parse(source: str) -> ast.Module:
    """`ast.parse` with the garbage collector held off. On Python 3.11 a finalizer that runs in
    the middle of a parse and formats a traceback (pytest's unraisable-exception hook does, for
    the objects earlier tests leave behind) parses too, and CPython raises "AST constructor
    recursion depth mismatch" (CI on 10e34fa)."""
    gc.collect()
    gc.disable()
    try:
        return ast.parse(source)
    finally:
        gc.enable()


def imported_modules(tree: ast.Module, modules: set[str]) -> set[str]:
    """The package's modules that a module's source imports (`from a import b` names `a.b`
    when that is a module, else `a`)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {
                f"{node.module}.{alias.name}"
                if f"{node.module}.{alias.name}" in modules
                else node.module
                for alias in node.names
            }
    return found & modules


def test_no_module_is_over_400_lines():
    sizes = {module_name(p): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {name: size for name, size in sizes.items() if size > MAX_LINES} == {}


def test_no_import_loop():
    trees = {module_name(p): parse(p.read_text()) for p in PACKAGE.rglob("*.py")}
    graph = {name: imported_modules(tree, set(trees)) - {name} for name, tree in trees.items()}
    order = list(graphlib.TopologicalSorter(graph).static_order())  # CycleError names a loop.
    assert len(order) == len(trees) > 40


def test_a_loop_would_be_found():
    """The check itself: two modules importing each other are a cycle."""
    a, b = parse("from i2i_jax import b"), parse("import i2i_jax.a")
    graph = {
        "i2i_jax.a": imported_modules(a, {"i2i_jax.a", "i2i_jax.b"}),
        "i2i_jax.b": imported_modules(b, {"i2i_jax.a", "i2i_jax.b"}),
    }
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        assert set(error.args[1]) == {"i2i_jax.a", "i2i_jax.b"}
    else:
        raise AssertionError("the loop was not found")


def test_the_parse_survives_finalizers_that_format_tracebacks(monkeypatch):
    """The hazard `parse` guards against, reproduced: cycles whose finalizers raise, collected
    while a module's AST is being built, with a hook that formats their tracebacks."""

    class RaisesWhenCollected:
        def __del__(self):
            raise RuntimeError("raised by a finalizer")

    def format_it(unraisable):
        traceback.format_exception(
            unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback
        )

    monkeypatch.setattr(sys, "unraisablehook", format_it)
    source = (PACKAGE / "train.py").read_text()
    for _ in range(20):
        for _ in range(200):
            cycle = RaisesWhenCollected()
            cycle.itself = cycle
        del cycle
        assert isinstance(parse(source), ast.Module)
