"""runexp's configs in PyTorch: the network, its checkpoint, its data and its optimizer's groups.

Shared by scripts/eval_in_pytorch.py (tests a run's checkpoint in PyTorch) and bench/recipe
(times the same network and recipe in runexp and in PyTorch):

    import runexp_torch as rt
    cfg = rt.read_config('RUN/config.lua')             # the Lua table, as Python lists and dicts
    model = rt.build_model(cfg)                       # an nn.Sequential named like runexp's checkpoint
    rt.load_checkpoint(model, 'RUN/best.safetensors')  # strict, but for batchnorm's num_batches_tracked
    x, y = rt.read_cifar10(cfg, 'test')                # normalized with the run's mean and std

The config is read by the Lua interpreter itself (lua5.4, Debian's package of that name: see
scripts/setup), which prints the returned table as JSON; so any config runexp reads is read the
same way here. A run's resolved config (RUN/config.lua) has every default filled in; a config from
configs/ works too, as missing keys take runexp's defaults (those of `runexp plugins`).

The model list maps one to one onto an nn.Sequential, so the parameter names ("4.weight",
"4.1.weight" inside a residual block) are the ones runexp writes:

    conv2d       nn.Conv2d (then a 2x2 max-   maxpool          nn.MaxPool2d(size, stride or size)
                 pool: pool = 2)
    batchnorm    nn.BatchNorm2d or 1d (then    global_pool      nn.AdaptiveMax/AvgPool2d(1)
                 F.gelu: activation "gelu")
    relu, gelu   nn.ReLU, nn.GELU             flatten          nn.Flatten
    linear       nn.Linear of x.flatten(1)    dropout          nn.Dropout(p)
    scale        Scale: x * by                {"residual", L}  Residual: x + Sequential(L)(x)

Needs Debian's python3-torch and python3-numpy (run with /usr/bin/python3) and lua5.4.
"""
import json
import math
import os
import shutil
import struct
import subprocess

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# Prints the table a config returns as JSON. A Lua table becomes {"__table__": [[key, value], ...]}
# (keys keep their type: 1 and "1" differ in Lua), turned into a list or a dict by _from_lua; a
# function (optim.lr may be one) becomes {"__function__": true}.
_LUA_TO_JSON = r'''
local path = arg[1]
local chunk, err = loadfile(path, "t")
if not chunk then io.stderr:write(err, "\n") os.exit(1) end
local ok, cfg = pcall(chunk)
if not ok then io.stderr:write(path, ": ", tostring(cfg), "\n") os.exit(1) end
local out = {}
local function str(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
end
local function put(v, depth)
  local t = type(v)
  if depth > 64 then error("the config nests more than 64 tables deep (a cycle?)") end
  if t == "table" then
    out[#out + 1] = '{"__table__": ['
    local first = true
    for k, x in pairs(v) do
      if not first then out[#out + 1] = ", " end
      first = false
      out[#out + 1] = "["
      put(k, depth + 1)
      out[#out + 1] = ", "
      put(x, depth + 1)
      out[#out + 1] = "]"
    end
    out[#out + 1] = "]}"
  elseif t == "string" then out[#out + 1] = str(v)
  elseif t == "boolean" then out[#out + 1] = tostring(v)
  elseif t == "number" then
    if math.type(v) == "integer" then out[#out + 1] = string.format("%d", v)
    elseif v ~= v then out[#out + 1] = "NaN"
    elseif v == math.huge then out[#out + 1] = "Infinity"
    elseif v == -math.huge then out[#out + 1] = "-Infinity"
    else out[#out + 1] = string.format("%.17g", v) end
  elseif t == "function" then out[#out + 1] = '{"__function__": true}'
  else error("cannot read a " .. t .. " in the config") end
end
put(cfg, 0)
io.write(table.concat(out), "\n")
'''


class ConfigError(Exception):
    """A config this module cannot turn into PyTorch, with the place in it."""


class Function:
    """A Lua function in the config (optim.lr may be one); PyTorch cannot call it."""

    def __repr__(self):
        return '<Lua function>'


def _from_lua(v):
    if isinstance(v, dict) and '__function__' in v:
        return Function()
    if isinstance(v, dict) and '__table__' in v:
        items = {(_from_lua(k) if isinstance(k, dict) else k): _from_lua(x) for k, x in v['__table__']}
        n = len(items)
        if n > 0 and all(isinstance(k, int) and not isinstance(k, bool) for k in items) \
                and sorted(items) == list(range(1, n + 1)):
            return [items[i] for i in range(1, n + 1)]
        return items
    return v


