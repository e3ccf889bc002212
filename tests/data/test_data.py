"""Data preparation (spikerir-prepare) and GaussianDenoiseDataset, on tiny files made from scikit-image photos.

Every LMDB written here is read back through basicsr's own PairedImageDataset / FileClient."""
import gc
import os
import pickle

import cv2
import lmdb
import numpy as np
import pytest
import scipy.io
import skimage.data
import torch

import spikerir_plugin  # noqa: F401  (registers GaussianDenoiseDataset)
from basicsr.data import build_dataset
from basicsr.data.paired_image_dataset import PairedImageDataset
from spikerir_plugin.data.gaussian_denoise_dataset import GaussianDenoiseDataset
from spikerir_plugin.tools import prepare_data
from spikerir_plugin.tools.lmdb_writing import crop_starts, map_size_for, natural_key


def rgb_photo(name, h, w):
    return cv2.resize(getattr(skimage.data, name)(), (w, h), interpolation=cv2.INTER_AREA)


def write_rgb(path, rgb):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(path, np.ascontiguousarray(rgb[..., ::-1]))


def chw_uint8(t):
    return (t.numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)


def paired_lmdb_dataset(lq, gt):
    return PairedImageDataset({'dataroot_lq': lq, 'dataroot_gt': gt, 'io_backend': {'type': 'lmdb'},
                               'phase': 'val', 'scale': 1})


def lmdb_keys(path):
    with open(os.path.join(path, 'meta_info.txt')) as f:
        return [line.split(' ')[0][:-len('.png')] for line in f]


# --------------------------------------------------------------------------------------------------------- SIDD
@pytest.fixture(scope='module')
def sidd_scenes(tmp_path_factory):
    """Two SIDD-style scene folders, 600x700 images: a 512/384 grid gives starts [0, 88] x [0, 188]."""
    src = tmp_path_factory.mktemp('sidd') / 'Data'
    rng = np.random.default_rng(0)
    truth = {}
    for scene, photo in (('0001_001_S6_00100_00060_3200_L', 'coffee'), ('0002_001_IP_00100_00020_5500_N', 'chelsea')):
        gt = rgb_photo(photo, 600, 700)
        noisy = np.clip(gt + rng.normal(0, 10, gt.shape), 0, 255).astype(np.uint8)
        write_rgb(str(src / scene / f'{scene[:4]}_GT_SRGB_010.PNG'), gt)
        write_rgb(str(src / scene / f'{scene[:4]}_NOISY_SRGB_010.PNG'), noisy)
        truth[f'{scene}_010'] = (noisy, gt)
    return str(src), truth


def test_crop_grid_last_window_touches_edge():
    assert crop_starts(600, 512, 384) == [0, 88]
    assert crop_starts(700, 512, 384) == [0, 188]
    assert crop_starts(512, 512, 384) == [0]
    assert crop_starts(3000, 512, 384)[-1] == 3000 - 512
    assert crop_starts(400, 512, 384) == []


def test_sidd_train_crops_readable_by_paired_dataset(sidd_scenes, tmp_path):
    src, truth = sidd_scenes
    out = str(tmp_path / 'train')
    map_size = 64 * 1024 ** 2
    assert prepare_data.main(['sidd-train', '--src', src, '--out', out, '--workers', '2',
                              '--map-size', str(map_size)]) == 0
    lq_db, gt_db = os.path.join(out, 'input_crops.lmdb'), os.path.join(out, 'gt_crops.lmdb')
    keys = lmdb_keys(gt_db)
    assert sorted(keys) == sorted(lmdb_keys(lq_db))
    assert len(keys) == 2 * 4 and all('.' not in k for k in keys)
    env = lmdb.open(gt_db, map_size=0)  # 0 = adopt the map size stored in the environment
    assert env.info()['map_size'] == map_size
    env.close()

    ds = paired_lmdb_dataset(lq_db, gt_db)
    assert len(ds) == 8
    grid = [(0, 0), (0, 188), (88, 0), (88, 188)]
    for i in range(len(ds)):
        item = ds[i]
        prefix, idx = item['gt_path'].rsplit('_s', 1)
        y, x = grid[int(idx) - 1]
        noisy, gt = truth[prefix]
        np.testing.assert_array_equal(chw_uint8(item['gt']), gt[y:y + 512, x:x + 512])
        np.testing.assert_array_equal(chw_uint8(item['lq']), noisy[y:y + 512, x:x + 512])
    # the last crop is the bottom-right corner of the 600x700 image
    assert grid[-1][0] + 512 == 600 and grid[-1][1] + 512 == 700


