//! `GET /api/v1/openapi.json`: the API described as OpenAPI 3, built from
//! the route table (so it lists exactly what is served) and from the
//! object types' JSON schemas.

use axum::Json;
use http::Method;
use serde_json::{Map, Value, json};
use wharf_api::repository::{
    ArtifactDetail, ArtifactSummary, ImageDistribution, RepositorySummary,
};
use wharf_api::{
    AlertNotification, AlertReceiver, AlertRule, Cluster, ConfigMap, CostBudget, Delivery,
    Deployment, DeploymentRevision, Endpoints, Event, FalconSample, HorizontalPodAutoscaler,
    IpPool, MachineClass, Node, PersistentVolumeClaim, Pod, PodMetrics, Pool, PoolGrant, Secret,
    Service, Silence,
};

use super::{Access, route_table};

/// The OpenAPI document.
pub(crate) async fn document() -> Json<Value> {
    // The routes and schemas are fixed at build time: build it once.
    static DOCUMENT: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    Json(DOCUMENT.get_or_init(build).clone())
}

fn build() -> Value {
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    let mut schemas = Map::new();
    for (name, schema) in [
        ("Node", generator.subschema_for::<Node>()),
        ("Deployment", generator.subschema_for::<Deployment>()),
        (
            "DeploymentRevision",
            generator.subschema_for::<DeploymentRevision>(),
        ),
        ("Pod", generator.subschema_for::<Pod>()),
        ("Event", generator.subschema_for::<Event>()),
        ("IpPool", generator.subschema_for::<IpPool>()),
        ("PoolGrant", generator.subschema_for::<PoolGrant>()),
        ("CostBudget", generator.subschema_for::<CostBudget>()),
        ("Cluster", generator.subschema_for::<Cluster>()),
        ("Pool", generator.subschema_for::<Pool>()),
        ("MachineClass", generator.subschema_for::<MachineClass>()),
        (
            "RepositorySummary",
            generator.subschema_for::<RepositorySummary>(),
        ),
        (
            "ArtifactSummary",
            generator.subschema_for::<ArtifactSummary>(),
        ),
        (
            "ArtifactDetail",
            generator.subschema_for::<ArtifactDetail>(),
        ),
        (
            "ImageDistribution",
            generator.subschema_for::<ImageDistribution>(),
        ),
        ("ConfigMap", generator.subschema_for::<ConfigMap>()),
        ("Secret", generator.subschema_for::<Secret>()),
        (
            "PersistentVolumeClaim",
            generator.subschema_for::<PersistentVolumeClaim>(),
        ),
        ("PodMetrics", generator.subschema_for::<PodMetrics>()),
        ("Service", generator.subschema_for::<Service>()),
        ("Endpoints", generator.subschema_for::<Endpoints>()),
        (
            "HorizontalPodAutoscaler",
            generator.subschema_for::<HorizontalPodAutoscaler>(),
        ),
        ("FalconSample", generator.subschema_for::<FalconSample>()),
        ("AlertRule", generator.subschema_for::<AlertRule>()),
        ("Silence", generator.subschema_for::<Silence>()),
        ("AlertReceiver", generator.subschema_for::<AlertReceiver>()),
        ("Delivery", generator.subschema_for::<Delivery>()),
        (
            "ComponentCommit",
            generator.subschema_for::<wharf_api::component_commit::ComponentCommit>(),
        ),
        (
            "CommitSpecArtifact",
            generator.subschema_for::<wharf_api::component_commit::CommitSpecArtifact>(),
        ),
        (
            "CommitIndexEntry",
            generator.subschema_for::<wharf_api::component_commit::CommitIndexEntry>(),
        ),
        (
            "PreheatPolicy",
            generator.subschema_for::<wharf_api::preheat::PreheatPolicy>(),
        ),
        (
            "Preheat",
            generator.subschema_for::<wharf_api::preheat::Preheat>(),
        ),
        (
            "PreheatAssignment",
            generator.subschema_for::<wharf_api::preheat::PreheatAssignment>(),
        ),
        // Not served: what webhooks receive (docs/monitoring.md).
        (
            "AlertNotification",
            generator.subschema_for::<AlertNotification>(),
        ),
    ] {
        schemas.insert(name.into(), schema.to_value());
    }
    for (name, schema) in generator.take_definitions(true) {
        schemas.entry(name).or_insert(schema);
    }
    let mut paths = Map::new();
    for route in route_table() {
        let parameters: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let security = match route.access {
            Access::Public => json!([]),
            _ => json!([{ "bearer": [] }]),
        };
        let mut operation = json!({
            "summary": summary(route.access),
            "parameters": parameters,
            "security": security,
            "responses": responses(&route.method, route.path),
        });
        if let Some(Value::Object(falcon)) = falcon_operation(route.path) {
            for (key, value) in falcon {
                operation[key] = value;
            }
        }
        let entry = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}));
        entry[route.method.as_str().to_lowercase()] = operation;
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Wharf API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Cluster objects (Node, Deployment, Pod, Event, IpPool, ConfigMap, Secret, PersistentVolumeClaim; the inventory: Cluster, Pool, MachineClass) and administration. \
                Secret values are withheld (key names and sizes only) unless showSecrets=true is asked by a maintainer or above. \
                Lists accept labelSelector; watch=true&resourceVersion=N streams newline-delimited \
                JSON events ({type: ADDED|MODIFIED|DELETED, object}) after revision N.",
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
        },
        "paths": paths,
    })
}

