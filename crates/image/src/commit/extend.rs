//! The new image made from the base's: its config extended (the new
//! layer's diff_id, a history entry, the creation time, the `--change`
//! instructions; every other field kept, unknown ones included) and its
//! manifest (the base's layers plus the new one, of the base's kind).
//! No IO: the push reads the base and sends what this builds.

use bytes::Bytes;
use serde_json::{Map, Value, json};
use wharf_oci::manifest::{DOCKER_IMAGE_CONFIG, DOCKER_MANIFEST, OCI_IMAGE_CONFIG, OCI_MANIFEST};
use wharf_oci::{Digest, DigestAlgorithm, ParsedManifest};

use super::CommitPush;
use crate::{Compression, ImageError};

/// Docker's gzip layer type, used when a Docker manifest stays Docker.
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// `created_by` of the history entry a commit adds.
const CREATED_BY: &str = "wharf commit";

/// The base image as the registry holds it: its platform manifest (raw and
/// parsed) and config (raw).
pub(super) struct Base {
    pub manifest: ParsedManifest,
    pub manifest_json: Value,
    pub config: Bytes,
}

/// The base config with the new layer's diff_id, a history entry, the new
/// creation time and the changes applied; every other field kept as it is.
pub(super) fn new_config(
    base: &[u8],
    push: &CommitPush<'_>,
) -> Result<(Vec<u8>, Digest), ImageError> {
    let invalid = |reason: &str| ImageError::InvalidConfig {
        image: push.base.to_string(),
        reason: reason.to_string(),
    };
    let mut config: Value = serde_json::from_slice(base).map_err(|e| invalid(&e.to_string()))?;
    let root = config
        .as_object_mut()
        .ok_or_else(|| invalid("the config is no JSON object"))?;
    let diff_ids = root
        .get_mut("rootfs")
        .and_then(|r| r.get_mut("diff_ids"))
        .and_then(Value::as_array_mut)
        .ok_or_else(|| invalid("the config has no rootfs.diff_ids"))?;
    diff_ids.push(Value::String(push.layer.diff_id.to_string()));
    let mut entry = Map::new();
    entry.insert("created".into(), json!(push.created));
    entry.insert("created_by".into(), json!(CREATED_BY));
    if let Some(author) = push.author {
        entry.insert("author".into(), json!(author));
    }
    if let Some(message) = push.message {
        entry.insert("comment".into(), json!(message));
    }
    match root.get_mut("history").and_then(Value::as_array_mut) {
        Some(history) => history.push(Value::Object(entry)),
        None => {
            root.insert("history".into(), Value::Array(vec![Value::Object(entry)]));
        }
    }
    root.insert("created".into(), json!(push.created));
    if let Some(author) = push.author {
        root.insert("author".into(), json!(author));
    }
    let container = root
        .entry("config".to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !container.is_object() {
        *container = Value::Object(Map::new());
    }
    push.changes
        .apply(container.as_object_mut().expect("made an object above"));
    let bytes = serde_json::to_vec(&config)
        .map_err(|e| ImageError::Internal(format!("encode the commit's config: {e}")))?;
    let digest = Digest::of(DigestAlgorithm::Sha256, &bytes);
    Ok((bytes, digest))
}

/// The new manifest's media type and bytes: Docker schema 2 if the base is
/// and the layer is gzip (Docker has no zstd layers), else OCI. The base
/// layers' descriptors are kept as the base manifest has them (with their
/// annotations), their Docker media types renamed to OCI's in an OCI
/// manifest.
pub(super) fn new_manifest(
    base: &Base,
    push: &CommitPush<'_>,
    config_digest: &Digest,
    config_size: u64,
) -> Result<(&'static str, Vec<u8>), ImageError> {
    let docker =
        base.manifest.media_type == DOCKER_MANIFEST && push.layer.compression == Compression::Gzip;
    let (manifest_type, config_type, layer_type) = if docker {
        (DOCKER_MANIFEST, DOCKER_IMAGE_CONFIG, DOCKER_LAYER_GZIP)
    } else {
        (
            OCI_MANIFEST,
            OCI_IMAGE_CONFIG,
            push.layer.media_type.as_str(),
        )
    };
    let mut layers: Vec<Value> = base
        .manifest_json
        .get("layers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !docker {
        for layer in &mut layers {
            if let Some(media_type) = layer.get("mediaType").and_then(Value::as_str)
                && let Some(oci) = oci_equivalent(media_type)
            {
                layer["mediaType"] = json!(oci);
            }
        }
    }
    layers.push(json!({
        "mediaType": layer_type,
        "digest": push.layer.digest.to_string(),
        "size": push.layer.size,
    }));
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": {"mediaType": config_type, "digest": config_digest.to_string(), "size": config_size},
        "layers": layers,
    });
    let bytes = serde_json::to_vec(&manifest)
        .map_err(|e| ImageError::Internal(format!("encode the commit's manifest: {e}")))?;
    Ok((manifest_type, bytes))
}

