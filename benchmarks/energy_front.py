"""The PSNR-energy front that train.energy_opt (SynOpsLoss) buys: the shipped recipe (analog twin distilled from an
ANN teacher, then the spiking student distilled from its twin) trained at several energy settings and seeds, every
run through basicsr's training pipeline, scored on held-out photos and measured by spikerir-energy.

    python benchmarks/energy_front.py --presets tiny base --weights 0 0.5 1 2 4 --seeds 0 1 2 --jobs 2
    python benchmarks/energy_front.py --presets tiny --targets 0.16 0.13 0.10 --seeds 0 1 2        # budgets

Runs come from kd_ablation.py's machinery and data (its teacher, crops, sizing, pipeline runs, evaluation, run
folders named by a digest of what their training depends on, so a second call trains only what is missing):

    twin        step 1 (options/train_SpikerIR_twin_GaussianDenoise_sigma25.yml, the preset's twin), one per preset
                and seed, shared by every energy setting: the analog twin has no spikes to penalise
    w=<x>       step 2 (options/train_SpikerIR_GaussianDenoise_sigma25.yml) with train.energy_opt a plain penalty:
                {type: SynOpsLoss, loss_weight: x} in mJ per image of the training crop; w=0 is the recipe itself
    t=<mJ>      step 2 with a budget: {target_mj: mJ, image_size: --energy-size, loss_weight: --budget-weight}
                (the spike-driven part, e_ac x SynOps, per image of that size)

All settings of a preset train the same iterations on the same crops and seeds (equal compute: the term's hooks cost
a few per cent of a step). --alone trains the student without a teacher instead of the recipe (no twin).

Energy: spikerir-energy's measure_energy of the trained EMA weights (params_ema) on --energy-size x --energy-size
photos (the report's default images), total mJ per image = 4.6 pJ x MACs + 0.9 pJ x SynOps, and its SynOps and
mean firing rate. Reference: NAFNet-width32 (SIDD) 18.5 mJ per 128x128 image; the targets of issue 22 are 1/100
(tiny) and 1/50 (base) of it at most 0.2 dB below w=0.

Output (under --workdir): the table on the console (preset, setting, PSNR mean +- std over seeds, mJ per image,
SynOps, firing rate, PSNR difference to w=0 paired by seed), front.json and front.png (PSNR against mJ per preset).
"""
import argparse
import copy
import json
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import kd_ablation as ka  # noqa: E402  (the data, sizing, runs and evaluation of the distillation ablation)
from spikerir_plugin.utils import console  # noqa: E402

NAFNET_W32_MJ_128 = 18.5  # NAFNet-width32 (SIDD) per 128x128 image, docs/energy.md


def setting_name(kind, value):
    return f'{kind}={value:g}'


def energy_opt(kind, value, energy_size, budget_weight):
    if kind == 'w':
        return {'type': 'SynOpsLoss', 'loss_weight': float(value), 'unit': 'mJ'} if value else None
    return {'type': 'SynOpsLoss', 'target_mj': float(value), 'image_size': int(energy_size),
            'loss_weight': float(budget_weight)}


def with_preset(opt, preset):
    opt = copy.deepcopy(opt)
    for key in ('network_g', 'network_t'):
        if opt.get(key, {}).get('type') == 'SpikerIR':
            opt[key]['preset'] = preset
    return opt


