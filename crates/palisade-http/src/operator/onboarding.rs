//! Operator routes for onboarding: suppliers, batch manifests, enrolment tokens, TPM vendor CAs, approved firmware.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use palisade_core::ModelId;
use palisade_core::role::Access;
use palisade_pki::pem_to_der;

use super::{Caller, parse_id};
use crate::error::{ApiError, Body, ErrorBody};
use crate::state::OperatorApi;
use crate::views::*;

/// Registered suppliers.
#[utoipa::path(get, path = "/api/v1/suppliers", tag = "onboarding", responses((status = 200, body = Vec<SupplierView>)))]
pub(crate) async fn list_suppliers(
    State(s): State<OperatorApi>,
    _c: Caller,
) -> Result<Json<Vec<SupplierView>>, ApiError> {
    Ok(Json(
        s.store.suppliers().await?.iter().map(Into::into).collect(),
    ))
}

/// Registers a supplier's manufacturer CA (admin).
#[utoipa::path(post, path = "/api/v1/suppliers", tag = "onboarding", request_body = AddSupplier,
    responses((status = 201, body = SupplierView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn add_supplier(
    State(s): State<OperatorApi>,
    c: Caller,
    Body(req): Body<AddSupplier>,
) -> Result<(StatusCode, Json<SupplierView>), ApiError> {
    c.require(&s, Access::Admin, "register suppliers").await?;
    let name: palisade_core::SupplierName = parse_id(&s, &c, "supplier.add", &req.name).await?;
    let der = pem_to_der(&req.ca_pem, "CERTIFICATE")
        .map_err(|e| ApiError::bad_request("bad_ca", e.to_string()))?;
    let rec = s
        .enrollment
        .add_supplier(&c.actor(), name, der, req.disclosure_contact)
        .await?;
    Ok((StatusCode::CREATED, Json((&rec).into())))
}

/// Sets or clears where a supplier takes vulnerability reports (admin).
#[utoipa::path(put, path = "/api/v1/suppliers/{name}/disclosure-contact", tag = "onboarding",
    params(("name" = String, Path)), request_body = SetDisclosureContact,
    responses((status = 200, body = SupplierView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn set_disclosure_contact(
    State(s): State<OperatorApi>,
    c: Caller,
    axum::extract::Path(name): axum::extract::Path<String>,
    Body(req): Body<SetDisclosureContact>,
) -> Result<Json<SupplierView>, ApiError> {
    c.require(&s, Access::Admin, "set suppliers' disclosure contacts")
        .await?;
    let name: palisade_core::SupplierName = parse_id(&s, &c, "supplier.contact", &name).await?;
    let rec = s
        .enrollment
        .set_supplier_contact(&c.actor(), &name, req.disclosure_contact)
        .await?;
    Ok(Json((&rec).into()))
}

/// Imports a signed batch manifest (operator or admin): the body is the manifest file.
#[utoipa::path(post, path = "/api/v1/batches", tag = "onboarding", request_body(content = String, content_type = "application/json"),
    responses((status = 201, body = BatchView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn import_batch(
    State(s): State<OperatorApi>,
    c: Caller,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<BatchView>), ApiError> {
    c.require(&s, Access::Write, "import batches").await?;
    let b = s.enrollment.import_batch(&c.actor(), &body).await?;
    Ok((StatusCode::CREATED, Json((&b).into())))
}

/// Creates a one-time enrolment token for a model (operator or admin).
#[utoipa::path(post, path = "/api/v1/enrollment-tokens", tag = "onboarding", request_body = CreateEnrollmentToken,
    responses((status = 201, body = CreatedEnrollmentToken), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn create_enrollment_token(
    State(s): State<OperatorApi>,
    c: Caller,
    Body(req): Body<CreateEnrollmentToken>,
) -> Result<(StatusCode, Json<CreatedEnrollmentToken>), ApiError> {
    c.require(&s, Access::Write, "create enrolment tokens")
        .await?;
    let model: ModelId = parse_id(&s, &c, "enrollment_token.create", &req.model).await?;
    let (text, rec) = s
        .enrollment
        .create_enrollment_token(&c.actor(), model, req.ttl_secs.unwrap_or(86_400))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedEnrollmentToken {
            token: text.to_string(),
            id: rec.id,
            model: rec.model.to_string(),
            expires_at: rfc3339(rec.expires_ms),
        }),
    ))
}

/// Registered TPM vendor CAs.
#[utoipa::path(get, path = "/api/v1/tpm-vendors", tag = "attestation", responses((status = 200, body = Vec<TpmVendorView>)))]
pub(crate) async fn list_tpm_vendors(
    State(s): State<OperatorApi>,
    _c: Caller,
) -> Result<Json<Vec<TpmVendorView>>, ApiError> {
    Ok(Json(
        s.store
            .tpm_vendors()
            .await?
            .iter()
            .map(Into::into)
            .collect(),
    ))
}

/// Registers a TPM vendor CA (admin): devices' EK certificates must chain to one.
#[utoipa::path(post, path = "/api/v1/tpm-vendors", tag = "attestation", request_body = AddTpmVendor,
    responses((status = 201, body = TpmVendorView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn add_tpm_vendor(
    State(s): State<OperatorApi>,
    c: Caller,
    Body(req): Body<AddTpmVendor>,
) -> Result<(StatusCode, Json<TpmVendorView>), ApiError> {
    c.require(&s, Access::Admin, "register TPM vendors").await?;
    let der = pem_to_der(&req.ca_pem, "CERTIFICATE")
        .map_err(|e| ApiError::bad_request("bad_ca", e.to_string()))?;
    let rec = s.enrollment.add_tpm_vendor(&c.actor(), der).await?;
    Ok((StatusCode::CREATED, Json((&rec).into())))
}

/// Firmware approved for a model.
#[utoipa::path(get, path = "/api/v1/models/{id}/firmware", tag = "attestation", params(("id" = String, Path)),
    responses((status = 200, body = Vec<FirmwareView>)))]
pub(crate) async fn list_firmware(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<FirmwareView>>, ApiError> {
    let id: ModelId = parse_id(&s, &c, "firmware.list", &id).await?;
    Ok(Json(
        s.store
            .firmware(&id)
            .await?
            .iter()
            .map(Into::into)
            .collect(),
    ))
}

/// Approves a firmware image for a model (operator or admin).
#[utoipa::path(post, path = "/api/v1/models/{id}/firmware", tag = "attestation", params(("id" = String, Path)), request_body = AddFirmware,
    responses((status = 201, body = FirmwareView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn add_firmware(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(id): Path<String>,
    Body(req): Body<AddFirmware>,
) -> Result<(StatusCode, Json<FirmwareView>), ApiError> {
    c.require(&s, Access::Write, "approve firmware").await?;
    let id: ModelId = parse_id(&s, &c, "firmware.approve", &id).await?;
    let rec = s
        .enrollment
        .add_firmware(&c.actor(), &id, &req.version, &req.sha256)
        .await?;
    Ok((StatusCode::CREATED, Json((&rec).into())))
}
