#!/usr/bin/env python3
"""Loads a runexp checkpoint of the tutorial's network into PyTorch and tests it on CIFAR-10.

  /usr/bin/python3 scripts/eval_in_pytorch.py RUN/best.safetensors --data data/cifar-10-batches-bin

The model is the tutorial's network as an nn.Sequential, whose parameter names ("0.weight",
"11.weight", ...) are the names runexp writes; load_state_dict(strict=True) proves they match.
Reads safetensors with numpy alone, so only Debian's python3-torch and python3-numpy are needed.
Prints the test accuracy, to compare with the one runexp reported in summary.json.
"""
import argparse, json, os, struct
import numpy as np, torch, torch.nn as nn

p = argparse.ArgumentParser()
p.add_argument('checkpoint')
p.add_argument('--data', required=True, help='folder holding test_batch.bin')
a = p.parse_args()

def read_safetensors(path):
    with open(path, 'rb') as f:
        blob = f.read()
    (n,) = struct.unpack('<Q', blob[:8])
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    out = {}
    for name, e in header.items():
        if name == '__metadata__':
            continue
        assert e['dtype'] == 'F32', (name, e['dtype'])
        b, end = e['data_offsets']
        out[name] = torch.from_numpy(np.frombuffer(data[b:end], dtype='<f4').reshape(e['shape']).copy())
    return out

model = nn.Sequential(
    nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
    nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
    nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
    nn.Flatten(), nn.Dropout(0.25),
    nn.Linear(1024, 120), nn.ReLU(), nn.Dropout(0.25),
    nn.Linear(120, 60), nn.ReLU(), nn.Dropout(0.25),
    nn.Linear(60, 10))
model.load_state_dict(read_safetensors(a.checkpoint), strict=True)
model.eval()

raw = np.fromfile(os.path.join(a.data, 'test_batch.bin'), dtype=np.uint8).reshape(-1, 3073)
x = (torch.from_numpy(raw[:, 1:].reshape(-1, 3, 32, 32).copy()).float() / 255 - 0.5) / 0.5
y = torch.from_numpy(raw[:, 0].astype(np.int64))
with torch.no_grad():
    pred = torch.cat([model(x[i:i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
correct = int((pred == y).sum())
print(json.dumps(dict(checkpoint=a.checkpoint, test_accuracy=correct / len(y), correct=correct, total=len(y))))
