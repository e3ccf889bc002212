"""Equal outputs across a change of the code's layout: every registered arch's eval forward and inference copies
(exact and fast), a checkpoint written and read back, and the energy figures, saved once from one revision and
compared on another.

    python benchmarks/layout_equality.py --save benchmarks/layout_reference.pt     # on the revision before
    python benchmarks/layout_equality.py --compare benchmarks/layout_reference.pt  # on the revision after

The comparison prints one row per quantity with the largest absolute difference; the exact paths (eval forward,
exact inference copy, checkpoint round trip, SynOps/MACs) must differ by 0. The fast copy is compared within its
documented tolerance because it is built from the same weights on the same machine.
"""
import argparse
import io
import sys

import torch

import spikerir_plugin  # noqa: F401  (registers the plugin's archs)
from basicsr.archs import build_network

try:  # the public entry point, wherever the layout keeps it
    from spikerir_plugin.inference import inference_network
except ImportError:
    from spikerir_plugin.inference import inference_network
from spikerir_plugin.tools.energy_report import measure_energy
from spikerir_plugin.utils import console

ARCHS = {  # small configurations of every registered arch (CPU, seconds)
    'SpikerIR-tiny': {'type': 'SpikerIR', 'preset': 'tiny', 'T': 4},
    'SpikerIR-base-IF': {'type': 'SpikerIR', 'preset': 'base', 'T': 2, 'reduction_t': 2, 'neuron': 'if'},
    'SpikerIR-twin': {'type': 'SpikerIR', 'preset': 'tiny', 'T': 1, 'reduction_t': 1, 'neuron': 'rate'},
    'ESDNet': {'type': 'ESDNet', 'dim': 8, 'en_num_blocks': [1, 1, 1, 1], 'de_num_blocks': [1, 1, 1, 1], 'T': 2,
               'reduction_t': 2, 'reduction_c': 4},
    'SPIDEN': {'type': 'SPIDEN', 'width': 16, 'depth': 4, 'T': 2},
    'NAFNet': {'type': 'NAFNet', 'width': 8, 'middle_blk_num': 1, 'enc_blk_nums': [1, 1], 'dec_blk_nums': [1, 1]},
    'Restormer': {'type': 'Restormer', 'dim': 8, 'num_blocks': [1, 1, 1, 1], 'num_refinement_blocks': 1,
                  'heads': [1, 1, 2, 2]},
}
FAST_TOLERANCE = 5e-2  # a flipped spike changes the output locally by up to a few 1e-2 (benchmarks/README.md)


def build(spec, seed):
    torch.manual_seed(seed)
    net = build_network(dict(spec))
    with torch.no_grad():  # non-trivial norm statistics and gains, so the copies have something to fold
        for name, buffer in net.named_buffers():
            if name.endswith('running_var'):
                buffer.uniform_(0.5, 1.5)
            elif name.endswith('running_mean'):
                buffer.uniform_(-0.1, 0.1)
    return net.eval()


def measure(spec, seed=0):
    net = build(spec, seed)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(seed + 1))
    out = {}
    with torch.no_grad():
        out['eval'] = net(x)
        out['inference_exact'] = inference_network(net)(x)
        try:
            out['inference_fast'] = inference_network(net, exact=False)(x)
        except ValueError:  # no fast copy for this arch
            pass
    buffer = io.BytesIO()
    torch.save({'params': net.state_dict()}, buffer)
    buffer.seek(0)
    again = build(spec, seed + 100)
    again.load_state_dict(torch.load(buffer, weights_only=True)['params'])
    with torch.no_grad():
        out['checkpoint_roundtrip'] = again.eval()(x)
    report = measure_energy(net, input_shape=tuple(x.shape), inputs=x)
    out['synops'] = torch.tensor(float(report['totals']['synops']))
    out['macs'] = torch.tensor(float(report['totals']['macs']))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument('--save', help='write the figures of this revision to FILE')
    group.add_argument('--compare', help='compare this revision with the figures in FILE')
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    current = {name: measure(spec) for name, spec in ARCHS.items()}
    if args.save:
        torch.save(current, args.save)
        console.info(f'saved {sum(len(v) for v in current.values())} figures of {len(current)} archs to {args.save}')
        return 0
    reference = torch.load(args.compare, weights_only=True)
    failed = 0
    console.info(f'{"arch":<18} {"quantity":<22} {"max |diff|":>12}  verdict')
    for name in ARCHS:
        for key, value in reference[name].items():
            now = current[name].get(key)
            if now is None:
                diff, ok = float('nan'), False
            else:
                diff = (now.double() - value.double()).abs().max().item()
                ok = diff <= (FAST_TOLERANCE if key == 'inference_fast' else 0.0)
            failed += not ok
            console.info(f'{name:<18} {key:<22} {diff:>12.3g}  {"equal" if ok else "DIFFERENT"}')
    console.info('all equal' if not failed else f'{failed} figure(s) differ')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