fn summary(access: Access) -> String {
    match access {
        Access::Public => "open to anyone".into(),
        Access::Authenticated => "any logged-in caller".into(),
        Access::Admin => "system administrators".into(),
        Access::Project(action) => format!("callers allowed to {} in the project", action.as_str()),
        Access::SelfOrAdmin => "the user themself, or administrators".into(),
        Access::MetricsReader => "system administrators and metrics:read robots".into(),
        Access::Node => "system administrators and the node's own credential".into(),
        Access::Inventory(action) => format!(
            "system administrators and callers whose inventory role allows {}",
            action.as_str()
        ),
    }
}

/// The registry content a repository path serves: (schema, is a list).
fn registry_content(path: &str) -> Option<(&'static str, bool)> {
    if path.ends_with("/repositories") {
        Some(("RepositorySummary", true))
    } else if path.ends_with("/artifacts") {
        Some(("ArtifactSummary", true))
    } else if path.ends_with("/artifacts/{reference}") {
        Some(("ArtifactDetail", false))
    } else if path.ends_with("/artifacts/{reference}/distribution") {
        Some(("ImageDistribution", false))
    } else {
        None
    }
}

/// What the component flow's paths serve: (schema, is a list).
fn commit_content(path: &str) -> Option<(&'static str, bool)> {
    if path.ends_with("/commit") || path.ends_with("/commit/rollback") {
        Some(("ComponentCommit", false))
    } else if path.ends_with("/commit/specs") {
        Some(("CommitSpecArtifact", true))
    } else if path.ends_with("/commits/ips") {
        Some(("CommitIndexEntry", true))
    } else {
        None
    }
}

/// What the preheat paths serve: (schema, is a list).
fn preheat_content(method: &Method, path: &str) -> Option<(&'static str, bool)> {
    let listing = method == Method::GET;
    if path.ends_with("/{node}/preheats") {
        Some(("PreheatAssignment", true))
    } else if path.ends_with("/preheatpolicies") {
        Some(("PreheatPolicy", listing))
    } else if path.ends_with("/preheatpolicies/{name}") {
        Some(("PreheatPolicy", false))
    } else if path.ends_with("/preheats") {
        Some(("Preheat", listing))
    } else if path.contains("/preheats/") {
        Some(("Preheat", false))
    } else {
        None
    }
}

/// The usage a metrics path serves: (schema, is a list).
fn metrics_content(path: &str) -> Option<(&'static str, bool)> {
    if path.ends_with("/pods/{name}/metrics") {
        Some(("PodMetrics", false))
    } else if path.ends_with("/podmetrics") {
        Some(("PodMetrics", true))
    } else {
        None
    }
}

/// The alerting object a path serves: (schema, is a list). Lists are the
/// GETs of a collection; writes answer the one object.
fn alert_content(method: &Method, path: &str) -> Option<(&'static str, bool)> {
    let list = *method == Method::GET;
    if path.ends_with("/deliveries") {
        Some(("Delivery", true))
    } else if path.ends_with("/alerts/rules") {
        Some(("AlertRule", list))
    } else if path.ends_with("/alerts/rules/{name}") {
        Some(("AlertRule", false))
    } else if path.ends_with("/alerts/silences") {
        Some(("Silence", list))
    } else if path.ends_with("/expire") {
        Some(("Silence", false))
    } else if path.ends_with("/alerts/receivers") {
        Some(("AlertReceiver", list))
    } else if path.ends_with("/alerts/receivers/{name}") {
        Some(("AlertReceiver", false))
    } else {
        None
    }
}

