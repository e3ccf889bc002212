"""spikerir_plugin/launch.py, one test per fix: what basicsr 1.4.2 does on today's stack without the fix (a process
with only the import shims that let basicsr import, the plugin not loaded) and what it does with it."""
import argparse
import socket
import subprocess
import textwrap

import numpy as np
import pytest
import torch

from conftest import PYTHON, subprocess_env


def run_python(code, autoload=True, **env):
    """``code`` in a fresh interpreter: with the plugin loaded after basicsr (the startup hook), or with the import
    shims alone (autoload=False)."""
    code = textwrap.dedent(code)
    if not autoload:
        env['SPIKERIR_NO_AUTOLOAD'] = '1'
        code = 'import spikerir_compat\nspikerir_compat.install_import_shims()\n' + code
    return subprocess.run([PYTHON, '-c', code], env=subprocess_env(**env), capture_output=True, text=True,
                          timeout=300)


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return str(s.getsockname()[1])


def test_fix_argv_renames_only_the_local_rank_option():
    from spikerir_plugin import launch
    assert launch.rewrite_local_rank_argv(['-opt', 'a.yml', '--local-rank=3', '--local-rank-file', 'f']) == \
        ['-opt', 'a.yml', '--local_rank=3', '--local-rank-file', 'f']


DIST_ENV = dict(RANK='0', LOCAL_RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1', CUDA_VISIBLE_DEVICES='')
DIST_CODE = """
    import torch, torch.distributed as dist
    from basicsr.utils.dist_util import init_dist
    init_dist('pytorch')
    print('backend', dist.get_backend())
"""


def test_fix_dist_uses_gloo_without_cuda():
    without = run_python(DIST_CODE, autoload=False, MASTER_PORT=free_port(), **DIST_ENV)
    assert without.returncode != 0 and 'spikerir_plugin' not in without.stderr
    assert 'ZeroDivisionError' in without.stderr or 'NCCL' in without.stderr.upper()  # nccl, GPU count 0
    fixed = run_python(DIST_CODE, MASTER_PORT=free_port(), **DIST_ENV)
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    assert 'backend gloo' in fixed.stdout


def test_fix_dist_destroys_the_process_group_before_the_interpreter_tears_down():
    """basicsr never destroys its process group; a gloo group left to the teardown can abort a rank at exit."""
    code = """
    import atexit
    import torch.distributed as dist
    # registered first, so it runs after any exit handler registered later (atexit runs them last-in first-out)
    atexit.register(lambda: print('group alive at exit:', dist.is_initialized(), flush=True))
    """ + DIST_CODE
    fixed = run_python(code, MASTER_PORT=free_port(), **DIST_ENV)
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    assert 'backend gloo' in fixed.stdout and 'group alive at exit: False' in fixed.stdout


def test_fix_model_to_device_gives_ddp_no_device_ids_on_the_cpu():
    code = DIST_CODE + """
    from basicsr.models.sr_model import SRModel
    from torch.nn.parallel import DistributedDataParallel
    opt = {'name': 'x', 'model_type': 'SRModel', 'num_gpu': 0, 'is_train': False, 'dist': True, 'rank': 0,
           'world_size': 1, 'scale': 1, 'path': {}, 'network_g': {'type': 'NAFNet', 'width': 8, 'middle_blk_num': 1,
           'enc_blk_nums': [1], 'dec_blk_nums': [1]}}
    model = SRModel(opt)
    assert isinstance(model.net_g, DistributedDataParallel) and model.net_g.device_ids is None
    print('out', tuple(model.net_g(torch.rand(1, 3, 16, 16)).shape))
    """
    fixed = run_python(code, MASTER_PORT=free_port(), **DIST_ENV)
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    assert 'out (1, 3, 16, 16)' in fixed.stdout


def test_fix_weights_only_loads_the_globals_official_checkpoints_pickle(tmp_path):
    path = tmp_path / 'official.pth'
    torch.save({'params': {'w': torch.ones(2)}, 'args': argparse.Namespace(lr=1e-3), 'best': np.float64(30.5),
                'dtypes': [np.dtype(t) for t in (np.float32, np.uint16, np.int64, np.complex64, np.bool_)]}, path)
    code = f"""
    import torch, basicsr
    state = torch.load({str(path)!r}, weights_only=True)
    print('loaded', state['args'].lr, float(state['best']))
    """
    without = run_python(code, autoload=False)
    assert without.returncode != 0 and 'weights_only' in without.stderr.replace('WeightsUnpickler', 'weights_only')
    fixed = run_python(code)
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    assert 'loaded 0.001 30.5' in fixed.stdout


def test_fix_resume_hooks_are_bound_in_basicsrs_train_module_and_give_way_to_basicsrs_own_resume():
    import basicsr.train as bsr_train
    from spikerir_plugin import launch
    assert bsr_train.load_resume_state is launch.resume_state_of
    assert bsr_train.create_train_val_dataloader.__wrapped__.__module__ == 'basicsr.train'
    # a model without the hooks: basicsr's resume (no state, nothing to resume)
    opt = {'model_type': 'SRModel', 'auto_resume': False, 'path': {'resume_state': None}}
    assert launch.resume_state_of(opt) is None


def test_fix_test_checks_run_the_model_classes_check_after_parse_options(tmp_path, monkeypatch):
    import sys
    import yaml
    import basicsr.test as bsr_test
    from basicsr.utils.registry import MODEL_REGISTRY

    seen = []

    class CheckedModel:
        @classmethod
        def test_launch_checks(cls, opt):
            seen.append(opt['name'])
            raise ValueError('refused before results/ exists')

    monkeypatch.setitem(MODEL_REGISTRY._obj_map, 'CheckedModelForLaunchTest', CheckedModel)
    yml = tmp_path / 'test.yml'
    yml.write_text(yaml.safe_dump({'name': 'checked', 'model_type': 'CheckedModelForLaunchTest', 'num_gpu': 0,
                                   'scale': 1, 'datasets': {}, 'network_g': {'type': 'NAFNet'},
                                   'path': {'results_root': str(tmp_path / 'results')}, 'val': {}}))
    monkeypatch.setattr(sys, 'argv', ['test.py', '-opt', str(yml)])
    with pytest.raises(ValueError, match='refused before results'):
        bsr_test.parse_options(str(tmp_path), is_train=False)
    assert seen == ['checked'] and not (tmp_path / 'results').exists()
