"""spikerir-prepare: turn public restoration datasets into the layouts the options files read.

Subcommands (see datasets/README.md for where each dataset goes):
  sidd-train   SIDD-Medium sRGB scene folders -> 512x512 crops (step 384, last row/column aligned to the edge)
               -> <out>/input_crops.lmdb + <out>/gt_crops.lmdb
  sidd-val     ValidationNoisyBlocksSrgb.mat + ValidationGtBlocksSrgb.mat -> <out>/input_crops.lmdb + gt_crops.lmdb
  paired       <input dir> + <target dir> -> <out>/input.lmdb + <out>/target.lmdb (--lmdb)
               or <out>/input/<key>.png + <out>/target/<key>.png (disk layout); optional grid crops
  folder-lmdb  any image folder -> one LMDB (clean images for Gaussian denoising)

LMDBs are written with basicsr's LmdbMaker (PNG values, meta_info.txt), keys without dots, identical key sets for
the two sides of a pair, and an explicit map size computed from the image sizes (never basicsr's first-image
estimate, which overflows on mixed-size data).
"""
import argparse
import multiprocessing
import os
import re
import shutil
import sys

from spikerir_plugin.tools.lmdb_writing import (LmdbWriter, as_bgr, crop_grid, encode_png, ensure_new, image_header,
                                                list_images, make_key, map_size_for, natural_key, pair_job,
                                                read_image, shape3)
from spikerir_plugin.utils import console

SIDD_NOISY = re.compile(r'^(?P<prefix>.*)_NOISY_SRGB_(?P<idx>[^.]+)\.png$', re.IGNORECASE)


def _raw_crop_sizes(paths, crop, step):
    """Raw byte sizes of every value that will be written for these source images (crops or whole images)."""
    sizes = []
    for p in paths:
        h, w, bpp = image_header(p)
        if crop is None:
            sizes.append(h * w * bpp)
        else:
            sizes.extend([crop * crop * bpp] * len(crop_grid(h, w, crop, step)))
    return sizes


def _run_jobs(jobs, workers, desc):
    """Yield pair_job results in job order, from a process pool when workers > 1."""
    bar = console.progress(total=len(jobs), desc=desc, unit='pair')
    if workers <= 1:
        for job in jobs:
            yield pair_job(job)
            bar.update(1)
    else:
        with multiprocessing.get_context('fork').Pool(workers) as pool:
            for result in pool.imap(pair_job, jobs):
                yield result
                bar.update(1)
    bar.close()


def _write_pair_lmdbs(jobs, input_lmdb, target_lmdb, map_size, compress_level, workers, overwrite, desc):
    count = 0
    with LmdbWriter([input_lmdb, target_lmdb], map_size, compress_level, overwrite) as writer:
        for results in _run_jobs(jobs, workers, desc):
            for key, in_bytes, in_shape, gt_bytes, gt_shape in results:
                writer.put(key, (in_bytes, in_shape), (gt_bytes, gt_shape))
                count += 1
    console.info(f'wrote {count} pairs (map size {map_size} bytes) to {input_lmdb} and {target_lmdb}')
    return count


# ----------------------------------------------------------------------------------------------------- SIDD train
def find_sidd_pairs(src):
    """[(key_prefix, noisy_path, gt_path)] for every *_NOISY_SRGB_*.PNG in the scene folders of `src`."""
    if not os.path.isdir(src):
        raise FileNotFoundError(f'SIDD source folder {src!r} does not exist (expected SIDD_Medium_Srgb/Data with '
                                'one folder per scene)')
    scenes = sorted(d for d in os.listdir(src) if os.path.isdir(os.path.join(src, d)))
    pairs = []
    for scene in scenes:
        folder = os.path.join(src, scene)
        names = os.listdir(folder)
        lower = {n.lower(): n for n in names}
        for name in sorted(names):
            m = SIDD_NOISY.match(name)
            if not m:
                continue
            gt_name = f'{m["prefix"]}_GT_SRGB_{m["idx"]}{os.path.splitext(name)[1]}'
            if gt_name.lower() not in lower:
                raise FileNotFoundError(f'{os.path.join(folder, name)!r} has no ground truth {gt_name!r} next to it')
            pairs.append((make_key(f'{scene}_{m["idx"]}'), os.path.join(folder, name),
                          os.path.join(folder, lower[gt_name.lower()])))
    if not pairs:
        raise FileNotFoundError(f'no *_NOISY_SRGB_*.PNG files found in the scene folders of {src!r} '
                                f'({len(scenes)} sub-folders scanned)')
    return pairs


