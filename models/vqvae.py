"""The vector-quantized VAE (VQ-VAE, van den Oord, Vinyals & Kavukcuoglu 2017) for flat images.

An encoder maps ``x (N, 784)`` to ``L`` continuous vectors :math:`z_e(x) \\in \\mathbb{R}^{L \\times D}`; each is
replaced by its nearest entry of a codebook :math:`e \\in \\mathbb{R}^{K \\times D}`,

.. math:: k_l(x) = \\arg\\min_k \\|z_{e,l}(x) - e_k\\|_2, \\qquad z_{q,l}(x) = e_{k_l(x)},

and a decoder maps :math:`z_q` to Bernoulli logits. The argmin has no gradient, so the decoder's input is the
straight-through estimate ``z_e + (z_q - z_e).detach()`` (value :math:`z_q`, gradient passed to :math:`z_e`).
The loss per data point is

.. math:: -\\log p(x | z_q(x)) + \\|\\mathrm{sg}[z_e(x)] - e\\|_2^2 + \\beta \\|z_e(x) - \\mathrm{sg}[e]\\|_2^2,

the reconstruction term, the **codebook** loss (moves the chosen codes towards the encoder outputs: the only
gradient the codebook gets) and the **commitment** loss (keeps the encoder near its codes), ``beta = 0.25``.
The two VQ terms have the same value and different gradients.

**As a Pyro model.** The posterior of the paper is deterministic, ``q(k | x)`` one-hot at ``k(x)``, and the prior
uniform over codes, so the KL term is the constant ``L log K`` and is dropped. :meth:`VQVAE.model` therefore has
*no latent sample site*: it computes the quantized code from ``x`` as a deterministic input, observes
``x ~ Bernoulli(logits=decoder(z_q)).to_event(1)`` in plate ``data`` and adds the two VQ terms as a
``pyro.factor`` site ``vq_penalty`` (a training penalty, *not* a log density). With the empty guide
:func:`~models.gmm.empty_guide`, Pyro's ``Trace_ELBO`` loss equals :meth:`VQVAE.loss`'s total, so the library's
:class:`~ppl_vae.training.trainer.Trainer` trains it too; :func:`ppl_vae.training.train_vqvae` is a plain Adam loop that also records the
reconstruction term and the codebook perplexity. Estimators of ``log p(x)`` do not apply (there is no latent
site, and the factor is not normalized); report :meth:`VQVAE.loss`'s ``recon_nll``.

The prior used for generation is fitted after training (the paper fits an autoregressive PixelCNN over codes);
here :meth:`VQVAE.fit_prior` fits the simplest one, an independent categorical per latent position.

References:

1. A. van den Oord, O. Vinyals, K. Kavukcuoglu (2017). Neural Discrete Representation Learning. NeurIPS.
2. Y. Bengio, N. Léonard, A. Courville (2013). Estimating or Propagating Gradients Through Stochastic Neurons
   (the straight-through estimator).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ppl_vae.conventions import DATA_PLATE
from ppl_vae.data.splits import check_images
from ppl_vae.nn import mlp

__all__ = ["VQVAE", "VQLoss", "CodebookUsage", "perplexity"]


class VQLoss(NamedTuple):
    """Scalar terms of the VQ-VAE loss, each a mean over the batch of per-point values (nats for ``recon_nll``)."""

    total: torch.Tensor
    recon_nll: torch.Tensor
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor


class CodebookUsage(NamedTuple):
    """``counts (K,)``: how often each code is chosen, over all points and latent positions; ``perplexity``:
    ``exp`` of the entropy of the usage frequencies, in ``[1, K]`` (the effective number of codes used)."""

    counts: torch.Tensor
    perplexity: float


def perplexity(counts: torch.Tensor) -> float:
    """``exp(-sum_k p_k log p_k)`` with ``p = counts / counts.sum()`` (``0 log 0 = 0``): ``m`` when ``m`` codes are
    used equally often, ``1`` when one code is used.

    :param counts: ``(K,)`` non-negative.
    :raises ValueError: if ``counts`` is not ``(K,)``, non-negative with a positive sum.
    """
    if counts.dim() != 1 or (counts < 0).any() or counts.sum() <= 0:
        raise ValueError(f"Expected counts of shape (K,), non-negative with a positive sum, got {counts.tolist()}")
    p = counts.double() / counts.sum()
    return math.exp(-torch.special.xlogy(p, p).sum().item())


class VQVAE(nn.Module):
    """A VQ-VAE with MLP encoder and decoder and a Bernoulli likelihood; ``model(x, idx=None)`` is its Pyro model.

    Sample sites of :meth:`model` (in plate ``data``):

    - ``vq_penalty``: ``pyro.factor`` of ``-(codebook_loss + beta * commitment_loss)``, shape ``(N,)``;
    - ``x``: observed, ``Bernoulli(logits=decoder(z_q))`` with ``event_dim=1``, shape ``(N, x_dim)``.

    :param int x_dim: pixels per image (784).
    :param int num_latents: ``L``, code vectors per image.
    :param int code_dim: ``D``, size of each code vector.
    :param int num_codes: ``K``, codebook size.
    :param tuple hidden: encoder hidden sizes (the decoder uses them reversed).
    :param float beta: commitment weight (0.25, the paper's value).
    :param str activation: ``"elu"`` (default), ``"relu"``, ``"tanh"``, ``"softplus"``.
    :raises ValueError: if a size is below 1 or ``beta < 0``.

    Example::

        >>> from ppl_vae.data import ImageSet, load_splits, make_loader
        >>> from ppl_vae.models import VQVAE
        >>> from ppl_vae.training import train_vqvae
        >>> splits = load_splits(valid_size=0)
        >>> train = ImageSet(splits.train.x[:500], splits.train.labels[:500])
        >>> vq = VQVAE(num_latents=8, code_dim=16, num_codes=64)
        >>> history = train_vqvae(vq, make_loader(train, 100), epochs=1)
        >>> codes = vq.encode_indices(splits.test.x)            # long in [0, 64)
        >>> codes.shape, bool((codes >= 0).all() and (codes < 64).all())
        (torch.Size([1000, 8]), True)
        >>> vq.sample(16, prior=vq.fit_prior(train.x)).shape
        torch.Size([16, 784])
    """

    def __init__(self, x_dim: int = 784, num_latents: int = 8, code_dim: int = 16, num_codes: int = 64,
                 hidden: tuple[int, ...] = (512, 256), beta: float = 0.25, activation: str = "elu"):
        super().__init__()
        sizes = {"x_dim": x_dim, "num_latents": num_latents, "code_dim": code_dim, "num_codes": num_codes}
        for name, value in sizes.items():
            if value < 1:
                raise ValueError(f"Expected {name} >= 1, got {value}")
        if beta < 0:
            raise ValueError(f"Expected beta >= 0, got {beta}")
        self.x_dim, self.num_latents, self.code_dim, self.num_codes = x_dim, num_latents, code_dim, num_codes
        self.beta = beta
        self.encoder = mlp(x_dim, tuple(hidden), num_latents * code_dim, activation)
        self.codebook = nn.Embedding(num_codes, code_dim)
        nn.init.uniform_(self.codebook.weight, -1.0 / num_codes, 1.0 / num_codes)  # small codes, as common implementations
        self.decoder = mlp(num_latents * code_dim, tuple(reversed(hidden)), x_dim, activation)

    # -- the pieces -------------------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Continuous encoder outputs ``z_e (N, L, D)`` for ``x (N, x_dim)``."""
        return self.encoder(x).reshape(x.shape[0], self.num_latents, self.code_dim)

    def nearest_codes(self, z_e: torch.Tensor) -> torch.Tensor:
        """Index of the nearest codebook entry in Euclidean distance: ``(N, L)`` long for ``z_e (N, L, D)``
        (ties go to the lowest index)."""
        e = self.codebook.weight
        d2 = z_e.pow(2).sum(-1, keepdim=True) - 2 * z_e @ e.T + e.pow(2).sum(-1)  # (N, L, K)
        return d2.argmin(-1)

    def _quantize(self, x: torch.Tensor):
        z_e = self.encode(x)
        codes = self.nearest_codes(z_e.detach())
        z_q = self.codebook(codes)
        z_st = z_e + (z_q - z_e).detach()  # straight-through: value z_q, gradient to z_e
        codebook = (z_e.detach() - z_q).pow(2).sum((-2, -1))  # (N,): gradient to the codebook only
        commitment = (z_e - z_q.detach()).pow(2).sum((-2, -1))  # (N,): gradient to the encoder only
        return codes, z_st, codebook, commitment

    def _likelihood(self, z: torch.Tensor) -> dist.Distribution:
        # validate_args=False: intensities in [0, 1] are scored as cross-entropy, as in BernoulliVAE
        return dist.Bernoulli(logits=self.decoder(z.reshape(z.shape[0], -1)), validate_args=False).to_event(1)

    # -- the Pyro model and the loss ----------------------------------------------------------------------------
    def model(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """The Pyro model (see the module docs): quantized code as a deterministic input, observed ``x``, VQ terms
        as a factor.

        :param x: ``(N, x_dim)`` in [0, 1].
        :param idx: unused.
        :returns: ``codes (N, L)``.
        :raises DataError: for data the likelihood cannot score (:func:`~ppl_vae.data.check_images`).
        """
        x = check_images(x, self.x_dim)
        codes, z_st, codebook, commitment = self._quantize(x)
        with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
            pyro.factor("vq_penalty", -(codebook + self.beta * commitment))
            pyro.sample("x", self._likelihood(z_st), obs=x)
        return codes

    def forward(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`model`, so that the module itself is the Pyro model."""
        return self.model(x, idx)

    def loss(self, x: torch.Tensor) -> VQLoss:
        """The VQ-VAE objective on ``x (N, x_dim)`` in [0, 1]: ``(total, recon_nll, codebook_loss,
        commitment_loss)``, scalars averaged over the ``N`` points, ``total = recon + codebook + beta * commitment``."""
        return self._loss_and_codes(x)[0]

    def _loss_and_codes(self, x: torch.Tensor) -> tuple[VQLoss, torch.Tensor]:
        x = check_images(x, self.x_dim)
        codes, z_st, codebook, commitment = self._quantize(x)
        recon = -self._likelihood(z_st).log_prob(x)
        total = recon + codebook + self.beta * commitment
        return VQLoss(total.mean(), recon.mean(), codebook.mean(), commitment.mean()), codes

    # -- codes ------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_indices(self, x: torch.Tensor) -> torch.Tensor:
        """Codes of ``x (N, x_dim)``: ``(N, L)`` long in ``[0, K)``."""
        return self.nearest_codes(self.encode(check_images(x, self.x_dim)))

    @torch.no_grad()
    def decode_indices(self, codes: torch.Tensor, probs: bool = True) -> torch.Tensor:
        """Images for ``codes (N, L)`` (long in ``[0, K)``): pixel probabilities ``(N, x_dim)``, or binary samples
        if ``probs=False``.

        :raises ValueError: if ``codes`` is not ``(N, L)`` ``long`` in ``[0, K)``.
        """
        if codes.dim() != 2 or codes.shape[1] != self.num_latents or codes.dtype != torch.long:
            raise ValueError(f"Expected codes of shape (N, {self.num_latents}) and dtype torch.long, got shape "
                             f"{tuple(codes.shape)} and dtype {codes.dtype}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.num_codes):
            raise ValueError(f"Expected codes in [0, {self.num_codes}), got values in "
                             f"[{codes.min().item()}, {codes.max().item()}]")
        mean = torch.sigmoid(self.decoder(self.codebook(codes).reshape(codes.shape[0], -1)))
        return mean if probs else torch.bernoulli(mean)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel probabilities ``(N, x_dim)`` of ``x`` passed through the codes."""
        return self.decode_indices(self.encode_indices(x))

    @torch.no_grad()
    def codebook_usage(self, x: torch.Tensor) -> CodebookUsage:
        """How often each code is chosen on ``x (N, x_dim)``: counts ``(K,)`` summing to ``N * L``, and their
        :func:`perplexity`."""
        counts = torch.bincount(self.encode_indices(x).flatten(), minlength=self.num_codes)
        return CodebookUsage(counts, perplexity(counts))

    # -- priors over codes and sampling -----------------------------------------------------------------------------
    def uniform_prior(self) -> dist.Distribution:
        """The training-time prior: every code equally likely at each position, event shape ``(L,)``."""
        logits = self.codebook.weight.new_zeros(self.num_latents, self.num_codes)
        return dist.Categorical(logits=logits).to_event(1)

    @torch.no_grad()
    def fit_prior(self, x: torch.Tensor, pseudocount: float = 0.0) -> dist.Distribution:
        """The maximum-likelihood prior with one independent categorical per latent position: the frequency of code
        ``k`` at position ``l`` among the codes of ``x (N, x_dim)`` (plus ``pseudocount``). Event shape ``(L,)``;
        ``.base_dist.probs`` is ``(L, K)``.

        :raises ValueError: if ``pseudocount < 0`` or ``x`` holds no image.
        """
        if pseudocount < 0:
            raise ValueError(f"Expected pseudocount >= 0, got {pseudocount}")
        codes = self.encode_indices(x)  # (N, L)
        if codes.shape[0] == 0:
            raise ValueError("Expected at least one image to fit the prior to, got x of shape (0, ...)")
        counts = torch.zeros(self.num_latents, self.num_codes, dtype=self.codebook.weight.dtype, device=codes.device)
        counts.scatter_add_(1, codes.T, torch.ones_like(codes.T, dtype=counts.dtype))
        counts += pseudocount
        return dist.Categorical(probs=counts / counts.sum(-1, keepdim=True)).to_event(1)

    @torch.no_grad()
    def sample(self, num: int, prior: dist.Distribution | None = None, probs: bool = False) -> torch.Tensor:
        """``num`` images ``(num, x_dim)`` in [0, 1]: codes drawn from ``prior`` (default :meth:`uniform_prior`;
        e.g. :meth:`fit_prior`), decoded; binary samples, or pixel probabilities if ``probs=True``.

        :raises ValueError: if ``prior`` does not draw ``(num, L)`` codes.
        """
        prior = self.uniform_prior() if prior is None else prior
        codes = prior.sample((num,))
        if codes.shape != (num, self.num_latents):
            raise ValueError(f"Expected a prior over codes with event shape ({self.num_latents},) and no batch shape, "
                             f"got batch shape {tuple(prior.batch_shape)} and event shape {tuple(prior.event_shape)}")
        return self.decode_indices(codes.long(), probs=probs)


