#!/usr/bin/env python3
"""Writes the gRPC request bodies the gRPC benchmark sends (agent/benches/grpc.sh): the same
first row of each committed reference input as make_bodies.py, as a ModelInferRequest with
raw_input_contents (what tritonclient sends), serialized by the protobuf library with
tritonclient's own generated messages, in gRPC's length-prefixed framing."""

import json
import pathlib
import struct
import sys

from tritonclient.grpc import service_pb2

testdata = pathlib.Path(sys.argv[1])
out = pathlib.Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
for model in ["mlp", "magika"]:
    ref = json.loads((testdata / f"{model}.reference.json").read_text())
    inp = ref["request"]["inputs"][0]
    row = 1
    for d in inp["shape"][1:]:
        row *= d
    data = inp["data"][:row]
    shape = [1] + inp["shape"][1:]
    fmt = {"FP32": "<%df", "INT32": "<%di"}[inp["datatype"]] % len(data)
    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = inp["name"], inp["datatype"]
    tensor.shape.extend(shape)
    request.raw_input_contents.append(struct.pack(fmt, *data))
    message = request.SerializeToString()
    (out / f"{model}.grpc").write_bytes(b"\x00" + struct.pack(">I", len(message)) + message)
