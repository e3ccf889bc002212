"""The SNN restoration zoo in one table: parameters, SynOps, MACs, energy and CPU time per image, and PSNR/SSIM on
a common small task trained alone and distilled at equal compute, every arch through basicsr's training pipeline.

    python benchmarks/zoo.py --workdir /tmp/kd_runs --jobs 2      # benchmarks/zoo.md (runs under <workdir>/zoo/)
    python benchmarks/zoo.py --no-train                             # the static columns only (random-init weights)

Rows (--archs; the trained rows are narrow where the arch's default cannot train on one CPU core in the budget):

    tiny           SpikerIR preset tiny, T 4 (the shipped student, options/train_SpikerIR_GaussianDenoise_sigma25.yml)
    base           SpikerIR preset base, T 4
    esdnet         ESDNet dim 8, blocks 1/1/1 (encoder and decoder), reduction_c 4 (dim / 16 would be 0), T 4
    esdnet-paper   ESDNet at the paper's (released) width: dim 48, encoder 4/4/8, decoder 2/2/2; static columns only
    spiden         SPIDEN width 16, depth 17, T 4 (the depth of its DnCNN-S default, a quarter of its width)
    spiden-paper   SPIDEN default (DnCNN-S size: width 64, depth 17); static columns only
    vlif           VLIF dim 8, blocks 1 (levels 2, 3), reduction_c 4, T 4
    vlif-released  VLIF released configuration (dim 48, encoder 4/4/8, decoder 2/2); static columns only
    spikerain      SpikeRain dim 8, blocks 1/1/1, growth rate 8, reduction_c 4, T 4
    spikerain-m    SpikeRain-M (dim 48, encoder 4/4/8, decoder 2/2/2, growth 24); static columns only
    nafnet         NAFNet width 16 (spikerir_plugin.demo.TEACHER_NET), the ANN reference; trained alone only (its
                   distilled arm would be a NAFNet-w16 taught by a NAFNet-w16)

The static columns, per --size x --size image (256): parameters; SynOps, MACs and mJ from spikerir-energy's
measure_energy (E = 4.6 pJ x MAC + 0.9 pJ x SynOp; VLIF's multi-level spikes k/4 cost k SynOps where a conv reads
them, see docs/zoo.md) on the report's default photo (astronaut) with Gaussian noise sigma 25, the task's input;
CPU time of one forward under torch.no_grad with one thread, of the network in eval mode and of its fast inference
copy (inference_network(net, exact=False); NAFNet has none: its eval network), the median of --repeats, every
network timed round robin in this process, with ratios against NAFNet-w16 timed in the same rounds. Weights: the
trained rows use seed 0's EMA weights of the arm trained alone (firing rates, hence SynOps, depend on the weights);
the static-only rows (and every row under --no-train) random initialisation with batch-norm statistics of one
batch (so that every layer is active, as in docs/zoo.md).

The trained columns. Task and data: kd_ablation.py's harness (harness_data): Gaussian denoising sigma 25, clean 96x96
crops of the four demo training photos with noise drawn on the fly, scored on the held-out `report` photos
(motorcycle, coins, brick, clock: 36 crops, a fixed noise draw), PSNR/SSIM as the models' own validation computes
them, of the EMA weights (params_ema; the raw weights are in results.json). Two arms per arch, both built from the
shipped options and changed only in network_g / network_t and size:

    alone      student_alone_options of the distilled arm (SpikingSRModel, no teacher): the training keys of
               options/train_SpikerIR_GaussianDenoise_sigma25.yml (AdamW 1e-3, weight decay 1e-4, cosine LR,
               L1 + 0.1 FFT, EMA 0.999 with warm-up, flips and rotations; checked equal at start-up)
    distilled  options/train_SpikerIR_twin_GaussianDenoise_sigma25.yml, the shipped output-KD-from-an-ANN file
               (SpikerIRDistillModel, L1 output KD at a constant weight 1, no hints: the student file's hints and
               init_from_teacher need a teacher of the student's own arch), network_g the arch, network_t the
               NAFNet-w16 teacher trained by kd_ablation's train_teacher (2000 iterations on 48x48 crops, reused
               from --workdir; given, not counted in the compute)

Equal compute: each arch's training step is timed for both arms round robin in one process (kd_ablation's
step_costs, kept in <workdir>/zoo/step_costs.json so a second call trains the same runs); the alone arm trains
--iters iterations, the distilled arm round(--iters x alone step / distilled step) (it runs the teacher too).

Size choices (budget: the training part about 60 minutes of one CPU core; 39 runs): --iters 200, 32x32 crops
(--gt-size; the teacher's 48 is kept, --teacher-gt-size), batch 4 (--batch), 3 seeds; crops and held-out sets as
kd_ablation (--train-grid 4: 16 crops a photo, --eval-grid 3: 9). The size keys changed in the shipped files are
kd_ablation's (train.total_iter with the schedules scaled, datasets.train.{dataroot_gt, gt_size, batch_size_per_gpu,
num_worker_per_gpu 0, persistent_workers false}, datasets.val.{dataroot_gt, name}, val.val_freq past the end (one
validation: basicsr's final one), logger, manual_seed, num_gpu).

Output: the tables on the console, --out (markdown: both tables, the sizes and the command), results.json and per
run its options, training log and scores under <workdir>/zoo/. Runs are cached by a digest of their training
options: a stopped call resumes, a second call trains nothing.
"""
import argparse
import copy
import os
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import kd_ablation as ka  # noqa: E402  (the harness data, teacher, runs, step costs and evaluation)
from spikerir_plugin.demo import TEACHER_NET  # noqa: E402  (the teacher of the demo and the harness)
from spikerir_plugin.utils import console  # noqa: E402

