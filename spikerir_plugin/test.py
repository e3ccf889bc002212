"""Test with BasicSR's own pipeline and the plugin's names registered (Real-ESRGAN-style thin entry point).

    python spikerir_plugin/test.py -opt options/test_SpikerIR_SIDD.yml [--verbose]

Outputs (results/<name>/) go under the current directory, where the options' relative paths point too.
The console shows the results and warnings; results/<name>/test_*.log keeps everything (--verbose: console too).
"""
import os
import sys

if __package__ in (None, ''):  # run as a script: make the checkout importable without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import spikerir_plugin  # noqa: E402,F401  (shims + registration must precede basicsr.test)
from basicsr.test import test_pipeline  # noqa: E402

from spikerir_plugin.utils.console import pop_verbose, quiet_console  # noqa: E402


def main():
    if not pop_verbose(sys.argv):  # --verbose: basicsr's full console output (options dump, network printouts)
        quiet_console()
    test_pipeline(os.getcwd())


if __name__ == '__main__':
    main()
