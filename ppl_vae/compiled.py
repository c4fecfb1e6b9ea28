"""Pyro's tracing out of the hot paths: a pure tensor function recorded once per input signature as a graph of
PyTorch operations, and replayed.

A per-point estimator, a training step and the per-datapoint fit all run the same pair on inputs of the same shapes
thousands of times, and each run rebuilds the same Pyro trace: Python handlers, site dictionaries, distribution
objects, the per-site reductions. Only the tensor operations at the bottom of that stack change value from call to
call. :class:`CompiledFunction` records those operations once (:func:`torch.fx.experimental.proxy_tensor.make_fx`
at PyTorch's *pre-dispatch* level, the training graph of ``torch.export``: above autograd, so ``detach``, grad mode
and every operator's derivative are those of eager PyTorch) and from then on calls the recorded graph instead of the
Python that produced it. The graph draws its random numbers from torch's generator with the same operations, so a
replay returns what the traced path returns from the same random state, bit for bit; its gradients too.

The traced path stays the reference and the fallback. A recorded graph is only as good as the assumption that the
Python around the operations takes the same decisions every time; that assumption is *checked*, not made:

1. **Signature, every call.** Shapes, strides, dtypes, devices and ``requires_grad`` of every tensor the function
   reads (its tensor arguments, the parameters and buffers of the pair's modules, Pyro's param store), its other
   arguments, the global switches the Python may branch on (grad mode, inference mode, Pyro's and torch's argument
   validation, the default dtype), and the Python state of the model, guide and objective (:func:`pair_state`:
   every submodule's type, ``training`` flag and plain attributes, a function's code and closure). A new signature
   is a new graph.
2. **Data reads, every call.** Python can only branch on a tensor's *values* by reading them (``bool(t)``,
   ``t.item()``, ``torch.equal``) or through an operation whose output shape depends on them (``t[mask]``,
   ``nonzero``, ``unique``); PyTorch tags both kinds (``data_dependent_output``, ``dynamic_output_shape``). Each
   such read becomes a guard in the graph that recomputes it on the replay and compares it with what the recording
   read. A different value stops the replay: the random state is put back and the traced path runs instead.
   Reads PyTorch cannot see (``Tensor.tolist``, ``.numpy()``, ``.data``, raw storage) make a function
   unrecordable: it always runs traced.
3. **The recording itself.** Right after recording, the graph is replayed from the random state the traced call
   started from: its outputs, their gradients with respect to every input, and the random state it leaves must
   equal the traced call's, bit for bit; otherwise the graph is dropped and that signature runs traced.
4. **Context.** Inside a Pyro handler (``poutine.trace`` around an estimator, say), under a torch function or
   dispatch mode, or inside a functorch transform, the traced path runs: the handler must see the sites.

Policy: a signature is recorded on its :data:`RECORD_AFTER`-th call (short runs never pay for a recording); a
graph whose guards fail :data:`MAX_GUARD_FAILURES` times in a row is dropped and its signature runs traced from then
on (a function that branches on data differently from call to call gains nothing from a graph); at most
:data:`MAX_GRAPHS` signatures are kept per function.

A Pyro program's structure — its site names, shapes, distribution types and plates — is decided by its Python,
which can only decide on the signature's inputs (1), on tensor values it reads (2) or on the Python state of the pair
(1, :func:`pair_state`): all three are checked on every call. The Python state counts what the pair's functions
reach: attributes, closure cells, defaults, ``functools.partial`` arguments and the module-level globals their code
names (a network or a configuration object kept as a global, as in Pyro's tutorials; a user's ``forward`` too), three
levels deep. What the checks cannot see is state beyond that — an attribute of an imported Python module
(``config.BETA`` read through ``import config``), an object more than three levels down, Python's own ``random`` (the
validating replay catches it at recording) — as for ``torch.jit.trace`` and Pyro's ``JitTrace_ELBO`` ("models must
have static structure"); :func:`compilation` with ``enabled=False`` runs everything traced. Tensors the pair changes
in place (a BatchNorm's running statistics) change once per call, as on the traced path: recording puts them back
between its runs and checks the graph's writes.

Measured choices (``benchmarks/train_speed.py``, ``iwae_speed.py``, ``local_fit_speed.py``; README "Speed"):
``torch.jit.trace`` (Pyro's JIT route) is deprecated in torch 2.14 and needs every parameter in Pyro's param store;
``torch.compile`` breaks Pyro's handler stack into six graphs (``TypedDict`` messages, ``.item()``,
``sys._getframe``) and compiles for seconds per signature; a pre-dispatch graph records in a fraction of a second and
its replay costs a Python call per operation.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import math
import threading
import types
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator

import numpy as np
import pyro
import torch
from pyro.poutine.runtime import _PYRO_STACK
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.node import _get_qualified_name
from torch.utils import _pytree as pytree

__all__ = ["CompiledFunction", "pair_tensors", "pair_state", "compilation", "is_enabled", "RECORD_AFTER", "MAX_GUARD_FAILURES",
           "MAX_GRAPHS"]

logger = logging.getLogger(__name__)

RECORD_AFTER = 20
"""A signature is recorded on its 20th call (the first 19 run traced): a recording costs about as much as a hundred
traced calls of a small pair (measured: 0.9 s against 8 ms per q* step of a 10-point linear-Gaussian fit on 2 busy
cores), so signatures called a few times (an estimate on a handful of points, most tests) never pay for one, and
long loops (training, IWAE over a test set, q* fits of thousands of steps) barely notice the wait."""

MAX_GUARD_FAILURES = 3
"""A graph whose guards fail this many replays in a row is dropped; its signature runs traced from then on."""

MAX_GRAPHS = 8
"""Signatures kept per function (the least recently used graph is dropped beyond)."""

_settings = threading.local()


def _setting(name: str, default):
    return getattr(_settings, name, default)


def is_enabled() -> bool:
    """Whether compiled functions replay their graphs (``True`` unless switched off by :func:`compilation`)."""
    return _setting("enabled", True)


@contextlib.contextmanager
def compilation(enabled: bool = True, record_after: int | None = None) -> Iterator[None]:
    """Switch the replay of recorded graphs on or off in this thread (``enabled=False``: every compiled function runs
    its traced path), or record signatures after ``record_after`` calls (``1``: on the first call).

    :param bool enabled: replay recorded graphs.
    :param int record_after: the call of a signature on which it is recorded (default :data:`RECORD_AFTER`).
    :raises ValueError: if ``record_after < 1``.

    Example::

        >>> from ppl_vae.compiled import compilation, is_enabled
        >>> with compilation(enabled=False):
        ...     is_enabled()
        False
    """
    if record_after is not None and record_after < 1:
        raise ValueError(f"Expected record_after >= 1, got {record_after}")
    old = (_setting("enabled", True), _setting("record_after", None))
    _settings.enabled, _settings.record_after = enabled, record_after
    try:
        yield
    finally:
        _settings.enabled, _settings.record_after = old


class _Unrecordable(RuntimeError):
    """The function read tensor data in a way a graph cannot replay."""


class _GuardFailed(RuntimeError):
    """A replay read a value (or produced a shape) different from the recording's."""