def test_sidd_train_map_size_too_small_and_missing_gt(sidd_scenes, tmp_path):
    src, _ = sidd_scenes
    with pytest.raises(RuntimeError, match='too small.*--map-size'):
        prepare_data.prepare_sidd_train(src, str(tmp_path / 'small'), workers=1, map_size=200_000)
    assert os.listdir(tmp_path / 'small') == []  # half-written LMDBs are removed, a rerun starts clean
    lonely = tmp_path / 'Data' / '0003_x'
    lonely.mkdir(parents=True)
    cv2.imwrite(str(lonely / '0003_NOISY_SRGB_010.PNG'), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match='0003_GT_SRGB_010.PNG'):
        prepare_data.find_sidd_pairs(str(tmp_path / 'Data'))
    with pytest.raises(FileNotFoundError, match='no \\*_NOISY_SRGB'):
        prepare_data.find_sidd_pairs(str(tmp_path / 'small'))


def test_default_map_size_bounds_incompressible_data():
    raw = 512 * 512 * 3
    noise = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    png = len(cv2.imencode('.png', noise, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1])
    assert map_size_for([raw] * 10) > 10 * png


def test_sidd_val_mat_blocks(tmp_path):
    rng = np.random.default_rng(1)
    gt = np.stack([np.stack([rgb_photo('astronaut', 512, 512)[32 * b:32 * b + 32, 64 * n:64 * n + 32]
                             for b in range(3)]) for n in range(2)])  # N=2 x B=3 x 32 x 32 x 3, RGB
    noisy = np.clip(gt + rng.normal(0, 10, gt.shape), 0, 255).astype(np.uint8)
    scipy.io.savemat(tmp_path / 'noisy.mat', {'ValidationNoisyBlocksSrgb': noisy})
    scipy.io.savemat(tmp_path / 'gt.mat', {'ValidationGtBlocksSrgb': gt})
    out = str(tmp_path / 'val')
    assert prepare_data.main(['sidd-val', '--noisy', str(tmp_path / 'noisy.mat'), '--gt', str(tmp_path / 'gt.mat'),
                              '--out', out]) == 0
    ds = paired_lmdb_dataset(os.path.join(out, 'input_crops.lmdb'), os.path.join(out, 'gt_crops.lmdb'))
    assert len(ds) == 6
    for i in range(6):
        item = ds[i]
        assert '.' not in item['gt_path']
        np.testing.assert_array_equal(chw_uint8(item['gt']), gt.reshape(6, 32, 32, 3)[i])  # RGB round trip
        np.testing.assert_array_equal(chw_uint8(item['lq']), noisy.reshape(6, 32, 32, 3)[i])

    with pytest.raises(KeyError, match="variables found: \\['ValidationGtBlocksSrgb'\\]"):
        prepare_data.prepare_sidd_val(str(tmp_path / 'gt.mat'), str(tmp_path / 'gt.mat'), str(tmp_path / 'v2'))
    with pytest.raises(FileNotFoundError, match='missing.mat'):
        prepare_data.prepare_sidd_val(str(tmp_path / 'missing.mat'), str(tmp_path / 'gt.mat'), str(tmp_path / 'v3'))