def prepare_sidd_train(src, out, crop=512, step=384, workers=4, compress_level=1, map_size=None, overwrite=False):
    pairs = find_sidd_pairs(src)
    if map_size is None:
        map_size = map_size_for(_raw_crop_sizes([p[1] for p in pairs], crop, step))
    jobs = [(key, noisy, gt, crop, step, compress_level) for key, noisy, gt in pairs]
    return _write_pair_lmdbs(jobs, os.path.join(out, 'input_crops.lmdb'), os.path.join(out, 'gt_crops.lmdb'),
                             map_size, compress_level, workers, overwrite, 'SIDD train crops')


# ------------------------------------------------------------------------------------------------------- SIDD val
def _load_mat_blocks(path, key):
    import numpy as np
    import scipy.io
    if not os.path.isfile(path):
        raise FileNotFoundError(f'.mat file {path!r} does not exist')
    try:
        mat = scipy.io.loadmat(path)
    except NotImplementedError as e:  # MATLAB v7.3 files are HDF5
        raise ValueError(f'{path!r} is a MATLAB v7.3 (HDF5) file, which scipy.io.loadmat cannot read') from e
    found = sorted(k for k in mat if not k.startswith('__'))
    if key not in mat:
        raise KeyError(f'{path!r} has no variable {key!r}; variables found: {found}')
    blocks = np.asarray(mat[key])
    if blocks.ndim != 5 or blocks.shape[-1] != 3 or blocks.dtype != np.uint8:
        raise ValueError(f'{path!r}:{key} should be uint8 N x B x H x W x 3 RGB blocks, '
                         f'got {blocks.dtype} {blocks.shape}')
    return blocks.reshape(-1, *blocks.shape[2:])


def prepare_sidd_val(noisy, gt, out, noisy_key='ValidationNoisyBlocksSrgb', gt_key='ValidationGtBlocksSrgb',
                     compress_level=1, map_size=None, overwrite=False):
    noisy_blocks, gt_blocks = _load_mat_blocks(noisy, noisy_key), _load_mat_blocks(gt, gt_key)
    if noisy_blocks.shape != gt_blocks.shape:
        raise ValueError(f'{noisy!r} holds blocks of shape {noisy_blocks.shape} but {gt!r} holds {gt_blocks.shape}')
    if map_size is None:
        map_size = map_size_for([noisy_blocks[0].size] * len(noisy_blocks))
    with LmdbWriter([os.path.join(out, 'input_crops.lmdb'), os.path.join(out, 'gt_crops.lmdb')], map_size,
                    compress_level, overwrite) as writer:
        for i in console.progress(range(len(noisy_blocks)), desc='SIDD val blocks', unit='block'):
            a, b = as_bgr(noisy_blocks[i]), as_bgr(gt_blocks[i])
            writer.put(f'ValidationBlocksSrgb_{i:04d}', (encode_png(a, compress_level), shape3(a)),
                       (encode_png(b, compress_level), shape3(b)))
    console.info(f'wrote {len(noisy_blocks)} blocks (map size {map_size} bytes) to {writer.paths[0]} and '
                 f'{writer.paths[1]}')
    return len(noisy_blocks)


