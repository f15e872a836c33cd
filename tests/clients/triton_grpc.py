"""Drives an agent with NVIDIA's tritonclient over gRPC, as a Triton user would: liveness,
metadata, model configuration, inference (FP32 against the onnxruntime reference outputs, FP16
and BYTES), statistics and a refusal. Run by tests/tests/triton_client.rs:

    python triton_grpc.py HOST:PORT TESTDATA_DIR

Exits non-zero (with the failed assertion) when anything differs.
"""
import json
import pathlib
import sys

import numpy as np
import tritonclient.grpc as grpc
from tritonclient.utils import InferenceServerException


def main() -> None:
    url, testdata = sys.argv[1], pathlib.Path(sys.argv[2])
    client = grpc.InferenceServerClient(url)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("mlp") and not client.is_model_ready("nope")
    metadata = client.get_model_metadata("mlp", as_json=True)
    assert metadata["inputs"][0] == {"name": "x", "datatype": "FP32", "shape": ["-1", "16"]}, metadata
    config = client.get_model_config("mlp", as_json=True)["config"]
    assert config["input"][0] == {"name": "x", "data_type": "TYPE_FP32", "dims": ["-1", "16"]}, config

    reference = json.loads((testdata / "mlp.reference.json").read_text())
    request = reference["request"]["inputs"][0]
    x = np.array(request["data"], dtype=np.float32).reshape(request["shape"])
    want = reference["outputs"][0]
    inputs = [grpc.InferInput("x", list(x.shape), "FP32")]
    inputs[0].set_data_from_numpy(x)
    result = client.infer("mlp", inputs, outputs=[grpc.InferRequestedOutput(want["name"])], request_id="r-1")
    assert result.get_response().id == "r-1"
    got = result.as_numpy(want["name"])
    expected = np.array(want["data"], dtype=np.float32).reshape(want["shape"])
    assert np.allclose(got, expected, atol=reference["tolerance"]), (got, expected)

    half = np.array([[0.5, 1.0, -3.0], [1000.0, 0.1, 2.0]], dtype=np.float16)
    inputs = [grpc.InferInput("x", list(half.shape), "FP16")]
    inputs[0].set_data_from_numpy(half)
    got = client.infer("fp16", inputs).as_numpy("y")
    assert got.dtype == np.float16 and np.array_equal(got, half * np.float16(2)), got

    words = np.array(["héllo".encode(), b"", b"text"], dtype=np.object_)
    numbers = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    inputs = [grpc.InferInput("text", [3], "BYTES"), grpc.InferInput("x", [3], "FP32")]
    inputs[0].set_data_from_numpy(words)
    inputs[1].set_data_from_numpy(numbers)
    got = client.infer("bytes", inputs, outputs=[grpc.InferRequestedOutput("echo")]).as_numpy("echo")
    assert list(got) == list(words), got

    bad = [grpc.InferInput("x", [1, 3], "FP32")]
    bad[0].set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    try:
        client.infer("mlp", bad)
        raise AssertionError("a wrong shape was accepted")
    except InferenceServerException as e:
        assert e.status() == "StatusCode.INVALID_ARGUMENT" and "shape mismatch" in e.message(), e

    stats = client.get_inference_statistics("mlp", as_json=True)["model_stats"][0]
    assert stats["name"] == "mlp" and int(stats["inference_count"]) == 1, stats
    assert int(stats["inference_stats"]["success"]["count"]) == 1, stats
    assert len(client.get_inference_statistics(as_json=True)["model_stats"]) == 3
    print("tritonclient over gRPC: ok")


if __name__ == "__main__":
    main()
