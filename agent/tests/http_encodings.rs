//! The KServe v2 encodings of every datatype over a real socket: the binary tensor extension
//! (FP32, INT64 mixed with JSON), FP16 and BYTES in JSON and binary.

mod common;

use common::server::{Agent, split_binary_response};
use common::{assert_close, tensor_from_json};
use edgefleet_agent::tensor::{Tensor, TensorData};
use edgefleet_shared::inference::{Datatype, INFERENCE_HEADER_CONTENT_LENGTH};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn binary_extension_round_trips_fp32() {
    let agent = Agent::start(&["mlp"], |_| {}).await;
    let input = Tensor::new(vec![2, 16], TensorData::F32((0..32).map(|i| i as f32 / 10.0).collect())).expect("tensor");
    let mut bin = Vec::new();
    let size = input.write_binary(&mut bin);
    let header = json!({
        "inputs": [{"name": "x", "shape": [2, 16], "datatype": "FP32", "parameters": {"binary_data_size": size}}],
        "parameters": {"binary_data_output": true}
    });
    let mut body = serde_json::to_vec(&header).expect("json");
    let json_len = body.len();
    body.extend_from_slice(&bin);
    let r = agent.infer_raw("mlp", body, &[(INFERENCE_HEADER_CONTENT_LENGTH, json_len.to_string())]).await;
    let (head, out_bin) = split_binary_response(r).await;
    let out = &head["outputs"][0];
    assert_eq!(out["parameters"]["binary_data_size"], json!(2 * 4 * 4));
    assert!(out.get("data").is_none());
    let got = Tensor::from_binary(Datatype::Fp32, vec![2, 4], &out_bin).expect("decode");

    let json_input = json!({"inputs": [{"name": "x", "shape": [2, 16], "datatype": "FP32", "data": (0..32).map(|i| i as f32 / 10.0).collect::<Vec<_>>()}]});
    let (_, json_answer) = agent.infer("mlp", &json_input).await;
    assert_close("binary vs json", &got, &tensor_from_json(&json_answer["outputs"][0]), 0.0);
    agent.stop().await;
}

