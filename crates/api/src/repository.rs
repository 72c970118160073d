//! What the API says about the registry's content: repositories, their
//! artifacts (image manifests and indexes) and an artifact's details, as
//! `wharf image list|inspect` and the dashboard show them.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A repository of a project.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositorySummary {
    /// Full name, `project/path`.
    pub name: String,
    /// Top-level artifacts (not the children of an index, not referrers).
    pub artifact_count: usize,
    /// Tags.
    pub tag_count: usize,
    /// Bytes of the distinct manifests and blobs its artifacts use.
    pub size_bytes: u64,
    /// Last push or delete, unix milliseconds.
    pub updated_at: u64,
}

/// One artifact of a repository: an image manifest or an index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactSummary {
    /// Manifest digest.
    pub digest: String,
    /// Manifest media type.
    pub media_type: String,
    /// The artifact type (`config.mediaType` or `artifactType`) when it is
    /// not a container image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Bytes of the manifest and everything it uses (children of an index
    /// included), each blob counted once.
    pub size_bytes: u64,
    /// When the manifest was pushed, unix milliseconds.
    pub pushed_at: u64,
    /// Tags pointing at it, sorted.
    pub tags: Vec<String>,
    /// `os/arch[/variant]` of the image, or of each image of an index.
    pub platforms: Vec<String>,
    /// How many artifacts (signatures, SBOMs, ...) refer to it.
    pub referrer_count: usize,
}

/// One layer (or other blob) of an image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlobSummary {
    /// Blob digest.
    pub digest: String,
    /// Media type from the manifest.
    pub media_type: String,
    /// Size in bytes.
    pub size: u64,
}

/// A referrer of an artifact (a signature, an SBOM, ...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReferrerSummary {
    /// Its manifest digest.
    pub digest: String,
    /// Its artifact type, if it says one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Manifest size in bytes.
    pub size: u64,
}

/// Everything `wharf image inspect` shows about one artifact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactDetail {
    /// Repository, `project/path`.
    pub repository: String,
    /// The summary a listing shows.
    #[serde(flatten)]
    pub summary: ArtifactSummary,
    /// The config blob of an image manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<BlobSummary>,
    /// Layers of an image manifest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<BlobSummary>,
    /// Manifests of an index, with their platforms.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<ChildManifest>,
    /// Manifest annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The image configuration (`config` of the image config blob:
    /// entrypoint, cmd, env, user, labels, ...) when it is a container image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_config: Option<serde_json::Value>,
    /// When the image says it was built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Artifacts referring to this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub referrers: Vec<ReferrerSummary>,
}

/// A manifest of an index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChildManifest {
    /// Its digest.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// `os/arch[/variant]`, if the index says it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

/// Where an image's layers are in the nodes' caches (`wharf image
/// distribution`): per layer the nodes holding it, per node how much of
/// the image it holds, from what each node last reported.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageDistribution {
    /// `project/repository`.
    pub repository: String,
    /// The manifest's digest (an index's for a multi-platform image).
    pub digest: String,
    /// Every layer of the image (of all its platforms), in manifest order.
    pub layers: Vec<LayerDistribution>,
    /// Nodes holding at least one of the layers, most bytes first.
    pub nodes: Vec<NodeHolding>,
    /// Nodes whose cache is not known (no report yet, or not ready).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreported: Vec<String>,
}

/// One layer and the nodes whose cache holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LayerDistribution {
    /// The layer blob's digest.
    pub digest: String,
    /// Its compressed size.
    pub size: u64,
    /// Nodes holding it, sorted.
    pub nodes: Vec<String>,
}

/// How much of an image one node holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeHolding {
    /// The node.
    pub node: String,
    /// Its IDC (`wharf.io/idc`), if labelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idc: Option<String>,
    /// Its pool (`wharf.io/pool`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Layers of the image it holds.
    pub layers: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Whether it holds every layer (a pull there downloads nothing).
    pub complete: bool,
}

/// `os/arch[/variant]` of an OCI platform object (from an index entry or
/// an image config), `None` without an architecture.
pub fn platform_name(platform: &serde_json::Value) -> Option<String> {
    let os = platform["os"].as_str().unwrap_or("unknown");
    let arch = platform["architecture"].as_str()?;
    Some(match platform["variant"].as_str() {
        Some(variant) if !variant.is_empty() => format!("{os}/{arch}/{variant}"),
        _ => format!("{os}/{arch}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_names() {
        let arm = serde_json::json!({"os": "linux", "architecture": "arm64", "variant": "v8"});
        assert_eq!(platform_name(&arm).as_deref(), Some("linux/arm64/v8"));
        let amd = serde_json::json!({"os": "linux", "architecture": "amd64"});
        assert_eq!(platform_name(&amd).as_deref(), Some("linux/amd64"));
        assert_eq!(platform_name(&serde_json::json!({})), None);
    }
}
