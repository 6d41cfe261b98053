#!/usr/bin/env python3
"""The PyTorch side of desync's parity tests: SGD steps of a desync model, in PyTorch Python.

    pytorch_sgd_steps.py SPEC.json

SPEC names the model ("cnn", "mlp" or "resnet18" as bench/pytorch_reference.py builds them,
with desync's parameter names), the weights and batches that the test saved with
torch::pickle_save (a dict of name -> tensor, and a list of [inputs, targets] pairs), the SGD
hyper-parameters, and where to write the result: the loss of every step and the final
parameters (a dict saved with torch.save). The model is loaded strictly, so a parameter or
buffer that desync names or shapes differently fails here.
"""

import json
import os
import sys

import torch
import torch.jit._pickle
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
from pytorch_reference import build_model  # noqa: E402  (the models, layer for layer)


def load(path):
    """A torch::pickle_save archive. Its typed containers carry a type tag, a global that
    torch.load's weights-only unpickler accepts once allowed."""
    with torch.serialization.safe_globals([torch.jit._pickle.restore_type_tag]):
        return torch.load(path)


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    torch.set_num_threads(spec.get("threads", 1))
    model = build_model(spec["model"], batch_norm=spec.get("batch_norm", True))
    model.load_state_dict(load(spec["weights"]), strict=True)
    sgd = spec["sgd"]
    optimizer = torch.optim.SGD(model.parameters(), lr=sgd["lr"], momentum=sgd["momentum"],
                                nesterov=sgd["nesterov"], weight_decay=sgd["weight_decay"])
    model.train()
    losses = []
    for inputs, targets in load(spec["batches"]):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(inputs), targets)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    torch.save({k: v.detach() for k, v in model.state_dict().items()}, spec["final"])
    with open(spec["losses"], "w") as f:
        json.dump(losses, f)


if __name__ == "__main__":
    main()
