//! Manifest media types, parsing and the checks a registry makes before
//! storing one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Digest, Error};

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image configuration: the config of a container image.
pub const OCI_IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker's image configuration.
pub const DOCKER_IMAGE_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_SCHEMA1: [&str; 2] = [
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

/// Every manifest media type the registry stores.
pub const SUPPORTED_MEDIA_TYPES: [&str; 4] = [
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// A content descriptor (image-spec `descriptor.md`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// Digest of the referenced content.
    pub digest: Digest,
    /// Size in bytes of the referenced content.
    pub size: u64,
    /// Alternate download locations (foreign layers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Artifact type, for referrers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Platform of an index entry, kept verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
}

impl Descriptor {
    /// Whether a registry may accept a manifest without holding this layer:
    /// foreign and non-distributable layers that name their own URLs.
    fn is_external(&self) -> bool {
        !self.urls.is_empty()
            && (self.media_type.contains(".foreign.")
                || self.media_type.contains(".nondistributable."))
    }
}

/// Whether a manifest lists layers or other manifests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestKind {
    /// An image manifest (OCI or Docker schema 2): config plus layers.
    Image,
    /// An index (OCI index or Docker manifest list) of other manifests.
    Index,
}

/// A validated manifest: what the registry needs to store, link and list it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedManifest {
    /// The media type it is stored and served with.
    pub media_type: String,
    /// Image or index.
    pub kind: ManifestKind,
    /// The config blob of an image manifest.
    pub config: Option<Descriptor>,
    /// The layers of an image manifest.
    pub layers: Vec<Descriptor>,
    /// The child manifests of an index.
    pub manifests: Vec<Descriptor>,
    /// The manifest this one refers to (OCI 1.1 referrers).
    pub subject: Option<Descriptor>,
    /// The declared artifact type.
    pub artifact_type: Option<String>,
    /// Top-level annotations.
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

fn kind_of(media_type: &str) -> Option<ManifestKind> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(ManifestKind::Image),
        OCI_INDEX | DOCKER_MANIFEST_LIST => Some(ManifestKind::Index),
        _ => None,
    }
}

/// The bare media type of a `Content-Type` value (parameters dropped).
pub fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

impl ParsedManifest {
    /// Parses and validates a manifest body sent with `content_type`.
    ///
    /// The media type comes from the body's `mediaType`, else from the
    /// `Content-Type`, else from the shape of the document; when both are
    /// given they must agree.
    pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<ParsedManifest, Error> {
        let header = content_type.map(essence).filter(|ct| !ct.is_empty());
        if let Some(ct) = header.filter(|ct| DOCKER_SCHEMA1.contains(ct)) {
            return Err(Error::UnsupportedManifest(ct.to_string()));
        }
        let raw: RawManifest =
            serde_json::from_slice(body).map_err(|e| Error::InvalidManifest(e.to_string()))?;
        if raw.schema_version != Some(2) {
            return Err(Error::InvalidManifest(format!(
                "schemaVersion must be 2, got {}",
                raw.schema_version
                    .map_or("none".to_string(), |v| v.to_string())
            )));
        }
        let media_type = Self::media_type_of(&raw, header)?;
        let kind =
            kind_of(&media_type).ok_or_else(|| Error::UnsupportedManifest(media_type.clone()))?;
        let manifest = ParsedManifest {
            media_type,
            kind,
            config: raw.config,
            layers: raw.layers.unwrap_or_default(),
            manifests: raw.manifests.unwrap_or_default(),
            subject: raw.subject,
            artifact_type: raw.artifact_type,
            annotations: raw.annotations,
        };
        manifest.check_shape()?;
        Ok(manifest)
    }

    fn media_type_of(raw: &RawManifest, header: Option<&str>) -> Result<String, Error> {
        let header = header.filter(|ct| kind_of(ct).is_some());
        match (&raw.media_type, header) {
            (Some(body), Some(header)) if body != header => Err(Error::InvalidManifest(format!(
                "mediaType {body:?} does not match Content-Type {header:?}"
            ))),
            (Some(body), _) => Ok(body.clone()),
            (None, Some(header)) => Ok(header.to_string()),
            (None, None) if raw.manifests.is_some() => Ok(OCI_INDEX.to_string()),
            (None, None) if raw.config.is_some() => Ok(OCI_MANIFEST.to_string()),
            (None, None) => Err(Error::InvalidManifest(
                "cannot tell the manifest's media type: no mediaType, Content-Type, config or manifests".into(),
            )),
        }
    }

    fn check_shape(&self) -> Result<(), Error> {
        match self.kind {
            ManifestKind::Image => {
                if self.config.is_none() {
                    return Err(Error::InvalidManifest(
                        "image manifest has no config".into(),
                    ));
                }
                if !self.manifests.is_empty() {
                    return Err(Error::InvalidManifest(
                        "image manifest lists manifests".into(),
                    ));
                }
            }
            ManifestKind::Index => {
                if self.config.is_some() || !self.layers.is_empty() {
                    return Err(Error::InvalidManifest(
                        "index has a config or layers".into(),
                    ));
                }
            }
        }
        let descriptors = self
            .config
            .iter()
            .chain(&self.layers)
            .chain(&self.manifests)
            .chain(&self.subject);
        if let Some(bad) = descriptors.into_iter().find(|d| d.media_type.is_empty()) {
            return Err(Error::InvalidManifest(format!(
                "descriptor {} has no mediaType",
                bad.digest
            )));
        }
        Ok(())
    }

