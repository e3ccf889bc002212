"""spikerir-restore: restore your own images (a file, a folder or a glob) with a trained network.

    spikerir-restore -i noisy_photos/ -o restored/ -opt options/test_SpikerIR_SIDD.yml
    spikerir-restore -i 'shots/*.jpg' -o restored/ --arch SpikerIR --arch-args preset=tiny,T=4 \\
        --ckpt experiments/<name>/models/net_g_latest.pth
    python -m spikerir_plugin.tools.restore -i photo.png -o out/ -opt ... --compare --gt clean/ --energy

The network: either a test options file (-opt: network_g, path.pretrain_network_g, path.param_key_g,
path.strict_load_g, val.tile) or --arch (any registered arch) with --arch-args and --ckpt. --arch-args is a YAML/JSON
mapping ('{preset: tiny, T: 4}') or comma-separated key=value pairs whose values are read as YAML
('width=16,enc_blk_nums=[1,1,28]'). --ckpt (also overrides the options' checkpoint) may be a BasicSR file
(--param-key, default params_ema, falls back to params and back), a raw state dict or an official release.

Outputs: <out>/<input stem><suffix>.<ext> (PNG by default), written atomically; an output that would overwrite its
own input is refused. Images are handled as users expect:
  * gray into a 3-channel net: the gray channel is repeated three times and the mean of the output channels is
    written back as a gray image; color into a 1-channel net: each channel is restored on its own;
  * 16-bit images are read and written at 16 bits (.png/.tif; 8-bit formats such as .jpg get 8 bits);
  * an alpha channel is kept untouched and re-attached (resized when the net changes the scale; formats without
    alpha such as .jpg drop it);
  * JPEG EXIF orientation is applied, as image viewers show it; other depths (float EXR/TIFF) are reported and
    skipped.
A file that cannot be read or restored is reported by name and skipped; the rest are still done, and the exit
status is 1 when any failed (2 for a bad command line, network or checkpoint).

--compare writes <out>/compare/<stem>.png: input | output (| ground truth, the file of the same stem in --gt).
--energy adds a row per image (size, SynOps, MACs, mJ, mean firing rate) to a CSV (default <out>/energy.csv), from
spikerir-energy's counters on the whole image (two extra CPU forwards per image: use it on crops).
--tile S --overlap O bounds memory on large images (an approximation across tiles, see val.tile); --bf16 runs under
bf16 autocast on CUDA only.
"""
import argparse
import copy
import csv
import io
import os
import sys

from spikerir_plugin.tools.lmdb_writing import IMAGE_EXTENSIONS

ENERGY_FIELDS = ('file', 'height', 'width', 'synops', 'macs', 'energy_mJ', 'mean_firing_rate', 'spiking')