/// The OCI media type of a Docker layer type (same bytes, same digest).
fn oci_equivalent(docker: &str) -> Option<&'static str> {
    match docker {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
            Some("application/vnd.oci.image.layer.v1.tar+gzip")
        }
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
            Some("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip")
        }
        "application/vnd.docker.image.rootfs.diff.tar" => {
            Some("application/vnd.oci.image.layer.v1.tar")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commit::{ConfigChanges, NewLayer};
    use crate::{ImageRef, Platform};

    const DIFF: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const LAYER: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    const BASE_LAYER: &str =
        "sha256:3333333333333333333333333333333333333333333333333333333333333333";

    fn layer(compression: Compression) -> NewLayer {
        NewLayer {
            path: "/nonexistent/wharf-test-layer".into(),
            digest: LAYER.parse().unwrap(),
            diff_id: DIFF.parse().unwrap(),
            size: 42,
            media_type: crate::commit::compress::oci_layer_type(compression).into(),
            compression,
        }
    }

    fn with_push<T>(
        layer: &NewLayer,
        changes: &ConfigChanges,
        f: impl FnOnce(&CommitPush<'_>) -> T,
    ) -> T {
        let base = ImageRef::parse("127.0.0.1:1/p/base:1").unwrap();
        let target = ImageRef::parse("127.0.0.1:1/p/snap:1").unwrap();
        let digest: Digest = BASE_LAYER.parse().unwrap();
        f(&CommitPush {
            base: &base,
            base_digest: &digest,
            layer,
            changes,
            author: None,
            message: Some("why"),
            created: "2026-01-02T03:04:05Z",
            target: &target,
        })
    }

    #[test]
    fn a_config_without_history_or_container_config_gets_both() {
        let base = json!({
            "architecture": Platform::host().architecture, "os": "linux",
            "config": null, "vendor": {"x": 1},
            "rootfs": {"type": "layers", "diff_ids": []},
        });
        let layer = layer(Compression::Gzip);
        let changes = ConfigChanges::parse(&["USER app".into()]).unwrap();
        let (bytes, digest) = with_push(&layer, &changes, |push| {
            new_config(&serde_json::to_vec(&base).unwrap(), push).unwrap()
        });
        assert_eq!(digest, Digest::of(DigestAlgorithm::Sha256, &bytes));
        let config: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(config["vendor"], json!({"x": 1}));
        assert_eq!(config["config"], json!({"User": "app"}));
        assert_eq!(config["rootfs"]["diff_ids"], json!([DIFF]));
        assert_eq!(
            config["history"],
            json!([{"created": "2026-01-02T03:04:05Z", "created_by": "wharf commit", "comment": "why"}])
        );
        assert!(config.get("author").is_none());
    }

    #[test]
    fn refuses_configs_without_diff_ids() {
        let layer = layer(Compression::Gzip);
        let changes = ConfigChanges::default();
        let err = with_push(&layer, &changes, |push| {
            new_config(br#"{"rootfs": {"type": "layers"}}"#, push).unwrap_err()
        });
        assert!(err.to_string().contains("rootfs.diff_ids"), "{err}");
    }

    fn base(media_type: &str, layer_type: &str) -> Base {
        let manifest_json = json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {"mediaType": "x", "digest": BASE_LAYER, "size": 1},
            "layers": [{"mediaType": layer_type, "digest": BASE_LAYER, "size": 7,
                        "annotations": {"kept": "yes"}}],
        });
        let bytes = serde_json::to_vec(&manifest_json).unwrap();
        Base {
            manifest: ParsedManifest::parse(Some(media_type), &bytes).unwrap(),
            manifest_json,
            config: Bytes::new(),
        }
    }

    fn manifest_of(base: &Base, compression: Compression) -> (&'static str, Value) {
        let layer = layer(compression);
        let changes = ConfigChanges::default();
        let config: Digest = DIFF.parse().unwrap();
        let (media_type, bytes) = with_push(&layer, &changes, |push| {
            new_manifest(base, push, &config, 9).unwrap()
        });
        (media_type, serde_json::from_slice(&bytes).unwrap())
    }

    #[test]
    fn manifests_keep_the_base_kind_unless_the_layer_needs_oci() {
        let docker = base(DOCKER_MANIFEST, DOCKER_LAYER_GZIP);
        let (kind, manifest) = manifest_of(&docker, Compression::Gzip);
        assert_eq!(kind, DOCKER_MANIFEST);
        assert_eq!(manifest["config"]["mediaType"], json!(DOCKER_IMAGE_CONFIG));
        assert_eq!(manifest["layers"][0]["mediaType"], json!(DOCKER_LAYER_GZIP));
        assert_eq!(manifest["layers"][0]["annotations"], json!({"kept": "yes"}));
        assert_eq!(
            manifest["layers"][1],
            json!({"mediaType": DOCKER_LAYER_GZIP, "digest": LAYER, "size": 42})
        );

        let (kind, manifest) = manifest_of(&docker, Compression::Zstd);
        assert_eq!(kind, OCI_MANIFEST);
        assert_eq!(manifest["config"]["mediaType"], json!(OCI_IMAGE_CONFIG));
        assert_eq!(
            manifest["layers"][0]["mediaType"],
            json!("application/vnd.oci.image.layer.v1.tar+gzip")
        );
        assert_eq!(manifest["layers"][0]["annotations"], json!({"kept": "yes"}));
        assert_eq!(
            manifest["layers"][1]["mediaType"],
            json!("application/vnd.oci.image.layer.v1.tar+zstd")
        );

        let oci = base(OCI_MANIFEST, "application/vnd.oci.image.layer.v1.tar+zstd");
        let (kind, manifest) = manifest_of(&oci, Compression::Gzip);
        assert_eq!(kind, OCI_MANIFEST);
        assert_eq!(
            manifest["layers"][1]["mediaType"],
            json!("application/vnd.oci.image.layer.v1.tar+gzip")
        );
        assert_eq!(
            manifest["config"],
            json!({"mediaType": OCI_IMAGE_CONFIG, "digest": DIFF, "size": 9})
        );
    }
}