/// FP16 in both encodings: JSON numbers (rounded to half precision on the way in) and 2-byte
/// little-endian halves in the binary extension, with the same answers.
#[tokio::test]
async fn fp16_round_trips_through_json_and_binary() {
    let agent = Agent::start(&["fp16"], |_| {}).await;
    let values = [0.5, 1.0, -3.0, 1000.0, 0.1, 2.0];
    let (status, answer) = agent
        .infer("fp16", &json!({"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP16", "data": values}]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let out = &answer["outputs"][0];
    assert_eq!(out["datatype"], "FP16");
    // 0.1 is 0.0999755859375 in half precision; doubled, it is written as the shortest decimal
    // that reads back as the same half (0.19995117).
    assert_eq!(out["data"], json!([1.0, 2.0, -6.0, 2000.0, 0.19995117, 4.0]), "{answer}");

    let input = Tensor::from_json(Datatype::Fp16, vec![2, 3], &json!(values)).expect("fp16");
    let mut bin = Vec::new();
    assert_eq!(input.write_binary(&mut bin), 12, "two bytes an element");
    let header = json!({
        "inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP16", "parameters": {"binary_data_size": 12}}],
        "parameters": {"binary_data_output": true}
    });
    let mut body = serde_json::to_vec(&header).expect("json");
    let json_len = body.len();
    body.extend_from_slice(&bin);
    let r = agent.infer_raw("fp16", body, &[(INFERENCE_HEADER_CONTENT_LENGTH, json_len.to_string())]).await;
    let (head, out_bin) = split_binary_response(r).await;
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], json!(12));
    let got = Tensor::from_binary(Datatype::Fp16, vec![2, 3], &out_bin).expect("decode");
    assert_close("binary vs json", &got, &tensor_from_json(out), 0.0);
    // Beyond half precision's range is refused, not turned into infinity.
    let (status, body) = agent
        .infer("fp16", &json!({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP16", "data": [1, 2, 70000]}]}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    agent.stop().await;
}

/// BYTES in both encodings: JSON strings, and Triton's binary form (each element a 4-byte
/// little-endian length, then its bytes), in a request that mixes it with an FP32 input.
#[tokio::test]
async fn bytes_round_trip_through_json_and_binary() {
    let agent = Agent::start(&["bytes"], |_| {}).await;
    let words = ["héllo", "", "a longer line of text"];
    let (status, answer) = agent
        .infer(
            "bytes",
            &json!({"inputs": [
                {"name": "text", "shape": [3], "datatype": "BYTES", "data": words},
                {"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]}
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let echo = answer["outputs"].as_array().expect("outputs").iter().find(|o| o["name"] == "echo").expect("echo");
    assert_eq!((echo["datatype"].clone(), echo["data"].clone()), (json!("BYTES"), json!(words)), "{answer}");

    let text = Tensor::from_json(Datatype::Bytes, vec![3], &json!(words)).expect("bytes");
    let mut bin = Vec::new();
    let size = text.write_binary(&mut bin);
    assert_eq!(size, 3 * 4 + "héllo".len() + "a longer line of text".len(), "length-prefixed");
    let header = json!({
        "inputs": [
            {"name": "text", "shape": [3], "datatype": "BYTES", "parameters": {"binary_data_size": size}},
            {"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]}
        ],
        "outputs": [{"name": "echo", "parameters": {"binary_data": true}}]
    });
    let mut body = serde_json::to_vec(&header).expect("json");
    let json_len = body.len();
    body.extend_from_slice(&bin);
    let r = agent.infer_raw("bytes", body, &[(INFERENCE_HEADER_CONTENT_LENGTH, json_len.to_string())]).await;
    let (head, out_bin) = split_binary_response(r).await;
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], json!(size), "{head}");
    let got = Tensor::from_binary(Datatype::Bytes, vec![3], &out_bin).expect("decode");
    assert_eq!(got, text);
    // A length prefix that runs past the data is a 400, not a panic.
    let header = json!({"inputs": [
        {"name": "text", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 4}},
        {"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}
    ]});
    let mut body = serde_json::to_vec(&header).expect("json");
    let json_len = body.len();
    body.extend_from_slice(&[9, 0, 0, 0]);
    let r = agent.infer_raw("bytes", body, &[(INFERENCE_HEADER_CONTENT_LENGTH, json_len.to_string())]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let err: Value = r.json().await.expect("json");
    assert!(err["error"].as_str().is_some_and(|e| e.contains("length-prefixed")), "{err}");
    agent.stop().await;
}

#[tokio::test]
async fn binary_extension_round_trips_int64_and_mixes_with_json() {
    let agent = Agent::start(&["dtypes"], |_| {}).await;
    let i64s = Tensor::new(vec![2, 2], TensorData::I64(vec![1 << 40, -7, 0, i64::MAX])).expect("tensor");
    let mut bin = Vec::new();
    let size = i64s.write_binary(&mut bin);
    let header = json!({
        "inputs": [
            {"name": "f64", "shape": [2, 3], "datatype": "FP64", "data": [1, 2, 3, 4, 5, 6]},
            {"name": "i32", "shape": [2, 2], "datatype": "INT32", "data": [1, 2, 3, 4]},
            {"name": "i64", "shape": [2, 2], "datatype": "INT64", "parameters": {"binary_data_size": size}},
            {"name": "u8", "shape": [2, 4], "datatype": "UINT8", "data": [0, 1, 2, 254, 4, 5, 6, 7]},
            {"name": "flag", "shape": [2, 2], "datatype": "BOOL", "data": [true, false, false, true]}
        ],
        "outputs": [{"name": "i64_out", "parameters": {"binary_data": true}}, {"name": "flag_out"}, {"name": "u8_out"}]
    });
    let mut body = serde_json::to_vec(&header).expect("json");
    let json_len = body.len();
    body.extend_from_slice(&bin);
    let r = agent.infer_raw("dtypes", body, &[(INFERENCE_HEADER_CONTENT_LENGTH, json_len.to_string())]).await;
    let (head, out_bin) = split_binary_response(r).await;
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], json!(32));
    let neg = Tensor::from_binary(Datatype::Int64, vec![2, 2], &out_bin).expect("decode");
    assert_eq!(neg.data, TensorData::I64(vec![-(1 << 40), 7, 0, -i64::MAX]));
    assert_eq!(head["outputs"][1]["data"], json!([false, true, true, false]));
    assert_eq!(head["outputs"][2]["data"], json!([1, 2, 3, 255, 5, 6, 7, 8]));
    agent.stop().await;
}