_UNSET = object()


class _ValueGuard:
    """Recomputes a data-dependent read (``aten.item``, ``aten.equal``, ...) and compares it with the recording's
    value; the first call (the validating replay) learns the value."""

    def __init__(self, op):
        self.op, self.expected = op, _UNSET
        self.__name__ = f"guard_{op.__name__.replace('.', '_')}"

    def __call__(self, *args, **kwargs):
        value = self.op(*args, **kwargs)
        if self.expected is _UNSET:
            self.expected = value
        elif not _same(value, self.expected):
            raise _GuardFailed(f"{self.op} read {value!r}, the recording read {self.expected!r}")
        return value


class _ShapeGuard:
    """Runs an operation whose output shape depends on the data and compares that shape with the recording's."""

    def __init__(self, op):
        self.op, self.expected = op, _UNSET
        self.__name__ = f"shape_guard_{op.__name__.replace('.', '_')}"

    def __call__(self, *args, **kwargs):
        out = self.op(*args, **kwargs)
        shapes = tuple(t.shape for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor))
        if self.expected is _UNSET:
            self.expected = shapes
        elif shapes != self.expected:
            raise _GuardFailed(f"{self.op} gave shapes {shapes}, the recording {self.expected}")
        return out


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


# Tensor methods that read data without a PyTorch operation (a graph would bake the values in silently).
_OPAQUE_READS = {torch.Tensor.tolist: "Tensor.tolist", torch.Tensor.numpy: "Tensor.numpy",
                 torch.Tensor.__array__: "Tensor.__array__", torch.Tensor.data_ptr: "Tensor.data_ptr",
                 torch.Tensor.untyped_storage: "Tensor.untyped_storage", torch.Tensor.storage: "Tensor.storage"}


