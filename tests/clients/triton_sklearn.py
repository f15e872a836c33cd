"""Asks a deployed scikit-learn classifier (exported with skl2onnx's defaults) for its labels
and probabilities through tritonclient over HTTP (JSON and binary) and gRPC, and compares them
with scikit-learn's own predictions (EXPECTED_JSON, written by tests/fixtures/make_fixtures.py).
Run by tests/tests/sklearn_defaults.rs and tests/tests/engines.rs:

    python triton_sklearn.py HTTP_HOST:PORT GRPC_HOST:PORT MODEL EXPECTED_JSON [LABEL PROBABILITIES]

LABEL and PROBABILITIES name the outputs (skl2onnx's `output_label` and `output_probability` by
default; onnxmltools' LightGBM export calls them `label` and `probabilities`).
"""
import json
import pathlib
import sys

import numpy as np
import tritonclient.grpc as grpc
import tritonclient.http as http


def labels_of(array: np.ndarray) -> list:
    """Labels as Python values: BYTES come back as bytes (binary, gRPC) or str (JSON)."""
    def value(v):
        if isinstance(v, bytes):
            return v.decode()
        return v if isinstance(v, str) else v.item()
    return [value(v) for v in array.reshape(-1)]


def main() -> None:
    http_url, grpc_url, model, expected_path = sys.argv[1:5]
    label, probability = sys.argv[5:7] if len(sys.argv) > 5 else ("output_label", "output_probability")
    expected = json.loads(pathlib.Path(expected_path).read_text())
    x = np.array(expected["inputs"], dtype=np.float32)
    want_probabilities = np.array(expected["probabilities"], dtype=np.float32)
    answers = {}
    for binary in (False, True):
        client = http.InferenceServerClient(http_url)
        inputs = [http.InferInput("X", list(x.shape), "FP32")]
        inputs[0].set_data_from_numpy(x, binary_data=binary)
        outputs = [http.InferRequestedOutput(n, binary_data=binary) for n in (label, probability)]
        answers[f"http binary={binary}"] = client.infer(model, inputs, outputs=outputs)
    client = grpc.InferenceServerClient(grpc_url)
    inputs = [grpc.InferInput("X", list(x.shape), "FP32")]
    inputs[0].set_data_from_numpy(x)
    answers["grpc"] = client.infer(model, inputs)
    for how, result in answers.items():
        labels = labels_of(result.as_numpy(label))
        assert labels == expected["labels"], (how, labels, expected["labels"])
        probabilities = result.as_numpy(probability)
        assert np.allclose(probabilities, want_probabilities, atol=1e-5), (how, probabilities)
    print(f"tritonclient HTTP and gRPC: {model} answers the trainer's labels {expected['labels']}")


if __name__ == "__main__":
    main()