# ------------------------------------------------------------------------------------------------------- paired
@pytest.fixture(scope='module')
def rain_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp('rain')
    rng = np.random.default_rng(2)
    clean = {}
    for i, photo in zip((1, 2, 10), ('astronaut', 'coffee', 'chelsea')):
        gt = rgb_photo(photo, 40, 56)
        rain = np.clip(gt + rng.integers(0, 60, gt.shape), 0, 255).astype(np.uint8)
        write_rgb(str(root / 'input' / f'rain-{i}.png'), rain)
        write_rgb(str(root / 'target' / f'rain-{i}.png'), gt)
        write_rgb(str(root / 'rainy' / f'norain-{i}x2.png'), rain)  # JORDER-style names: order pairing
        write_rgb(str(root / 'norain' / f'norain-{i}.png'), gt)
        clean[i] = (rain, gt)
    return root, clean


def test_paired_disk_layout_for_folder_mode(rain_folders, tmp_path):
    root, clean = rain_folders
    out = str(tmp_path / 'Rain200L' / 'train')
    assert prepare_data.main(['paired', '--input', str(root / 'input'), '--target', str(root / 'target'),
                              '--out', out, '--workers', '1']) == 0
    ds = PairedImageDataset({'dataroot_lq': os.path.join(out, 'input'), 'dataroot_gt': os.path.join(out, 'target'),
                             'io_backend': {'type': 'disk'}, 'filename_tmpl': '{}', 'phase': 'val', 'scale': 1})
    assert len(ds) == 3
    for item in ds:
        i = int(os.path.basename(item['gt_path'])[len('rain-'):-len('.png')])
        np.testing.assert_array_equal(chw_uint8(item['lq']), clean[i][0])
        np.testing.assert_array_equal(chw_uint8(item['gt']), clean[i][1])


def test_paired_lmdb_with_crops_and_order_pairing(rain_folders, tmp_path):
    root, clean = rain_folders
    assert natural_key('norain-2x2') < natural_key('norain-10x2')  # plain string order would pair 10 with 1
    out = str(tmp_path / 'GoPro' / 'train')
    assert prepare_data.main(['paired', '--input', str(root / 'rainy'), '--target', str(root / 'norain'), '--out',
                              out, '--lmdb', '--crop', '32', '--step', '16', '--pair-by', 'order']) == 0
    ds = paired_lmdb_dataset(os.path.join(out, 'input.lmdb'), os.path.join(out, 'target.lmdb'))
    assert len(ds) == 3 * 6  # per 40x56 pair: rows [0, 8] x cols [0, 16, 24]
    grid = [(y, x) for y in (0, 8) for x in (0, 16, 24)]
    seen = 0
    for item in ds:
        stem, idx = item['gt_path'].rsplit('_s', 1)
        assert '.' not in item['gt_path']
        i = int(stem[len('norain-'):])
        y, x = grid[int(idx) - 1]
        rain, gt = clean[i]
        np.testing.assert_array_equal(chw_uint8(item['gt']), gt[y:y + 32, x:x + 32])
        np.testing.assert_array_equal(chw_uint8(item['lq']), rain[y:y + 32, x:x + 32])
        seen += 1
    assert seen == 18


def test_paired_errors_name_both_folders(rain_folders, tmp_path):
    root, _ = rain_folders
    with pytest.raises(ValueError, match='rainy.*norain.*do not pair by name'):
        prepare_data.pair_folders(str(root / 'rainy'), str(root / 'norain'), 'name')
    extra = tmp_path / 'extra'
    for i in range(4):
        write_rgb(str(extra / f'{i}.png'), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=f"'{extra}' has 4 images but target folder '{root / 'target'}' has 3"):
        prepare_data.pair_folders(str(extra), str(root / 'target'), 'order')
    with pytest.raises(FileNotFoundError, match='target folder .*nowhere'):
        prepare_data.pair_folders(str(root / 'input'), str(tmp_path / 'nowhere'))
    with pytest.raises(SystemExit):
        prepare_data.main(['paired', '--input', str(root / 'input'), '--target', str(tmp_path / 'nowhere'),
                           '--out', str(tmp_path / 'o')])