class _OpaqueReads(torch.overrides.TorchFunctionMode):
    """Refuses the reads of :data:`_OPAQUE_READS`; keeps the tensors ``.data`` returns (an alias outside autograd,
    fine for its shape — Pyro reads ``value.data.shape`` — but a stale constant if the graph computes with it)."""

    def __init__(self):
        super().__init__()
        self.data_aliases: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _OPAQUE_READS:
            raise _Unrecordable(f"it reads tensor data with {_OPAQUE_READS[func]}, which a graph cannot replay")
        out = func(*args, **(kwargs or {}))
        if func is torch.Tensor.data.__get__:
            self.data_aliases.append(out)
        return out

    def check_constants(self, module: torch.fx.GraphModule) -> None:
        """:raises _Unrecordable: if the graph computes with a tensor obtained through ``.data``, or holds a constant
            that requires a gradient."""
        storages = {a.untyped_storage().data_ptr() for a in self.data_aliases if a.device.type != "meta"}
        for node in module.graph.nodes:
            if node.op == "get_attr":
                value = getattr(module, node.target)
                if isinstance(value, torch.Tensor) and value.requires_grad:
                    raise _Unrecordable(f"it reads a tensor of shape {tuple(value.shape)} that requires a gradient "
                                        "but is neither a parameter or buffer of the pair's modules nor in Pyro's "
                                        "param store (a graph would hold it as a constant)")
                if isinstance(value, torch.Tensor) and value.untyped_storage().data_ptr() in storages:
                    raise _Unrecordable("it computes with a tensor read through Tensor.data, which a graph would "
                                        "replay as a stale constant")


def _rng_state() -> tuple:
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    return torch.get_rng_state(), (torch.cuda.get_rng_state_all() if cuda else None)


def _set_rng_state(state: tuple) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


def _same_rng_state(a: tuple, b: tuple) -> bool:
    return torch.equal(a[0], b[0]) and (a[1] is None) == (b[1] is None) and \
        (a[1] is None or all(torch.equal(u, v) for u, v in zip(a[1], b[1])))


def _meta(t: torch.Tensor) -> tuple:
    return t.shape, t.stride(), t.dtype, t.device, t.requires_grad


def _owner_modules(fn, depth: int = 0) -> list[torch.nn.Module]:
    """The ``nn.Module`` s behind a model or guide: the module itself, the object of a bound method, and the modules
    a plain function or a ``functools.partial`` holds (closure cells, defaults, bound arguments; three levels deep),
    as in Pyro's tutorials, where a function calls ``pyro.module("decoder", decoder)`` on a module of its closure."""
    owner = getattr(fn, "__self__", fn)
    if isinstance(owner, torch.nn.Module):
        return [owner]
    if depth >= 3:
        return []
    if isinstance(fn, functools.partial):
        held = [fn.func, *fn.args, *fn.keywords.values()]
    elif isinstance(fn, types.FunctionType):
        held = [c.cell_contents for c in fn.__closure__ or () if _cell_filled(c)] + list(fn.__defaults__ or ()) + \
            [v for _, v in _referenced_globals(fn) if isinstance(v, torch.nn.Module | types.FunctionType |
                                                                   functools.partial)]
    else:
        return []
    return [m for h in held for m in _owner_modules(h, depth + 1)]


def pair_tensors(*fns, modules=()) -> list[torch.Tensor]:
    """Every tensor a pair may read besides its arguments: the parameters and buffers of the modules behind ``fns``
    (functions, ``nn.Module`` s or bound methods of ``nn.Module`` s) and of ``modules``, and the unconstrained values
    of Pyro's param store (``pyro.param``, ``pyro.module``), each once."""
    out, seen = [], set()
    mods = [m for fn in fns for m in _owner_modules(fn)] + [m for m in modules if isinstance(m, torch.nn.Module)]
    for m in mods:
        for t in (*m.parameters(), *m.buffers()):
            if id(t) not in seen:
                seen.add(id(t))
                out.append(t)
    for _, t in pyro.get_param_store().named_parameters():
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


_SCALARS = (bool, int, float, complex, str, bytes, type(None), torch.dtype, torch.device, torch.Size)


