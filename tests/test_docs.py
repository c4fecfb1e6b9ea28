"""Documentation hygiene: every ``Example::`` runs as a doctest, docstrings give one Sphinx field per line and say
what a function raises, and the API reference (docs/, built by ``make docs`` in CI with warnings as errors) lists
every module."""
import ast
import doctest
import importlib
import re
from pathlib import Path

import pytest

from tests.test_manners import ROOT, SOURCES

FIELD = re.compile(r":(param|returns?|raises|ivar|rtype|type)\b[^:\n]*:")
LIBRARY = {name: path for name, path in SOURCES.items()}


def _docstrings(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield getattr(node, "name", "module"), getattr(node, "lineno", 1), doc


def _direct_raises(fn):
    for child in ast.iter_child_nodes(fn):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue  # a nested function documents its own errors
        if isinstance(child, ast.Raise) and child.exc is not None:
            exc = child.exc.func if isinstance(child.exc, ast.Call) else child.exc
            yield ast.unparse(exc).split(".")[-1]
        yield from _direct_raises(child)


def _public_functions(tree):
    """(function, the docstring that documents it): module functions, public methods, and ``__init__`` (documented
    by its class's docstring)."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            yield node, ast.get_docstring(node) or ""
        if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for member in node.body:
                if isinstance(member, ast.FunctionDef) and member.name == "__init__":
                    yield member, ast.get_docstring(node) or ""
                elif isinstance(member, ast.FunctionDef) and not member.name.startswith("_"):
                    yield member, ast.get_docstring(member) or ""


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_doctests_run(name):
    """Every ``>>>`` example of the module runs and prints what it says (float64, validation on: conftest)."""
    module = importlib.import_module(name)
    tests = [t for t in doctest.DocTestFinder(exclude_empty=True).find(module, name) if t.examples]
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        if test.name.split(".")[-1] in ("__getattr__",):
            continue
        runner.run(test)
    assert runner.failures == 0, f"{runner.failures} doctest failure(s) in {name} (see the output above)"


def test_every_example_block_is_a_doctest():
    missing = [f"{path}:{line} {what}" for path in LIBRARY.values() for what, line, doc in _docstrings(path)
               if re.search(r"Examples?::", doc) and ">>>" not in doc.split("Example", 1)[1]]
    assert missing == []


def test_one_sphinx_field_per_line():
    crowded = []
    for path in LIBRARY.values():
        for what, line, doc in _docstrings(path):
            for text in doc.splitlines():
                fields = list(FIELD.finditer(text))
                if fields and (len(fields) > 1 or text[: fields[0].start()].strip(" \"'r")):
                    crowded.append(f"{path.relative_to(ROOT)}:{line} {what}: {text.strip()[:80]}")
    assert crowded == []


def test_raised_errors_are_documented():
    """A public function that raises an exception itself names it with ``:raises X:`` (``__init__`` in its class's
    docstring; the command line's argument parsers are private)."""
    undocumented = []
    for name, path in LIBRARY.items():
        if name == "ppl_vae.cli":
            continue
        for fn, doc in _public_functions(ast.parse(path.read_text())):
            for exc in sorted(set(_direct_raises(fn)) - {"NotImplementedError"}):
                if not re.search(rf":raises {exc}\b", doc):
                    undocumented.append(f"{path.relative_to(ROOT)}:{fn.lineno} {fn.name} raises {exc}")
    assert undocumented == []


def test_the_api_reference_lists_every_module():
    pages = "".join(p.read_text() for p in (ROOT / "docs" / "api").glob("*.rst"))
    listed = set(re.findall(r"\.\. automodule:: (\S+)", pages))
    assert sorted(set(SOURCES) - {"ppl_vae"} - listed) == []
    assert "-W" in (ROOT / "Makefile").read_text() and "make docs" in (ROOT / ".ci" / "run").read_text()
