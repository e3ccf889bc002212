"""Tiled inference for validation/test (``val.tile: {size: S, overlap: O}``), bounded memory on large images.

Tiles of SxS (clipped to the image) start every S-O pixels, the last one aligned to the image edge. Neighbouring
tiles are stitched at the middle of their overlap: each output pixel comes from exactly one tile, from a point at
least O//2 pixels away from that tile's inner edges. An image that fits in one tile is a single forward, equal to
whole-image inference. Over several tiles the result equals whole-image inference only for a local network
(receptive-field radius <= O//2, no strided downsampling misaligned with the tile grid, no pooling over the whole
image); all the plugin's archs pool gates over the image (SpikerIR/ESDNet attention, NAFNet's channel attention,
Restormer's transposed attention), so for them tiles are an approximation that bounds memory: use large tiles.
Each tile is an independent forward (the spiking archs keep no state between calls).
"""
import torch


def check_tile_opt(tile_opt):
    """Validate ``val.tile``; returns (size, overlap) or None when tiling is off."""
    if not tile_opt:
        return None
    if not isinstance(tile_opt, dict) or set(tile_opt) - {'size', 'overlap'} or 'size' not in tile_opt:
        raise ValueError(f'val.tile must be {{size: S, overlap: O}} (or ~ for whole images), got {tile_opt!r}')
    try:
        size, overlap = int(tile_opt['size']), int(tile_opt.get('overlap', 0))
    except (TypeError, ValueError):
        raise ValueError(f'val.tile: size and overlap must be integers, got {tile_opt!r}') from None
    if size <= 0 or overlap < 0:
        raise ValueError(f'val.tile: size must be > 0 and overlap >= 0 (got size={size}, overlap={overlap})')
    if overlap >= size:
        raise ValueError(f'val.tile: overlap ({overlap}) must be smaller than size ({size})')
    return size, overlap


def _tile_starts(length, size, overlap):
    if length <= size:
        return [0]
    starts = list(range(0, length - size, size - overlap))
    return starts + [length - size]


def _owned_ranges(starts, size, length):
    """[(lo, hi)] per tile: the part of the axis each tile writes, split at the middle of each overlap."""
    size = min(size, length)
    cuts = [0] + [(nxt + cur + size) // 2 for cur, nxt in zip(starts, starts[1:])] + [length]
    return list(zip(cuts[:-1], cuts[1:]))


@torch.no_grad()
def tiled_forward(net, x, size, overlap):
    """net(x) computed tile by tile ([B, C, H, W] -> [B, C', sH, sW] for an integer scale s)."""
    h, w = x.shape[-2:]
    rows, cols = _tile_starts(h, size, overlap), _tile_starts(w, size, overlap)
    th, tw = min(size, h), min(size, w)
    out = None
    for r, (r_lo, r_hi) in zip(rows, _owned_ranges(rows, size, h)):
        for c, (c_lo, c_hi) in zip(cols, _owned_ranges(cols, size, w)):
            tile_out = net(x[..., r:r + th, c:c + tw])
            scale = tile_out.shape[-1] // tw
            if out is None:
                out = x.new_zeros(x.shape[0], tile_out.shape[1], h * scale, w * scale)
            out[..., r_lo * scale:r_hi * scale, c_lo * scale:c_hi * scale] = \
                tile_out[..., (r_lo - r) * scale:(r_hi - r) * scale, (c_lo - c) * scale:(c_hi - c) * scale]
    return out