_MAX_ITEMS = 256  # longer sequences and mappings count by identity and length (a data set is not a setting)
_MAX_ARRAY_BYTES = 1 << 16  # larger NumPy arrays count by identity


def _value_state(value, depth: int = 0):
    """What of a value the state records (three levels deep): scalars by value; tuples, lists, sets and dicts item by
    item (by identity and length past :data:`_MAX_ITEMS` items); tensors by identity and metadata (a reassigned
    tensor is a new tensor, one changed in place is read by the graph); NumPy arrays by their bytes (identity past
    :data:`_MAX_ARRAY_BYTES`); modules by :func:`_module_state` (their ``training`` flags, submodules and attributes);
    plain functions by code, defaults and closure; ``functools.partial`` by function and arguments; bound methods by
    function and object; classes by identity; any other object by its type and attributes."""
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, torch.Tensor):
        return ("tensor", id(value), _meta(value))
    if isinstance(value, type):
        return ("class", id(value))
    if isinstance(value, np.ndarray):
        data = value.tobytes() if value.nbytes <= _MAX_ARRAY_BYTES else id(value)
        return ("ndarray", value.shape, value.dtype.str, data)
    if isinstance(value, np.generic):
        return ("numpy", value.dtype.str, value.item())
    if depth >= 3:
        return ("object", type(value), id(value))
    if isinstance(value, tuple | list | set | frozenset | dict):
        if len(value) > _MAX_ITEMS:
            return (type(value), "long", id(value), len(value))
        if isinstance(value, dict):
            return (type(value), tuple((_value_state(k, depth + 1), _value_state(v, depth + 1))
                                       for k, v in value.items()))
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return (type(value), tuple(_value_state(v, depth + 1) for v in items))
    if isinstance(value, torch.nn.Module):
        return ("module", id(value), _module_state(value, depth + 1))
    if isinstance(value, types.FunctionType):
        return ("function", _function_state(value, depth + 1))
    if isinstance(value, functools.partial):
        return ("partial", _value_state(value.func, depth + 1), _value_state(value.args, depth + 1),
                _value_state(value.keywords, depth + 1))
    if isinstance(value, types.MethodType):
        return ("method", value.__func__, _value_state(value.__self__, depth + 1))
    if isinstance(value, types.ModuleType | types.BuiltinFunctionType | torch._ops.OpOverload |
                  torch._ops.OpOverloadPacket):
        return ("callable", id(value))
    return _object_state(value, depth + 1)


def _object_state(obj, depth: int = 0) -> tuple:
    """The type and the recorded attribute values (:func:`_value_state`) of an object that is not a module (its
    ``__dict__``, or its ``__slots__``)."""
    attrs = getattr(obj, "__dict__", None)
    if attrs is None:
        slots = [n for c in type(obj).__mro__ for n in getattr(c, "__slots__", ())]
        attrs = {n: getattr(obj, n) for n in slots if isinstance(n, str) and hasattr(obj, n)}
    return (type(obj), tuple((k, _value_state(v, depth)) for k, v in attrs.items() if not k.startswith("__")))


def _module_state(module: torch.nn.Module, depth: int = 0) -> tuple:
    """Every submodule's name, type, ``training`` flag and plain attributes (``in_features``, ELU's ``alpha``, a float
    the ``forward`` branches on...), in order: a replaced submodule or a changed attribute changes it."""
    out = []
    for name, m in module.named_modules(remove_duplicate=False):
        attrs = tuple((k, _value_state(v, depth)) for k, v in m.__dict__.items() if k[0] != "_")
        forward = getattr(type(m), "forward", None)  # the globals a user's forward reads (torch's own: none)
        reads = () if type(m).__module__.startswith("torch.") or not isinstance(forward, types.FunctionType) else \
            _globals_state(forward, depth)
        out.append((name, type(m), attrs, reads))
    return tuple(out)


def _function_state(fn, depth: int = 0) -> tuple:
    """A plain function's code, defaults, closure contents and the module-level globals its code names
    (:func:`_value_state`): a module or a configuration object the function reads by its global name is part of its
    state as much as one in its closure (Pyro's tutorials keep their networks so)."""
    cells = tuple(_value_state(c.cell_contents, depth) if _cell_filled(c) else None for c in fn.__closure__ or ())
    return (fn.__code__, _value_state(fn.__defaults__, depth), cells, _globals_state(fn, depth))


