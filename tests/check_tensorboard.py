#!/usr/bin/env python3
"""check_tensorboard.py LOGDIR METRICS_CSV SUMMARY_JSON BATCHES_PER_EPOCH: reads runexp's event
files in LOGDIR with the tensorboard package's own EventAccumulator (what `tensorboard --logdir`
loads) and checks every tag, step and value against the run's metrics.csv and summary.json.
Used by tests/test_tensorboard.c; exits 1 with the first difference on stderr."""
import csv
import json
import math
import sys

from tensorboard.backend.event_processing import event_accumulator

logdir, metrics, summary, per_epoch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
acc = event_accumulator.EventAccumulator(logdir, size_guidance={event_accumulator.SCALARS: 0})
acc.Reload()
rows = list(csv.DictReader(open(metrics)))
test = json.load(open(summary))
epochs = len(rows)


def fail(msg):
    sys.exit("check_tensorboard.py: %s: %s" % (logdir, msg))


def scalars(tag):
    if tag not in acc.Tags()["scalars"]:
        fail("no tag %s (tags: %s)" % (tag, sorted(acc.Tags()["scalars"])))
    return {e.step: e.value for e in acc.Scalars(tag)}, [e.step for e in acc.Scalars(tag)]


def close(got, want, what):
    """got (a float32) is want, a number as metrics.csv or summary.json wrote it, to its digits."""
    digits = len(want.split(".")[1]) if "." in want and "e" not in want else 0
    if not math.isclose(got, float(want), rel_tol=1e-5, abs_tol=0.5 * 10 ** -digits if digits else 1e-6):
        fail("%s: %r in TensorBoard, %s in the run" % (what, got, want))


for tag, column in [("train/loss", "train_loss"), ("valid/loss", "valid_loss"),
                    ("valid/accuracy", "valid_accuracy"), ("lr", "lr"),
                    ("images_per_second", "images_per_second"), ("epoch_seconds", "seconds")]:
    values, steps = scalars(tag)
    if steps != list(range(1, epochs + 1)):
        fail("%s at steps %s, expected 1..%d once each" % (tag, steps, epochs))
    for row in rows:
        close(values[int(row["epoch"])], row[column], "%s at epoch %s" % (tag, row["epoch"]))
values, steps = scalars("batch/train_loss")
if steps != list(range(1, epochs * per_epoch + 1)):
    fail("batch/train_loss at steps %s, expected 1..%d once each" % (steps, epochs * per_epoch))
for name in ("loss", "accuracy"):
    values, steps = scalars("test/" + name)
    close(values[epochs], "%.6f" % test["test_" + name], "test/" + name)
