"""Model/guide pairs that follow the conventions but are not our VAE: the suite every tool is run on.

Each :class:`Pair` has data ``x``, the points' indices ``idx`` (not ``0..N-1``: models that use them must get the
right ones), an amortized guide, and — where one exists — the exact ``log p(x)`` (closed form or exhaustive
enumeration) and the exact posterior's family (``gaussian``: the full-covariance q* contains it). Two pairs follow
Pyro's own examples with the smallest adaptation (their signatures take ``(x, idx)``):

- ``pyro_vae``: the model/guide pair of ``examples/vae/vae.py`` (MLP encoder and decoder registered with
  ``pyro.module``, a ``Normal(...).to_event(1)`` latent named ``latent``, a Bernoulli likelihood on ``obs``), written
  here at a small size; adaptation: the ``idx`` argument.
- ``pyro_ss_vae``: the M2 model of ``examples/vae/ss_vae_M2.py`` (a one-hot class ``y`` and a style ``z``), unlabelled
  data; as shipped its guide does not broadcast over particles (``pyro_ss_vae_as_shipped`` checks the error we give);
  adaptations: the ``idx`` argument, ``x`` expanded to ``y``'s batch shape in the guide, and ``y`` marked for
  enumeration in the model (as the example does with ``config_enumerate``), so the per-point tools sum it out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import config_enumerate
from torch import nn

from ppl_vae.guides import AmortizedNormal
from ppl_vae.models import BernoulliVAE, LinearGaussian


@dataclass
class Pair:
    name: str
    model: object
    guide: object
    x: torch.Tensor
    idx: torch.Tensor
    log_marginal: torch.Tensor | None = None  # exact log p(x) per point
    posterior: str = "other"  # "gaussian": the full-covariance q* contains the exact posterior
    discrete: str | None = None  # a discrete latent site that is not enumerated (tools needing continuous refuse it)
    objectives: tuple = ("trace", "meanfield", "iwae")
    notes: dict = field(default_factory=dict)


def _gaussian_log_prob(x, mean, cov):
    return dist.MultivariateNormal(mean, covariance_matrix=cov).log_prob(x)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ---- linear-Gaussian families ---------------------------------------------------------------------------------
def linear_gaussian() -> Pair:
    model = LinearGaussian(5, 2, noise=0.5, seed=1)
    x = model.marginal().sample(torch.Size((6,))).detach()
    idx = torch.arange(100, 106)
    return Pair("linear_gaussian", model, AmortizedNormal.for_model(model, x, idx, hidden=(8,)), x, idx,
                model.log_marginal(x).detach(), "gaussian")


class TwoLevel(nn.Module):
    """z1 (3-D) -> z2 (2-D) -> x (8-D), Gaussian likelihood with a learned scale: two sites, correlated posterior."""

    def __init__(self):
        super().__init__()
        g = _gen(2)
        self.A = nn.Parameter(torch.randn(2, 3, generator=g))
        self.B = nn.Parameter(torch.randn(8, 2, generator=g))
        self.c = nn.Parameter(0.3 * torch.randn(8, generator=g))
        self.log_sigma = nn.Parameter(torch.tensor(math.log(0.4)))

    def forward(self, x, idx=None):
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", dist.Normal(torch.zeros(3), 1.0).to_event(1))
            z2 = pyro.sample("z2", dist.Normal(z1 @ self.A.T, 0.5).to_event(1))
            pyro.sample("x", dist.Normal(z2 @ self.B.T + self.c, self.log_sigma.exp()).to_event(1), obs=x)

    def log_marginal(self, x):
        cov2 = self.A @ self.A.T + 0.25 * torch.eye(2)
        cov = self.B @ cov2 @ self.B.T + self.log_sigma.exp() ** 2 * torch.eye(8)
        return _gaussian_log_prob(x, self.c, cov)


def two_level() -> Pair:
    model = TwoLevel()
    with torch.no_grad():
        cov2 = model.A @ model.A.T + 0.25 * torch.eye(2)
        x = dist.MultivariateNormal(model.c, model.B @ cov2 @ model.B.T + 0.16 * torch.eye(8)).sample((6,))
    idx = torch.arange(6)
    return Pair("two_level", model, AmortizedNormal.for_model(model, x, idx, hidden=(8,)), x, idx,
                model.log_marginal(x).detach(), "gaussian")


class StructuredGuide(nn.Module):
    """A non-mean-field guide of :class:`TwoLevel`: ``z2 | z1, x`` depends on the sampled ``z1``."""

    def __init__(self):
        super().__init__()
        self.net1, self.net2 = nn.Linear(8, 6), nn.Linear(8 + 3, 4)

    def forward(self, x, idx=None):
        with pyro.plate("data", x.shape[0]):
            h = self.net1(x)
            z1 = pyro.sample("z1", dist.Normal(h[..., :3], nn.functional.softplus(h[..., 3:]) + 1e-3).to_event(1))
            h2 = self.net2(torch.cat([x.expand(*z1.shape[:-1], 8), z1], -1))
            pyro.sample("z2", dist.Normal(h2[..., :2], nn.functional.softplus(h2[..., 2:]) + 1e-3).to_event(1))


def structured_guide() -> Pair:
    pair = two_level()
    return Pair("structured_guide", pair.model, StructuredGuide(), pair.x, pair.idx, pair.log_marginal, "gaussian")


class IdxOffsets(nn.Module):
    """A known per-point offset and noise level, looked up by the points' own indices."""

    def __init__(self, total: int = 50):
        super().__init__()
        g = _gen(3)
        self.W = nn.Parameter(torch.randn(4, 2, generator=g))
        self.register_buffer("offsets", 3 * torch.randn(total, 4, generator=g))
        self.register_buffer("noise", 0.2 + torch.rand(total, generator=g))

    def forward(self, x, idx=None):
        idx = torch.arange(x.shape[0]) if idx is None else idx
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.offsets[idx], self.noise[idx, None]).to_event(1), obs=x)

    def log_marginal(self, x, idx):
        cov = self.W @ self.W.T + self.noise[idx, None, None] ** 2 * torch.eye(4)
        return _gaussian_log_prob(x, self.offsets[idx], cov)