/// The metrics routes' body, parameters and answers, which the generic
/// rules below cannot guess.
fn falcon_operation(path: &str) -> Option<Value> {
    let denied = json!({"description": "not allowed"});
    let unauthenticated = json!({"description": "not logged in"});
    let invalid = json!({"description": "a bad sample or parameter; the message names the sample index and field, or the limit"});
    match path {
        "/api/v1/nodes/{node}/metrics" => Some(json!({
            "requestBody": {"required": true, "content": {"application/json": {"schema": {
                "type": "array", "items": {"$ref": "#/components/schemas/FalconSample"}}}}},
            "responses": {
                "200": {"description": "stored (all of the batch, or nothing on an error)", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"stored": {"type": "integer"}, "skipped": {"type": "integer"}}}}}},
                "400": invalid, "401": unauthenticated, "403": denied,
                "413": {"description": "more than 8 MiB or 50,000 samples"},
                "422": {"description": "an endpoint would pass its series limit"},
            },
        })),
        "/api/v1/metrics/query" => {
            let param = |name: &str, kind: &str, description: &str| json!({"name": name, "in": "query", "required": name == "metric", "schema": {"type": kind}, "description": description});
            let point =
                json!({"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2});
            Some(json!({
                "description": "Administrators read every series; other callers need an exact project=NAME tag matcher for a project they may pull from.",
                "parameters": [
                    param("metric", "string", "metric name, e.g. cpu.busy"),
                    param("tags", "string", "matchers k=v, k!=v, k=a|b, comma-separated"),
                    param("endpoint", "string", "the endpoint (node or container)"),
                    param("start", "integer", "seconds since the epoch; default end - 1h"),
                    param("end", "integer", "seconds since the epoch; default now"),
                    param("step", "integer", "seconds per point; picks raw (<60), 1m (<3600) or 1h history"),
                    param("agg", "string", "sum, avg, max or min over the series"),
                    param("by", "string", "labels that keep series apart when aggregating"),
                    param("rate", "boolean", "counters as per-second rates"),
                ],
                "responses": {
                    "200": {"description": "the series", "content": {"application/json": {"schema": {"type": "object", "properties": {
                        "metric": {"type": "string"}, "resolution": {"type": "string"},
                        "start": {"type": "integer"}, "end": {"type": "integer"}, "step": {"type": "integer"},
                        "series": {"type": "array", "items": {"type": "object", "properties": {
                            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                            "points": {"type": "array", "items": point}}}}}}}}},
                    "400": invalid, "401": unauthenticated, "403": denied,
                    "404": {"description": "no series of that metric"},
                },
            }))
        }
        _ => None,
    }
}

