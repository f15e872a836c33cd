#!/usr/bin/env python3
"""Writes the gRPC request bodies the gRPC benchmark sends (agent/benches/grpc.sh): the same
first row of each committed reference input as make_bodies.py, as a ModelInferRequest with
raw_input_contents (what tritonclient sends), serialized by the protobuf library with
tritonclient's own generated messages, in gRPC's length-prefixed framing."""

import pathlib
import struct
import sys

from tritonclient.grpc import service_pb2

from make_bodies import MODELS, first_row

testdata = pathlib.Path(sys.argv[1])
out = pathlib.Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
for model in MODELS:
    name, datatype, shape, _, raw = first_row(testdata, model)
    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = name, datatype
    tensor.shape.extend(shape)
    request.raw_input_contents.append(raw)
    message = request.SerializeToString()
    (out / f"{model}.grpc").write_bytes(b"\x00" + struct.pack(">I", len(message)) + message)
