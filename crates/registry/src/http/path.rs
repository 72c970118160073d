//! Parsing `/v2/...` paths. Repository names contain slashes, so the route
//! is recognised from the end of the path, where its fixed words are.

use percent_encoding::percent_decode_str;
use wharf_oci::{Digest, Reference, RepositoryName};

use crate::RegistryError;

/// A recognised registry endpoint.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Catalog,
    /// Wharf's listing of deleted tags (`/v2/_tombstones`).
    Tombstones,
    Tags(RepositoryName),
    Manifest(RepositoryName, Reference),
    Blob(RepositoryName, Digest),
    Uploads(RepositoryName),
    Upload(RepositoryName, String),
    Referrers(RepositoryName, Digest),
}

/// `None` when the path is not a registry endpoint at all (404).
pub(crate) fn parse(path: &str) -> Option<Result<Endpoint, RegistryError>> {
    let rest = path.strip_prefix("/v2/")?;
    // Repository names start with a letter or digit, so neither can be one.
    match rest {
        "_catalog" => return Some(Ok(Endpoint::Catalog)),
        "_tombstones" => return Some(Ok(Endpoint::Tombstones)),
        _ => {}
    }
    // Names never need escaping, so only the last segment (a digest whose ':'
    // some clients escape, a tag, an upload id) is percent-decoded.
    let segments: Vec<&str> = rest.split('/').collect();
    let n = segments.len();
    let at = |i: usize| segments.get(n.wrapping_sub(i)).copied();
    let decoded = percent_decode_str(segments[n - 1])
        .decode_utf8_lossy()
        .into_owned();
    let (name_len, endpoint) = match (at(3), at(2), at(1)) {
        (_, Some("tags"), Some("list")) => (n - 2, Kind::Tags),
        (Some("blobs"), Some("uploads"), Some("")) => (n - 3, Kind::Uploads),
        (Some("blobs"), Some("uploads"), Some(_)) => (n - 3, Kind::Upload(decoded)),
        (_, Some("blobs"), Some("uploads")) => (n - 2, Kind::Uploads),
        (_, Some("blobs"), Some(_)) => (n - 2, Kind::Blob(decoded)),
        (_, Some("manifests"), Some(_)) => (n - 2, Kind::Manifest(decoded)),
        (_, Some("referrers"), Some(_)) => (n - 2, Kind::Referrers(decoded)),
        _ => return None,
    };
    if name_len == 0 {
        return None;
    }
    Some(endpoint.resolve(segments[..name_len].join("/")))
}

enum Kind {
    Tags,
    Uploads,
    Upload(String),
    Blob(String),
    Manifest(String),
    Referrers(String),
}

impl Kind {
    fn resolve(self, name: String) -> Result<Endpoint, RegistryError> {
        let name: RepositoryName = name.parse()?;
        Ok(match self {
            Kind::Tags => Endpoint::Tags(name),
            Kind::Uploads => Endpoint::Uploads(name),
            Kind::Upload(id) => Endpoint::Upload(name, id),
            Kind::Blob(digest) => Endpoint::Blob(name, digest.parse()?),
            Kind::Manifest(reference) => {
                let reference = reference.parse().map_err(|e: wharf_oci::Error| match e {
                    wharf_oci::Error::InvalidTag(_) => {
                        RegistryError::ManifestInvalid(e.to_string())
                    }
                    other => other.into(),
                })?;
                Endpoint::Manifest(name, reference)
            }
            Kind::Referrers(digest) => Endpoint::Referrers(name, digest.parse()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn ok(path: &str) -> Endpoint {
        parse(path).unwrap().unwrap()
    }

    fn name(s: &str) -> RepositoryName {
        s.parse().unwrap()
    }

    #[test]
    fn recognises_every_endpoint() {
        assert_eq!(ok("/v2/_catalog"), Endpoint::Catalog);
        assert_eq!(ok("/v2/_tombstones"), Endpoint::Tombstones);
        assert_eq!(ok("/v2/a/b/tags/list"), Endpoint::Tags(name("a/b")));
        assert_eq!(ok("/v2/a/blobs/uploads/"), Endpoint::Uploads(name("a")));
        assert_eq!(ok("/v2/a/blobs/uploads"), Endpoint::Uploads(name("a")));
        assert_eq!(
            ok("/v2/a/blobs/uploads/xyz"),
            Endpoint::Upload(name("a"), "xyz".into())
        );
        assert_eq!(
            ok(&format!("/v2/a/blobs/{D}")),
            Endpoint::Blob(name("a"), D.parse().unwrap())
        );
        assert_eq!(
            ok(&format!("/v2/a/blobs/{}", D.replace(':', "%3A"))),
            Endpoint::Blob(name("a"), D.parse().unwrap())
        );
        assert_eq!(
            ok("/v2/a/manifests/v1"),
            Endpoint::Manifest(name("a"), "v1".parse().unwrap())
        );
        assert_eq!(
            ok(&format!("/v2/x/referrers/{D}")),
            Endpoint::Referrers(name("x"), D.parse().unwrap())
        );
    }

    #[test]
    fn names_may_contain_route_words() {
        assert_eq!(
            ok("/v2/manifests/blobs/manifests/latest"),
            Endpoint::Manifest(name("manifests/blobs"), "latest".parse().unwrap())
        );
        assert_eq!(
            ok("/v2/a/blobs/blobs/uploads/"),
            Endpoint::Uploads(name("a/blobs"))
        );
    }

    #[test]
    fn rejects_tricks_and_unknown_paths() {
        assert!(parse("/v2/a/unknown/x").is_none());
        assert!(parse("/v2/manifests/latest").is_none());
        assert!(parse("/v3/a/tags/list").is_none());
        for bad in [
            "/v2/../etc/manifests/latest",
            "/v2/a/%2e%2e/b/manifests/latest",
            "/v2/a%2Fb/manifests/latest",
            "/v2//a/manifests/latest",
            "/v2/A/manifests/latest",
        ] {
            assert!(
                matches!(parse(bad), Some(Err(RegistryError::NameInvalid(_)))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse("/v2/a/blobs/sha256:zz"),
            Some(Err(RegistryError::DigestInvalid(_)))
        ));
        assert!(matches!(
            parse("/v2/a/manifests/bad@tag"),
            Some(Err(RegistryError::ManifestInvalid(_)))
        ));
    }
}