def idx_offsets() -> Pair:
    model = IdxOffsets()
    idx = torch.tensor([41, 3, 17, 29, 8, 33])
    with torch.no_grad():
        cov = model.W @ model.W.T + model.noise[idx, None, None] ** 2 * torch.eye(4)
        x = dist.MultivariateNormal(model.offsets[idx], cov).sample()
    return Pair("idx_offsets", model, AmortizedNormal.for_model(model, x, idx, hidden=(8,)), x, idx,
                model.log_marginal(x, idx).detach(), "gaussian")


class MatrixLatent(nn.Module):
    """A matrix-shaped latent ``Z (2, 3)`` (``.to_event(2)``), observed through ``vec(A Z B)`` plus noise."""

    def __init__(self):
        super().__init__()
        g = _gen(4)
        self.A, self.B = nn.Parameter(torch.randn(2, 2, generator=g)), nn.Parameter(torch.randn(3, 3, generator=g))

    def forward(self, x, idx=None):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("Z", dist.Normal(torch.zeros(2, 3), 1.0).to_event(2))
            mean = (self.A @ z @ self.B).reshape(*z.shape[:-2], 6)
            pyro.sample("x", dist.Normal(mean, 0.5).to_event(1), obs=x)

    def loading(self):
        return torch.stack([(self.A @ e.reshape(2, 3) @ self.B).reshape(6) for e in torch.eye(6)], -1)

    def log_marginal(self, x):
        m = self.loading()
        return _gaussian_log_prob(x, torch.zeros(6), m @ m.T + 0.25 * torch.eye(6))


