"""Per-point random streams: randomness that depends on the data point, not on the batch it is computed in.

A per-point result (a q* fit, an IWAE estimate, an AIS run) computed in a vectorized batch normally draws its random
numbers from one global generator, so it depends on which other points share the batch. Here every point ``n`` has
its own generator, seeded from ``(seed, idx[n], purpose)`` — the study's seed, the point's own index, and what the
numbers are for — and every random draw of a per-point computation takes point ``n``'s share from it. A point's
result is then the same whether it is computed alone, in a chunk of 1,000, in another shard or on another process
(up to floating-point rounding of batched arithmetic).

:class:`PointStreams` holds the generators; :class:`PerPointSampling` is a Pyro messenger that draws every latent
sample site inside the data plate from them: reparameterized families (``Normal``, ``MultivariateNormal``,
``LogNormal`` and other shape-preserving ``TransformedDistribution`` s of those, and the ``Independent`` / expanded /
masked wrappers; distributions with an ``rsample_from_noise(noise)`` method) through their standard-normal noise, so
gradients flow as with ``rsample``; a point mass (``Delta``) as it is; any other distribution point by point, with the
global generator set from the point's stream (exact, slower: each point's draw samples the whole batch).
"""
from __future__ import annotations

import contextlib
import hashlib

import torch
from pyro.distributions import Delta
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample
from torch import distributions as td

from .traces import DATA_PLATE

__all__ = ["PointStreams", "PerPointSampling", "point_seed", "reparameterize", "point_streams", "sampling_from"]