def find_lua():
    for name in ('lua5.4', 'lua5.3'):  # math.type: 5.3 on
        path = shutil.which(name)
        if path:
            return path
    raise ConfigError("no Lua interpreter (lua5.4): install Debian's lua5.4 (scripts/setup does)")


def read_config(path):
    """The table the Lua config at `path` returns: lists for sequences, dicts otherwise (a plugin
    table such as {"conv2d", out = 16} becomes {1: "conv2d", "out": 16})."""
    proc = subprocess.run([find_lua(), '-', path], input=_LUA_TO_JSON.encode(), capture_output=True)
    if proc.returncode != 0:
        raise ConfigError('reading %s with %s: %s' % (path, find_lua(), proc.stderr.decode(errors='replace').strip()))
    # The last line: a config may print before it returns.
    cfg = _from_lua(json.loads(proc.stdout.decode('utf-8', errors='replace').strip().splitlines()[-1]))
    if not isinstance(cfg, dict):
        raise ConfigError('%s: a config returns a table with data, model, loss, optim' % path)
    return cfg


def plugin(spec, where):
    """(name, parameters) of a plugin written "name" or {"name", key = value, ...}."""
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, list) and len(spec) == 1 and isinstance(spec[0], str):
        return spec[0], {}
    if isinstance(spec, dict) and isinstance(spec.get(1), str):
        return spec[1], {k: v for k, v in spec.items() if k != 1}
    raise ConfigError('%s: a plugin is "name" or {"name", key = value, ...}, got %r' % (where, spec))


def is_residual(spec):
    return isinstance(spec, list) and len(spec) == 2 and spec[0] == 'residual' and isinstance(spec[1], list)


def input_shape(cfg):
    """(C, H, W) of one sample of the config's data."""
    name, p = plugin(cfg.get('data', 'cifar10'), 'data')
    if name == 'cifar10':
        return (3, 32, 32)
    if name == 'synthetic':
        return (p.get('channels', 3), p.get('size', 8), p.get('size', 8))
    raise ConfigError('data: unknown data plugin %r (known here: cifar10, synthetic)' % name)


class Residual(nn.Sequential):
    """y = x + layers(x): runexp's {"residual", {layers...}}, named like a nested nn.Sequential."""

    def forward(self, x):
        return x + super().forward(x)


class Scale(nn.Module):
    """y = by * x: runexp's scale layer."""

    def __init__(self, by):
        super().__init__()
        self.by = by

    def forward(self, x):
        return x * self.by

    def extra_repr(self):
        return 'by=%r' % self.by


class BatchNorm2dGELU(nn.BatchNorm2d):
    """runexp's batchnorm with activation = "gelu": nn.GELU() of the normalized output, with
    BatchNorm2d's state_dict names."""

    def forward(self, x):
        return F.gelu(super().forward(x))


class BatchNorm1dGELU(nn.BatchNorm1d):
    """The same on (N, C) and (N, C, L)."""

    def forward(self, x):
        return F.gelu(super().forward(x))


class Conv2dPool(nn.Conv2d):
    """runexp's conv2d with pool = 2: F.max_pool2d(x, 2) of the convolution, with Conv2d's
    state_dict names."""

    def forward(self, x):
        return F.max_pool2d(super().forward(x), 2)


class FlatLinear(nn.Linear):
    """runexp's linear flattens any input (N, ...) to (N, features) first."""

    def forward(self, x):
        return super().forward(x.flatten(1))