@functools.lru_cache(maxsize=4096)
def _global_names(code: types.CodeType) -> tuple[str, ...]:
    """The names a code object (and the functions and comprehensions defined in it) may read as globals."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.update(_global_names(const))
    return tuple(sorted(names))


def _referenced_globals(fn) -> list[tuple[str, object]]:
    """``(name, value)`` of the module-level globals ``fn``'s code names (builtins excluded)."""
    code, scope = getattr(fn, "__code__", None), getattr(fn, "__globals__", None)
    if code is None or scope is None:
        return []
    return [(n, scope[n]) for n in _global_names(code) if n in scope]


def _globals_state(fn, depth: int) -> tuple:
    """:func:`_value_state` of each global ``fn`` reads; Python modules (``torch``, ``pyro``...) by identity."""
    return tuple((n, ("python module", id(v)) if isinstance(v, types.ModuleType) else _value_state(v, depth))
                 for n, v in _referenced_globals(fn))


def _cell_filled(cell) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


def pair_state(*objects, modules=()) -> tuple:
    """The Python state a model, guide or objective may take decisions on, as a hashable key: for an ``nn.Module``
    (or a bound method of one) every submodule's name, type, ``training`` flag and plain attributes; for a plain
    function its code, defaults and closure contents; for any other object (an objective, a bound method's object)
    its type and plain attributes. Scalars count by value, tensors by identity (a tensor attribute that is reassigned
    changes the key, one changed in place does not need to: the graph reads it). The key is part of a
    :class:`CompiledFunction`'s signature, so a change replays no stale graph.

    :param objects: models, guides, objectives (functions, bound methods, modules, objects).
    :param modules: further ``nn.Module`` s.
    :returns: a hashable tuple.
    """
    out = []
    for obj in (*objects, *modules):
        if isinstance(obj, types.MethodType):
            owner = obj.__self__
            out.append((obj.__func__, _module_state(owner) if isinstance(owner, torch.nn.Module) else
                        _object_state(owner)))
        elif isinstance(obj, torch.nn.Module):
            out.append(_module_state(obj))
        else:
            out.append(_value_state(obj))
    return tuple(out)


def _context_allows_replay() -> bool:
    """No Pyro handler, torch function or dispatch mode, or functorch transform around the call."""
    return (not _PYRO_STACK and not torch._C._len_torch_function_stack()
            and not torch._C._len_torch_dispatch_stack() and not torch._C._are_functorch_transforms_active())


class _Graph:
    """A recorded graph: the module, the output's tree structure, whether it has guards, its number of operations and
    its guard failures in a row."""

    def __init__(self, module: torch.fx.GraphModule, spec, guarded: bool, size: int):
        self.module, self.spec, self.guarded, self.size, self.failures = module, spec, guarded, size, 0


