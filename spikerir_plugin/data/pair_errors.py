"""Size errors of paired datasets that name the pair of files.

basicsr's PairedImageDataset reports a GT/LQ size mismatch as "Scale mismatches. GT (h, w) is not 1x
multiplication of LQ (h, w)" (training crops) and validation as the metric's "Image shapes are different", neither
naming the files. For plugin runs, ``name_pairs_in_errors(dataset)`` makes that one dataset object (never the
class) re-raise such errors with the LQ and GT paths and the options that point at them; ``check_pair_sizes``
does the same for a batch a model receives (validation and test: basicsr crops a larger GT to the LQ there, but a
smaller one reaches the metric).

The object's class becomes a subclass of its own class with the same name and layout, overriding only
``__getitem__`` (the same trick the exact resume uses for the train sampler); it stays picklable for DataLoader
workers started with ``spawn``.
"""
_SIZE_ERRORS = ('Scale mismatches',)  # basicsr's 'smaller than patch size' already names the GT file
_checked_classes = {}


def _pair_message(lq_path, gt_path, name, problem):
    where = f'dataset {name!r}: ' if name else ''
    return (f'{where}LQ {lq_path!r} and GT {gt_path!r} do not match in size ({problem}). Each GT image '
            'must be `scale` times its LQ image: fix or remove this pair, or check that dataroot_lq and dataroot_gt '
            '(and filename_tmpl) pair the right files')


def _getitem_naming_pairs(self, index):
    """The dataset class's own __getitem__; a size error is raised again with the pair's files."""
    try:
        return self._pair_errors_base.__getitem__(self, index)
    except ValueError as error:
        text = ' '.join(str(a) for a in error.args)  # basicsr passes its message as two arguments
        entry = getattr(self, 'paths', None)
        entry = entry[index] if isinstance(entry, list) and index < len(entry) else None
        if not (any(s in text for s in _SIZE_ERRORS) and isinstance(entry, dict)):
            raise
        name = (getattr(self, 'opt', None) or {}).get('name')
        raise ValueError(_pair_message(entry.get('lq_path'), entry.get('gt_path'), name, text)) from error


def _reduce_naming_pairs(self, protocol):
    state = self.__getstate__() if hasattr(self, '__getstate__') else self.__dict__
    return _rebuild, (self._pair_errors_base, state)


def _checked_class(base):
    """A subclass of ``base`` with the same name and layout (so that one object's __class__ can be set to it)."""
    if base not in _checked_classes:
        _checked_classes[base] = type(base.__name__, (base,), {
            '__module__': base.__module__, '__qualname__': base.__qualname__, '__slots__': (),
            '_pair_errors_base': base, '__getitem__': _getitem_naming_pairs, '__reduce_ex__': _reduce_naming_pairs})
    return _checked_classes[base]


def _rebuild(base, state):
    obj = object.__new__(_checked_class(base))
    setstate = getattr(obj, '__setstate__', None)
    if setstate is not None:
        setstate(state)
    else:
        obj.__dict__.update(state or {})
    return obj


def name_pairs_in_errors(dataset):
    """Make this dataset object's size errors name the pair (idempotent; other datasets are left alone)."""
    if dataset is not None and '_pair_errors_base' not in type(dataset).__dict__:
        dataset.__class__ = _checked_class(type(dataset))
    return dataset


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
