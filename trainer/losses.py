"""Adversarial losses on logits (SPEC §2): batch means of the per-sample terms. Pure torch, no I/O.

`d(real, fake)` is what D minimizes and `g(real, fake)` what G minimizes (`real` is used by the relativistic
rpgan only: it pairs fake i with real i of the batch). `game(real, fake)` is the one shared value f of a
zero-sum loss, which the maximizer (D) ascends and the minimizer (G) descends — what ACGD plays (seed 002).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor
from torch.nn.functional import relu, softplus

Pair = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Loss:
    name: str
    d: Pair
    g: Pair
    game: Pair | None = None  # zero-sum losses only
    needs_real_for_g: bool = False


def _ns_d(real: Tensor, fake: Tensor) -> Tensor:
    return (softplus(-real) + softplus(fake)).mean()


def _minimax(real: Tensor, fake: Tensor) -> Tensor:
    # f = E log σ(D(x)) + E log(1 − σ(D(x̃))): the original GAN value, D ascends it, G descends it.
    return -(softplus(-real).mean() + softplus(fake).mean())


def _wgan_game(real: Tensor, fake: Tensor) -> Tensor:
    return real.mean() - fake.mean()


def _minus_fake(real: Tensor, fake: Tensor) -> Tensor:
    return -fake.mean()


LOSSES: dict[str, Loss] = {
    "nsgan": Loss("nsgan", _ns_d, lambda r, f: softplus(-f).mean()),
    "lsgan": Loss("lsgan", lambda r, f: ((r - 1) ** 2 + f**2).mean(), lambda r, f: ((f - 1) ** 2).mean()),
    "hinge": Loss("hinge", lambda r, f: (relu(1 - r) + relu(1 + f)).mean(), _minus_fake),
    "wgan": Loss("wgan", lambda r, f: (f - r).mean(), _minus_fake, game=_wgan_game),
    "softhinge": Loss("softhinge", lambda r, f: (softplus(1 - r) + softplus(1 + f)).mean(), _minus_fake),
    "rpgan": Loss("rpgan", lambda r, f: softplus(f - r).mean(), lambda r, f: softplus(r - f).mean(),
                  needs_real_for_g=True),
    "ogan": Loss("ogan", _ns_d, lambda r, f: -softplus(f).mean(), game=_minimax),
}


def get_loss(name: str) -> Loss:
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"loss {name!r} is not one of {', '.join(LOSSES)}") from None

