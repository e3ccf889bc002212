"""The one-command demo (CPU, a few minutes): ANN teacher -> SpikerIR student on real photos.

1. builds a small Gaussian-denoising set (sigma 25) from the photos bundled with scikit-image: clean training
   crops into an LMDB, held-out validation crops into a folder;
2. trains a small NAFNet teacher with BasicSR's own SRModel and train pipeline;
3. distills a SpikerIR student from it with SpikerIRDistillModel (hint + output KD);
4. validates PSNR/SSIM of the noisy input, the teacher and the student on the held-out crops;
5. prints the energy report (SynOps, MACs, firing rates, mJ) for student and teacher.

    spikerir-demo [--workdir demo_work] [--teacher-iters 300] [--student-iters 300]

Everything is written under --workdir; the options files it writes there are plain BasicSR YAML and can be rerun
with `spikerir-train -opt <file>` from that folder.
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np
import yaml

SIGMA = 25
TRAIN_PHOTOS = ('astronaut', 'chelsea', 'rocket', 'immunohistochemistry')
VAL_PHOTOS = ('coffee', 'camera')
TEACHER_NET = {'type': 'NAFNet', 'img_channel': 3, 'width': 16, 'middle_blk_num': 1, 'enc_blk_nums': [1, 1, 1],
               'dec_blk_nums': [1, 1, 1]}
STUDENT_NET = {'type': 'SpikerIR', 'preset': 'tiny', 'T': 4}


def _photo(name):
    import skimage.data
    img = getattr(skimage.data, name)()
    return np.stack([img] * 3, -1) if img.ndim == 2 else img[..., :3]


def write_demo_images(folder, photos, size, per_side):
    """Crops on a regular grid of each photo, saved as PNG (BGR for OpenCV)."""
    import cv2
    os.makedirs(folder, exist_ok=True)
    for name in photos:
        img = _photo(name)
        h, w = img.shape[:2]
        for i, y in enumerate(np.linspace(0, h - size, per_side).astype(int)):
            for j, x in enumerate(np.linspace(0, w - size, per_side).astype(int)):
                cv2.imwrite(os.path.join(folder, f'{name}_{i}{j}.png'), img[y:y + size, x:x + size, ::-1])
    return folder


def base_options(name, iters, train_lmdb, val_dir, batch):
    return {
        'name': name, 'scale': 1, 'num_gpu': 'auto', 'manual_seed': 10,
        'datasets': {
            'train': {'name': 'photos-train', 'type': 'GaussianDenoiseDataset', 'dataroot_gt': train_lmdb,
                      'io_backend': {'type': 'lmdb'}, 'sigma': SIGMA, 'gt_size': 48, 'use_hflip': True,
                      'use_rot': True, 'num_worker_per_gpu': 0, 'batch_size_per_gpu': batch,
                      'dataset_enlarge_ratio': 1, 'prefetch_mode': None},
            'val': {'name': 'photos-val', 'type': 'GaussianDenoiseDataset', 'dataroot_gt': val_dir,
                    'io_backend': {'type': 'disk'}, 'sigma': SIGMA, 'noise_seed': 0},
        },
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'val': {'val_freq': iters, 'save_img': False, 'metrics': {
            'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False},
            'ssim': {'type': 'calculate_ssim', 'crop_border': 0, 'test_y_channel': False}}},
        'logger': {'print_freq': max(iters // 5, 1), 'save_checkpoint_freq': iters, 'use_tb_logger': False},
    }


def teacher_options(iters, train_lmdb, val_dir):
    opt = base_options('demo_teacher_NAFNet', iters, train_lmdb, val_dir, batch=8)
    opt.update(model_type='SRModel', network_g=TEACHER_NET)
    opt['train'] = {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 2e-3, 'betas': [0.9, 0.99]},
                    'scheduler': {'type': 'CosineAnnealingRestartLR', 'periods': [iters], 'restart_weights': [1],
                                  'eta_min': 1e-6},
                    'total_iter': iters, 'warmup_iter': -1, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}}
    return opt


def student_options(iters, train_lmdb, val_dir, teacher_ckpt):
    opt = base_options('demo_student_SpikerIR', iters, train_lmdb, val_dir, batch=8)
    opt.update(model_type='SpikerIRDistillModel', network_g=STUDENT_NET, network_t=TEACHER_NET)
    opt['path'].update(pretrain_network_t=teacher_ckpt, param_key_t='params', strict_load_t=True)
    opt['train'] = {'ema_decay': 0, 'optim_g': {'type': 'AdamW', 'lr': 2e-3, 'weight_decay': 0.0,
                                                'betas': [0.9, 0.99]},
                    'scheduler': {'type': 'CosineAnnealingLR', 'T_max': iters, 'eta_min': 1e-6},
                    'total_iter': iters, 'warmup_iter': -1,
                    'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0},
                    'fft_opt': {'type': 'FFTLoss', 'loss_weight': 0.1},
                    'hint_opt': {'type': 'HintLoss', 'criterion': 'mse', 'loss_weight': 1.0},
                    'kd_opt': {'type': 'L1Loss', 'loss_weight': 1.0},
                    'kd_schedule': {'type': 'cosine', 'start': 1.0, 'end': 0.1, 'start_iter': 0, 'end_iter': iters}}
    return opt


def write_yaml(path, opt):
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return path


def run_training(options_file, workdir):
    cmd = [sys.executable, '-m', 'spikerir_plugin.train', '-opt', options_file]
    print('$', ' '.join(cmd), flush=True)
    subprocess.run(cmd, cwd=workdir, check=True)


def evaluate(val_dir, teacher_ckpt, student_ckpt):
    """PSNR/SSIM (RGB, basicsr's metrics on uint8 images) of noisy input, teacher and student."""
    import torch
    from basicsr.archs import build_network
    from basicsr.data import build_dataset
    from basicsr.metrics import calculate_psnr, calculate_ssim
    from basicsr.utils import tensor2img
    from spikerir_plugin.utils.checkpoint import load_weights
    from spikerir_plugin.utils.inference import inference_network

    dataset = build_dataset({'name': 'val', 'type': 'GaussianDenoiseDataset', 'dataroot_gt': val_dir,
                             'io_backend': {'type': 'disk'}, 'sigma': SIGMA, 'noise_seed': 0, 'phase': 'val',
                             'scale': 1})
    nets = {'teacher (NAFNet)': load_weights(build_network(dict(TEACHER_NET)), teacher_ckpt, which='t').eval(),
            'student (SpikerIR)': load_weights(build_network(dict(STUDENT_NET)), student_ckpt, which='g').eval()}
    scores = {name: [] for name in ['noisy input', *nets]}
    with torch.no_grad():
        for i in range(len(dataset)):
            sample = dataset[i]
            gt = tensor2img(sample['gt'])
            outputs = {'noisy input': sample['lq']}
            for name, net in nets.items():
                outputs[name] = inference_network(net)(sample['lq'][None])[0]
            for name, out in outputs.items():
                img = tensor2img(out)
                scores[name].append((calculate_psnr(img, gt, 0), calculate_ssim(img, gt, 0)))
    params = {name: sum(p.numel() for p in net.parameters()) for name, net in nets.items()}
    print(f'\n== validation on {len(dataset)} held-out crops ({", ".join(VAL_PHOTOS)}), Gaussian sigma {SIGMA}')
    print(f'{"":22s} {"PSNR dB":>8s} {"SSIM":>7s} {"params":>10s}')
    for name, vals in scores.items():
        psnr, ssim = np.mean(vals, axis=0)
        print(f'{name:22s} {psnr:8.2f} {ssim:7.4f} {params.get(name, 0):>10,d}')
    return {name: tuple(np.mean(vals, axis=0)) for name, vals in scores.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(prog='spikerir-demo', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--workdir', default='demo_work')
    parser.add_argument('--teacher-iters', type=int, default=300)
    parser.add_argument('--student-iters', type=int, default=300)
    parser.add_argument('--energy-size', type=int, default=128, help='input side for the energy report')
    args = parser.parse_args(argv)

    import spikerir_plugin  # noqa: F401
    from spikerir_plugin.tools import energy_report
    from spikerir_plugin.tools.prepare_data import prepare_folder_lmdb

    start = time.time()
    workdir = os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    data = os.path.join(workdir, 'datasets')
    train_png = write_demo_images(os.path.join(data, 'photos_train_png'), TRAIN_PHOTOS, 96, 4)
    val_dir = write_demo_images(os.path.join(data, 'photos_val'), VAL_PHOTOS, 96, 2)
    train_lmdb = os.path.join(data, 'photos_train.lmdb')
    if not os.path.isdir(train_lmdb):
        prepare_folder_lmdb(train_png, train_lmdb)
    print(f'data: {len(os.listdir(train_png))} training crops -> {train_lmdb}; {len(os.listdir(val_dir))} val crops')

    t_opt = teacher_options(args.teacher_iters, train_lmdb, val_dir)
    run_training(write_yaml(os.path.join(workdir, 'train_demo_teacher.yml'), t_opt), workdir)
    teacher_ckpt = os.path.join(workdir, 'experiments', t_opt['name'], 'models', 'net_g_latest.pth')

    s_opt = student_options(args.student_iters, train_lmdb, val_dir, teacher_ckpt)
    student_yml = write_yaml(os.path.join(workdir, 'train_demo_student.yml'), s_opt)
    run_training(student_yml, workdir)
    student_ckpt = os.path.join(workdir, 'experiments', s_opt['name'], 'models', 'net_g_latest.pth')

    evaluate(val_dir, teacher_ckpt, student_ckpt)
    print()
    energy_report.main(['-opt', student_yml, '--ckpt', student_ckpt, '--size', str(args.energy_size),
                        '--sigma', str(SIGMA), '--out', os.path.join(workdir, 'results', 'energy')])
    print(f'\ndemo finished in {time.time() - start:.0f} s; everything is under {workdir}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