# --------------------------------------------------------------------------------------------------------- paired
def pair_folders(input_dir, target_dir, pair_by='name'):
    """[(key, input_path, target_path)].

    pair_by='name': same file stem on both sides (extensions may differ); every file must have a partner.
    pair_by='order': i-th input with i-th target after a natural (number-aware) sort; counts must match.
    The key (and output file name) is the target's stem."""
    ins, tgts = list_images(input_dir, 'input folder'), list_images(target_dir, 'target folder')
    if pair_by == 'order':
        if len(ins) != len(tgts):
            raise ValueError(f'input folder {input_dir!r} has {len(ins)} images but target folder {target_dir!r} '
                             f'has {len(tgts)}; pairing by order needs equal counts')
        ordered = zip(sorted(ins, key=natural_key), sorted(tgts, key=natural_key))
    elif pair_by == 'name':
        in_by_stem = {os.path.splitext(n)[0]: n for n in ins}
        tgt_by_stem = {os.path.splitext(n)[0]: n for n in tgts}
        only_in, only_tgt = sorted(set(in_by_stem) - set(tgt_by_stem)), sorted(set(tgt_by_stem) - set(in_by_stem))
        if only_in or only_tgt or len(ins) != len(tgts):
            raise ValueError(f'input folder {input_dir!r} ({len(ins)} images) and target folder {target_dir!r} '
                             f'({len(tgts)} images) do not pair by name: only in input: {only_in[:5]}, only in '
                             f'target: {only_tgt[:5]}; use --pair-by order if the names differ')
        ordered = ((in_by_stem[s], tgt_by_stem[s]) for s in sorted(tgt_by_stem, key=natural_key))
    else:
        raise ValueError(f'pair_by must be "name" or "order", got {pair_by!r}')
    return [(make_key(os.path.splitext(t)[0]), os.path.join(input_dir, i), os.path.join(target_dir, t))
            for i, t in ordered]


