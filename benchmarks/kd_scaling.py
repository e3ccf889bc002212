"""Does the recipe's gain at equal compute hold as the budget grows? kd_ablation.py at several budgets (multiples of
the 1x budget: student 600 iterations, twin 1800), the recipe against the student alone at the recipe's compute.

    python benchmarks/kd_scaling.py --budgets 1:0,1,2 4:0,1 --eval report --jobs 2 --workdir /tmp/kd_runs

Each --budgets entry is FACTOR or FACTOR:SEEDS (seeds comma-separated; default: --seeds). Per budget the runs are
kd_ablation's own (its shipped files sized to FACTOR x --base-iters student iterations and the files' twin ratio,
arms twin, recipe and alone_eq unless --arms), cached in its workdir, with the results file
results-scaling[-<preset>]-<FACTOR>x.json there; any other option goes to kd_ablation (--preset, --eval, --workdir,
--jobs, the size options). The table: per budget the recipe's and the student alone's PSNR (raw weights, mean +- std
over seeds) and the paired gain; kd_scaling[-<preset>].json and .png (PSNR against compute) under --workdir.

Compute is put in units of the 1x recipe's: each budget's harness call measures its own step times (on a machine
whose load varies between calls), and a budget's recipe compute is FACTOR of those units by construction, so the
arms of one budget keep their measured ratios to the recipe and the budgets line up on one axis.
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import kd_ablation as ka  # noqa: E402  (the harness: data, teacher, runs, evaluation)
from spikerir_plugin.utils import console  # noqa: E402

GAIN = 'recipe - alone_eq (equal compute: the headline)'
# kd_ablation options this script sets per budget (--iters, --out) or that would not scale with it (--twin-iters: the
# twin keeps the shipped ratio; --alone-iters: the `alone` arm is each budget's point at the student's iterations);
# --seeds is the default of the budgets that name none
SET_HERE = ('iters', 'twin_iters', 'out', 'alone_iters')
CURVE_ARMS = ('recipe', 'alone', 'alone_eq', 'chain_gt')  # the students (twins are a chain's first step)


def budget_spec(text):
    factor, _, seeds = text.partition(':')
    try:
        factor = int(factor)
        seeds = [int(s) for s in seeds.split(',')] if seeds else None
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r}: expected FACTOR or FACTOR:SEEDS, e.g. 4 or 4:0,1') from None
    if factor < 1 or (seeds is not None and not seeds):
        raise argparse.ArgumentTypeError(f'{text!r}: the factor must be at least 1 and the seeds a list')
    return factor, seeds


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--budgets', type=budget_spec, nargs='+', default=[(1, None), (4, None)],
                   help='budgets as FACTOR[:SEEDS], multiples of --base-iters student iterations')
    p.add_argument('--base-iters', type=int, default=600, help="the student's iterations at 1x (600)")
    return p


def results_name(preset, factor):
    return f'results-scaling{"-" + preset if preset else ""}-{factor}x.json'


def harness_argv(passed, factor, seeds, base_iters, preset):
    """kd_ablation's command line for one budget: the options passed through, then this budget's size and seeds
    (and the default arms, unless --arms was passed)."""
    arms = [] if any(a == '--arms' or a.startswith('--arms=') for a in passed) else ['--arms', 'twin', 'recipe',
                                                                                      'alone_eq']
    return [*passed, *arms, '--iters', str(factor * base_iters), '--seeds', *map(str, seeds),
            '--out', results_name(preset, factor)]


def budget_row(factor, out):
    """One budget's students: each arm's PSNR (raw weights) and compute in units of the 1x recipe's, the gain."""
    unit = out['compute_s']['recipe'] / factor
    arms = {arm: {'x': out['compute_s'][arm] / unit, 'iters': r['iters'], 'psnr': r['psnr_params'],
                  'seeds': r['seeds']}
            for arm, r in out['arms'].items() if arm in CURVE_ARMS or arm.startswith('alone_')}
    gain = out['differences'].get(GAIN)
    return {'factor': factor, 'iters': out['iters'], 'twin_iters': out['twin_iters'],
            'alone_eq_iters': out['alone_eq_iters'], 'arms': arms,
            'gain': gain['params']['mean_std'] if gain else None,
            'gain_per_seed': gain['params']['per_seed'] if gain else None,
            'seeds': gain['params']['seeds'] if gain else []}


