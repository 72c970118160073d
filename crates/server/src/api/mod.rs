//! `/api/v1/`: the administration API, protected by bearer tokens from
//! `POST /api/v1/login`.
//!
//! Every route is declared once in [`route_table`] together with who may call
//! it; the router is built from that table, so no route can be added without
//! an access rule, and a test walks the table to prove it.

mod alerts;
mod audit;
/// Browser sessions: the dashboard's cookie and its CSRF token.
mod browser_session;
mod claims;
mod cluster;
/// `wharf commit POD`; [`commit::commit_pod`] is the entry point of the
/// component flow too.
pub(crate) mod commit;
mod component_commits;
mod config;
mod cost;
mod cost_budgets;
mod error;
mod health;
mod inventory;
mod inventory_access;
mod ippools;
mod logs;
mod metrics;
mod node_lifecycle;
mod node_proxy;
mod node_scope;
mod openapi;
mod p2p;
mod pod_metrics;
mod pod_streams;
mod pool_grants;
mod preheats;
mod project_tier;
mod projects;
mod replication;
mod repositories;
mod rollouts;
mod scrape;
mod session;
mod system;
mod users;

pub(crate) use error::{ApiErrorReply, ApiResult};
pub use inventory_access::InventoryAction;
pub(crate) use inventory_access::authorize_inventory;
pub(crate) use metrics::now as unix_now;
pub(crate) use node_lifecycle::own_binary_sha256;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequest, Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::{Json, Router};
use http::Method;
use serde::de::DeserializeOwned;
use wharf_auth::{Action, AuthError, Principal};

use crate::AppState;
use crate::registry_auth::{bearer, token_rejected};

/// Who may call a route. Checked before the request body is even read;
/// handlers add only finer rules (quota changes, robots reaching several
/// projects, proving the current password).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone, logged in or not (login, token refresh, health).
    Public,
    /// Any authenticated user or robot.
    Authenticated,
    /// System administrators only.
    Admin,
    /// Callers allowed this action in the project named by `{project}`.
    Project(Action),
    /// The user named by `{name}` themself, or an administrator.
    SelfOrAdmin,
    /// System administrators and `metrics:read` robots (Prometheus).
    MetricsReader,
    /// System administrators and node credentials (`robot$node+<node>`,
    /// from a join), the latter only for their own `{node}` when the path
    /// names one: what node agents call.
    Node,
    /// Callers whose inventory role allows the action
    /// ([`authorize_inventory`]).
    Inventory(InventoryAction),
}

/// One row of the route table.
#[derive(Clone, Debug)]
pub struct RouteInfo {
    /// HTTP method.
    pub method: Method,
    /// Path template (axum syntax, `{param}`).
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
}

type Handler = MethodRouter<Arc<AppState>>;