class CompiledFunction:
    """``fn(*args)`` — a pure function of its tensor arguments, of the tensors ``tensors()`` returns (parameters,
    buffers) and of torch's random stream — recorded once per signature as a graph of PyTorch operations and
    replayed; the traced path (``fn`` itself) is the reference and the fallback (see the module's description for
    the checks and the policy).

    :param fn: the function; its arguments are tensors (recorded as graph inputs) and hashable values (part of the
        signature, baked into the graph); it returns a tensor or a tuple/list/dict of tensors (or ``None``).
    :param tensors: returns, on every call, the tensors ``fn`` reads besides its arguments
        (:func:`pair_tensors`); a tensor it reads that is not among them is recorded as a constant, and one that
        requires a gradient makes the function unrecordable (it runs traced).
    :param str name: for log messages.
    :param state: returns, on every call, a hashable key of the Python state ``fn`` takes decisions on
        (:func:`pair_state`): part of the signature, so a changed attribute, module or closure records a new graph.

    Example::

        >>> import torch
        >>> from ppl_vae.compiled import CompiledFunction, compilation
        >>> w = torch.nn.Parameter(torch.ones(3))
        >>> f = CompiledFunction(lambda x, k: (w * x).sum() * k, tensors=lambda: [w], name="f")
        >>> with compilation(record_after=1):
        ...     values = [f(torch.ones(3), 2).item() for _ in range(3)]
        >>> values, f.stats["replays"]
        ([6.0, 6.0, 6.0], 2)
    """

    def __init__(self, fn: Callable, tensors: Callable[[], list[torch.Tensor]] = list, name: str = "",
                 state: Callable[[], Hashable] = tuple):
        self.fn, self.tensors, self.state = fn, tensors, state
        self.name = name or getattr(fn, "__name__", "function")
        self._graphs: OrderedDict[tuple, _Graph | None] = OrderedDict()
        self._calls: dict[tuple, int] = {}
        self.stats = {"traced": 0, "recorded": 0, "replays": 0, "guard_failures": 0}
        self.refusals: dict[tuple, str] = {}

    def _signature(self, inputs, args) -> tuple:
        arg_key = tuple(("tensor", _meta(a)) if isinstance(a, torch.Tensor) else a for a in args)
        return (tuple(_meta(t) for t in inputs), arg_key, self.state(), torch.is_grad_enabled(),
                torch.is_inference_mode_enabled(),
                pyro.infer.util.is_validation_enabled(), torch.distributions.Distribution._validate_args,
                torch.get_default_dtype())

    def __call__(self, *args):
        if getattr(_settings, "recording", False) or not is_enabled() or not _context_allows_replay():
            return self._traced(*args)
        inputs = self.tensors()
        try:
            key = self._signature(inputs, args)
            graph = self._graphs.get(key, _UNSET)
        except TypeError:  # an unhashable argument: no signature, no graph
            return self._traced(*args)
        if graph is None:
            return self._traced(*args)
        tensor_args = [a for a in args if isinstance(a, torch.Tensor)]
        if graph is _UNSET:
            calls = self._calls[key] = self._calls.get(key, 0) + 1
            if calls < (_setting("record_after", None) or RECORD_AFTER):
                return self._traced(*args)
            return self._record(key, inputs, args, tensor_args)
        self._graphs.move_to_end(key)
        state = _rng_state()
        try:
            out = graph.module(inputs, tensor_args)
        except Exception as e:  # noqa: BLE001 - a failed guard, or whatever else: the traced path decides (and raises)
            return self._after_failure(key, graph, state, e, args)
        graph.failures = 0
        self.stats["replays"] += 1
        return pytree.tree_unflatten(out, graph.spec)

    def _traced(self, *args):
        self.stats["traced"] += 1
        return self.fn(*args)

    def _after_failure(self, key, graph, state, error, args):
        _set_rng_state(state)
        graph.failures += 1
        self.stats["guard_failures"] += 1
        logger.debug("%s: replay stopped (%s); running the traced path", self.name, error)
        if graph.failures >= MAX_GUARD_FAILURES:
            self._refuse(key, f"its guards failed {graph.failures} replays in a row (last: {error})")
        return self._traced(*args)

    def _refuse(self, key, reason: str) -> None:
        self._graphs[key] = None
        self.refusals[key] = reason
        logger.info("%s runs on its traced path for this input signature: %s", self.name, reason)

    def _record(self, key, inputs, args, tensor_args):
        # The pair's Python runs several times here (the reference, the recording, the validating replays): tensors it
        # changes in place (a BatchNorm's running statistics) are put back before each run, and the graph must leave
        # them as the reference did, so that the call changes them once, as the traced path would.
        start, before = _rng_state(), _snapshot(inputs)
        reference = self.fn(*args)  # the traced path: the reference the graph must reproduce
        after, changed = _rng_state(), _snapshot(inputs)
        self.stats["traced"] += 1
        try:
            _put_back(inputs, before)
            graph = self._build(inputs, args, tensor_args, start)
            _put_back(inputs, before)
            _set_rng_state(start)
            originals = _lower(graph.module, inputs, tensor_args)
            for lowered in (True, False):  # the graph on the bindings, else (if that differs) on the operators
                if not lowered:
                    _restore(graph.module, originals)
                _put_back(inputs, before)
                _set_rng_state(start)
                replay = graph.module(inputs, tensor_args)
                problem = _compare(reference, pytree.tree_unflatten(replay, graph.spec), inputs, tensor_args) or \
                    (None if _same_rng_state(_rng_state(), after) else "the random state after the replay differs") or \
                    (None if _same_values(inputs, changed) else "the replay changes the pair's tensors in place "
                     "differently from the traced path")
                if problem is None or not originals:
                    break
                logger.debug("%s: the graph on torch's bindings differs (%s); replaying the operators", self.name,
                             problem)
        except _Unrecordable as e:
            problem = str(e).splitlines()[0]  # (Pyro appends the trace's shapes to errors raised inside a site)
        except Exception as e:  # noqa: BLE001 - a graph that cannot be built or replayed is not used
            problem = f"recording failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        if problem is not None and not _same_values(before, changed):
            # the reference changed the pair's tensors, which were put back and changed again since: run it again from
            # the start, so that the call changes them once and returns a result whose autograd graph saw no later
            # write to them
            _put_back(inputs, before)
            _set_rng_state(start)
            reference = self.fn(*args)
        _set_rng_state(after)
        if problem is not None:
            self._refuse(key, problem)
        else:
            self._graphs[key] = graph
            self.stats["recorded"] += 1
            logger.debug("%s: recorded %d operations (%s guards)", self.name, graph.size,
                         "with" if graph.guarded else "no")
            while sum(g is not None for g in self._graphs.values()) > MAX_GRAPHS:
                oldest = next(k for k, g in self._graphs.items() if g is not None)
                del self._graphs[oldest]
        return reference

    def _build(self, inputs, args, tensor_args, start) -> _Graph:
        positions = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
        spec, reads = [], _OpaqueReads()

        def pure(inputs, tensor_args):
            call = list(args)
            for i, t in zip(positions, tensor_args):
                call[i] = t
            with reads:
                out = self.fn(*call)
            leaves, tree = pytree.tree_flatten(out)
            spec.append(tree)
            return leaves

        _set_rng_state(start)
        _settings.recording = True
        try:
            module = make_fx(pure, pre_dispatch=True, _error_on_data_dependent_ops=False)(inputs, tensor_args)
        finally:
            _settings.recording = False
        reads.check_constants(module)
        guarded = _insert_guards(module.graph)
        module.graph.eliminate_dead_code(is_impure_node=_is_impure)
        module.recompile()
        return _Graph(module, spec[-1], guarded, sum(n.op == "call_function" for n in module.graph.nodes))


