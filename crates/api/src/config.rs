//! ConfigMaps and Secrets: the Kubernetes `v1` shapes, key names and size
//! limits as Kubernetes checks them, and the rule that an immutable object's
//! data never changes.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ObjectError;
use crate::meta::{ObjectMeta, check_labels, check_name};

/// The most data one ConfigMap or Secret may hold, as in Kubernetes (1 MiB).
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// The Secret type Wharf gives a Secret that names none.
pub const SECRET_TYPE_OPAQUE: &str = "Opaque";

/// Secret types that ask something of the cluster beyond holding data
/// (minting a service account token, bootstrap authentication): Wharf does
/// neither, so a Secret of such a type is refused rather than stored as
/// plain data.
const REFUSED_SECRET_TYPES: &[&str] = &[
    "kubernetes.io/service-account-token",
    "bootstrap.kubernetes.io/token",
];

/// Keys a Secret of a well-known type must have, as Kubernetes checks them.
const REQUIRED_SECRET_KEYS: &[(&str, &[&str])] = &[
    ("kubernetes.io/tls", &["tls.crt", "tls.key"]),
    ("kubernetes.io/dockerconfigjson", &[".dockerconfigjson"]),
    ("kubernetes.io/dockercfg", &[".dockercfg"]),
    ("kubernetes.io/ssh-auth", &["ssh-privatekey"]),
];

/// A ConfigMap: configuration data for pods, as text (`data`) or bytes
/// (`binaryData`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMap {
    /// `v1`.
    #[serde(default = "core_v1")]
    pub api_version: String,
    /// `ConfigMap`.
    #[serde(default = "config_map_kind")]
    pub kind: String,
    /// Name, project, labels, annotations.
    pub metadata: ObjectMeta,
    /// UTF-8 values by key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Binary values by key, base64 in YAML and JSON.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "base64_map"
    )]
    #[schemars(with = "BTreeMap<String, String>")]
    pub binary_data: BTreeMap<String, Vec<u8>>,
    /// When true, the data can never change (delete and create again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

/// A Secret: data for pods kept sealed at rest and never shown unless asked
/// for by someone allowed to read it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Secret {
    /// `v1`.
    #[serde(default = "core_v1")]
    pub api_version: String,
    /// `Secret`.
    #[serde(default = "secret_kind")]
    pub kind: String,
    /// Name, project, labels, annotations.
    pub metadata: ObjectMeta,
    /// `Opaque` (the default) or a Kubernetes type such as `kubernetes.io/tls`.
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub secret_type: String,
    /// Values by key, base64 in YAML and JSON.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "base64_map"
    )]
    #[schemars(with = "BTreeMap<String, String>")]
    pub data: BTreeMap<String, Vec<u8>>,
    /// Write-only text values, merged into `data` (winning over it) when the
    /// Secret is read: never stored or shown.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub string_data: BTreeMap<String, String>,
    /// Output only: the size in bytes of each value, when the values are
    /// withheld.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data_sizes: BTreeMap<String, usize>,
    /// When true, the data can never change (delete and create again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

// Values never reach logs through `{:?}`.
impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("metadata", &self.metadata)
            .field("type", &self.secret_type)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .field("immutable", &self.immutable)
            .finish()
    }
}

fn core_v1() -> String {
    "v1".into()
}

// By hand, not derived: an object built in code (a Secret opened from the
// store, a test's) says what it is, as one read from YAML does.
impl Default for ConfigMap {
    fn default() -> ConfigMap {
        ConfigMap {
            api_version: core_v1(),
            kind: config_map_kind(),
            metadata: ObjectMeta::default(),
            data: BTreeMap::new(),
            binary_data: BTreeMap::new(),
            immutable: None,
        }
    }
}

impl Default for Secret {
    fn default() -> Secret {
        Secret {
            api_version: core_v1(),
            kind: secret_kind(),
            metadata: ObjectMeta::default(),
            secret_type: String::new(),
            data: BTreeMap::new(),
            string_data: BTreeMap::new(),
            data_sizes: BTreeMap::new(),
            immutable: None,
        }
    }
}

