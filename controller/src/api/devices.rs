//! Device-facing routes (`/enroll`, `/devices/{id}/...`, authenticated by the device's key) and
//! the operator's fleet routes (enrollment tokens, device list, deploy).

use axum::Json;
use axum::body::Body;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use edgefleet_shared::api::fleet::{
    CreateEnrollmentToken, Decommission, DeployRequest, DeviceInfo, DeviceQuery, EnrollmentToken, EnrollmentTokenInfo,
    Issued, Relabel, TOTAL_COUNT_HEADER, UndeployRequest,
};
use edgefleet_shared::api::tokens::Role;
use edgefleet_shared::fleet::{
    DEVICE_HEADER, DeviceStatus, EnrollRequest, EnrollResponse, SIGNATURE_HEADER, TIMESTAMP_HEADER,
    TRUST_VERSION_HEADER,
};

use super::{ApiError, AppState};
use crate::auth::Caller;
use crate::fleet::FleetError;

impl From<FleetError> for ApiError {
    fn from(e: FleetError) -> Self {
        match e {
            FleetError::BadRequest(m) => ApiError::bad_request(m),
            FleetError::Unprocessable(m) => ApiError::unprocessable(m),
            FleetError::Unauthorized(m) => ApiError::unauthorized(m),
            FleetError::NotFound(m) => ApiError::not_found(m),
            FleetError::Forbidden(m) => ApiError::forbidden(m),
            FleetError::Conflict(m) => ApiError::conflict(m),
            FleetError::Registry(r) => r.into(),
            FleetError::Db(d) => d.into(),
            FleetError::Ca(m) => {
                tracing::error!(error = %m, "Device CA error.");
                ApiError::internal("internal certificate error; see the controller log")
            }
        }
    }
}

/// Creates an enrollment token.
#[utoipa::path(post, path = "/api/v1/enrollment-tokens", request_body = CreateEnrollmentToken, responses((status = 201, body = EnrollmentToken)))]
pub(super) async fn create_enrollment_token(
    caller: Caller,
    State(state): State<AppState>,
    body: Result<Json<CreateEnrollmentToken>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<EnrollmentToken>), ApiError> {
    caller.require(Role::Operator)?;
    let Json(req) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let token = state.fleet.create_token(req.uses, req.ttl_secs, req.labels, caller.actor()).await?;
    Ok((StatusCode::CREATED, Json(token)))
}

/// Enrolls a device (authenticated by the enrollment token in the body).
#[utoipa::path(post, path = "/api/v1/enroll", responses((status = 200, description = "device id and broker"), (status = 401, body = edgefleet_shared::api::ErrorBody)))]
pub(super) async fn enroll(
    State(state): State<AppState>,
    body: Result<Json<EnrollRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<EnrollResponse>, ApiError> {
    let Json(req) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let enrolled = state.fleet.enroll(req).await?;
    // A fleet it matches may have given it models already.
    state.publisher.documents(std::slice::from_ref(&enrolled.device_id)).await;
    Ok(Json(enrolled))
}

/// What can be checked of a device request before its body is read: the device headers are
/// there, name the device in the path, are fresh, and the device is enrolled.
async fn claimed_device(state: &AppState, id: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let claimed = header(DEVICE_HEADER).ok_or_else(|| ApiError::unauthorized(format!("missing {DEVICE_HEADER}")))?;
    if claimed != id {
        return Err(ApiError::forbidden(format!("device {claimed:?} may not act for {id:?}")));
    }
    let fresh = header(TIMESTAMP_HEADER)
        .and_then(|t| t.parse::<u64>().ok())
        .is_some_and(|t| t.abs_diff(crate::db::now() as u64) <= edgefleet_shared::fleet::MAX_CLOCK_SKEW_SECS);
    if !fresh || header(SIGNATURE_HEADER).is_none() {
        return Err(ApiError::unauthorized(format!(
            "missing, invalid or stale {TIMESTAMP_HEADER} or {SIGNATURE_HEADER}"
        )));
    }
    match state.fleet.device_key(id.to_owned()).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::unauthorized(format!("unknown or decommissioned device {id:?}"))),
    }
}

