"""Helpers shared by the data-preparation subcommands: image listing, LMDB key rules, crop grids, map sizes.

Everything here is plain Python + OpenCV so that crop/encode jobs can run in worker processes."""
import contextlib
import math
import os
import re
import shutil

import cv2
import numpy as np

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')
_PAGE = 4096  # LMDB page size; every large value is stored on its own run of overflow pages


def list_images(folder, what='folder'):
    """Sorted file names (not paths) of the images directly inside `folder`."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f'{what} {folder!r} does not exist or is not a directory')
    names = sorted(n for n in os.listdir(folder)
                   if n.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, n)))
    if not names:
        raise FileNotFoundError(f'{what} {folder!r} contains no images (looked for {", ".join(IMAGE_EXTENSIONS)})')
    return names


def natural_key(name):
    """Sort key that orders embedded numbers numerically ('x2' < 'x10'), so 'order' pairing of differently named
    folders (e.g. norain-10.png vs norain-10x2.png) lines up."""
    return [(0, int(tok), '') if tok.isdigit() else (1, 0, tok.lower()) for tok in re.split(r'(\d+)', name)]


def make_key(name):
    """LMDB key from a file stem: basicsr reads keys back with `line.split('.')[0]` and encodes them as ASCII, so
    anything other than letters, digits, '_' and '-' becomes '_'."""
    return re.sub(r'[^A-Za-z0-9_-]', '_', name)


def crop_starts(length, crop, step):
    """Window starts along one axis; the last window is aligned to the image edge (NAFNet's thresh_size 0)."""
    if length < crop:
        return []
    starts = list(range(0, length - crop + 1, step))
    if starts[-1] + crop < length:
        starts.append(length - crop)
    return starts


def crop_grid(h, w, crop, step):
    return [(y, x) for y in crop_starts(h, crop, step) for x in crop_starts(w, crop, step)]


def image_header(path):
    """(height, width, bytes per pixel) read from the file header only (no decoding)."""
    from PIL import Image  # matplotlib dependency; imported lazily to keep worker start-up cheap
    with Image.open(path) as im:
        w, h = im.size
        if im.mode == 'P':  # palette images decode to BGR(A) in OpenCV
            return h, w, 4
        depth = 2 if ('16' in im.mode or im.mode in ('I', 'F')) else 1
        return h, w, len(im.getbands()) * depth


def value_bound(raw_bytes):
    """Upper bound of the LMDB space taken by one PNG-encoded value of `raw_bytes` raw pixels: PNG never grows
    incompressible data by more than a filter byte per row plus a few zlib/chunk bytes (<1%), and LMDB rounds a
    large value up to whole pages plus one header page."""
    png = int(raw_bytes * 1.01) + 1024
    return math.ceil(png / _PAGE) * _PAGE + _PAGE


def map_size_for(raw_sizes):
    """Map size for one LMDB holding values of the given raw sizes: the bounds above plus 10% and 64 MiB margin
    (the map is a sparse file, so the margin costs no disk)."""
    total = sum(value_bound(s) for s in raw_sizes)
    return int(total * 1.1) + 64 * 1024 ** 2


def encode_png(img, compress_level):
    ok, buf = cv2.imencode('.png', img, [cv2.IMWRITE_PNG_COMPRESSION, compress_level])
    if not ok:
        raise RuntimeError('OpenCV failed to encode an image as PNG')
    return buf.tobytes()


def read_image(path):
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise OSError(f'cannot read image {path!r} (missing, truncated or unsupported format)')
    return img


def shape3(img):
    return (img.shape[0], img.shape[1], 1 if img.ndim == 2 else img.shape[2])


def ensure_new(path, overwrite):
    """basicsr's LmdbMaker calls sys.exit(1) on an existing path; fail earlier with a message instead."""
    if os.path.exists(path):
        if not overwrite:
            raise FileExistsError(f'{path!r} already exists; delete it or pass --overwrite')
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def pair_job(job):
    """Worker: read one (input, target) pair, optionally crop it on the grid, return PNG bytes per key.

    job = (key, input_path, target_path, crop or None, step, compress_level).
    Returns a list of (key, input_bytes, input_shape, target_bytes, target_shape)."""
    key, in_path, gt_path, crop, step, level = job
    img_in, img_gt = read_image(in_path), read_image(gt_path)
    if img_in.shape[:2] != img_gt.shape[:2]:
        raise ValueError(f'input {in_path!r} is {img_in.shape[1]}x{img_in.shape[0]} but target {gt_path!r} is '
                         f'{img_gt.shape[1]}x{img_gt.shape[0]}; a pair must have equal sizes')
    if crop is None:
        return [(key, encode_png(img_in, level), shape3(img_in), encode_png(img_gt, level), shape3(img_gt))]
    grid = crop_grid(img_in.shape[0], img_in.shape[1], crop, step)
    if not grid:
        raise ValueError(f'{in_path!r} ({img_in.shape[1]}x{img_in.shape[0]}) is smaller than the crop size {crop}')
    out = []
    for idx, (y, x) in enumerate(grid, start=1):
        a, b = img_in[y:y + crop, x:x + crop], img_gt[y:y + crop, x:x + crop]
        out.append((f'{key}_s{idx:03d}', encode_png(a, level), shape3(a), encode_png(b, level), shape3(b)))
    return out


class LmdbWriter:
    """basicsr LmdbMakers written in lock-step (e.g. input + target), so all LMDBs get identical key sets."""

    def __init__(self, lmdb_paths, map_size, compress_level, overwrite=False):
        import lmdb
        from basicsr.utils.lmdb_util import LmdbMaker
        self._map_full = lmdb.MapFullError
        for p in lmdb_paths:
            if not p.endswith('.lmdb'):
                raise ValueError(f'LMDB path {p!r} must end with .lmdb (basicsr checks the suffix)')
            ensure_new(p, overwrite)
            os.makedirs(os.path.dirname(os.path.abspath(p)), exist_ok=True)
        self.paths = list(lmdb_paths)
        self.map_size = map_size
        self.makers = [LmdbMaker(p, map_size=map_size, compress_level=compress_level) for p in self.paths]
        self.keys = set()

    def put(self, key, *values):
        """values: one (png_bytes, (h, w, c)) per LMDB, in the order of `lmdb_paths`."""
        if key in self.keys:
            raise ValueError(f'duplicate LMDB key {key!r}: two source images map to the same key')
        self.keys.add(key)
        with self._explain_map_full():
            for maker, (img_bytes, shape) in zip(self.makers, values):
                maker.put(img_bytes, key, shape)

    def close(self):
        with self._explain_map_full():
            for maker in self.makers:
                maker.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        """Commit on success; on any error remove the half-written LMDBs so a rerun does not trip over them."""
        if exc_type is None:
            self.close()
            return False
        for maker in self.makers:
            try:
                maker.txn.abort()
                maker.env.close()
                maker.txt_file.close()
            except Exception:  # noqa: BLE001  (best effort while another error propagates)
                pass
        for p in self.paths:
            shutil.rmtree(p, ignore_errors=True)
        return False

    @contextlib.contextmanager
    def _explain_map_full(self):
        try:
            yield
        except self._map_full as e:
            raise RuntimeError(f'LMDB map size {self.map_size} bytes is too small for {self.paths}; '
                               'rerun with a larger --map-size') from e


def as_bgr(rgb):
    """RGB uint8 block (from a .mat file) → contiguous BGR, since basicsr decodes PNGs as BGR."""
    return np.ascontiguousarray(rgb[..., ::-1])