fn config_map_kind() -> String {
    "ConfigMap".into()
}

fn secret_kind() -> String {
    "Secret".into()
}

impl ConfigMap {
    /// Checks the name, labels, keys (no key in both maps) and total size
    /// (keys and values, at most [`MAX_CONFIG_BYTES`]).
    pub fn validate(&self) -> Result<(), ObjectError> {
        check_name("metadata.name", &self.metadata.name)?;
        check_labels("metadata.labels", &self.metadata.labels)?;
        let mut total = 0;
        for (key, value) in &self.data {
            check_config_key("data", key)?;
            total += key.len() + value.len();
        }
        for (key, value) in &self.binary_data {
            check_config_key("binaryData", key)?;
            if self.data.contains_key(key) {
                return Err(ObjectError::invalid(
                    format!("binaryData.{key}"),
                    "the key is also in data",
                ));
            }
            total += key.len() + value.len();
        }
        check_size(total)
    }

    /// Whether `immutable: true` is set.
    pub fn is_immutable(&self) -> bool {
        self.immutable == Some(true)
    }

    /// The value of `key`, from `data` or `binaryData`.
    pub fn value(&self, key: &str) -> Option<&[u8]> {
        self.data
            .get(key)
            .map(|v| v.as_bytes())
            .or_else(|| self.binary_data.get(key).map(Vec::as_slice))
    }

    /// Every key with its value, text and binary.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &[u8])> {
        let text = self.data.iter().map(|(k, v)| (k.as_str(), v.as_bytes()));
        let binary = self
            .binary_data
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()));
        text.chain(binary)
    }

    /// Refuses replacing `self` (the stored object) by `next` when `self`
    /// is immutable and `next` changes its data or immutability.
    pub fn check_replacement(&self, next: &ConfigMap) -> Result<(), ObjectError> {
        let same = self.data == next.data && self.binary_data == next.binary_data;
        check_immutable("ConfigMap", self.is_immutable(), same, next.is_immutable())
    }
}

impl Secret {
    /// Merges `stringData` into `data` (as the API server does, `stringData`
    /// winning), drops output-only sizes and names the default type.
    pub fn normalize(&mut self) {
        for (key, value) in std::mem::take(&mut self.string_data) {
            self.data.insert(key, value.into_bytes());
        }
        self.data_sizes.clear();
        if self.secret_type.is_empty() {
            self.secret_type = SECRET_TYPE_OPAQUE.into();
        }
    }

    /// Checks the name, labels, type, keys and total size of the values (at
    /// most [`MAX_CONFIG_BYTES`]); call after [`normalize`](Secret::normalize).
    pub fn validate(&self) -> Result<(), ObjectError> {
        check_name("metadata.name", &self.metadata.name)?;
        check_labels("metadata.labels", &self.metadata.labels)?;
        if REFUSED_SECRET_TYPES.contains(&self.secret_type.as_str()) {
            return Err(ObjectError::invalid(
                "type",
                format!(
                    "{} is not supported by Wharf: it asks the cluster to mint credentials; use Opaque",
                    self.secret_type
                ),
            ));
        }
        let required = REQUIRED_SECRET_KEYS
            .iter()
            .find(|(kind, _)| *kind == self.secret_type)
            .map_or(&[][..], |(_, keys)| *keys);
        if let Some(missing) = required.iter().find(|k| !self.data.contains_key(**k)) {
            return Err(ObjectError::invalid(
                format!("data[{missing}]"),
                format!("required for type {}", self.secret_type),
            ));
        }
        let mut total = 0;
        for (key, value) in &self.data {
            check_config_key("data", key)?;
            total += value.len();
        }
        check_size(total)
    }

    /// Whether `immutable: true` is set.
    pub fn is_immutable(&self) -> bool {
        self.immutable == Some(true)
    }