    /// Blobs that must already be in the repository: the config and every
    /// layer except foreign ones that carry their own URLs.
    pub fn required_blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config
            .iter()
            .chain(self.layers.iter().filter(|l| !l.is_external()))
    }

    /// Manifests an index points to; they must already be in the repository.
    pub fn child_manifests(&self) -> &[Descriptor] {
        &self.manifests
    }

    /// The artifact type reported by the referrers API: `artifactType`, else
    /// the config's media type for image manifests.
    pub fn effective_artifact_type(&self) -> Option<&str> {
        self.artifact_type
            .as_deref()
            .or_else(|| self.config.as_ref().map(|c| c.media_type.as_str()))
    }
}

/// An OCI image index listing `manifests`, as the referrers API returns it.
pub fn referrers_index(manifests: Vec<Descriptor>) -> serde_json::Value {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DigestAlgorithm;

    fn digest(s: &str) -> String {
        Digest::of(DigestAlgorithm::Sha256, s.as_bytes()).to_string()
    }

    fn image(media_type: Option<&str>) -> serde_json::Value {
        let mut v = serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest("c"), "size": 1},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest("l"), "size": 2},
                {"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "digest": digest("f"), "size": 3, "urls": ["https://example.com/f"]}
            ]
        });
        if let Some(mt) = media_type {
            v["mediaType"] = mt.into();
        }
        v
    }

    #[test]
    fn parses_image_and_lists_required_blobs() {
        let body = serde_json::to_vec(&image(Some(OCI_MANIFEST))).unwrap();
        let m = ParsedManifest::parse(Some(OCI_MANIFEST), &body).unwrap();
        assert_eq!(m.kind, ManifestKind::Image);
        let required: Vec<String> = m.required_blobs().map(|d| d.digest.to_string()).collect();
        assert_eq!(required, vec![digest("c"), digest("l")]);
        assert_eq!(
            m.effective_artifact_type(),
            Some("application/vnd.oci.image.config.v1+json")
        );
    }

    #[test]
    fn media_type_falls_back_to_header_then_shape() {
        let body = serde_json::to_vec(&image(None)).unwrap();
        let m = ParsedManifest::parse(Some(DOCKER_MANIFEST), &body).unwrap();
        assert_eq!(m.media_type, DOCKER_MANIFEST);
        let m = ParsedManifest::parse(None, &body).unwrap();
        assert_eq!(m.media_type, OCI_MANIFEST);
        let index = serde_json::json!({"schemaVersion": 2, "manifests": []});
        let m = ParsedManifest::parse(None, &serde_json::to_vec(&index).unwrap()).unwrap();
        assert_eq!(m.kind, ManifestKind::Index);
    }

    #[test]
    fn header_must_agree_with_body() {
        let body = serde_json::to_vec(&image(Some(OCI_MANIFEST))).unwrap();
        assert!(matches!(
            ParsedManifest::parse(Some(DOCKER_MANIFEST), &body),
            Err(Error::InvalidManifest(_))
        ));
        // Parameters and unrelated generic types are ignored.
        assert!(
            ParsedManifest::parse(
                Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
                &body
            )
            .is_ok()
        );
        assert!(ParsedManifest::parse(Some("application/json"), &body).is_ok());
    }

    #[test]
    fn rejects_bad_documents() {
        let cases: Vec<(Option<&str>, Vec<u8>)> = vec![
            (None, b"not json".to_vec()),
            (None, b"{\"schemaVersion\": 1}".to_vec()),
            (Some(DOCKER_SCHEMA1[1]), b"{}".to_vec()),
            (None, serde_json::to_vec(&image(Some("application/vnd.example+json"))).unwrap()),
            (
                None,
                serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []})).unwrap(),
            ),
            (
                None,
                serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
                    {"mediaType": OCI_MANIFEST, "digest": "sha256:nothex", "size": 1}
                ]}))
                .unwrap(),
            ),
            (
                None,
                serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
                    {"mediaType": OCI_MANIFEST, "digest": digest("x"), "size": -1}
                ]}))
                .unwrap(),
            ),
        ];
        for (ct, body) in cases {
            assert!(
                ParsedManifest::parse(ct, &body).is_err(),
                "{} accepted",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn subject_and_artifact_type_are_kept() {
        let mut v = image(Some(OCI_MANIFEST));
        v["artifactType"] = "application/vnd.example.sbom".into();
        v["subject"] =
            serde_json::json!({"mediaType": OCI_MANIFEST, "digest": digest("s"), "size": 9});
        let m = ParsedManifest::parse(None, &serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(m.subject.unwrap().digest.to_string(), digest("s"));
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.example.sbom")
        );
    }
}