def matrix_latent() -> Pair:
    model = MatrixLatent()
    with torch.no_grad():
        m = model.loading()
        x = dist.MultivariateNormal(torch.zeros(6), m @ m.T + 0.25 * torch.eye(6)).sample((5,))
    idx = torch.arange(5)
    return Pair("matrix_latent", model, AmortizedNormal.for_model(model, x, idx, hidden=(8,)), x, idx,
                model.log_marginal(x).detach(), "gaussian")


class NestedPlates(nn.Module):
    """``x (N, 4, 3)`` under plates nested in the data plate, which sits at ``dim=-3``; one 2-D latent per point."""

    def __init__(self):
        super().__init__()
        self.W = nn.Parameter(torch.randn(4, 3, 2, generator=_gen(5)))

    def forward(self, x, idx=None):
        with pyro.plate("data", x.shape[0], dim=-3):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))  # batch (N, 1, 1)
            with pyro.plate("rows", 4, dim=-2), pyro.plate("cols", 3, dim=-1):
                pyro.sample("x", dist.Normal(torch.einsum("ijk,...k->...ij", self.W, z[..., 0, 0, :]), 0.5), obs=x)

    def log_marginal(self, x):
        m = self.W.reshape(12, 2)
        return _gaussian_log_prob(x.reshape(-1, 12), torch.zeros(12), m @ m.T + 0.25 * torch.eye(12))


def nested_plates() -> Pair:
    model = NestedPlates()
    with torch.no_grad():
        m = model.W.reshape(12, 2)
        x = dist.MultivariateNormal(torch.zeros(12), m @ m.T + 0.25 * torch.eye(12)).sample((5,)).reshape(5, 4, 3)
    idx = torch.arange(5)
    return Pair("nested_plates", model, AmortizedNormal.for_model(model, x, idx, hidden=(8,)), x, idx,
                model.log_marginal(x).detach(), "gaussian")


class Subsampled(nn.Module):
    """``pyro.plate("data", 40, subsample=idx)``: the model sees a subsample of a 40-point data set."""

    def __init__(self):
        super().__init__()
        self.W = nn.Parameter(torch.randn(3, 2, generator=_gen(6)))

    def forward(self, x, idx=None):
        with pyro.plate("data", 40, subsample=idx):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T, 0.5).to_event(1), obs=x)

    def log_marginal(self, x):
        return _gaussian_log_prob(x, torch.zeros(3), self.W @ self.W.T + 0.25 * torch.eye(3))


def subsampled() -> Pair:
    model = Subsampled()
    with torch.no_grad():
        x = dist.MultivariateNormal(torch.zeros(3), model.W @ model.W.T + 0.25 * torch.eye(3)).sample((5,))
    idx = torch.tensor([2, 9, 13, 27, 38])
    return Pair("subsampled", model, AmortizedNormal.for_model(model, x, idx, hidden=(8,)), x, idx,
                model.log_marginal(x).detach(), "gaussian")


class MaskedLatent(nn.Module):
    """``Normal(...).mask(m).to_event(1)``, as in Pyro's deep Markov model: per point, latent entries past its
    "length" are masked out and affect nothing observed."""

    def __init__(self, total: int = 20):
        super().__init__()
        self.W = nn.Parameter(torch.randn(4, 3, generator=_gen(7)))
        self.register_buffer("lengths", torch.randint(1, 4, (total,), generator=_gen(8)))

    def mask(self, idx):
        return torch.arange(3) < self.lengths[idx, None]

    def forward(self, x, idx=None):
        idx = torch.arange(x.shape[0]) if idx is None else idx
        m = self.mask(idx)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).mask(m).to_event(1))
            pyro.sample("x", dist.Normal((z * m) @ self.W.T, 0.5).to_event(1), obs=x)

    def log_marginal(self, x, idx):
        wm = self.W[None] * self.mask(idx)[:, None, :].to(self.W.dtype)
        return _gaussian_log_prob(x, torch.zeros(4), wm @ wm.transpose(-1, -2) + 0.25 * torch.eye(4))


