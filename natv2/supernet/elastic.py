"""Elastic layers: weights sized for the largest choice, sliced to the active one per forward.

Kernel elasticity follows OFA: a smaller kernel is the centre of the next larger one passed
through a learned per-size linear transform (7->5, then 5->3), initialised to identity.
Expand elasticity slices the first ``mid`` channels; ``reorder_channels`` sorts channels by
importance so the slices keep the most useful ones (OFA's ``re_organize_middle_weights``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from natv2.space import KERNELS
from natv2.supernet.plain import make_act


def sliced_batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm over the first C features of ``bn`` (running stats updated in place)."""
    c = x.shape[1]
    if c == bn.num_features:
        return bn(x)
    momentum = 0.0 if bn.momentum is None else bn.momentum
    tracked = bn.num_batches_tracked  # None only without track_running_stats
    if bn.training and bn.track_running_stats and tracked is not None:
        tracked.add_(1)
        if bn.momentum is None:
            momentum = 1.0 / float(tracked)
    use_batch_stats = bn.training or bn.running_mean is None
    return F.batch_norm(
        x,
        bn.running_mean[:c] if bn.running_mean is not None else None,
        bn.running_var[:c] if bn.running_var is not None else None,
        bn.weight[:c],
        bn.bias[:c],
        use_batch_stats,
        momentum,
        bn.eps,
    )


def conv_bias(conv: nn.Conv2d) -> torch.Tensor:
    """The bias of a convolution built with ``bias=True`` (torch types it as optional)."""
    bias = conv.bias
    assert bias is not None, "convolution without bias"
    return bias