/// Every API route with its access rule and handler.
// One row per route reads as a table; rustfmt would break each row apart.
#[rustfmt::skip]
fn routes() -> Vec<(RouteInfo, Handler)> {
    use axum::extract::DefaultBodyLimit;
    use axum::routing::{delete, get, patch, post, put};
    use Access::*;
    use Action::{Admin as Manage, Delete, Pull, Push};
    use InventoryAction::{Manage as ManageInventory, Operate, Read as ReadInventory};
    use wharf_api::{
        Cluster, ConfigMap, Deployment, Endpoints, HorizontalPodAutoscaler, MachineClass,
        PersistentVolumeClaim, Pod, Pool, Service,
    };
    let row = |method: Method, path: &'static str, access: Access, handler: Handler| {
        (RouteInfo { method, path, access }, handler)
    };
    vec![
        row(Method::GET,    "/healthz",                                  Public,          get(health::livez)),
        row(Method::GET,    "/livez",                                    Public,          get(health::livez)),
        row(Method::GET,    "/readyz",                                   Public,          get(health::readyz)),
        row(Method::GET,    "/metrics",                                  MetricsReader,   get(scrape::metrics)),
        // Agents ask it before serving their own /metrics.
        row(Method::GET,    "/api/v1/metrics/access",                    MetricsReader,   get(scrape::may_scrape)),
        row(Method::POST,   "/api/v1/login",                             Public,          post(session::login)),
        row(Method::POST,   "/api/v1/token",                             Public,          post(session::refresh)),
        row(Method::GET,    "/api/v1/me",                                Authenticated,   get(session::me)),
        // The dashboard's login: a cookie instead of tokens (browser_session).
        row(Method::POST,   "/api/v1/session",                           Public,          post(browser_session::create)),
        row(Method::GET,    "/api/v1/session",                           Authenticated,   get(browser_session::show)),
        row(Method::DELETE, "/api/v1/session",                           Public,          delete(browser_session::delete)),
        row(Method::GET,    "/api/v1/users",                             Admin,           get(users::list)),
        row(Method::POST,   "/api/v1/users",                             Admin,           post(users::create)),
        row(Method::GET,    "/api/v1/users/{name}",                      SelfOrAdmin,     get(users::show)),
        row(Method::DELETE, "/api/v1/users/{name}",                      Admin,           delete(users::remove)),
        row(Method::PUT,    "/api/v1/users/{name}/password",             SelfOrAdmin,     put(users::set_password)),
        row(Method::PUT,    "/api/v1/users/{name}/disabled",             Admin,           put(users::set_disabled)),
        row(Method::PUT,    "/api/v1/users/{name}/inventoryrole",        Admin,           put(users::set_inventory_role)),
        row(Method::GET,    "/api/v1/projects",                          Authenticated,   get(projects::list)),
        row(Method::POST,   "/api/v1/projects",                          Authenticated,   post(projects::create)),
        row(Method::GET,    "/api/v1/projects/{project}",                Project(Pull),   get(projects::show)),
        row(Method::PATCH,  "/api/v1/projects/{project}",                Project(Manage), patch(projects::update)),
        row(Method::DELETE, "/api/v1/projects/{project}",                Project(Manage), delete(projects::remove)),
        row(Method::GET,    "/api/v1/projects/{project}/repositories",   Project(Pull),   get(repositories::list)),
        row(Method::DELETE, "/api/v1/projects/{project}/repositories/{repository}", Project(Delete), delete(repositories::delete_repository)),
        row(Method::GET,    "/api/v1/projects/{project}/repositories/{repository}/artifacts", Project(Pull), get(repositories::artifacts)),
        row(Method::GET,    "/api/v1/projects/{project}/repositories/{repository}/artifacts/{reference}", Project(Pull), get(repositories::inspect)),
        row(Method::DELETE, "/api/v1/projects/{project}/repositories/{repository}/artifacts/{reference}", Project(Delete), delete(repositories::delete_artifact)),
        row(Method::GET,    "/api/v1/projects/{project}/repositories/{repository}/artifacts/{reference}/distribution", Project(Pull), get(repositories::distribution)),
        row(Method::GET,    "/api/v1/projects/{project}/members",        Project(Pull),   get(projects::list_members)),
        row(Method::PUT,    "/api/v1/projects/{project}/members/{user}", Project(Manage), put(projects::set_member)),
        row(Method::DELETE, "/api/v1/projects/{project}/members/{user}", Project(Manage), delete(projects::remove_member)),
        row(Method::GET,    "/api/v1/projects/{project}/robots",         Project(Manage), get(projects::list_robots)),
        row(Method::POST,   "/api/v1/projects/{project}/robots",         Project(Manage), post(projects::create_robot)),
        row(Method::DELETE, "/api/v1/projects/{project}/robots/{robot}", Project(Manage), delete(projects::remove_robot)),
        row(Method::PUT,    "/api/v1/projects/{project}/robots/{robot}/disabled", Project(Manage), put(projects::set_robot_disabled)),
        row(Method::GET,    "/api/v1/settings",                          Admin,           get(system::settings)),
        row(Method::PUT,    "/api/v1/settings",                          Admin,           put(system::set_settings)),
        row(Method::POST,   "/api/v1/gc",                                Admin,           post(system::gc)),
        row(Method::GET,    "/api/v1/audit",                             Authenticated,   get(system::audit)),
        row(Method::GET,    "/api/v1/openapi.json",                      Public,          get(openapi::document)),
        row(Method::GET,    "/api/v1/nodes",                             Authenticated,   get(cluster::list_nodes)),
        row(Method::POST,   "/api/v1/nodes",                             Node,            post(cluster::register_node)),
        row(Method::GET,    "/api/v1/nodes/{node}",                      Authenticated,   get(cluster::get_node)),
        // Cordon and uncordon: operators; taints and cost: managers (checked inside).
        row(Method::PATCH,  "/api/v1/nodes/{node}",                      Inventory(Operate), patch(cluster::patch_node)),
        row(Method::DELETE, "/api/v1/nodes/{node}",                      Admin,           delete(cluster::delete_node)),
        // Node lifecycle: pool operators and cluster administrators.
        row(Method::POST,   "/api/v1/nodes/{node}/drain",                Inventory(Operate), post(node_lifecycle::drain)),
        row(Method::POST,   "/api/v1/nodes/{node}/decommission",         Inventory(Operate), post(node_lifecycle::decommission)),
        row(Method::POST,   "/api/v1/pools/{pool}/join-tokens",          Inventory(Operate), post(node_lifecycle::create_join_token)),
        // Authenticated by the join token in the body, redeemed once.
        row(Method::POST,   "/api/v1/join",                              Public,          post(node_lifecycle::join)),
        // The join script, and the agent binary for a usable join token
        // (checked by the handler, in the Wharf-Join-Token header).
        row(Method::GET,    "/api/v1/join/script",                       Public,          get(node_lifecycle::join_script)),
        row(Method::GET,    "/api/v1/join/wharf",                        Public,          get(node_lifecycle::join_binary)),
        row(Method::PUT,    "/api/v1/nodes/{node}/heartbeat",            Node,            put(cluster::heartbeat)),
        row(Method::GET,    "/api/v1/nodes/{node}/init",                 Node,            get(cluster::node_init)),
        row(Method::GET,    "/api/v1/nodes/{node}/configmaps/{project}/{name}", Node,  get(config::node_config_map)),
        row(Method::GET,    "/api/v1/nodes/{node}/secrets/{project}/{name}", Node,    get(config::node_secret)),
        row(Method::GET,    "/api/v1/nodes/{node}/persistentvolumeclaims", Node,      get(claims::node_claims)),
        row(Method::PUT,    "/api/v1/nodes/{node}/usage",                Node,            put(pod_metrics::report_usage)),
        // The agent asks, with the committing user's token, for leave to push.
        row(Method::POST,   "/api/v1/nodes/{node}/commitgrants",         Node,            post(commit::grant)),
        row(Method::DELETE, "/api/v1/nodes/{node}/commitgrants/{id}",    Node,            delete(commit::end_grant)),
        row(Method::POST,   "/api/v1/nodes/{node}/metrics",              Node,            post(metrics::push).layer(DefaultBodyLimit::max(metrics::MAX_BODY_BYTES))),
        // Administrators, or readers of the project named by a project= matcher.
        row(Method::GET,    "/api/v1/metrics/query",                     Authenticated,   get(metrics::query)),
        row(Method::GET,    "/api/v1/nodes/{node}/services",             Node,            get(cluster::node_services)),
        row(Method::GET,    "/api/v1/pods",                              Node,            get(cluster::list_all_pods)),
        row(Method::POST,   "/api/v1/apply",                             Authenticated,   post(cluster::apply)),
        row(Method::GET,    "/api/v1/projects/{project}/deployments",    Project(Pull),   get(cluster::list_deployments)),
        row(Method::GET,    "/api/v1/projects/{project}/deployments/{name}", Project(Pull), get(cluster::get_in_project::<Deployment>)),
        row(Method::PUT,    "/api/v1/projects/{project}/deployments/{name}", Project(Push), put(cluster::update_deployment)),
        row(Method::DELETE, "/api/v1/projects/{project}/deployments/{name}", Project(Delete), delete(cluster::delete_deployment)),
        row(Method::PUT,    "/api/v1/projects/{project}/deployments/{name}/scale", Project(Push), put(cluster::scale_deployment)),
        row(Method::GET,    "/api/v1/projects/{project}/deployments/{name}/revisions", Project(Pull), get(rollouts::list_revisions)),
        row(Method::POST,   "/api/v1/projects/{project}/deployments/{name}/rollback", Project(Push), post(rollouts::rollback)),
        // The component flow (wharf commit deployment): developers and up
        // start and roll it back (the images go to the same project).
        row(Method::POST,   "/api/v1/projects/{project}/deployments/{name}/commit", Project(Push), post(component_commits::start)),
        row(Method::GET,    "/api/v1/projects/{project}/deployments/{name}/commit", Project(Pull), get(component_commits::show)),
        row(Method::POST,   "/api/v1/projects/{project}/deployments/{name}/commit/rollback", Project(Push), post(component_commits::rollback)),
        row(Method::GET,    "/api/v1/projects/{project}/deployments/{name}/commit/specs", Project(Pull), get(component_commits::specs)),
        // Administrators see every entry, others those of projects they may pull from.
        row(Method::GET,    "/api/v1/commits/ips",                       Authenticated,   get(component_commits::index)),
        row(Method::GET,    "/api/v1/projects/{project}/pods",           Project(Pull),   get(cluster::list_pods)),
        row(Method::GET,    "/api/v1/projects/{project}/pods/{name}",    Project(Pull),   get(cluster::get_in_project::<Pod>)),
        row(Method::DELETE, "/api/v1/projects/{project}/pods/{name}",    Project(Delete), delete(cluster::delete_pod)),
        row(Method::PUT,    "/api/v1/projects/{project}/pods/{name}/status", Node,        put(cluster::set_pod_status)),
        row(Method::POST,   "/api/v1/projects/{project}/pods/{name}/events", Node,        post(cluster::record_pod_event)),
        row(Method::PUT,    "/api/v1/projects/{project}/pods/{name}/stopped", Node,       put(cluster::pod_stopped)),
        row(Method::GET,    "/api/v1/projects/{project}/pods/{name}/log", Project(Pull), get(logs::pod_log)),
        row(Method::GET,    "/api/v1/projects/{project}/pods/{name}/metrics", Project(Pull), get(pod_metrics::pod_metrics)),
        row(Method::GET,    "/api/v1/projects/{project}/podmetrics",     Project(Pull),   get(pod_metrics::project_metrics)),
        // exec and port-forward act inside the workload: developers and up.
        row(Method::GET,    "/api/v1/projects/{project}/pods/{name}/exec", Project(Push), get(pod_streams::may_exec)),
        row(Method::POST,   "/api/v1/projects/{project}/pods/{name}/exec", Project(Push), post(pod_streams::exec)),
        row(Method::POST,   "/api/v1/projects/{project}/pods/{name}/portforward", Project(Push), post(pod_streams::port_forward)),
        // commit reads everything in the container, like exec: developers and up
        // (and push on the target repository, checked inside).
        row(Method::POST,   "/api/v1/projects/{project}/pods/{name}/commit", Project(Push), post(commit::commit)),
        row(Method::PUT,    "/api/v1/projects/{project}/pods/{name}/ip", Node,            put(ippools::claim)),
        row(Method::DELETE, "/api/v1/projects/{project}/pods/{name}/ip", Node,            delete(ippools::release)),
        row(Method::GET,    "/api/v1/ippools",                           Authenticated,   get(ippools::list)),
        row(Method::POST,   "/api/v1/ippools",                           Admin,           post(ippools::import)),
        row(Method::GET,    "/api/v1/ippools/{pool}",                    Authenticated,   get(ippools::show)),
        row(Method::DELETE, "/api/v1/ippools/{pool}",                    Admin,           delete(ippools::remove)),
        row(Method::GET,    "/api/v1/clusters",                          Inventory(ReadInventory),   get(inventory::list::<Cluster>)),
        row(Method::POST,   "/api/v1/clusters",                          Inventory(ManageInventory), post(inventory::create::<Cluster>)),
        row(Method::GET,    "/api/v1/clusters/{name}",                   Inventory(ReadInventory),   get(inventory::show::<Cluster>)),
        row(Method::PUT,    "/api/v1/clusters/{name}",                   Inventory(ManageInventory), put(inventory::update::<Cluster>)),
        row(Method::DELETE, "/api/v1/clusters/{name}",                   Inventory(ManageInventory), delete(inventory::remove::<Cluster>)),
        row(Method::GET,    "/api/v1/pools",                             Inventory(ReadInventory),   get(inventory::list::<Pool>)),
        row(Method::POST,   "/api/v1/pools",                             Inventory(ManageInventory), post(inventory::create::<Pool>)),
        row(Method::GET,    "/api/v1/pools/{name}",                      Inventory(ReadInventory),   get(inventory::show::<Pool>)),
        row(Method::PUT,    "/api/v1/pools/{name}",                      Inventory(ManageInventory), put(inventory::update::<Pool>)),
        row(Method::DELETE, "/api/v1/pools/{name}",                      Inventory(ManageInventory), delete(inventory::remove::<Pool>)),
        row(Method::GET,    "/api/v1/machineclasses",                    Inventory(ReadInventory),   get(inventory::list::<MachineClass>)),
        row(Method::POST,   "/api/v1/machineclasses",                    Inventory(ManageInventory), post(inventory::create::<MachineClass>)),
        row(Method::GET,    "/api/v1/machineclasses/{name}",             Inventory(ReadInventory),   get(inventory::show::<MachineClass>)),
        row(Method::PUT,    "/api/v1/machineclasses/{name}",             Inventory(ManageInventory), put(inventory::update::<MachineClass>)),
        row(Method::DELETE, "/api/v1/machineclasses/{name}",             Inventory(ManageInventory), delete(inventory::remove::<MachineClass>)),
        row(Method::GET,    "/api/v1/poolgrants",                        Inventory(ReadInventory), get(pool_grants::list)),
        row(Method::POST,   "/api/v1/poolgrants",                        Inventory(ManageInventory), post(pool_grants::create)),
        row(Method::GET,    "/api/v1/poolgrants/{grant}",                Inventory(ReadInventory), get(pool_grants::show)),
        row(Method::DELETE, "/api/v1/poolgrants/{grant}",                Inventory(ManageInventory), delete(pool_grants::remove)),
        row(Method::GET,    "/api/v1/projects/{project}/configmaps",     Project(Pull),   get(cluster::list_in_project::<ConfigMap>)),
        row(Method::POST,   "/api/v1/projects/{project}/configmaps",     Project(Push),   post(config::create_config_map)),
        row(Method::GET,    "/api/v1/projects/{project}/configmaps/{name}", Project(Pull), get(cluster::get_in_project::<ConfigMap>)),
        row(Method::DELETE, "/api/v1/projects/{project}/configmaps/{name}", Project(Delete), delete(config::delete_config_map)),
        row(Method::GET,    "/api/v1/projects/{project}/secrets",        Project(Pull),   get(config::list_secrets)),
        row(Method::POST,   "/api/v1/projects/{project}/secrets",        Project(Push),   post(config::create_secret)),
        row(Method::GET,    "/api/v1/projects/{project}/secrets/{name}", Project(Pull),   get(config::get_secret)),
        row(Method::DELETE, "/api/v1/projects/{project}/secrets/{name}", Project(Delete), delete(config::delete_secret)),
        row(Method::GET,    "/api/v1/projects/{project}/persistentvolumeclaims", Project(Pull), get(cluster::list_in_project::<PersistentVolumeClaim>)),
        row(Method::POST,   "/api/v1/projects/{project}/persistentvolumeclaims", Project(Push), post(claims::create)),
        row(Method::GET,    "/api/v1/projects/{project}/persistentvolumeclaims/{name}", Project(Pull), get(cluster::get_in_project::<PersistentVolumeClaim>)),
        row(Method::DELETE, "/api/v1/projects/{project}/persistentvolumeclaims/{name}", Project(Delete), delete(claims::delete)),
        row(Method::GET,    "/api/v1/projects/{project}/persistentvolumeclaims/{name}/users", Project(Pull), get(claims::users)),
        row(Method::GET,    "/api/v1/projects/{project}/services",       Project(Pull),   get(cluster::list_in_project::<Service>)),
        row(Method::GET,    "/api/v1/projects/{project}/services/{name}", Project(Pull),  get(cluster::get_in_project::<Service>)),
        row(Method::DELETE, "/api/v1/projects/{project}/services/{name}", Project(Delete), delete(cluster::delete_service)),
        row(Method::GET,    "/api/v1/projects/{project}/endpoints",      Project(Pull),   get(cluster::list_in_project::<Endpoints>)),
        row(Method::GET,    "/api/v1/projects/{project}/endpoints/{name}", Project(Pull), get(cluster::get_in_project::<Endpoints>)),
        row(Method::GET,    "/api/v1/projects/{project}/horizontalpodautoscalers", Project(Pull), get(cluster::list_in_project::<HorizontalPodAutoscaler>)),
        row(Method::GET,    "/api/v1/projects/{project}/horizontalpodautoscalers/{name}", Project(Pull), get(cluster::get_in_project::<HorizontalPodAutoscaler>)),
        row(Method::DELETE, "/api/v1/projects/{project}/horizontalpodautoscalers/{name}", Project(Delete), delete(cluster::delete_hpa)),
        row(Method::GET,    "/api/v1/projects/{project}/events",         Project(Pull),   get(cluster::list_events)),
        row(Method::GET,    "/api/v1/events",                            Authenticated,   get(cluster::list_cluster_events)),
        // Alerting: members read a project's rules and silences; maintainers and up
        // write them and manage receivers (URLs may carry credentials); the cluster's are the administrators'.
        row(Method::GET,    "/api/v1/projects/{project}/alerts/rules",   Project(Pull),   get(alerts::list_rules)),
        row(Method::POST,   "/api/v1/projects/{project}/alerts/rules",   Project(Delete), post(alerts::apply_rule)),
        row(Method::GET,    "/api/v1/projects/{project}/alerts/rules/{name}", Project(Pull), get(alerts::get_rule)),
        row(Method::DELETE, "/api/v1/projects/{project}/alerts/rules/{name}", Project(Delete), delete(alerts::delete_rule)),
        row(Method::GET,    "/api/v1/projects/{project}/alerts/silences", Project(Pull),  get(alerts::list_silences)),
        row(Method::POST,   "/api/v1/projects/{project}/alerts/silences", Project(Delete), post(alerts::create_silence)),
        row(Method::POST,   "/api/v1/projects/{project}/alerts/silences/{name}/expire", Project(Delete), post(alerts::expire_silence)),
        row(Method::GET,    "/api/v1/projects/{project}/alerts/receivers", Project(Delete), get(alerts::list_receivers)),
        row(Method::POST,   "/api/v1/projects/{project}/alerts/receivers", Project(Delete), post(alerts::apply_receiver)),
        row(Method::DELETE, "/api/v1/projects/{project}/alerts/receivers/{name}", Project(Delete), delete(alerts::delete_receiver)),
        row(Method::GET,    "/api/v1/projects/{project}/alerts/receivers/{name}/deliveries", Project(Delete), get(alerts::deliveries)),
        row(Method::GET,    "/api/v1/alerts/rules",                      Admin,           get(alerts::list_rules)),
        row(Method::POST,   "/api/v1/alerts/rules",                      Admin,           post(alerts::apply_rule)),
        row(Method::GET,    "/api/v1/alerts/rules/{name}",               Admin,           get(alerts::get_rule)),
        row(Method::DELETE, "/api/v1/alerts/rules/{name}",               Admin,           delete(alerts::delete_rule)),
        row(Method::GET,    "/api/v1/alerts/silences",                   Admin,           get(alerts::list_silences)),
        row(Method::POST,   "/api/v1/alerts/silences",                   Admin,           post(alerts::create_silence)),
        row(Method::POST,   "/api/v1/alerts/silences/{name}/expire",     Admin,           post(alerts::expire_silence)),
        row(Method::GET,    "/api/v1/alerts/receivers",                  Admin,           get(alerts::list_receivers)),
        row(Method::POST,   "/api/v1/alerts/receivers",                  Admin,           post(alerts::apply_receiver)),
        row(Method::DELETE, "/api/v1/alerts/receivers/{name}",           Admin,           delete(alerts::delete_receiver)),
        row(Method::GET,    "/api/v1/alerts/receivers/{name}/deliveries", Admin,          get(alerts::deliveries)),
        // Cost: every project's to administrators, their own projects' to members.
        row(Method::GET,    "/api/v1/cost/report",                       Authenticated,   get(cost::report)),
        // Budgets: set by cluster administrators; read by inventory readers
        // and by their project's maintainers (checked inside).
        row(Method::GET,    "/api/v1/cost/budgets",                      Authenticated,   get(cost_budgets::list)),
        row(Method::POST,   "/api/v1/cost/budgets",                      Inventory(ManageInventory), post(cost_budgets::set)),
        row(Method::GET,    "/api/v1/cost/budgets/{project}",            Authenticated,   get(cost_budgets::show)),
        row(Method::DELETE, "/api/v1/cost/budgets/{project}",            Inventory(ManageInventory), delete(cost_budgets::remove)),
        row(Method::GET,    "/api/v1/replication/endpoints",             Admin,           get(replication::list_endpoints)),
        row(Method::POST,   "/api/v1/replication/endpoints",             Admin,           post(replication::add_endpoint)),
        row(Method::DELETE, "/api/v1/replication/endpoints/{name}",      Admin,           delete(replication::delete_endpoint)),
        row(Method::POST,   "/api/v1/replication/endpoints/{name}/check", Admin,          post(replication::check_endpoint)),
        row(Method::GET,    "/api/v1/replication/policies",              Admin,           get(replication::list_policies)),
        row(Method::POST,   "/api/v1/replication/policies",              Admin,           post(replication::add_policy)),
        row(Method::GET,    "/api/v1/replication/policies/{name}",       Admin,           get(replication::show_policy)),
        row(Method::PUT,    "/api/v1/replication/policies/{name}",       Admin,           put(replication::replace_policy)),
        row(Method::DELETE, "/api/v1/replication/policies/{name}",       Admin,           delete(replication::delete_policy)),
        row(Method::POST,   "/api/v1/replication/policies/{name}/run",   Admin,           post(replication::run_policy)),
        row(Method::GET,    "/api/v1/replication/jobs",                  Admin,           get(replication::list_jobs)),
        row(Method::GET,    "/api/v1/replication/jobs/{id}",             Admin,           get(replication::show_job)),
        row(Method::POST,   "/api/v1/replication/jobs/{id}/cancel",      Admin,           post(replication::cancel_job)),
        row(Method::POST,   "/api/v1/replication/reconcile",             Admin,           post(replication::reconcile)),
        // The P2P tracker: node credentials only (checked inside; an
        // administrator has no node to fetch to).
        row(Method::GET,    wharf_p2p::wire::TRACKER_KEY_PATH,           Node,            get(p2p::key)),
        row(Method::POST,   wharf_p2p::wire::TRACKER_TASKS_PATH,         Node,            post(p2p::start_task)),
        row(Method::POST,   wharf_p2p::wire::TRACKER_REPORTS_PATH,       Node,            post(p2p::report)),
        // Preheat: members read; maintainers and up start jobs and write
        // policies (they decide what the project's pushes cost the nodes).
        row(Method::GET,    "/api/v1/projects/{project}/preheatpolicies", Project(Pull),  get(preheats::list_policies)),
        row(Method::POST,   "/api/v1/projects/{project}/preheatpolicies", Project(Delete), post(preheats::create_policy)),
        row(Method::GET,    "/api/v1/projects/{project}/preheatpolicies/{name}", Project(Pull), get(preheats::show_policy)),
        row(Method::DELETE, "/api/v1/projects/{project}/preheatpolicies/{name}", Project(Delete), delete(preheats::delete_policy)),
        row(Method::GET,    "/api/v1/projects/{project}/preheats",       Project(Pull),   get(preheats::list)),
        row(Method::POST,   "/api/v1/projects/{project}/preheats",       Project(Delete), post(preheats::create)),
        row(Method::GET,    "/api/v1/projects/{project}/preheats/{name}", Project(Pull),  get(preheats::show)),
        // A node's own open preheats, and its reports on them.
        row(Method::GET,    "/api/v1/nodes/{node}/preheats",             Node,            get(preheats::node_assignments)),
        row(Method::PUT,    "/api/v1/nodes/{node}/preheats/{project}/{name}", Node,       put(preheats::report)),
    ]
}