/// Checks the device headers of a request against the device `id` in the path. `uri` must be
/// the original URI (routes are nested under `/api/v1`, which `Uri` would strip).
async fn device_auth(
    state: &AppState,
    id: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let claimed = header(DEVICE_HEADER).ok_or_else(|| ApiError::unauthorized(format!("missing {DEVICE_HEADER}")))?;
    if claimed != id {
        return Err(ApiError::forbidden(format!("device {claimed:?} may not act for {id:?}")));
    }
    let timestamp = header(TIMESTAMP_HEADER)
        .and_then(|t| t.parse::<u64>().ok())
        .ok_or_else(|| ApiError::unauthorized(format!("missing or invalid {TIMESTAMP_HEADER}")))?;
    let signature =
        header(SIGNATURE_HEADER).ok_or_else(|| ApiError::unauthorized(format!("missing {SIGNATURE_HEADER}")))?;
    let path = uri.path_and_query().map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
    state.fleet.authenticate(claimed, method.as_str().to_owned(), path, timestamp, body.to_vec(), signature).await?;
    Ok(())
}

/// The device's signed deployment document (204 when none); `x-edgefleet-trust-version` says
/// which trust set is current, so a device behind it fetches the rotations.
#[utoipa::path(get, path = "/api/v1/devices/{id}/desired", responses((status = 200, description = "signed envelope"), (status = 204)))]
pub(super) async fn desired(
    State(state): State<AppState>,
    Path(id): Path<String>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    device_auth(&state, &id, &method, &uri, &headers, b"").await?;
    let trust = [(TRUST_VERSION_HEADER, state.fleet.keys().version().to_string())];
    Ok(match state.fleet.desired(id).await? {
        Some(env) => (trust, Json(env)).into_response(),
        None => (StatusCode::NO_CONTENT, trust).into_response(),
    })
}

