//! A container's environment as kubelet makes it: `envFrom` sources in
//! order, then `env` (ConfigMap and Secret keys, pod fields, resource
//! amounts, `$(VAR)` expansion of literal values), then `$(VAR)` in the
//! command and arguments. The ConfigMaps and Secrets come from the control
//! plane through [`NodeApi`], fetched once per start by [`ConfigObjects`]
//! (volumes use it too).

use std::collections::HashMap;

use wharf_api::{
    ConfigMap, ConfigRef, Container, EnvVar, Pod, Resources, Secret, is_env_name, pod_field,
    resource_field,
};

use crate::AgentError;
use crate::api::NodeApi;

/// The ConfigMaps and Secrets a pod uses, as the control plane has them now
/// (`None`: it does not exist).
#[derive(Debug, Default)]
pub struct ConfigObjects {
    config_maps: HashMap<String, Option<ConfigMap>>,
    secrets: HashMap<String, Option<Secret>>,
}

impl ConfigObjects {
    /// Fetches every ConfigMap and Secret `pod` uses, for node `node`.
    pub async fn fetch(api: &dyn NodeApi, node: &str, pod: &Pod) -> Result<Self, AgentError> {
        let project = pod.metadata.project.as_deref().unwrap_or_default();
        let mut objects = ConfigObjects::default();
        for wanted in pod.spec.config_refs() {
            match wanted {
                ConfigRef::ConfigMap(name) => {
                    let found = api.config_map(node, project, &name).await?;
                    objects.config_maps.insert(name, found);
                }
                ConfigRef::Secret(name) => {
                    let found = api.secret(node, project, &name).await?;
                    objects.secrets.insert(name, found);
                }
            }
        }
        Ok(objects)
    }

    /// Adds a ConfigMap (tests and callers that have it already).
    pub fn with_config_map(mut self, config_map: ConfigMap) -> Self {
        let name = config_map.metadata.name.clone();
        self.config_maps.insert(name, Some(config_map));
        self
    }

    /// Adds a Secret.
    pub fn with_secret(mut self, secret: Secret) -> Self {
        let name = secret.metadata.name.clone();
        self.secrets.insert(name, Some(secret));
        self
    }

    /// The ConfigMap `name`, if it exists.
    pub fn config_map(&self, name: &str) -> Option<&ConfigMap> {
        self.config_maps.get(name).and_then(Option::as_ref)
    }

    /// The Secret `name`, if it exists.
    pub fn secret(&self, name: &str) -> Option<&Secret> {
        self.secrets.get(name).and_then(Option::as_ref)
    }

