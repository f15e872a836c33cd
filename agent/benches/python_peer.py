#!/usr/bin/env python3
"""The Python peer for BENCHMARKS.md §1: what a user would otherwise write.

onnxruntime + FastAPI + uvicorn serving the KServe v2 JSON infer endpoint for one model,
WORKERS uvicorn worker processes (default 1; one per core is how users deploy it), each with ONNX
Runtime on CPU and one intra-op thread (as the agent's one worker).

Usage: python_peer.py MODEL_NAME MODEL.onnx PORT [WORKERS]
"""

import os
import sys

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, Request

DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64, "UINT8": np.uint8, "BOOL": np.bool_}
NAMES = {np.dtype(v): k for k, v in DTYPES.items()}

# uvicorn's worker processes import this module by name, without our arguments: they come
# through the environment.
if __name__ == "__main__":
    os.environ["PEER_MODEL"], os.environ["PEER_PATH"] = sys.argv[1], sys.argv[2]
name, path = os.environ["PEER_MODEL"], os.environ["PEER_PATH"]
options = ort.SessionOptions()
options.intra_op_num_threads = 1
session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
outputs = [o.name for o in session.get_outputs()]
app = FastAPI()


@app.post(f"/v2/models/{name}/infer")
async def infer(request: Request):
    body = await request.json()
    feeds = {
        i["name"]: np.asarray(i["data"], dtype=DTYPES[i["datatype"]]).reshape(i["shape"]) for i in body["inputs"]
    }
    results = session.run(None, feeds)
    return {
        "model_name": name,
        "outputs": [
            {"name": n, "datatype": NAMES[r.dtype], "shape": list(r.shape), "data": r.reshape(-1).tolist()}
            for n, r in zip(outputs, results)
        ],
    }


@app.get("/v2/health/ready")
async def ready():
    return {"ready": True}


if __name__ == "__main__":
    port, workers = int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 1
    if workers == 1:
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
    else:
        here = os.path.dirname(os.path.abspath(__file__))
        uvicorn.run("python_peer:app", app_dir=here, host="127.0.0.1", port=port, log_level="warning", workers=workers)
