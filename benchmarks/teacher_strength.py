"""Does a stronger teacher reach the student? The shipped recipe (kd_ablation.py: twin distilled from the teacher,
then the spiking student from the twin) with NAFNet teachers of rising strength, against the same chain with a
twin trained on the ground truth alone (chain_gt, which needs no teacher).

    python benchmarks/teacher_strength.py --teachers 16:500 16:2000 32:4000 --seeds 0 1 2 --jobs 2 --workdir /tmp/kd_runs

Each --teachers entry is WIDTH:ITERATIONS of the NAFNet teacher (trained once by basicsr's SRModel on the harness's
crops); everything else is kd_ablation.py's (the shipped files sized, the same data, seeds and held-out photos; any
other option is passed to it: --eval, --workdir, --jobs, the size options). Per teacher the runs are kd_ablation's own (arms twin, recipe, chain_gt), cached in its
workdir, and its results file is results-teacher-w<WIDTH>-<ITERATIONS>.json there. The table: the teacher's PSNR,
the twin's and the student's (raw weights, mean +- std over seeds), the teacher's own contribution (recipe -
chain_gt, paired by seed) and what the student keeps of the teacher (recipe - teacher); teacher_strength.json and
teacher_strength.png (student PSNR against teacher PSNR) under --workdir.
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import kd_ablation as ka  # noqa: E402  (the harness: data, teacher, runs, evaluation)
from spikerir_plugin.utils import console  # noqa: E402

CONTRIBUTION = "recipe - chain_gt (the teacher's own contribution)"
KEPT = 'recipe - teacher (teacher -> spiking student)'
SET_HERE = ('teacher_width', 'teacher_iters', 'arms', 'out')  # kd_ablation options this script sets


def teacher_spec(text):
    try:
        width, iters = (int(v) for v in text.split(':'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r}: expected WIDTH:ITERATIONS, e.g. 32:4000') from None
    if width < 1 or iters < 1:
        raise argparse.ArgumentTypeError(f'{text!r}: width and iterations must be at least 1')
    return width, iters


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--teachers', type=teacher_spec, nargs='+', default=[(16, 500), (16, 2000), (32, 4000)],
                   help='NAFNet teachers as WIDTH:ITERATIONS')
    return p


def harness_argv(passed, width, iters):
    """kd_ablation's command line for one teacher: the options passed through, then this teacher and its arms."""
    return [*passed, '--teacher-width', str(width), '--teacher-iters', str(iters), '--arms', 'twin', 'recipe',
            'chain_gt', '--out', f'results-teacher-w{width}-{iters}.json']


def teacher_row(width, iters, out):
    arms, diffs = out['arms'], out['differences']
    return {'teacher': f'NAFNet-w{width}, {iters} it', 'width': width, 'teacher_iters': iters,
            'teacher_psnr': out['fixed']['teacher']['psnr'],
            'twin': arms['twin']['psnr_params'], 'student': arms['recipe']['psnr_params'],
            'chain_gt': arms['chain_gt']['psnr_params'], 'seeds': arms['recipe']['seeds'],
            'contribution': diffs[CONTRIBUTION]['params']['mean_std'],
            'kept': diffs[KEPT]['params']['mean_std']}


def format_table(rows, eval_set):
    lines = [f'Teacher strength (shipped recipe; {eval_set} photos; raw weights; mean +- std over seeds)',
             f'{"teacher":22s} {"teacher dB":>10s} {"twin dB":>15s} {"student dB":>15s} {"chain_gt dB":>15s} '
             f'{"teacher adds":>15s} {"student - teacher":>17s}  seeds']
    for r in rows:
        lines.append(f'{r["teacher"]:22s} {r["teacher_psnr"]:10.2f} {ka.fmt(r["twin"]):>15s} '
                     f'{ka.fmt(r["student"]):>15s} {ka.fmt(r["chain_gt"]):>15s} '
                     f'{ka.fmt(r["contribution"], sign=True):>15s} {ka.fmt(r["kept"], sign=True):>17s}  '
                     f'{",".join(map(str, r["seeds"]))}')
    lines.append('teacher adds: recipe - chain_gt (the same chain, its twin trained on the ground truth alone), '
                 'paired by seed')
    return '\n'.join(lines)


def plot(rows, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from spikerir_plugin.utils.atomic import atomic_savefig
    fig, ax = plt.subplots(figsize=(5.5, 4))
    xs = [r['teacher_psnr'] for r in rows]
    for key, label, marker in (('student', 'spiking student (recipe)', 'o'), ('twin', 'analog twin', 's')):
        ax.errorbar(xs, [r[key][0] for r in rows], yerr=[r[key][1] for r in rows], marker=marker, capsize=3,
                    label=label)
    ax.axhline(rows[0]['chain_gt'][0], color='grey', ls='--', label='student, twin without teacher (chain_gt)')
    lo, hi = min(xs), max(xs)
    ax.plot([lo, hi], [lo, hi], color='black', lw=0.8, label='= teacher')
    for r in rows:
        ax.annotate(r['teacher'], (r['teacher_psnr'], r['student'][0]), fontsize=7, xytext=(3, -10),
                    textcoords='offset points')
    ax.set_xlabel('teacher PSNR (dB)')
    ax.set_ylabel('PSNR (dB)')
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)


def main(argv=None):
    args, passed, harness = ka.driver_options(
        build_parser(), argv, SET_HERE, 'is set per teacher here (--teachers WIDTH:ITERATIONS sets the teacher; the '
                                        'arms and results files are fixed)')
    done, failed = ka.main_per_config(args.teachers, lambda t: f'teacher NAFNet-w{t[0]}, {t[1]} it',
                                      lambda t: harness_argv(passed, *t))
    rows = [teacher_row(width, iters, out) for (width, iters), out in done]
    rows.sort(key=lambda r: r['teacher_psnr'])
    table = format_table(rows, harness.eval)
    console.info('\n' + table)
    workdir = os.path.abspath(harness.workdir)
    ka.write_json(os.path.join(workdir, 'teacher_strength.json'), {'rows': rows, 'table': table,
                                                                   'seeds': harness.seeds, 'eval': harness.eval})
    if rows:
        plot(rows, os.path.join(workdir, 'teacher_strength.png'))
    console.info(f'\nresults: {os.path.join(workdir, "teacher_strength.json")}; plot: '
                 f'{os.path.join(workdir, "teacher_strength.png")}')
    if failed:
        raise SystemExit('runs failed for ' + '; '.join(failed))
    return rows


if __name__ == '__main__':
    main()
