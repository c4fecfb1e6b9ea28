"""Library manners: imports point one way (no cycles), library code logs instead of printing and installs no
handler, never touches pyplot or the matplotlib backend, and the command line starts without torch or pyro."""
import ast
import importlib
import logging
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import ppl_vae
from ppl_vae import cli

ROOT = Path(__file__).resolve().parents[1]

# the one-way layering: a module may import its own layer and the layers below, never above
LAYERS = {
    "ppl_vae.conventions": 0, "ppl_vae.traces": 0, "ppl_vae.latent_space": 0, "ppl_vae.data": 0, "ppl_vae.estimators": 0,
    "ppl_vae.objectives": 0, "ppl_vae.nn": 0, "ppl_vae.streams": 0, "ppl_vae.compiled": 0, "ppl_vae.distributed": 0,
    "ppl_vae.models": 1, "ppl_vae.guides": 1,
    "ppl_vae.gap": 2, "ppl_vae.posterior": 2, "ppl_vae.training": 2, "ppl_vae.diagnostics": 2, "ppl_vae.figures": 2,
    "ppl_vae.runs": 3,
    "ppl_vae.jobs": 4,
    "ppl_vae.cli": 5,
}


def _sources() -> dict[str, Path]:
    """module name -> file, for the engine and for models/ and guides/ (installed as ppl_vae.models, ppl_vae.guides)."""
    out = {}
    for folder, package in ((ROOT / "ppl_vae", "ppl_vae"), (ROOT / "models", "ppl_vae.models"),
                            (ROOT / "guides", "ppl_vae.guides")):
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


SOURCES = _sources()
LIBRARY = {name: path for name, path in SOURCES.items() if name not in ("ppl_vae", "ppl_vae.cli")}


def _layer(module: str) -> int | None:
    for prefix, rank in sorted(LAYERS.items(), key=lambda kv: -len(kv[0])):
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return None