/// Every trust rotation since the first set, oldest first (devices verify each against the set
/// they hold).
#[utoipa::path(get, path = "/api/v1/devices/{id}/trust", responses((status = 200, description = "the trust chain")))]
pub(super) async fn trust(
    State(state): State<AppState>,
    Path(id): Path<String>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Result<Json<edgefleet_shared::trust::TrustChain>, ApiError> {
    device_auth(&state, &id, &method, &uri, &headers, b"").await?;
    Ok(Json(state.fleet.keys().chain()))
}

/// A broker client certificate for the device's own key, from the device CA (for brokers that
/// authenticate by certificate).
#[utoipa::path(post, path = "/api/v1/devices/{id}/mqtt-certificate", responses((status = 200, description = "certificate PEM and expiry")))]
pub(super) async fn mqtt_certificate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Result<Json<edgefleet_shared::fleet::MqttCertificate>, ApiError> {
    device_auth(&state, &id, &method, &uri, &headers, b"").await?;
    let certificate = state.fleet.mqtt_certificate(&state.ca, id.clone()).await?;
    state.publisher.grant_access(&id).await.map_err(|e| {
        ApiError::unavailable(format!("the broker has not given the device its topics ({e}); try again"))
    })?;
    // Decommissioned meanwhile: its revocation may have reached the broker before this grant.
    if state.fleet.device_key(id.clone()).await?.is_none() {
        state.publisher.revoke_access_now(&id).await;
        return Err(ApiError::unauthorized(format!("device {id:?} is decommissioned")));
    }
    Ok(Json(certificate))
}

/// Whether the device may be redirected to the object store (unless it asks for the bytes from
/// the controller, having failed to reach the store).
fn delivery(headers: &HeaderMap) -> super::artifacts::Delivery {
    match headers.get(edgefleet_shared::fleet::VIA_HEADER).and_then(|v| v.to_str().ok()) {
        Some("controller") => super::artifacts::Delivery::Here,
        _ => super::artifacts::Delivery::Redirect,
    }
}

/// An artifact of the device's current document (compressed; `Range` supported; a `307` to the
/// object store's presigned URL when it hands them out).
#[utoipa::path(get, path = "/api/v1/devices/{id}/artifacts/{sha256}", responses((status = 200), (status = 206), (status = 307, description = "a presigned URL of the object store"), (status = 403, body = edgefleet_shared::api::ErrorBody)))]
pub(super) async fn artifact(
    State(state): State<AppState>,
    Path((id, sha256)): Path<(String, String)>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    device_auth(&state, &id, &method, &uri, &headers, b"").await?;
    if !state.fleet.may_download(id.clone(), sha256.clone()).await? {
        return Err(ApiError::forbidden(format!("artifact {sha256} is not part of device {id:?}'s deployment")));
    }
    super::artifacts::serve_artifact(&state, &sha256, &headers, delivery(&headers)).await
}

/// A delta offered by the device's current document (a zstd frame against an artifact the
/// device holds; `Range` supported; a `307` as for artifacts).
#[utoipa::path(get, path = "/api/v1/devices/{id}/deltas/{sha256}", responses((status = 200), (status = 206), (status = 307, description = "a presigned URL of the object store"), (status = 403, body = edgefleet_shared::api::ErrorBody)))]
pub(super) async fn delta(
    State(state): State<AppState>,
    Path((id, sha256)): Path<(String, String)>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    device_auth(&state, &id, &method, &uri, &headers, b"").await?;
    if !state.fleet.may_download_delta(id.clone(), sha256.clone()).await? {
        return Err(ApiError::forbidden(format!("delta {sha256} is not part of device {id:?}'s deployment")));
    }
    super::artifacts::serve_delta(&state, &sha256, &headers, delivery(&headers)).await
}

/// Largest status report read.
const MAX_STATUS_BYTES: usize = 256 * 1024;

/// A device reports its status. Who it claims to be is checked before the body is read (the
/// signature, which covers the body, after).
#[utoipa::path(post, path = "/api/v1/devices/{id}/status", responses((status = 204), (status = 413, body = edgefleet_shared::api::ErrorBody)))]
pub(super) async fn status(
    State(state): State<AppState>,
    Path(id): Path<String>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    claimed_device(&state, &id, &headers).await?;
    let body = axum::body::to_bytes(body, MAX_STATUS_BYTES).await.map_err(|_| ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        message: format!("a status report is at most {MAX_STATUS_BYTES} bytes"),
    })?;
    device_auth(&state, &id, &method, &uri, &headers, &body).await?;
    let status: DeviceStatus =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("status: {e}")))?;
    state.fleet.record_status(id, status).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Lists devices, filtered (decommissioned ones only when asked for by `state`).
#[utoipa::path(get, path = "/api/v1/devices", params(DeviceQuery), responses((status = 200, body = Vec<DeviceInfo>, headers(("x-total-count" = u64, description = "Devices matching, before limit and offset")))))]
pub(super) async fn list(
    caller: Caller,
    State(state): State<AppState>,
    Query(q): Query<DeviceQuery>,
) -> Result<([(HeaderName, String); 1], Json<Vec<DeviceInfo>>), ApiError> {
    caller.require(Role::Viewer)?;
    let labels = q.labels().map_err(ApiError::bad_request)?;
    let now = crate::db::now() as u64;
    let mut devices = state.fleet.devices(None).await?;
    devices.retain(|d| q.matches(d, &labels, now));
    let total = devices.len();
    let page: Vec<DeviceInfo> =
        devices.into_iter().skip(q.offset.unwrap_or(0)).take(q.limit.unwrap_or(usize::MAX)).collect();
    Ok(([(HeaderName::from_static(TOTAL_COUNT_HEADER), total.to_string())], Json(page)))
}

/// A device's error rate and latency over time, a point a minute, oldest first.
#[utoipa::path(get, path = "/api/v1/devices/{id}/metrics", responses((status = 200, body = Vec<edgefleet_shared::api::console::DeviceMetricPoint>), (status = 404, body = edgefleet_shared::api::ErrorBody)))]
pub(super) async fn metrics(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<edgefleet_shared::api::console::DeviceMetricPoint>>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(state.fleet.metrics(id).await?))
}

/// One device.
#[utoipa::path(get, path = "/api/v1/devices/{id}", responses((status = 200, body = DeviceInfo), (status = 404, body = edgefleet_shared::api::ErrorBody)))]
pub(super) async fn show(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DeviceInfo>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(state.fleet.device(id).await?))
}

