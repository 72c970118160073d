//! The label filter: `key=value` (or `key`) in a manifest's annotations or
//! in the image config's labels.

use futures_util::TryStreamExt;
use wharf_oci::{Digest, ParsedManifest, RepositoryName};

use crate::ReplicationError;
use crate::access::RegistryAccess;

/// Image configs larger than this are not read for labels.
const MAX_CONFIG: u64 = 1 << 20;

/// Whether the artifact `digest` of `repo` carries `label`.
pub(crate) async fn has_label(
    registry: &dyn RegistryAccess,
    repo: &RepositoryName,
    digest: &Digest,
    label: &str,
) -> Result<bool, ReplicationError> {
    let (key, value) = match label.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (label, None),
    };
    let matches = |found: Option<&str>| found.is_some_and(|f| value.is_none_or(|v| v == f));
    let Some(manifest) = registry.manifest(repo, digest.as_str()).await? else {
        return Ok(false);
    };
    let Ok(parsed) = ParsedManifest::parse(Some(&manifest.media_type), &manifest.bytes) else {
        return Ok(false);
    };
    if matches(
        parsed
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map(String::as_str),
    ) {
        return Ok(true);
    }
    let Some(config) = parsed.config.filter(|c| c.size <= MAX_CONFIG) else {
        return Ok(false);
    };
    let bytes: Vec<bytes::Bytes> = registry
        .read_blob(repo, &config.digest, 0)
        .await?
        .try_collect()
        .await?;
    let json: serde_json::Value = serde_json::from_slice(&bytes.concat()).unwrap_or_default();
    let found = json
        .get("config")
        .and_then(|c| c.get("Labels"))
        .and_then(|l| l.get(key))
        .and_then(|v| v.as_str());
    Ok(matches(found))
}
