"""The "Distil your own teacher" guide (docs/distillation.md), run command by command on tiny networks and images,
and the quiet console of the plugin's training/test entry points.

The commands and YAML edits are the guide's blocks marked `<!-- test: distil-guide -->`, read from the file itself
(tests/doc_blocks.py). Only sizes change, as in tests/launch/test_options.py: the teacher is a tiny NAFNet (its
checkpoint saved here in BasicSR's layout), the student SpikerIR with T=2, 4 iterations, one torchrun worker on the CPU
(--standalone picks a free port), a 64x64 energy input."""
import copy
import logging
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import warnings

import cv2
import pytest
import torch
import yaml
from basicsr.archs import build_network

from conftest import PYTHON, REPO_ROOT, subprocess_env
from doc_blocks import block_commands, marked_blocks

TEACHER = {'width': 8, 'middle_blk_num': 1, 'enc_blk_nums': [1, 1, 1], 'dec_blk_nums': [1, 1, 1]}
STUDENT = {'T': 2, 'reduction_t': 2}
EXPERIMENT, TWIN_EXPERIMENT = 'my_student_kd_my_teacher', 'my_twin_kd_my_teacher'
PROGRAMS = ['spikerir-restore', 'cp', 'cp', 'cp', 'spikerir-train', 'spikerir-train', 'torchrun', 'spikerir-test',
            'spikerir-restore', 'spikerir-energy']


GUIDE = 'docs/distillation.md'


def guide_commands():
    blocks = marked_blocks(GUIDE, 'distil-guide', 'bash')
    return [shlex.split(line) for block in blocks for line in block_commands(block)]


def guide_yaml():
    return [yaml.safe_load(block) for block in marked_blocks(GUIDE, 'distil-guide', 'yaml')]


def console_scripts():
    setup = open(os.path.join(REPO_ROOT, 'setup.py')).read()
    return {name: module for name, module in re.findall(r"'(spikerir-[\w-]+)=([\w.]+):main'", setup)}


def merge(base, edits):
    """The guide's edits: nested keys set one by one, except network_t which replaces the whole section."""
    for key, value in edits.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict) and key != 'network_t':
            merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def tiny_sizes(argv):
    """The command with the sizes of a tiny run (the substitutions listed in the module docstring)."""
    teacher_args = ','.join(f'{k}={v}' for k, v in TEACHER.items()).replace(' ', '')
    out = []
    for arg in argv:
        arg = {'preset=sidd-width32': teacher_args, '--nproc_per_node=4': '--nproc_per_node=1'}.get(arg, arg)
        out.append(arg)
        if arg == '--nproc_per_node=1':
            out.append('--standalone')
    if '--size' in out:
        out[out.index('--size') + 1] = '64'
    return out


def shrink_train(opt, twin=False):
    if twin:  # step 1: the ANN teacher is shrunk; the twin (T=1) is already cheap
        assert opt['network_t'].pop('preset') == 'sidd-width32'
        opt['network_t'].update(TEACHER)
    else:  # step 2: the twin teaches as it was trained; the student runs fewer time steps
        opt['network_g'].update(STUDENT)
    train = opt['train']
    train.update(total_iter=4, hint_probe_size=32)
    train['scheduler']['T_max'] = 4
    if 'end_iter' in train['kd_schedule']:
        train['kd_schedule']['end_iter'] = 4
    opt['datasets']['train'].update(gt_size=32, batch_size_per_gpu=2, num_worker_per_gpu=0, persistent_workers=False)
    opt['val']['val_freq'] = 4
    opt['logger'].update(print_freq=2, save_checkpoint_freq=4, use_tb_logger=False)
    return opt


def write_yaml(path, opt):
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)


