"""Small helpers for multi-step spiking tensors."""


def time_mean(x):
    """Reduce a multi-step tensor [T, B, C, H, W] to [B, C, H, W] (identity for 4-D tensors).

    A channels-last multi-step tensor (C innermost) is reduced through its contiguous [T, B, H, W, C] view:
    reducing the outer T of that layout in place is an order of magnitude slower on the CPU."""
    if x.dim() != 5:
        return x
    if x.stride(2) == 1 and not x.is_contiguous():
        return x.permute(0, 1, 3, 4, 2).mean(0).permute(0, 3, 1, 2)
    return x.mean(0)


def with_batch_statistics(net, x):
    """``net`` in eval mode with its batch-norm running statistics those of one training forward on x (cumulative,
    momentum None): an untrained net then fires in eval mode as it does in training."""
    import torch
    from torch import nn
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None
            m.reset_running_stats()
    net.train()
    with torch.no_grad():
        net(x)
    return net.eval()