def point_seed(seed: int, index: int, purpose: str) -> int:
    """A 63-bit seed for one point's stream: a hash of ``(seed, index, purpose)`` (independent streams for different
    points and purposes, stable across processes and versions of Python)."""
    digest = hashlib.blake2b(f"{int(seed)}/{int(index)}/{purpose}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class PointStreams:
    """One random generator per data point.

    :param int seed: the study's seed.
    :param idx: ``(N,)`` the points' own indices.
    :param str purpose: what the numbers are for (e.g. ``"iwae_amortized"``, ``"q*_ffg"``, ``"ais"``): different
        purposes get independent streams.
    :param device: the generators' device (``x.device``).
    """

    def __init__(self, seed: int, idx: torch.Tensor, purpose: str, device=None):
        self.seed, self.purpose = int(seed), purpose
        self.indices = [int(i) for i in torch.as_tensor(idx).reshape(-1).tolist()]
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.generators = []
        for i in self.indices:
            g = torch.Generator(device=self.device)
            g.manual_seed(point_seed(seed, i, purpose))
            self.generators.append(g)

    def __len__(self) -> int:
        return len(self.generators)

    def select(self, rows) -> PointStreams:
        """The streams of the points at ``rows`` (positions in this object), sharing their generators' states."""
        out = PointStreams.__new__(PointStreams)
        out.seed, out.purpose, out.device = self.seed, self.purpose, self.device
        out.indices = [self.indices[r] for r in rows]
        out.generators = [self.generators[r] for r in rows]
        return out

    def normal(self, shape, dim: int = 0, dtype=None) -> torch.Tensor:
        """Standard normal draws: ``shape`` is one point's, the points are stacked at ``dim`` (``(..., N, ...)``)."""
        dtype = torch.get_default_dtype() if dtype is None else dtype
        return torch.stack([torch.randn(tuple(shape), generator=g, device=self.device, dtype=dtype)
                            for g in self.generators], dim)

    def uniform(self, shape, dim: int = 0, dtype=None) -> torch.Tensor:
        """Uniform draws on [0, 1), laid out as :meth:`normal`."""
        dtype = torch.get_default_dtype() if dtype is None else dtype
        return torch.stack([torch.rand(tuple(shape), generator=g, device=self.device, dtype=dtype)
                            for g in self.generators], dim)

    def fork(self, n: int):
        """A context in which the global random generator draws from point ``n``'s stream (and its state is written
        back to the stream afterwards)."""
        return _Forked(self.generators[n], self.device)


def point_streams(seed: int | None, idx: torch.Tensor, purpose: str, device=None) -> PointStreams | None:
    """:class:`PointStreams` of the points ``idx`` for ``purpose``, or ``None`` when ``seed`` is ``None`` (the
    estimators then draw from the global random generator, as Pyro does).

    :param seed: the study's seed or ``None``.
    :param idx: ``(N,)`` the points' own indices.
    :param str purpose: what the numbers are for.
    :param device: the generators' device.
    :returns: the streams, or ``None``.
    """
    return None if seed is None else PointStreams(seed, idx, purpose, device)


def sampling_from(streams: PointStreams | None):
    """A context in which every latent site in the data plate is drawn from ``streams``
    (:class:`PerPointSampling`), or one that changes nothing when ``streams`` is ``None``.

    :param streams: the points' streams, in the order of the points of the calls made inside, or ``None``.
    :returns: a context manager.
    """
    return contextlib.nullcontext() if streams is None else PerPointSampling(streams)


class _Forked:
    def __init__(self, generator, device):
        self.generator, self.device = generator, device

    def __enter__(self):
        devices = [self.device] if self.device.type == "cuda" else []
        self._fork = torch.random.fork_rng(devices=devices)
        self._fork.__enter__()
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(self.generator.get_state(), self.device)
        else:
            torch.set_rng_state(self.generator.get_state())

    def __exit__(self, *exc):
        state = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else torch.get_rng_state()
        self.generator.set_state(state)
        return self._fork.__exit__(*exc)


def reparameterize(fn, noise):
    """``fn``'s reparameterized sample made of standard-normal noise, or ``None`` if ``fn`` is not a family handled
    here.

    :param fn: a distribution of the Normal family: ``Normal``, ``MultivariateNormal``, a ``TransformedDistribution``
        of those (any transforms: ``LogNormal``, stick-breaking onto a simplex, flows), or any of them inside
        ``Independent`` / expanded / masked wrappers.
    :param noise: a tensor of the shape ``fn.batch_shape + fn.event_shape`` of the innermost Normal-family
        distribution, or a function ``shape -> noise`` (called once, with that shape).
    """
    if isinstance(fn, (td.Independent, MaskedDistribution)):
        return reparameterize(fn.base_dist, noise)
    if isinstance(fn, ExpandedDistribution):
        try:
            return reparameterize(fn.base_dist.expand(fn.batch_shape), noise)
        except NotImplementedError:
            return None
    if isinstance(fn, td.TransformedDistribution):
        value = reparameterize(fn.base_dist, noise)
        if value is None:
            return None
        for t in fn.transforms:
            value = t(value)
        return value
    if isinstance(fn, (td.Normal, td.MultivariateNormal)):
        shape = fn.batch_shape + fn.event_shape
        eps = noise(shape) if callable(noise) else noise
        if isinstance(fn, td.Normal):
            return fn.loc + fn.scale * eps
        return fn.loc + (fn.scale_tril @ eps.unsqueeze(-1)).squeeze(-1)
    return None


def _point_distribution(fn, position: int, k: int):
    """The distribution of point ``k`` alone: ``fn``'s parameters sliced at ``position`` of its batch shape (any
    distribution whose parameters are its ``arg_constraints``), or ``None``."""
    inner, wrap = fn, []
    while isinstance(inner, (td.Independent, MaskedDistribution, ExpandedDistribution)):
        if isinstance(inner, td.Independent):
            wrap.append(inner.reinterpreted_batch_ndims)
        elif isinstance(inner, ExpandedDistribution):
            inner = inner.base_dist.expand(inner.batch_shape)
            continue
        inner = inner.base_dist
    try:
        full = inner.expand(fn.batch_shape + fn.event_shape[: len(fn.event_shape) - len(inner.event_shape)])
        names = [name for name in full.arg_constraints if name in full.__dict__]
        names = names or list(full.arg_constraints)  # parameters that are properties (Beta's concentrations)
        if "probs" in names and "logits" in names:  # both known: the constructor takes one
            names.remove("probs")
        params = {name: getattr(full, name).select(position, k) for name in names}
        one = type(full)(**params, validate_args=False)
    except (NotImplementedError, TypeError, ValueError, AttributeError, IndexError, RuntimeError):
        return None
    for dims in reversed(wrap):
        one = td.Independent(one, dims)
    return one


class PerPointSampling(Messenger):
    """Draw every non-observed sample site inside ``pyro.plate("data")`` from per-point streams.

    Use it around a model or guide run on the points whose streams ``streams`` holds (in the same order), outside
    the pair's plates (they broadcast the distributions first). Sites outside the data plate, observed sites and
    sites whose value is already given (replay, condition) are left alone.

    :param streams: :class:`PointStreams` of the ``N`` points of the call.
    """

    def __init__(self, streams: PointStreams):
        super().__init__()
        self.streams = streams

    def _pyro_sample(self, msg) -> None:
        if msg["is_observed"] or msg["done"] or msg["value"] is not None or isinstance(msg["fn"], _Subsample):
            return  # (a plate's subsample indices are not a latent)
        frames = [f for f in msg["cond_indep_stack"] if f.name == DATA_PLATE]
        if not frames or _is_delta(msg["fn"]):
            return  # (a point mass draws no random numbers)
        fn = msg["fn"]
        full = fn.batch_shape + fn.event_shape
        position = len(fn.batch_shape) + frames[0].dim
        n = len(self.streams)
        if position < 0 or full[position] != n:
            raise ValueError(f"Expected site {msg['name']!r} to have {n} points along the data plate, got shape "
                             f"{tuple(full)}")
        per_point = full[:position] + full[position + 1:]
        dtype = getattr(fn, "mean", None).dtype if _has_mean(fn) else torch.get_default_dtype()
        value = None
        if getattr(fn, "has_rsample", False):
            if hasattr(fn, "rsample_from_noise"):  # e.g. the latent-space guides' per-point distributions
                value = fn.rsample_from_noise(self.streams.normal(per_point, position, dtype))
            else:
                value = reparameterize(fn, lambda shape: self._noise(shape, position, dtype))
        if value is None:
            value = self._point_by_point(fn, position, n, msg["name"])
        msg["value"] = value
        msg["done"] = True

    def _noise(self, shape, position: int, dtype) -> torch.Tensor:
        shape = tuple(shape)
        return self.streams.normal(shape[:position] + shape[position + 1:], position, dtype)

    def _point_by_point(self, fn, position: int, n: int, name: str) -> torch.Tensor:
        draws = []
        for k in range(n):
            one = _point_distribution(fn, position, k)
            if one is None:
                raise ValueError(f"Cannot draw site {name!r} ({type(fn).__name__}) from per-point random streams: "
                                 "neither a Normal-family reparameterization nor its parameters per point are known")
            with self.streams.fork(k):
                draws.append(one.rsample() if getattr(fn, "has_rsample", False) else one.sample())
        return torch.stack(draws, position)


def _is_delta(fn) -> bool:
    """Whether ``fn`` is a point mass (Pyro's ``Delta``, possibly inside ``Independent`` / expanded / masked
    wrappers), whose draw takes no random numbers."""
    while isinstance(fn, (td.Independent, MaskedDistribution, ExpandedDistribution)):
        fn = fn.base_dist
    return isinstance(fn, Delta)


def _has_mean(fn) -> bool:
    try:
        return isinstance(fn.mean, torch.Tensor)
    except NotImplementedError:
        return False
