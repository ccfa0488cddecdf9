"""bench/benchlib.py: what bench/cpu and bench/recipe share: the PyTorch installations they
measure against, and waiting for a quiet machine.

The peers, newest first: today's PyTorch from PyPI in the virtual environment bench/setup-peer
makes (.deps/torch-venv; about 5 GB with its CUDA libraries, so for benchmarks only, never CI),
then Debian's PyTorch 1.13 (/usr/bin/python3 with python3-torch) where installed. Every figure is
printed with the version that produced it."""
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_PYTHON = os.path.join(ROOT, '.deps', 'torch-venv', 'bin', 'python')
# (python, how to get it), in the order the tables list them.
CANDIDATES = [(VENV_PYTHON, 'bench/setup-peer installs it'),
              ('/usr/bin/python3', "Debian's python3-torch and python3-numpy install it")]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def find_peers(need=('torch', 'numpy')):
    """([dict(python, version)], [reason a candidate was left out]) for the candidates that import
    every module in need."""
    peers, missing = [], []
    probe = 'import %s; print(torch.__version__)' % ', '.join(need)
    for python, how in CANDIDATES:
        if not os.access(python, os.X_OK):
            missing.append('%s: not found (%s)' % (python, how))
            continue
        p = subprocess.run([python, '-c', probe], capture_output=True, text=True)
        if p.returncode != 0:
            last = (p.stderr.strip().splitlines() or ['failed'])[-1]
            missing.append('%s: %s (%s)' % (python, last, how))
            continue
        version = p.stdout.strip().split('+')[0]  # 2.15.0+cu132 -> 2.15.0
        if any(x['version'] == version for x in peers):
            continue  # the same PyTorch twice says nothing new
        peers.append(dict(python=python, version=version))
    return peers, missing


def cpu_ticks():
    """(busy, total) jiffies of all cores since boot, from /proc/stat."""
    with open('/proc/stat') as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def wait_for_quiet(limit):
    """Waits until the cores were at least 90% idle over one second, for at most `limit` seconds;
    returns whether they were."""
    deadline = time.monotonic() + limit
    while True:
        busy0, total0 = cpu_ticks()
        time.sleep(1.0)
        busy1, total1 = cpu_ticks()
        if total1 > total0 and (busy1 - busy0) / (total1 - total0) <= 0.10:
            return True
        if time.monotonic() >= deadline:
            return False
