//! The image config blob (OCI image-spec `config.md`, Docker's is the same
//! shape) and the node's platform.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use wharf_oci::Digest;

/// What a container runtime needs from an image's config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `config.Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `config.Cmd`.
    pub cmd: Vec<String>,
    /// `config.Env`, `NAME=value` each.
    pub env: Vec<String>,
    /// `config.WorkingDir`, when set.
    pub working_dir: Option<String>,
    /// `config.User`, when set.
    pub user: Option<String>,
    /// `config.ExposedPorts` keys, e.g. `8080/tcp`, sorted.
    pub exposed_ports: Vec<String>,
    /// `config.Labels`.
    pub labels: BTreeMap<String, String>,
    /// `os`.
    pub os: String,
    /// `architecture`.
    pub architecture: String,
    /// `rootfs.diff_ids`: digests of the uncompressed layers, bottom first.
    pub diff_ids: Vec<Digest>,
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    config: Option<RawContainerConfig>,
    rootfs: RawRootFs,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawContainerConfig {
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct RawRootFs {
    #[serde(rename = "type")]
    kind: String,
    diff_ids: Vec<Digest>,
}

impl ImageConfig {
    /// Parses a config blob. Errors are plain text; the caller names the image.
    pub fn parse(bytes: &[u8]) -> Result<ImageConfig, String> {
        let raw: RawConfig = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if raw.rootfs.kind != "layers" {
            return Err(format!(
                "rootfs.type is {:?}, expected \"layers\"",
                raw.rootfs.kind
            ));
        }
        let config = raw.config.unwrap_or_default();
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        Ok(ImageConfig {
            entrypoint: config.entrypoint.unwrap_or_default(),
            cmd: config.cmd.unwrap_or_default(),
            env: config.env.unwrap_or_default(),
            working_dir: non_empty(config.working_dir),
            user: non_empty(config.user),
            exposed_ports: config
                .exposed_ports
                .map(|ports| ports.into_keys().collect())
                .unwrap_or_default(),
            labels: config.labels.unwrap_or_default(),
            os: raw.os,
            architecture: raw.architecture,
            diff_ids: raw.rootfs.diff_ids,
        })
    }
}

/// An `os`/`architecture`/`variant` triple as index entries describe them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// e.g. `linux`.
    pub os: String,
    /// GOARCH names: `amd64`, `arm64`, ...
    pub architecture: String,
    /// e.g. `v8` for arm64; `None` matches any variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// This machine's platform, in the names registries use (Go's).
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "loongarch64" => "loong64",
            other => other,
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: None,
        }
    }

    /// Reads an index entry's `platform` object.
    pub(crate) fn from_json(value: &serde_json::Value) -> Option<Platform> {
        serde_json::from_value(value.clone()).ok()
    }

    /// Whether an index entry for `offered` can run here. Variants count only
    /// when both sides name one, and arm64's default variant is `v8`.
    pub(crate) fn accepts(&self, offered: &Platform) -> bool {
        let variant_ok = match (&self.variant, &offered.variant) {
            (Some(ours), Some(theirs)) => ours == theirs,
            _ => true,
        };
        self.os == offered.os && self.architecture == offered.architecture && variant_ok
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_style_config() {
        let json = br#"{
            "architecture": "amd64", "os": "linux",
            "config": {"Entrypoint": ["/bin/web"], "Cmd": ["--port", "80"],
                       "Env": ["PATH=/bin"], "WorkingDir": "/srv", "User": "1000:1000",
                       "ExposedPorts": {"80/tcp": {}, "443/tcp": {}},
                       "Labels": {"team": "shop"}},
            "rootfs": {"type": "layers", "diff_ids": [
                "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]},
            "history": []
        }"#;
        let config = ImageConfig::parse(json).unwrap();
        assert_eq!(config.entrypoint, ["/bin/web"]);
        assert_eq!(config.cmd, ["--port", "80"]);
        assert_eq!(config.working_dir.as_deref(), Some("/srv"));
        assert_eq!(config.user.as_deref(), Some("1000:1000"));
        assert_eq!(config.exposed_ports, ["443/tcp", "80/tcp"]);
        assert_eq!(config.labels["team"], "shop");
        assert_eq!(config.diff_ids.len(), 1);
    }

    #[test]
    fn null_and_missing_fields_are_empty() {
        let json = br#"{"config": {"Entrypoint": null, "WorkingDir": ""},
                        "rootfs": {"type": "layers", "diff_ids": []}}"#;
        let config = ImageConfig::parse(json).unwrap();
        assert!(config.entrypoint.is_empty());
        assert_eq!(config.working_dir, None);
    }

    #[test]
    fn refuses_configs_without_layer_rootfs() {
        assert!(ImageConfig::parse(b"{}").is_err());
        let err = ImageConfig::parse(br#"{"rootfs": {"type": "x", "diff_ids": []}}"#).unwrap_err();
        assert!(err.contains("rootfs.type"), "{err}");
    }

    #[test]
    fn platform_matching_ignores_variant_unless_both_name_one() {
        let ours = Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: None,
        };
        let v8 = Platform {
            variant: Some("v8".into()),
            ..ours.clone()
        };
        assert!(ours.accepts(&v8));
        let amd = Platform {
            architecture: "amd64".into(),
            ..ours.clone()
        };
        assert!(!ours.accepts(&amd));
        assert!(
            [
                "amd64", "arm64", "386", "ppc64le", "riscv64", "s390x", "loong64"
            ]
            .contains(&Platform::host().architecture.as_str())
        );
    }
}
