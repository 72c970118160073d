//! Reading what a registry answered: bounded bodies, OCI error bodies and
//! the headers the distribution API defines.

use reqwest::Response;
use wharf_oci::Digest;

/// Largest error body read for its message.
const MAX_ERROR_BODY: usize = 64 << 10;

/// The body, or `None` once it exceeds `limit` bytes.
pub async fn read_limited(
    mut response: Response,
    limit: usize,
) -> Result<Option<bytes::Bytes>, reqwest::Error> {
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body.freeze()))
}

/// `CODE: message` of an OCI error body, else the status text.
pub async fn error_message(response: Response) -> String {
    let status = response.status();
    let body = read_limited(response, MAX_ERROR_BODY).await.ok().flatten();
    let first = body.as_deref().and_then(|b| {
        let value: serde_json::Value = serde_json::from_slice(b).ok()?;
        let error = value.get("errors")?.get(0)?;
        let code = error.get("code").and_then(|c| c.as_str()).unwrap_or("");
        let message = error.get("message").and_then(|m| m.as_str()).unwrap_or("");
        Some(format!("{code}: {message}"))
    });
    first.unwrap_or_else(|| status.to_string())
}

/// A header's value, if it is text.
pub fn header_str(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)?
        .to_str()
        .ok()
        .map(str::to_string)
}

/// The media type of `Content-Type`, without parameters.
pub fn media_type(response: &Response) -> Option<String> {
    header_str(response, "content-type")
        .map(|t| t.split(';').next().unwrap_or("").trim().to_string())
}

/// The digest the registry claims in `Docker-Content-Digest`.
pub fn content_digest(response: &Response) -> Option<Digest> {
    header_str(response, "docker-content-digest")?.parse().ok()
}

/// An upload session's `Location`.
pub fn location(response: &Response) -> Option<String> {
    header_str(response, "location")
}

/// The number of bytes an upload session holds, from `Range: 0-<last>`.
pub fn range_end(response: &Response) -> Option<u64> {
    let range = header_str(response, "range")?;
    let (_, last) = range.trim().trim_start_matches("bytes=").split_once('-')?;
    last.parse::<u64>().ok().map(|last| last + 1)
}

/// The target of `Link: <url>; rel="next"` (the next page of a listing).
pub fn next_link(response: &Response) -> Option<String> {
    let link = header_str(response, "link")?;
    let (target, params) = link.split_once(';')?;
    params.contains("rel=\"next\"").then(|| {
        target
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(headers: &[(&str, &str)], body: &'static str) -> Response {
        let mut builder = http::Response::builder().status(400);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        Response::from(builder.body(body).unwrap())
    }

    #[test]
    fn reads_distribution_headers() {
        let response = answer(
            &[
                ("range", "0-1023"),
                ("link", "</v2/_catalog?n=2&last=b>; rel=\"next\""),
                (
                    "content-type",
                    "application/vnd.oci.image.index.v1+json; charset=x",
                ),
            ],
            "",
        );
        assert_eq!(range_end(&response), Some(1024));
        assert_eq!(
            next_link(&response).as_deref(),
            Some("/v2/_catalog?n=2&last=b")
        );
        assert_eq!(
            media_type(&response).as_deref(),
            Some("application/vnd.oci.image.index.v1+json")
        );
        assert_eq!(content_digest(&response), None);
    }

    #[tokio::test]
    async fn error_messages_come_from_the_oci_body_else_the_status() {
        let body = r#"{"errors":[{"code":"NAME_UNKNOWN","message":"no such repository"}]}"#;
        assert_eq!(
            error_message(answer(&[], body)).await,
            "NAME_UNKNOWN: no such repository"
        );
        assert_eq!(
            error_message(answer(&[], "<html>")).await,
            "400 Bad Request"
        );
    }
}