SIGMA = ka.SIGMA
ONE = [1, 1, 1, 1]
# id: (row name, network_g, trained here, distilled arm)
ZOO = {
    'tiny': ('SpikerIR tiny', {'type': 'SpikerIR', 'preset': 'tiny', 'T': 4}, True, True),
    'base': ('SpikerIR base', {'type': 'SpikerIR', 'preset': 'base', 'T': 4}, True, True),
    'esdnet': ('ESDNet w8', {'type': 'ESDNet', 'dim': 8, 'en_num_blocks': ONE, 'de_num_blocks': ONE,
                             'reduction_c': 4, 'T': 4}, True, True),
    'esdnet-paper': ('ESDNet (paper width 48)', {'type': 'ESDNet'}, False, False),
    'spiden': ('SPIDEN w16', {'type': 'SPIDEN', 'width': 16, 'depth': 17, 'T': 4}, True, True),
    'spiden-paper': ('SPIDEN (DnCNN-S size, w64)', {'type': 'SPIDEN'}, False, False),
    'vlif': ('VLIF w8', {'type': 'VLIF', 'dim': 8, 'en_num_blocks': ONE, 'de_num_blocks': ONE, 'reduction_c': 4,
                         'T': 4}, True, True),
    'vlif-released': ('VLIF (released, dim 48)', {'type': 'VLIF'}, False, False),
    'spikerain': ('SpikeRain w8', {'type': 'SpikeRain', 'dim': 8, 'en_num_blocks': ONE, 'de_num_blocks': ONE,
                                   'growth_rate': 8, 'reduction_c': 4, 'T': 4}, True, True),
    'spikerain-m': ('SpikeRain-M (released)', {'type': 'SpikeRain', 'preset': 'M'}, False, False),
    'nafnet': ('NAFNet-w16 (ANN)', TEACHER_NET, True, False),
}
REFERENCE = 'nafnet'  # the ratios' baseline
ARMS = ('alone', 'distilled')


# ---------------------------------------------------------------------------------------------- options
def arm_options(network_g, teacher_ckpt, iters, size):
    """(alone, distilled) options for one arch: the shipped files changed in network_g / network_t and size only."""
    from spikerir_plugin.utils.options import student_alone_options
    distilled = ka.resized(ka.load_options(ka.SHIPPED_TWIN), iters, **size)
    distilled['network_g'] = copy.deepcopy(network_g)
    distilled['network_t'] = copy.deepcopy(TEACHER_NET)
    distilled['path']['pretrain_network_t'] = teacher_ckpt
    return student_alone_options(distilled), distilled


