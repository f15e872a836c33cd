"""Drives an agent with NVIDIA's tritonclient over HTTP, as a Triton user would: liveness,
metadata, model configuration, inference in JSON and binary encodings (FP32 against the
onnxruntime reference outputs, FP16 and BYTES both ways) and statistics. Run by tests/tests/triton_client.rs:

    python triton_http.py HOST:PORT TESTDATA_DIR

Exits non-zero (with the failed assertion) when anything differs.
"""
import json
import pathlib
import sys

import numpy as np
import tritonclient.http as http


def main() -> None:
    url, testdata = sys.argv[1], pathlib.Path(sys.argv[2])
    client = http.InferenceServerClient(url)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("mlp")
    config = client.get_model_config("mlp")
    assert config["input"][0] == {"name": "x", "data_type": "TYPE_FP32", "dims": [-1, 16]}, config

    reference = json.loads((testdata / "mlp.reference.json").read_text())
    request = reference["request"]["inputs"][0]
    x = np.array(request["data"], dtype=np.float32).reshape(request["shape"])
    want = reference["outputs"][0]
    for binary in (False, True):
        inputs = [http.InferInput("x", list(x.shape), "FP32")]
        inputs[0].set_data_from_numpy(x, binary_data=binary)
        outputs = [http.InferRequestedOutput(want["name"], binary_data=binary)]
        got = client.infer("mlp", inputs, outputs=outputs).as_numpy(want["name"])
        expected = np.array(want["data"], dtype=np.float32).reshape(want["shape"])
        assert np.allclose(got, expected, atol=reference["tolerance"]), (binary, got, expected)

    half = np.array([[0.5, 1.0, -3.0], [1000.0, 0.1, 2.0]], dtype=np.float16)
    for binary in (False, True):
        inputs = [http.InferInput("x", list(half.shape), "FP16")]
        inputs[0].set_data_from_numpy(half, binary_data=binary)
        outputs = [http.InferRequestedOutput("y", binary_data=binary)]
        got = client.infer("fp16", inputs, outputs=outputs).as_numpy("y")
        assert got.dtype == np.float16 and np.array_equal(got, half * np.float16(2)), (binary, got)

    words = np.array(["héllo".encode(), b"", b"text"], dtype=np.object_)
    numbers = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    for binary in (False, True):
        inputs = [http.InferInput("text", [3], "BYTES"), http.InferInput("x", [3], "FP32")]
        inputs[0].set_data_from_numpy(words, binary_data=binary)
        inputs[1].set_data_from_numpy(numbers, binary_data=binary)
        outputs = [http.InferRequestedOutput("echo", binary_data=binary)]
        got = client.infer("bytes", inputs, outputs=outputs).as_numpy("echo")
        assert [bytes(w) if isinstance(w, bytes) else w.encode() for w in got] == list(words), (binary, got)

    stats = client.get_inference_statistics("mlp")["model_stats"][0]
    assert stats["name"] == "mlp" and int(stats["inference_count"]) == 2, stats
    assert int(stats["inference_stats"]["success"]["count"]) == 2, stats
    assert len(client.get_inference_statistics()["model_stats"]) == 3
    print("tritonclient over HTTP: ok")


if __name__ == "__main__":
    main()
