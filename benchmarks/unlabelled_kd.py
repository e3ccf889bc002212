"""Distillation on unlabelled photos: ground truth for only part of the training photos, the rest only as noisy
images that the teacher labels (datasets.train of type UnlabelledImageDataset), every run through basicsr's
training pipeline.

    python benchmarks/unlabelled_kd.py --seeds 0 1 2 --jobs 1 --workdir /tmp/kd_runs   # benchmarks/unlabelled_kd.md

It reuses benchmarks/kd_ablation.py (its data, its NAFNet-w16 teacher, trained once and cached under --workdir, its
sizing of the shipped options files, its runs and scoring). Both arms are the shipped two-step recipe
(options/train_SpikerIR_twin_GaussianDenoise_sigma25.yml, then options/train_SpikerIR_GaussianDenoise_sigma25.yml)
sized as kd_ablation sizes them (student 600 iterations, twin 3x, 48x48 crops, batch 8), changed only in the
training set of both steps:

    labelled   the crops of --labelled photos (default: astronaut, 16 of the 64 training crops) with their ground
               truth (GaussianDenoiseDataset, sigma 25 drawn on the fly), nothing else
    mixed      the same labelled crops plus the crops of the other training photos (chelsea, rocket,
               immunohistochemistry: 48 crops) as noisy images only: one fixed noise draw (sigma 25) per crop,
               clipped and saved as 8-bit PNG like a photo, mixed in by UnlabelledImageDataset (labelled:
               the labelled arm's dataset); their loss targets are the teacher's outputs (step 1: the NAFNet, step 2:
               the twin)
    full       (reference, the harness's recipe: the runs kd_ablation.py trained, reused when they are under
               --workdir) all 64 crops labelled

Equal compute: both arms train the same networks for the same iterations on batches of the same size; the
teacher's output that labels an unlabelled crop is the one the output KD term computes anyway, so a step costs the
same. The compute column is iterations x the step time measured by kd_ablation's step_costs (kept in
<workdir>/unlabelled_kd_step_costs.json), the twin included.

Caveat of this split: the teacher was trained on the clean crops of all four training photos, so its labels of the
three "unlabelled" photos are better than a teacher's on photos it never saw; --unlabelled photos of other
scikit-image photos measure that case.

Scores: PSNR on the held-out `report` photos (kd_ablation's), mean +- std over seeds, raw weights and EMA, and the
paired differences; results in <workdir>/unlabelled_kd.json.
"""
import argparse
import copy
import json
import os
import sys
import threading

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kd_ablation as kd  # noqa: E402
from spikerir_plugin.utils import console  # noqa: E402

CHAINS = {'labelled': ('lab_twin', 'lab'), 'mixed': ('mix_twin', 'mix'), 'full': ('twin', 'recipe')}
DIFFERENCES = (('mixed - labelled (the unlabelled photos, labelled by the teacher)', 'mix', 'lab'),
               ('full - mixed (ground truth for every photo instead)', 'recipe', 'mix'),
               ('full - labelled (the other photos with their ground truth)', 'recipe', 'lab'),
               ('mix_twin - lab_twin (the same, step 1: the twin)', 'mix_twin', 'lab_twin'))


# ---------------------------------------------------------------------------------------------- data
def labelled_folder(workdir, train_dir, photos):
    """The training crops of ``photos`` (clean: their ground truth), copied once from kd_ablation's crops."""
    import shutil
    folder = os.path.join(workdir, 'datasets', 'unlabelled_kd', 'labelled-' + '-'.join(photos))
    if not (os.path.isdir(folder) and os.listdir(folder)):
        os.makedirs(folder, exist_ok=True)
        for name in sorted(os.listdir(train_dir)):
            if name.rsplit('_', 1)[0] in photos:
                shutil.copyfile(os.path.join(train_dir, name), os.path.join(folder, name))
    return folder


def noisy_folder(workdir, photos, grid, noise_seed=2024):
    """Crops of ``photos`` on kd_ablation's grid with one fixed noise draw each (sigma 25), clipped and rounded to
    8-bit PNG: noisy photos without ground truth. Written once."""
    import cv2
    folder = os.path.join(workdir, 'datasets', 'unlabelled_kd', f'noisy-{"-".join(photos)}-s{kd.SIGMA}')
    if os.path.isdir(folder) and os.listdir(folder):
        return folder
    clean = kd.write_crops(folder + '.clean', photos, grid)  # the clean crops are kept aside, never read by training
    tmp = folder + '.tmp'
    os.makedirs(tmp, exist_ok=True)
    for i, name in enumerate(sorted(os.listdir(clean))):
        img = cv2.imread(os.path.join(clean, name)).astype(np.float64)
        noise = np.random.default_rng([noise_seed, i]).standard_normal(img.shape) * kd.SIGMA
        cv2.imwrite(os.path.join(tmp, name), np.clip(img + noise, 0, 255).round().astype(np.uint8))
    os.replace(tmp, folder)
    return folder


