"""The one place that resets spiking-neuron state.

spikingjelly keeps membrane potentials in `_memories`, outside state_dict and outside DDP's broadcast; they must be
cleared after every training step, every teacher/student forward that is not continued, and every validation image
(batch and spatial sizes differ between them, and 2.x silently re-initialises on a shape change only)."""
from spikingjelly.activation_based import functional


def reset_states(*nets):
    """Reset every spiking neuron inside each given module (None and non-spiking modules are fine)."""
    for net in nets:
        if net is not None:
            functional.reset_net(net)


def time_mean(x):
    """Reduce a multi-step tensor [T, B, C, H, W] to [B, C, H, W] (identity for 4-D tensors)."""
    return x.mean(0) if x.dim() == 5 else x
