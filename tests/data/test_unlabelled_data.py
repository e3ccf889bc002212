"""UnlabelledImageDataset (degraded images without ground truth, optionally mixed with labelled pairs) and
distillation on it: the loader's samples, the teacher's output as the target of unlabelled samples, basicsr's
training pipeline (unlabelled only, mixed, exact resume), DDP, and the refusal of models without a teacher."""
import copy
import logging
import os
import re
import sys

import cv2
import numpy as np
import pytest
import skimage.data
import torch
import yaml

import spikerir_plugin  # noqa: F401  (registers archs, datasets, models)
from basicsr.archs import build_network
from basicsr.data import build_dataloader
from basicsr.models import build_model
from basicsr.utils.registry import DATASET_REGISTRY
from spikerir_plugin.models import run_checks
from spikerir_plugin.utils.options import OptionKeyError, check_option_keys

from conftest import LogLines

pytestmark = pytest.mark.usefixtures('one_thread')

TINY_STUDENT = {'type': 'SpikerIR', 'preset': 'tiny', 'T': 2, 'reduction_t': 2}
TINY_TEACHER = {'type': 'NAFNet', 'width': 8, 'middle_blk_num': 1, 'enc_blk_nums': [1, 1, 1, 1],
                'dec_blk_nums': [1, 1, 1, 1]}
SIZE = 32


def _write(folder, images):
    os.makedirs(folder, exist_ok=True)
    for i, img in enumerate(images):
        cv2.imwrite(os.path.join(folder, f'{i:03d}.png'), img[..., ::-1])  # BGR, as basicsr reads it
    return str(folder)


def _crops(photo, n, seed):
    img = getattr(skimage.data, photo)()
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        y, x = rng.integers(0, img.shape[0] - SIZE), rng.integers(0, img.shape[1] - SIZE)
        out.append(np.ascontiguousarray(img[y:y + SIZE, x:x + SIZE, :3]))
    return out


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
    """noisy: 5 degraded 32x32 photo crops (no ground truth); clean: 3 clean crops; pairs: 2 paired lq/gt crops."""
    root = tmp_path_factory.mktemp('unlabelled')
    rng = np.random.default_rng(0)
    noisy = [np.clip(c + rng.normal(0, 25, c.shape), 0, 255).astype(np.uint8) for c in _crops('chelsea', 5, 1)]
    clean = _crops('astronaut', 3, 2)
    gt = _crops('coffee', 2, 3)
    lq = [np.clip(c + rng.normal(0, 25, c.shape), 0, 255).astype(np.uint8) for c in gt]
    return {'noisy': _write(root / 'noisy', noisy), 'clean': _write(root / 'clean', clean),
            'pair_lq': _write(root / 'pair_lq', lq), 'pair_gt': _write(root / 'pair_gt', gt),
            'noisy_images': noisy, 'root': root}


def unlabelled_opt(folders, **extra):
    opt = {'name': 'photos', 'type': 'UnlabelledImageDataset', 'phase': 'train', 'scale': 1,
           'dataroot_lq': folders['noisy'], 'io_backend': {'type': 'disk'}, 'gt_size': 16}
    opt.update(extra)
    return opt


def gaussian_labelled(folders):
    return {'type': 'GaussianDenoiseDataset', 'dataroot_gt': folders['clean'], 'sigma': 25}


def build(opt):
    return DATASET_REGISTRY.get(opt['type'])(copy.deepcopy(opt))


