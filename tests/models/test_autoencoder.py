"""The deterministic autoencoder as a Pyro pair: its Trace_ELBO loss is the reconstruction cross-entropy."""
import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO
from torch.nn.functional import binary_cross_entropy_with_logits

from ppl_vae.conventions import check_pair
from ppl_vae.data.splits import load_splits, make_loader
from ppl_vae.models.autoencoder import Autoencoder, DeltaEncoder, reconstruct
from ppl_vae.training.trainer import Trainer


def test_pair_follows_the_conventions():
    model, guide = Autoencoder(x_dim=10, z_dim=3, hidden=(8,)), DeltaEncoder(x_dim=10, z_dim=3, hidden=(8,))
    x = torch.bernoulli(torch.full((4, 10), 0.5))
    sites = check_pair(model, guide, x)
    assert list(sites) == ["z"] and sites["z"].event_shape == (3,)
    trace = pyro.poutine.trace(pyro.poutine.replay(model, trace=pyro.poutine.trace(guide).get_trace(x))).get_trace(x)
    z = trace.nodes["z"]
    assert torch.equal(z["value"], guide.encode(x))  # the code, without noise
    assert torch.equal(z["fn"].log_prob(z["value"]), torch.zeros(4))  # the flat prior contributes nothing


@pytest.mark.parametrize("binary", [True, False])
def test_trace_elbo_loss_is_the_binary_cross_entropy(binary):
    model, guide = Autoencoder(x_dim=20, z_dim=2, hidden=(16,)), DeltaEncoder(x_dim=20, z_dim=2, hidden=(16,))
    x = torch.rand(7, 20)
    x = torch.bernoulli(x) if binary else x  # continuous intensities are scored as cross-entropy too
    loss = Trace_ELBO().differentiable_loss(model, guide, x)
    bce = binary_cross_entropy_with_logits(model.decoder(guide.encode(x)), x, reduction="sum")
    assert loss.item() == pytest.approx(bce.item(), rel=1e-12)
    # and so are its gradients, for the decoder and (through the point mass) the encoder
    params = [*model.parameters(), *guide.parameters()]
    for g, e in zip(torch.autograd.grad(loss, params), torch.autograd.grad(bce, params)):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


def test_reconstruct_and_decode():
    model, guide = Autoencoder(x_dim=20, z_dim=2, hidden=(16,)), DeltaEncoder(x_dim=20, z_dim=2, hidden=(16,))
    x = torch.rand(5, 20)
    recon = reconstruct(model, guide, x)
    torch.testing.assert_close(recon, torch.sigmoid(model.decoder(guide.encode(x))))
    assert recon.shape == (5, 20) and not recon.requires_grad
    assert model.decode(torch.zeros(3, 7, 2)).shape == (3, 7, 20)  # extra leading dimensions pass through


def test_model_refuses_to_run_without_data():
    with pytest.raises(ValueError, match="Expected data x of shape"):
        Autoencoder(x_dim=20, z_dim=2)(None)


@pytest.fixture
def one_thread():
    """Small MLPs train as fast on one thread, and two threads thrash (10x slower) when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_training_on_the_embedded_data_lowers_the_reconstruction_loss(float32, one_thread):
    torch.manual_seed(0)
    splits = load_splits("fashion-mnist-small", binarize="static", valid_size=500)
    x_eval = splits.valid.x[:200]
    model, guide = Autoencoder(z_dim=2, hidden=(64,)), DeltaEncoder(z_dim=2, hidden=(64,))
    trainer = Trainer(model, guide, Trace_ELBO(), lr=3e-3)
    with torch.no_grad():
        before = Trace_ELBO().loss(model, guide, x_eval) / x_eval.shape[0]
    for step, (x, _, idx) in enumerate(make_loader(splits.train, batch_size=100, seed=0)):
        trainer.step(x, idx)
        if step == 29:
            break
    with torch.no_grad():
        after = Trace_ELBO().loss(model, guide, x_eval) / x_eval.shape[0]
        bce = binary_cross_entropy_with_logits(model.decoder(guide.encode(x_eval)), x_eval, reduction="sum") / 200
    assert after == pytest.approx(bce.item(), rel=1e-5)
    assert after < before - 150, (before, after)  # ~545 -> ~300 nats per image on held-out images