    /// Refuses replacing `self` (the stored object) by `next` when `self`
    /// is immutable and `next` changes its data, type or immutability.
    pub fn check_replacement(&self, next: &Secret) -> Result<(), ObjectError> {
        let same = self.data == next.data && self.secret_type == next.secret_type;
        check_immutable("Secret", self.is_immutable(), same, next.is_immutable())
    }

    /// The Secret with its values withheld: only key names and sizes.
    pub fn withheld(mut self) -> Secret {
        self.data_sizes = self
            .data
            .iter()
            .map(|(k, v)| (k.clone(), v.len()))
            .collect();
        self.data.clear();
        self.string_data.clear();
        self
    }
}

fn check_immutable(
    kind: &str,
    immutable: bool,
    same_data: bool,
    stays_immutable: bool,
) -> Result<(), ObjectError> {
    if immutable && !same_data {
        return Err(ObjectError::invalid(
            "data",
            format!(
                "the {kind} is immutable: its data cannot change (delete it and create it again)"
            ),
        ));
    }
    if immutable && !stays_immutable {
        return Err(ObjectError::invalid(
            "immutable",
            format!("the {kind} is immutable: immutable cannot be unset"),
        ));
    }
    Ok(())
}

fn check_size(total: usize) -> Result<(), ObjectError> {
    if total > MAX_CONFIG_BYTES {
        return Err(ObjectError::invalid(
            "data",
            format!("{total} bytes of data; at most {MAX_CONFIG_BYTES} are allowed"),
        ));
    }
    Ok(())
}

/// Checks a ConfigMap or Secret key as Kubernetes does: 1-253 of
/// `[-._a-zA-Z0-9]`, not `.`, `..` or starting with `..` (keys become file
/// names in volumes, and `..data` is the volume's own link).
pub fn check_config_key(field: &str, key: &str) -> Result<(), ObjectError> {
    let valid = !key.is_empty()
        && key.len() <= 253
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        && key != "."
        && !key.starts_with("..");
    if valid {
        Ok(())
    } else {
        Err(ObjectError::invalid(
            format!("{field}.{key}"),
            format!(
                "{key:?} is not a valid key: use 1-253 letters, digits, '-', '_' and '.', not '.' or starting with '..'"
            ),
        ))
    }
}

