#!/usr/bin/env python3
"""Loads a runexp checkpoint into the same network built in PyTorch and tests it on CIFAR-10.

  /usr/bin/python3 scripts/eval_in_pytorch.py RUN/best.safetensors [--config RUN/config.lua]
                                              [--data data/cifar-10-batches-bin] [--limit N]

The network is built from the run's resolved config (RUN/config.lua, next to the checkpoint,
unless --config names another; a lone checkpoint is taken to be the tutorial's network,
configs/cifar10.lua) by scripts/runexp_torch.py, as an nn.Sequential whose parameter names are the
ones runexp writes; load_state_dict(strict=True) proves they match, the one allowance being
batchnorm's num_batches_tracked, which runexp does not keep (filled with 0, and listed).

The test images are the run's: data.path (or --data), its first data.test_limit images (or
--limit), normalized with its mean and std exactly as the cifar10 plugin does. Test-time views
(data.tta) are not applied: with tta = "flip" or "flip_shift" runexp's reported accuracy averages
several views and differs from this one; the output says so.

Prints one JSON line: the test accuracy and loss (with the run's label smoothing, as runexp counts
it), and beside them the ones runexp reported in RUN/summary.json when there is one. Needs
PyTorch and numpy (`scripts/setup --with-pytorch` puts them in .deps/torch-venv: run this with
.deps/torch-venv/bin/python) and lua5.4 (scripts/setup).
"""
import argparse
import json
import os
import sys

try:
    import torch
except ImportError as e:
    sys.exit("eval_in_pytorch.py: PyTorch is missing (%s): scripts/setup --with-pytorch installs it in "
             ".deps/torch-venv; then run .deps/torch-venv/bin/python scripts/eval_in_pytorch.py ..." % e)

sys.dont_write_bytecode = True  # no scripts/__pycache__ in the checkout
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import runexp_torch as rt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('checkpoint')
    p.add_argument('--config', help='the run\'s config (default: config.lua beside the checkpoint, '
                   'else configs/cifar10.lua, the tutorial\'s network)')
    p.add_argument('--data', help='folder holding test_batch.bin (default: the config\'s data.path)')
    p.add_argument('--limit', type=int, help='test on the first N images (default: the config\'s data.test_limit)')
    p.add_argument('--threads', type=int, default=0, help='torch threads (default: PyTorch\'s choice)')
    a = p.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)

    run_dir = os.path.dirname(os.path.abspath(a.checkpoint))
    config = a.config
    if config is None:
        beside = os.path.join(run_dir, 'config.lua')
        config = beside if os.path.isfile(beside) else os.path.join(ROOT, 'configs', 'cifar10.lua')
    try:
        cfg = rt.read_config(config)
        model = rt.build_model(cfg)
        filled = rt.load_checkpoint(model, a.checkpoint)
        data = a.data or rt.data_params(cfg).get('path', 'data/cifar-10-batches-bin')
        if not os.path.isabs(data) and not os.path.isdir(data) and os.path.isdir(os.path.join(ROOT, data)):
            data = os.path.join(ROOT, data)  # a config's relative path is from where runexp ran, usually ROOT
        x, y = rt.read_cifar10(cfg, 'test', path=data, limit=a.limit)
    except (rt.ConfigError, OSError, RuntimeError) as e:
        sys.exit('eval_in_pytorch: %s' % e)
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(x[i:i + 500]) for i in range(0, len(x), 500)])
        loss = float(rt.make_loss(cfg)(logits, y))  # with the run's label smoothing, as runexp's test_loss
    correct = int((logits.argmax(1) == y).sum())
    out = dict(checkpoint=a.checkpoint, config=config, test_accuracy=correct / len(y), correct=correct,
               total=len(y), test_loss=loss, filled=filled)
    tta = rt.data_params(cfg).get('tta', 'none')
    if tta != 'none':
        out['note'] = 'data.tta is %r: runexp averaged test-time views; this test uses the plain images' % tta
    summary = os.path.join(run_dir, 'summary.json')
    if os.path.isfile(summary):
        with open(summary) as f:
            s = json.load(f)
        out.update(runexp_test_accuracy=s.get('test_accuracy'), runexp_correct=s.get('test_correct'),
                   runexp_total=s.get('test_total'), runexp_test_loss=s.get('test_loss'))
    print(json.dumps(out))


if __name__ == '__main__':
    main()
