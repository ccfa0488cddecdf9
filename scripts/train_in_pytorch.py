#!/usr/bin/env python3
"""Trains a runexp config in PyTorch, same network and recipe, and prints its test accuracy: to
tell whether an accuracy runexp reaches is the recipe's or runexp's own doing.

    python3 scripts/train_in_pytorch.py CONFIG [--epochs N] [--seed S] [--data DIR]
                                        [--device cpu|cuda] [--train-limit N] [--threads T]

Followed from the config (read by scripts/runexp_torch.py, as bench/recipe does): the model list,
runexp's inits "dirac" (torch.nn.init.dirac_ on a convolution's first in-channels outputs) and
"whiten" (airbench's: the eigenvectors of the second moment of every 2x2 patch of the first 5000
normalized training images, over the square roots of their eigenvalues + 5e-4, then their
negatives), the other weights PyTorch's default initialization; frozen tensors and train_epochs;
each layer's lr_scale and weight_decay; the optimizer; optim.schedule over the run's steps; the
loss and its label smoothing; the data's crop_padding, padding_mode, flip (none, random,
alternate) and tta (none, flip, flip_shift: runexp's 6 views, averaged with equal weights); and
ema (the average of every floating tensor, batchnorm's running statistics among them, with
runexp's warm-up min(ema, (1 + step) / (10 + step)), evaluated in place of the weights).
Each epoch reshuffles the training images; the last batch may be short, as in runexp. Not
followed: cutout, a Lua function lr, data plugins other than cifar10 (an error says so).

Prints one line per epoch (training loss, plain test accuracy) and a last JSON line. Needs a
PyTorch with numpy (bench/setup-peer's, or Debian's python3-torch) and lua5.4.
"""
import argparse
import json
import math
import os
import sys
import time

sys.dont_write_bytecode = True  # no scripts/__pycache__ in the checkout
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import runexp_torch as rt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def initialize(model, cfg, x_train):
    """runexp's declared inits on top of PyTorch's default ones."""
    modules = dict(model.named_modules())
    for prefix, name, p in rt.layer_specs(cfg):
        init = p.get('init', 'default')
        m = modules[prefix[:-1]]
        if init == 'dirac':
            with torch.no_grad():
                torch.nn.init.dirac_(m.weight[:m.weight.size(1)])
        elif init == 'whiten':
            k = m.weight.shape[2]
            patches = x_train[:5000].unfold(2, k, 1).unfold(3, k, 1)  # (N, C, H', W', k, k)
            patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, m.weight[0].numel()).double()
            moment = patches.T @ patches / len(patches)
            values, vectors = torch.linalg.eigh(moment)
            scaled = (vectors.T / torch.sqrt(values + 5e-4)[:, None]).float().reshape(-1, *m.weight.shape[1:])
            with torch.no_grad():
                m.weight.copy_(torch.cat((scaled, -scaled)))
        elif init != 'default':
            raise rt.ConfigError('%s: init %r is not followed here' % (prefix, init))


def pad(x, by, data):
    """x padded by `by` pixels as data.padding_mode says: reflected, or black (byte 0, normalized)."""
    if data.get('padding_mode', 'reflect') == 'reflect':
        return F.pad(x, (by,) * 4, mode='reflect')
    mean, std = (data.get(k, [0.5] * 3) for k in ('mean', 'std'))
    mean, std = ([v[0]] * 3 if len(v) == 1 else v for v in (mean, std))
    return torch.stack([F.pad(x[:, c], (by,) * 4, value=-mean[c] / std[c]) for c in range(3)], 1)


def augment(x, data, epoch, coins, gen):
    """One epoch's training images: a random crop of the padded image, then the flips."""
    pad_by = data.get('crop_padding', 0)
    if pad_by:
        padded = pad(x, pad_by, data)
        dy = torch.randint(0, 2 * pad_by + 1, (len(x),), generator=gen).to(x.device)
        dx = torch.randint(0, 2 * pad_by + 1, (len(x),), generator=gen).to(x.device)
        out = torch.empty_like(x)
        h, w = x.shape[2:]
        for oy in range(2 * pad_by + 1):
            for ox in range(2 * pad_by + 1):
                sel = ((dy == oy) & (dx == ox)).nonzero().squeeze(1)
                out[sel] = padded[sel, :, oy:oy + h, ox:ox + w]
        x = out
    flip = data.get('flip', 'none')
    if flip == 'random':
        mask = torch.rand(len(x), generator=gen) < 0.5
    elif flip == 'alternate':
        mask = coins ^ (epoch % 2 == 1)
    elif flip == 'none':
        return x
    else:
        raise rt.ConfigError('data.flip: %r is not followed here' % flip)
    mask = mask.to(x.device)
    return torch.where(mask[:, None, None, None], x.flip(-1), x)


