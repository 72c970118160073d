use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Digest, Error};

/// Longest repository name accepted; clients cap `host/name` at 255 characters.
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A repository name such as `project/app`, validated against the
/// distribution-spec grammar, which also rules out `..`, empty components and
/// absolute paths.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepositoryName(String);

impl RepositoryName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first path component: the project the repository belongs to.
    pub fn project(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }
}

// path-component ::= [a-z0-9]+ (separator [a-z0-9]+)*, separator ::= "." | "_" | "__" | "-"+
fn is_valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let is_alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        let run_start = i;
        while i < bytes.len() && is_alnum(bytes[i]) {
            i += 1;
        }
        if i == run_start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        match bytes[i] {
            b'.' => i += 1,
            b'_' if bytes.get(i + 1) == Some(&b'_') => i += 2,
            b'_' => i += 1,
            b'-' => {
                while i < bytes.len() && bytes[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

impl FromStr for RepositoryName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > MAX_NAME_LEN || !s.split('/').all(is_valid_component) {
            return Err(Error::InvalidName(s.to_string()));
        }
        Ok(RepositoryName(s.to_string()))
    }
}

impl fmt::Display for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepositoryName({})", self.0)
    }
}

impl Serialize for RepositoryName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RepositoryName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    /// The tag as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= MAX_TAG_LEN
            && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
            && bytes[1..]
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !valid {
            return Err(Error::InvalidTag(s.to_string()));
        }
        Ok(Tag(s.to_string()))
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `<reference>` of a manifest URL: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reference {
    /// A mutable tag.
    Tag(Tag),
    /// An immutable digest.
    Digest(Digest),
}

impl FromStr for Reference {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Tags cannot contain ':', digests always do.
        if s.contains(':') {
            s.parse().map(Reference::Digest)
        } else {
            s.parse().map(Reference::Tag)
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(tag) => tag.fmt(f),
            Reference::Digest(digest) => digest.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_spec_names() {
        for good in [
            "a",
            "library/busybox",
            "my-org/team.app/api_v2",
            "a__b",
            "a---b",
            "0/1/2",
        ] {
            let name: RepositoryName = good.parse().unwrap();
            assert_eq!(name.as_str(), good);
        }
        let name: RepositoryName = "proj/app/x".parse().unwrap();
        assert_eq!(name.project(), "proj");
    }

    #[test]
    fn rejects_path_tricks_and_bad_grammar() {
        let too_long = "a".repeat(256);
        for bad in [
            "",
            "/abs",
            "trailing/",
            "a//b",
            "..",
            "a/../b",
            "./a",
            "a/.",
            "A",
            "a___b",
            "-a",
            "a-",
            "a.",
            "a b",
            "a\\b",
            "a\0b",
            "a:b",
            "a@b",
            too_long.as_str(),
        ] {
            assert!(bad.parse::<RepositoryName>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn tags_follow_grammar() {
        for good in ["latest", "v1.2.3", "_x", "A-b_c.d", &"t".repeat(128)] {
            assert!(good.parse::<Tag>().is_ok(), "{good:?} rejected");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", &"t".repeat(129), "ü"] {
            assert!(bad.parse::<Tag>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn reference_distinguishes_tag_and_digest() {
        assert!(matches!("v1".parse::<Reference>(), Ok(Reference::Tag(_))));
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(matches!(d.parse::<Reference>(), Ok(Reference::Digest(_))));
        assert!("sha256:zz".parse::<Reference>().is_err());
    }
}