# ------------------------------------------------------------------------------------- Gaussian denoising data
@pytest.fixture(scope='module')
def clean_images(tmp_path_factory):
    """A folder of clean photos (one grayscale), the same folder as LMDB, and a folder of two flat images."""
    root = tmp_path_factory.mktemp('clean')
    write_rgb(str(root / 'bsd' / 'astronaut.png'), rgb_photo('astronaut', 64, 80))
    write_rgb(str(root / 'bsd' / 'coffee.v2.png'), rgb_photo('coffee', 70, 64))  # dot in the stem
    cv2.imwrite(str(root / 'bsd' / 'camera.png'), cv2.resize(skimage.data.camera(), (72, 64)))
    (root / 'bsd' / 'notes.txt').write_text('not an image')
    assert prepare_data.main(['folder-lmdb', '--src', str(root / 'bsd'), '--out', str(root / 'bsd.lmdb')]) == 0
    for i in range(2):
        write_rgb(str(root / 'flat' / f'{i}.png'), np.full((256, 256, 3), 128 if i == 0 else 250, np.uint8))
    return {'folder': str(root / 'bsd'), 'lmdb': str(root / 'bsd.lmdb'), 'flat': str(root / 'flat')}


def gauss_ds(root, phase='val', backend='disk', **opt):
    return GaussianDenoiseDataset({'dataroot_gt': root, 'io_backend': {'type': backend}, 'phase': phase, **opt})


def test_folder_lmdb_keys_and_both_backends_agree(clean_images):
    keys = lmdb_keys(clean_images['lmdb'])
    assert sorted(keys) == ['astronaut', 'camera', 'coffee_v2']
    disk = gauss_ds(clean_images['folder'], sigma=15)
    db = gauss_ds(clean_images['lmdb'], backend='lmdb', sigma=15)
    assert len(disk) == len(db) == 3  # notes.txt ignored
    for i in range(3):
        a, b = disk[i], db[i]
        torch.testing.assert_close(a['gt'], b['gt'], rtol=0, atol=0)
        torch.testing.assert_close(a['lq'], b['lq'], rtol=0, atol=0)  # noise depends on the index only
        assert set(a) == {'lq', 'gt', 'lq_path', 'gt_path'} and a['lq'].dtype == torch.float32


def test_noise_std_matches_sigma_and_is_not_clipped(clean_images):
    ds = gauss_ds(clean_images['flat'], sigma=25)
    item = ds[0]
    noise = (item['lq'] - item['gt']) * 255
    assert abs(noise.std().item() - 25) < 0.5 and abs(noise.mean().item()) < 0.5
    assert item['gt'].shape == (3, 256, 256)
    bright = ds[1]  # flat 250: noise pushes values above 1 unless clip is on
    assert bright['lq'].max() > 1.0
    assert gauss_ds(clean_images['flat'], sigma=25, clip=True)[1]['lq'].max() <= 1.0


def test_validation_noise_is_deterministic_per_index(clean_images):
    ds = gauss_ds(clean_images['flat'], sigma_range=[5, 50])
    a, b = ds[0], ds[0]
    torch.testing.assert_close(a['lq'], b['lq'], rtol=0, atol=0)
    torch.testing.assert_close(gauss_ds(clean_images['flat'], sigma_range=[5, 50])[0]['lq'], a['lq'], rtol=0, atol=0)
    n0, n1 = a['lq'] - a['gt'], ds[1]['lq'] - ds[1]['gt']
    assert not torch.allclose(n0, n1, atol=1e-3)
    other_seed = gauss_ds(clean_images['flat'], sigma_range=[5, 50], noise_seed=3)[0]
    assert not torch.allclose(other_seed['lq'], a['lq'], atol=1e-3)
    assert 5 <= (n0 * 255).std().item() <= 50


