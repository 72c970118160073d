//! Cluster objects as the kubectl-like commands (`apply`, `get`,
//! `describe`, `delete`, `scale`, `node`) name, find and show them.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use anyhow::{Context, Result, anyhow, bail};
use reqwest::StatusCode;
use serde_json::Value;
use wharf_api::{LabelSelector, Node, Pod, Resources, Taint, TaintEffect};

use crate::client::{ApiClient, ApiRefusal};

/// A kind of cluster object, as named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Machines; cluster-wide.
    Node,
    /// Deployments; in a project.
    Deployment,
    /// Pods; in a project.
    Pod,
    /// ConfigMaps; in a project.
    ConfigMap,
    /// Secrets; in a project.
    Secret,
    /// PersistentVolumeClaims; in a project.
    PersistentVolumeClaim,
    /// Services; in a project.
    Service,
    /// The endpoints of services; in a project.
    Endpoints,
    /// HorizontalPodAutoscalers; in a project.
    HorizontalPodAutoscaler,
}

impl Kind {
    /// Reads the plural, singular or short name, as kubectl takes them:
    /// `nodes`, `node`, `no`; `deployments`, `deployment`, `deploy`;
    /// `pods`, `pod`, `po`; `configmaps`, `configmap`, `cm`; `secrets`,
    /// `secret`; `persistentvolumeclaims`, `persistentvolumeclaim`, `pvc`;
    /// `services`, `service`, `svc`; `endpoints`, `ep`;
    /// `horizontalpodautoscalers`, `horizontalpodautoscaler`, `hpa`.
    pub fn parse(text: &str) -> Result<Kind, String> {
        match text.to_ascii_lowercase().as_str() {
            "nodes" | "node" | "no" => Ok(Kind::Node),
            "deployments" | "deployment" | "deploy" | "deployments.apps" | "deployment.apps" => {
                Ok(Kind::Deployment)
            }
            "pods" | "pod" | "po" => Ok(Kind::Pod),
            "configmaps" | "configmap" | "cm" => Ok(Kind::ConfigMap),
            "secrets" | "secret" => Ok(Kind::Secret),
            "persistentvolumeclaims" | "persistentvolumeclaim" | "pvc" => {
                Ok(Kind::PersistentVolumeClaim)
            }
            "services" | "service" | "svc" => Ok(Kind::Service),
            "endpoints" | "ep" => Ok(Kind::Endpoints),
            "horizontalpodautoscalers" | "horizontalpodautoscaler" | "hpa" => {
                Ok(Kind::HorizontalPodAutoscaler)
            }
            _ => Err(format!(
                "unknown resource type {text:?}: use nodes (no), deployments (deploy), pods (po), \
                 configmaps (cm), secrets, persistentvolumeclaims (pvc), services (svc), \
                 endpoints (ep) or horizontalpodautoscalers (hpa)"
            )),
        }
    }

