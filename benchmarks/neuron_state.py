"""What the stateless neurons cost: the plugin's StatelessLIFNode (every call starts at rest) against spikingjelly's
LIFNode with ``functional.reset_net`` after every step (what callers had to do before), same weights, same process.

Times a training step (forward + L1 + backward + AdamW) and an eval forward of SpikerIR, alternating the two
variants, and prints the medians and their ratio. Example:
    python benchmarks/neuron_state.py --preset base --size 2x64 --steps 20
"""
import argparse
import copy
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional, neuron

import spikerir_plugin  # noqa: F401
from spikerir_plugin.archs.neurons import StatelessLIFNode
from spikerir_plugin.archs.spikerir_arch import SpikerIR
from spikerir_plugin.utils import console


def stateful_like(node):
    """spikingjelly's own LIFNode with the arguments of ``node`` (a StatelessLIFNode; neither has parameters)."""
    twin = neuron.LIFNode(tau=node.tau, decay_input=node.decay_input, v_threshold=node.v_threshold,
                          v_reset=node.v_reset, surrogate_function=node.surrogate_function,
                          detach_reset=node.detach_reset, step_mode=node.step_mode, store_v_seq=node.store_v_seq)
    return twin.train(node.training)


def with_stateful_neurons(net):
    """A copy of ``net`` whose neurons are spikingjelly's own LIFNode (same arguments), each set on its parent."""
    net = copy.deepcopy(net)
    names = [name for name, module in net.named_modules() if isinstance(module, StatelessLIFNode)]
    for name in names:
        parent, _, child = name.rpartition('.')
        owner = net.get_submodule(parent)
        setattr(owner, child, stateful_like(getattr(owner, child)))
    return net


def timed(fn, device):
    if device.type == 'cuda':
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == 'cuda':
        torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e3


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--preset', default='tiny', choices=('tiny', 'base'))
    p.add_argument('--size', default='2x64', help='BATCHxSIDE')
    p.add_argument('--steps', type=int, default=10)
    p.add_argument('--threads', type=int, default=1, help='CPU threads (1: steadier numbers on a shared box)')
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == 'cpu':
        torch.set_num_threads(args.threads)
    batch, side = (int(v) for v in args.size.split('x'))
    torch.manual_seed(0)
    stateless = SpikerIR(preset=args.preset, T=4).to(device).train()
    stateful = with_stateful_neurons(stateless)
    nets = {'stateless (plugin)': (stateless, False), 'stateful + reset_net': (stateful, True)}
    optimizers = {name: torch.optim.AdamW(net.parameters(), lr=1e-4) for name, (net, _) in nets.items()}
    x, gt = torch.rand(batch, 3, side, side, device=device), torch.rand(batch, 3, side, side, device=device)

    def train_step(name):
        net, reset = nets[name]
        optimizers[name].zero_grad()
        F.l1_loss(net(x), gt).backward()
        optimizers[name].step()
        if reset:
            functional.reset_net(net)

    def eval_forward(name):
        net, reset = nets[name]
        with torch.no_grad():
            net(x)
        if reset:
            functional.reset_net(net)

    times = {(kind, name): [] for kind in ('train', 'eval') for name in nets}
    for name in nets:  # warm-up
        train_step(name)
        eval_forward(name)
    for _ in range(args.steps):
        for name in nets:  # alternate, so that load changes on a shared machine hit both alike
            times[('train', name)].append(timed(lambda: train_step(name), device))
            times[('eval', name)].append(timed(lambda: eval_forward(name), device))
    result = {'device': str(device), 'preset': args.preset, 'batch': batch, 'size': side, 'steps': args.steps}
    for kind in ('train', 'eval'):
        a, b = (statistics.median(times[(kind, name)]) for name in nets)
        result[f'{kind}_ms_stateless'], result[f'{kind}_ms_stateful_reset'] = round(a, 2), round(b, 2)
        result[f'{kind}_ratio'] = round(a / b, 3)
    console.info(json.dumps(result))
    return result


if __name__ == '__main__':
    main(sys.argv[1:])
