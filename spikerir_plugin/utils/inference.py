"""The one entry point for running a trained network for inference (validation, spikerir-test, restore, energy).

``inference_network(net)`` returns a module to call under ``torch.no_grad()`` that gives the outputs of ``net`` in
eval mode. Today that is ``net`` itself in eval mode.
"""


def inference_network(net):
    """``net`` ready for inference: eval mode (the caller runs it under torch.no_grad())."""
    return net.eval()
