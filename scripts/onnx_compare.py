#!/usr/bin/env python3
"""Checks a `runexp export` file against runexp's own logits, for tests/test_export.c.

    scripts/onnx_compare.py MODEL.onnx INPUT.f32 LOGITS.f32 N C H W [TOLERANCE]

INPUT.f32 holds N samples (N, C, H, W) of float32 as the model's "input" takes them (before
normalization); LOGITS.f32 the (N, classes) float32 logits runexp computed for them. The file must
pass onnx.checker (full check, with shape inference), declare a symbolic batch, and give ONNX
Runtime's logits within TOLERANCE (1e-4) of runexp's, for the whole batch and for one sample
alone. Prints the largest difference; exit status 0 when all holds, 1 otherwise."""
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main():
    model_path, input_path, logits_path = sys.argv[1:4]
    n, c, h, w = (int(v) for v in sys.argv[4:8])
    tolerance = float(sys.argv[8]) if len(sys.argv) > 8 else 1e-4
    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    if model.graph.input[0].name != "input" or model.graph.output[0].name != "logits" or batch.dim_param != "N":
        print("expected input 'input' with a symbolic batch 'N' and output 'logits'")
        return 1
    x = np.fromfile(input_path, dtype=np.float32).reshape(n, c, h, w)
    want = np.fromfile(logits_path, dtype=np.float32).reshape(n, -1)
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"input": x})[0]
    one = session.run(["logits"], {"input": x[:1]})[0]
    diff = max(float(np.abs(got - want).max()), float(np.abs(one - want[:1]).max()))
    print(f"opset {model.opset_import[0].version}, {len(model.graph.node)} nodes, "
          f"largest difference from runexp {diff:.3g} (tolerance {tolerance:g})")
    return 0 if got.shape == want.shape and diff <= tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