def measure(net_spec, ckpt, size):
    """spikerir-energy's totals for the trained EMA weights, per image of size x size."""
    from spikerir_plugin.archs.arch_util import input_channels
    from spikerir_plugin.tools.energy_report import make_input, measure_energy
    from spikerir_plugin.utils.options import network_from_options
    net = network_from_options(copy.deepcopy(net_spec), checkpoint=ckpt, param_key='params_ema')
    x = make_input(size, 4, channels=input_channels(net, net_spec))
    totals = measure_energy(net, inputs=x)['totals']
    return {'mJ_per_image': totals['energy_mJ_per_image'], 'synops_per_image': totals['synops'] / x.shape[0],
            'macs_per_image': totals['macs'] / x.shape[0], 'mean_firing_rate': totals['mean_firing_rate']}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--presets', nargs='+', default=['tiny', 'base'], choices=['tiny', 'base'])
    p.add_argument('--weights', type=float, nargs='*', default=[0, 0.5, 1, 2, 4],
                   help='plain-penalty settings: SynOpsLoss loss_weight (mJ units); 0 = the recipe')
    p.add_argument('--targets', type=float, nargs='*', default=[],
                   help='budget settings: target_mj per --energy-size image (spike-driven part)')
    p.add_argument('--budget-weight', type=float, default=1.0, help='loss_weight of the budget settings')
    p.add_argument('--energy-size', type=int, default=128, help='image side of budgets and of the energy figures')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--alone', action='store_true', help='the student without a teacher instead of the recipe')
    p.add_argument('--iters', type=int, default=600, help="the student's iterations")
    p.add_argument('--twin-iters', type=int, help="the twin's iterations (default: the shipped files' ratio)")
    p.add_argument('--teacher-iters', type=int, default=2000)
    p.add_argument('--gt-size', type=int, default=48)
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--train-grid', type=int, default=4)
    p.add_argument('--eval-grid', type=int, default=3)
    p.add_argument('--eval', choices=('tune', 'report'), default='report')
    p.add_argument('--workdir', default='energy_front_work')
    p.add_argument('--trained-only', action='store_true', help='train nothing: the table of the runs already trained')
    p.add_argument('--jobs', type=int, default=1)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--device', choices=('cpu', 'cuda'), default='cpu')
    return p


def settings_of(args):
    """[(kind, value)] of the energy settings, w=0 (the unpenalised reference of the paired differences) first."""
    settings = [('w', w) for w in args.weights] + [('t', t) for t in args.targets]
    if ('w', 0) not in settings:
        settings.insert(0, ('w', 0.0))
    return settings