    /// The name printed before `/NAME`: `node`, `deployment.apps`, `pod`,
    /// `configmap`, `secret`, `persistentvolumeclaim`.
    pub fn resource(self) -> &'static str {
        match self {
            Kind::Node => "node",
            Kind::Deployment => "deployment.apps",
            Kind::Pod => "pod",
            Kind::ConfigMap => "configmap",
            Kind::Secret => "secret",
            Kind::PersistentVolumeClaim => "persistentvolumeclaim",
            Kind::Service => "service",
            Kind::Endpoints => "endpoints",
            Kind::HorizontalPodAutoscaler => "horizontalpodautoscaler.autoscaling",
        }
    }

    /// The plural, for lists and API paths: `nodes`, `deployments`, ...
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Node => "nodes",
            Kind::Deployment => "deployments",
            Kind::Pod => "pods",
            Kind::ConfigMap => "configmaps",
            Kind::Secret => "secrets",
            Kind::PersistentVolumeClaim => "persistentvolumeclaims",
            Kind::Service => "services",
            Kind::Endpoints => "endpoints",
            Kind::HorizontalPodAutoscaler => "horizontalpodautoscalers",
        }
    }

    /// The API's `kind`: `Node`, `Deployment`, `Pod`, `ConfigMap`,
    /// `Secret`, `PersistentVolumeClaim`.
    pub fn api_kind(self) -> &'static str {
        match self {
            Kind::Node => "Node",
            Kind::Deployment => "Deployment",
            Kind::Pod => "Pod",
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
            Kind::PersistentVolumeClaim => "PersistentVolumeClaim",
            Kind::Service => "Service",
            Kind::Endpoints => "Endpoints",
            Kind::HorizontalPodAutoscaler => "HorizontalPodAutoscaler",
        }
    }

    /// The kind of a manifest's object; the inventory's kinds have their
    /// own commands (`wharf cluster|pool|machineclass delete`).
    pub fn of_manifest(manifest: &wharf_api::Manifest) -> Result<Kind> {
        use wharf_api::Manifest;
        Ok(match manifest {
            Manifest::Deployment(_) => Kind::Deployment,
            Manifest::ConfigMap(_) => Kind::ConfigMap,
            Manifest::Secret(_) => Kind::Secret,
            Manifest::PersistentVolumeClaim(_) => Kind::PersistentVolumeClaim,
            Manifest::Service(_) => Kind::Service,
            Manifest::HorizontalPodAutoscaler(_) => Kind::HorizontalPodAutoscaler,
            Manifest::Cluster(_) | Manifest::Pool(_) | Manifest::MachineClass(_) => bail!(
                "{} {} is inventory: delete it with `wharf {} delete {}`",
                manifest.kind().to_lowercase(),
                manifest.metadata().name,
                manifest.kind().to_lowercase(),
                manifest.metadata().name
            ),
            Manifest::CostBudget(budget) => bail!(
                "costbudget {} is set by cluster administrators: delete it with `wharf cost budget delete {}`",
                budget.metadata.name,
                budget.spec.project
            ),
            Manifest::PoolGrant(grant) => bail!(
                "poolgrant {} is inventory: revoke it with `wharf pool revoke {} {}`",
                grant.metadata.name,
                grant.spec.pool,
                grant.spec.project
            ),
        })
    }

    /// Whether objects of the kind belong to a project.
    pub fn in_project(self) -> bool {
        self != Kind::Node
    }

    /// API path of the kind's collection (`project` is ignored for nodes).
    pub fn collection_path(self, project: &str) -> Vec<&str> {
        match self {
            Kind::Node => vec!["nodes"],
            kind => vec!["projects", project, kind.plural()],
        }
    }

    /// API path of one object.
    pub fn object_path<'a>(self, project: &'a str, name: &'a str) -> Vec<&'a str> {
        let mut path = self.collection_path(project);
        path.push(name);
        path
    }
}

/// An object as printed: `deployment.apps/web`.
pub struct ObjectName<'a>(pub Kind, pub &'a str);

impl fmt::Display for ObjectName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0.resource(), self.1)
    }
}

/// The `-p` option: the project of deployments and pods.
#[derive(clap::Args, Clone, Debug)]
pub struct ProjectOption {
    /// Project (Kubernetes' namespace) of deployments, pods, configmaps
    /// and secrets.
    #[arg(short = 'p', long, env = "WHARF_PROJECT")]
    pub project: Option<String>,
}

impl ProjectOption {
    /// The project objects of `kind` are in: `-p`, else the login's default
    /// project (`default`); an empty string for nodes.
    pub fn for_kind(&self, kind: Kind, default: Option<&str>) -> Result<String> {
        if !kind.in_project() {
            return Ok(String::new());
        }
        let project = self.project.as_deref().or(default).ok_or_else(|| {
            anyhow!(
                "{} belong to a project: give -p PROJECT, set WHARF_PROJECT, \
                 or set a default with wharf project use PROJECT",
                kind.plural()
            )
        })?;
        Ok(project.to_string())
    }
}

/// The pod `logs`, `exec` and `port-forward` act on, with the options that
/// say where it is.
#[derive(clap::Args)]
pub struct PodTarget {
    #[command(flatten)]
    server: super::ServerOption,
    #[command(flatten)]
    project: ProjectOption,
    /// The pod.
    pub pod: String,
}

impl PodTarget {
    /// A client for the server, and the pod's project.
    pub fn connect(&self) -> Result<(ApiClient, String)> {
        let client = self.server.client()?;
        let project = self.project.for_kind(Kind::Pod, client.default_project())?;
        Ok((client, project))
    }
}

/// `GET` of the collection of `kind` in `project`, filtered by `selector`.
/// (A label selector in its query form, e.g. `app=web,tier!=db`.)
pub async fn list_objects(
    client: &mut ApiClient,
    kind: Kind,
    project: &str,
    selector: &Option<String>,
) -> Result<Value> {
    let query: Vec<(&str, String)> = selector
        .iter()
        .map(|selector| ("labelSelector", selector.clone()))
        .collect();
    client
        .get_with_query(&kind.collection_path(project), &query)
        .await
        .with_context(|| format!("listing {}{}", kind.plural(), place(project)))
}