def format_table(rows, eval_set, preset):
    lines = [f'Recipe against the student alone at equal compute, by budget ({preset or "tiny"}; {eval_set} photos; '
             'raw weights; mean +- std over seeds)',
             f'{"budget":>6s} {"student it":>10s} {"twin it":>8s} {"alone_eq it":>11s} {"recipe dB":>15s} '
             f'{"alone_eq dB":>15s} {"gain dB":>15s}  per seed  seeds']
    for r in rows:
        recipe, alone = r['arms'].get('recipe'), r['arms'].get('alone_eq')
        gain = ka.fmt(r['gain'], sign=True) if r['gain'] else '-'
        per_seed = ', '.join(f'{g:+.2f}' for g in r['gain_per_seed'] or [])
        lines.append(f'{r["factor"]:>5d}x {r["iters"]:10d} {r["twin_iters"]:8d} {r["alone_eq_iters"]:11d} '
                     f'{ka.fmt(recipe["psnr"]) if recipe else "-":>15s} {ka.fmt(alone["psnr"]) if alone else "-":>15s} '
                     f'{gain:>15s}  {per_seed}  {",".join(map(str, r["seeds"]))}')
    lines.append('gain: recipe - alone_eq, paired by seed; alone_eq: the student alone for the recipe\'s compute '
                 '(its twin included)')
    return '\n'.join(lines)


def plot(rows, path, preset):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from spikerir_plugin.utils.atomic import atomic_savefig
    fig, ax = plt.subplots(figsize=(5.5, 4))
    series = (('recipe', 'recipe (twin, then the spiking student)', 'o', '-'),
              ('chain_gt', 'the same chain, twin without teacher', 'v', ':'),
              ('alone', 'student alone', 's', '--'))
    for key, label, marker, ls in series:
        points = sorted((a['x'], a['psnr']) for r in rows for arm, a in r['arms'].items()
                        if arm == key or (key == 'alone' and arm.startswith('alone')))
        if points:
            ax.errorbar([p[0] for p in points], [p[1][0] for p in points], yerr=[p[1][1] for p in points],
                        marker=marker, ls=ls, capsize=3, label=label)
    ax.set_xscale('log', base=2)
    ax.set_xlabel("training compute (units of the 1x recipe's, its twin included)")
    ax.set_ylabel('PSNR (dB), raw weights, mean +- std over seeds')
    ax.set_title(f'SpikerIR {preset or "tiny"}: recipe and student alone by budget', fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = build_parser()
    args, passed, harness = ka.driver_options(
        parser, argv, SET_HERE, 'is set per budget here or would not scale with the budget: --budgets '
                                'FACTOR[:SEEDS] and --base-iters set the iterations (the twin at the shipped ratio) '
                                'and seeds; add `alone` to --arms for the student-iterations point')
    factors = [f for f, _ in args.budgets]
    if len(set(factors)) != len(factors):
        parser.error(f'--budgets names a factor twice: {" ".join(map(str, factors))}')
    budgets = [(factor, harness.seeds if seeds is None else seeds)
               for factor, seeds in sorted(args.budgets, key=lambda b: b[0])]
    done, failed = ka.main_per_config(
        budgets, lambda b: f'budget {b[0]}x: student {b[0] * args.base_iters} it, seeds {b[1]}',
        lambda b: harness_argv(passed, *b, args.base_iters, harness.preset))
    rows = [budget_row(factor, out) for (factor, _), out in done]
    table = format_table(rows, harness.eval, harness.preset)
    console.info('\n' + table)
    workdir = os.path.abspath(harness.workdir)
    stem = os.path.join(workdir, f'kd_scaling{"-" + harness.preset if harness.preset else ""}')
    ka.write_json(stem + '.json', {'rows': rows, 'table': table, 'eval': harness.eval, 'preset': harness.preset})
    if rows:
        plot(rows, stem + '.png', harness.preset)
    console.info(f'\nresults: {stem}.json; plot: {stem}.png')
    if failed:
        raise SystemExit('runs failed for ' + '; '.join(failed))
    return rows


if __name__ == '__main__':
    main()