class MaskedGuide(nn.Module):
    """The masked model's guide, masking the same entries (as the deep Markov model's guide does)."""

    def __init__(self, model):
        super().__init__()
        self.net, self._model = nn.Linear(4, 6), [model]

    def forward(self, x, idx=None):
        idx = torch.arange(x.shape[0]) if idx is None else idx
        h = self.net(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(h[..., :3], nn.functional.softplus(h[..., 3:]) + 1e-3)
                        .mask(self._model[0].mask(idx)).to_event(1))


def masked() -> Pair:
    model = MaskedLatent()
    idx = torch.tensor([0, 5, 7, 11, 19])
    with torch.no_grad():
        wm = model.W[None] * model.mask(idx)[:, None, :].to(model.W.dtype)
        x = dist.MultivariateNormal(torch.zeros(4), wm @ wm.transpose(-1, -2) + 0.25 * torch.eye(4)).sample()
    return Pair("masked", model, MaskedGuide(model), x, idx, model.log_marginal(x, idx).detach(), "gaussian")


# ---- constrained supports and integer data -----------------------------------------------------------------------
class GammaScale(nn.Module):
    """A positive precision per point, ``tau ~ Gamma(3, 2)``, and ``x_d ~ Normal(mu, 1/sqrt(tau))``: the marginal is a
    Student-t in closed form."""

    a, b, d = 3.0, 2.0, 4

    def __init__(self):
        super().__init__()
        self.mu = nn.Parameter(torch.tensor(0.5))

    def forward(self, x, idx=None):
        with pyro.plate("data", x.shape[0]):
            tau = pyro.sample("tau", dist.Gamma(self.a, self.b))
            scale = tau.rsqrt()[..., None].expand(*tau.shape, self.d)
            pyro.sample("x", dist.Normal(self.mu, scale).to_event(1), obs=x)

    def log_marginal(self, x):
        a, b, d = self.a, self.b, self.d
        s = ((x - self.mu) ** 2).sum(-1)
        return (a * math.log(b) - math.lgamma(a) - 0.5 * d * math.log(2 * math.pi) + math.lgamma(a + d / 2)
                - (a + d / 2) * torch.log(b + s / 2))


def gamma_scale() -> Pair:
    model = GammaScale()
    with torch.no_grad():
        tau = dist.Gamma(3.0, 2.0).sample((6,))
        x = 0.5 + torch.randn(6, 4, generator=_gen(9)) * tau.rsqrt()[:, None]
    idx = torch.arange(6)
    return Pair("gamma_scale", model, AmortizedNormal.for_model(model, x, idx, hidden=(8,)), x, idx,
                model.log_marginal(x).detach(), "other")


class DirichletCounts(nn.Module):
    """A simplex per point, ``theta ~ Dirichlet(alpha)``, and ``x ~ Multinomial(20, theta)`` counts as ``int64``."""

    alpha = (2.0, 1.0, 3.0)

    def forward(self, x, idx=None):
        with pyro.plate("data", x.shape[0]):
            theta = pyro.sample("theta", dist.Dirichlet(torch.tensor(self.alpha)))
            pyro.sample("x", dist.Multinomial(20, theta), obs=x)

    def log_marginal(self, x):
        alpha = torch.tensor(self.alpha)
        x = x.to(alpha.dtype)
        return (torch.lgamma(x.sum(-1) + 1) - torch.lgamma(x + 1).sum(-1) + torch.lgamma(alpha.sum())
                - torch.lgamma(x.sum(-1) + alpha.sum()) + (torch.lgamma(x + alpha) - torch.lgamma(alpha)).sum(-1))


def dirichlet_counts() -> Pair:
    model = DirichletCounts()
    theta = dist.Dirichlet(torch.tensor(model.alpha)).sample((6,))
    x = dist.Multinomial(20, theta).sample().long()
    idx = torch.arange(6)
    return Pair("dirichlet_counts", model, AmortizedNormal.for_model(model, x, idx, hidden=(8,)), x, idx,
                model.log_marginal(x).detach(), "other", objectives=("trace", "iwae"))


