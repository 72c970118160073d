//! Image references: `registry[:port]/repository[:tag][@digest]`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use wharf_oci::{Digest, Reference, RepositoryName, Tag};

use crate::ImageError;

const DEFAULT_TAG: &str = "latest";

/// A fully qualified image reference, such as `127.0.0.1:7700/shop/web:1.0`
/// or `registry.lan/shop/web@sha256:…`.
///
/// The registry host is mandatory: nodes pull only from registries named
/// explicitly, never from an implied default such as Docker Hub.
///
/// ```
/// use wharf_image::ImageRef;
/// let image = ImageRef::parse("127.0.0.1:7700/shop/web").unwrap();
/// assert_eq!(image.registry(), "127.0.0.1:7700");
/// assert_eq!(image.repository().as_str(), "shop/web");
/// assert_eq!(image.to_string(), "127.0.0.1:7700/shop/web:latest");
/// assert!(ImageRef::parse("shop/web:1.0").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    registry: String,
    repository: RepositoryName,
    tag: Option<Tag>,
    digest: Option<Digest>,
}

impl ImageRef {
    /// Parses a reference whose registry host may be left out (`shop/web:1`),
    /// in which case it is `default_registry` (`host[:port]`), if given.
    pub fn parse_with_default_registry(
        text: &str,
        default_registry: Option<&str>,
    ) -> Result<ImageRef, ImageError> {
        let names_host = text
            .split_once('/')
            .is_some_and(|(first, _)| looks_like_host(first));
        match default_registry {
            Some(registry) if !names_host => ImageRef::parse(&format!("{registry}/{text}")),
            _ => ImageRef::parse(text),
        }
    }

    /// Parses a reference; a missing tag and digest means tag `latest`.
    pub fn parse(text: &str) -> Result<ImageRef, ImageError> {
        let invalid = |reason: &str| ImageError::InvalidReference {
            reference: text.to_string(),
            reason: reason.to_string(),
        };
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => (
                rest,
                Some(
                    digest
                        .parse::<Digest>()
                        .map_err(|e| invalid(&e.to_string()))?,
                ),
            ),
            None => (text, None),
        };
        let (registry, path) = rest
            .split_once('/')
            .filter(|(host, _)| looks_like_host(host))
            .ok_or_else(|| invalid("it names no registry host (write host[:port]/repository)"))?;
        check_host(registry).map_err(|reason| invalid(&reason))?;
        // A ':' after the last '/' separates the tag; earlier ones belong to no one.
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
            _ => (path, None),
        };
        let repository = repository
            .parse::<RepositoryName>()
            .map_err(|e| invalid(&e.to_string()))?;
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.parse::<Tag>().map_err(|e| invalid(&e.to_string()))?),
            (None, Some(_)) => None,
            (None, None) => Some(Tag::from_str(DEFAULT_TAG).map_err(|e| invalid(&e.to_string()))?),
        };
        Ok(ImageRef {
            registry: registry.to_string(),
            repository,
            tag,
            digest,
        })
    }

    /// The registry as `host[:port]`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry.
    pub fn repository(&self) -> &RepositoryName {
        &self.repository
    }

    /// The tag, when the reference has one.
    pub fn tag(&self) -> Option<&Tag> {
        self.tag.as_ref()
    }

    /// The digest, when the reference pins one.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to ask the registry's manifest endpoint for: the digest when
    /// pinned (it wins over a tag), else the tag.
    pub fn manifest_reference(&self) -> Reference {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => Reference::Digest(digest.clone()),
            (None, Some(tag)) => Reference::Tag(tag.clone()),
            // parse() gives every reference a tag or a digest.
            (None, None) => Reference::Tag(Tag::from_str(DEFAULT_TAG).expect("valid tag")),
        }
    }
}

/// Docker's rule: the first component is a host if it has a dot or a port,
/// or is `localhost`.
fn looks_like_host(component: &str) -> bool {
    component.contains('.')
        || component.contains(':')
        || component == "localhost"
        || component.starts_with('[')
}

