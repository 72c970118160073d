//! Reading manifests: one or more YAML (or JSON) documents, as `kubectl
//! apply -f` takes them. Fields Wharf does not know are reported, never
//! silently dropped.

use serde::Deserialize;

use crate::{
    Cluster, ConfigMap, CostBudget, Deployment, HorizontalPodAutoscaler, MachineClass, ObjectError,
    ObjectMeta, PersistentVolumeClaim, Pool, PoolGrant, Secret, Service,
};

/// An object read from a manifest.
#[derive(Clone, Debug, PartialEq)]
pub enum Manifest {
    /// An `apps/v1` Deployment.
    Deployment(Box<Deployment>),
    /// A `v1` ConfigMap.
    ConfigMap(Box<ConfigMap>),
    /// A `v1` Secret (`stringData` already merged into `data`).
    Secret(Box<Secret>),
    /// A `v1` PersistentVolumeClaim (status dropped: the cluster sets it).
    PersistentVolumeClaim(Box<PersistentVolumeClaim>),
    /// A `v1` Service (`type: ClusterIP`).
    Service(Box<Service>),
    /// An `autoscaling/v2` HorizontalPodAutoscaler (status dropped: the
    /// autoscaler sets it).
    HorizontalPodAutoscaler(Box<HorizontalPodAutoscaler>),
    /// A `wharf.io/v1` PoolGrant: cluster-wide, in no project.
    PoolGrant(Box<PoolGrant>),
    /// A `wharf.io/v1` Cluster of the inventory (cluster-wide).
    Cluster(Box<Cluster>),
    /// A `wharf.io/v1` Pool (cluster-wide; status dropped: the cluster
    /// sets it).
    Pool(Box<Pool>),
    /// A `wharf.io/v1` MachineClass (cluster-wide).
    MachineClass(Box<MachineClass>),
    /// A `wharf.io/v1` CostBudget: cluster-wide, named after the project
    /// it budgets (status dropped: the cluster sets it).
    CostBudget(Box<CostBudget>),
}

impl Manifest {
    /// The object's kind, as in `kind:`.
    pub fn kind(&self) -> &'static str {
        match self {
            Manifest::Deployment(_) => "Deployment",
            Manifest::ConfigMap(_) => "ConfigMap",
            Manifest::Secret(_) => "Secret",
            Manifest::PersistentVolumeClaim(_) => "PersistentVolumeClaim",
            Manifest::Service(_) => "Service",
            Manifest::HorizontalPodAutoscaler(_) => "HorizontalPodAutoscaler",
            Manifest::PoolGrant(_) => "PoolGrant",
            Manifest::Cluster(_) => "Cluster",
            Manifest::Pool(_) => "Pool",
            Manifest::MachineClass(_) => "MachineClass",
            Manifest::CostBudget(_) => "CostBudget",
        }
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Manifest::Deployment(d) => &d.metadata,
            Manifest::ConfigMap(c) => &c.metadata,
            Manifest::Secret(s) => &s.metadata,
            Manifest::PersistentVolumeClaim(c) => &c.metadata,
            Manifest::Service(s) => &s.metadata,
            Manifest::HorizontalPodAutoscaler(h) => &h.metadata,
            Manifest::PoolGrant(g) => &g.metadata,
            Manifest::Cluster(c) => &c.metadata,
            Manifest::Pool(p) => &p.metadata,
            Manifest::MachineClass(c) => &c.metadata,
            Manifest::CostBudget(b) => &b.metadata,
        }
    }

    /// The object's metadata, to change.
    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Manifest::Deployment(d) => &mut d.metadata,
            Manifest::ConfigMap(c) => &mut c.metadata,
            Manifest::Secret(s) => &mut s.metadata,
            Manifest::PersistentVolumeClaim(c) => &mut c.metadata,
            Manifest::Service(s) => &mut s.metadata,
            Manifest::HorizontalPodAutoscaler(h) => &mut h.metadata,
            Manifest::PoolGrant(g) => &mut g.metadata,
            Manifest::Cluster(c) => &mut c.metadata,
            Manifest::Pool(p) => &mut p.metadata,
            Manifest::MachineClass(c) => &mut c.metadata,
            Manifest::CostBudget(b) => &mut b.metadata,
        }
    }

    /// Whether the object is cluster-wide (the inventory kinds), so it
    /// belongs to no project.
    pub fn is_cluster_wide(&self) -> bool {
        matches!(
            self,
            Manifest::Cluster(_)
                | Manifest::Pool(_)
                | Manifest::MachineClass(_)
                | Manifest::PoolGrant(_)
                | Manifest::CostBudget(_)
        )
    }
}