/// Byte values as base64 strings, as Kubernetes writes `data` and
/// `binaryData`.
mod base64_map {
    use std::collections::BTreeMap;

    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<String, Vec<u8>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_map(map.iter().map(|(k, v)| (k, STANDARD.encode(v))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<String, Vec<u8>>, D::Error> {
        let text = Option::<BTreeMap<String, Option<String>>>::deserialize(deserializer)?;
        text.unwrap_or_default()
            .into_iter()
            .map(|(key, value)| {
                let value = value.unwrap_or_default();
                STANDARD
                    .decode(value.trim())
                    .map(|bytes| (key.clone(), bytes))
                    .map_err(|e| D::Error::custom(format!("{key}: not base64: {e}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Manifest, parse_manifests};

    fn config_map(yaml: &str) -> ConfigMap {
        match parse_manifests(yaml).unwrap().remove(0).manifest {
            Manifest::ConfigMap(c) => *c,
            other => panic!("{other:?}"),
        }
    }

    fn secret(yaml: &str) -> Result<Secret, ObjectError> {
        match parse_manifests(yaml)?.remove(0).manifest {
            Manifest::Secret(s) => Ok(*s),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_config_maps_and_secrets_as_kubernetes_writes_them() {
        let c = config_map(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web, namespace: shop, creationTimestamp: null}\n\
             data: {mode: prod, app.conf: \"a=1\\n\"}\nbinaryData: {blob: AAH/}\nimmutable: true\n",
        );
        assert_eq!(c.metadata.project.as_deref(), Some("shop"));
        assert_eq!(c.value("mode"), Some(&b"prod"[..]));
        assert_eq!(c.value("blob"), Some(&[0u8, 1, 255][..]));
        assert!(c.is_immutable());
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["binaryData"]["blob"], "AAH/");
        let s = secret(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: db}\ndata: {password: aHVudGVyMg==, user: YQ==}\n\
             stringData: {user: admin}\n",
        )
        .unwrap();
        assert_eq!(s.secret_type, "Opaque");
        assert_eq!(s.data["password"], b"hunter2");
        assert_eq!(s.data["user"], b"admin", "stringData wins");
        assert!(s.string_data.is_empty());
        assert!(!format!("{s:?}").contains("hunter2"));
        let withheld = s.withheld();
        assert!(withheld.data.is_empty());
        assert_eq!(withheld.data_sizes["password"], 7);
    }

    #[test]
    fn refuses_bad_keys_oversized_data_and_types_that_change_meaning() {
        for key in ["..data", ".", "a/b", "a b", ""] {
            assert!(check_config_key("data", key).is_err(), "{key:?}");
        }
        for key in ["a", ".env", "app.conf", "A_B-c.1", "a..b"] {
            check_config_key("data", key).unwrap();
        }
        let big = "x".repeat(MAX_CONFIG_BYTES);
        let c = ConfigMap {
            metadata: ObjectMeta {
                name: "big".into(),
                ..ObjectMeta::default()
            },
            data: BTreeMap::from([("k".into(), big.clone())]),
            ..ConfigMap::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("at most 1048576"), "{err}");
        let mut s = Secret {
            metadata: c.metadata.clone(),
            data: BTreeMap::from([("k".into(), big.into_bytes())]),
            ..Secret::default()
        };
        s.normalize();
        s.validate().unwrap();
        s.data.insert("j".into(), vec![0]);
        assert!(s.validate().is_err());
        let both = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {k: v}\nbinaryData: {k: AA==}\n";
        let err = parse_manifests(both).unwrap_err().to_string();
        assert!(err.contains("binaryData.k"), "{err}");
        let token = "apiVersion: v1\nkind: Secret\nmetadata: {name: t}\ntype: kubernetes.io/service-account-token\n";
        let err = secret(token).unwrap_err().to_string();
        assert!(err.contains("service-account-token"), "{err}");
        let tls = "apiVersion: v1\nkind: Secret\nmetadata: {name: t}\ntype: kubernetes.io/tls\ndata: {tls.crt: AA==}\n";
        let err = secret(tls).unwrap_err().to_string();
        assert!(err.contains("tls.key"), "{err}");
        let custom = "apiVersion: v1\nkind: Secret\nmetadata: {name: t}\ntype: example.com/thing\n";
        assert_eq!(secret(custom).unwrap().secret_type, "example.com/thing");
        let not_base64 = "apiVersion: v1\nkind: Secret\nmetadata: {name: t}\ndata: {k: \"***\"}\n";
        assert!(secret(not_base64).is_err());
    }

    #[test]
    fn immutable_objects_keep_their_data() {
        let mut old = ConfigMap {
            data: BTreeMap::from([("k".into(), "v".into())]),
            immutable: Some(true),
            ..ConfigMap::default()
        };
        let mut next = old.clone();
        next.metadata.labels.insert("a".into(), "b".into());
        old.check_replacement(&next).unwrap();
        next.data.insert("k".into(), "w".into());
        let err = old.check_replacement(&next).unwrap_err().to_string();
        assert!(err.contains("immutable"), "{err}");
        let mut unset = old.clone();
        unset.immutable = None;
        assert!(old.check_replacement(&unset).is_err());
        old.immutable = Some(false);
        old.check_replacement(&next).unwrap();
        let sealed = Secret {
            data: BTreeMap::from([("k".into(), b"v".to_vec())]),
            immutable: Some(true),
            ..Secret::default()
        };
        let mut changed = sealed.clone();
        changed.data.insert("k".into(), b"w".to_vec());
        assert!(sealed.check_replacement(&changed).is_err());
        sealed.check_replacement(&sealed.clone()).unwrap();
    }
}