@pytest.fixture
def workspace(tmp_path, tiny_pairs):
    """A user's folder: options/ (this repository's), datasets/my_data/{train,val}/{input,target}, the teacher."""
    ws = tmp_path / 'ws'
    shutil.copytree(os.path.join(REPO_ROOT, 'options'), ws / 'options')
    for split in ('train', 'val'):
        for side, key in (('input', 'lq'), ('target', 'gt')):
            shutil.copytree(tiny_pairs[f'{split}_{key}'], ws / 'datasets' / 'my_data' / split / side)
    torch.manual_seed(0)
    teacher = build_network({'type': 'NAFNet', **TEACHER})
    with torch.no_grad():
        for name, p in teacher.named_parameters():
            if name.endswith(('beta', 'gamma')):
                p.normal_(0, 0.2)
    (ws / 'experiments' / 'pretrained_models').mkdir(parents=True)
    torch.save({'params': teacher.state_dict()}, ws / 'experiments' / 'pretrained_models' / 'my_teacher.pth')
    return ws


def test_distil_your_own_teacher_guide_runs_as_written(workspace, tmp_path, monkeypatch, capsys):
    commands = guide_commands()
    assert [c[0] for c in commands] == PROGRAMS, 'the guide changed: update this test with it'
    scripts = console_scripts()
    assert {c[0] for c in commands if c[0].startswith('spikerir-')} <= set(scripts)  # real console scripts
    twin_edits, train_edits, test_edits = guide_yaml()
    ws = workspace
    monkeypatch.chdir(ws)
    env = subprocess_env()

    def in_process(argv):
        """`python -m <module of the console script> args` in this process (runpy): returns the exit status."""
        monkeypatch.setattr(sys, 'argv', [argv[0], *argv[1:]])
        with pytest.raises(SystemExit) as exit_info, warnings.catch_warnings():
            warnings.simplefilter('ignore', RuntimeWarning)  # runpy: the module was imported before, by other tests
            runpy.run_module(scripts[argv[0]], run_name='__main__', alter_sys=True)
        return exit_info.value.code

    def start(argv, cwd):
        argv = tiny_sizes(argv)
        cmd = [PYTHON, '-m', 'torch.distributed.run', *argv[1:]] if argv[0] == 'torchrun' else \
            [PYTHON, '-m', scripts[argv[0]], *argv[1:]]
        output = open(tmp_path / f'{argv[0]}_{len(os.listdir(tmp_path))}.out', 'w+')  # a file: never a full pipe
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT, text=True)
        proc.output = output
        return proc

    def finish(proc, what):
        proc.wait(timeout=600)
        proc.output.seek(0)
        out = proc.output.read()
        proc.output.close()
        assert proc.returncode == 0, f'{what} failed:\n{out[-4000:]}'
        return out

    # 1. the teacher restores the validation inputs, next to their ground truth
    assert in_process(tiny_sizes(commands[0])) == 0
    assert sorted(os.listdir(ws / 'results' / 'my_teacher')) == ['000.png', '001.png', 'compare']
    assert cv2.imread(str(ws / 'results' / 'my_teacher' / 'compare' / '000.png')).shape == (32, 3 * 32 + 8, 3)

    # 2. options: the copies, edited as the guide says (then shrunk to tiny sizes)
    for cmd in commands[1:4]:
        shutil.copy(cmd[1], cmd[2])
    twin_opt = shrink_train(merge(yaml.safe_load(open(commands[1][2])), twin_edits), twin=True)
    assert twin_opt['name'] == TWIN_EXPERIMENT and twin_opt['path']['pretrain_network_t'].endswith('my_teacher.pth')
    write_yaml(commands[1][2], twin_opt)
    train_opt = shrink_train(merge(yaml.safe_load(open(commands[2][2])), train_edits))
    assert train_opt['name'] == EXPERIMENT and train_opt['network_t'] == twin_opt['network_g']
    assert train_opt['path']['pretrain_network_t'] == f'experiments/{TWIN_EXPERIMENT}/models/net_g_latest.pth'
    write_yaml(commands[2][2], train_opt)
    test_opt = merge(yaml.safe_load(open(commands[3][2])), test_edits)
    test_opt['network_g'].update(STUDENT)
    write_yaml(commands[3][2], test_opt)

    # 3. train the twin, then the student: spikerir-train here, and torchrun in a copy of the folder, alongside
    # steps 3 to 6
    console = finish(start(commands[4], ws), 'spikerir-train (twin)')
    assert (ws / 'experiments' / TWIN_EXPERIMENT / 'models' / 'net_g_latest.pth').is_file()
    assert 'l_kd' in console and 'l_hint' not in console
    ddp_ws = tmp_path / 'ws_torchrun'
    shutil.copytree(ws, ddp_ws)
    ddp, single = start(commands[6], ddp_ws), start(commands[5], ws)
    console = finish(single, 'spikerir-train')
    assert (ws / 'experiments' / EXPERIMENT / 'models' / 'net_g_latest.pth').is_file()
    # the console: progress and validation results; the log file: everything (options dump, network printout)
    assert re.search(r'iter:\s+4\b', console) and 'Validation my-val' in console and 'full log:' in console
    assert 'datasets:[' not in console and 'decoder_level1' not in console
    log = open(next((ws / 'experiments' / EXPERIMENT).glob('train_*.log'))).read()
    assert 'datasets:[' in log and 'decoder_level1' in log and 'Validation my-val' in log
    assert 'Student initialised from the teacher' in log  # init_from_teacher: the student starts from the twin's weights

    # 4. validate the saved student (a program), while 5. and 6. run here
    test_run = start(commands[7], ws)
    capsys.readouterr()
    assert in_process(tiny_sizes(commands[8])) == 0
    assert 'restored 2 of 2 images' in capsys.readouterr().out
    restored = ws / 'results' / 'my_student'
    assert sorted(os.listdir(restored)) == ['000.png', '001.png', 'compare', 'energy.csv']
    rows = open(restored / 'energy.csv').read().splitlines()
    assert len(rows) == 3 and rows[0].startswith('file,height,width,synops')
    assert in_process(tiny_sizes(commands[9])) == 0
    assert 'energy ratio teacher/student' in capsys.readouterr().out
    assert (ws / 'results' / 'energy' / EXPERIMENT / 'energy.png').is_file()
    out = finish(test_run, 'spikerir-test')
    assert re.search(r'Validation my-val\s+# psnr: [\d.]+', out), out[-2000:]
    assert len(os.listdir(ws / 'results' / 'test_my_student' / 'visualization' / 'my-val')) == 2
    finish(ddp, 'torchrun')  # the DDP run (its own copy of the folder) ran alongside all of the above
    assert (ddp_ws / 'experiments' / EXPERIMENT / 'models' / 'net_g_latest.pth').is_file()
    assert 'iter:' in open(next((ddp_ws / 'experiments' / EXPERIMENT).glob('train_*.log'))).read()