class PoissonRates(nn.Module):
    """A positive rate per point, ``lambda ~ Gamma(2, 0.5)``, and counts ``x_d ~ Poisson(lambda)`` as ``int64``."""

    a, b, d = 2.0, 0.5, 5

    def forward(self, x, idx=None):
        with pyro.plate("data", x.shape[0]):
            rate = pyro.sample("rate", dist.Gamma(self.a, self.b))
            pyro.sample("x", dist.Poisson(rate[..., None].expand(*rate.shape, self.d)).to_event(1), obs=x)

    def log_marginal(self, x):
        a, b, d = self.a, self.b, self.d
        xf = x.to(torch.get_default_dtype())
        s = xf.sum(-1)
        return (a * math.log(b) - math.lgamma(a) + torch.lgamma(a + s) - (a + s) * math.log(b + d)
                - torch.lgamma(xf + 1).sum(-1))


def poisson_rates() -> Pair:
    model = PoissonRates()
    rate = dist.Gamma(2.0, 0.5).sample((6,))
    x = dist.Poisson(rate[:, None].expand(6, 5)).sample().long()
    idx = torch.arange(6)
    return Pair("poisson_rates", model, AmortizedNormal.for_model(model, x, idx, hidden=(8,)), x, idx,
                model.log_marginal(x).detach(), "other", objectives=("trace", "iwae"))


# ---- discrete latents --------------------------------------------------------------------------------------------
class EnumeratedMixture(nn.Module):
    """A component ``c`` per point, marked for enumeration, then ``z | c ~ N(mu_c, I)`` and ``x | z ~ N(z, 0.5^2 I)``:
    the per-point tools sum ``c`` out; ``log p(x)`` is a two-component Gaussian mixture."""

    def __init__(self):
        super().__init__()
        self.locs = nn.Parameter(torch.tensor([[-2.0, 0.0], [2.0, 1.0]]))
        self.logits = nn.Parameter(torch.tensor([0.3, -0.3]))

    @config_enumerate
    def forward(self, x, idx=None):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Categorical(logits=self.logits))
            z = pyro.sample("z", dist.Normal(self.locs[c], 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=x)

    def log_marginal(self, x):
        comps = dist.Normal(self.locs, math.sqrt(1.25)).to_event(1).log_prob(x[:, None, :])
        return (comps + self.logits.log_softmax(-1)).logsumexp(-1)


def enumerated_mixture() -> Pair:
    model = EnumeratedMixture()
    c = torch.tensor([0, 1, 1, 0, 1, 0])
    with torch.no_grad():
        x = model.locs[c] + math.sqrt(1.25) * torch.randn(6, 2, generator=_gen(10))
    idx = torch.arange(6)
    return Pair("enumerated_mixture", model, AmortizedNormal.for_model(model, x, idx, hidden=(8,)), x, idx,
                model.log_marginal(x).detach(), "other", objectives=("trace_enum",))


class BernoulliLatent(nn.Module):
    """Three binary latents per point (``Bernoulli(0.3).to_event(1)``, not enumerated) and a Gaussian likelihood:
    ``log p(x)`` by exhaustive enumeration of the 8 configurations."""

    def __init__(self):
        super().__init__()
        self.W = nn.Parameter(2 * torch.randn(4, 3, generator=_gen(11)))

    def forward(self, x, idx=None):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("b", dist.Bernoulli(torch.full((3,), 0.3)).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T, 0.5).to_event(1), obs=x)

    def log_marginal(self, x):
        configs = torch.tensor([[(k >> j) & 1 for j in range(3)] for k in range(8)], dtype=x.dtype)
        prior = dist.Bernoulli(torch.full((3,), 0.3)).to_event(1).log_prob(configs)
        lik = dist.Normal(configs @ self.W.T, 0.5).to_event(1).log_prob(x[:, None, :])
        return (prior + lik).logsumexp(-1)


