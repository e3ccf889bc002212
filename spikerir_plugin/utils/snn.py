"""Small helpers for multi-step spiking tensors."""


def time_mean(x):
    """Reduce a multi-step tensor [T, B, C, H, W] to [B, C, H, W] (identity for 4-D tensors)."""
    return x.mean(0) if x.dim() == 5 else x
