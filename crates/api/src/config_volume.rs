//! `configMap` and `secret` volumes: the keys of a ConfigMap or Secret as
//! files, chosen with `items` and given `defaultMode` or each item's mode,
//! as Kubernetes projects them. The agent writes them (and rewrites them
//! when the object changes); this module only holds their shape and checks.

use std::collections::BTreeSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ObjectError;
use crate::meta::check_name;
use crate::volume::check_relative;

/// Mode of a projected file without `defaultMode` or an item `mode`: 0644,
/// as Kubernetes.
pub const DEFAULT_FILE_MODE: u32 = 0o644;

/// `configMap` volume: the keys of ConfigMap `name` as files.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapVolume {
    /// The ConfigMap, in the pod's project.
    pub name: String,
    /// The keys to project and where; unset: every key at its own name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<KeyToPath>,
    /// Mode of the files (0644 when unset).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "file_mode"
    )]
    pub default_mode: Option<u32>,
    /// Start the pod (with an empty volume) when the ConfigMap or an item's
    /// key is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// `secret` volume: the keys of Secret `secretName` as files, on a tmpfs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretVolume {
    /// The Secret, in the pod's project.
    pub secret_name: String,
    /// The keys to project and where; unset: every key at its own name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<KeyToPath>,
    /// Mode of the files (0644 when unset).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "file_mode"
    )]
    pub default_mode: Option<u32>,
    /// Start the pod (with an empty volume) when the Secret or an item's
    /// key is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// One key of the object, written at `path` in the volume.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyToPath {
    /// The key.
    pub key: String,
    /// Relative path of the file in the volume, without `..`.
    pub path: String,
    /// Mode of this file, instead of the volume's `defaultMode`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "file_mode"
    )]
    pub mode: Option<u32>,
}

/// A mode as a number, or as YAML 1.1 octal (`0644`, which the YAML 1.2
/// reader sees as a string; kubectl's reader takes it as octal).
fn file_mode<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Mode {
        Number(u32),
        Text(String),
    }
    let Some(mode) = Option::<Mode>::deserialize(de)? else {
        return Ok(None);
    };
    match mode {
        Mode::Number(n) => Ok(Some(n)),
        Mode::Text(text) => {
            let octal = text.strip_prefix("0o").or_else(|| text.strip_prefix('0'));
            octal
                .and_then(|digits| u32::from_str_radix(digits, 8).ok())
                .map(Some)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!("{text:?} is not an octal file mode"))
                })
        }
    }
}

/// Which keys a volume projects: the view both volume kinds share.
#[derive(Clone, Copy, Debug)]
pub struct Projection<'a> {
    /// `items`.
    pub items: &'a [KeyToPath],
    /// `defaultMode`.
    pub default_mode: Option<u32>,
    /// `optional`.
    pub optional: bool,
}

impl ConfigMapVolume {
    /// The keys it projects.
    pub fn projection(&self) -> Projection<'_> {
        Projection {
            items: &self.items,
            default_mode: self.default_mode,
            optional: self.optional == Some(true),
        }
    }
}

impl SecretVolume {
    /// The keys it projects.
    pub fn projection(&self) -> Projection<'_> {
        Projection {
            items: &self.items,
            default_mode: self.default_mode,
            optional: self.optional == Some(true),
        }
    }
}

/// A file of a projected volume: relative path, content and mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectedFile {
    /// Relative path in the volume.
    pub path: String,
    /// Content.
    pub data: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

impl Projection<'_> {
    /// The files for an object with `entries` (`None`: it does not exist).
    /// `Err` says what is missing, as kubelet's mount error does.
    pub fn files(
        &self,
        what: &str,
        entries: Option<Vec<(String, Vec<u8>)>>,
    ) -> Result<Vec<ProjectedFile>, String> {
        let default_mode = self.default_mode.unwrap_or(DEFAULT_FILE_MODE);
        let Some(entries) = entries else {
            return if self.optional {
                Ok(Vec::new())
            } else {
                Err(format!("{what} not found"))
            };
        };
        if self.items.is_empty() {
            return Ok(entries
                .into_iter()
                .map(|(path, data)| ProjectedFile {
                    path,
                    data,
                    mode: default_mode,
                })
                .collect());
        }
        let mut files = Vec::new();
        for item in self.items {
            match entries.iter().find(|(key, _)| *key == item.key) {
                Some((_, data)) => files.push(ProjectedFile {
                    path: item.path.clone(),
                    data: data.clone(),
                    mode: item.mode.unwrap_or(default_mode),
                }),
                None if self.optional => {}
                None => return Err(format!("couldn't find key {} in {what}", item.key)),
            }
        }
        Ok(files)
    }

    /// Checks `items` and modes at `field` (e.g. `spec.volumes[0].configMap`).
    pub(crate) fn validate(&self, field: &str) -> Result<(), ObjectError> {
        check_mode(&format!("{field}.defaultMode"), self.default_mode)?;
        let mut paths = BTreeSet::new();
        for (i, item) in self.items.iter().enumerate() {
            let at = format!("{field}.items[{i}]");
            if item.key.is_empty() {
                return Err(ObjectError::invalid(format!("{at}.key"), "must be set"));
            }
            check_relative(&format!("{at}.path"), &item.path)?;
            // `..data` and its timestamped siblings belong to the writer.
            if item.path.starts_with("..") {
                return Err(ObjectError::invalid(
                    format!("{at}.path"),
                    "must not start with '..'",
                ));
            }
            if !paths.insert(item.path.trim_end_matches('/')) {
                return Err(ObjectError::invalid(
                    format!("{at}.path"),
                    format!("{} is written twice", item.path),
                ));
            }
            check_mode(&format!("{at}.mode"), item.mode)?;
        }
        Ok(())
    }
}

