#!/usr/bin/env python3
"""Writes the request bodies the serving benchmark sends: the first row of each committed
reference input, as KServe JSON and as a binary-extension body (prints its JSON length)."""

import json
import pathlib
import struct
import sys

MODELS = ["mlp", "magika"]


def first_row(testdata: pathlib.Path, model: str) -> tuple:
    """The reference input's name and datatype, its first row's shape and data, and the row as
    little-endian bytes."""
    ref = json.loads((testdata / f"{model}.reference.json").read_text())
    inp = ref["request"]["inputs"][0]
    row = 1
    for d in inp["shape"][1:]:
        row *= d
    data = inp["data"][:row]
    shape = [1] + inp["shape"][1:]
    fmt = {"FP32": "<%df", "INT32": "<%di"}[inp["datatype"]] % len(data)
    return inp["name"], inp["datatype"], shape, data, struct.pack(fmt, *data)


def main() -> None:
    testdata = pathlib.Path(sys.argv[1])
    out = pathlib.Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    for model in MODELS:
        name, datatype, shape, data, raw = first_row(testdata, model)
        body = {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}
        (out / f"{model}.json").write_text(json.dumps(body))
        head = {
            "inputs": [{"name": name, "shape": shape, "datatype": datatype, "parameters": {"binary_data_size": len(raw)}}],
            "parameters": {"binary_data_output": True},
        }
        head_bytes = json.dumps(head).encode()
        (out / f"{model}.bin").write_bytes(head_bytes + raw)
        (out / f"{model}.bin.len").write_text(str(len(head_bytes)))


if __name__ == "__main__":
    main()