/// The route table: what exists and who may call it.
pub fn route_table() -> Vec<RouteInfo> {
    routes().into_iter().map(|(info, _)| info).collect()
}

pub(crate) fn router(state: Arc<AppState>) -> Router {
    let mut router = Router::new();
    for (info, handler) in routes() {
        let access = info.access;
        let check =
            move |state: State<Arc<AppState>>,
                  params: Path<HashMap<String, String>>,
                  request: Request,
                  next: Next| { require(access, state, params, request, next) };
        router = router.route(
            info.path,
            handler.route_layer(middleware::from_fn_with_state(state.clone(), check)),
        );
    }
    router
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

/// The authenticated caller of an API request.
#[derive(Clone, Debug)]
pub(crate) struct ApiCaller {
    pub principal: Principal,
    pub source: Option<IpAddr>,
}

/// Resolves the bearer token, or else the dashboard's session cookie, into
/// an [`ApiCaller`]. A present but unusable bearer token is refused
/// outright, whatever the route; an unusable cookie counts as no
/// credential (so that the login page still works with a stale one), and a
/// usable cookie on a state-changing request needs its CSRF header.
async fn authenticate(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let source = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let principal = if let Some(token) = bearer(request.headers()) {
        match state.identity.verify_api_token(token).await {
            Ok(principal) => principal,
            Err(err) => {
                state.audit.record(token_rejected(
                    &state.identity,
                    token,
                    "api",
                    source,
                    err.to_string(),
                ));
                return ApiErrorReply::from(err).into_response();
            }
        }
    } else if let Some(session) = browser_session::session_cookie(request.headers()) {
        let session = session.to_string();
        match state.identity.verify_refresh_token(&session).await {
            Ok(principal) => {
                if let Err(refusal) =
                    browser_session::check_csrf(request.method(), request.headers(), &session)
                {
                    return refusal.into_response();
                }
                request
                    .extensions_mut()
                    .insert(browser_session::CookieSession(session));
                principal
            }
            Err(err) => {
                state.audit.record(token_rejected(
                    &state.identity,
                    &session,
                    "dashboard",
                    source,
                    err.to_string(),
                ));
                Principal::Anonymous
            }
        }
    } else {
        Principal::Anonymous
    };
    request
        .extensions_mut()
        .insert(ApiCaller { principal, source });
    next.run(request).await
}

async fn require(
    access: Access,
    State(state): State<Arc<AppState>>,
    Path(params): Path<HashMap<String, String>>,
    request: Request,
    next: Next,
) -> Response {
    let principal = request
        .extensions()
        .get::<ApiCaller>()
        .map(|c| c.principal.clone())
        .unwrap_or(Principal::Anonymous);
    let allowed = match access {
        Access::Public => Ok(()),
        _ if principal == Principal::Anonymous => Err(AuthError::Unauthenticated(
            "log in first (wharf login)".into(),
        )),
        // A scrape credential is long-lived and sits in a file: it opens
        // nothing but /metrics.
        Access::MetricsReader if principal.may_read_metrics() => Ok(()),
        Access::MetricsReader => Err(AuthError::Denied(
            "system administrators and metrics:read robots only".into(),
        )),
        _ if principal.only_reads_metrics() => Err(AuthError::Denied(
            "a metrics:read robot only reads /metrics".into(),
        )),
        Access::Authenticated => Ok(()),
        Access::Admin if principal.is_admin() => Ok(()),
        Access::Admin => Err(AuthError::Denied("system administrators only".into())),
        Access::Node if principal.is_admin() => Ok(()),
        Access::Node => match principal.node_agent() {
            Some(own) if params.get("node").is_none_or(|node| node == own) => Ok(()),
            Some(own) => Err(AuthError::Denied(format!(
                "the credential of node {own} acts for node {own} only"
            ))),
            None => Err(AuthError::Denied(
                "system administrators and node agents only".into(),
            )),
        },
        Access::Inventory(action) => authorize_inventory(&state.identity, &principal, action).await,
        Access::Project(action) => {
            let project = params
                .get("project")
                .map(String::as_str)
                .unwrap_or_default();
            state.identity.require(&principal, project, action).await
        }
        Access::SelfOrAdmin => {
            let own = matches!(&principal, Principal::User { name, .. } if params.get("name") == Some(name));
            if own || principal.is_admin() {
                Ok(())
            } else {
                Err(AuthError::Denied(
                    "only administrators act on other users".into(),
                ))
            }
        }
    };
    match allowed {
        Ok(()) => next.run(request).await,
        Err(err) => ApiErrorReply::from(err).into_response(),
    }
}

/// A JSON body whose problems are reported as API errors.
pub(crate) struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiErrorReply;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<T>::from_request(request, state).await?;
        Ok(Body(value))
    }
}