    /// Every key and value of the ConfigMap or Secret `wanted`.
    pub(super) fn entries(&self, wanted: &ConfigRef) -> Option<Vec<(String, Vec<u8>)>> {
        let owned = |(k, v): (&str, &[u8])| (k.to_string(), v.to_vec());
        match wanted {
            ConfigRef::ConfigMap(name) => self
                .config_map(name)
                .map(|c| c.entries().map(owned).collect()),
            ConfigRef::Secret(name) => self
                .secret(name)
                .map(|s| s.data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        }
    }

    /// The value of `key` in `wanted`: `Err` names what is missing.
    fn value(&self, wanted: &ConfigRef, key: &str) -> Result<Vec<u8>, String> {
        let entries = self
            .entries(wanted)
            .ok_or_else(|| format!("{wanted} not found"))?;
        entries
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .ok_or_else(|| format!("couldn't find key {key} in {wanted}"))
    }
}

/// A container ready to run: its environment as plain values, its command
/// and arguments expanded, and the `envFrom` keys skipped for their names.
#[derive(Debug)]
pub struct ResolvedContainer {
    /// The container with `env` resolved and `envFrom` folded in.
    pub container: Container,
    /// What was skipped of `envFrom` for names that are no valid variable
    /// names, one message per source (kubelet's event text).
    pub skipped: Vec<String>,
}

/// Resolves `container`'s environment for `pod` (whose status carries the
/// pod's and node's addresses), with `allocatable` standing in for missing
/// limits. `Err` says what is missing (never a value): the container does
/// not start (`CreateContainerConfigError`).
pub fn resolve(
    pod: &Pod,
    container: &Container,
    allocatable: Resources,
    objects: &ConfigObjects,
) -> Result<ResolvedContainer, String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut skipped = Vec::new();
    for source in &container.env_from {
        let (wanted, object) = match (&source.config_map_ref, &source.secret_ref) {
            (Some(object), _) => (ConfigRef::ConfigMap(object.name.clone()), object),
            (None, Some(object)) => (ConfigRef::Secret(object.name.clone()), object),
            (None, None) => continue,
        };
        let Some(entries) = objects.entries(&wanted) else {
            if object.optional == Some(true) {
                continue;
            }
            return Err(format!("{wanted} not found"));
        };
        let prefix = source.prefix.as_deref().unwrap_or_default();
        let mut invalid = Vec::new();
        for (key, value) in entries {
            let name = format!("{prefix}{key}");
            if is_env_name(&name) {
                set(&mut env, name, String::from_utf8_lossy(&value).into_owned());
            } else {
                invalid.push(key);
            }
        }
        if !invalid.is_empty() {
            let (kind, name) = match &wanted {
                ConfigRef::ConfigMap(name) => ("configMap", name),
                ConfigRef::Secret(name) => ("secret", name),
            };
            let project = pod.metadata.project.as_deref().unwrap_or_default();
            skipped.push(format!(
                "Keys [{}] from the EnvFrom {kind} {project}/{name} were skipped since they are \
                 considered invalid environment variable names.",
                invalid.join(", ")
            ));
        }
    }
    for var in &container.env {
        let value = match &var.value_from {
            None => expand(&var.value, &env),
            Some(source) => {
                let key_ref = source
                    .config_map_key_ref
                    .as_ref()
                    .map(|k| (ConfigRef::ConfigMap(k.name.clone()), k))
                    .or(source
                        .secret_key_ref
                        .as_ref()
                        .map(|k| (ConfigRef::Secret(k.name.clone()), k)));
                if let Some((wanted, key)) = key_ref {
                    match objects.value(&wanted, &key.key) {
                        Ok(value) => String::from_utf8_lossy(&value).into_owned(),
                        Err(_) if key.optional == Some(true) => continue,
                        Err(missing) => return Err(missing),
                    }
                } else if let Some(field) = &source.field_ref {
                    pod_field(pod, &field.field_path).map_err(|e| e.to_string())?
                } else if let Some(selector) = &source.resource_field_ref {
                    let name = selector
                        .container_name
                        .as_deref()
                        .unwrap_or(&container.name);
                    let target = pod
                        .spec
                        .containers
                        .iter()
                        .find(|c| c.name == name)
                        .ok_or_else(|| format!("no container {name} in the pod"))?;
                    resource_field(target, selector, allocatable).map_err(|e| e.to_string())?
                } else {
                    String::new()
                }
            }
        };
        set(&mut env, var.name.clone(), value);
    }
    let mut resolved = container.clone();
    resolved.command = container.command.iter().map(|c| expand(c, &env)).collect();
    resolved.args = container.args.iter().map(|a| expand(a, &env)).collect();
    resolved.env_from.clear();
    resolved.env = env
        .into_iter()
        .map(|(name, value)| EnvVar {
            name,
            value,
            value_from: None,
        })
        .collect();
    Ok(ResolvedContainer {
        container: resolved,
        skipped,
    })
}

/// Sets `name`, replacing an earlier value in place.
fn set(env: &mut Vec<(String, String)>, name: String, value: String) {
    match env.iter_mut().find(|(n, _)| *n == name) {
        Some(entry) => entry.1 = value,
        None => env.push((name, value)),
    }
}