def with_unlabelled(opt, noisy_dir):
    """``opt`` whose training set is its own (the labelled part) plus the noisy crops of ``noisy_dir``: the
    labelled dataset's keys go under UnlabelledImageDataset's ``labelled``, the crop, flip and loader keys stay."""
    opt = copy.deepcopy(opt)
    train = opt['datasets']['train']
    outer = ('name', 'gt_size', 'use_hflip', 'use_rot', 'use_shuffle', 'num_worker_per_gpu', 'batch_size_per_gpu',
             'dataset_enlarge_ratio', 'prefetch_mode', 'persistent_workers', 'pin_memory')
    labelled = {k: v for k, v in train.items() if k not in outer}
    mixed = {k: v for k, v in train.items() if k in outer}
    mixed.update(type='UnlabelledImageDataset', dataroot_lq=noisy_dir, io_backend={'type': 'disk'},
                 in_ch=labelled.get('in_ch', 3), labelled=labelled)
    opt['datasets']['train'] = mixed
    return opt


# ---------------------------------------------------------------------------------------------- runs
def chain_options(args, teacher_net, teacher_ckpt, size):
    """(twin options, student options) of the shipped recipe sized as kd_ablation sizes it, for the training
    folder of ``size``; the twin distilled from the NAFNet teacher."""
    shipped_twin, shipped_student = kd.load_options(kd.SHIPPED_TWIN), kd.load_options(kd.SHIPPED_STUDENT)
    twin_opt = kd.resized(shipped_twin, kd.twin_iterations(args, shipped_twin, shipped_student), **size)
    twin_opt['network_t'] = copy.deepcopy(teacher_net)
    twin_opt['path']['pretrain_network_t'] = teacher_ckpt
    return twin_opt, kd.resized(shipped_student, args.iters, **size)


def plan(args, workdir, teacher_net, teacher_ckpt, size, labelled_dir, noisy_dir):
    """{(arm, seed): kd_ablation.Run}: seed by seed, the labelled chain, the mixed chain, then the reference."""
    chains = {'labelled': chain_options(args, teacher_net, teacher_ckpt, dict(size, train_dir=labelled_dir)),
              'full': chain_options(args, teacher_net, teacher_ckpt, size)}
    chains['mixed'] = tuple(with_unlabelled(o, noisy_dir) for o in chains['labelled'])
    runs = {}
    for seed in args.seeds:  # seed by seed, so that a cut-short call leaves whole seeds of every arm
        for chain in [c for c in ('labelled', 'mixed', 'full') if c in args.chains]:
            twin_arm, arm = CHAINS[chain]
            twin = kd.Run(workdir, twin_arm, seed, chains[chain][0], args.curve_points, args.device)
            student_opt = copy.deepcopy(chains[chain][1])
            student_opt['path']['pretrain_network_t'] = twin.ckpt
            runs[twin.key] = twin
            runs[(arm, seed)] = kd.Run(workdir, arm, seed, student_opt, args.curve_points, args.device, (twin.key,))
    return chains, runs


def step_seconds(workdir, twin_opt, student_opt, args):
    """Seconds per training step of the twin and the student (kd_ablation.step_costs, round robin), measured once
    and kept in unlabelled_kd_step_costs.json (a file of this benchmark's own: kd_ablation's step_costs.json is
    rewritten by its own calls)."""
    import tempfile
    path = os.path.join(workdir, 'unlabelled_kd_step_costs.json')
    cache = {}
    if os.path.isfile(path):
        with open(path) as f:
            cache = json.load(f)
    key = kd.digest([{k: v for k, v in o.items() if k not in ('path', 'name', 'val', 'logger')}
                     for o in (twin_opt, student_opt)] + [args.step_cost, args.device])
    if key not in cache:
        # the teachers (the student's twin among them) need not be trained yet: an untrained one costs the same
        sets = kd.with_untrained_teachers({'twin': twin_opt, 'recipe': student_opt},
                                          tempfile.mkdtemp(prefix='unlabelled_kd_'))
        console.status(f'timing {args.step_cost} training steps of the twin and the student (round robin)')
        cache[key] = kd.step_costs(sets, args.step_cost, args.device)
        kd.write_json(path, cache)
    return cache[key]