def check_shipped_training_keys(size):
    """The alone arm, made from the twin (output-KD) file, has exactly the student file's training keys."""
    from spikerir_plugin.utils.options import student_alone_options
    ours, _ = arm_options(ZOO['tiny'][1], 'teacher.pth', 10, size)
    shipped = student_alone_options(ka.resized(ka.load_options(ka.SHIPPED_STUDENT), 10, **size))
    for key in set(ours) | set(shipped):
        if key not in ('name', 'network_g') and ours.get(key) != shipped.get(key):
            raise SystemExit(f'the alone arm differs from {ka.SHIPPED_STUDENT} in {key!r}')


def plan_runs(zoo_dir, archs, teacher_ckpt, args, size):
    """{(arm id, seed): Run} (every arch's seed 0 first, so a stopped call has whole seeds), the step costs and each
    arm's iterations."""
    options = {}
    for a in archs:
        if not ZOO[a][2]:
            continue
        alone, distilled = arm_options(ZOO[a][1], teacher_ckpt, args.iters, size)
        options[f'{a}-alone'] = alone
        if ZOO[a][3]:
            options[f'{a}-distilled'] = distilled
    costs = ka.measured_step_costs(zoo_dir, options, args.step_cost, args.device) if options else {}
    iters = {}
    for key, opt in options.items():
        arch, arm = key.rsplit('-', 1)
        n = args.iters if arm == 'alone' else max(1, int(round(args.iters * costs[f'{arch}-alone'] / costs[key])))
        options[key] = ka.rescale_iterations(opt, n)
        iters[key] = n
    runs = {}
    for seed in args.seeds:
        for key, opt in options.items():
            run = ka.Run(zoo_dir, key, seed, opt, 1, args.device)
            # one validation, basicsr's final one (the scores come from evaluate); not part of the run's digest
            run.opt['val']['val_freq'] = iters[key] + 1
            runs[run.key] = run
    return runs, costs, iters


# ---------------------------------------------------------------------------------------------- static columns
def static_networks(archs, runs, seeds):
    """{arch: (network, which weights)}: seed 0's EMA weights of the arm alone where trained, else random init with
    one batch's statistics."""
    import torch
    from spikerir_plugin.tools.energy_report import make_input
    from spikerir_plugin.utils.options import network_from_options
    from spikerir_plugin.utils.snn import with_batch_statistics
    nets = {}
    for a in archs:
        run = runs.get((f'{a}-alone', seeds[0]))
        if run is not None and run.trained:
            nets[a] = (network_from_options(copy.deepcopy(ZOO[a][1]), checkpoint=run.ckpt, param_key='params_ema'),
                       f'trained alone, seed {seeds[0]}, params_ema')
        else:
            torch.manual_seed(0)
            net = network_from_options(copy.deepcopy(ZOO[a][1]))
            nets[a] = (with_batch_statistics(net, make_input(64, 2, sigma=SIGMA)), 'random init, batch statistics')
    return nets


def energy_columns(nets, size):
    from spikerir_plugin.tools.energy_report import make_input, measure_energy
    x = make_input(size, 1, sigma=SIGMA)
    out = {}
    for a, (net, _) in nets.items():
        start = time.time()
        t = measure_energy(net, inputs=x)['totals']
        out[a] = {'params': sum(p.numel() for p in net.parameters()), 'synops': t['synops'], 'macs': t['macs'],
                  'mJ': t['energy_mJ_per_image'], 'mean_firing_rate': t['mean_firing_rate'],
                  'measure_s': time.time() - start}
        console.status(f'{time.strftime("%H:%M:%S")} energy {ZOO[a][0]}: {out[a]["mJ"]:.3f} mJ')
    return out