fn check_host(registry: &str) -> Result<(), String> {
    let (host, port) = split_port(registry);
    if let Some(port) = port
        && port.parse::<u16>().is_err()
    {
        return Err(format!("invalid port {port:?}"));
    }
    let valid_name = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    let valid_ipv6 = host.starts_with('[')
        && host.ends_with(']')
        && host[1..host.len() - 1]
            .parse::<std::net::Ipv6Addr>()
            .is_ok();
    if valid_name || valid_ipv6 {
        Ok(())
    } else {
        Err(format!("invalid registry host {host:?}"))
    }
}

/// `host` and `port` of `host[:port]` (IPv6 hosts in brackets).
pub(crate) fn split_port(registry: &str) -> (&str, Option<&str>) {
    match registry.rfind(':') {
        Some(i) if !registry[i..].contains(']') => (&registry[..i], Some(&registry[i + 1..])),
        _ => (registry, None),
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImageRef({self})")
    }
}

impl FromStr for ImageRef {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

impl Serialize for ImageRef {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ImageRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ImageRef::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_without_a_host_go_to_the_default_registry() {
        let parse = |text: &str| {
            ImageRef::parse_with_default_registry(text, Some("10.0.0.1:7700"))
                .unwrap()
                .to_string()
        };
        assert_eq!(parse("shop/web:1"), "10.0.0.1:7700/shop/web:1");
        assert_eq!(
            parse("127.0.0.1:7700/shop/web:1"),
            "127.0.0.1:7700/shop/web:1"
        );
        assert_eq!(
            parse("registry.example.com/a/b"),
            "registry.example.com/a/b:latest"
        );
        assert_eq!(parse("localhost/a"), "localhost/a:latest");
        assert!(ImageRef::parse_with_default_registry("shop/web:1", None).is_err());
    }

    const DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_registry_repository_and_tag() {
        let image = ImageRef::parse("127.0.0.1:7700/shop/web:1.0").unwrap();
        assert_eq!(image.registry(), "127.0.0.1:7700");
        assert_eq!(image.repository().as_str(), "shop/web");
        assert_eq!(image.tag().map(Tag::as_str), Some("1.0"));
        assert_eq!(image.digest(), None);
        assert_eq!(image.to_string(), "127.0.0.1:7700/shop/web:1.0");
    }

    #[test]
    fn defaults_to_latest_and_accepts_hosts_without_port() {
        let image = ImageRef::parse("registry.lan/web").unwrap();
        assert_eq!(image.to_string(), "registry.lan/web:latest");
        let image = ImageRef::parse("localhost/a/b/c:v2").unwrap();
        assert_eq!(image.repository().as_str(), "a/b/c");
        let image = ImageRef::parse("[::1]:5000/a:b").unwrap();
        assert_eq!(image.registry(), "[::1]:5000");
    }

    #[test]
    fn digest_wins_over_tag() {
        let image = ImageRef::parse(&format!("h.lan:1/p/a:1.0@{DIGEST}")).unwrap();
        assert_eq!(image.manifest_reference().to_string(), DIGEST);
        let image = ImageRef::parse(&format!("h.lan:1/p/a@{DIGEST}")).unwrap();
        assert_eq!(image.tag(), None);
        assert_eq!(image.to_string(), format!("h.lan:1/p/a@{DIGEST}"));
    }

    #[test]
    fn refuses_references_without_host_or_with_bad_parts() {
        for bad in [
            "web",
            "shop/web:1.0",
            "library/busybox",
            "h.lan/",
            "h.lan/UPPER",
            "h.lan/a/../b",
            "h.lan:99999/a",
            "h_x.lan/a",
            "h.lan/a:bad/tag",
            "h.lan/a:",
            "h.lan/a@sha256:abc",
            "",
        ] {
            let err = ImageRef::parse(bad).expect_err(bad);
            assert!(err.to_string().contains("invalid image reference"), "{err}");
        }
    }

    #[test]
    fn round_trips_through_serde() {
        let image = ImageRef::parse("127.0.0.1:1/a:b").unwrap();
        let json = serde_json::to_string(&image).unwrap();
        assert_eq!(json, "\"127.0.0.1:1/a:b\"");
        assert_eq!(serde_json::from_str::<ImageRef>(&json).unwrap(), image);
    }
}