class BernoulliEncoder(nn.Module):
    """A user's guide for the binary latents: independent Bernoullis with logits from an MLP."""

    def __init__(self):
        super().__init__()
        self.net = nn.Linear(4, 3)

    def forward(self, x, idx=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("b", dist.Bernoulli(logits=self.net(x)).to_event(1))


def bernoulli_latent() -> Pair:
    model = BernoulliLatent()
    z = torch.bernoulli(torch.full((6, 3), 0.3), generator=_gen(12))
    with torch.no_grad():
        x = z @ model.W.T + 0.5 * torch.randn(6, 4, generator=_gen(13))
    idx = torch.arange(6)
    return Pair("bernoulli_latent", model, BernoulliEncoder(), x, idx, model.log_marginal(x).detach(), "other",
                discrete="b", objectives=("trace",))


# ---- our own VAE and function-style pairs ----------------------------------------------------------------------------
def bernoulli_vae() -> Pair:
    model = BernoulliVAE(x_dim=16, z_dim=2, hidden=(8,))
    x = torch.bernoulli(torch.full((5, 16), 0.4), generator=_gen(14))
    idx = torch.arange(5)
    return Pair("bernoulli_vae", model, AmortizedNormal.for_model(model, x, idx, hidden=(8,)), x, idx,
                _vae_quadrature(model, x), "other")


def _vae_quadrature(model, x, grid: int = 400, lim: float = 7.0):
    """log p(x) of a 2-D latent model by quadrature on a grid (the prior's mass outside [-7, 7]^2 is < 1e-11)."""
    t = torch.linspace(-lim, lim, grid)
    z = torch.stack(torch.meshgrid(t, t, indexing="xy"), -1).reshape(-1, 2)
    with torch.no_grad():
        logits = model.decoder(z)
        lik = dist.Bernoulli(logits=logits[:, None, :]).log_prob(x).sum(-1)  # (G*G, N)
        prior = dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
    cell = (t[1] - t[0]) ** 2
    return (lik + prior[:, None]).logsumexp(0) + cell.log()


def function_style() -> Pair:
    """A model and guide written as functions with ``pyro.param`` (no nn.Module): a 1-D Gaussian location model."""

    def model(x, idx=None):
        w = pyro.param("fs_w", torch.tensor([1.0, -0.5, 2.0]))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z[..., None] * w, 0.7).to_event(1), obs=x)

    def guide(x, idx=None):
        a = pyro.param("fs_a", torch.zeros(3))
        s = pyro.param("fs_s", torch.tensor(0.5), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x @ a, s))

    w = torch.tensor([1.0, -0.5, 2.0])
    cov = w[:, None] * w[None, :] + 0.49 * torch.eye(3)
    x = dist.MultivariateNormal(torch.zeros(3), cov).sample((6,))
    return Pair("function_style", model, guide, x, torch.arange(6), _gaussian_log_prob(x, torch.zeros(3), cov),
                "gaussian")


# ---- following Pyro's examples ---------------------------------------------------------------------------------------
class PyroExampleVAE(nn.Module):
    """The structure of Pyro's ``examples/vae/vae.py``: encoder/decoder MLPs registered with ``pyro.module`` inside
    ``model`` and ``guide``, a ``latent`` site, a Bernoulli ``obs``; adaptation: ``(x, idx=None)``."""

    def __init__(self, x_dim=16, z_dim=2, hidden=8):
        super().__init__()
        self.z_dim = z_dim
        self.enc_hidden, self.enc_loc, self.enc_scale = nn.Linear(x_dim, hidden), nn.Linear(hidden, z_dim), \
            nn.Linear(hidden, z_dim)
        self.dec = nn.Sequential(nn.Linear(z_dim, hidden), nn.Softplus(), nn.Linear(hidden, x_dim), nn.Sigmoid())

    def model(self, x, idx=None):
        pyro.module("decoder", self.dec)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("latent", dist.Normal(x.new_zeros(x.shape[0], self.z_dim), 1.0).to_event(1))
            probs = (self.dec(z) + 1e-7) * (1 - 2e-7)
            pyro.sample("obs", dist.Bernoulli(probs).to_event(1), obs=x)

    def guide(self, x, idx=None):
        pyro.module("enc_hidden", self.enc_hidden)
        pyro.module("enc_loc", self.enc_loc)
        pyro.module("enc_scale", self.enc_scale)
        with pyro.plate("data", x.shape[0]):
            h = nn.functional.softplus(self.enc_hidden(x))
            pyro.sample("latent", dist.Normal(self.enc_loc(h), torch.exp(self.enc_scale(h))).to_event(1))


