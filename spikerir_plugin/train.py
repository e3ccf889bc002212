"""Train with BasicSR's own pipeline and the plugin's names registered (Real-ESRGAN-style thin entry point).

    python spikerir_plugin/train.py -opt options/train_SpikerIR_SIDD.yml [--auto_resume] [--debug]
    torchrun --nproc_per_node=N spikerir_plugin/train.py -opt ... --launcher pytorch

Outputs (experiments/, tb_logger/) go under the current directory, where the options' relative paths point too.
"""
import os
import sys

if __package__ in (None, ''):  # run as a script: make the checkout importable without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import spikerir_plugin  # noqa: E402,F401  (shims + registration must precede basicsr.train)
from basicsr.train import train_pipeline  # noqa: E402


def main():
    train_pipeline(os.getcwd())


if __name__ == '__main__':
    main()
