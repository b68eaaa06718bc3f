"""The PyTorch baseline's training iterations: the reference's `optimize_parameters` of Pix2Pix
and CycleGAN (with its image pool), on the networks of `torch_reference.py`. The benchmark
(`python -m i2i_jax.benchmark --compare_torch`) times i2i_jax's train steps against these;
`tests/test_torch_baseline.py` checks that both do the same work."""

import itertools
import random

import torch
from torch import nn

from i2i_jax.torch_reference import define_D, define_G, init_weights


def set_requires_grad(nets, requires_grad: bool) -> None:
    """Freezing D while G learns spares the weight gradients of D, as the reference does."""
    for net in nets:
        for parameter in net.parameters():
            parameter.requires_grad = requires_grad


def adam(parameters, lr: float = 2e-4, beta1: float = 0.5) -> torch.optim.Adam:
    return torch.optim.Adam(parameters, lr=lr, betas=(beta1, 0.999))


class Pix2PixIteration:
    """The reference's Pix2Pix `optimize_parameters`: G forward; D on (A, G(A) detached) and on
    (A, B), loss halved, one Adam step; then G against the updated D with GAN + 100 * L1."""

    def __init__(
        self,
        netG: str = "unet_256",
        ngf: int = 64,
        ndf: int = 64,
        norm: str = "batch",
        lambda_L1: float = 100.0,
    ):
        self.G = init_weights(define_G(netG, 3, 3, ngf, norm, use_dropout=True), seed=1).train()
        self.D = init_weights(define_D("basic", 6, ndf, norm), seed=2).train()
        self.opt_G, self.opt_D = adam(self.G.parameters()), adam(self.D.parameters())
        self.gan, self.l1, self.lambda_L1 = nn.BCEWithLogitsLoss(), nn.L1Loss(), lambda_L1

    def nets(self) -> dict[str, nn.Module]:
        return {"G": self.G, "D": self.D}

    def gan_loss(self, logits, real: bool):
        return self.gan(logits, torch.full_like(logits, 1.0 if real else 0.0))

    def __call__(self, real_a, real_b) -> dict[str, torch.Tensor]:
        fake_b = self.G(real_a)
        set_requires_grad([self.D], True)
        self.opt_D.zero_grad()
        d_fake = self.gan_loss(self.D(torch.cat([real_a, fake_b.detach()], 1)), False)
        d_real = self.gan_loss(self.D(torch.cat([real_a, real_b], 1)), True)
        (0.5 * (d_fake + d_real)).backward()
        self.opt_D.step()

        set_requires_grad([self.D], False)
        self.opt_G.zero_grad()
        g_gan = self.gan_loss(self.D(torch.cat([real_a, fake_b], 1)), True)
        g_l1 = self.l1(fake_b, real_b)
        (g_gan + self.lambda_L1 * g_l1).backward()
        self.opt_G.step()
        return {
            "G_GAN": g_gan.detach(),
            "G_L1": g_l1.detach(),
            "D_real": d_real.detach(),
            "D_fake": d_fake.detach(),
        }


class ImagePool:
    """The reference's history of fakes: stored while filling; once full, each fake is returned
    with probability 1/2, else swapped for a random stored one, which is returned."""

    def __init__(self, size: int, seed: int = 0):
        self.size, self.images, self.random = size, [], random.Random(seed)

    def query(self, fakes: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return fakes
        returned = []
        for image in fakes.detach():
            image = image[None]
            if len(self.images) < self.size:
                self.images.append(image)
                returned.append(image)
            elif self.random.random() > 0.5:
                slot = self.random.randrange(self.size)
                returned.append(self.images[slot].clone())
                self.images[slot] = image
            else:
                returned.append(image)
        return torch.cat(returned, 0)


class CycleGANIteration:
    """The reference's CycleGAN `optimize_parameters`: both generators' forward and cycle,
    identity, LSGAN and cycle losses, one Adam step for both G; then each D on real and pooled
    fakes, loss halved, one Adam step for both D."""

    def __init__(
        self,
        netG: str = "resnet_9blocks",
        ngf: int = 64,
        ndf: int = 64,
        norm: str = "instance",
        lambda_A: float = 10.0,
        lambda_B: float = 10.0,
        lambda_identity: float = 0.5,
        pool_size: int = 50,
    ):
        self.G_A = init_weights(define_G(netG, 3, 3, ngf, norm), seed=1).train()
        self.G_B = init_weights(define_G(netG, 3, 3, ngf, norm), seed=2).train()
        self.D_A = init_weights(define_D("basic", 3, ndf, norm), seed=3).train()
        self.D_B = init_weights(define_D("basic", 3, ndf, norm), seed=4).train()
        self.opt_G = adam(itertools.chain(self.G_A.parameters(), self.G_B.parameters()))
        self.opt_D = adam(itertools.chain(self.D_A.parameters(), self.D_B.parameters()))
        self.pool_A, self.pool_B = ImagePool(pool_size, 1), ImagePool(pool_size, 2)
        self.gan, self.l1 = nn.MSELoss(), nn.L1Loss()
        self.lambda_A, self.lambda_B, self.lambda_identity = lambda_A, lambda_B, lambda_identity

    def nets(self) -> dict[str, nn.Module]:
        return {"G_A": self.G_A, "G_B": self.G_B, "D_A": self.D_A, "D_B": self.D_B}

    def gan_loss(self, logits, real: bool):
        return self.gan(logits, torch.full_like(logits, 1.0 if real else 0.0))

    def discriminator_step(self, net, real, fake):
        loss = 0.5 * (self.gan_loss(net(real), True) + self.gan_loss(net(fake.detach()), False))
        loss.backward()
        return loss

    def __call__(self, real_a, real_b) -> dict[str, torch.Tensor]:
        fake_b = self.G_A(real_a)
        rec_a = self.G_B(fake_b)
        fake_a = self.G_B(real_b)
        rec_b = self.G_A(fake_a)

        set_requires_grad([self.D_A, self.D_B], False)
        self.opt_G.zero_grad()
        losses = {}
        if self.lambda_identity > 0:
            losses["idt_A"] = (
                self.l1(self.G_A(real_b), real_b) * self.lambda_B * self.lambda_identity
            )
            losses["idt_B"] = (
                self.l1(self.G_B(real_a), real_a) * self.lambda_A * self.lambda_identity
            )
        losses["G_A"] = self.gan_loss(self.D_A(fake_b), True)
        losses["G_B"] = self.gan_loss(self.D_B(fake_a), True)
        losses["cycle_A"] = self.l1(rec_a, real_a) * self.lambda_A
        losses["cycle_B"] = self.l1(rec_b, real_b) * self.lambda_B
        sum(losses.values()).backward()
        self.opt_G.step()

        set_requires_grad([self.D_A, self.D_B], True)
        self.opt_D.zero_grad()
        losses["D_A"] = self.discriminator_step(self.D_A, real_b, self.pool_B.query(fake_b))
        losses["D_B"] = self.discriminator_step(self.D_B, real_a, self.pool_A.query(fake_a))
        self.opt_D.step()
        return {name: loss.detach() for name, loss in losses.items()}