def prepare_paired(input_dir, target_dir, out, lmdb=False, crop=None, step=None, pair_by='name', workers=4,
                   compress_level=1, map_size=None, overwrite=False):
    pairs = pair_folders(input_dir, target_dir, pair_by)
    if crop is not None and step is None:
        step = max(1, crop * 3 // 4)
    jobs = [(key, i, t, crop, step, compress_level) for key, i, t in pairs]
    if lmdb:
        if map_size is None:
            map_size = map_size_for([max(a, b) for a, b in zip(_raw_crop_sizes([p[1] for p in pairs], crop, step),
                                                                _raw_crop_sizes([p[2] for p in pairs], crop, step))])
        return _write_pair_lmdbs(jobs, os.path.join(out, 'input.lmdb'), os.path.join(out, 'target.lmdb'), map_size,
                                 compress_level, workers, overwrite, 'paired -> lmdb')
    dirs = [os.path.join(out, 'input'), os.path.join(out, 'target')]
    for d in dirs:
        ensure_new(d, overwrite)
        os.makedirs(d)
    count = 0
    try:
        for results in _run_jobs(jobs, workers, 'paired -> png'):
            for key, in_bytes, _, gt_bytes, _ in results:
                for d, data in zip(dirs, (in_bytes, gt_bytes)):
                    with open(os.path.join(d, f'{key}.png'), 'wb') as f:
                        f.write(data)
                count += 1
    except BaseException:
        for d in dirs:  # leave no half-written layout behind
            shutil.rmtree(d, ignore_errors=True)
        raise
    console.info(f'wrote {count} pairs to {dirs[0]} and {dirs[1]}')
    return count


# ---------------------------------------------------------------------------------------------------- folder-lmdb
def prepare_folder_lmdb(src, out, compress_level=1, map_size=None, overwrite=False):
    names = list_images(src, 'image folder')
    paths = [os.path.join(src, n) for n in names]
    if map_size is None:
        map_size = map_size_for(_raw_crop_sizes(paths, None, None))
    with LmdbWriter([out], map_size, compress_level, overwrite) as writer:
        for name, path in console.progress(list(zip(names, paths)), desc='folder -> lmdb', unit='image'):
            img = read_image(path)
            writer.put(make_key(os.path.splitext(name)[0]), (encode_png(img, compress_level), shape3(img)))
    console.info(f'wrote {len(names)} images (map size {map_size} bytes) to {out}')
    return len(names)


# ------------------------------------------------------------------------------------------------------------ CLI
def _add_lmdb_args(p, workers=True):
    p.add_argument('--compress-level', type=int, default=1, help='PNG compression level 0-9 (default 1)')
    p.add_argument('--map-size', type=int, default=None,
                   help='LMDB map size in bytes (default: computed from the image sizes with margin)')
    p.add_argument('--overwrite', action='store_true', help='replace existing outputs')
    if workers:
        p.add_argument('--workers', type=int, default=min(4, os.cpu_count() or 1), help='reader processes')


def build_parser():
    parser = argparse.ArgumentParser(prog='spikerir-prepare', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)

    p = sub.add_parser('sidd-train', help='SIDD-Medium sRGB scene folders -> cropped LMDBs')
    p.add_argument('--src', default='datasets/SIDD/Data')
    p.add_argument('--out', default='datasets/SIDD/train')
    p.add_argument('--crop', type=int, default=512)
    p.add_argument('--step', type=int, default=384)
    _add_lmdb_args(p)

    p = sub.add_parser('sidd-val', help='SIDD validation .mat blocks -> LMDBs')
    p.add_argument('--noisy', default='datasets/SIDD/ValidationNoisyBlocksSrgb.mat')
    p.add_argument('--gt', default='datasets/SIDD/ValidationGtBlocksSrgb.mat')
    p.add_argument('--out', default='datasets/SIDD/val')
    p.add_argument('--noisy-key', default='ValidationNoisyBlocksSrgb')
    p.add_argument('--gt-key', default='ValidationGtBlocksSrgb')
    _add_lmdb_args(p, workers=False)

    p = sub.add_parser('paired', help='paired input/target folders -> LMDBs or a disk layout')
    p.add_argument('--input', required=True, help='folder of degraded images')
    p.add_argument('--target', required=True, help='folder of clean images')
    p.add_argument('--out', required=True)
    p.add_argument('--lmdb', action='store_true', help='write input.lmdb/target.lmdb instead of input/ target/')
    p.add_argument('--crop', type=int, default=None, help='cut each pair into SIZE x SIZE grid crops')
    p.add_argument('--step', type=int, default=None, help='grid step (default 3/4 of --crop)')
    p.add_argument('--pair-by', choices=['name', 'order'], default='name',
                   help='name: same file stem on both sides (default); order: natural sort order')
    _add_lmdb_args(p)

    p = sub.add_parser('folder-lmdb', help='one image folder -> one LMDB')
    p.add_argument('--src', required=True)
    p.add_argument('--out', required=True, help='path ending in .lmdb')
    _add_lmdb_args(p, workers=False)
    return parser


def main(argv=None):
    import spikerir_plugin  # noqa: F401  (compat shims before basicsr's LmdbMaker is imported)
    parser = build_parser()
    a = parser.parse_args(argv)
    common = dict(compress_level=a.compress_level, map_size=a.map_size, overwrite=a.overwrite)
    try:
        if a.command == 'sidd-train':
            prepare_sidd_train(a.src, a.out, a.crop, a.step, a.workers, **common)
        elif a.command == 'sidd-val':
            prepare_sidd_val(a.noisy, a.gt, a.out, a.noisy_key, a.gt_key, **common)
        elif a.command == 'paired':
            prepare_paired(a.input, a.target, a.out, a.lmdb, a.crop, a.step, a.pair_by, a.workers, **common)
        else:
            prepare_folder_lmdb(a.src, a.out, **common)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        parser.exit(2, f'spikerir-prepare {a.command}: error: {msg}\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