_BINDING_NAMESPACES = (torch._C._VariableFunctions, torch._C._nn, torch._C._special, torch._C._linalg,
                       torch._C.TensorBase)


def _binding(op: torch._ops.OpOverload):
    """torch's own C++ binding of an ATen operator (``torch.add`` for ``aten.add.Tensor``), or ``None``: a graph
    calls it for a fraction of the Python an ``OpOverload`` call costs. The binding chooses the overload from the
    arguments' types, which a graph fixes; the validating replay checks the result (:meth:`CompiledFunction._record`
    falls back to the operators if it differs)."""
    namespace, _, name = op._schema.name.partition("::")
    if namespace != "aten" or op._schema.is_mutable and not name.endswith("_"):
        return None  # out= variants and other mutating overloads keep their operator
    for ns in _BINDING_NAMESPACES:
        fn = getattr(ns, name, None)
        if fn is not None and type(fn).__name__ in ("builtin_function_or_method", "method_descriptor"):
            return fn if _resolves_to(fn) else None
    return None


def _resolves_to(fn) -> bool:
    """Whether the name a graph's code calls ``fn`` by is ``fn`` (``torch.broadcast_tensors`` is a Python wrapper of
    the binding of the same name, with another signature)."""
    try:
        obj = importlib.import_module("torch")
        for part in _get_qualified_name(fn).split(".")[1:]:
            obj = getattr(obj, part)
    except (AttributeError, RuntimeError, ImportError):
        return False
    return obj is fn


class _Trial:
    """Calls a binding in place of an operator during one trial replay; if the binding does not accept the
    arguments, calls the operator and remembers it."""

    def __init__(self, fn, op):
        self.fn, self.op, self.failed = fn, op, False
        self.__name__ = f"trial_{op.__name__.replace('.', '_')}"

    def __call__(self, *args, **kwargs):
        if not self.failed:
            try:
                return self.fn(*args, **kwargs)
            except (TypeError, RuntimeError):
                self.failed = True
        return self.op(*args, **kwargs)


def _lower(module: torch.fx.GraphModule, inputs, tensor_args) -> dict:
    """Point the graph's operator calls at torch's bindings (:func:`_binding`) where a trial replay from the current
    random state shows that the binding accepts the arguments; returns ``{node: operator}`` to undo it with
    :func:`_restore` (the caller resets the random state and validates the values)."""
    trials = {}
    for node in module.graph.nodes:
        if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
            fn = _binding(node.target)
            if fn is not None:
                trials[node] = node.target = _Trial(fn, node.target)
    if not trials:
        return {}
    module.recompile()
    try:
        module(inputs, tensor_args)
    except Exception:  # noqa: BLE001 - the caller's replay on the operators reports it
        _restore(module, {node: t.op for node, t in trials.items()})
        return {}
    originals = {}
    for node, trial in trials.items():
        node.target = trial.op if trial.failed else trial.fn
        if not trial.failed:
            originals[node] = trial.op
    module.recompile()
    return originals