def _imports(name: str, path: Path) -> set[str]:
    """Every ppl_vae module imported anywhere in the file (top level or inside functions), relative ones resolved."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                parent = parent[: len(parent) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in SOURCES)
    return {m for m in found if m == "ppl_vae" or m.startswith("ppl_vae.")}


def test_every_module_has_a_layer():
    assert [name for name in SOURCES if name != "ppl_vae" and _layer(name) is None] == []


def test_imports_point_one_way():
    wrong = []
    for name, path in SOURCES.items():
        if name == "ppl_vae":
            continue
        for imported in _imports(name, path):
            if imported != "ppl_vae" and _layer(imported) > _layer(name):
                wrong.append(f"{name} (layer {_layer(name)}) imports {imported} (layer {_layer(imported)})")
    assert wrong == []


def test_no_import_cycles_between_packages():
    def package(module):
        return ".".join(module.split(".")[:2])

    graph = {}
    for name, path in SOURCES.items():
        if name != "ppl_vae":
            graph.setdefault(package(name), set()).update(
                package(m) for m in _imports(name, path) if m != "ppl_vae" and package(m) != package(name))
    seen, stack = set(), []

    def visit(node):
        if node in stack:
            raise AssertionError(f"import cycle: {' -> '.join(stack[stack.index(node):] + [node])}")
        if node in seen:
            return
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            visit(nxt)
        stack.pop()
        seen.add(node)

    for node in sorted(graph):
        visit(node)


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            yield node


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_library_logs_instead_of_printing(name):
    path = LIBRARY[name]
    problems = []
    for call in _calls(path):
        f = call.func
        if isinstance(f, ast.Name) and f.id == "print":
            problems.append(f"print() at line {call.lineno}")
        if isinstance(f, ast.Attribute) and f.attr in ("basicConfig", "addHandler", "use", "write"):
            owner = ast.unparse(f.value)
            if f.attr == "use" and "matplotlib" in owner or f.attr in ("basicConfig", "addHandler") or (
                    f.attr == "write" and owner in ("sys.stdout", "sys.stderr", "bar", "tqdm")):
                problems.append(f"{ast.unparse(f)} at line {call.lineno}")
        if isinstance(f, ast.Attribute) and f.attr == "getLogger":
            if [ast.unparse(a) for a in call.args] != ["__name__"]:
                problems.append(f"getLogger({', '.join(map(ast.unparse, call.args))}) at line {call.lineno}: use __name__")
    for node in ast.walk(ast.parse(path.read_text())):
        modules = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [f"{node.module}.{a.name}" for a in node.names] if isinstance(node, ast.ImportFrom) else [])
        problems += [f"imports {m}" for m in modules if m.startswith("matplotlib.pyplot")]
    assert problems == []


def test_examples_and_benchmarks_draw_without_pyplot():
    """Scripts too draw on :class:`matplotlib.figure.Figure` objects (``ppl_vae.figures.new_figure``), never pyplot."""
    users = [str(p.relative_to(ROOT)) for folder in ("examples", "benchmarks") for p in (ROOT / folder).glob("*.py")
             if "pyplot" in p.read_text() or "matplotlib.use" in p.read_text()]
    assert users == []


def test_importing_everything_installs_no_handler():
    for info in pkgutil.walk_packages(ppl_vae.__path__, "ppl_vae."):
        importlib.import_module(info.name)
    loggers = [logging.getLogger(n) for n in logging.root.manager.loggerDict if n.startswith("ppl_vae")]
    assert loggers and all(not lg.handlers for lg in loggers if isinstance(lg, logging.Logger))
    assert logging.getLogger("ppl_vae").level == logging.NOTSET


def test_the_lazy_top_level_names_resolve():
    for name in ppl_vae.__all__:
        assert getattr(ppl_vae, name) is not None, name
    assert set(ppl_vae.__all__) <= set(dir(ppl_vae))
    assert ppl_vae.evaluate_run is importlib.import_module("ppl_vae.jobs").evaluate_run
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        ppl_vae.nothing  # noqa: B018


def test_the_command_line_starts_without_torch_or_pyro():
    """``ppl-vae --help`` and argument errors answer without importing torch or pyro (the timing is in
    benchmarks/cli_startup.py)."""
    code = ("import sys; from ppl_vae.cli import main; "
            "codes = [main(['--help']), main(['train', '--help']), main(['train', '--out', 'x', '--hidden', '-5']), "
            "main(['--version'])]; "
            "print(codes, sorted(m for m in ('torch', 'pyro', 'numpy', 'matplotlib', 'arviz') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "[0, 0, 2, 0] []", out.stdout + out.stderr
    assert out.stderr.strip() == "ppl-vae train: error: argument --hidden: expected an integer >= 1, got '-5'"


def test_the_command_lines_choices_are_the_librarys():
    from ppl_vae.data import BINARIZATIONS, DATASETS
    from ppl_vae.guides import FLOWS
    from ppl_vae.jobs import FAMILIES, SAMPLERS, SPLITS
    from ppl_vae.nn import ACTIVATIONS
    from ppl_vae.runs.config import GUIDES, MODELS, OBJECTIVES
    from ppl_vae.runs.run import CHECKPOINT

    assert set(cli.DATASETS) == set(DATASETS) and cli.BINARIZATIONS == BINARIZATIONS
    assert cli.MODELS == MODELS and cli.GUIDES == GUIDES and cli.OBJECTIVES == OBJECTIVES
    assert cli.FLOWS == tuple(sorted(FLOWS)) and cli.ACTIVATIONS == tuple(sorted(ACTIVATIONS))
    assert cli.SPLITS == SPLITS and cli.FAMILIES == FAMILIES and cli.SAMPLERS == SAMPLERS
    assert cli.CHECKPOINT == CHECKPOINT


def test_the_command_line_has_the_apis_defaults():
    """One code path, one set of defaults: every option's default is the default of the library parameter it sets."""
    import dataclasses
    import inspect

    from ppl_vae.jobs import evaluate_run, gap_run, plot_run, posterior_run
    from ppl_vae.runs.config import TrainConfig

    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices

    def defaults(command):
        return {a.dest: a.default for a in subparsers[command]._actions if a.dest not in ("help", "debug")}

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    train = {dest: value for dest, value in defaults("train").items() if dest not in ("out", "resume", "quiet")}
    assert set(train) == set(cli.TRAIN_OPTIONS) <= fields
    assert all(value is None for value in train.values())  # left out: TrainConfig's default

    def params(fn):
        return {n: p.default for n, p in inspect.signature(fn).parameters.items()}

    cases = {
        "evaluate": (evaluate_run, {"samples": "num_samples", "iwae": "iwae_samples", "prior_mc": "prior_mc_samples",
                                    "ais_chains": "ais_chains", "ais_leapfrog": "ais_leapfrog"}),
        "gap": (gap_run, {"split": "splits"}),
        "posterior": (posterior_run, {}),
        "plot": (plot_run, {}),
    }
    fallbacks = {"ais_chains": 16, "ais_leapfrog": 10}  # the command's value when the option is not given
    for command, (fn, renames) in cases.items():
        api = params(fn)
        for dest, value in defaults(command).items():
            if dest in ("run", "out", "quiet", "ais", "bdmc", "ais_steps", "ais_from_guide", "over_training", "device"):
                continue
            name = renames.get(dest, dest)
            value = fallbacks.get(dest, value) if value is None and dest in fallbacks else value
            value = tuple(value) if isinstance(value, list) else value
            assert name in api, f"{command} --{dest}: no parameter {name} in {fn.__name__}"
            assert value == api[name], f"{command} --{dest}: {value!r} vs {fn.__name__}({name}={api[name]!r})"
        assert defaults(command)["device"] == api["device"] == "cpu"