def cpu_times(nets, size, repeats):
    """Median seconds of one forward (no_grad, this process's threads) of each net in eval mode and of its fast
    inference copy, all timed round robin after one warm-up round."""
    import torch
    from spikerir_plugin.inference import inference_network
    from spikerir_plugin.tools.energy_report import make_input
    x = make_input(size, 1, sigma=SIGMA)
    runners = {}
    for a, (net, _) in nets.items():
        runners[(a, 'eval')] = net.eval()
        if getattr(type(net), 'has_inference_copy', False):
            runners[(a, 'fast')] = inference_network(net, exact=False)
    times = {k: [] for k in runners}
    with torch.no_grad():
        for r in range(repeats + 1):
            for k, fn in runners.items():
                start = time.perf_counter()
                fn(x)
                if r:
                    times[k].append(time.perf_counter() - start)
    out = {}
    for a in nets:
        ev = statistics.median(times[(a, 'eval')])
        fast = statistics.median(times[(a, 'fast')]) if (a, 'fast') in times else None
        out[a] = {'eval_s': ev, 'fast_s': fast, 'eval_runs': times[(a, 'eval')],
                  'fast_runs': times.get((a, 'fast'))}
    return out


# ---------------------------------------------------------------------------------------------- summary
def summarise(results, archs, seeds, iters, costs):
    rows = {}
    for a in archs:
        row = {}
        for arm in ARMS:
            key = f'{a}-{arm}'
            per_seed = {s: results[(key, s)] for s in seeds if (key, s) in results}
            if not per_seed:
                continue
            entry = {'iters': iters[key], 'step_s': costs[key], 'compute_s': iters[key] * costs[key],
                     'seeds': sorted(per_seed), 'wall_s': ka.mean_std([r['wall_s'] for r in per_seed.values()])}
            for pk in ka.PARAM_KEYS:
                for metric in ('psnr', 'ssim'):
                    values = [r['scores'][pk][metric] for r in per_seed.values()]
                    entry[f'{metric}_{pk}'] = ka.mean_std(values)
                    entry[f'{metric}_{pk}_per_seed'] = values
            row[arm] = entry
        common = [s for s in seeds if (f'{a}-alone', s) in results and (f'{a}-distilled', s) in results]
        if common:
            row['gain'] = {pk: ka.mean_std([results[(f'{a}-distilled', s)]['scores'][pk]['psnr'] -
                                            results[(f'{a}-alone', s)]['scores'][pk]['psnr'] for s in common])
                           for pk in ka.PARAM_KEYS}
            row['gain_seeds'] = common
        if row:
            rows[a] = row
    return rows


def _g(n):
    return f'{n / 1e9:.3g}' if n else '0'


