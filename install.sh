#!/usr/bin/env bash
# Fresh-machine install into ./.venv, in the only order that works for basicsr 1.4.2 on the current stack:
# torch/torchvision first, then basicsr built without isolation (with isolation its setup_requires pulls a second
# full torch into the throw-away build env), then this plugin (editable) and the test tools.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
pip install -q --disable-pip-version-check --no-build-isolation basicsr==1.4.2
pip install -q --disable-pip-version-check -e . pytest
python -c "import spikerir_plugin, basicsr; print('spikerir-plugin', spikerir_plugin.__version__, 'on basicsr', basicsr.__version__)"
