"""The VQ-VAE: training lowers the loss, straight-through gradients, nearest-code quantization, codebook usage,
priors over codes and sampling, and its Pyro model against its loss."""
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from ppl_vae.conventions import latent_sites
from ppl_vae.data.splits import load_splits, make_loader
from ppl_vae.models.gmm import empty_guide
from ppl_vae.models.vqvae import VQVAE, perplexity
from ppl_vae.training.trainer import Trainer
from ppl_vae.training.vqvae import train_vqvae

SMALL = dict(num_latents=4, code_dim=3, num_codes=10, hidden=(32,))


@pytest.fixture(scope="module")
def splits():
    return load_splits("fashion-mnist-small", binarize="static", valid_size=500)


def _binary(n, d=784, seed=0):
    return torch.bernoulli(torch.full((n, d), 0.3), generator=torch.Generator().manual_seed(seed)).to(torch.get_default_dtype())


def test_training_decreases_the_loss_on_embedded_data(splits, float32):
    torch.manual_seed(0)
    vq = VQVAE(num_latents=8, code_dim=16, num_codes=64, hidden=(256,))
    valid = splits.valid.x.float()
    before = vq.loss(valid)
    history = train_vqvae(vq, make_loader(splits.train, 100, seed=0), epochs=1)
    after = vq.loss(valid)
    # 45 steps: held-out reconstruction 543 -> 388 nats, total 547 -> 409 (measured)
    assert after.recon_nll < before.recon_nll - 100, (before, after)
    assert after.total < before.total - 100, (before, after)
    assert history["epoch"] == [1] and set(history) == {"epoch", "loss", "recon", "perplexity", "seconds"}
    assert 1 < history["perplexity"][0] <= 64 and math.isfinite(history["recon"][0])


def test_straight_through_gradients_reach_the_right_parameters():
    torch.manual_seed(0)
    vq = VQVAE(**SMALL)
    x = _binary(20)
    terms = vq.loss(x)
    encoder, codebook = list(vq.encoder.parameters()), [vq.codebook.weight]

    def grads(term, params):
        return torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)

    # the reconstruction reaches the encoder only through the straight-through estimate, and never the codebook
    assert all(g is not None and g.abs().sum() > 0 for g in grads(terms.recon_nll, encoder))
    assert grads(terms.recon_nll, codebook)[0] is None
    # the codebook loss moves only the codes, the commitment loss only the encoder
    assert grads(terms.codebook_loss, encoder)[0] is None and grads(terms.codebook_loss, codebook)[0].abs().sum() > 0
    assert grads(terms.commitment_loss, codebook)[0] is None and grads(terms.commitment_loss, encoder)[-1].abs().sum() > 0
    # ... and the decoder's input has the value of the quantized code, z_q
    logits = vq.decoder(vq.codebook(vq.encode_indices(x)).reshape(20, -1))
    expected = -dist.Bernoulli(logits=logits).to_event(1).log_prob(x).mean()
    assert terms.recon_nll.item() == pytest.approx(expected.item(), abs=1e-10)
    assert terms.codebook_loss.item() == pytest.approx(terms.commitment_loss.item(), abs=1e-12)
    assert terms.total.item() == pytest.approx((terms.recon_nll + terms.codebook_loss + 0.25 * terms.commitment_loss).item(), abs=1e-10)


def test_quantization_picks_the_nearest_code():
    torch.manual_seed(0)
    vq = VQVAE(**SMALL)
    with torch.no_grad():
        vq.codebook.weight.normal_()
    z_e = torch.randn(30, SMALL["num_latents"], SMALL["code_dim"])
    brute = torch.empty(30, SMALL["num_latents"], dtype=torch.long)
    for n in range(30):
        for l in range(SMALL["num_latents"]):
            distances = [torch.linalg.norm(z_e[n, l] - e).item() for e in vq.codebook.weight]
            brute[n, l] = min(range(len(distances)), key=distances.__getitem__)
    codes = vq.nearest_codes(z_e)
    assert codes.dtype == torch.long and torch.equal(codes, brute)
    assert len(set(brute.flatten().tolist())) > 3  # the check is not passed by one code taking every vector
    x = _binary(30)
    assert torch.equal(vq.encode_indices(x), vq.nearest_codes(vq.encode(x)))