/// The names, sorted, of the objects of `kind` in `project` whose labels
/// match `selector`; an error when none do.
pub async fn names_matching(
    client: &mut ApiClient,
    kind: Kind,
    project: &str,
    selector: &str,
) -> Result<Vec<String>> {
    let list = list_objects(client, kind, project, &Some(selector.to_string())).await?;
    let mut names: Vec<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    if names.is_empty() {
        bail!("no {}{} match {selector}", kind.plural(), place(project));
    }
    Ok(names)
}

/// ` in project P`, or nothing for cluster-wide kinds.
pub fn place(project: &str) -> String {
    if project.is_empty() {
        String::new()
    } else {
        format!(" in project {project}")
    }
}

/// The text of a manifest file; `-` is standard input.
pub async fn read_manifest(file: &str) -> Result<String> {
    if file == "-" {
        let read = tokio::task::spawn_blocking(|| {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map(|_| text)
        });
        return read
            .await
            .context("reading standard input")?
            .context("reading the manifest from standard input");
    }
    tokio::fs::read_to_string(file)
        .await
        .with_context(|| format!("reading the manifest {file}"))
}

/// How a manifest file is named in messages.
pub fn manifest_name(file: &str) -> &str {
    if file == "-" { "standard input" } else { file }
}

/// Whether `err` is the server saying the thing asked for does not exist.
pub fn is_not_found(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<ApiRefusal>()
            .is_some_and(|api| api.status == StatusCode::NOT_FOUND && !api.code.is_empty())
    })
}

/// Whether `err` is the server refusing the caller (not an administrator).
pub fn is_forbidden(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<ApiRefusal>()
            .is_some_and(|api| api.status == StatusCode::FORBIDDEN)
    })
}

/// The pods of every project bound to `node` (or to any node), from
/// `GET /api/v1/pods`: `None` when the caller may not list them (only
/// administrators may).
pub async fn bound_pods(client: &mut ApiClient, node: Option<&str>) -> Result<Option<Vec<Pod>>> {
    let query: Vec<(&str, String)> = node
        .map(|name| ("nodeName", name.to_string()))
        .into_iter()
        .collect();
    let answer = match client.get_with_query(&["pods"], &query).await {
        Ok(answer) => answer,
        Err(err) if is_forbidden(&err) => return Ok(None),
        Err(err) => return Err(err.context("listing the pods bound to nodes")),
    };
    let pods: Vec<Pod> = serde_json::from_value(answer["items"].clone())
        .context("the server's pod list is not what wharf expects")?;
    Ok(Some(pods))
}

/// The requests of `pods` summed per node they are bound to.
///
/// The server's `status.allocated` may lag; the control plane's own
/// allocation records are the sum of the requests of the bound pods,
/// whatever their phase, and so is this.
pub fn sum_requests(pods: &[Pod]) -> HashMap<String, Resources> {
    let mut sums: HashMap<String, Resources> = HashMap::new();
    for pod in pods {
        let Some(node) = &pod.spec.node_name else {
            continue;
        };
        // The server validated the spec; a quantity it cannot read counts as 0.
        let requests = pod.spec.requests().unwrap_or(Resources {
            pods: 1,
            ..Resources::default()
        });
        let sum = sums.entry(node.clone()).or_default();
        sum.cpu_millis = sum.cpu_millis.saturating_add(requests.cpu_millis);
        sum.memory_bytes = sum.memory_bytes.saturating_add(requests.memory_bytes);
        sum.pods = sum.pods.saturating_add(requests.pods);
    }
    sums
}

/// What is allocated on `node`: the requests of its pods when they could
/// be listed (`sums` from [`sum_requests`]), else the node's own
/// `status.allocated` if it says anything; `None` when unknown.
pub fn allocated_on(node: &Node, sums: Option<&HashMap<String, Resources>>) -> Option<Resources> {
    match sums {
        Some(sums) => Some(sums.get(&node.metadata.name).copied().unwrap_or_default()),
        None => (node.status.allocated != Resources::default()).then_some(node.status.allocated),
    }
}

/// `Ready`, `NotReady`, with `,SchedulingDisabled` when cordoned.
pub fn node_status(node: &Node) -> String {
    let ready = if node.status.ready {
        "Ready"
    } else {
        "NotReady"
    };
    if node.spec.unschedulable {
        format!("{ready},SchedulingDisabled")
    } else {
        ready.to_string()
    }
}

/// The value of a node label shown as a column, `<none>` when absent.
pub fn label_or_none(labels: &BTreeMap<String, String>, key: &str) -> String {
    labels.get(key).cloned().unwrap_or_else(none)
}

/// `<none>`, kubectl's blank.
pub fn none() -> String {
    "<none>".to_string()
}

