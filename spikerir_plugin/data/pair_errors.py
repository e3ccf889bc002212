"""Size errors of paired batches that name the pair of files.

basicsr's PairedImageDataset reports a GT/LQ size mismatch as "Scale mismatches. GT (h, w) is not 1x
multiplication of LQ (h, w)" (training crops) and validation as the metric's "Image shapes are different", neither
naming the files. For plugin runs the launch checks read every pair's image headers before training starts
(models/run_checks.py); ``check_pair_sizes`` checks each batch a model receives as well (a file changed during the
run; validation and test, where basicsr crops a larger GT to the LQ but a smaller one reaches the metric).
"""


def _pair_message(lq_path, gt_path, name, problem):
    where = f'dataset {name!r}: ' if name else ''
    return (f'{where}LQ {lq_path!r} and GT {gt_path!r} do not match in size ({problem}). Each GT image '
            'must be `scale` times its LQ image: fix or remove this pair, or check that dataroot_lq and dataroot_gt '
            '(and filename_tmpl) pair the right files')


def check_pair_sizes(data, scale, name=None):
    """A batch's GT is ``scale`` times its LQ (spatially), else a ValueError naming the first pair."""
    lq, gt = data.get('lq'), data.get('gt')
    if lq is None or gt is None:
        return
    expected = (lq.shape[-2] * scale, lq.shape[-1] * scale)
    if tuple(gt.shape[-2:]) != expected:
        first = lambda v: v[0] if isinstance(v, (list, tuple)) else v  # noqa: E731
        problem = f'LQ {tuple(lq.shape[-2:])}, GT {tuple(gt.shape[-2:])}, scale {scale}'
        raise ValueError(_pair_message(first(data.get('lq_path')), first(data.get('gt_path')), name, problem))