# ------------------------------------------------------------------------------------------------------ network
def parse_arch_args(text):
    """'{a: 1, b: [1, 2]}' (YAML/JSON mapping) or 'a=1,b=[1,2]' (values read as YAML) -> dict."""
    import yaml
    text = (text or '').strip()
    if not text:
        return {}
    if text.startswith('{'):
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f'--arch-args: {text!r} is not a valid YAML/JSON mapping ({e})') from None
        if not isinstance(value, dict):
            raise ValueError(f'--arch-args: {text!r} is not a mapping')
        return value
    parts, depth, current = [], 0, ''
    for char in text:  # split at commas outside brackets: enc_blk_nums=[1,1,28],width=16
        depth += (char in '[{(') - (char in ']})')
        if char == ',' and depth == 0:
            parts.append(current)
            current = ''
        else:
            current += char
    parts.append(current)
    args = {}
    for part in filter(None, (p.strip() for p in parts)):
        key, eq, value = part.partition('=')
        if not eq or not key.strip():
            raise ValueError(f'--arch-args: {part!r} is not key=value (e.g. preset=tiny,T=4 or "{{preset: tiny}}")')
        try:
            args[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            raise ValueError(f'--arch-args: the value of {key.strip()!r} ({value!r}) is not valid YAML') from None
    return args


def network_spec(a):
    """(network options, checkpoint, param key, strict, option name for errors, tile from the options)."""
    import yaml
    from spikerir_plugin.utils.options import DEFAULT_PARAM_KEY, network_checkpoint
    if a.opt:
        with open(a.opt) as f:
            opt = yaml.safe_load(f)
        if not isinstance(opt, dict) or 'network_g' not in opt:
            raise ValueError(f'-opt {a.opt!r} has no network_g section (top-level keys: '
                             f'{sorted(opt) if isinstance(opt, dict) else type(opt).__name__})')
        tile = ((opt.get('val') or {}).get('tile')) or None
        ckpt, param_key, strict = network_checkpoint(opt, 'g')
        ckpt = a.ckpt or ckpt
        if not ckpt:
            raise ValueError(f'-opt {a.opt!r} sets no path.pretrain_network_g: give the weights with --ckpt')
        return dict(opt['network_g']), ckpt, a.param_key or param_key, strict, '--ckpt' if a.ckpt else None, tile
    net_opt = {'type': a.arch, **parse_arch_args(a.arch_args)}
    if not a.ckpt:
        raise ValueError('--arch needs --ckpt (the trained weights)')
    return net_opt, a.ckpt, a.param_key or DEFAULT_PARAM_KEY, True, '--ckpt', None


# ------------------------------------------------------------------------------------------------------- inputs
# -------------------------------------------------------------------------------------------------------- main
def build_parser():
    p = argparse.ArgumentParser(prog='spikerir-restore', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('-i', '--input', nargs='+', required=True, metavar='INPUT',
                   help='image files, folders (their images, not recursive) or quoted glob patterns')
    p.add_argument('-o', '--output', required=True, help='output folder')
    net = p.add_mutually_exclusive_group(required=True)
    net.add_argument('-opt', '--opt', help='test options YAML (network_g, path.pretrain_network_g, val.tile)')
    net.add_argument('--arch', help='registered arch name, e.g. SpikerIR, NAFNet, Restormer, ESDNet')
    p.add_argument('--arch-args', default='', help="arch arguments: 'preset=tiny,T=4' or '{preset: tiny, T: 4}'")
    p.add_argument('--ckpt', help='weights (BasicSR net_g_*.pth, raw state dict or official checkpoint); '
                                  'with -opt it replaces path.pretrain_network_g')
    p.add_argument('--param-key', help='entry holding the state dict (default params_ema, falling back to params; '
                                       'with -opt: path.param_key_g)')
    p.add_argument('--ext', default='png', help='output format: png (default), tif, jpg, ... or "same" as the input')
    p.add_argument('--suffix', default='', help='appended to each output stem, e.g. _restored')
    p.add_argument('--tile', type=int, default=None, help='tile size for large images (default: whole images, or '
                                                          'val.tile of -opt)')
    p.add_argument('--overlap', type=int, default=32, help='tile overlap in pixels (default 32)')
    p.add_argument('--device', default='auto', help='auto (CUDA when available), cpu, cuda, cuda:1, ...')
    p.add_argument('--bf16', action='store_true', help='bf16 autocast (CUDA only)')
    p.add_argument('--fast', action='store_true', help='spiking nets: batch norms folded, spike-driven '
                   'convolutions on the CPU (SpikerIR about 2-3x faster there, ESDNet 1.1x; a spike within '
                   'rounding of its threshold can flip, changing the pixels near it by up to a few 1e-2)')
    p.add_argument('--compare', action='store_true', help='also write <out>/compare/<stem>.png: input | output '
                                                          '(| ground truth)')
    p.add_argument('--gt', help='folder of ground-truth images (same stems) for --compare')
    p.add_argument('--energy', nargs='?', const='', default=None, metavar='CSV',
                   help='per-image SynOps, MACs and mJ into CSV (default <out>/energy.csv)')
    return p


def resolve_device(name, bf16, parser):
    import torch
    if name == 'auto':
        name = 'cuda' if torch.cuda.is_available() else 'cpu'
    try:
        device = torch.device(name)
    except RuntimeError:
        parser.error(f'--device {name!r} is not a device (cpu, cuda, cuda:1, ...)')
    if device.type == 'cuda' and not torch.cuda.is_available():
        parser.error(f'--device {name}: CUDA is not available on this machine; use --device cpu')
    if bf16 and device.type != 'cuda':
        parser.error(f'--bf16 needs a CUDA device (running on {device}): bf16 autocast is not supported on the CPU '
                     'here; drop --bf16 or use --device cuda')
    return device


def output_path(a, out_dir, path):
    stem, ext = os.path.splitext(os.path.basename(path))
    ext = ext if a.ext == 'same' else '.' + a.ext.lstrip('.').lower()
    return os.path.join(out_dir, stem + a.suffix + ext), stem


def write_energy_csv(path, rows):
    from spikerir_plugin.utils.atomic import atomic_write_text
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=ENERGY_FIELDS, lineterminator='\n')
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def check_arguments(a, parser):
    """Command-line mistakes, before anything is loaded."""
    if a.arch is None and a.arch_args:
        parser.error('--arch-args goes with --arch (with -opt the arguments come from network_g)')
    if a.gt and not a.compare:
        parser.error('--gt is used by --compare: add --compare')
    if a.gt and not os.path.isdir(a.gt):
        parser.error(f'--gt {a.gt!r} is not a folder')
    if a.tile is not None and (a.tile <= 0 or not 0 <= a.overlap < a.tile):
        parser.error(f'--tile must be > 0 and 0 <= --overlap < --tile (got tile {a.tile}, overlap {a.overlap})')
    if a.ext != 'same' and '.' + a.ext.lstrip('.').lower() not in IMAGE_EXTENSIONS:
        parser.error(f'--ext {a.ext!r}: choose one of {", ".join(e[1:] for e in IMAGE_EXTENSIONS)} or same')


def energy_row(energy_net, path, img, x):
    """One CSV row of spikerir-energy's counts for the network's input ``x`` of image ``path``."""
    from spikerir_plugin.tools.energy_report import measure_energy
    report = measure_energy(energy_net, inputs=x)
    totals = report['totals']
    return {'file': os.path.basename(path), 'height': img.shape[0], 'width': img.shape[1],
            'synops': totals['synops'], 'macs': totals['macs'], 'energy_mJ': f"{totals['energy_mJ']:.6g}",
            'mean_firing_rate': '' if totals['mean_firing_rate'] is None else f"{totals['mean_firing_rate']:.6g}",
            'spiking': report['spiking']}


def main(argv=None):
    parser = build_parser()
    a = parser.parse_args(argv)
    check_arguments(a, parser)
    device = resolve_device(a.device, a.bf16, parser)

    import spikerir_plugin  # noqa: F401  (registers the plugin archs)
    from spikerir_plugin.inference import check_tile_opt, keep_freed_memory
    from spikerir_plugin.tools.image_io import as_display, collect_inputs, compare_strip, find_gt, load_image, \
        to_file_layout
    from spikerir_plugin.tools.restorer import Restorer, RestoreError, build_restore_network
    from spikerir_plugin.utils import console
    from spikerir_plugin.utils.atomic import atomic_imwrite

    if device.type == 'cpu':
        keep_freed_memory()  # no fresh pages for every image's activations (inference/cpu_memory.py)
    try:
        net_opt, ckpt, param_key, strict, option, tile_opt = network_spec(a)
        net = build_restore_network(net_opt, ckpt, param_key, strict, option, 'network_g' if a.opt else '--arch')
        tile = (a.tile, a.overlap) if a.tile is not None else check_tile_opt(tile_opt)
    except (OSError, KeyError, ValueError) as e:
        parser.exit(2, f'spikerir-restore: error: {e.args[0] if isinstance(e, KeyError) and e.args else e}\n')
    paths, failures = collect_inputs(a.input)
    if not paths:
        named = '; '.join(f'{spec}: {reason}' for spec, reason in failures)
        parser.exit(2, f'spikerir-restore: error: no input images found (-i {named})\n')
    for spec, reason in failures:
        console.warn(f'spikerir-restore: {spec}: {reason}')

    energy_net = copy.deepcopy(net).cpu() if a.energy is not None else None
    try:
        restorer = Restorer(net, device, exact=not a.fast, bf16=a.bf16, tile=tile, net_opt=net_opt)
    except ValueError as e:  # no channel count to read; with --fast: no inference copy (inference_network says)
        parser.exit(2, f'spikerir-restore: error: --fast: {e}; drop --fast\n' if a.fast and 'inference copy' in str(e)
                    else f'spikerir-restore: error: {e}\n')
    out_dir = a.output
    energy_csv = None if a.energy is None else (a.energy or os.path.join(out_dir, 'energy.csv'))
    energy_rows, written = [], {}

    bar = console.progress(paths, desc='restore', unit='img', dynamic_ncols=True)
    for path in bar:
        bar.set_postfix_str(os.path.basename(path)[-30:], refresh=False)
        try:
            target, stem = output_path(a, out_dir, path)
            if os.path.abspath(target) == os.path.abspath(path):
                raise RestoreError(f'the output {target!r} would overwrite the input; use another -o or --suffix')
            if target in written:
                raise RestoreError(f'the output {target!r} is already taken by {written[target]!r} (same stem); '
                                   'restore them into different folders')
            img, alpha, peak = load_image(path)
            restored, x = restorer.restore(img, peak)
            atomic_imwrite(target, to_file_layout(restored, alpha, peak, os.path.splitext(target)[1].lower()))
            written[target] = path
            if a.compare:
                panels = [as_display(img, peak), as_display(restored, peak)]
                gt_path = find_gt(a.gt, stem) if a.gt else None
                if a.gt and gt_path is None:
                    console.info(f'spikerir-restore: {path}: no ground truth named {stem}.* in {a.gt}')
                elif gt_path:
                    gt, _, gt_peak = load_image(gt_path)
                    panels.append(as_display(gt, gt_peak))
                atomic_imwrite(os.path.join(out_dir, 'compare', stem + a.suffix + '.png'), compare_strip(panels))
            if energy_net is not None:
                energy_rows.append(energy_row(energy_net, path, img, x))
                write_energy_csv(energy_csv, energy_rows)
        except (RestoreError, OSError, ValueError, RuntimeError) as e:
            failures.append((path, str(e)))
            console.warn(f'spikerir-restore: {path}: {e}')
    bar.close()

    done = len(written)
    console.info(f'restored {done} of {len(paths)} images into {out_dir}'
          + (f'; energy per image: {energy_csv}' if energy_rows else '')
          + (f'; side-by-side views: {os.path.join(out_dir, "compare")}' if a.compare and done else ''))
    if failures:
        console.warn(f'{len(failures)} failed: ' + ', '.join(name for name, _ in failures))
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