/// Kubernetes' `$(VAR)` expansion: a defined variable is replaced, an
/// undefined one is left as written, `$$` is a literal `$`, and a `$(`
/// without its `)` stays as it is.
pub fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('(')
            && let Some(end) = tail.find(')')
        {
            let name = &tail[..end];
            match env.iter().find(|(n, _)| n == name) {
                Some((_, value)) => out.push_str(value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use wharf_api::{
        EnvFromSource, EnvVarSource, KeySelector, ObjectFieldSelector, ObjectMeta, ObjectRef,
        PodStatus, ResourceFieldSelector,
    };

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn expansion_follows_kubernetes() {
        let env = vars(&[("A", "1"), ("B", "x y")]);
        for (text, want) in [
            ("$(A)", "1"),
            ("a$(A)b$(B)", "a1bx y"),
            ("$(C)", "$(C)"),
            ("$$(A)", "$(A)"),
            ("$$", "$"),
            ("$(A", "$(A"),
            ("cost: $5", "cost: $5"),
            ("end$", "end$"),
            ("é$(A)é", "é1é"),
        ] {
            assert_eq!(expand(text, &env), want, "{text}");
        }
    }

    fn key(name: &str, key: &str, optional: bool) -> KeySelector {
        KeySelector {
            name: name.into(),
            key: key.into(),
            optional: optional.then_some(true),
        }
    }

    fn from(source: EnvVarSource) -> Option<EnvVarSource> {
        Some(source)
    }

    fn var(name: &str, value: &str, value_from: Option<EnvVarSource>) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: value.into(),
            value_from,
        }
    }

    fn pod_with(container: Container) -> Pod {
        let mut pod = Pod {
            metadata: ObjectMeta {
                name: "web-1".into(),
                project: Some("shop".into()),
                ..ObjectMeta::default()
            },
            status: PodStatus {
                pod_ip: Some("10.82.1.5".into()),
                ..PodStatus::default()
            },
            ..Pod::default()
        };
        pod.spec.containers = vec![container];
        pod
    }

    fn objects() -> ConfigObjects {
        let meta = |name: &str| ObjectMeta {
            name: name.into(),
            ..ObjectMeta::default()
        };
        ConfigObjects::default()
            .with_config_map(ConfigMap {
                metadata: meta("app"),
                data: BTreeMap::from([
                    ("MODE".into(), "prod".into()),
                    ("bad key!".into(), "x".into()),
                    ("1st".into(), "y".into()),
                ]),
                ..ConfigMap::default()
            })
            .with_secret(Secret {
                metadata: meta("db"),
                data: BTreeMap::from([("password".into(), b"hunter2".to_vec())]),
                ..Secret::default()
            })
    }

    #[test]
    fn sources_resolve_in_kubernetes_order() {
        let container = Container {
            name: "web".into(),
            command: vec!["echo".into(), "$(GREETING)".into()],
            args: vec!["$(POD_NAME)".into(), "$$(POD_NAME)".into()],
            env_from: vec![
                EnvFromSource {
                    config_map_ref: Some(ObjectRef {
                        name: "app".into(),
                        optional: None,
                    }),
                    ..EnvFromSource::default()
                },
                EnvFromSource {
                    prefix: Some("DB_".into()),
                    secret_ref: Some(ObjectRef {
                        name: "db".into(),
                        optional: None,
                    }),
                    ..EnvFromSource::default()
                },
                EnvFromSource {
                    config_map_ref: Some(ObjectRef {
                        name: "absent".into(),
                        optional: Some(true),
                    }),
                    ..EnvFromSource::default()
                },
            ],
            env: vec![
                var(
                    "POD_NAME",
                    "",
                    from(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            api_version: None,
                            field_path: "metadata.name".into(),
                        }),
                        ..EnvVarSource::default()
                    }),
                ),
                var(
                    "PASSWORD",
                    "",
                    from(EnvVarSource {
                        secret_key_ref: Some(key("db", "password", false)),
                        ..EnvVarSource::default()
                    }),
                ),
                var(
                    "MAYBE",
                    "",
                    from(EnvVarSource {
                        config_map_key_ref: Some(key("app", "nope", true)),
                        ..EnvVarSource::default()
                    }),
                ),
                var(
                    "MEMORY_MI",
                    "",
                    from(EnvVarSource {
                        resource_field_ref: Some(ResourceFieldSelector {
                            container_name: None,
                            resource: "limits.memory".into(),
                            divisor: Some("1Mi".into()),
                        }),
                        ..EnvVarSource::default()
                    }),
                ),
                var("GREETING", "hi $(POD_NAME) in $(MODE)", None),
                var("MODE", "dev", None),
            ],
            ..Container::default()
        };
        let pod = pod_with(container.clone());
        let allocatable = Resources {
            memory_bytes: 2 << 20,
            ..Resources::default()
        };
        let resolved = resolve(&pod, &container, allocatable, &objects()).unwrap();
        let env: Vec<(&str, &str)> = resolved
            .container
            .env
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(
            env,
            [
                ("MODE", "dev"),
                ("DB_password", "hunter2"),
                ("POD_NAME", "web-1"),
                ("PASSWORD", "hunter2"),
                ("MEMORY_MI", "2"),
                ("GREETING", "hi web-1 in prod"),
            ]
        );
        assert!(resolved.container.env_from.is_empty());
        assert_eq!(resolved.container.command, ["echo", "hi web-1 in prod"]);
        assert_eq!(resolved.container.args, ["web-1", "$(POD_NAME)"]);
        assert_eq!(
            resolved.skipped,
            [
                "Keys [1st, bad key!] from the EnvFrom configMap shop/app were skipped since they \
              are considered invalid environment variable names."
            ]
        );
    }

    #[test]
    fn a_missing_required_source_is_named() {
        let with_env = |source: EnvVarSource| Container {
            name: "web".into(),
            env: vec![var("X", "", Some(source))],
            ..Container::default()
        };
        let cases = [
            (
                with_env(EnvVarSource {
                    config_map_key_ref: Some(key("absent", "k", false)),
                    ..EnvVarSource::default()
                }),
                "configmap \"absent\" not found",
            ),
            (
                with_env(EnvVarSource {
                    secret_key_ref: Some(key("db", "user", false)),
                    ..EnvVarSource::default()
                }),
                "couldn't find key user in secret \"db\"",
            ),
            (
                Container {
                    name: "web".into(),
                    env_from: vec![EnvFromSource {
                        secret_ref: Some(ObjectRef {
                            name: "gone".into(),
                            optional: Some(false),
                        }),
                        ..EnvFromSource::default()
                    }],
                    ..Container::default()
                },
                "secret \"gone\" not found",
            ),
        ];
        for (container, want) in cases {
            let pod = pod_with(container.clone());
            let err = resolve(&pod, &container, Resources::default(), &objects()).unwrap_err();
            assert_eq!(err, want);
            assert!(!err.contains("hunter2"));
        }
    }
}