/// A manifest document and the fields in it that were not understood.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedManifest {
    /// The object.
    pub manifest: Manifest,
    /// Paths of unknown fields, e.g. `spec.template.spec.containers.0.stdin`.
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
        let in_document =
            |e: ObjectError| ObjectError::Parse(format!("document {}: {e}", index + 1));
        let manifest = match (meta.api_version.as_str(), meta.kind.as_str()) {
            ("apps/v1", "Deployment") => {
                let (deployment, unknown_fields) = read::<Deployment>(value, index)?;
                deployment.validate().map_err(in_document)?;
                ParsedManifest {
                    manifest: Manifest::Deployment(Box::new(deployment)),
                    unknown_fields,
                }
            }
            ("v1", "ConfigMap") => {
                let (config_map, unknown_fields) = read::<ConfigMap>(value, index)?;
                config_map.validate().map_err(in_document)?;
                ParsedManifest {
                    manifest: Manifest::ConfigMap(Box::new(config_map)),
                    unknown_fields,
                }
            }
            ("v1", "Secret") => {
                let (mut secret, unknown_fields) = read::<Secret>(value, index)?;
                secret.normalize();
                secret.validate().map_err(in_document)?;
                ParsedManifest {
                    manifest: Manifest::Secret(Box::new(secret)),
                    unknown_fields,
                }
            }
            ("v1", "PersistentVolumeClaim") => {
                let (mut claim, unknown_fields) = read::<PersistentVolumeClaim>(value, index)?;
                claim.normalize();
                claim.validate().map_err(in_document)?;
                ParsedManifest {
                    manifest: Manifest::PersistentVolumeClaim(Box::new(claim)),
                    unknown_fields,
                }
            }
            ("v1", "Service") => {
                let (service, unknown_fields) = read::<Service>(value, index)?;
                service.validate().map_err(in_document)?;
                ParsedManifest {
                    manifest: Manifest::Service(Box::new(service)),
                    unknown_fields,
                }
            }
            ("autoscaling/v2", "HorizontalPodAutoscaler") => {
                let (mut hpa, unknown_fields) = read::<HorizontalPodAutoscaler>(value, index)?;
                hpa.status = Default::default();
                hpa.validate().map_err(in_document)?;
                ParsedManifest {
                    manifest: Manifest::HorizontalPodAutoscaler(Box::new(hpa)),
                    unknown_fields,
                }
            }
            ("wharf.io/v1", "Cluster") => {
                let (cluster, unknown_fields) = read::<Cluster>(value, index)?;
                cluster.validate().map_err(in_document)?;
                ParsedManifest {
                    manifest: Manifest::Cluster(Box::new(cluster)),
                    unknown_fields,
                }
            }
            ("wharf.io/v1", "Pool") => {
                let (mut pool, unknown_fields) = read::<Pool>(value, index)?;
                pool.status = Default::default();
                pool.validate().map_err(in_document)?;
                ParsedManifest {
                    manifest: Manifest::Pool(Box::new(pool)),
                    unknown_fields,
                }
            }
            ("wharf.io/v1", "MachineClass") => {
                let (class, unknown_fields) = read::<MachineClass>(value, index)?;
                class.validate().map_err(in_document)?;
                ParsedManifest {
                    manifest: Manifest::MachineClass(Box::new(class)),
                    unknown_fields,
                }
            }
            ("wharf.io/v1", "PoolGrant") => {
                let (mut grant, unknown_fields) = read::<PoolGrant>(value, index)?;
                grant.normalize_and_validate().map_err(in_document)?;
                ParsedManifest {
                    manifest: Manifest::PoolGrant(Box::new(grant)),
                    unknown_fields,
                }
            }
            ("wharf.io/v1", "CostBudget") => {
                let (mut budget, unknown_fields) = read::<CostBudget>(value, index)?;
                budget.status = Default::default();
                budget.normalize_and_validate().map_err(in_document)?;
                ParsedManifest {
                    manifest: Manifest::CostBudget(Box::new(budget)),
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

/// Fields Wharf does not honour yet that change security, identity or data
/// wherever they appear (pod or container level): a manifest setting one is
/// refused with the field named, never run without it. Other unknown fields
/// (`schedulerName`, `lifecycle.stopSignal`, ...) are reported as ignored.
/// docs/workloads.md lists what is honoured, field by field.
const REFUSED_FIELDS: &[&str] = &[
    // Who the process is and what it may do. `securityContext`'s settings
    // Wharf honours are typed, so only the others (seLinuxOptions, sysctls,
    // ...) reach this list; `hostPID`, `hostIPC` and `hostNetwork` are
    // typed too and checked against the project's `allowPrivileged` at apply.
    "securityContext",
    "hostUsers",
    "shareProcessNamespace",
    "runtimeClassName",
    "serviceAccountName",
    "serviceAccount",
    "automountServiceAccountToken",
    "imagePullSecrets",
    "hostname",
    "subdomain",
    "setHostnameAsFQDN",
    "hostAliases",
    // What it runs besides the containers Wharf knows.
    "initContainers",
    "ephemeralContainers",
    // Its data and configuration. `volumes` and `volumeMounts` are read
    // (crate::volume); listed here so that a volume type or mount field
    // Wharf does not declare (`projected`, `nfs`, `subPathExpr`, ...) is refused by path instead of ignored.
    "volumes",
    "volumeMounts",
    "volumeDevices",
    // Resources beyond cpu and memory (ephemeral-storage, devices, claims).
    "resources",
    "resourceClaims",
    "overhead",
];

/// Output-only metadata a manifest exported from a cluster carries
/// (`kubectl create --dry-run -o yaml` writes `creationTimestamp: null`):
/// the server sets its own, so these are dropped without a word.
const OUTPUT_ONLY: &[&str] = &[
    "status",
    "metadata.creationTimestamp",
    "spec.template.metadata.creationTimestamp",
];

/// Deserializes `value`, collecting the paths of fields it ignored; fails
/// naming every ignored field that would change security, identity or
/// data ([`REFUSED_FIELDS`]) unless it is set to its default.
pub(crate) fn read<T: serde::de::DeserializeOwned>(
    value: serde_norway::Value,
    index: usize,
) -> Result<(T, Vec<String>), ObjectError> {
    let mut unknown = Vec::new();
    let mut refused = Vec::new();
    let object = serde_ignored::deserialize(value.clone(), |path| {
        // serde_ignored writes `?` for a step into an `Option`; YAML has no such step.
        let path = path.to_string().replace(".?.", ".");
        if OUTPUT_ONLY
            .iter()
            .any(|prefix| path == *prefix || path.starts_with(&format!("{prefix}.")))
        {
            return;
        }
        let set = refused_settings(&path, &value);
        if set.is_empty() {
            unknown.push(path);
        } else {
            refused.extend(set);
        }
    })
    .map_err(|e| ObjectError::Parse(format!("document {}: {e}", index + 1)))?;
    if !refused.is_empty() {
        return Err(ObjectError::Unsupported {
            document: index + 1,
            fields: refused,
        });
    }
    Ok((object, unknown))
}

/// The settings that make the ignored field at `path` (dotted, sequence
/// indices as numbers) one to refuse: none unless it is a
/// [`REFUSED_FIELDS`] one; else each part of its value that is not the
/// default (`securityContext.runAsUser`, not the whole `securityContext`).
fn refused_settings(path: &str, document: &serde_norway::Value) -> Vec<String> {
    let segments: Vec<&str> = path.split('.').collect();
    if !segments.iter().any(|s| REFUSED_FIELDS.contains(s)) {
        return Vec::new();
    }
    let key = segments.last().copied().unwrap_or_default();
    let mut set = Vec::new();
    if let Some(value) = lookup(document, &segments) {
        non_defaults(path, key, value, &mut set);
    }
    set
}

/// Pushes `path` (or, in a mapping, the paths of its entries) where
/// `value` is not the default.
fn non_defaults(path: &str, key: &str, value: &serde_norway::Value, out: &mut Vec<String>) {
    match value {
        serde_norway::Value::Mapping(map) => {
            for (k, v) in map {
                let k = k.as_str().unwrap_or_default();
                non_defaults(&format!("{path}.{k}"), k, v, out);
            }
        }
        _ if is_default(key, Some(value)) => {}
        _ => out.push(path.to_string()),
    }
}

/// The value at `segments` in `document`, if any.
fn lookup<'v>(
    document: &'v serde_norway::Value,
    segments: &[&str],
) -> Option<&'v serde_norway::Value> {
    segments
        .iter()
        .try_fold(document, |value, segment| match value {
            serde_norway::Value::Sequence(items) => items.get(segment.parse::<usize>().ok()?),
            serde_norway::Value::Mapping(map) => map.get(*segment),
            _ => None,
        })
}

/// Whether `value`, set for field `key`, asks for nothing beyond
/// Kubernetes' default: null, false, empty, the `default` service account,
/// or a mapping of such. `allowPrivilegeEscalation: false` is a restriction,
/// not the default, so it counts as set.
fn is_default(key: &str, value: Option<&serde_norway::Value>) -> bool {
    use serde_norway::Value;
    match value {
        None | Some(Value::Null) => true,
        Some(Value::Bool(false)) => key != "allowPrivilegeEscalation",
        Some(Value::String(text)) => {
            text.is_empty()
                || (matches!(key, "serviceAccountName" | "serviceAccount") && text == "default")
        }
        Some(Value::Sequence(items)) => items.is_empty(),
        Some(Value::Mapping(map)) => map
            .iter()
            .all(|(k, v)| is_default(k.as_str().unwrap_or_default(), Some(v))),
        Some(_) => false,
    }
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
          terminationMessagePath: /dev/termination-log
status: {}
---
"#;

    #[test]
    fn reads_a_kubernetes_deployment_as_is() {
        let parsed = parse_manifests(SEED).unwrap();
        assert_eq!(parsed.len(), 1);
        let Manifest::Deployment(deployment) = &parsed[0].manifest else {
            panic!("a deployment");
        };
        assert_eq!(deployment.metadata.project.as_deref(), Some("shop"));
        assert_eq!(deployment.spec.replicas, 3);
        let container = &deployment.spec.template.spec.containers[0];
        assert_eq!(container.ports[0].container_port, 80);
        assert_eq!(container.args, vec!["-f", "-p", "80"]);
        assert_eq!(
            parsed[0].unknown_fields,
            vec!["spec.template.spec.containers.0.terminationMessagePath"]
        );
    }

    #[test]
    fn reads_probes_and_refuses_invalid_ones_by_field() {
        let probes = "          livenessProbe:\n            httpGet: {path: /healthz, port: 80}\n            periodSeconds: 1\n          readinessProbe:\n            exec: {command: [cat, /tmp/ready]}\n";
        let text = SEED.replace(
            "          terminationMessagePath: /dev/termination-log\n",
            probes,
        );
        let parsed = parse_manifests(&text).unwrap();
        assert!(
            parsed[0].unknown_fields.is_empty(),
            "{:?}",
            parsed[0].unknown_fields
        );
        let Manifest::Deployment(deployment) = &parsed[0].manifest else {
            panic!("a deployment");
        };
        let container = &deployment.spec.template.spec.containers[0];
        let liveness = container.liveness_probe.as_ref().unwrap();
        assert_eq!(liveness.period_seconds, Some(1));
        assert_eq!(
            container
                .readiness_probe
                .as_ref()
                .unwrap()
                .exec
                .as_ref()
                .unwrap()
                .command,
            ["cat", "/tmp/ready"]
        );
        assert!(deployment.validate().is_ok());
        let grpc = text.replace("httpGet: {path: /healthz, port: 80}", "grpc: {port: 9000}");
        let err = parse_manifests(&grpc).unwrap_err().to_string();
        assert!(
            err.contains("spec.template.spec.containers[0].livenessProbe.grpc: gRPC probes"),
            "{err}"
        );
    }

    #[test]
    fn takes_kubernetes_forms_of_quantities_and_exported_metadata() {
        let text = SEED
            .replace(
                "limits: {cpu: \"1\", memory: 128Mi}",
                "limits: {cpu: 2, memory: 1073741824}",
            )
            .replace(
                "requests: {cpu: 250m, memory: 64Mi}",
                "requests: {cpu: 0.5, memory: 64Mi}",
            )
            .replace("  name: web\n", "  name: web\n  creationTimestamp: null\n")
            .replace(
                "    metadata:\n      labels",
                "    metadata:\n      creationTimestamp: null\n      labels",
            );
        let parsed = parse_manifests(&text).unwrap();
        let Manifest::Deployment(deployment) = &parsed[0].manifest else {
            panic!("a deployment");
        };
        let resources = &deployment.spec.template.spec.containers[0].resources;
        assert_eq!(resources.limits.amounts("limits").unwrap(), (2000, 1 << 30));
        assert_eq!(
            resources.requests.amounts("requests").unwrap(),
            (500, 64 << 20)
        );
        assert_eq!(
            parsed[0].unknown_fields,
            vec!["spec.template.spec.containers.0.terminationMessagePath"]
        );
        let negative = SEED.replace("limits: {cpu: \"1\"", "limits: {cpu: -1");
        let err = parse_manifests(&negative).unwrap_err().to_string();
        assert!(err.contains("limits.cpu"), "{err}");
    }

    /// `field: value` added to the pod spec (`pod`) or the container.
    fn with(pod: bool, field: &str) -> String {
        let (anchor, indent) = if pod {
            ("      nodeSelector:", "      ")
        } else {
            ("          command:", "          ")
        };
        SEED.replace(anchor, &format!("{indent}{field}\n{anchor}"))
    }

    #[test]
    fn refuses_fields_that_change_security_identity_or_data() {
        let cases = [
            (
                true,
                "hostAliases: [{ip: 10.0.0.1, hostnames: [db]}]",
                "spec.template.spec.hostAliases",
            ),
            (
                true,
                "securityContext: {seLinuxOptions: {level: \"s0:c1\"}}",
                "spec.template.spec.securityContext.seLinuxOptions.level",
            ),
            (
                true,
                "securityContext: {runAsUser: 1000, sysctls: [{name: a, value: b}]}",
                "spec.template.spec.securityContext.sysctls",
            ),
            (
                true,
                "volumes: [{name: v, persistentVolumeClaim: {claimName: c, fsType: ext4}}]",
                "spec.template.spec.volumes.0.persistentVolumeClaim.fsType",
            ),
            (
                true,
                "volumes: [{name: v, configMap: {name: c, items: [{key: k, path: p, x: 1}]}}]",
                "spec.template.spec.volumes.0.configMap.items.0.x",
            ),
            (
                true,
                "volumes: [{name: v, projected: {defaultMode: 256}}]",
                "spec.template.spec.volumes.0.projected.defaultMode",
            ),
            (
                true,
                "serviceAccountName: builder",
                "spec.template.spec.serviceAccountName",
            ),
            (
                true,
                "imagePullSecrets: [{name: pull}]",
                "spec.template.spec.imagePullSecrets",
            ),
            (
                true,
                "initContainers: [{name: i, image: busybox}]",
                "spec.template.spec.initContainers",
            ),
            (
                false,
                "securityContext: {procMount: Unmasked}",
                "containers.0.securityContext.procMount",
            ),
            (
                false,
                "securityContext: {appArmorProfile: {type: Unconfined}}",
                "containers.0.securityContext.appArmorProfile.type",
            ),
            (
                false,
                "securityContext: {windowsOptions: {runAsUserName: u}}",
                "containers.0.securityContext.windowsOptions.runAsUserName",
            ),
            (
                false,
                "volumeMounts: [{name: v, mountPath: /data, subPathExpr: $(POD)}]",
                "containers.0.volumeMounts.0.subPathExpr",
            ),
            (
                false,
                "volumeDevices: [{name: v, devicePath: /dev/xvda}]",
                "containers.0.volumeDevices",
            ),
        ];
        for (pod, field, path) in cases {
            let err = parse_manifests(&with(pod, field)).unwrap_err();
            let ObjectError::Unsupported { fields, .. } = &err else {
                panic!("{field}: {err}");
            };
            assert!(
                fields.iter().any(|f| f.contains(path)),
                "{field}: {fields:?}"
            );
            assert!(err.to_string().contains("not supported by Wharf"), "{err}");
        }
        let claim = with(
            true,
            "volumes: [{name: v, persistentVolumeClaim: {claimName: c, readOnly: true}}]",
        );
        let parsed = parse_manifests(&claim).unwrap();
        let Manifest::Deployment(deployment) = &parsed[0].manifest else {
            panic!("a deployment");
        };
        let spec = &deployment.spec.template.spec;
        let volume = spec.volumes[0].persistent_volume_claim.as_ref().unwrap();
        assert_eq!((volume.claim_name.as_str(), volume.read_only), ("c", true));
        assert_eq!(spec.claim_names(), ["c"]);
        let pinned = with(true, "nodeName: n1");
        let err = parse_manifests(&pinned).unwrap_err().to_string();
        assert!(err.contains("spec.template.spec.nodeName"), "{err}");
        let env = SEED.replace(
            "- {name: MODE, value: prod}",
            "- {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}",
        );
        let parsed = parse_manifests(&env).unwrap();
        assert!(parsed[0].unknown_fields.iter().all(|f| !f.contains("env")));
        let limits = SEED.replace(
            "limits: {cpu: \"1\"",
            "limits: {ephemeral-storage: 1Gi, cpu: \"1\"",
        );
        let err = parse_manifests(&limits).unwrap_err().to_string();
        assert!(err.contains("resources.limits.ephemeral-storage"), "{err}");
        let two = with(
            true,
            "runtimeClassName: kata\n      shareProcessNamespace: true",
        );
        let err = parse_manifests(&two).unwrap_err().to_string();
        assert!(
            err.contains("runtimeClassName") && err.contains("shareProcessNamespace"),
            "{err}"
        );
    }

    #[test]
    fn config_volumes_are_read_and_their_objects_readable_by_the_node() {
        let volumes = "volumes: [{name: conf, configMap: {name: app, defaultMode: 0400, \
                       items: [{key: mode, path: conf/mode, mode: 0600}]}}, \
                       {name: creds, secret: {secretName: db, optional: true}}]";
        let parsed = parse_manifests(&with(true, volumes)).unwrap();
        let Manifest::Deployment(deployment) = &parsed[0].manifest else {
            panic!("a deployment");
        };
        let spec = &deployment.spec.template.spec;
        let conf = spec.volumes[0].config_map.as_ref().unwrap();
        assert_eq!(conf.default_mode, Some(0o400));
        assert_eq!(conf.items[0].mode, Some(0o600));
        assert!(spec.volumes.iter().all(|v| v.is_projected()));
        let refs: Vec<String> = spec.config_refs().iter().map(|r| r.to_string()).collect();
        assert_eq!(refs, ["configmap \"app\"", "secret \"db\""]);
        let escape = with(
            true,
            "volumes: [{name: c, configMap: {name: app, items: [{key: k, path: ../k}]}}]",
        );
        let err = parse_manifests(&escape).unwrap_err().to_string();
        assert!(err.contains("configMap.items[0].path"), "{err}");
    }

    #[test]
    fn env_sources_are_read_and_checked() {
        let env = "- {name: MODE, value: prod}";
        let sources = "- {name: A, valueFrom: {configMapKeyRef: {name: app, key: mode, optional: true}}}\n            \
                       - {name: B, valueFrom: {secretKeyRef: {name: db, key: password}}}\n            \
                       - {name: C, valueFrom: {fieldRef: {fieldPath: \"metadata.labels['app']\"}}}\n            \
                       - {name: D, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}\n          \
                       envFrom: [{prefix: APP_, configMapRef: {name: app}}, {secretRef: {name: db, optional: true}}]";
        let parsed = parse_manifests(&SEED.replace(env, sources)).unwrap();
        let Manifest::Deployment(deployment) = &parsed[0].manifest else {
            panic!("a deployment");
        };
        let spec = &deployment.spec.template.spec;
        let container = &spec.containers[0];
        assert_eq!(container.env.len(), 4);
        assert_eq!(container.env_from[0].prefix.as_deref(), Some("APP_"));
        let refs: Vec<String> = spec.config_refs().iter().map(|r| r.to_string()).collect();
        assert_eq!(refs, ["configmap \"app\"", "secret \"db\""]);
        for (bad, field) in [
            (
                "- {name: A, valueFrom: {fieldRef: {fieldPath: status.phase}}}",
                "env[0].valueFrom.fieldRef.fieldPath",
            ),
            (
                "- {name: A, value: x, valueFrom: {fieldRef: {fieldPath: metadata.name}}}",
                "env[0].valueFrom",
            ),
            ("- {name: A, valueFrom: {}}", "env[0].valueFrom"),
            (
                "- {name: A, valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: 1Mi}}}",
                "resourceFieldRef.divisor",
            ),
            (
                "- {name: A, valueFrom: {resourceFieldRef: {containerName: other, resource: limits.cpu}}}",
                "resourceFieldRef.containerName",
            ),
            (
                "- {name: A, valueFrom: {configMapKeyRef: {name: app, key: \"a/b\"}}}",
                "configMapKeyRef.key",
            ),
            (
                "[]\n          envFrom: [{configMapRef: {name: a}, secretRef: {name: b}}]",
                "envFrom[0]",
            ),
        ] {
            let err = parse_manifests(&SEED.replace(env, bad))
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{bad}: {err}");
        }
    }

    #[test]
    fn defaults_of_refused_fields_are_accepted() {
        // What `kubectl get -o yaml` writes for a plain pod template.
        for (pod, field) in [
            (true, "securityContext: {sysctls: []}"),
            (true, "shareProcessNamespace: false"),
            (true, "serviceAccountName: default"),
            (false, "securityContext: {seLinuxOptions: {}}"),
        ] {
            let parsed =
                parse_manifests(&with(pod, field)).unwrap_or_else(|e| panic!("{field}: {e}"));
            assert!(
                !parsed[0].unknown_fields.is_empty(),
                "{field} is still reported"
            );
        }
        // Read now, so no longer unknown.
        for (pod, field) in [(true, "volumes: []"), (false, "volumeMounts: []")] {
            let parsed =
                parse_manifests(&with(pod, field)).unwrap_or_else(|e| panic!("{field}: {e}"));
            let unknown = &parsed[0].unknown_fields;
            assert!(!unknown.iter().any(|f| f.contains("olume")), "{unknown:?}");
        }
        // Not refused, only reported: it changes nothing a process can do.
        let parsed = parse_manifests(&with(true, "schedulerName: other")).unwrap();
        assert!(
            parsed[0]
                .unknown_fields
                .contains(&"spec.template.spec.schedulerName".to_string())
        );
        // Read now: honoured, or refused by validation.
        let parsed = parse_manifests(&with(true, "dnsPolicy: Default")).unwrap();
        let unknown = &parsed[0].unknown_fields;
        assert!(
            !unknown.iter().any(|f| f.contains("dnsPolicy")),
            "{unknown:?}"
        );
    }

    #[test]
    fn security_contexts_are_read_as_typed_fields() {
        let text = with(
            true,
            "hostPID: true\n      securityContext: {runAsUser: 1000, fsGroup: 2000, supplementalGroups: [4000], seccompProfile: {type: RuntimeDefault}}",
        )
        .replace(
            "          command:",
            "          securityContext: {readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}}\n          command:",
        );
        let parsed = parse_manifests(&text).unwrap();
        assert!(
            !parsed[0]
                .unknown_fields
                .iter()
                .any(|f| f.contains("securityContext") || f.contains("hostPID")),
            "{:?}",
            parsed[0].unknown_fields
        );
        let Manifest::Deployment(deployment) = &parsed[0].manifest else {
            panic!("a deployment: {:?}", parsed[0].manifest);
        };
        let spec = &deployment.spec.template.spec;
        let effective = spec.security_of(&spec.containers[0]);
        assert_eq!(effective.run_as_user, Some(1000));
        assert_eq!(effective.supplemental_groups, [4000, 2000]);
        assert!(effective.read_only_root_filesystem && effective.no_new_privileges());
        assert_eq!(effective.capabilities, ["CAP_NET_BIND_SERVICE"]);
        assert!(effective.host_pid);
        assert_eq!(
            spec.privileged_settings("spec.template.spec"),
            ["spec.template.spec.hostPID"]
        );
        let unknown_cap = text.replace("add: [NET_BIND_SERVICE]", "add: [NET_BIND]");
        let err = parse_manifests(&unknown_cap).unwrap_err().to_string();
        assert!(
            err.contains("containers[0].securityContext.capabilities.add[0]"),
            "{err}"
        );
    }

    #[test]
    fn reads_volumes_and_mounts_and_checks_them() {
        let text = with(
            true,
            "volumes: [{name: cache, emptyDir: {medium: Memory, sizeLimit: 32Mi}}, {name: logs, hostPath: {path: /srv/logs, type: DirectoryOrCreate}}]",
        )
        .replace(
            "          command:",
            "          volumeMounts: [{name: cache, mountPath: /cache}, {name: logs, mountPath: /logs, subPath: web, readOnly: true}]\n          command:",
        );
        let parsed = parse_manifests(&text).unwrap();
        let Manifest::Deployment(deployment) = &parsed[0].manifest else {
            panic!("a deployment: {:?}", parsed[0].manifest);
        };
        let spec = &deployment.spec.template.spec;
        assert_eq!(spec.volumes.len(), 2);
        assert_eq!(
            spec.volumes[0]
                .empty_dir
                .as_ref()
                .unwrap()
                .memory_bytes("f"),
            Ok(32 << 20)
        );
        let mounts = &spec.containers[0].volume_mounts;
        assert!(mounts[1].read_only);
        assert_eq!(mounts[1].sub_path.as_deref(), Some("web"));
        let missing = text.replace("{name: cache, mountPath", "{name: cash, mountPath");
        let err = parse_manifests(&missing).unwrap_err().to_string();
        assert!(
            err.contains("spec.template.spec.containers[0].volumeMounts[0].name"),
            "{err}"
        );
    }

    #[test]
    fn reads_a_service_and_checks_it() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n\
                    spec: {selector: {app: web}, ports: [{port: 80, targetPort: http}]}\n";
        let parsed = parse_manifests(text).unwrap().remove(0);
        assert_eq!(parsed.manifest.kind(), "Service");
        assert_eq!(parsed.manifest.metadata().project.as_deref(), Some("shop"));
        let node_port = text.replace("{selector", "{type: NodePort, selector");
        let err = parse_manifests(&node_port).unwrap_err().to_string();
        assert!(err.contains("document 1: spec.type"), "{err}");
    }

    #[test]
    fn reads_a_horizontal_pod_autoscaler_and_checks_it() {
        let text = "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\n\
                    metadata: {name: web, namespace: shop}\n\
                    spec: {scaleTargetRef: {kind: Deployment, name: web}, maxReplicas: 3}\n\
                    status: {currentReplicas: 9}\n";
        let parsed = parse_manifests(text).unwrap().remove(0);
        let Manifest::HorizontalPodAutoscaler(hpa) = &parsed.manifest else {
            panic!("not an HPA: {parsed:?}");
        };
        assert_eq!(hpa.status.current_replicas, 0, "status is the cluster's");
        assert!(parsed.unknown_fields.is_empty(), "{parsed:?}");
        let stateful = text.replace("kind: Deployment", "kind: StatefulSet");
        let err = parse_manifests(&stateful).unwrap_err().to_string();
        assert!(
            err.contains("document 1: spec.scaleTargetRef.kind"),
            "{err}"
        );
    }

    #[test]
    fn refuses_other_kinds_and_bad_objects() {
        assert!(matches!(
            parse_manifests("apiVersion: v1\nkind: ReplicationController\nmetadata: {name: x}\n"),
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