/// Sets and removes a device's labels.
#[utoipa::path(post, path = "/api/v1/devices/{id}/labels", request_body = Relabel, responses((status = 200, body = DeviceInfo), (status = 404, body = edgefleet_shared::api::ErrorBody), (status = 409, body = edgefleet_shared::api::ErrorBody)))]
pub(super) async fn relabel(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<Relabel>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<DeviceInfo>, ApiError> {
    caller.require(Role::Operator)?;
    let Json(change) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let device = state.fleet.relabel(id, change, caller.actor()).await?;
    // Its fleet may have changed with its labels.
    state.publisher.documents(std::slice::from_ref(&device.id)).await;
    Ok(Json(device))
}

/// Decommissions a device: its key, broker login and documents stop working at once.
#[utoipa::path(post, path = "/api/v1/devices/{id}/decommission", request_body = Decommission, responses((status = 200, body = DeviceInfo), (status = 404, body = edgefleet_shared::api::ErrorBody), (status = 409, body = edgefleet_shared::api::ErrorBody)))]
pub(super) async fn decommission(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<Decommission>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<DeviceInfo>, ApiError> {
    caller.require(Role::Operator)?;
    let Json(req) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let device = state.fleet.decommission(id, req.reason, caller.actor()).await?;
    state.publisher.forget(&device.id).await;
    Ok(Json(device))
}

/// Enrollment tokens, newest first (never the tokens themselves).
#[utoipa::path(get, path = "/api/v1/enrollment-tokens", responses((status = 200, body = Vec<EnrollmentTokenInfo>)))]
pub(super) async fn enrollment_tokens(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<Vec<EnrollmentTokenInfo>>, ApiError> {
    caller.require(Role::Operator)?;
    Ok(Json(state.fleet.enrollment_tokens().await?))
}

/// Revokes an enrollment token.
#[utoipa::path(delete, path = "/api/v1/enrollment-tokens/{id}", responses((status = 204), (status = 404, body = edgefleet_shared::api::ErrorBody), (status = 409, body = edgefleet_shared::api::ErrorBody)))]
pub(super) async fn revoke_enrollment_token(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Operator)?;
    state.fleet.revoke_enrollment_token(id, caller.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Signs and issues deployment documents.
#[utoipa::path(post, path = "/api/v1/deployments", request_body = DeployRequest, responses((status = 201, body = Vec<Issued>)))]
pub(super) async fn deploy(
    caller: Caller,
    State(state): State<AppState>,
    body: Result<Json<DeployRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Vec<Issued>>), ApiError> {
    caller.require(Role::Operator)?;
    let Json(req) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    state.registry.prepare_deltas(req.model.clone(), req.version.clone()).await;
    let issued = state.fleet.deploy(req, caller.actor()).await?;
    let devices: Vec<String> = issued.iter().map(|i| i.device_id.clone()).collect();
    state.publisher.documents(&devices).await;
    metrics::counter!(crate::metric::DOCUMENTS_ISSUED).increment(issued.len() as u64);
    Ok((StatusCode::CREATED, Json(issued)))
}

/// Takes a model off devices (their other models stay): each gets a new signed document.
#[utoipa::path(post, path = "/api/v1/undeploy", request_body = UndeployRequest, responses((status = 200, body = Vec<Issued>), (status = 404, body = edgefleet_shared::api::ErrorBody), (status = 409, body = edgefleet_shared::api::ErrorBody)))]
pub(super) async fn undeploy(
    caller: Caller,
    State(state): State<AppState>,
    body: Result<Json<UndeployRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Vec<Issued>>, ApiError> {
    caller.require(Role::Operator)?;
    let Json(req) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let issued = state.fleet.undeploy(req, caller.actor()).await?;
    let devices: Vec<String> = issued.iter().map(|i| i.device_id.clone()).collect();
    state.publisher.documents(&devices).await;
    metrics::counter!(crate::metric::DOCUMENTS_ISSUED).increment(issued.len() as u64);
    Ok(Json(issued))
}
