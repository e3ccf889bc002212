"""Weight schedule for the distillation terms (feature hints + output KD) of SpikerIRDistillModel.

The paper mentions a "hyperparameterized KD schedule" without a formula, so the form is ours. YAML:

    train:
      kd_schedule:
        type: linear        # constant | linear | cosine | step
        start: 0.12         # weight at/before start_iter (the paper's gamma = 0.12 as a constant)
        end: 0.0            # weight at/after end_iter (linear, cosine)
        start_iter: 0       # linear, cosine; default 0
        end_iter: 200000    # required for linear / cosine
        steps: [100000]     # step only: iterations at which the weight is multiplied by gamma
        gamma: 0.5          # step only; default 0.1

Weight w(it) for the current iteration ``it`` (basicsr counts from 1):
- constant: w = start.
- linear:   w = start for it <= start_iter, end for it >= end_iter, linear in between.
- cosine:   w = end + (start - end) * (1 + cos(pi * p)) / 2 with p = clip((it - start_iter)/(end_iter - start_iter)).
- step:     w = start * gamma ** (number of steps s with it >= s).
Without ``kd_schedule`` the weight is the constant 1 (the losses' own loss_weight then sets the scale).
``train.hint_schedule`` (SpikerIRDistillModel) takes the same form for the feature hints alone.

The weight is a pure function of the iteration; ``state_dict`` stores the configuration (and the last weight, for
logs) in the training state so that a resumed run continues with the schedule it started with.
"""
import math

SCHEDULE_TYPES = ('constant', 'linear', 'cosine', 'step')
_KEYS = {
    'constant': {'type', 'start'},
    'linear': {'type', 'start', 'end', 'start_iter', 'end_iter'},
    'cosine': {'type', 'start', 'end', 'start_iter', 'end_iter'},
    'step': {'type', 'start', 'steps', 'gamma'},
}


class KDSchedule:
    """Callable: ``schedule(current_iter) -> float`` weight for hint + output distillation."""

    def __init__(self, type='constant', start=1.0, end=None, start_iter=0, end_iter=None, steps=(), gamma=0.1,
                 key='kd_schedule'):
        self.key = key
        if type not in SCHEDULE_TYPES:
            raise ValueError(f'train.{key}.type: unknown schedule {type!r}; valid: {", ".join(SCHEDULE_TYPES)}')
        if type in ('linear', 'cosine'):
            if end is None or end_iter is None:
                raise ValueError(f'train.{key}: type {type!r} needs both `end` and `end_iter`')
            if end_iter <= start_iter:
                raise ValueError(f'train.{key}: end_iter ({end_iter}) must be > start_iter ({start_iter})')
        if type == 'step' and (not isinstance(steps, (list, tuple)) or not steps or list(steps) != sorted(steps)):
            raise ValueError(f'train.{key}: type "step" needs `steps`, a non-empty increasing list of '
                             f'iterations (got {steps!r})')
        self.type = type
        self.start = float(start)
        self.end = None if end is None else float(end)
        self.start_iter = int(start_iter)
        self.end_iter = None if end_iter is None else int(end_iter)
        self.steps = [int(s) for s in steps]
        self.gamma = float(gamma)
        self.last_iter = None
        self.last_weight = None

    @classmethod
    def from_opt(cls, opt, key='kd_schedule'):
        """Build from the ``train.<key>`` dict (None -> constant 1); unknown keys are an error."""
        if opt is None:
            return cls('constant', 1.0, key=key)
        if not isinstance(opt, dict):
            raise ValueError(f'train.{key} must be a mapping with a type ({", ".join(SCHEDULE_TYPES)}), '
                             f'got {opt!r}')
        opt = dict(opt)
        kind = opt.get('type', 'constant')
        if kind not in SCHEDULE_TYPES:
            raise ValueError(f'train.{key}.type: unknown schedule {kind!r}; valid: {", ".join(SCHEDULE_TYPES)}')
        unknown = set(opt) - _KEYS[kind]
        if unknown:
            raise ValueError(f'train.{key}: keys {sorted(unknown)} are not used by type {kind!r}; '
                             f'valid keys: {sorted(_KEYS[kind])}')
        return cls(**opt, key=key)

    def _progress(self, it):
        return min(max((it - self.start_iter) / (self.end_iter - self.start_iter), 0.0), 1.0)

    def weight(self, current_iter):
        it = current_iter
        if self.type == 'constant':
            w = self.start
        elif self.type == 'linear':
            w = self.start + (self.end - self.start) * self._progress(it)
        elif self.type == 'cosine':
            w = self.end + (self.start - self.end) * (1 + math.cos(math.pi * self._progress(it))) / 2
        else:
            w = self.start * self.gamma ** sum(1 for s in self.steps if it >= s)
        self.last_iter, self.last_weight = it, w
        return w

    __call__ = weight

    def config(self):
        return {'type': self.type, 'start': self.start, 'end': self.end, 'start_iter': self.start_iter,
                'end_iter': self.end_iter, 'steps': list(self.steps), 'gamma': self.gamma}

    def state_dict(self):
        return {'config': self.config(), 'last_iter': self.last_iter, 'last_weight': self.last_weight}

    def load_state_dict(self, state):
        """Restore a saved schedule exactly (configuration included); returns True if it differed from ours."""
        differs = state['config'] != self.config()
        cfg = state['config']
        self.__init__(**cfg, key=self.key)
        self.last_iter, self.last_weight = state.get('last_iter'), state.get('last_weight')
        return differs
