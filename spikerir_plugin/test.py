"""Test with BasicSR's own pipeline and the plugin's names registered (Real-ESRGAN-style thin entry point).

    python spikerir_plugin/test.py -opt options/test_SpikerIR_SIDD.yml

Outputs (results/<name>/) go under the current directory, where the options' relative paths point too.
"""
import os
import sys

if __package__ in (None, ''):  # run as a script: make the checkout importable without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import spikerir_plugin  # noqa: E402,F401  (shims + registration must precede basicsr.test)
from basicsr.test import test_pipeline  # noqa: E402


def main():
    test_pipeline(os.getcwd())


if __name__ == '__main__':
    main()