class FrontRun(ka.Run):
    """kd_ablation's Run, keyed by its preset too (every preset has a 'twin' and a 'recipe' of each seed)."""

    def __init__(self, preset, setting, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.preset, self.setting = preset, setting

    @property
    def key(self):
        return (self.preset, self.arm, self.seed)


def plan_runs(args, workdir, size, settings):
    """{key: kd_ablation Run} of every twin and student run, and the twin's iterations."""
    from spikerir_plugin.utils.options import student_alone_options
    train_dir, val_dir = size['train_dir'], size['val_dir']
    shipped_twin, shipped_student = ka.load_options(ka.SHIPPED_TWIN), ka.load_options(ka.SHIPPED_STUDENT)
    twin_iters = ka.twin_iterations(args, shipped_twin, shipped_student)
    if not args.alone:
        teacher_net, teacher_ckpt, _ = ka.train_teacher(workdir, args.teacher_iters, train_dir, val_dir,
                                                        args.gt_size, args.device)
    runs = {}
    for preset in args.presets:
        student = with_preset(ka.resized(shipped_student, args.iters, **size), preset)
        twin_opt = None
        if args.alone:
            student = student_alone_options(student)
        else:
            twin_opt = with_preset(ka.resized(shipped_twin, twin_iters, **size), preset)
            twin_opt['network_t'] = copy.deepcopy(teacher_net)
            twin_opt['path']['pretrain_network_t'] = teacher_ckpt
        # the twins and unpenalised students carry kd_ablation's arm names (its --preset runs are the same options,
        # the preset in their digest), so that the runs it trained are reused
        chain = twin_opt is not None
        for seed in args.seeds:
            deps = ()
            if twin_opt is not None:
                twin = FrontRun(preset, None, workdir, 'twin', seed, twin_opt, 1, args.device)
                runs[twin.key] = twin
                deps = (twin.key,)
            for kind, value in settings:
                opt = copy.deepcopy(student)
                spec = energy_opt(kind, value, args.energy_size, args.budget_weight)
                if spec is not None:
                    opt['train']['energy_opt'] = spec
                if deps:
                    opt['path']['pretrain_network_t'] = runs[deps[0]].ckpt
                arm = 'recipe' if chain and spec is None else f'{preset}-{setting_name(kind, value)}'
                run = FrontRun(preset, setting_name(kind, value), workdir, arm, seed, opt, 1, args.device, deps)
                runs[run.key] = run
    return runs, twin_iters


def run_worker(args, results):
    """The function kd_ablation's run_all calls on each run: kd_ablation's train_and_score (train unless trained,
    score both weight sets, its result file, so that either benchmark reuses the other's runs), then a student's
    energy (once, cached in its result) into results[(preset-setting, seed)]."""
    lock = threading.Lock()

    def work(run):
        ka.train_and_score(run, args, lock, {})  # kd_ablation's training, scores and result file (shared runs)
        if run.setting is None:  # a twin: trained for the students, not on the front
            return
        with open(run.result_path) as f:
            result = json.load(f)
        key = f'energy_{args.energy_size}'
        if key not in result:
            with lock:
                result[key] = measure(run.opt['network_g'], run.ckpt, args.energy_size)
            ka.write_json(run.result_path, result)
        scores = result['scores'][args.eval]['params_ema']
        # keyed by preset and setting: the unpenalised run carries kd_ablation's arm name
        results[(f'{run.preset}-{run.setting}', run.seed)] = dict(result, preset=run.preset, setting=run.setting,
                                                                   scores=scores, energy=result[key])
        console.status(f'{time.strftime("%H:%M:%S")} {run.preset}-{run.setting} seed {run.seed}: PSNR '
                       f'{scores["psnr"]:.2f}, {result[key]["mJ_per_image"]:.4f} mJ')

    return work


def report(args, workdir, results, settings, twin_iters, failed):
    """The table on the console, front.json and front.png; exits with an error when a run failed."""
    rows = summarise(results, args.presets, [setting_name(k, v) for k, v in settings], args.seeds, args.energy_size)
    table = format_table(rows, args)
    console.info('\n' + table)
    out = {'rows': rows, 'table': table, 'settings': settings, 'seeds': args.seeds, 'iters': args.iters,
           'twin_iters': None if args.alone else twin_iters, 'energy_size': args.energy_size, 'eval': args.eval,
           'recipe': 'alone' if args.alone else 'twin -> distilled student', 'failed': sorted(map(list, failed)),
           'command': ' '.join([os.path.basename(sys.executable)] + sys.argv)}
    ka.write_json(os.path.join(workdir, 'front.json'), out)
    if rows:
        plot(rows, args, os.path.join(workdir, 'front.png'))
    console.info(f'\nresults: {os.path.join(workdir, "front.json")}; plot: {os.path.join(workdir, "front.png")}')
    if failed:
        raise SystemExit(f'{len(failed)} run(s) failed or skipped: {sorted(failed)}')
    return out


def main(argv=None):
    args = build_parser().parse_args(argv)

    import spikerir_plugin  # noqa: F401
    import torch
    torch.set_num_threads(args.threads)
    workdir = os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    _, size = ka.harness_data(args, workdir)
    settings = settings_of(args)
    runs, twin_iters = plan_runs(args, workdir, size, settings)
    if args.trained_only:  # the table of what exists, e.g. one seed for the sweep and three at the chosen points
        runs = {key: run for key, run in runs.items() if run.trained}
        for run in runs.values():
            run.deps = tuple(d for d in run.deps if d in runs)
    results = {}
    failed = ka.run_all(list(runs.values()), args.jobs, run_worker(args, results))
    return report(args, workdir, results, settings, twin_iters, failed)


def summarise(results, presets, settings, seeds, energy_size):
    """Per preset and setting: mean +- std over seeds of PSNR, mJ, SynOps and firing rate; the PSNR difference to
    the same preset's w=0, paired by seed."""
    rows = []
    for preset in presets:
        reference = {s: results[(f'{preset}-w=0', s)]['scores']['psnr'] for s in seeds
                     if (f'{preset}-w=0', s) in results}
        for setting in settings:
            per_seed = {s: results[(f'{preset}-{setting}', s)] for s in seeds if (f'{preset}-{setting}', s) in results}
            if not per_seed:
                continue
            row = {'preset': preset, 'setting': setting, 'seeds': sorted(per_seed)}
            row['psnr'] = ka.mean_std([r['scores']['psnr'] for r in per_seed.values()])
            for key in ('mJ_per_image', 'synops_per_image', 'mean_firing_rate'):
                row[key] = ka.mean_std([r['energy'][key] for r in per_seed.values()])
            common = [s for s in per_seed if s in reference]
            row['psnr_vs_w0'] = ka.mean_std([per_seed[s]['scores']['psnr'] - reference[s] for s in common]) \
                if common else None
            row['fraction_of_nafnet_w32'] = row['mJ_per_image'][0] / NAFNET_W32_MJ_128 \
                if row['mJ_per_image'][0] and energy_size == 128 else None
            rows.append(row)
    return rows


def format_table(rows, args):
    head = (f'PSNR-energy front ({"student alone" if args.alone else "recipe: twin -> distilled student"}, '
            f'{args.iters} it, {args.gt_size}x{args.gt_size} crops, batch {args.batch}; {args.eval} photos; energy '
            f'per {args.energy_size}x{args.energy_size} image, params_ema)')
    lines = [head, f'{"preset":7s} {"setting":9s} {"PSNR dB":>15s} {"vs w=0":>15s} {"mJ":>8s} {"x NAFNet-w32":>12s}'
                   f' {"SynOps":>10s} {"rate":>6s}  seeds']
    for r in rows:
        several = len(r['seeds']) > 1  # a std only over several seeds

        def value(ms, sign=False):
            return ka.fmt(ms, sign=sign) if several else f'{ms[0]:{"+" if sign else ""}6.2f}'
        diff = value(r['psnr_vs_w0'], sign=True) if r['psnr_vs_w0'] else '-'
        frac = f'1/{1 / r["fraction_of_nafnet_w32"]:.0f}' if r['fraction_of_nafnet_w32'] else '-'
        lines.append(f'{r["preset"]:7s} {r["setting"]:9s} {value(r["psnr"]):>15s} {diff:>15s} '
                     f'{r["mJ_per_image"][0]:8.4f} {frac:>12s} {r["synops_per_image"][0] / 1e6:9.1f}M '
                     f'{r["mean_firing_rate"][0]:6.3f}  {",".join(map(str, r["seeds"]))}')
    if args.energy_size != 128:
        lines.append('(x NAFNet-w32: only with --energy-size 128, the size of its figure)')
    return '\n'.join(lines)


def plot(rows, args, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from spikerir_plugin.utils.atomic import atomic_savefig
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for preset in dict.fromkeys(r['preset'] for r in rows):
        own = sorted((r for r in rows if r['preset'] == preset), key=lambda r: r['mJ_per_image'][0])
        ax.errorbar([r['mJ_per_image'][0] for r in own], [r['psnr'][0] for r in own],
                    xerr=[r['mJ_per_image'][1] for r in own], yerr=[r['psnr'][1] for r in own], marker='o',
                    capsize=3, label=preset)
        for r in own:
            ax.annotate(r['setting'], (r['mJ_per_image'][0], r['psnr'][0]), fontsize=7, xytext=(3, 3),
                        textcoords='offset points')
    if args.energy_size == 128:
        for share, style in ((100, ':'), (50, '--')):
            ax.axvline(NAFNET_W32_MJ_128 / share, color='gray', linestyle=style, label=f'1/{share} NAFNet-w32')
    ax.set_xlabel(f'energy per {args.energy_size}x{args.energy_size} image (mJ, 45 nm)')
    ax.set_ylabel('PSNR (dB)')
    ax.set_title('PSNR-energy front of train.energy_opt')
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)


if __name__ == '__main__':
    main()
