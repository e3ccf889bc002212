"""Image files for spikerir-restore: which files an input names, reading them as users expect (gray, 16 bits,
alpha, EXIF orientation), the batch layout networks take and back, writing them in each format's terms, and the
side-by-side comparison strip."""
import glob
import os

import numpy as np

from spikerir_plugin.tools.lmdb_writing import IMAGE_EXTENSIONS, natural_key

SIXTEEN_BIT_EXTENSIONS = ('.png', '.tif', '.tiff', '.ppm', '.pgm')
NO_ALPHA_EXTENSIONS = ('.jpg', '.jpeg', '.ppm', '.pgm', '.bmp')


class RestoreError(Exception):
    """One image could not be restored; the message says why (the file name is added by the caller)."""


def collect_inputs(specs):
    """(image paths in order, [(spec, reason)] for inputs that name nothing)."""
    paths, missing, seen = [], [], set()
    for spec in specs:
        if os.path.isdir(spec):
            found = [os.path.join(spec, n) for n in sorted(os.listdir(spec), key=natural_key)
                     if n.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(spec, n))]
            if not found:
                missing.append((spec, f'folder contains no images ({", ".join(IMAGE_EXTENSIONS)})'))
        elif os.path.isfile(spec):
            found = [spec]
        elif glob.has_magic(spec):
            found = sorted((p for p in glob.glob(spec, recursive=True) if os.path.isfile(p)), key=natural_key)
            if not found:
                missing.append((spec, 'pattern matches no file'))
        else:
            found = []
            missing.append((spec, 'no such file or folder'))
        for path in found:
            key = os.path.abspath(path)
            if key not in seen:
                seen.add(key)
                paths.append(path)
    return paths, missing


def load_image(path):
    """(color part HxWxC in RGB order or HxW gray, alpha HxW or None, max value 255 or 65535)."""
    import cv2
    jpeg = path.lower().endswith(('.jpg', '.jpeg'))
    # JPEG: decoded with EXIF orientation applied (IMREAD_UNCHANGED would ignore it; JPEG has no alpha)
    flags = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH if jpeg else cv2.IMREAD_UNCHANGED
    try:
        with open(path, 'rb') as f:
            data = np.frombuffer(f.read(), np.uint8)
    except OSError as e:
        raise RestoreError(f'cannot open ({e.strerror or e})') from None
    img = cv2.imdecode(data, flags) if data.size else None
    if img is None:
        raise RestoreError('not a readable image (empty, truncated or an unsupported format)')
    if img.dtype == np.uint8:
        peak = 255
    elif img.dtype == np.uint16:
        peak = 65535
    else:
        raise RestoreError(f'unsupported pixel type {img.dtype} (8-bit and 16-bit images are supported)')
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    alpha = None
    if img.ndim == 3 and img.shape[2] in (2, 4):
        img, alpha = img[..., :-1], img[..., -1]
        img = img[..., 0] if img.shape[2] == 1 else img
    if img.ndim == 3:
        if img.shape[2] != 3:
            raise RestoreError(f'unsupported channel count {img.shape[2]}')
        img = img[..., ::-1]  # BGR -> RGB
    return np.ascontiguousarray(img), alpha, peak


def to_batch(img, peak, channels):
    """Image -> float [B, channels, H, W] in [0, 1] for a net taking `channels` channels, and how to undo it."""
    import torch
    x = torch.from_numpy(img.astype(np.float32) / peak)
    gray = img.ndim == 2
    if channels == 3:
        x = x[None].expand(3, -1, -1) if gray else x.permute(2, 0, 1)
        return x[None].contiguous(), 'mean' if gray else 'rgb'
    if channels == 1:
        return (x[None, None] if gray else x.permute(2, 0, 1)[:, None]).contiguous(), 'gray' if gray else 'planes'
    raise RestoreError(f'the network takes {channels} input channels; only 1- and 3-channel networks can restore '
                       f'images')


def from_batch(y, layout, peak):
    """Network output -> image array of the input's layout and bit depth (clipped, rounded)."""
    y = y.float().clamp_(0, 1)
    if layout == 'mean':
        y = y[0].mean(0)
    elif layout == 'rgb':
        y = y[0].permute(1, 2, 0)
    elif layout == 'gray':
        y = y[0, 0]
    else:  # planes: one gray restoration per color channel
        y = y[:, 0].permute(1, 2, 0)
    out = (y.cpu().numpy() * peak).round()
    return out.astype(np.uint16 if peak == 65535 else np.uint8)


def to_file_layout(img, alpha, peak, ext):
    """RGB(A)/gray array -> what cv2 writes for this extension (BGR order, alpha re-attached, 8 bits if needed)."""
    import cv2
    if ext in NO_ALPHA_EXTENSIONS:
        alpha = None
    if alpha is not None and alpha.shape[:2] != img.shape[:2]:
        alpha = cv2.resize(alpha, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
    if img.ndim == 3:
        img = img[..., ::-1]
    if alpha is not None:
        img = np.dstack([np.dstack([img] * 3) if img.ndim == 2 else img, alpha])
    if peak == 65535 and ext not in SIXTEEN_BIT_EXTENSIONS:
        img = (img.astype(np.float64) / 257).round().astype(np.uint8)
    return np.ascontiguousarray(img)


def as_display(img, peak):
    """8-bit 3-channel BGR view of an RGB/gray array (for the comparison strip)."""
    img = (img.astype(np.float64) * (255 / peak)).round().astype(np.uint8)
    return np.dstack([img] * 3) if img.ndim == 2 else img[..., ::-1]


def find_gt(gt_dir, stem):
    for name in sorted(os.listdir(gt_dir)):
        root, ext = os.path.splitext(name)
        if root == stem and ext.lower() in IMAGE_EXTENSIONS:
            return os.path.join(gt_dir, name)
    return None


def compare_strip(panels):
    """Panels (8-bit BGR) side by side, each resized (nearest) to the height of the tallest, 4 white pixels apart."""
    import cv2
    height = max(p.shape[0] for p in panels)
    gap = np.full((height, 4, 3), 255, np.uint8)
    row = []
    for panel in panels:
        if panel.shape[0] != height:
            width = round(panel.shape[1] * height / panel.shape[0])
            panel = cv2.resize(panel, (width, height), interpolation=cv2.INTER_NEAREST)
        row += [panel, gap]
    return np.concatenate(row[:-1], axis=1)