def test_training_crops_flips_and_fresh_noise(clean_images):
    ds = gauss_ds(clean_images['folder'], phase='train', sigma=25, gt_size=32, use_hflip=True, use_rot=True)
    torch.manual_seed(0)
    a, b = ds[0], ds[0]
    assert a['gt'].shape == a['lq'].shape == (3, 32, 32)
    assert not torch.allclose(a['lq'] - a['gt'], b['lq'] - b['gt'], atol=1e-3)
    torch.manual_seed(0)
    torch.testing.assert_close(ds[0]['lq'], a['lq'], rtol=0, atol=0)  # reproducible from torch's RNG state
    # coffee.v2 is 64x70: a 64x64 crop has 7 positions, so more than 7 distinct outputs means flips happen too
    whole = gauss_ds(clean_images['folder'], phase='train', sigma=0, gt_size=64, use_hflip=True, use_rot=True)
    variants = {whole[1]['gt'].numpy().tobytes() for _ in range(200)}
    assert len(variants) > 7


def test_training_noise_is_new_every_epoch_with_restarted_workers(clean_images):
    """basicsr's worker_init_fn gives numpy/random the same seed in every epoch; the noise must still change."""
    from functools import partial

    from basicsr.data import worker_init_fn
    ds = gauss_ds(clean_images['folder'], phase='train', sigma=25, gt_size=32)
    init = partial(worker_init_fn, num_workers=1, rank=0, seed=10)
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=1, worker_init_fn=init)
    torch.manual_seed(0)
    epochs = [[(b['lq'] - b['gt']) for b in loader] for _ in range(2)]  # a fresh worker per epoch
    assert all(not torch.allclose(x, y, atol=1e-3) for x, y in zip(*epochs))


def test_grayscale_and_crop_to_multiple(clean_images):
    ds = gauss_ds(clean_images['folder'], sigma=25, in_ch=1, crop_to_multiple=16)
    item = ds[0]  # astronaut.png, 80x64 -> 80x64; coffee.v2 70x64 -> 64x64
    assert item['gt'].shape == (1, 64, 80) and item['lq'].shape == (1, 64, 80)
    assert ds[2]['gt'].shape == (1, 64, 64)
    train = gauss_ds(clean_images['lmdb'], backend='lmdb', phase='train', sigma=25, in_ch=1, gt_size=16,
                     use_hflip=True, use_rot=True)
    assert all(train[i]['lq'].shape == (1, 16, 16) for i in range(3))


def test_built_through_registry_and_picklable_after_use(clean_images):
    ds = build_dataset({'name': 'bsd', 'type': 'GaussianDenoiseDataset', 'dataroot_gt': clean_images['lmdb'],
                        'io_backend': {'type': 'lmdb'}, 'phase': 'val', 'sigma': 50})
    first = ds[0]
    clone = pickle.loads(pickle.dumps(ds))
    del ds  # py-lmdb refuses a second handle on one environment per process; a spawn worker is its own process
    gc.collect()
    torch.testing.assert_close(clone[0]['lq'], first['lq'], rtol=0, atol=0)


@pytest.mark.parametrize('opt, error, match', [
    ({'sigma': 25, 'sigma_range': [0, 50]}, ValueError, 'exactly one of sigma'),
    ({}, ValueError, 'exactly one of sigma'),
    ({'sigma_range': [50, 10]}, ValueError, 'sigma_range must be'),
    ({'sigma': 25, 'in_ch': 2}, ValueError, 'in_ch must be 1'),
    ({'sigma': 25, 'phase': 'train'}, KeyError, 'gt_size'),
    ({'sigma': 25, 'io_backend': {'type': 'hdf5'}}, ValueError, "'disk' or 'lmdb'"),
    ({'sigma': 25, 'dataroot_gt': '/nonexistent/bsd'}, FileNotFoundError, '/nonexistent/bsd'),
    ({'sigma': 25, 'io_backend': {'type': 'lmdb'}}, FileNotFoundError, 'not an LMDB'),
])
def test_gaussian_dataset_bad_options(clean_images, opt, error, match):
    full = {'dataroot_gt': clean_images['folder'], 'io_backend': {'type': 'disk'}, 'phase': 'val', **opt}
    with pytest.raises(error, match=match):
        GaussianDenoiseDataset(full)