def _restore(module: torch.fx.GraphModule, originals: dict) -> None:
    for node, op in originals.items():
        node.target = op
    module.recompile()


def _is_impure(node) -> bool:
    if node.op != "call_function":
        return node.is_impure()
    target = node.target
    if isinstance(target, _ValueGuard | _ShapeGuard):
        return True
    if isinstance(target, torch._ops.OpOverload) and torch.Tag.nondeterministic_seeded in target.tags:
        return True  # a random draw moves the generator even when its value is unused
    return node.is_impure()


def _insert_guards(graph: torch.fx.Graph) -> bool:
    """Replace every data-dependent read by a :class:`_ValueGuard` and wrap every operation with a data-dependent
    output shape in a :class:`_ShapeGuard`; returns whether the graph has guards."""
    guarded = False
    for node in graph.nodes:
        target = node.target
        if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload):
            continue
        if torch.Tag.data_dependent_output in target.tags:
            node.target = _ValueGuard(target)
            guarded = True
        elif torch.Tag.dynamic_output_shape in target.tags:
            node.target = _ShapeGuard(target)
            guarded = True
    return guarded


def _snapshot(tensors) -> list[torch.Tensor]:
    """Copies of ``tensors``' values."""
    with torch.no_grad():
        return [t.detach().clone() for t in tensors]


def _same_values(tensors, values) -> bool:
    """Whether every tensor holds the values of its copy."""
    return all(_equal(t.detach(), v) for t, v in zip(tensors, values))


def _put_back(tensors, values) -> None:
    """Write the copies ``values`` back into the tensors that no longer hold them (only those: a write bumps a tensor's
    version, which autograd checks for the tensors it saved)."""
    with torch.no_grad():
        for t, v in zip(tensors, values):
            if not _equal(t.detach(), v):
                t.copy_(v)


def _compare(reference, replay, inputs, tensor_args) -> str | None:
    """Why ``replay`` differs from ``reference`` (values bit for bit, ``requires_grad``, gradients of their sum with
    respect to every input that requires one), or ``None``."""
    ref_leaves, ref_tree = pytree.tree_flatten(reference)
    rep_leaves, rep_tree = pytree.tree_flatten(replay)
    if ref_tree != rep_tree:
        return f"the replay returned {rep_tree}, the traced path {ref_tree}"
    for a, b in zip(ref_leaves, rep_leaves):
        if isinstance(a, torch.Tensor) != isinstance(b, torch.Tensor):
            return "the replay returned a different type"
        if not isinstance(a, torch.Tensor):
            if not _same(a, b):
                return f"the replay returned {b!r}, the traced path {a!r}"
            continue
        if a.shape != b.shape or a.dtype != b.dtype or a.requires_grad != b.requires_grad:
            return f"the replay returned {tuple(b.shape)} {b.dtype} requires_grad={b.requires_grad}, the traced " \
                   f"path {tuple(a.shape)} {a.dtype} requires_grad={a.requires_grad}"
        if not _equal(a.detach(), b.detach()):
            return "the replay's values differ from the traced path's"
    wrt = [t for t in (*inputs, *tensor_args) if t.requires_grad]
    outs = [(a, b) for a, b in zip(ref_leaves, rep_leaves) if isinstance(a, torch.Tensor) and a.requires_grad
            and a.is_floating_point()]
    if wrt and outs:
        ga = torch.autograd.grad(sum(a.sum() for a, _ in outs), wrt, allow_unused=True, retain_graph=True)
        gb = torch.autograd.grad(sum(b.sum() for _, b in outs), wrt, allow_unused=True)
        for u, v in zip(ga, gb):
            if (u is None) != (v is None) or (u is not None and not _equal(u, v)):
                return "the replay's gradients differ from the traced path's"
    return None


def _equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal values, NaN where the other is NaN."""
    if not a.is_floating_point() and not a.is_complex():
        return torch.equal(a, b)
    return bool(((a == b) | (a.isnan() & b.isnan())).all())