def _contains(image, crop):
    """Whether ``crop`` (CHW RGB float) is a window of ``image`` (HWC RGB uint8)."""
    crop = (crop.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    h, w = crop.shape[:2]
    return any(np.array_equal(image[y:y + h, x:x + w], crop)
               for y in range(image.shape[0] - h + 1) for x in range(image.shape[1] - w + 1))


# ---------------------------------------------------------------------------------------------- the loader
def test_unlabelled_only_yields_random_crops_of_the_degraded_images_and_no_gt(folders):
    dataset = build(unlabelled_opt(folders))
    assert len(dataset) == 5
    torch.manual_seed(0)
    samples = [dataset[i] for i in range(5)]
    for i, sample in enumerate(samples):
        assert set(sample) == {'lq', 'lq_path'}
        assert sample['lq'].shape == (3, 16, 16) and sample['lq'].dtype == torch.float32
        assert sample['lq_path'] == os.path.join(folders['noisy'], f'{i:03d}.png')
        assert _contains(folders['noisy_images'][i], sample['lq'])  # a window of its own photo, colours as read
    gray = build(unlabelled_opt(folders, in_ch=1))[0]
    assert gray['lq'].shape == (1, 16, 16)


def test_flips_and_rotations_give_the_eight_orientations_of_the_crop(folders):
    """gt_size = the image side: every draw is the whole image, flipped/rotated by basicsr's augment."""
    dataset = build(unlabelled_opt(folders, gt_size=SIZE, use_hflip=True, use_rot=True))
    image = torch.from_numpy(folders['noisy_images'][0]).permute(2, 0, 1).float() / 255.
    orientations = [torch.rot90(f, k, (1, 2)) for f in (image, image.flip(2)) for k in range(4)]
    torch.manual_seed(0)
    seen = set()
    for _ in range(40):
        lq = dataset[0]['lq']
        matches = [k for k, o in enumerate(orientations) if torch.allclose(lq, o, atol=1e-6)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == set(range(8))
    plain = build(unlabelled_opt(folders, gt_size=SIZE))
    assert all(torch.allclose(plain[0]['lq'], image, atol=1e-6) for _ in range(5))


def test_mixed_set_yields_labelled_pairs_then_unlabelled_crops_and_collates_in_one_batch(folders):
    dataset = build(unlabelled_opt(folders, labelled=gaussian_labelled(folders), labelled_repeat=2))
    assert len(dataset) == 2 * 3 + 5
    torch.manual_seed(0)
    for i in range(len(dataset)):
        sample = dataset[i]
        assert set(sample) == {'lq', 'gt', 'has_gt', 'lq_path', 'gt_path'}
        assert sample['lq'].shape == sample['gt'].shape == (3, 16, 16)
        if i < 6:  # the labelled pairs, twice
            assert bool(sample['has_gt']) and torch.isfinite(sample['gt']).all()
            assert sample['gt_path'] == os.path.join(folders['clean'], f'{i % 3:03d}.png')
            assert (sample['lq'] - sample['gt']).std() > 0.05  # noisy input, clean target
        else:
            assert not bool(sample['has_gt']) and torch.isnan(sample['gt']).all() and sample['gt_path'] == ''
            assert sample['lq_path'] == os.path.join(folders['noisy'], f'{i - 6:03d}.png')
    opt = dict(unlabelled_opt(folders, labelled=gaussian_labelled(folders), labelled_repeat=2), use_shuffle=True,
               num_worker_per_gpu=0, batch_size_per_gpu=11, dataset_enlarge_ratio=1)
    loader = build_dataloader(build(opt), opt, num_gpu=0, dist=False, sampler=None, seed=0)
    batch = next(iter(loader))
    assert batch['lq'].shape == batch['gt'].shape == (11, 3, 16, 16)
    assert batch['has_gt'].dtype == torch.bool and int(batch['has_gt'].sum()) == 6
    assert torch.isnan(batch['gt'][~batch['has_gt']]).all() and torch.isfinite(batch['gt'][batch['has_gt']]).all()


def test_mixed_set_with_paired_folders(folders):
    labelled = {'type': 'PairedImageDataset', 'dataroot_lq': folders['pair_lq'], 'dataroot_gt': folders['pair_gt']}
    dataset = build(unlabelled_opt(folders, labelled=labelled))
    assert len(dataset) == 2 + 5
    torch.manual_seed(0)
    first, last = dataset[0], dataset[6]
    assert bool(first['has_gt']) and first['lq_path'].startswith(folders['pair_lq'])
    assert first['gt'].shape == first['lq'].shape == (3, 16, 16) and not bool(last['has_gt'])


def test_samples_are_deterministic_under_a_seed(folders):
    opt = unlabelled_opt(folders, labelled=gaussian_labelled(folders), use_hflip=True, use_rot=True)
    dataset = build(opt)

    def draw(seed):
        torch.manual_seed(seed)
        return [dataset[i] for i in range(len(dataset))]

    a, b, c = draw(3), draw(3), draw(4)
    for x, y in zip(a, b):
        assert torch.equal(x['lq'], y['lq']) and torch.equal(x['gt'].nan_to_num(), y['gt'].nan_to_num())
    assert any(not torch.equal(x['lq'], z['lq']) for x, z in zip(a[3:], c[3:]))  # unlabelled crops differ too


def test_unlabelled_crops_from_an_lmdb(folders, tmp_path):
    from spikerir_plugin.tools.prepare_data import prepare_folder_lmdb
    lmdb = str(tmp_path / 'noisy.lmdb')
    prepare_folder_lmdb(folders["noisy"], lmdb)
    dataset = build(unlabelled_opt(folders, dataroot_lq=lmdb, io_backend={'type': 'lmdb'}))
    torch.manual_seed(1)
    sample = dataset[2]
    assert len(dataset) == 5 and sample['lq_path'] == '002'
    assert _contains(folders['noisy_images'][2], sample['lq'])


BAD_DATASETS = [
    ({'dataroot_lq': '/nonexistent/photos'}, FileNotFoundError, r"dataroot_lq of UnlabelledImageDataset 'photos': "
                                                                r"'/nonexistent/photos' is not a folder"),
    ({'dataroot_lq': None}, KeyError, r'needs dataroot_lq'),
    ({'gt_size': None}, ValueError, r'needs gt_size, the random crop side'),
    ({'phase': 'val'}, ValueError, r"is a training set.*SingleImageDataset"),
    ({'in_ch': 2}, ValueError, r'in_ch must be 1 \(grayscale\) or 3'),
    ({'io_backend': {'type': 'lmdb'}}, FileNotFoundError, r'is not an LMDB with meta_info.txt.*folder-lmdb'),
    ({'labelled': {'type': 'NoSuchDataset'}}, ValueError, r"labelled must be a dataset spec with a registered type "
                                                          r"\(one of .*PairedImageDataset"),
    ({'labelled': {'type': 'GaussianDenoiseDataset', 'dataroot_gt': '.', 'sigma': 25, 'gt_size': 8}}, ValueError,
     r"labelled.gt_size is 8 but the dataset's gt_size is 16"),
    ({'labelled': {'type': 'GaussianDenoiseDataset', 'dataroot_gt': '.', 'sigma': 25, 'in_ch': 1}}, ValueError,
     r'gives 1-channel images but in_ch is 3'),
    ({'labelled': {'type': 'GaussianDenoiseDataset', 'dataroot_gt': '.', 'sigmaa': 25}}, ValueError,
     r'unknown key labelled.sigmaa \(did you mean sigma\?\)'),
    ({'labelled_repeat': 2}, ValueError, r'labelled_repeat is set but labelled is not'),
]


@pytest.mark.parametrize('change, error, message', BAD_DATASETS, ids=[str(b[0])[:50] for b in BAD_DATASETS])
def test_bad_dataset_options_give_a_clear_error(folders, change, error, message):
    with pytest.raises(error, match=message):
        build(unlabelled_opt(folders, **change))


# ---------------------------------------------------------------------------------------------- the loss target
@pytest.fixture(scope='module')
def teacher_ckpt(tmp_path_factory):
    """A tiny NAFNet (its own initialisation, seed 0) saved in basicsr's layout."""
    torch.manual_seed(0)
    net = build_network(dict(TINY_TEACHER))
    path = tmp_path_factory.mktemp('teacher') / 'teacher.pth'
    torch.save({'params': net.state_dict()}, path)
    return str(path)


def model_opt(tmp, teacher_ckpt, **train):
    opt = {'name': 'unit', 'model_type': 'SpikerIRDistillModel', 'num_gpu': 0, 'is_train': True, 'dist': False,
           'rank': 0, 'world_size': 1, 'scale': 1, 'network_g': dict(TINY_STUDENT), 'network_t': dict(TINY_TEACHER),
           'path': {'models': str(tmp), 'training_states': str(tmp), 'visualization': str(tmp),
                    'pretrain_network_t': teacher_ckpt, 'param_key_t': 'params'},
           'train': dict({'optim_g': {'type': 'Adam', 'lr': 1e-3}, 'pixel_opt': {'type': 'L1Loss'}}, **train)}
    return opt


def _batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(n, 3, SIZE, SIZE, generator=g)
    return gt + 0.1 * torch.randn(gt.shape, generator=g), gt


def _l_pix(model, data):
    model.feed_data(data)
    with torch.no_grad():
        return float(model.compute_losses(1)[1]['l_pix'])


def test_an_unlabelled_sample_is_trained_towards_the_teachers_output(tmp_path, teacher_ckpt):
    """The pixel loss of a mixed batch equals that of the same batch whose unlabelled samples are labelled with the
    teacher's output (finite, though their placeholder gt is NaN); a batch without gt at all, fed after a labelled
    one, is trained towards the teacher's output, not the previous batch's gt."""
    model = build_model(model_opt(tmp_path, teacher_ckpt, fft_opt={'type': 'FFTLoss', 'loss_weight': 0.1}))
    lq, gt = _batch()
    has_gt = torch.tensor([True, False, True, False])
    with torch.no_grad():
        teacher = model.net_t(lq)
    placeholder = torch.where(has_gt.view(-1, 1, 1, 1), gt, torch.full_like(gt, float('nan')))
    labelled_by_teacher = torch.where(has_gt.view(-1, 1, 1, 1), gt, teacher)
    mixed = _l_pix(model, {'lq': lq, 'gt': placeholder, 'has_gt': has_gt})
    assert np.isfinite(mixed)
    assert mixed == pytest.approx(_l_pix(model, {'lq': lq, 'gt': labelled_by_teacher}), rel=1e-6)
    assert mixed != pytest.approx(_l_pix(model, {'lq': lq, 'gt': gt}), rel=1e-3)  # not the hidden ground truth

    _l_pix(model, {'lq': lq, 'gt': gt})
    without = _l_pix(model, {'lq': lq, 'lq_path': ['a'] * 4})
    assert without == pytest.approx(_l_pix(model, {'lq': lq, 'gt': teacher}), rel=1e-6)
    assert without != pytest.approx(_l_pix(model, {'lq': lq, 'gt': gt}), rel=1e-3)


def test_kd_inputs_noise_uses_the_teachers_output_as_the_clean_crop(tmp_path, teacher_ckpt):
    opt = model_opt(tmp_path, teacher_ckpt, kd_opt={'type': 'L1Loss'}, kd_inputs={'type': 'noise', 'sigma': 25})
    lq, _ = _batch()
    model = build_model(opt)
    model.feed_data({'lq': lq})
    with torch.no_grad():
        losses = model.compute_losses(1)[1]
    assert all(np.isfinite(float(v)) for v in losses.values()) and float(losses['l_kd_inputs']) > 0


def test_a_distillation_model_without_teacher_refuses_a_batch_without_gt(tmp_path, teacher_ckpt):
    opt = model_opt(tmp_path, teacher_ckpt)
    del opt['network_t']
    for key in ('pretrain_network_t', 'param_key_t'):
        del opt['path'][key]
    model = build_model(opt)
    lq, gt = _batch()
    model.feed_data({'lq': lq, 'gt': gt, 'has_gt': torch.tensor([True, False, True, True])})
    with pytest.raises(ValueError, match=r'samples without ground truth.*add network_t'):
        model.optimize_parameters(1)


def test_a_batch_without_gt_drops_the_previous_batchs_gt_in_both_models(tmp_path, teacher_ckpt):
    """basicsr's feed_data keeps self.gt from the batch before; the plugin's models do not."""
    from spikerir_plugin.utils.options import student_alone_options
    opt = model_opt(tmp_path, teacher_ckpt)
    for options in (opt, student_alone_options(opt)):
        model = build_model(options)
        lq, gt = _batch()
        model.feed_data({'lq': lq, 'gt': gt})
        assert hasattr(model, 'gt')
        model.feed_data({'lq': lq})
        assert not hasattr(model, 'gt')


# ---------------------------------------------------------------------------------------------- the pipeline
def _pipeline_yaml(root, folders, teacher_ckpt, name, train_set, total_iter=3, save_freq=3, model='SpikerIRDistillModel'):
    val = {'name': 'val', 'type': 'PairedImageDataset', 'dataroot_gt': folders['pair_gt'],
           'dataroot_lq': folders['pair_lq'], 'io_backend': {'type': 'disk'}}
    opt = {'name': name, 'model_type': model, 'scale': 1, 'num_gpu': 0, 'manual_seed': 5,
           'datasets': {'train': dict(train_set, name='photos', use_shuffle=True, num_worker_per_gpu=0,
                                      batch_size_per_gpu=2, dataset_enlarge_ratio=1, prefetch_mode=None),
                        'val': val},
           'network_g': dict(TINY_STUDENT), 'network_t': dict(TINY_TEACHER),
           'path': {'pretrain_network_t': teacher_ckpt, 'param_key_t': 'params', 'resume_state': None},
           'train': {'optim_g': {'type': 'AdamW', 'lr': 2e-3}, 'total_iter': total_iter, 'warmup_iter': -1,
                     'scheduler': {'type': 'CosineAnnealingLR', 'T_max': 10, 'eta_min': 1e-5},
                     'pixel_opt': {'type': 'L1Loss'}, 'fft_opt': {'type': 'FFTLoss', 'loss_weight': 0.1},
                     'kd_opt': {'type': 'L1Loss'}, 'hint_opt': {'type': 'HintLoss', 'criterion': 'mse'},
                     'hint_probe_size': 32, 'ema_decay': 0.5},
           'val': {'val_freq': 1000, 'save_img': False, 'metrics': {'psnr': {'type': 'calculate_psnr',
                                                                             'crop_border': 0}}},
           'logger': {'print_freq': 1, 'save_checkpoint_freq': save_freq, 'use_tb_logger': False}}
    if model == 'SpikingSRModel':
        del opt['network_t']
        opt['path'] = {'resume_state': None}
        for key in ('kd_opt', 'hint_opt', 'hint_probe_size'):
            del opt['train'][key]
    path = root / f'{name}_{total_iter}.yml'
    path.write_text(yaml.safe_dump(opt))
    return str(path)


def _run_pipeline(monkeypatch, root, yml, *flags):
    from basicsr.train import train_pipeline
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', yml, *flags])
    handler = LogLines()
    logger = logging.getLogger('basicsr')
    level = logger.level
    logger.setLevel(logging.INFO)  # basicsr sets INFO only when it first creates its logger with a file
    logger.addHandler(handler)
    try:
        train_pipeline(str(root))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return [line for line in handler.lines if 'iter:' in line and 'l_total' in line]


def _terms(line):
    return {k: float(v) for k, v in re.findall(r'(l_\w+): ([-\d.e+]+)', line)}


def test_pipeline_trains_on_unlabelled_photos_only(tmp_path, monkeypatch, folders, teacher_ckpt):
    train_set = unlabelled_opt(folders, gt_size=SIZE, use_hflip=True, use_rot=True)
    lines = _run_pipeline(monkeypatch, tmp_path, _pipeline_yaml(tmp_path, folders, teacher_ckpt, 'only', train_set))
    assert len(lines) == 3
    for line in lines:
        terms = _terms(line)
        assert {'l_pix', 'l_fft', 'l_hint', 'l_kd'} <= set(terms) and all(np.isfinite(list(terms.values())))
    saved = torch.load(tmp_path / 'experiments' / 'only' / 'models' / 'net_g_latest.pth')
    assert set(saved) == {'params', 'params_ema', 'adapters'}


def test_pipeline_on_a_mixed_set_resumes_exactly(tmp_path, monkeypatch, folders, teacher_ckpt):
    """4 iterations on labelled pairs + unlabelled photos in one run == 2 iterations + --auto_resume for 2 more."""
    train_set = unlabelled_opt(folders, gt_size=SIZE, use_hflip=True, use_rot=True,
                               labelled=gaussian_labelled(folders))
    straight = _run_pipeline(monkeypatch, tmp_path,
                             _pipeline_yaml(tmp_path, folders, teacher_ckpt, 'straight', train_set, 4, 4))
    first = _run_pipeline(monkeypatch, tmp_path,
                          _pipeline_yaml(tmp_path, folders, teacher_ckpt, 'resumed', train_set, 2, 2))
    second = _run_pipeline(monkeypatch, tmp_path,
                           _pipeline_yaml(tmp_path, folders, teacher_ckpt, 'resumed', train_set, 4, 2),
                           '--auto_resume')
    assert len(straight) == 4 and len(first) == len(second) == 2
    assert [_terms(line) for line in straight] == [_terms(line) for line in first + second]
    assert all(np.isfinite(list(_terms(line).values())).all() for line in straight)
    a = torch.load(tmp_path / 'experiments' / 'straight' / 'models' / 'net_g_latest.pth')
    b = torch.load(tmp_path / 'experiments' / 'resumed' / 'models' / 'net_g_latest.pth')
    for name in a['params']:
        torch.testing.assert_close(a['params'][name], b['params'][name], atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize('model, why', [('SpikingSRModel', 'trains without a teacher'),
                                        ('SpikerIRDistillModel', 'has no network_t')])
def test_a_model_without_teacher_refuses_the_dataset_before_any_folder(tmp_path, monkeypatch, folders,
                                                                      teacher_ckpt, model, why):
    yml = _pipeline_yaml(tmp_path, folders, teacher_ckpt, 'refused', unlabelled_opt(folders, gt_size=SIZE),
                         model='SpikingSRModel')
    opt = yaml.safe_load(open(yml))
    opt['model_type'] = model
    with open(yml, 'w') as f:
        yaml.safe_dump(opt, f)
    with pytest.raises(ValueError, match=rf'datasets.train.type: UnlabelledImageDataset yields images without '
                                         rf'ground truth.*{model} {why}.*SpikerIRDistillModel with network_t'):
        _run_pipeline(monkeypatch, tmp_path, yml)
    assert not (tmp_path / 'experiments').exists()


def test_launch_checks_name_missing_folders_and_unknown_keys(tmp_path, folders, teacher_ckpt):
    opt = yaml.safe_load(open(_pipeline_yaml(tmp_path, folders, teacher_ckpt, 'checks', unlabelled_opt(
        folders, gt_size=SIZE, labelled=gaussian_labelled(folders)))))
    opt.update(is_train=True, world_size=1)
    run_checks.check_launch(opt)  # as written: fine
    missing = copy.deepcopy(opt)
    missing['datasets']['train']['labelled']['dataroot_gt'] = str(tmp_path / 'nowhere')
    with pytest.raises(FileNotFoundError, match=r"datasets.train.labelled.dataroot_gt: '.*nowhere' does not exist"):
        run_checks.check_launch(missing)
    missing = copy.deepcopy(opt)
    missing['datasets']['train']['dataroot_lq'] = str(tmp_path / 'nowhere')
    with pytest.raises(FileNotFoundError, match=r"datasets.train.dataroot_lq: '.*nowhere' does not exist"):
        run_checks.check_launch(missing)
    unpaired = copy.deepcopy(opt)
    extra = _write(tmp_path / 'more_lq', _crops('coffee', 3, 4))  # a third LQ file that has no GT
    unpaired['datasets']['train']['labelled'] = {'type': 'PairedImageDataset', 'dataroot_gt': folders['pair_gt'],
                                                 'dataroot_lq': extra}
    with pytest.raises(ValueError, match=r"datasets.train.labelled \('photos.labelled'\): the paired folders do not "
                                         r"pair: 1 LQ file\(s\) in dataroot_lq .*more_lq' have no GT file .* \(002.png\)"):
        run_checks.check_launch(unpaired)
    misspelt = copy.deepcopy(opt)
    misspelt['datasets']['train']['labelled_repeats'] = 2
    with pytest.raises(OptionKeyError, match=r'datasets.train.labelled_repeats \(did you mean labelled_repeat\?\)'):
        check_option_keys(misspelt, distill=True)


# ---------------------------------------------------------------------------------------------- DDP (gloo, 2 ranks)
def _ddp_worker(rank, world_size, init_file, folders, teacher_path, out_dir):
    import torch.distributed as dist
    import spikerir_plugin  # noqa: F401
    from basicsr.data import build_dataloader as loader_of
    from basicsr.data.data_sampler import EnlargedSampler
    from basicsr.models import build_model as build
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=world_size)
    torch.manual_seed(0)
    data_opt = dict(unlabelled_opt(folders, gt_size=SIZE, labelled=gaussian_labelled(folders)), use_shuffle=True,
                    num_worker_per_gpu=0, batch_size_per_gpu=2, dataset_enlarge_ratio=1)
    dataset = DATASET_REGISTRY.get(data_opt['type'])(copy.deepcopy(data_opt))
    sampler = EnlargedSampler(dataset, world_size, rank, 1)
    loader = loader_of(dataset, data_opt, num_gpu=0, dist=True, sampler=sampler, seed=0)
    opt = model_opt(out_dir, teacher_path, kd_opt={'type': 'L1Loss'})
    opt.update(dist=True, rank=rank, world_size=world_size)
    model = build(opt)
    seen = []
    for it, batch in zip((1, 2, 3), loader):
        seen.append((sorted(batch), batch['has_gt'].tolist()))
        model.feed_data(batch)
        model.optimize_parameters(it)
    params = {k: v.detach() for k, v in model.get_bare_model(model.net_g).named_parameters()}
    torch.save({'params': params, 'seen': seen}, os.path.join(out_dir, f'rank{rank}.pth'))
    dist.barrier()
    dist.destroy_process_group()


def test_ddp_ranks_see_the_same_keys_and_stay_in_sync(tmp_path, folders, teacher_ckpt):
    import torch.multiprocessing as mp
    small = {k: v for k, v in folders.items() if isinstance(v, str)}
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / 'init'), small, teacher_ckpt, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = torch.load(tmp_path / 'rank0.pth'), torch.load(tmp_path / 'rank1.pth')
    assert len(r0['seen']) == len(r1['seen']) == 2  # 8 samples, 2 ranks, batch 2
    assert all(keys == ['gt', 'gt_path', 'has_gt', 'lq', 'lq_path'] for keys, _ in r0['seen'] + r1['seen'])
    flags = [f for _, fs in r0['seen'] + r1['seen'] for f in fs]
    assert sorted(flags) == [False] * 5 + [True] * 3  # every sample once over both ranks, of both kinds
    for key in r0['params']:
        torch.testing.assert_close(r0['params'][key], r1['params'][key], atol=1e-6, rtol=1e-5, msg=key)
