//! AWS Signature Version 4 for requests with the whole body in hand: the
//! canonical request, the string to sign, the derived key and the
//! `Authorization` header, as AWS's "Signature Version 4 signing process"
//! describes them. Tested against AWS's published test suite.

use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};

use crate::Credentials;

/// The only algorithm there is.
const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Everything but AWS's unreserved characters (`A-Z a-z 0-9 - _ . ~`) is
/// escaped, in upper-case hex.
const ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes `text` as SigV4's canonical form (and the EC2 Query
/// API's form bodies) want.
///
/// ```
/// assert_eq!(wharf_provider::sigv4::uri_encode("tag:wharf.io/pool"), "tag%3Awharf.io%2Fpool");
/// ```
pub fn uri_encode(text: &str) -> String {
    utf8_percent_encode(text, ESCAPED).to_string()
}

/// A request to sign: its headers must include `host` and `x-amz-date`
/// (every header given is signed).
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// The path, already URI-encoded (`/` for the Query API).
    pub path: &'a str,
    /// Query parameters, not encoded.
    pub query: &'a [(&'a str, &'a str)],
    /// Headers to sign, any case.
    pub headers: &'a [(&'a str, &'a str)],
    /// The body.
    pub body: &'a [u8],
}

/// Where a signature is valid: a day, a region, a service.
#[derive(Clone, Copy, Debug)]
pub struct Scope<'a> {
    /// The request time, `20150830T123600Z` (its `x-amz-date`).
    pub amz_date: &'a str,
    /// `us-east-1`, ...
    pub region: &'a str,
    /// `ec2`, ...
    pub service: &'a str,
}

impl Scope<'_> {
    fn date(&self) -> &str {
        &self.amz_date[..8.min(self.amz_date.len())]
    }

    fn credential_scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date(),
            self.region,
            self.service
        )
    }
}

/// Unix seconds as an `x-amz-date`: `20150830T123600Z`.
///
/// ```
/// assert_eq!(wharf_provider::sigv4::amz_date(1_440_938_160), "20150830T123600Z");
/// ```
pub fn amz_date(unix_secs: u64) -> String {
    wharf_api::rfc3339(unix_secs * 1000).replace(['-', ':'], "")
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The canonical request and the signed header names (`host;x-amz-date`).
pub fn canonical_request(request: &Request<'_>) -> (String, String) {
    let mut query: Vec<(String, String)> = request
        .query
        .iter()
        .map(|(k, v)| (uri_encode(k), uri_encode(v)))
        .collect();
    query.sort();
    let query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    // Header names lower-cased and sorted; repeated names joined by commas
    // in the order given; values with runs of spaces collapsed.
    let mut headers: Vec<(String, String)> = Vec::new();
    for (name, value) in request.headers {
        let name = name.to_ascii_lowercase();
        let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
        match headers.iter_mut().find(|(n, _)| *n == name) {
            Some((_, joined)) => {
                joined.push(',');
                joined.push_str(&value);
            }
            None => headers.push((name, value)),
        }
    }
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    let canonical_headers: String = headers.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let signed = headers
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical = format!(
        "{}\n{}\n{query}\n{canonical_headers}\n{signed}\n{}",
        request.method,
        request.path,
        sha256_hex(request.body)
    );
    (canonical, signed)
}

/// What is signed: the algorithm, time, scope and the canonical request's hash.
pub fn string_to_sign(scope: &Scope<'_>, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{}\n{}\n{}",
        scope.amz_date,
        scope.credential_scope(),
        sha256_hex(canonical_request.as_bytes())
    )
}

/// The key for one day, region and service, derived from the secret.
pub fn signing_key(secret_access_key: &str, scope: &Scope<'_>) -> Vec<u8> {
    let date = hmac_sha256(
        format!("AWS4{secret_access_key}").as_bytes(),
        scope.date().as_bytes(),
    );
    let region = hmac_sha256(&date, scope.region.as_bytes());
    let service = hmac_sha256(&region, scope.service.as_bytes());
    hmac_sha256(&service, b"aws4_request")
}

/// The `Authorization` header value for `request`.
pub fn authorization(
    credentials: &Credentials,
    scope: &Scope<'_>,
    request: &Request<'_>,
) -> String {
    let (canonical, signed_headers) = canonical_request(request);
    let to_sign = string_to_sign(scope, &canonical);
    let key = signing_key(&credentials.secret_access_key, scope);
    let signature = hex::encode(hmac_sha256(&key, to_sign.as_bytes()));
    format!(
        "{ALGORITHM} Credential={}/{}, SignedHeaders={signed_headers}, Signature={signature}",
        credentials.access_key_id,
        scope.credential_scope()
    )
}

#[cfg(test)]
mod tests {
    //! Vectors of AWS's Signature Version 4 test suite (key AKIDEXAMPLE,
    //! 2015-08-30T12:36:00Z, us-east-1, service "service").
    use super::*;

    const HOST: (&str, &str) = ("Host", "example.amazonaws.com");
    const DATE: (&str, &str) = ("X-Amz-Date", "20150830T123600Z");

    fn example_credentials() -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        }
    }

    fn scope() -> Scope<'static> {
        Scope {
            amz_date: "20150830T123600Z",
            region: "us-east-1",
            service: "service",
        }
    }

    fn signed(request: Request<'_>) -> String {
        authorization(&example_credentials(), &scope(), &request)
    }

    #[test]
    fn get_vanilla() {
        let request = Request {
            method: "GET",
            path: "/",
            query: &[],
            headers: &[HOST, DATE],
            body: b"",
        };
        assert_eq!(
            signed(request),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn get_vanilla_query_order_key_case_sorts_the_query() {
        let request = Request {
            method: "GET",
            path: "/",
            query: &[("Param2", "value2"), ("Param1", "value1")],
            headers: &[HOST, DATE],
            body: b"",
        };
        assert!(signed(request).ends_with(
            "Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        ));
    }

    #[test]
    fn post_x_www_form_urlencoded_signs_the_body_and_its_type() {
        let request = Request {
            method: "POST",
            path: "/",
            query: &[],
            headers: &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                HOST,
                DATE,
            ],
            body: b"Param1=value1",
        };
        let (canonical, signed_headers) = canonical_request(&request);
        assert_eq!(signed_headers, "content-type;host;x-amz-date");
        assert_eq!(
            string_to_sign(&scope(), &canonical),
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n\
             42a5e5bb34198acb3e84da4f085bb7927f2bc277ca766e6d19c73c2154021281"
        );
        assert!(signed(request).ends_with(
            "Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
        ));
    }

    #[test]
    fn the_time_and_escapes_are_in_aws_form() {
        assert_eq!(amz_date(1_440_938_160), "20150830T123600Z");
        assert_eq!(uri_encode("a b/c~d"), "a%20b%2Fc~d");
        assert_eq!(uri_encode("é"), "%C3%A9");
    }
}