def running_stats(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Running mean, running variance and batch count (torch types them as optional: they are
    None only without ``track_running_stats``, which no natv2 BatchNorm is built with)."""
    mean, var, count = bn.running_mean, bn.running_var, bn.num_batches_tracked
    assert mean is not None and var is not None and count is not None, "no running statistics"
    return mean, var, count


def transform_name(src: int, dst: int) -> str:
    return f"{src}to{dst}"


class ElasticDepthwise(nn.Module):
    """Depthwise conv with elastic kernel (OFA transform chain) and elastic channels."""

    def __init__(self, channels: int, stride: int, kernels: tuple[int, ...] = KERNELS) -> None:
        super().__init__()
        self.kernels = tuple(sorted(kernels))
        self.stride = stride
        k = self.kernels[-1]
        self.weight = nn.Parameter(torch.empty(channels, 1, k, k))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.transforms = nn.ParameterDict(
            {
                transform_name(src, dst): nn.Parameter(torch.eye(dst * dst))
                for src, dst in zip(self.kernels[:0:-1], self.kernels[-2::-1], strict=True)
            }
        )

    def active_weight(self, channels: int, kernel: int) -> torch.Tensor:
        w = self.weight[:channels]
        size = self.kernels[-1]
        for dst in reversed(self.kernels[:-1]):
            if dst < kernel:
                break
            start = (size - dst) // 2
            crop = w[:, :, start : start + dst, start : start + dst].reshape(channels, 1, dst * dst)
            w = F.linear(crop, self.transforms[transform_name(size, dst)]).reshape(
                channels, 1, dst, dst
            )
            size = dst
        return w

    def forward(self, x: torch.Tensor, kernel: int) -> torch.Tensor:
        c = x.shape[1]
        w = self.active_weight(c, kernel)
        return F.conv2d(x, w, None, self.stride, kernel // 2, 1, c)


class ElasticSE(nn.Module):
    """Squeeze-excite sized for the largest expand; the reduce width follows the active one."""

    def __init__(self, channels: int, mid: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, mid, 1, bias=True)
        self.expand = nn.Conv2d(mid, channels, 1, bias=True)

    def forward(self, x: torch.Tensor, mid: int) -> torch.Tensor:
        c = x.shape[1]
        y = x.mean((2, 3), keepdim=True)
        y = F.relu(F.conv2d(y, self.reduce.weight[:mid, :c], conv_bias(self.reduce)[:mid]))
        y = F.conv2d(y, self.expand.weight[:c, :mid], conv_bias(self.expand)[:c])
        return x * F.hardsigmoid(y)


class ElasticIRB(nn.Module):
    """Inverted residual with elastic expand (channel slicing) and kernel."""

    def __init__(
        self, cin: int, cout: int, stride: int, act: str, se: bool, mid_fn, se_fn, max_expand: int
    ) -> None:
        super().__init__()
        self.cin, self.cout, self.stride = cin, cout, stride
        self.mid_fn, self.se_fn = mid_fn, se_fn
        max_mid = mid_fn(cin, max_expand)
        self.expand_conv = nn.Conv2d(cin, max_mid, 1, bias=False)
        self.expand_bn = nn.BatchNorm2d(max_mid)
        self.depthwise = ElasticDepthwise(max_mid, stride)
        self.depthwise_bn = nn.BatchNorm2d(max_mid)
        self.se = ElasticSE(max_mid, se_fn(max_mid)) if se else None
        self.project_conv = nn.Conv2d(max_mid, cout, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(cout)
        self.act = make_act(act)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor, expand: int, kernel: int) -> torch.Tensor:
        mid = self.mid_fn(self.cin, expand)
        h = F.conv2d(x, self.expand_conv.weight[:mid])
        h = self.act(sliced_batch_norm(self.expand_bn, h))
        h = self.act(sliced_batch_norm(self.depthwise_bn, self.depthwise(h, kernel)))
        if self.se is not None:
            h = self.se(h, self.se_fn(mid))
        h = F.conv2d(h, self.project_conv.weight[:, :mid])
        h = sliced_batch_norm(self.project_bn, h)
        return h + x if self.residual else h

    @torch.no_grad()
    def reorder_channels(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """OFA's ``re_organize_middle_weights``: sort the squeeze-excite hidden units by the L1
        norm of their expand weights, then the middle channels by the L1 norm of their
        projection weights, largest first, so that the slices of a smaller expand (and of its
        smaller SE) keep the most useful ones.

        ``optimizer``: its per-parameter state (SGD momentum, Adam moments) is permuted with the
        weights, so training goes on as if the channels had always been in this order.
        """
        if self.se is not None:
            hidden = torch.argsort(self.se.expand.weight.abs().sum(dim=(0, 2, 3)), descending=True)
            _permute(self.se.expand.weight, 1, hidden, optimizer)
            _permute(self.se.reduce.weight, 0, hidden, optimizer)
            _permute(conv_bias(self.se.reduce), 0, hidden, optimizer)
        order = torch.argsort(self.project_conv.weight.abs().sum(dim=(0, 2, 3)), descending=True)
        _permute(self.expand_conv.weight, 0, order, optimizer)
        for bn in (self.expand_bn, self.depthwise_bn):
            mean, var, _ = running_stats(bn)
            for t in (bn.weight, bn.bias, mean, var):
                _permute(t, 0, order, optimizer)
        _permute(self.depthwise.weight, 0, order, optimizer)
        if self.se is not None:
            _permute(self.se.reduce.weight, 1, order, optimizer)
            _permute(self.se.expand.weight, 0, order, optimizer)
            _permute(conv_bias(self.se.expand), 0, order, optimizer)
        _permute(self.project_conv.weight, 1, order, optimizer)


def _permute(
    t: torch.Tensor, dim: int, order: torch.Tensor, optimizer: torch.optim.Optimizer | None
) -> None:
    """Reorder ``t`` along ``dim`` in place, and every optimizer state tensor of its shape."""
    t.copy_(t.index_select(dim, order))
    if optimizer is None or not isinstance(t, nn.Parameter):
        return
    for value in optimizer.state.get(t, {}).values():
        if isinstance(value, torch.Tensor) and value.shape == t.shape:
            value.copy_(value.index_select(dim, order))