fn check_mode(field: &str, mode: Option<u32>) -> Result<(), ObjectError> {
    match mode {
        Some(mode) if mode > 0o777 => Err(ObjectError::invalid(
            field,
            format!("{mode} is not a file mode: use 0 to 0777 (511)"),
        )),
        _ => Ok(()),
    }
}

impl ConfigMapVolume {
    pub(crate) fn validate(&self, field: &str) -> Result<(), ObjectError> {
        check_name(&format!("{field}.name"), &self.name)?;
        self.projection().validate(field)
    }
}

impl SecretVolume {
    pub(crate) fn validate(&self, field: &str) -> Result<(), ObjectError> {
        check_name(&format!("{field}.secretName"), &self.secret_name)?;
        self.projection().validate(field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(key: &str, path: &str, mode: Option<u32>) -> KeyToPath {
        KeyToPath {
            key: key.into(),
            path: path.into(),
            mode,
        }
    }

    fn entries() -> Option<Vec<(String, Vec<u8>)>> {
        Some(vec![
            ("a".into(), b"1".to_vec()),
            ("b".into(), b"2".to_vec()),
        ])
    }

    #[test]
    fn every_key_or_the_items_with_their_modes() {
        let all = ConfigMapVolume {
            name: "c".into(),
            ..Default::default()
        };
        let files = all
            .projection()
            .files("configmap \"c\"", entries())
            .unwrap();
        let paths: Vec<_> = files.iter().map(|f| (f.path.as_str(), f.mode)).collect();
        assert_eq!(paths, [("a", 0o644), ("b", 0o644)]);

        let some = ConfigMapVolume {
            name: "c".into(),
            items: vec![item("b", "conf/b.txt", Some(0o400))],
            default_mode: Some(0o440),
            ..Default::default()
        };
        let files = some.projection().files("c", entries()).unwrap();
        assert_eq!(
            files,
            [ProjectedFile {
                path: "conf/b.txt".into(),
                data: b"2".to_vec(),
                mode: 0o400
            }]
        );
    }

    #[test]
    fn missing_objects_and_keys_hold_the_pod_unless_optional() {
        let mut volume = SecretVolume {
            secret_name: "s".into(),
            items: vec![item("nope", "x", None)],
            ..Default::default()
        };
        let err = volume.projection().files("secret \"s\"", None).unwrap_err();
        assert_eq!(err, "secret \"s\" not found");
        let err = volume
            .projection()
            .files("secret \"s\"", entries())
            .unwrap_err();
        assert_eq!(err, "couldn't find key nope in secret \"s\"");
        volume.optional = Some(true);
        assert!(volume.projection().files("s", None).unwrap().is_empty());
        assert!(
            volume
                .projection()
                .files("s", entries())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn items_are_relative_paths_and_modes_are_permission_bits() {
        let field_of = |volume: ConfigMapVolume| match volume.validate("v") {
            Err(ObjectError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        };
        let with = |items: Vec<KeyToPath>, default_mode| ConfigMapVolume {
            name: "c".into(),
            items,
            default_mode,
            optional: None,
        };
        assert!(
            with(vec![item("a", "x/a", Some(0o600))], Some(0o400))
                .validate("v")
                .is_ok()
        );
        for bad in ["/etc/a", "../a", "a/../../b", "..data", ""] {
            assert_eq!(
                field_of(with(vec![item("a", bad, None)], None)),
                "v.items[0].path",
                "{bad}"
            );
        }
        assert_eq!(
            field_of(with(vec![item("a", "x", None), item("b", "x", None)], None)),
            "v.items[1].path"
        );
        assert_eq!(
            field_of(with(vec![item("", "x", None)], None)),
            "v.items[0].key"
        );
        assert_eq!(
            field_of(with(vec![item("a", "x", Some(0o1777))], None)),
            "v.items[0].mode"
        );
        assert_eq!(field_of(with(vec![], Some(0o7777))), "v.defaultMode");
        let mut badly_named = with(vec![], None);
        badly_named.name = "Bad_Name".into();
        assert_eq!(field_of(badly_named), "v.name");
    }
}