def pyro_vae() -> Pair:
    vae = PyroExampleVAE()
    x = torch.bernoulli(torch.full((5, 16), 0.4), generator=_gen(15))
    return Pair("pyro_vae", vae.model, vae.guide, x, torch.arange(5), None, "other",
                notes={"module": vae})


class PyroExampleSSVAE(nn.Module):
    """The structure of Pyro's M2 semi-supervised VAE (``examples/vae/ss_vae_M2.py``), unlabelled data: class ``y``
    (one-hot) and style ``z`` in the model, a classifier and an encoder of ``(x, y)`` in the guide."""

    def __init__(self, x_dim=16, z_dim=2, classes=3, hidden=8, broadcasting_guide=True):
        super().__init__()
        self.z_dim, self.classes, self.broadcasting_guide = z_dim, classes, broadcasting_guide
        self.dec = nn.Sequential(nn.Linear(z_dim + classes, hidden), nn.Softplus(), nn.Linear(hidden, x_dim),
                                 nn.Sigmoid())
        self.clf = nn.Sequential(nn.Linear(x_dim, hidden), nn.Softplus(), nn.Linear(hidden, classes))
        self.enc = nn.Sequential(nn.Linear(x_dim + classes, hidden), nn.Softplus(), nn.Linear(hidden, 2 * z_dim))

    def model(self, x, idx=None):
        pyro.module("ss_vae", self)
        with pyro.plate("data", x.shape[0]):
            prior = x.new_ones(x.shape[0], self.classes) / self.classes
            y = pyro.sample("y", dist.OneHotCategorical(prior), infer={"enumerate": "parallel"})
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], self.z_dim), 1.0).to_event(1))
            probs = (self.dec(torch.cat(_cat(z, y), -1)) + 1e-7) * (1 - 2e-7)
            pyro.sample("x", dist.Bernoulli(probs).to_event(1), obs=x)

    def guide(self, x, idx=None):
        pyro.module("ss_vae", self)
        with pyro.plate("data", x.shape[0]):
            alpha = self.clf(x).softmax(-1)
            y = pyro.sample("y", dist.OneHotCategorical(alpha))
            xs = x.expand(*y.shape[:-1], x.shape[-1]) if self.broadcasting_guide else x
            h = self.enc(torch.cat([xs, y], -1))
            pyro.sample("z", dist.Normal(h[..., : self.z_dim], h[..., self.z_dim:].exp()).to_event(1))


def _cat(z, y):
    shape = torch.broadcast_shapes(z.shape[:-1], y.shape[:-1])
    return [z.expand(*shape, z.shape[-1]), y.expand(*shape, y.shape[-1])]


def pyro_ss_vae(broadcasting_guide: bool = True) -> Pair:
    ss = PyroExampleSSVAE(broadcasting_guide=broadcasting_guide)
    x = torch.bernoulli(torch.full((5, 16), 0.4), generator=_gen(16))
    name = "pyro_ss_vae" if broadcasting_guide else "pyro_ss_vae_as_shipped"
    return Pair(name, ss.model, ss.guide, x, torch.arange(5), None, "other", objectives=("trace",),
                notes={"module": ss})


PAIRS = {f.__name__: f for f in (linear_gaussian, two_level, structured_guide, idx_offsets, matrix_latent,
                                  nested_plates, subsampled, masked, gamma_scale, dirichlet_counts, poisson_rates,
                                  enumerated_mixture, bernoulli_latent, bernoulli_vae, function_style, pyro_vae,
                                  pyro_ss_vae)}
