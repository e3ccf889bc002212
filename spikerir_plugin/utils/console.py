"""What the plugin's own commands print: progress and results on the console, everything in the log file.

basicsr's pipelines send every message to the 'basicsr' logger, whose console handler prints the same as its log
file: the environment banner, the whole options dump, every network printout (hundreds of lines before the first
iteration). The plugin's entry points (spikerir-train, spikerir-test, the demo's training runs) call
``quiet_console()``: a filter on that logger's *console* handler lets through warnings and errors, the training
progress lines, validation results and the start/end of a run; the log file under ``experiments/<name>/`` still
gets everything. ``--verbose`` on those commands keeps basicsr's console as it is.

Nothing changes for programs that do not call it (BasicSR's own ``basicsr/train.py`` included): the filter is
installed only by the plugin's entry points, and only on the console handler.

Training output goes through basicsr's logger. The plugin's commands and benchmarks write their own lines through
the helpers below: ``info`` for results (stdout), ``status`` for progress lines and ``warn`` for notices about an
input or a fallback (both stderr, so that the results can be piped), and ``progress`` for a tqdm bar (stderr). The
lines are written above any bar that is drawing, and the streams are looked up at each call, so a caller that
redirects sys.stdout/sys.stderr (the demo's log capture, pytest's capsys) gets them.
"""
import logging
import re
import sys

VERBOSE_FLAG = '--verbose'
# basicsr's messages worth a console line: progress ([name..][epoch: e, iter: i, lr:(...)] ... losses), results
_SHOWN = re.compile(r'^(\[.*\biter:|Validation |Start training|Resuming training|End of training|Testing |'
                    r'Network: )')


class _ConsoleFilter(logging.Filter):
    def filter(self, record):
        return record.levelno >= logging.WARNING or bool(_SHOWN.match(record.getMessage()))


class _AttachToConsole(logging.Filter):
    """Logger-level filter that never drops a record; before each one it makes sure every console handler of the
    logger carries the console filter (basicsr adds its handlers lazily, inside its pipelines), and names the log
    file once when basicsr opens it."""

    def __init__(self, logger, stream):
        super().__init__()
        self.logger, self.stream, self.console, self.announced = logger, stream, _ConsoleFilter(), set()

    def filter(self, record):
        for handler in self.logger.handlers:
            if isinstance(handler, logging.FileHandler):
                if handler.baseFilename not in self.announced:
                    self.announced.add(handler.baseFilename)
                    print(f'full log: {handler.baseFilename}', file=self.stream, flush=True)
            elif isinstance(handler, logging.StreamHandler) and self.console not in handler.filters:
                handler.addFilter(self.console)
        return True


def quiet_console(logger_name='basicsr', stream=None):
    """Console of `logger_name` (basicsr's) shows progress, results, warnings; its log file keeps everything."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, _AttachToConsole) for f in logger.filters):
        logger.addFilter(_AttachToConsole(logger, stream or sys.stderr))
    return logger


def _write(message, stream):
    from tqdm import tqdm
    tqdm.write(message, file=stream)  # a print that keeps a drawing bar intact below it
    stream.flush()


def info(message):
    """A result line, on stdout."""
    _write(message, sys.stdout)


def status(message):
    """A progress line (a stage finished, a run started), on stderr."""
    _write(message, sys.stderr)


def warn(message):
    """A notice the user should read (an input skipped, a fallback taken), on stderr. Not a Python warning: those
    stay for deprecations and for notices that callers of the library filter or catch."""
    _write(message, sys.stderr)


def progress(iterable=None, **kwargs):
    """A tqdm bar, on stderr unless ``file`` says otherwise (tqdm's other arguments pass through)."""
    from tqdm import tqdm
    kwargs.setdefault('file', sys.stderr)
    return tqdm(iterable, **kwargs)


def pop_verbose(argv):
    """Remove --verbose from argv (basicsr's own argument parser would reject it); True when it was there."""
    found = VERBOSE_FLAG in argv
    argv[:] = [a for a in argv if a != VERBOSE_FLAG]
    return found
