"""Train with BasicSR's own pipeline and the plugin's names registered (Real-ESRGAN-style thin entry point).

    python spikerir_plugin/train.py -opt options/train_SpikerIR_SIDD.yml [--auto_resume] [--debug] [--verbose]
    torchrun --nproc_per_node=N spikerir_plugin/train.py -opt ... --launcher pytorch

Outputs (experiments/, tb_logger/) go under the current directory, where the options' relative paths point too.
The console shows progress, validation results and warnings; the log file experiments/<name>/train_*.log keeps
everything (options dump, network printouts); --verbose prints all of it on the console too, as basicsr does.
"""
import os
import sys

if __package__ in (None, ''):  # run as a script: make the checkout importable without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import spikerir_plugin  # noqa: E402,F401  (shims + registration must precede basicsr.train)
from basicsr.train import train_pipeline  # noqa: E402

from spikerir_plugin.utils.console import pop_verbose, quiet_console  # noqa: E402


def main():
    if not pop_verbose(sys.argv):  # --verbose: basicsr's full console output (options dump, network printouts)
        quiet_console()
    train_pipeline(os.getcwd())


if __name__ == '__main__':
    main()