def test_quiet_console_keeps_results_on_the_console_and_everything_in_the_file(tmp_path):
    from spikerir_plugin.utils.console import pop_verbose, quiet_console
    import io
    logger = logging.getLogger('quiet_console_test')
    stream, announce = io.StringIO(), io.StringIO()
    console = logging.StreamHandler(stream)
    logger.addHandler(console)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    quiet_console('quiet_console_test', stream=announce)
    file_handler = logging.FileHandler(tmp_path / 'run.log')  # added later, as basicsr's pipelines do
    logger.addHandler(file_handler)
    messages = ['name: x\ndatasets:[\n  train:[', 'Network: SpikerIR, with parameters: 92,935',
                'SpikerIR(\n  (conv): Conv2d(3, 8)\n)', '[x..][epoch:  0, iter:       2, lr:(1.0e-03,)] l_pix: 0.1',
                'Validation my-val\n\t # psnr: 20.1']
    for message in messages:
        logger.info(message)
    logger.warning('Params x will not be optimized.')
    file_handler.close()
    shown, kept = stream.getvalue(), (tmp_path / 'run.log').read_text()
    assert 'datasets:[' not in shown and 'Conv2d' not in shown
    assert 'iter:       2' in shown and 'psnr: 20.1' in shown and 'Network: SpikerIR' in shown
    assert 'will not be optimized' in shown
    assert all(m in kept for m in messages) and 'will not be optimized' in kept
    assert announce.getvalue() == f'full log: {tmp_path / "run.log"}\n'
    argv = ['train.py', '-opt', 'x.yml', '--verbose']
    assert pop_verbose(argv) and argv == ['train.py', '-opt', 'x.yml'] and not pop_verbose(argv)