def test_codebook_usage_counts_and_perplexity():
    torch.manual_seed(0)
    vq = VQVAE(**SMALL)
    with torch.no_grad():
        vq.codebook.weight.normal_(0, 0.3)
    x = _binary(50)
    usage = vq.codebook_usage(x)
    assert usage.counts.shape == (10,) and usage.counts.sum().item() == 50 * SMALL["num_latents"]
    assert torch.equal(usage.counts, torch.bincount(vq.encode_indices(x).flatten(), minlength=10))
    p = usage.counts[usage.counts > 0].double() / usage.counts.sum()
    assert usage.perplexity == pytest.approx(math.exp(-(p * p.log()).sum().item()), rel=1e-12)
    assert 1 <= usage.perplexity <= 10
    # limiting cases: m codes used equally often -> m; one code -> 1
    assert perplexity(torch.tensor([5, 5, 5, 5, 0, 0])) == pytest.approx(4.0, rel=1e-12)
    assert perplexity(torch.tensor([0, 7, 0])) == pytest.approx(1.0, rel=1e-12)
    with pytest.raises(ValueError, match="Expected counts"):
        perplexity(torch.tensor([3, -1]))


def test_fitted_prior_is_the_code_frequency_per_position_and_drives_sampling():
    torch.manual_seed(0)
    vq = VQVAE(**SMALL)
    with torch.no_grad():
        vq.codebook.weight.normal_(0, 0.3)
    x = _binary(40)
    prior = vq.fit_prior(x)
    codes = vq.encode_indices(x)
    assert prior.event_shape == (SMALL["num_latents"],) and prior.batch_shape == ()
    for l in range(SMALL["num_latents"]):
        freq = torch.bincount(codes[:, l], minlength=10).double() / 40
        assert torch.allclose(prior.base_dist.probs[l], freq, atol=1e-12)
    # a prior concentrated on one code vector yields exactly that code vector's image
    one = torch.zeros(SMALL["num_latents"], 10)
    target = torch.tensor([3, 0, 9, 3])
    one[torch.arange(4), target] = 1.0
    images = vq.sample(5, prior=dist.Categorical(probs=one).to_event(1), probs=True)
    assert torch.allclose(images, vq.decode_indices(target.expand(5, 4)), atol=0)


@pytest.mark.parametrize("fitted", [False, True])
def test_samples_are_images(fitted):
    torch.manual_seed(0)
    vq = VQVAE(**SMALL)
    prior = vq.fit_prior(_binary(40)) if fitted else None
    binary = vq.sample(7, prior=prior)
    probs = vq.sample(7, prior=prior, probs=True)
    assert binary.shape == probs.shape == (7, 784)
    assert ((binary == 0) | (binary == 1)).all()
    assert (probs >= 0).all() and (probs <= 1).all() and ((probs > 0) & (probs < 1)).any()


def test_pyro_model_is_the_loss_and_trains_with_the_trainer():
    torch.manual_seed(0)
    vq = VQVAE(**SMALL)
    x = _binary(25)
    assert latent_sites(vq, x) == {}
    trace = pyro.poutine.trace(vq.model).get_trace(x)
    assert trace.nodes["x"]["is_observed"] and trace.nodes["vq_penalty"]["fn"].batch_shape == (25,)
    elbo_loss = pyro.infer.Trace_ELBO().differentiable_loss(vq.model, empty_guide, x, None) / 25
    assert elbo_loss.item() == pytest.approx(vq.loss(x).total.item(), abs=1e-10)
    trainer = Trainer(vq, empty_guide, pyro.infer.Trace_ELBO(), lr=1e-2)
    before = vq.codebook.weight.detach().clone()
    losses = [trainer.step(x) for _ in range(20)]
    assert losses[-1] < losses[0] - 50, losses
    assert not torch.equal(before, vq.codebook.weight)  # the factor trains the codebook


def test_errors_name_the_problem():
    vq = VQVAE(**SMALL)
    with pytest.raises(ValueError, match="Expected x with 784 pixels"):
        vq.loss(torch.zeros(3, 100))
    with pytest.raises(ValueError, match=r"Expected codes in \[0, 10\)"):
        vq.decode_indices(torch.tensor([[0, 1, 2, 10]]))
    with pytest.raises(ValueError, match=r"Expected codes of shape \(N, 4\)"):
        vq.decode_indices(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"Expected a prior over codes with event shape \(4,\)"):
        vq.sample(2, prior=dist.Categorical(logits=torch.zeros(5, 10)).to_event(1))
    with pytest.raises(ValueError, match="Expected num_codes >= 1"):
        VQVAE(num_codes=0)
