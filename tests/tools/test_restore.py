"""spikerir-restore: folders, globs and files in; gray/16-bit/alpha handled; bad files skipped; compare, energy,
tiles; networks from test options or --arch/--ckpt with BasicSR, raw and official-style checkpoints."""
import csv
import os
import runpy
import sys
import warnings

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.archs import build_network

import spikerir_plugin  # noqa: F401
from spikerir_plugin.inference.tiled import tiled_forward
from spikerir_plugin.tools.restore import main, parse_arch_args

NAF = {'type': 'NAFNet', 'width': 8, 'middle_blk_num': 1, 'enc_blk_nums': [1, 1], 'dec_blk_nums': [1, 1]}
NAF_ARGS = '{width: 8, middle_blk_num: 1, enc_blk_nums: [1, 1], dec_blk_nums: [1, 1]}'
SPIKER = {'type': 'SpikerIR', 'preset': 'tiny', 'T': 2, 'reduction_t': 2}


def trained_like(net_opt, seed=0):
    """A network whose blocks all act (NAFNet starts with zero residual scales, i.e. as the identity)."""
    torch.manual_seed(seed)
    net = build_network(dict(net_opt))
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(('beta', 'gamma')):
                p.normal_(0, 0.5)
    return net.eval()


def run_net(net, img, peak=255):
    """The expected restoration of an RGB (H, W, 3) array, computed here with the network directly."""
    x = torch.from_numpy(img.astype(np.float32) / peak).permute(2, 0, 1)[None]
    with torch.no_grad():
        y = net(x).clamp(0, 1)
    return (y[0].permute(1, 2, 0).numpy() * peak).round()


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
    import skimage.data
    root = tmp_path_factory.mktemp('restore_in')
    rgb = np.ascontiguousarray(skimage.data.astronaut()[60:100, 150:206])  # 40 x 56
    (root / 'in').mkdir()
    (root / 'gt').mkdir()
    cv2.imwrite(str(root / 'in' / 'color.png'), rgb[..., ::-1])
    cv2.imwrite(str(root / 'in' / 'gray.png'), rgb[..., 1])
    cv2.imwrite(str(root / 'in' / 'deep.png'), rgb[..., ::-1].astype(np.uint16) * 257 + 100)
    alpha = np.tile(np.arange(56, dtype=np.uint8) * 4, (40, 1))
    cv2.imwrite(str(root / 'in' / 'cutout.png'), np.dstack([rgb[..., ::-1], alpha]))
    (root / 'in' / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n truncated')
    (root / 'in' / 'notes.txt').write_text('not an image, not listed')
    cv2.imwrite(str(root / 'gt' / 'color.png'), rgb[..., ::-1])
    return {'root': root, 'rgb': rgb, 'alpha': alpha}


@pytest.fixture(scope='module')
def naf_ckpt(photos):
    net = trained_like(NAF)
    path = photos['root'] / 'naf_basicsr.pth'
    torch.save({'params': net.state_dict()}, path)
    return net, path


def read(path):
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img


def test_folder_gray_16bit_alpha_broken_compare_and_energy(photos, naf_ckpt, tmp_path, capsys):
    net, ckpt = naf_ckpt
    src, out = photos['root'] / 'in', tmp_path / 'out'
    rc = main(['-i', str(src), '-o', str(out), '--arch', 'NAFNet', '--arch-args', NAF_ARGS, '--ckpt', str(ckpt),
               '--compare', '--gt', str(photos['root'] / 'gt'), '--energy', '--device', 'cpu'])
    err = capsys.readouterr().err
    assert rc == 1 and 'broken.png' in err and 'not a readable image' in err  # reported, the rest still done
    assert sorted(os.listdir(out)) == ['color.png', 'compare', 'cutout.png', 'deep.png', 'energy.csv', 'gray.png']
    rgb = photos['rgb']
    color = read(out / 'color.png')
    assert color.shape == (40, 56, 3) and color.dtype == np.uint8
    np.testing.assert_array_equal(color[..., ::-1], run_net(net, rgb))
    assert not np.array_equal(color[..., ::-1], rgb)
    # gray: 3 equal channels through the net, their mean written back as one gray channel
    gray = read(out / 'gray.png')
    assert gray.shape == (40, 56) and gray.dtype == np.uint8
    g3 = np.repeat(rgb[..., 1:2], 3, axis=2)
    x = torch.from_numpy(g3.astype(np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        expected = (net(x).clamp(0, 1)[0].mean(0).numpy() * 255).round()
    np.testing.assert_array_equal(gray, expected)
    # 16 bits in, 16 bits out, at full precision
    deep = read(out / 'deep.png')
    assert deep.dtype == np.uint16 and deep.shape == (40, 56, 3)
    np.testing.assert_array_equal(deep[..., ::-1], run_net(net, rgb.astype(np.uint16) * 257 + 100, 65535))
    assert len(np.unique(deep)) > 256
    # alpha re-attached untouched, color restored as the plain image
    cutout = read(out / 'cutout.png')
    assert cutout.shape == (40, 56, 4)
    np.testing.assert_array_equal(cutout[..., 3], photos['alpha'])
    np.testing.assert_array_equal(cutout[..., :3], color)
    # input | output | ground truth, side by side (4 px gaps); without ground truth: input | output
    strip = read(out / 'compare' / 'color.png')
    assert strip.shape == (40, 3 * 56 + 8, 3)
    np.testing.assert_array_equal(strip[:, :56], rgb[..., ::-1])
    np.testing.assert_array_equal(strip[:, 60:116], color)
    assert read(out / 'compare' / 'gray.png').shape == (40, 2 * 56 + 4, 3)
    rows = list(csv.DictReader(open(out / 'energy.csv')))
    assert [r['file'] for r in rows] == ['color.png', 'cutout.png', 'deep.png', 'gray.png']
    assert all(int(r['macs']) > 0 and int(r['synops']) == 0 and float(r['energy_mJ']) > 0 for r in rows)
    assert rows[0]['height'] == '40' and rows[0]['width'] == '56'


def test_options_file_glob_and_single_file_with_a_spiking_net(photos, tmp_path, capsys):
    net = trained_like(SPIKER, seed=1)
    ckpt = tmp_path / 'net_g_5.pth'
    torch.save({'params': trained_like(SPIKER, seed=2).state_dict(), 'params_ema': net.state_dict()}, ckpt)
    opt = {'name': 'restore_test', 'network_g': SPIKER,
           'path': {'pretrain_network_g': str(ckpt), 'param_key_g': 'params_ema', 'strict_load_g': True}}
    opt_file = tmp_path / 'test.yml'
    opt_file.write_text(yaml.safe_dump(opt))
    src = photos['root'] / 'in'
    rc = main(['-i', str(src / 'c*.png'), str(src / 'gray.png'), '-o', str(tmp_path / 'out'), '-opt', str(opt_file),
               '--suffix', '_restored', '--energy', str(tmp_path / 'e.csv')])
    assert rc == 0, capsys.readouterr().err
    assert sorted(os.listdir(tmp_path / 'out')) == ['color_restored.png', 'cutout_restored.png', 'gray_restored.png']
    np.testing.assert_array_equal(read(tmp_path / 'out' / 'color_restored.png')[..., ::-1],
                                  run_net(net, photos['rgb']))  # params_ema, as the options say
    rows = list(csv.DictReader(open(tmp_path / 'e.csv')))
    assert len(rows) == 3 and all(r['spiking'] == 'True' and int(r['synops']) > 0 for r in rows)
    assert all(0 < float(r['mean_firing_rate']) < 1 for r in rows)


def test_fast_runs_the_folded_copy_of_a_spiking_net(photos, tmp_path, capsys, monkeypatch):
    """--fast restores through inference_network(net, exact=False): the same image up to the rare pixels near a
    spike that flipped at its threshold."""
    import spikerir_plugin.tools.restorer as restorer
    net = trained_like(SPIKER, seed=1)
    ckpt = tmp_path / 'net.pth'
    torch.save({'params': net.state_dict()}, ckpt)
    calls, real = [], restorer.inference_network
    monkeypatch.setattr(restorer, 'inference_network', lambda n, **kw: calls.append(kw) or real(n, **kw))
    rc = main(['-i', str(photos['root'] / 'in' / 'color.png'), '-o', str(tmp_path / 'out'), '--arch', 'SpikerIR',
               '--arch-args', 'preset=tiny,T=2,reduction_t=2', '--ckpt', str(ckpt), '--fast', '--device', 'cpu'])
    assert rc == 0, capsys.readouterr().err
    assert calls == [{'exact': False}]
    diff = np.abs(read(tmp_path / 'out' / 'color.png')[..., ::-1] - run_net(net, photos['rgb']))
    assert diff.mean() < 0.5 and diff.max() <= 16, (diff.mean(), diff.max())


def test_tiles_raw_and_official_checkpoints_and_a_one_channel_net(photos, naf_ckpt, tmp_path):
    net, _ = naf_ckpt
    raw = tmp_path / 'raw.pth'
    torch.save(net.state_dict(), raw)  # a bare state dict
    official = tmp_path / 'official.pth'  # a DDP-saved release: 'module.' prefixes under its own key
    torch.save({'state_dict': {f'module.{k}': v for k, v in net.state_dict().items()}}, official)
    src = str(photos['root'] / 'in' / 'color.png')
    assert main(['-i', src, '-o', str(tmp_path / 'tiled'), '--arch', 'NAFNet', '--arch-args', NAF_ARGS,
                 '--ckpt', str(raw), '--tile', '24', '--overlap', '8']) == 0
    assert main(['-i', src, '-o', str(tmp_path / 'whole'), '--arch', 'NAFNet', '--ckpt', str(official),
                 '--param-key', 'state_dict', '--arch-args',
                 'width=8,middle_blk_num=1,enc_blk_nums=[1,1],dec_blk_nums=[1,1]']) == 0
    x = torch.from_numpy(photos['rgb'].astype(np.float32) / 255).permute(2, 0, 1)[None]
    tiled = (tiled_forward(net, x, 24, 8).clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255).round()
    np.testing.assert_array_equal(read(tmp_path / 'tiled' / 'color.png')[..., ::-1], tiled)
    whole = read(tmp_path / 'whole' / 'color.png')[..., ::-1]
    np.testing.assert_array_equal(whole, run_net(net, photos['rgb']))
    assert not np.array_equal(whole, tiled)  # 3 x 4 tiles of a net with global gates: an approximation
    # a gray (1-channel) net restores each color channel of a color image on its own
    gray_net = trained_like({**NAF, 'img_channel': 1})
    torch.save({'params': gray_net.state_dict()}, tmp_path / 'gray.pth')
    assert main(['-i', src, '-o', str(tmp_path / 'planes'), '--arch', 'NAFNet', '--ckpt', str(tmp_path / 'gray.pth'),
                 '--arch-args', '{img_channel: 1, width: 8, middle_blk_num: 1, enc_blk_nums: [1, 1], '
                                'dec_blk_nums: [1, 1]}', '--ext', 'tif']) == 0
    planes = torch.from_numpy(photos['rgb'].astype(np.float32) / 255).permute(2, 0, 1)[:, None]
    with torch.no_grad():
        expected = (gray_net(planes).clamp(0, 1)[:, 0].permute(1, 2, 0).numpy() * 255).round()
    np.testing.assert_array_equal(read(tmp_path / 'planes' / 'color.tif')[..., ::-1], expected)


@pytest.mark.parametrize('extra, words', [
    (['--bf16', '--device', 'cpu'], ['--bf16 needs a CUDA device']),
    (['--arch', 'NoSuchNet', '--ckpt', 'x.pth'], ['unknown arch', 'NoSuchNet', 'NAFNetLocal']),
    (['--arch', 'NAFNet', '--arch-args', 'width'], ['--arch-args', 'key=value']),
    (['--arch', 'NAFNet'], ['--arch needs --ckpt']),
    (['--arch', 'NAFNet', '--arch-args', NAF_ARGS, '--ckpt', '<dir>/missing.pth'], ['--ckpt', 'missing.pth',
                                                                                          'does not exist']),
    (['--arch', 'NAFNet', '--arch-args', '{width: 16}', '--ckpt', '<ckpt>'], ['does not match', 'width']),
    (['--arch', 'NAFNet', '--ckpt', '<ckpt>', '--tile', '16', '--overlap', '16'], ['--overlap']),
    (['--arch', 'NAFNet', '--arch-args', NAF_ARGS, '--ckpt', '<ckpt>', '--fast'], ['--fast', 'spiking archs',
                                                                                  'NAFNet']),
])
def test_bad_command_lines_exit_2_with_a_clear_message(photos, naf_ckpt, tmp_path, capsys, extra, words):
    extra = [e.replace('<ckpt>', str(naf_ckpt[1])).replace('<dir>', str(tmp_path)) for e in extra]
    if '--arch' not in extra:
        extra += ['--arch', 'NAFNet', '--ckpt', str(naf_ckpt[1])]
    with pytest.raises(SystemExit) as exit_info:
        main(['-i', str(photos['root'] / 'in' / 'color.png'), '-o', str(tmp_path / 'o'), *extra])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words), err
    assert not (tmp_path / 'o').exists()


def test_never_overwrites_its_input_and_reports_missing_inputs(photos, naf_ckpt, tmp_path, capsys, monkeypatch):
    src = tmp_path / 'src'
    src.mkdir()
    cv2.imwrite(str(src / 'a.png'), photos['rgb'])
    before = (src / 'a.png').read_bytes()
    argv = ['spikerir-restore', '-i', str(src), str(tmp_path / 'nothing_here.png'), '-o', str(src), '--arch', 'NAFNet',
            '--arch-args', NAF_ARGS, '--ckpt', str(naf_ckpt[1])]
    monkeypatch.setattr(sys, 'argv', argv)  # as `python -m spikerir_plugin.tools.restore ...`: its exit status
    with pytest.raises(SystemExit) as exit_info, warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)  # runpy: the module is already imported
        runpy.run_module('spikerir_plugin.tools.restore', run_name='__main__', alter_sys=True)
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and 'would overwrite the input' in err and 'nothing_here.png: no such file' in err
    assert (src / 'a.png').read_bytes() == before
    assert main(['-i', str(src), '-o', str(src), '--suffix', '_out', '--arch', 'NAFNet', '--arch-args', NAF_ARGS,
                 '--ckpt', str(naf_ckpt[1])]) == 0
    assert sorted(os.listdir(src)) == ['a.png', 'a_out.png']


def test_arch_args_forms():
    assert parse_arch_args('preset=tiny,T=4,enc_blk_nums=[1, 1, 28],x=~') == \
        {'preset': 'tiny', 'T': 4, 'enc_blk_nums': [1, 1, 28], 'x': None}
    assert parse_arch_args('{"width": 16, "dec": [1, 2]}') == {'width': 16, 'dec': [1, 2]}
    assert parse_arch_args('') == {}


def test_jpeg_is_restored_as_viewers_show_it(photos, naf_ckpt, tmp_path):
    from PIL import Image
    image = Image.fromarray(photos['rgb'])  # 40 x 56, stored with "rotate 90 degrees clockwise to display"
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(tmp_path / 'phone.jpg', exif=exif.tobytes(), quality=95)
    assert main(['-i', str(tmp_path / 'phone.jpg'), '-o', str(tmp_path / 'out'), '--arch', 'NAFNet',
                 '--arch-args', NAF_ARGS, '--ckpt', str(naf_ckpt[1])]) == 0
    assert read(tmp_path / 'out' / 'phone.png').shape == (56, 40, 3)
