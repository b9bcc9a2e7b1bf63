"""Non-trivial BatchNorm statistics for tests of untrained networks (imported by test modules).

Why: an untrained network's BatchNorm layers are identities with tiny logits after them, which
makes parity, layout and quantization checks trivially true.
"""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn

from natv2.supernet.elastic import running_stats

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def randomise_batchnorm(net: ModuleT, gen: torch.Generator, bias: bool = True) -> ModuleT:
    """Draw every BatchNorm2d's running statistics and affine terms from ``gen``, in module
    order (so callers that keep drawing from ``gen`` see a fixed sequence)."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                mean, var, _ = running_stats(m)
                mean.uniform_(-0.3, 0.3, generator=gen)
                var.uniform_(0.5, 2.0, generator=gen)
                m.weight.uniform_(0.5, 1.5, generator=gen)
                if bias:
                    m.bias.uniform_(-0.2, 0.2, generator=gen)
    return net