def _layer(name, p, shape, where):
    """(module, output shape) of one runexp layer on a sample of `shape` ((C, H, W) or (C,))."""
    if name == 'conv2d':
        if len(shape) != 3:
            raise ConfigError('%s (conv2d): input %s is not (C, H, W)' % (where, shape))
        k, s, pad, pool = p['kernel'], p.get('stride', 1), p.get('padding', 0), p.get('pool', 0)
        if pool not in (0, 2):
            raise ConfigError('%s (conv2d): pool %r is not 0 or 2' % (where, pool))
        m = (Conv2dPool if pool else nn.Conv2d)(shape[0], p['out'], k, stride=s, padding=pad, bias=p.get('bias', True))
        side = lambda n: ((n + 2 * pad - k) // s + 1) // (2 if pool else 1)
        return m, (p['out'], side(shape[1]), side(shape[2]))
    if name == 'batchnorm':
        activation = p.get('activation', 'none')
        if activation not in ('none', 'gelu'):
            raise ConfigError("%s (batchnorm): activation %r is not 'none' or 'gelu'" % (where, activation))
        bn = {(3, 'none'): nn.BatchNorm2d, (3, 'gelu'): BatchNorm2dGELU,
              (1, 'none'): nn.BatchNorm1d, (1, 'gelu'): BatchNorm1dGELU}[(3 if len(shape) == 3 else 1, activation)]
        return bn(shape[0], eps=p.get('eps', 1e-5), momentum=p.get('momentum', 0.1)), shape
    if name == 'relu':
        return nn.ReLU(), shape
    if name == 'gelu':
        return nn.GELU(approximate=p.get('approximate', 'none')), shape
    if name == 'scale':
        return Scale(p['by']), shape
    if name == 'dropout':
        return nn.Dropout(p.get('p', 0.5)), shape
    if name == 'flatten':
        return nn.Flatten(), (int(np.prod(shape)),)
    if name == 'linear':
        return FlatLinear(int(np.prod(shape)), p['out'], bias=p.get('bias', True)), (p['out'],)
    if name == 'maxpool':
        size = p.get('size', 2)
        stride = p.get('stride', 0) or size
        side = lambda n: (n - size) // stride + 1
        return nn.MaxPool2d(size, stride), (shape[0], side(shape[1]), side(shape[2]))
    if name == 'global_pool':
        mode = p.get('mode', 'max')
        pool = {'max': nn.AdaptiveMaxPool2d, 'avg': nn.AdaptiveAvgPool2d}.get(mode)
        if pool is None:
            raise ConfigError("%s (global_pool): mode %r is not 'max' or 'avg'" % (where, mode))
        return pool(1), (shape[0], 1, 1)
    raise ConfigError('%s: unknown layer %r (known here: conv2d, batchnorm, relu, gelu, scale, dropout, flatten, '
                      'linear, maxpool, global_pool, residual)' % (where, name))


def _sequential(layers, shape, where, cls):
    modules = []
    for i, spec in enumerate(layers):
        place = '%s[%d]' % (where, i + 1)
        if is_residual(spec):
            block, out = _sequential(spec[1], shape, place, Residual)
            if tuple(out) != tuple(shape):
                raise ConfigError('%s (residual): the block gives %s for an input of %s' % (place, out, shape))
            modules.append(block)
        else:
            name, p = plugin(spec, place)
            m, shape = _layer(name, p, tuple(shape), place)
            modules.append(m)
    return cls(*modules), shape


def build_model(cfg):
    """The config's model as an nn.Sequential whose state_dict names are runexp's checkpoint names.
    Weights are PyTorch's default initialization (runexp's dirac and whiten are not redone)."""
    model, _ = _sequential(cfg['model'], input_shape(cfg), 'model', nn.Sequential)
    return model


def layer_specs(cfg):
    """(state_dict prefix, plugin name, parameters) of every layer, residual blocks' included."""
    out = []

    def walk(layers, prefix, where):
        for i, spec in enumerate(layers):
            place = '%s[%d]' % (where, i + 1)
            if is_residual(spec):
                walk(spec[1], '%s%d.' % (prefix, i), place)
            else:
                name, p = plugin(spec, place)
                out.append(('%s%d.' % (prefix, i), name, p))
    walk(cfg['model'], '', 'model')
    return out


def read_safetensors(path):
    """{name: float32 tensor} of a safetensors file, read with numpy alone."""
    with open(path, 'rb') as f:
        blob = f.read()
    (n,) = struct.unpack('<Q', blob[:8])
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    out = {}
    for name, e in header.items():
        if name == '__metadata__':
            continue
        if e['dtype'] != 'F32':
            raise ConfigError('%s: tensor %s is %s, expected F32' % (path, name, e['dtype']))
        b, end = e['data_offsets']
        out[name] = torch.from_numpy(np.frombuffer(data[b:end], dtype='<f4').reshape(e['shape']).copy())
    return out


def load_checkpoint(model, path):
    """Loads a runexp checkpoint with load_state_dict(strict=True). runexp's batchnorm does not
    count its batches, so the one key allowed to be missing is a batchnorm layer's
    num_batches_tracked, set to 0 (PyTorch reads it only when momentum is None, never here).
    Returns the names so filled."""
    state = read_safetensors(path)
    filled = []
    modules = dict(model.named_modules())
    for name, value in model.state_dict().items():
        owner = modules[name.rsplit('.', 1)[0]] if '.' in name else model
        is_bn = isinstance(owner, nn.modules.batchnorm._BatchNorm)
        if name not in state and name.endswith('num_batches_tracked') and is_bn:
            state[name] = torch.zeros_like(value)
            filled.append(name)
    model.load_state_dict(state, strict=True)
    return filled


def data_params(cfg):
    name, p = plugin(cfg['data'], 'data')
    if name != 'cifar10':
        raise ConfigError('data: %s; only cifar10 is read here' % name)
    return p


def read_cifar10(cfg, split, path=None, limit=None):
    """(x (N, 3, 32, 32) float32, y (N) int64) of CIFAR-10's binary files, normalized as runexp's
    cifar10 plugin does: (float(v) / 255 - mean[c]) / std[c] in float32. split 'test' reads
    test_batch.bin (its first data.test_limit images), 'train' data_batch_1..5.bin (the first
    data.train_limit). No augmentation."""
    p = data_params(cfg)
    path = path or p.get('path', 'data/cifar-10-batches-bin')
    files = ['test_batch.bin'] if split == 'test' else ['data_batch_%d.bin' % i for i in range(1, 6)]
    if limit is None:
        limit = p.get('test_limit' if split == 'test' else 'train_limit', 0)
    raw = np.concatenate([np.fromfile(os.path.join(path, f), dtype=np.uint8).reshape(-1, 3073) for f in files])
    if limit:
        raw = raw[:limit]
    mean, std = (p.get(k, [0.5] * 3) for k in ('mean', 'std'))
    mean, std = ([v[0]] * 3 if len(v) == 1 else v for v in (mean, std))
    lut = np.empty((3, 256), dtype=np.float32)
    for c in range(3):
        lut[c] = (np.arange(256, dtype=np.float32) / np.float32(255) - np.float32(mean[c])) / np.float32(std[c])
    pixels = raw[:, 1:].reshape(-1, 3, 32 * 32)
    x = np.empty(pixels.shape, dtype=np.float32)
    for c in range(3):
        x[:, c] = lut[c][pixels[:, c]]
    x = torch.from_numpy(x.reshape(-1, 3, 32, 32))
    y = torch.from_numpy(raw[:, 0].astype(np.int64))
    return x, y


def _rule(p, key, tensor, default):
    """A layer's lr_scale / weight_decay / frozen / train_epochs for one tensor: one value, or a
    table by tensor name with "*" for the rest (the tensor's own name wins)."""
    v = p.get(key)
    if isinstance(v, dict):
        return v.get(tensor, v.get('*', default))
    return default if v is None else v


def param_groups(model, cfg, epoch=1):
    """One optimizer group per trained tensor, with runexp's per-tensor rules applied: lr times
    lr_scale, the tensor's weight_decay (optim.weight_decay unless the layer gives one); frozen
    tensors, and those past their train_epochs at `epoch`, get requires_grad False and no group.
    lr is optim.lr (a number; a Lua function or a schedule is not followed here)."""
    _, o = plugin(cfg['optim'], 'optim')
    lr = o.get('lr', 0.01)
    if isinstance(lr, Function):
        raise ConfigError('optim: lr is a Lua function; give a number')
    wd = o.get('weight_decay', 0.0)
    params = dict(model.named_parameters())
    groups = []
    for prefix, _, p in layer_specs(cfg):
        for name in [n for n in params if n.startswith(prefix) and '.' not in n[len(prefix):]]:
            tensor = name[len(prefix):]
            epochs = _rule(p, 'train_epochs', tensor, 0)
            if _rule(p, 'frozen', tensor, False) or (epochs and epoch > epochs):
                params[name].requires_grad_(False)
                continue
            groups.append(dict(params=[params[name]], name=name, lr=lr * _rule(p, 'lr_scale', tensor, 1.0),
                               weight_decay=_rule(p, 'weight_decay', tensor, wd)))
    return groups


def lr_factor(cfg, step, steps, epoch):
    """optim.schedule's factor at `step` of `steps` (from 0) in `epoch` (from 1), as runexp's
    config_lr_factor computes it; a Lua function lr is not evaluated here (ConfigError)."""
    _, o = plugin(cfg['optim'], 'optim')
    if isinstance(o.get('lr'), Function):
        raise ConfigError('optim: lr is a Lua function; give a number')
    kind, s = plugin(o.get('schedule', 'constant'), 'optim.schedule')
    if kind == 'constant':
        return 1.0
    if kind == 'step':
        return s.get('gamma', 0.1) ** ((epoch - 1) // s['every'])
    if kind in ('cosine', 'onecycle'):
        warmup = s.get('warmup', 0.0 if kind == 'cosine' else 0.3)
        start, final = s.get('start', 0.0), s.get('final', 0.0)
        t = step / (steps - 1) if steps > 1 else 1.0
        if t < warmup:
            return start + (1 - start) * t / warmup
        u = (t - warmup) / (1 - warmup) if warmup < 1 else 1.0
        down = 0.5 * (1 + math.cos(math.pi * u)) if kind == 'cosine' else 1 - u
        return final + (1 - final) * down
    raise ConfigError('optim.schedule: unknown schedule %r (known: constant, step, cosine, onecycle)' % kind)


class Muon(torch.optim.Optimizer):
    """plugins/optim/muon.c's step: a 4-D tensor's (a convolution's filters) update is its
    momentum's Newton-Schulz orthogonalization, in float32, after the filters are rescaled to
    norm sqrt(out) (normalize) and decayed (decoupled weight decay); every other tensor takes
    SGD's step with sgd_momentum and L2 weight decay. Both rules share nesterov."""

    def __init__(self, groups, lr, momentum=0.95, nesterov=True, ns_steps=5, normalize=False, sgd_momentum=0.9):
        super().__init__(groups, dict(lr=lr, weight_decay=0.0))
        self.momentum, self.nesterov, self.ns_steps = momentum, nesterov, ns_steps
        self.normalize, self.sgd_momentum = normalize, sgd_momentum

    def _orthogonalize(self, u):
        a, b, c = 3.4445, -4.7750, 2.0315
        x = u.reshape(len(u), -1)
        x = x / (x.norm() + 1e-7)
        tall = x.size(0) > x.size(1)
        if tall:
            x = x.T
        for _ in range(self.ns_steps):
            am = x @ x.T
            x = a * x + (b * am + c * am @ am) @ x
        return (x.T if tall else x).reshape(u.shape)

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, wd = group['lr'], group['weight_decay']
            for p in group['params']:
                if p.grad is None:
                    continue
                filters = p.dim() == 4
                mu = self.momentum if filters else self.sgd_momentum
                d = p.grad if filters else p.grad + wd * p
                state = self.state[p]
                buf = state['buf'] = state['buf'].mul_(mu).add_(d) if 'buf' in state else d.clone()
                u = d + mu * buf if self.nesterov else buf
                if filters:
                    keep = 1 - lr * wd
                    if self.normalize:
                        keep = keep * len(p) ** 0.5 / p.norm()
                    p.mul_(keep).sub_(lr * self._orthogonalize(u))
                else:
                    p.sub_(lr * u)


def make_optimizer(groups, cfg, **kw):
    """runexp's optimizer over `groups`: sgd, adam (L2 weight decay), adamw (decoupled) or muon."""
    name, o = plugin(cfg['optim'], 'optim')
    if name == 'muon':
        return Muon(groups, lr=groups[0]['lr'], momentum=o.get('momentum', 0.95), nesterov=o.get('nesterov', True),
                    ns_steps=o.get('ns_steps', 5), normalize=o.get('normalize', False),
                    sgd_momentum=o.get('sgd_momentum', 0.9))
    if name == 'sgd':
        return torch.optim.SGD(groups, lr=groups[0]['lr'], momentum=o.get('momentum', 0.0),
                               dampening=o.get('dampening', 0.0), nesterov=o.get('nesterov', False), **kw)
    if name in ('adam', 'adamw'):
        cls = torch.optim.Adam if name == 'adam' else torch.optim.AdamW
        return cls(groups, lr=groups[0]['lr'], betas=(o.get('beta1', 0.9), o.get('beta2', 0.999)),
                   eps=o.get('eps', 1e-8), **kw)
    raise ConfigError('optim: unknown optimizer %r (known here: sgd, adam, adamw, muon)' % name)


def make_loss(cfg):
    name, p = plugin(cfg.get('loss', 'cross_entropy'), 'loss')
    if name != 'cross_entropy':
        raise ConfigError('loss: unknown loss %r (known here: cross_entropy)' % name)
    return nn.CrossEntropyLoss(label_smoothing=p.get('label_smoothing', 0.0))
