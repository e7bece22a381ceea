//! Request bodies from outside: content encoding (identity, gzip, zstd) and media type, each under a
//! limit. A compressed body is inflated incrementally and abandoned the moment it exceeds the
//! decompressed limit, so a small "zip bomb" can never allocate more than the limit.

use std::io::Read;

use axum::http::{HeaderMap, header};

use crate::error::ApiError;

/// How an ingest body is framed, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `application/json` (one event, an array, or an envelope).
    Json,
    /// `application/x-ndjson` (also `application/ndjson`, `application/jsonl`, `application/x-jsonlines`).
    Ndjson,
    /// No `Content-Type`: the event model recognises the shape from the bytes.
    Unspecified,
}

/// Limits for one request body.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Largest decoded (decompressed) body, in bytes.
    pub max_decoded_bytes: usize,
}

/// Reads `Content-Type`; anything but JSON or NDJSON is a 415.
pub fn body_kind(headers: &HeaderMap) -> Result<BodyKind, ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(BodyKind::Unspecified);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::unsupported_media_type("Content-Type is not valid ASCII"))?;
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" | "text/json" => Ok(BodyKind::Json),
        "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonl"
        | "application/x-jsonlines" => Ok(BodyKind::Ndjson),
        _ => Err(ApiError::unsupported_media_type(format!(
            "Content-Type {essence:?} is not supported; send application/json or application/x-ndjson"
        ))),
    }
}

/// Undoes `Content-Encoding` (identity, gzip, zstd) within `limits`.
pub fn decode_body(
    headers: &HeaderMap,
    body: &[u8],
    limits: BodyLimits,
) -> Result<Vec<u8>, ApiError> {
    let encoding = match headers.get(header::CONTENT_ENCODING) {
        None => "identity".to_string(),
        Some(v) => v
            .to_str()
            .map_err(|_| ApiError::unsupported_media_type("Content-Encoding is not valid ASCII"))?
            .trim()
            .to_ascii_lowercase(),
    };
    match encoding.as_str() {
        "" | "identity" => {
            if body.len() > limits.max_decoded_bytes {
                return Err(too_large(body.len(), limits));
            }
            Ok(body.to_vec())
        }
        "gzip" | "x-gzip" => inflate(flate2::read::MultiGzDecoder::new(body), "gzip", limits),
        "zstd" => {
            let decoder = zstd::stream::read::Decoder::new(body).map_err(|e| {
                ApiError::bad_request(format!("the zstd body cannot be decoded: {e}"))
            })?;
            inflate(decoder, "zstd", limits)
        }
        other => Err(ApiError::unsupported_media_type(format!(
            "Content-Encoding {other:?} is not supported; use gzip, zstd or none"
        ))),
    }
}

fn inflate(mut reader: impl Read, name: &str, limits: BodyLimits) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    // One byte past the limit tells "exactly at the limit" from "over it" without reading further.
    let cap = limits.max_decoded_bytes as u64 + 1;
    (&mut reader)
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|e| ApiError::bad_request(format!("the {name} body cannot be decoded: {e}")))?;
    if out.len() > limits.max_decoded_bytes {
        return Err(ApiError::payload_too_large(format!(
            "the {name} body decompresses to more than the limit of {} bytes",
            limits.max_decoded_bytes
        )));
    }
    Ok(out)
}

fn too_large(size: usize, limits: BodyLimits) -> ApiError {
    ApiError::payload_too_large(format!(
        "the body is {size} bytes; the limit is {} bytes",
        limits.max_decoded_bytes
    ))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use axum::http::{HeaderValue, StatusCode};

    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const LIMITS: BodyLimits = BodyLimits {
        max_decoded_bytes: 1024,
    };

    #[test]
    fn gzip_and_zstd_bodies_are_decoded() {
        let plain = br#"{"action":"kms.secrets.rotate"}"#;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(plain).unwrap();
        let gz = gz.finish().unwrap();
        let h = headers(&[(header::CONTENT_ENCODING, "gzip")]);
        assert_eq!(decode_body(&h, &gz, LIMITS).unwrap(), plain);

        let zs = zstd::encode_all(&plain[..], 3).unwrap();
        let h = headers(&[(header::CONTENT_ENCODING, "zstd")]);
        assert_eq!(decode_body(&h, &zs, LIMITS).unwrap(), plain);
    }

    #[test]
    fn a_compression_bomb_stops_at_the_limit() {
        let zeros = vec![b' '; 10 * 1024 * 1024];
        let zs = zstd::encode_all(&zeros[..], 3).unwrap();
        assert!(zs.len() < 4096);
        let h = headers(&[(header::CONTENT_ENCODING, "zstd")]);
        let err = decode_body(&h, &zs, LIMITS).unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(err.message.contains("1024"), "{}", err.message);
    }

    #[test]
    fn exactly_at_the_limit_is_accepted() {
        let body = vec![b' '; 1024];
        assert_eq!(
            decode_body(&HeaderMap::new(), &body, LIMITS).unwrap().len(),
            1024
        );
        let body = vec![b' '; 1025];
        assert_eq!(
            decode_body(&HeaderMap::new(), &body, LIMITS)
                .unwrap_err()
                .status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }

    #[test]
    fn unknown_encodings_and_media_types_are_415() {
        let h = headers(&[(header::CONTENT_ENCODING, "br")]);
        assert_eq!(
            decode_body(&h, b"x", LIMITS).unwrap_err().status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        let h = headers(&[(header::CONTENT_TYPE, "text/plain")]);
        assert_eq!(
            body_kind(&h).unwrap_err().status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        let h = headers(&[(header::CONTENT_TYPE, "application/x-ndjson; charset=utf-8")]);
        assert_eq!(body_kind(&h).unwrap(), BodyKind::Ndjson);
    }

    #[test]
    fn corrupt_gzip_is_a_clear_400() {
        let h = headers(&[(header::CONTENT_ENCODING, "gzip")]);
        let err = decode_body(&h, b"not gzip at all", LIMITS).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert!(err.message.contains("gzip"));
    }
}
