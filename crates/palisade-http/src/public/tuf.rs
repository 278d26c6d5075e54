//! TUF metadata, target images and deltas: public, since their integrity comes from the signatures devices check.

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;

use palisade_control::error::ServiceError;

use crate::error::ApiError;
use crate::state::PublicApi;

/// A single byte range `bytes=START-` or `bytes=START-END` of a `total`-byte
/// file: the inclusive range to send, or `None` when unsatisfiable.
pub(crate) fn byte_range(header: &str, total: u64) -> Option<(u64, u64)> {
    let spec = header.trim().strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let start: u64 = a.trim().parse().ok()?;
    let end = match b.trim() {
        "" => total.checked_sub(1)?,
        e => e.parse::<u64>().ok()?.min(total.checked_sub(1)?),
    };
    (start <= end).then_some((start, end))
}

/// TUF metadata (public: its integrity comes from its signatures).
pub(crate) async fn tuf_metadata(
    State(s): State<PublicApi>,
    Path(name): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    let bytes = s
        .tuf
        .metadata(&name)
        .await
        .map_err(crate::error::tuf_error)?
        .ok_or_else(|| ApiError::not_found(format!("no TUF metadata {name}")))?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        bytes,
    )
        .into_response())
}

/// Which image a delta starts from.
#[derive(Debug, Deserialize)]
pub(crate) struct DeltaQuery {
    from: String,
}

/// A delta to a target image (`MODEL/VERSION.img`) from the image with SHA-256
/// `from` (a release of the same model): zstd with the old image as
/// reference. 404 when `from` is not a release of the model. The device
/// checks the rebuilt image against the signed metadata, as for a full image.
pub(crate) async fn tuf_delta(
    State(s): State<PublicApi>,
    Path(path): Path<String>,
    Query(q): Query<DeltaQuery>,
) -> Result<axum::response::Response, ApiError> {
    let releases = s.store.releases(None).await?;
    let to = releases
        .iter()
        .find(|r| palisade_control::tuf::target_name(r) == path)
        .ok_or_else(|| ApiError::not_found(format!("no target {path}")))?;
    let from = releases
        .iter()
        .find(|r| r.model == to.model && r.image_sha256.eq_ignore_ascii_case(&q.from))
        .ok_or_else(|| {
            ApiError::not_found(format!("no release of {} has image {}", to.model, q.from))
        })?;
    if from.image_sha256 == to.image_sha256 {
        return Err(ApiError::not_found("the device already has this image"));
    }
    let sha = s.releases.delta(from, to).await?;
    let blob = s
        .releases
        .blobs()
        .read(&sha, None)
        .await
        .map_err(ServiceError::from)?
        .ok_or_else(|| ApiError::internal("the delta blob vanished"))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/zstd".to_owned()),
            (header::CONTENT_LENGTH, blob.len.to_string()),
        ],
        axum::body::Body::new(blob.body),
    )
        .into_response())
}

/// A target image by its TUF name (`MODEL/VERSION.img`); a single `Range`
/// (`bytes=N-` or `bytes=N-M`) resumes an interrupted download.
pub(crate) async fn tuf_target(
    State(s): State<PublicApi>,
    Path(path): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    let releases = s.store.releases(None).await?;
    let r = releases
        .iter()
        .find(|r| palisade_control::tuf::target_name(r) == path)
        .ok_or_else(|| ApiError::not_found(format!("no target {path}")))?;
    let total = r.image_len;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|h| byte_range(h, total));
    let read = |range: Option<(u64, u64)>| async move {
        s.releases
            .blobs()
            .read(&r.image_sha256, range)
            .await
            .map_err(ServiceError::from)?
            .ok_or_else(|| ApiError::not_found(format!("no target {path}")))
    };
    match range {
        None => {
            let blob = read(None).await?;
            Ok((
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                    (header::ACCEPT_RANGES, "bytes".to_owned()),
                    (header::CONTENT_LENGTH, blob.len.to_string()),
                ],
                axum::body::Body::new(blob.body),
            )
                .into_response())
        }
        Some(None) => Ok((
            StatusCode::RANGE_NOT_SATISFIABLE,
            [(header::CONTENT_RANGE, format!("bytes */{total}"))],
        )
            .into_response()),
        Some(Some((start, end))) => {
            let blob = read(Some((start, end))).await?;
            Ok((
                StatusCode::PARTIAL_CONTENT,
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                    (
                        header::CONTENT_RANGE,
                        format!("bytes {start}-{end}/{total}"),
                    ),
                    (header::CONTENT_LENGTH, blob.len.to_string()),
                ],
                axum::body::Body::new(blob.body),
            )
                .into_response())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::byte_range;

    #[test]
    fn byte_ranges_resume_and_refuse_the_unsatisfiable() {
        assert_eq!(byte_range("bytes=0-", 10), Some((0, 9)));
        assert_eq!(byte_range("bytes=4-", 10), Some((4, 9)));
        assert_eq!(byte_range("bytes=4-6", 10), Some((4, 6)));
        assert_eq!(byte_range("bytes=4-600", 10), Some((4, 9)));
        assert_eq!(byte_range("bytes=10-", 10), None);
        assert_eq!(byte_range("bytes=6-4", 10), None);
        assert_eq!(byte_range("bytes=-4", 10), None);
        assert_eq!(byte_range("items=0-", 10), None);
        assert_eq!(byte_range("bytes=0-", 0), None);
        assert_eq!(byte_range("bytes=0-1,3-4", 10), None);
    }
}