def summary(results, seeds, compute, walls):
    rows = {}
    for chain, arms in CHAINS.items():
        for arm in arms:
            per_seed = {s: results[(arm, s)] for s in seeds if (arm, s) in results}
            if not per_seed:
                continue
            rows[arm] = {'chain': chain, 'seeds': sorted(per_seed), 'iters': next(iter(per_seed.values()))['iters'],
                         'compute_s': compute[arm], 'wall_s': kd.mean_std(walls[arm])}
            for key in kd.PARAM_KEYS:
                values = [r['scores'][key]['psnr'] for r in per_seed.values()]
                rows[arm][f'psnr_{key}'] = kd.mean_std(values)
                rows[arm][f'psnr_{key}_per_seed'] = dict(zip(sorted(per_seed), values))
    diffs = {}
    for label, a, b in DIFFERENCES:
        common = [s for s in seeds if (a, s) in results and (b, s) in results]
        if common:
            diffs[label] = {key: {'seeds': common, 'mean_std': kd.mean_std(
                [results[(a, s)]['scores'][key]['psnr'] - results[(b, s)]['scores'][key]['psnr'] for s in common])}
                for key in kd.PARAM_KEYS}
    return rows, diffs


def table(rows, diffs, fixed, header):
    lines = [header, '', '| arm | training set | iters | compute s | wall s | PSNR params | PSNR params_ema | seeds |',
             '|---|---|---:|---:|---:|---:|---:|---|']
    for name, psnr, note in fixed:
        lines.append(f'| {name} | {note} | | | | {psnr:.2f} | | |')
    for arm, r in rows.items():
        lines.append(f'| {arm} | {r["chain"]} | {r["iters"]} | {r["compute_s"]:.0f} | {r["wall_s"][0]:.0f} | '
                     f'{kd.fmt(r["psnr_params"]).strip()} | {kd.fmt(r["psnr_params_ema"]).strip()} | '
                     f'{",".join(map(str, r["seeds"]))} |')
    lines += ['', 'Paired PSNR differences, dB (mean +- std over seeds): params | params_ema', '']
    for label, d in diffs.items():
        lines.append(f'- {label}: {kd.fmt(d["params"]["mean_std"], True).strip()} | '
                     f'{kd.fmt(d["params_ema"]["mean_std"], True).strip()} (seeds '
                     f'{",".join(map(str, d["params"]["seeds"]))})')
    return '\n'.join(lines)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--chains', nargs='+', choices=tuple(CHAINS), default=list(CHAINS),
                        help='which chains to train or read (full: the reference, all photos labelled)')
    parser.add_argument('--labelled', nargs='+', default=['astronaut'],
                        help='training photos whose crops keep their ground truth')
    parser.add_argument('--unlabelled', nargs='+',
                        help='photos whose noisy crops are added without ground truth (default: the other '
                             'training photos)')
    parser.add_argument('--iters', type=int, default=600, help="the student's iterations")
    parser.add_argument('--twin-iters', type=int, help="the twin's iterations (default: the shipped ratio, 3x)")
    parser.add_argument('--teacher-iters', type=int, default=2000, help="kd_ablation's teacher (its cache key)")
    parser.add_argument('--gt-size', type=int, default=48)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--train-grid', type=int, default=4)
    parser.add_argument('--eval-grid', type=int, default=3)
    parser.add_argument('--eval', choices=('tune', 'report'), default='report')
    parser.add_argument('--workdir', default='kd_ablation_work')
    parser.add_argument('--jobs', type=int, default=1)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--device', choices=('cpu', 'cuda'), default='cpu')
    parser.add_argument('--curve-points', type=int, default=6)
    parser.add_argument('--step-cost', type=int, default=40)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    import spikerir_plugin  # noqa: F401  (registers the plugin's archs, datasets, models)
    import torch
    from spikerir_plugin import demo
    torch.set_num_threads(args.threads)
    workdir = os.path.abspath(args.workdir)
    unknown = sorted(set(args.labelled) - set(demo.TRAIN_PHOTOS))
    if unknown:
        raise SystemExit(f'--labelled: {unknown} are not training photos; valid: {", ".join(demo.TRAIN_PHOTOS)}')
    unlabelled = tuple(args.unlabelled or [p for p in demo.TRAIN_PHOTOS if p not in args.labelled])

    photos, size = kd.harness_data(args, workdir)
    teacher_net, teacher_ckpt, teacher_info = kd.train_teacher(workdir, args.teacher_iters, size['train_dir'],
                                                               size['val_dir'], args.gt_size, args.device)
    labelled_dir = labelled_folder(workdir, size['train_dir'], tuple(args.labelled))
    noisy_dir = noisy_folder(workdir, unlabelled, args.train_grid)
    chains, runs = plan(args, workdir, teacher_net, teacher_ckpt, size, labelled_dir, noisy_dir)

    twin_opt, student_opt = chains['full']
    costs = step_seconds(workdir, twin_opt, student_opt, args)
    compute = {}
    for twin_arm, arm in CHAINS.values():  # every chain: the same networks, batch and iterations
        compute[twin_arm] = costs['twin'] * int(twin_opt['train']['total_iter'])
        compute[arm] = compute[twin_arm] + costs['recipe'] * args.iters
    todo = [r for r in runs.values() if not r.trained]
    console.status(f'{len(runs)} runs ({len(runs) - len(todo)} already trained); labelled {", ".join(args.labelled)} '
                   f'({len(os.listdir(labelled_dir))} crops), unlabelled {", ".join(unlabelled)} '
                   f'({len(os.listdir(noisy_dir))} noisy crops); logs under {os.path.join(workdir, "runs")}')
    results, lock = {}, threading.Lock()
    failed = kd.run_all(list(runs.values()), args.jobs, lambda run: kd.train_and_score(run, args, lock, results))

    walls = {}
    for (arm, seed), r in results.items():
        twin = next((t for t, a in CHAINS.values() if a == arm), None)
        walls.setdefault(arm, []).append(r['wall_s'] + (results[(twin, seed)]['wall_s'] if twin else 0.0))
    rows, diffs = summary(results, args.seeds, compute, walls)
    # the labels' quality: the teacher on the noisy training crops, against their clean versions kept aside
    labels_opt = copy.deepcopy(student_opt)
    labels_opt['datasets']['val'] = {'name': 'unlabelled', 'type': 'PairedImageDataset', 'dataroot_lq': noisy_dir,
                                     'dataroot_gt': noisy_dir + '.clean', 'io_backend': {'type': 'disk'}}
    fixed = [('noisy', kd.evaluate(student_opt, None, None, None, args.device)['psnr'], 'the input'),
             ('teacher', kd.evaluate(student_opt, teacher_net, teacher_ckpt, 'params', args.device)['psnr'],
              f'NAFNet-w16, {args.teacher_iters} it on all 64 clean crops (given)'),
             ('its labels', kd.evaluate(labels_opt, teacher_net, teacher_ckpt, 'params', args.device)['psnr'],
              f'the teacher on the {len(os.listdir(noisy_dir))} unlabelled crops, scored against their ground '
              'truth (which training never reads)')]
    header = (f'Unlabelled photos labelled by the teacher: the shipped recipe ({kd.SHIPPED_TWIN} -> '
              f'{kd.SHIPPED_STUDENT}) sized: student {args.iters} it, twin {twin_opt["train"]["total_iter"]} it, '
              f'{args.gt_size}x{args.gt_size} crops, batch {args.batch}; labelled: {", ".join(args.labelled)} '
              f'({len(os.listdir(labelled_dir))} crops); unlabelled: {", ".join(unlabelled)} '
              f'({len(os.listdir(noisy_dir))} noisy crops); scored on the {args.eval} photos ({", ".join(photos)}, '
              f'{len(os.listdir(size["val_dir"]))} crops), sigma {kd.SIGMA}. compute s: iterations x measured step '
              f'time (twin {costs["twin"]:.3f} s, student {costs["recipe"]:.3f} s), a student\'s twin included; '
              'wall s: the same, measured, mean over seeds')
    text = table(rows, diffs, fixed, header)
    console.info('\n' + text)
    kd.write_json(os.path.join(workdir, 'unlabelled_kd.json'),
                  {'rows': rows, 'differences': diffs, 'fixed': fixed, 'table': text, 'step_s': costs,
                   'labelled': args.labelled, 'unlabelled': unlabelled, 'seeds': args.seeds,
                   'failed': sorted(map(list, failed)), 'command': ' '.join(['python'] + sys.argv)})
    if failed:
        raise SystemExit(f'{len(failed)} run(s) failed or skipped: {sorted(failed)}')
    return rows, diffs


if __name__ == '__main__':
    main()