def static_table(static, times, size):
    ref = times.get(REFERENCE, {}).get('eval_s')
    lines = ['| arch | weights | params | SynOps (G) | MACs (G) | energy (mJ) | CPU eval (ms) | CPU fast (ms) | '
             'eval / NAFNet | fast / NAFNet |', '|---|---|---|---|---|---|---|---|---|---|']
    for a, s in static.items():
        t = times.get(a)
        if t:
            fast = t['fast_s'] if t['fast_s'] is not None else t['eval_s']
            fast_txt = f'{1e3 * t["fast_s"]:.0f}' if t['fast_s'] is not None else f'(= eval) {1e3 * fast:.0f}'
            cells = [f'{1e3 * t["eval_s"]:.0f}', fast_txt,
                     f'{t["eval_s"] / ref:.2f}x' if ref else '-', f'{fast / ref:.2f}x' if ref else '-']
        else:
            cells = ['-'] * 4
        lines.append(f'| {ZOO[a][0]} | {s["weights"]} | {s["params"]:,} | {_g(s["synops"])} | {_g(s["macs"])} | '
                     f'{s["mJ"]:.3g} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def _ms(ms, sign=False, digits=2):
    return f'{ms[0]:+.{digits}f} +- {ms[1]:.{digits}f}' if sign else f'{ms[0]:.{digits}f} +- {ms[1]:.{digits}f}'


def quality_table(rows, fixed, key='params_ema'):
    lines = ['| arch | alone: it | PSNR | SSIM | distilled: it | PSNR | SSIM | distilled - alone (dB, paired) | '
             'step s alone / distilled | seeds |', '|---|---|---|---|---|---|---|---|---|---|']
    for name, f in fixed.items():
        lines.append(f'| {name} | | {f["psnr"]:.2f} | {f["ssim"]:.4f} | | | | | | {f.get("note", "")} |')
    for a, row in rows.items():
        cells = []
        for arm in ARMS:
            e = row.get(arm)
            cells += ([str(e['iters']), _ms(e[f'psnr_{key}']), _ms(e[f'ssim_{key}'], digits=4)] if e
                      else ['-', '-', '-'])
        gain = _ms(row['gain'][key], True) if 'gain' in row else '-'
        steps = ' / '.join(f'{row[arm]["step_s"]:.3f}' if arm in row else '-' for arm in ARMS)
        seeds = ','.join(map(str, row.get('alone', row.get('distilled', {})).get('seeds', [])))
        lines.append(f'| {ZOO[a][0]} | ' + ' | '.join(cells) + f' | {gain} | {steps} | {seeds} |')
    return '\n'.join(lines)


def markdown(args, sizes_text, static_md, quality_md, raw_md, command):
    return '\n'.join([
        '# The SNN restoration zoo: one table', '',
        f'Written by `benchmarks/zoo.py` ({time.strftime("%Y-%m-%d")}): `{command}`', '',
        f'## Cost per {args.size}x{args.size} image', '',
        f'Parameters; SynOps, MACs and energy (E = 4.6 pJ x MAC + 0.9 pJ x SynOp) from `spikerir-energy`\'s '
        f'measure_energy on a noisy (sigma {SIGMA}) photo; VLIF\'s multi-level spikes k/4 cost k SynOps where a '
        'conv reads them (docs/zoo.md: in VLIF as published none does, so its convs after the visual LIF are MACs). '
        f'CPU time: median of {args.repeats} forwards under no_grad, {args.threads} thread, every network round '
        'robin in one process; "eval" is the network in eval mode, "fast" its inference copy '
        '(`inference_network(net, exact=False)`); ratios against NAFNet-w16 in eval mode, timed in the same rounds. '
        'The paper/released widths are counted with random weights and one batch\'s batch-norm statistics (their '
        'SynOps are only indicative: trained firing rates differ).', '', static_md, '',
        '## Quality on a small common task, trained alone and distilled at equal compute', '', sizes_text, '',
        quality_md, '', 'The same runs, raw weights (`params`):', '', raw_md, ''])


# ---------------------------------------------------------------------------------------------- main
def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--archs', nargs='+', choices=list(ZOO), default=list(ZOO))
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--iters', type=int, default=200, help="the alone arm's iterations")
    p.add_argument('--gt-size', type=int, default=32, help='training crop side (shipped: 64)')
    p.add_argument('--batch', type=int, default=4, help='training batch (shipped: 16)')
    p.add_argument('--teacher-iters', type=int, default=2000, help='NAFNet-w16 teacher iterations (kd_ablation)')
    p.add_argument('--teacher-gt-size', type=int, default=48, help="the teacher's crop side (kd_ablation's 48)")
    p.add_argument('--train-grid', type=int, default=4)
    p.add_argument('--eval-grid', type=int, default=3)
    p.add_argument('--eval', choices=('tune', 'report'), default='report')
    p.add_argument('--size', type=int, default=256, help='image side of the static columns')
    p.add_argument('--repeats', type=int, default=5, help='timed forwards per network (median)')
    p.add_argument('--no-train', action='store_true', help='the static columns only (random-init weights)')
    p.add_argument('--step-cost', type=int, default=15, help='timed training steps per arm (equal compute)')
    p.add_argument('--workdir', default='kd_ablation_work', help="kd_ablation's workdir (its crops and teacher); "
                                                                 'the runs go under <workdir>/zoo')
    p.add_argument('--out', default=os.path.join(HERE, 'zoo.md'), help='markdown file of the tables')
    p.add_argument('--jobs', type=int, default=1)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--device', choices=('cpu', 'cuda'), default='cpu')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    import spikerir_plugin  # noqa: F401  (registers the plugin's archs, datasets, models)
    import torch
    from spikerir_plugin.inference import keep_freed_memory
    torch.set_num_threads(args.threads)
    workdir = os.path.abspath(args.workdir)
    zoo_dir = os.path.join(workdir, 'zoo')
    os.makedirs(zoo_dir, exist_ok=True)
    archs = [a for a in ZOO if a in args.archs]
    photos, size = ka.harness_data(args, workdir)
    check_shipped_training_keys(size)

    runs, costs, iters, results, fixed = {}, {}, {}, {}, {}
    if not args.no_train:
        _, teacher_ckpt, info = ka.train_teacher(workdir, args.teacher_iters, size['train_dir'], size['val_dir'],
                                                 args.teacher_gt_size, args.device)
        runs, costs, iters = plan_runs(zoo_dir, archs, teacher_ckpt, args, size)
        console.status('step s: ' + ', '.join(f'{k} {v:.3f}' for k, v in costs.items()))
        todo = [r for r in runs.values() if not r.trained]
        console.status(f'{len(runs)} runs ({len(runs) - len(todo)} already trained); logs under {zoo_dir}/runs')
        lock = threading.Lock()
        failed = ka.run_all(list(runs.values()), args.jobs,
                            lambda run: ka.train_and_score(run, args, lock, results))
        some = ka.resized(ka.load_options(ka.SHIPPED_STUDENT), 1, **size)  # the held-out set and metrics
        fixed = {'noisy input': dict(ka.evaluate(some, None, None, None, args.device), note='sigma 25'),
                 'teacher NAFNet-w16': dict(ka.evaluate(some, TEACHER_NET, teacher_ckpt, 'params', args.device),
                                            note=f'{args.teacher_iters} it, {args.teacher_gt_size}x'
                                                 f'{args.teacher_gt_size} crops, batch 8 (given)')}
    else:
        failed = set()

    keep_freed_memory()  # process-wide: every timed network alike
    nets = static_networks(archs, runs, args.seeds)
    static = energy_columns(nets, args.size)
    for a in static:
        static[a]['weights'] = nets[a][1]
    times = cpu_times({a: nets[a] for a in archs if ZOO[a][2]}, args.size, args.repeats)
    rows = summarise(results, archs, args.seeds, iters, costs)

    sizes_text = (
        f'Gaussian denoising sigma {SIGMA}: training crops {args.gt_size}x{args.gt_size} (batch {args.batch}) of the '
        f'four demo photos (kd_ablation\'s harness), scored on the held-out `{args.eval}` photos '
        f'({", ".join(photos)}; {len(os.listdir(size["val_dir"]))} crops of 96x96, a fixed noise draw), EMA weights '
        f'(`params_ema`), mean +- std over seeds. Alone: SpikingSRModel, {args.iters} iterations. Distilled: '
        'SpikerIRDistillModel, L1 output KD (weight 1) from the NAFNet-w16 teacher, for the iterations that cost '
        'the alone arm\'s compute (steps of both timed round robin in one process). Options: the shipped '
        f'`{ka.SHIPPED_TWIN}` (distilled) and its student_alone_options (alone; the training keys of '
        f'`{ka.SHIPPED_STUDENT}`), changed only in network_g / network_t and size. Narrow widths (see the row '
        'names and benchmarks/zoo.py) where the default cannot train on one CPU core within the budget.')
    command = 'python benchmarks/zoo.py ' + ' '.join(argv if argv is not None else sys.argv[1:])
    md = markdown(args, sizes_text, static_table(static, times, args.size), quality_table(rows, fixed),
                  quality_table(rows, fixed, 'params'), command)
    with open(args.out + '.tmp', 'w') as f:
        f.write(md)
    os.replace(args.out + '.tmp', args.out)
    console.info('\n' + static_table(static, times, args.size) + '\n\n' + quality_table(rows, fixed))
    out = {'args': vars(args), 'static': static, 'cpu_times': times, 'step_s': costs, 'iters': iters,
           'rows': rows, 'fixed': fixed, 'failed': sorted(map(list, failed)), 'command': command,
           'networks': {a: ZOO[a][1] for a in archs}}
    ka.write_json(os.path.join(zoo_dir, 'results.json'), out)
    console.info(f'\ntables: {args.out}; results: {os.path.join(zoo_dir, "results.json")}')
    if failed:
        raise SystemExit(f'{len(failed)} run(s) failed: {sorted(failed)}')
    return out


if __name__ == '__main__':
    main()