def views(x, tta, data):
    if tta == 'none':
        return [x]
    out = [x, x.flip(-1)]
    if tta == 'flip_shift':
        padded = pad(x, 1, data)
        h, w = x.shape[2:]
        shifted = [padded[:, :, 0:h, 0:w], padded[:, :, 2:h + 2, 2:w + 2]]
        out += shifted + [s.flip(-1) for s in shifted]
    elif tta != 'flip':
        raise rt.ConfigError('data.tta: %r is not followed here' % tta)
    return out


@torch.no_grad()
def accuracy(model, x, y, tta, data, batch=1000):
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        logits = torch.stack([model(v) for v in views(xb, tta, data)]).mean(0)
        correct += int((logits.argmax(1) == y[i:i + batch]).sum())
    model.train()
    return correct / len(x)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config')
    p.add_argument('--epochs', type=int, help="default: the config's")
    p.add_argument('--seed', type=int, help="default: the config's")
    p.add_argument('--data', help="CIFAR-10 binary folder (default: the config's data.path)")
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--train-limit', type=int, help="training images (default: the config's train_limit, 0: all)")
    p.add_argument('--threads', type=int, default=os.cpu_count())
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    cfg = rt.read_config(a.config)
    data = rt.data_params(cfg)
    if data.get('cutout', 0):
        raise rt.ConfigError('data.cutout is not followed here')
    if data.get('valid_fraction', 0.2) != 0:
        print('note: data.valid_fraction is %s; here every training image trains' % data.get('valid_fraction', 0.2))
    epochs = a.epochs or cfg.get('epochs', 10)
    seed = a.seed if a.seed is not None else cfg.get('seed', 1)
    torch.manual_seed(seed)
    dev = torch.device(a.device)
    x, y = rt.read_cifar10(cfg, 'train', path=a.data, limit=a.train_limit)
    xt, yt = rt.read_cifar10(cfg, 'test', path=a.data)
    x, y, xt, yt = x.to(dev), y.to(dev), xt.to(dev), yt.to(dev)

    model = rt.build_model(cfg)
    initialize(model, cfg, x.cpu())
    model = model.to(dev)
    groups = rt.param_groups(model, cfg, epoch=1)
    base_lr = [g['lr'] for g in groups]
    optimizer = rt.make_optimizer(groups, cfg)
    loss_fn = rt.make_loss(cfg)
    ema = cfg.get('ema', 0.0)
    averaged = [t for t in model.state_dict().values() if t.is_floating_point()]
    average = [t.clone() for t in averaged] if ema > 0 else None

    n, batch = len(x), data.get('batch_size', 32)
    steps = math.ceil(n / batch)
    gen = torch.Generator().manual_seed(seed)
    coins = torch.rand(n, generator=gen) < 0.5
    step = 0
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        rt.param_groups(model, cfg, epoch=epoch)  # stops tensors past their train_epochs
        for q in model.parameters():
            if not q.requires_grad:
                q.grad = None
        order = torch.randperm(n, generator=gen).to(dev)
        xa = augment(x, data, epoch, coins, gen)
        loss_sum = 0.0
        for s in range(steps):
            idx = order[s * batch:(s + 1) * batch]
            factor = rt.lr_factor(cfg, step, steps * epochs, epoch)
            for g, lr in zip(optimizer.param_groups, base_lr):
                g['lr'] = lr * factor
            loss = loss_fn(model(xa[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if average is not None:
                with torch.no_grad():
                    d = min(ema, (1.0 + step) / (10.0 + step))
                    torch._foreach_mul_(average, d)
                    torch._foreach_add_(average, averaged, alpha=1 - d)
            loss_sum += float(loss) * len(idx)
            step += 1
        print('epoch %d: train loss %.4f, test accuracy %.2f%% (plain, the weights themselves)'
              % (epoch, loss_sum / n, 100 * accuracy(model, xt, yt, 'none', data)), flush=True)
    seconds = time.perf_counter() - start
    if average is not None:
        with torch.no_grad():
            for t, v in zip(averaged, average):
                t.copy_(v)
    tta = data.get('tta', 'none')
    print(json.dumps(dict(config=a.config, epochs=epochs, seed=seed, device=str(dev), torch=torch.__version__,
                          train_seconds=round(seconds, 2),
                          test_accuracy_plain=accuracy(model, xt, yt, 'none', data),
                          test_accuracy=accuracy(model, xt, yt, tta, data), tta=tta,
                          evaluated='the average (ema %s)' % ema if average is not None else 'the weights')))


if __name__ == '__main__':
    main()
