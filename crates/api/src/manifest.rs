//! Reading manifests: one or more YAML (or JSON) documents, as `kubectl
//! apply -f` takes them. Fields Wharf does not know are reported, never
//! silently dropped.

use serde::Deserialize;

use crate::{Deployment, ObjectError};

/// An object read from a manifest.
#[derive(Clone, Debug, PartialEq)]
pub enum Manifest {
    /// An `apps/v1` Deployment.
    Deployment(Box<Deployment>),
}

/// A manifest document and the fields in it that were not understood.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedManifest {
    /// The object.
    pub manifest: Manifest,
    /// Paths of unknown fields, e.g. `spec.template.spec.containers.0.livenessProbe`.
    pub unknown_fields: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeMeta {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
}

/// Parses every document in `text` (YAML; JSON is YAML too). Empty
/// documents are skipped. Each object is validated; the first problem is
/// returned with the document number and field.
pub fn parse_manifests(text: &str) -> Result<Vec<ParsedManifest>, ObjectError> {
    let mut parsed = Vec::new();
    for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = serde_norway::Value::deserialize(document)
            .map_err(|e| ObjectError::Parse(format!("document {}: {e}", index + 1)))?;
        if value.is_null() {
            continue;
        }
        let meta: TypeMeta = serde_norway::from_value(value.clone())
            .map_err(|e| ObjectError::Parse(format!("document {}: {e}", index + 1)))?;
        let manifest = match (meta.api_version.as_str(), meta.kind.as_str()) {
            ("apps/v1", "Deployment") => {
                let (deployment, unknown_fields) = read::<Deployment>(value, index)?;
                deployment
                    .validate()
                    .map_err(|e| ObjectError::Parse(format!("document {}: {e}", index + 1)))?;
                ParsedManifest {
                    manifest: Manifest::Deployment(Box::new(deployment)),
                    unknown_fields,
                }
            }
            ("wharf.io/v1", "IpPool") => {
                return Err(ObjectError::Parse(format!(
                    "document {}: IP pools are imported with `wharf ippool import`",
                    index + 1
                )));
            }
            _ => {
                return Err(ObjectError::UnsupportedKind {
                    kind: meta.kind,
                    api_version: meta.api_version,
                });
            }
        };
        parsed.push(manifest);
    }
    if parsed.is_empty() {
        return Err(ObjectError::Parse("no objects in the manifest".into()));
    }
    Ok(parsed)
}

/// Deserializes `value`, collecting the paths of fields it ignored.
pub(crate) fn read<T: serde::de::DeserializeOwned>(
    value: serde_norway::Value,
    index: usize,
) -> Result<(T, Vec<String>), ObjectError> {
    let mut unknown = Vec::new();
    let object = serde_ignored::deserialize(value, |path| {
        let path = path.to_string();
        // `status` is output only; a manifest copied from a cluster has one.
        if !path.starts_with("status") {
            unknown.push(path);
        }
    })
    .map_err(|e| ObjectError::Parse(format!("document {}: {e}", index + 1)))?;
    Ok((object, unknown))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app: web}
  annotations: {wharf.io/ip-pool: web-pool}
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1, maxUnavailable: "25%"}
  template:
    metadata:
      labels: {app: web}
    spec:
      nodeSelector: {wharf.io/pool: web}
      tolerations:
        - {key: dedicated, operator: Equal, value: web, effect: NoSchedule}
      containers:
        - name: web
          image: 127.0.0.1:7700/shop/web:1.0
          command: ["/bin/httpd"]
          args: ["-f", "-p", "80"]
          env:
            - {name: MODE, value: prod}
          ports:
            - containerPort: 80
          resources:
            requests: {cpu: 250m, memory: 64Mi}
            limits: {cpu: "1", memory: 128Mi}
          livenessProbe:
            httpGet: {path: /, port: 80}
status: {}
---
"#;

    #[test]
    fn reads_a_kubernetes_deployment_as_is() {
        let parsed = parse_manifests(SEED).unwrap();
        assert_eq!(parsed.len(), 1);
        let Manifest::Deployment(deployment) = &parsed[0].manifest;
        assert_eq!(deployment.metadata.project.as_deref(), Some("shop"));
        assert_eq!(deployment.spec.replicas, 3);
        let container = &deployment.spec.template.spec.containers[0];
        assert_eq!(container.ports[0].container_port, 80);
        assert_eq!(container.args, vec!["-f", "-p", "80"]);
        assert_eq!(
            parsed[0].unknown_fields,
            vec!["spec.template.spec.containers.0.livenessProbe"]
        );
    }

    #[test]
    fn refuses_other_kinds_and_bad_objects() {
        assert!(matches!(
            parse_manifests("apiVersion: v1\nkind: Service\nmetadata: {name: x}\n"),
            Err(ObjectError::UnsupportedKind { .. })
        ));
        assert!(parse_manifests("").is_err());
        assert!(parse_manifests("{not: [yaml").is_err());
        let no_selector = SEED.replace(
            "    matchLabels: {app: web}",
            "    matchLabels: {app: other}",
        );
        let err = parse_manifests(&no_selector).unwrap_err().to_string();
        assert!(err.contains("spec.template.metadata.labels"), "{err}");
        let two = format!(
            "{SEED}\n{}",
            SEED.replace("name: web\n  namespace", "name: api\n  namespace")
        );
        assert_eq!(parse_manifests(&two).unwrap().len(), 2);
    }
}
