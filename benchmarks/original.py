"""The original one-file inversion script, kept as the baseline the engine is measured against.

It is the algorithm of ``--preset original`` written the way the script wrote it: the whole network
is forwarded on every step, the layer is read through a forward hook, and the network's weights keep
``requires_grad=True`` (so backward also computes weight gradients). Only the benchmarks import it.
"""
from __future__ import annotations

import time

import torch
from torch import nn


def img_norm(x: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    return torch.abs(x ** alpha).sum()


def reg_tv(x: torch.Tensor, beta: float = 2.0) -> torch.Tensor:
    image = x[0]
    dy = torch.zeros_like(image)
    dx = torch.zeros_like(image)
    dy[:, 1:, :] = image[:, :-1, :] - image[:, 1:, :]
    dx[:, :, 1:] = image[:, :, 1:] - image[:, :, :-1]
    return ((dx ** 2 + dy ** 2) ** (beta / 2.0)).sum()


def rec_loss(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return img_norm(x - ref, 2.0) / img_norm(ref, 2.0)


def get_module(model: nn.Module, dotted: str) -> nn.Module:
    module = model
    for part in dotted.split("."):
        module = module._modules[part]
    return module


def run_original(net: nn.Module, ref_input: torch.Tensor, layer: str, *, epochs: int = 200, lr: float = 100.0,
                 momentum: float = 0.9, alpha: float = 6.0, beta: float = 2.0, lambda_alpha: float = 1e-5,
                 lambda_tv: float = 1e-5, decay_epochs: int = 200, decay_factor: float = 0.1, seed: int = 2023,
                 snapshot_every: int = 0):
    """Run the original loop on a normalized reference input. Returns (x, seconds per step list,
    snapshots [(step, elapsed, x)])."""
    for p in net.parameters():  # the script never froze the weights
        p.requires_grad_(True)
    net.eval()
    activations: list[torch.Tensor] = []
    handle = get_module(net, layer).register_forward_hook(lambda m, i, o: activations.append(o))
    try:
        def get_activations(inp: torch.Tensor) -> torch.Tensor:
            del activations[:]
            net(inp)
            return activations[0]

        with torch.no_grad():
            ref_act = get_activations(ref_input).detach()
        gen = torch.Generator().manual_seed(seed)
        x = nn.Parameter(1e-3 * torch.randn(ref_input.shape, generator=gen))
        opt = torch.optim.SGD([x], lr=lr, momentum=momentum)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=decay_epochs, gamma=decay_factor)
        times, snaps = [], []
        start = time.perf_counter()
        for i in range(epochs):
            t0 = time.perf_counter()
            opt.zero_grad()
            act = get_activations(x)
            loss = rec_loss(act, ref_act) + lambda_alpha * img_norm(x, alpha) + lambda_tv * reg_tv(x, beta)
            loss.backward()
            opt.step()
            sched.step()
            times.append(time.perf_counter() - t0)
            if snapshot_every and (i + 1) % snapshot_every == 0:
                snaps.append((i + 1, time.perf_counter() - start, x.detach().clone()))
        return x.detach(), times, snaps
    finally:
        handle.remove()
        for p in net.parameters():  # leave the network as it was given: frozen, no gradients
            p.requires_grad_(False)
            p.grad = None