/// What a route answers: a log as text, an exec probe's 204, the switch
/// of an exec or port-forward stream, else JSON (an object kind's schema
/// where the path serves one).
fn responses(method: &Method, path: &str) -> Value {
    let success = match (method.as_str(), path.rsplit('/').next()) {
        (_, Some("log")) => Some((
            "200",
            json!({"description": "the log", "content": {"text/plain": {"schema": {"type": "string"}}}}),
        )),
        ("GET", Some("exec")) => Some((
            "204",
            json!({"description": "the caller may exec into the pod"}),
        )),
        ("POST", Some("commit")) => Some((
            "200",
            json!({"description": "the commit's progress as JSON lines (CommitProgress), the last `done` or `failed` (docs/commit.md); refusals before anything is paused are errors", "content": {"application/x-ndjson": {"schema": {"type": "string"}}}}),
        )),
        ("POST", Some("exec" | "portforward")) => Some((
            "101",
            json!({"description": "switched to the protocol the Upgrade header asked for (docs/exec.md)"}),
        )),
        _ => None,
    };
    if let Some((status, answer)) = success {
        return json!({
            status: answer,
            "401": {"description": "not logged in"},
            "403": {"description": "not allowed"},
        });
    }
    if let Some((schema, list)) = registry_content(path)
        .or_else(|| metrics_content(path))
        .or_else(|| alert_content(method, path))
        .or_else(|| commit_content(path))
        .or_else(|| preheat_content(method, path))
    {
        let reference = json!({"$ref": format!("#/components/schemas/{schema}")});
        let schema = match list {
            true => json!({"type": "array", "items": reference}),
            false => reference,
        };
        return json!({
            "200": {"description": "success", "content": {"application/json": {"schema": schema}}},
            "401": {"description": "not logged in"},
            "403": {"description": "not allowed"},
            "404": {"description": "not found"},
        });
    }
    // A pod's address claim, or its node's confirmation, is not a pod; a
    // claim's users are not a claim; a node's services are a bundle.
    // Most specific first: a node's route to a pod's ConfigMap serves a ConfigMap.
    let kind = [
        "horizontalpodautoscalers",
        "persistentvolumeclaims",
        "services",
        "{project}/endpoints",
        "configmaps",
        "secrets",
        "revisions",
        "deployments",
        "pods",
        "events",
        "ippools",
        "poolgrants",
        "budgets",
        "machineclasses",
        "clusters",
        "pools",
        "nodes",
    ]
    .into_iter()
    .find(|k| {
        path.contains(&format!("/{k}"))
            && !path.ends_with("/ip")
            && !path.ends_with("/stopped")
            && !path.ends_with("/users")
            && !path.ends_with("/usage")
            && !path.ends_with("/{node}/services")
    })
    .map(|k| match k {
        "nodes" => "Node",
        "revisions" => "DeploymentRevision",
        "deployments" => "Deployment",
        "pods" => "Pod",
        "ippools" => "IpPool",
        "poolgrants" => "PoolGrant",
        "budgets" => "CostBudget",
        "machineclasses" => "MachineClass",
        "clusters" => "Cluster",
        "pools" => "Pool",
        "configmaps" => "ConfigMap",
        "secrets" => "Secret",
        "persistentvolumeclaims" => "PersistentVolumeClaim",
        "services" => "Service",
        "{project}/endpoints" => "Endpoints",
        "horizontalpodautoscalers" => "HorizontalPodAutoscaler",
        _ => "Event",
    });
    let content = match kind {
        Some(kind) => {
            json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{kind}")}}})
        }
        None => json!({"application/json": {"schema": {"type": "object"}}}),
    };
    json!({
        "200": {"description": "success", "content": content},
        "401": {"description": "not logged in"},
        "403": {"description": "not allowed"},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_every_route_and_kind() {
        let doc = build();
        for route in route_table() {
            let method = route.method.as_str().to_lowercase();
            assert!(
                doc["paths"][route.path][&method].is_object(),
                "{} {}",
                route.method,
                route.path
            );
        }
        let exec = &doc["paths"]["/api/v1/projects/{project}/pods/{name}/exec"];
        assert!(exec["post"]["responses"]["101"].is_object(), "{exec}");
        assert!(exec["get"]["responses"]["204"].is_object(), "{exec}");
        let log = &doc["paths"]["/api/v1/projects/{project}/pods/{name}/log"];
        assert!(
            log["get"]["responses"]["200"]["content"]["text/plain"].is_object(),
            "{log}"
        );
        for kind in [
            "Node",
            "Deployment",
            "DeploymentRevision",
            "Pod",
            "Event",
            "IpPool",
            "PoolGrant",
            "CostBudget",
            "Cluster",
            "Pool",
            "MachineClass",
            "ArtifactDetail",
            "ImageDistribution",
            "ConfigMap",
            "Secret",
            "PersistentVolumeClaim",
            "PodMetrics",
            "Preheat",
            "PreheatPolicy",
        ] {
            assert!(doc["components"]["schemas"][kind].is_object(), "{kind}");
        }
        let metrics = &doc["paths"]["/api/v1/projects/{project}/pods/{name}/metrics"];
        assert_eq!(
            metrics["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/PodMetrics"
        );
        let push = &doc["paths"]["/api/v1/nodes/{node}/metrics"]["post"];
        assert_eq!(
            push["requestBody"]["content"]["application/json"]["schema"]["items"]["$ref"],
            "#/components/schemas/FalconSample"
        );
        let query = &doc["paths"]["/api/v1/metrics/query"]["get"];
        assert_eq!(query["parameters"][0]["name"], "metric");
        assert!(query["responses"]["404"].is_object());
        let artifacts =
            &doc["paths"]["/api/v1/projects/{project}/repositories/{repository}/artifacts"];
        assert_eq!(
            artifacts["get"]["responses"]["200"]["content"]["application/json"]["schema"]["items"]
                ["$ref"],
            "#/components/schemas/ArtifactSummary"
        );
    }
}
