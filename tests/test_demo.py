"""The README's first command, `spikerir-demo`, end to end on CPU with a few iterations per stage."""
import json
import re
import subprocess

from conftest import PYTHON, subprocess_env


def test_demo_trains_teacher_distills_student_and_reports(tmp_path):
    workdir = tmp_path / 'demo'
    proc = subprocess.run([PYTHON, '-m', 'spikerir_plugin.demo', '--workdir', str(workdir), '--teacher-iters', '4',
                           '--student-iters', '4', '--energy-size', '32'],
                          cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    rows = {name: (float(psnr), float(ssim)) for name, psnr, ssim in
            re.findall(r'^(noisy input|teacher \(NAFNet\)|student \(SpikerIR\))\s+([\d.]+)\s+([\d.]+)', out, re.M)}
    assert set(rows) == {'noisy input', 'teacher (NAFNet)', 'student (SpikerIR)'}, out[-3000:]
    assert 15 < rows['noisy input'][0] < 25  # sigma 25 on [0, 255] images: about 20 dB
    # both networks were trained and saved by the pipeline, then evaluated from those checkpoints
    for name in ('demo_teacher_NAFNet', 'demo_student_SpikerIR'):
        assert (workdir / 'experiments' / name / 'models' / 'net_g_latest.pth').is_file()
    student = json.loads((workdir / 'results' / 'energy' / 'energy.json').read_text())
    assert student['student']['spiking'] and not student['teacher']['spiking']
    assert student['student']['totals']['synops'] > 0 and student['teacher']['totals']['synops'] == 0
    assert (workdir / 'results' / 'energy' / 'energy.png').stat().st_size > 0
    assert 'energy ratio teacher/student' in out