/// A taint as kubectl writes it: `key=value:Effect`, or `key:Effect`.
pub fn taint_text(taint: &Taint) -> String {
    let effect = effect_name(taint.effect);
    if taint.value.is_empty() {
        format!("{}:{effect}", taint.key)
    } else {
        format!("{}={}:{effect}", taint.key, taint.value)
    }
}

/// The name of a taint effect.
pub fn effect_name(effect: TaintEffect) -> &'static str {
    match effect {
        TaintEffect::NoSchedule => "NoSchedule",
        TaintEffect::PreferNoSchedule => "PreferNoSchedule",
        TaintEffect::NoExecute => "NoExecute",
    }
}

/// A label selector in its query form: `app=web,tier in (a,b),!legacy`.
pub fn selector_text(selector: &LabelSelector) -> String {
    let mut terms: Vec<String> = selector
        .match_labels
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    for requirement in &selector.match_expressions {
        let key = &requirement.key;
        let values = requirement.values.join(",");
        // wharf-api does not export the operator type; its JSON names it.
        let operator = serde_json::to_value(requirement.operator).unwrap_or_default();
        terms.push(match operator.as_str().unwrap_or_default() {
            "In" => format!("{key} in ({values})"),
            "NotIn" => format!("{key} notin ({values})"),
            "DoesNotExist" => format!("!{key}"),
            _ => key.clone(),
        });
    }
    if terms.is_empty() {
        return none();
    }
    terms.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_api::parse_label_selector;

    #[test]
    fn kinds_have_plural_singular_and_short_names() {
        for (text, kind) in [
            ("nodes", Kind::Node),
            ("no", Kind::Node),
            ("Deployment", Kind::Deployment),
            ("deploy", Kind::Deployment),
            ("po", Kind::Pod),
            ("pod", Kind::Pod),
            ("pvc", Kind::PersistentVolumeClaim),
            ("PersistentVolumeClaims", Kind::PersistentVolumeClaim),
            ("persistentvolumeclaim", Kind::PersistentVolumeClaim),
            ("svc", Kind::Service),
            ("Services", Kind::Service),
            ("ep", Kind::Endpoints),
            ("endpoints", Kind::Endpoints),
            ("hpa", Kind::HorizontalPodAutoscaler),
        ] {
            assert_eq!(Kind::parse(text), Ok(kind), "{text}");
        }
        let err = Kind::parse("ingresses").unwrap_err();
        assert!(err.contains("deployments (deploy)"), "{err}");
        assert_eq!(
            ObjectName(Kind::Deployment, "web").to_string(),
            "deployment.apps/web"
        );
        assert_eq!(
            Kind::Pod.object_path("shop", "web-1"),
            ["projects", "shop", "pods", "web-1"]
        );
        assert_eq!(Kind::Node.object_path("", "n1"), ["nodes", "n1"]);
    }

    #[test]
    fn projects_are_needed_for_deployments_and_pods_only() {
        let option = ProjectOption { project: None };
        assert_eq!(option.for_kind(Kind::Node, None).unwrap(), "");
        let err = option.for_kind(Kind::Pod, None).unwrap_err().to_string();
        assert!(err.contains("-p PROJECT"), "{err}");
        assert!(err.contains("wharf project use PROJECT"), "{err}");
    }

    #[test]
    fn the_login_default_project_stands_in_for_p() {
        let none = ProjectOption { project: None };
        assert_eq!(none.for_kind(Kind::Pod, Some("shop")).unwrap(), "shop");
        let given = ProjectOption {
            project: Some("lab".into()),
        };
        assert_eq!(given.for_kind(Kind::Pod, Some("shop")).unwrap(), "lab");
    }

    #[test]
    fn selectors_print_in_query_form() {
        let text = "app=web,env in (prod,staging),gpu,!legacy,tier!=db";
        let selector = parse_label_selector(text).unwrap();
        assert_eq!(
            selector_text(&selector),
            "app=web,env in (prod,staging),gpu,!legacy,tier notin (db)"
        );
        assert_eq!(selector_text(&LabelSelector::default()), "<none>");
    }

    #[test]
    fn requests_are_summed_per_node() {
        let pod = |node: Option<&str>, cpu: &str| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p"},
                "spec": {
                    "nodeName": node,
                    "containers": [{"name": "c", "image": "i",
                        "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}}}],
                },
            }))
            .unwrap()
        };
        let sums = sum_requests(&[
            pod(Some("n1"), "500m"),
            pod(Some("n1"), "1"),
            pod(None, "2"),
        ]);
        assert_eq!(sums.len(), 1, "unbound pods reserve nothing");
        assert_eq!(
            sums["n1"],
            Resources {
                cpu_millis: 1500,
                memory_bytes: 2 << 30,
                pods: 2
            }
        );
    }
}
