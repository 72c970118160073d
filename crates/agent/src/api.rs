//! How an agent talks to the control plane: [`NodeApi`], over HTTP here
//! ([`HttpNodeApi`]); the in-process implementation for benchmarks lives
//! with the binary, which links the control plane (the agent does not).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::json;
use wharf_api::commit::{NodeCommitGrant, NodeCommitGrantRequest};
use wharf_api::preheat::{PreheatAssignment, PreheatReport};
use wharf_api::{
    ConfigMap, Endpoints, FalconSample, IpClaim, Node, NodeInitProfile, PersistentVolumeClaim, Pod,
    PodEventReport, PodStatus, PodUsage, Secret, Service,
};

use wharf_p2p::wire::{
    PeerReport, ServerKey, TRACKER_KEY_PATH, TRACKER_REPORTS_PATH, TRACKER_TASKS_PATH,
    TaskAssignment, TaskRequest,
};

use crate::AgentError;
use crate::service_view::ServiceView;

/// A change to a pod an agent follows.
#[derive(Clone, Debug)]
pub enum PodChange {
    /// Created or changed.
    Upsert(Box<Pod>),
    /// Deleted.
    Deleted {
        /// Project.
        project: String,
        /// Name.
        name: String,
    },
}

/// Stream of pod changes.
pub type PodChanges = BoxStream<'static, Result<PodChange, AgentError>>;

/// A change to the services and endpoints a node forwards.
#[derive(Clone, Debug)]
pub enum ServiceChange {
    /// A service created or changed.
    Service(Box<Service>),
    /// A service's endpoints created or changed.
    Endpoints(Box<Endpoints>),
    /// A service deleted.
    ServiceDeleted {
        /// Project.
        project: String,
        /// Name.
        name: String,
    },
    /// A service's endpoints deleted.
    EndpointsDeleted {
        /// Project.
        project: String,
        /// Name.
        name: String,
    },
}

/// Stream of service and endpoints changes.
pub type ServiceChanges = BoxStream<'static, Result<ServiceChange, AgentError>>;

/// The control-plane operations an agent needs.
#[async_trait]
pub trait NodeApi: Send + Sync + 'static {
    /// Registers (or refreshes) a node.
    async fn register(&self, node: Node) -> Result<Node, AgentError>;
    /// Renews a node's heartbeat lease (or takes a new one); returns it.
    async fn heartbeat(
        &self,
        node: &str,
        lease: Option<u64>,
        ttl: Duration,
    ) -> Result<u64, AgentError>;
    /// Pods bound to `node` (every pod with `None`) and the revision to watch from.
    async fn list_pods(&self, node: Option<&str>) -> Result<(Vec<Pod>, u64), AgentError>;
    /// Changes to those pods after `revision`.
    async fn watch_pods(&self, node: Option<&str>, revision: u64)
    -> Result<PodChanges, AgentError>;
    /// The init profile of `node`'s pool and its hash; none by default
    /// (a control plane without inventory).
    async fn init_profile(&self, _node: &str) -> Result<NodeInitProfile, AgentError> {
        Ok(NodeInitProfile::default())
    }
    /// Reports a pod's status.
    async fn set_pod_status(
        &self,
        project: &str,
        name: &str,
        status: &PodStatus,
    ) -> Result<(), AgentError>;
    /// Records an event about pod `project/name` (besides those its
    /// status changes imply).
    async fn pod_event(
        &self,
        project: &str,
        name: &str,
        event: &PodEventReport,
    ) -> Result<(), AgentError>;
    /// Claims the pool address a bound pod asks for (or returns the one it
    /// holds); `None` when it asks for no pool.
    async fn claim_ip(&self, project: &str, name: &str) -> Result<Option<IpClaim>, AgentError>;
    /// Gives back the address held by pod `project/name` with `uid`.
    async fn release_ip(&self, project: &str, name: &str, uid: &str) -> Result<(), AgentError>;
    /// Confirms that Terminating pod `project/name` with `uid` stopped and
    /// released what it held, so that its object goes.
    async fn pod_stopped(&self, project: &str, name: &str, uid: &str) -> Result<(), AgentError>;
    /// Whether the server lets the holder of `token` do `access` to pod
    /// `project/name` (for the agent's own endpoint).
    async fn may_access_pod(
        &self,
        token: &str,
        project: &str,
        name: &str,
        access: PodAccess,
    ) -> Result<bool, AgentError>;
    /// Asks the server whether the user's token in `request` may commit
    /// the container to the image it names; a yes lets node `node`'s
    /// registry credential push to that one repository until the grant
    /// ends or expires. A refusal is [`AgentError::Refused`] with the
    /// server's status. Control planes without a registry grant nothing.
    async fn commit_grant(
        &self,
        node: &str,
        request: &NodeCommitGrantRequest,
    ) -> Result<NodeCommitGrant, AgentError> {
        let _ = (node, request);
        Err(AgentError::Refused {
            status: 501,
            message: "this control plane has no registry to commit to".into(),
        })
    }
    /// Ends a grant [`NodeApi::commit_grant`] gave, once the commit is over.
    async fn end_commit_grant(
        &self,
        node: &str,
        grant: &NodeCommitGrant,
    ) -> Result<(), AgentError> {
        let _ = (node, grant);
        Ok(())
    }
    /// Whether the server lets the holder of `token` scrape metrics (for
    /// the agent's own `/metrics`). Nodes without a server say no.
    async fn may_read_metrics(&self, _token: &str) -> Result<bool, AgentError> {
        Ok(false)
    }
    /// ConfigMap `project/name`, which a pod bound to `node` uses (the
    /// server refuses others); `None` when it does not exist.
    async fn config_map(
        &self,
        node: &str,
        project: &str,
        name: &str,
    ) -> Result<Option<ConfigMap>, AgentError>;
    /// Secret `project/name` with its values, which a pod bound to `node`
    /// uses (the server refuses others); `None` when it does not exist.
    async fn secret(
        &self,
        node: &str,
        project: &str,
        name: &str,
    ) -> Result<Option<Secret>, AgentError>;
    /// The PersistentVolumeClaims bound to `node`, and no others.
    async fn claims(&self, node: &str) -> Result<Vec<PersistentVolumeClaim>, AgentError>;
    /// Reports one sample of the usage of `node`'s running containers.
    async fn report_usage(&self, node: &str, pods: &[PodUsage]) -> Result<(), AgentError>;
    /// Pushes one batch of `node`'s metrics (its own, its containers',
    /// and user pushes it forwards) into the server's time-series store.
    async fn push_metrics(&self, node: &str, samples: &[FalconSample]) -> Result<(), AgentError>;
    /// Every service and every endpoints object (each node forwards every
    /// service), and the revision to watch them from.
    async fn node_services(&self, node: &str) -> Result<(ServiceView, u64), AgentError>;
    /// Changes to services and endpoints after `revision`.
    async fn watch_services(&self, node: &str, revision: u64)
    -> Result<ServiceChanges, AgentError>;
    /// The P2P tracker's grant-signing key (`GET /api/v1/p2p/key`).
    /// Control planes without a tracker answer `NotFound`: the node then
    /// pulls from the registry only.
    async fn p2p_key(&self) -> Result<ServerKey, AgentError> {
        Err(AgentError::NotFound("no p2p tracker".into()))
    }
    /// Starts fetching a blob through P2P (`POST /api/v1/p2p/tasks`).
    async fn p2p_task(&self, request: &TaskRequest) -> Result<TaskAssignment, AgentError> {
        let _ = request;
        Err(AgentError::NotFound("no p2p tracker".into()))
    }
    /// Reports a blob's progress (`POST /api/v1/p2p/reports`).
    async fn p2p_report(&self, report: &PeerReport) -> Result<TaskAssignment, AgentError> {
        let _ = report;
        Err(AgentError::NotFound("no p2p tracker".into()))
    }

    /// The preheats `node` has yet to finish (images to pull into its
    /// cache); none from a control plane without a registry.
    async fn preheats(&self, node: &str) -> Result<Vec<PreheatAssignment>, AgentError> {
        let _ = node;
        Ok(Vec::new())
    }
    /// Reports `node`'s progress on preheat `project/name`. Control planes
    /// without a registry hand out no preheats to report on.
    async fn report_preheat(
        &self,
        node: &str,
        project: &str,
        name: &str,
        report: &PreheatReport,
    ) -> Result<(), AgentError> {
        let _ = (node, project, name, report);
        Ok(())
    }
}

/// What a caller of the agent's endpoint wants with a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodAccess {
    /// Read its logs: whoever may see the pod.
    Read,
    /// Run commands in it or reach its ports (`exec`, `port-forward`): a
    /// stronger right, since it acts inside the workload.
    Exec,
}

/// Supplies bearer tokens for the API, refreshing them when refused.
#[async_trait]
pub trait TokenSource: Send + Sync + 'static {
    /// The current access token.
    async fn token(&self) -> Result<String, AgentError>;
    /// A new access token after the current one was refused.
    async fn refresh(&self) -> Result<String, AgentError>;
}

/// The control plane over its HTTP API.
pub struct HttpNodeApi {
    base: String,
    http: reqwest::Client,
    tokens: Arc<dyn TokenSource>,
    request_timeout: Duration,
}

#[derive(Deserialize)]
struct List<T> {
    items: Vec<T>,
    metadata: ListMeta,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListMeta {
    resource_version: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NodeServices {
    services: Vec<Service>,
    endpoints: Vec<Endpoints>,
    resource_version: String,
}

#[derive(Deserialize)]
struct WatchLine {
    #[serde(rename = "type")]
    kind: String,
    object: serde_json::Value,
}

/// How long a call to the P2P tracker may take: a pull waits for the
/// first one, and the registry serves the layer anyway when it fails.
const TRACKER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a call to the server (not a watch) may take by default, answer
/// included:
/// a server that accepted the connection and then stalls must not hold a
/// pod's worker (its stop confirmation, its status) forever.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl HttpNodeApi {
    /// An API client for the server at `base` (e.g. `http://10.0.0.1:7700`).
    pub fn new(base: &str, tokens: Arc<dyn TokenSource>) -> Result<HttpNodeApi, AgentError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| AgentError::Api(format!("http client: {e}")))?;
        Ok(HttpNodeApi {
            base: base.trim_end_matches('/').to_string(),
            http,
            tokens,
            request_timeout: REQUEST_TIMEOUT,
        })
    }

    /// The same client with calls limited to `limit` instead of
    /// [`REQUEST_TIMEOUT`].
    pub fn with_request_timeout(mut self, limit: Duration) -> HttpNodeApi {
        self.request_timeout = limit;
        self
    }

    /// Sends a request built by `build`, refreshing the token once on 401;
    /// it and its answer's body must be done within the request timeout.
    async fn send(
        &self,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, AgentError> {
        let limit = self.request_timeout;
        self.send_within(|http| build(http).timeout(limit)).await
    }

    /// [`Self::send`] with no time limit but the caller's (watches stay
    /// open as long as the server keeps them).
    async fn send_within(
        &self,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, AgentError> {
        let response = self.answer(build).await?;
        if response.status().is_success() {
            return Ok(response);
        }
        let (status, message) = refusal(response).await;
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(AgentError::NotFound(message));
        }
        Err(AgentError::Api(message))
    }

    /// The server's answer to the request `build` makes, whatever its
    /// status, after one refresh of a refused token.
    async fn answer(
        &self,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, AgentError> {
        let token = self.tokens.token().await?;
        let response = build(&self.http)
            .bearer_auth(token)
            .send()
            .await
            .map_err(transport)?;
        let response = if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            let token = self.tokens.refresh().await?;
            build(&self.http)
                .bearer_auth(token)
                .send()
                .await
                .map_err(transport)?
        } else {
            response
        };
        Ok(response)
    }

    fn pods_url(&self, node: Option<&str>) -> String {
        match node {
            Some(node) => format!("{}/api/v1/pods?nodeName={node}", self.base),
            None => format!("{}/api/v1/pods?", self.base),
        }
    }
}

/// The status of a refusal and the server's message.
async fn refusal(response: reqwest::Response) -> (reqwest::StatusCode, String) {
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    // The server's message already says what kind of failure it was
    // ("conflict: ..."); the status line only stands in for a missing one.
    let message = match body["error"]["message"].as_str() {
        Some(message) => message.to_string(),
        None => format!("{status}"),
    };
    (status, message)
}

fn transport(err: reqwest::Error) -> AgentError {
    AgentError::Unreachable(err.to_string())
}

#[async_trait]
impl NodeApi for HttpNodeApi {
    async fn register(&self, node: Node) -> Result<Node, AgentError> {
        let url = format!("{}/api/v1/nodes", self.base);
        let response = self.send(|http| http.post(&url).json(&node)).await?;
        response.json().await.map_err(transport)
    }

    async fn heartbeat(
        &self,
        node: &str,
        lease: Option<u64>,
        ttl: Duration,
    ) -> Result<u64, AgentError> {
        let url = format!("{}/api/v1/nodes/{node}/heartbeat", self.base);
        let body = json!({ "lease": lease, "ttlMillis": ttl.as_millis() as u64 });
        let response = self.send(|http| http.put(&url).json(&body)).await?;
        let answer: serde_json::Value = response.json().await.map_err(transport)?;
        answer["lease"]
            .as_u64()
            .ok_or_else(|| AgentError::Api("heartbeat answer has no lease".into()))
    }

    async fn init_profile(&self, node: &str) -> Result<NodeInitProfile, AgentError> {
        let url = format!("{}/api/v1/nodes/{node}/init", self.base);
        let response = self
            .send_within(|http| http.get(&url).timeout(TRACKER_TIMEOUT))
            .await?;
        response.json().await.map_err(transport)
    }

    async fn list_pods(&self, node: Option<&str>) -> Result<(Vec<Pod>, u64), AgentError> {
        let url = self.pods_url(node);
        let list: List<Pod> = self
            .send(|http| http.get(&url))
            .await?
            .json()
            .await
            .map_err(transport)?;
        let revision = list.metadata.resource_version.parse().unwrap_or(0);
        Ok((list.items, revision))
    }

    async fn watch_pods(
        &self,
        node: Option<&str>,
        revision: u64,
    ) -> Result<PodChanges, AgentError> {
        let url = format!(
            "{}&watch=true&resourceVersion={revision}",
            self.pods_url(node)
        );
        self.watch(&url, parse_watch_line).await
    }

    async fn set_pod_status(
        &self,
        project: &str,
        name: &str,
        status: &PodStatus,
    ) -> Result<(), AgentError> {
        let url = format!("{}/api/v1/projects/{project}/pods/{name}/status", self.base);
        self.send(|http| http.put(&url).json(status)).await?;
        Ok(())
    }

    async fn pod_event(
        &self,
        project: &str,
        name: &str,
        event: &PodEventReport,
    ) -> Result<(), AgentError> {
        let url = format!("{}/api/v1/projects/{project}/pods/{name}/events", self.base);
        self.send(|http| http.post(&url).json(event)).await?;
        Ok(())
    }

    async fn claim_ip(&self, project: &str, name: &str) -> Result<Option<IpClaim>, AgentError> {
        let url = format!("{}/api/v1/projects/{project}/pods/{name}/ip", self.base);
        let response = self.send(|http| http.put(&url)).await?;
        response.json().await.map_err(transport)
    }

    async fn release_ip(&self, project: &str, name: &str, uid: &str) -> Result<(), AgentError> {
        // A uid is a UUID: nothing in it needs escaping.
        let url = format!(
            "{}/api/v1/projects/{project}/pods/{name}/ip?uid={uid}",
            self.base
        );
        self.send(|http| http.delete(&url)).await?;
        Ok(())
    }

    async fn report_usage(&self, node: &str, pods: &[PodUsage]) -> Result<(), AgentError> {
        let url = format!("{}/api/v1/nodes/{node}/usage", self.base);
        self.send(|http| http.put(&url).json(pods)).await?;
        Ok(())
    }

    async fn push_metrics(&self, node: &str, samples: &[FalconSample]) -> Result<(), AgentError> {
        let url = format!("{}/api/v1/nodes/{node}/metrics", self.base);
        self.send(|http| http.post(&url).json(samples)).await?;
        Ok(())
    }

    async fn pod_stopped(&self, project: &str, name: &str, uid: &str) -> Result<(), AgentError> {
        let url = format!(
            "{}/api/v1/projects/{project}/pods/{name}/stopped?uid={uid}",
            self.base
        );
        self.send(|http| http.put(&url)).await?;
        Ok(())
    }

    async fn may_access_pod(
        &self,
        token: &str,
        project: &str,
        name: &str,
        access: PodAccess,
    ) -> Result<bool, AgentError> {
        let url = match access {
            PodAccess::Read => format!("{}/api/v1/projects/{project}/pods/{name}", self.base),
            PodAccess::Exec => format!("{}/api/v1/projects/{project}/pods/{name}/exec", self.base),
        };
        self.token_may_get(&url, token).await
    }

    async fn commit_grant(
        &self,
        node: &str,
        request: &NodeCommitGrantRequest,
    ) -> Result<NodeCommitGrant, AgentError> {
        let url = format!("{}/api/v1/nodes/{node}/commitgrants", self.base);
        let limit = self.request_timeout;
        let response = self
            .answer(|http| http.post(&url).json(request).timeout(limit))
            .await?;
        if response.status().is_success() {
            return response.json().await.map_err(transport);
        }
        let (status, message) = refusal(response).await;
        Err(AgentError::Refused {
            status: status.as_u16(),
            message,
        })
    }

    async fn end_commit_grant(
        &self,
        node: &str,
        grant: &NodeCommitGrant,
    ) -> Result<(), AgentError> {
        // Repository names and grant ids need no escaping in a URL.
        let url = format!(
            "{}/api/v1/nodes/{node}/commitgrants/{}?repository={}",
            self.base, grant.id, grant.repository
        );
        self.send(|http| http.delete(&url)).await.map(drop)
    }

    async fn may_read_metrics(&self, token: &str) -> Result<bool, AgentError> {
        let url = format!("{}/api/v1/metrics/access", self.base);
        self.token_may_get(&url, token).await
    }

    async fn config_map(
        &self,
        node: &str,
        project: &str,
        name: &str,
    ) -> Result<Option<ConfigMap>, AgentError> {
        self.config_object(node, "configmaps", project, name).await
    }

    async fn secret(
        &self,
        node: &str,
        project: &str,
        name: &str,
    ) -> Result<Option<Secret>, AgentError> {
        self.config_object(node, "secrets", project, name).await
    }

    async fn claims(&self, node: &str) -> Result<Vec<PersistentVolumeClaim>, AgentError> {
        let url = format!("{}/api/v1/nodes/{node}/persistentvolumeclaims", self.base);
        let response = self
            .send_within(|http| http.get(&url).timeout(TRACKER_TIMEOUT))
            .await?;
        let list: serde_json::Value = response.json().await.map_err(transport)?;
        serde_json::from_value(list["items"].clone()).map_err(|e| {
            AgentError::Api(format!("the claim list is not what the agent expects: {e}"))
        })
    }

    async fn node_services(&self, node: &str) -> Result<(ServiceView, u64), AgentError> {
        let url = format!("{}/api/v1/nodes/{node}/services", self.base);
        let list: NodeServices = self
            .send(|http| http.get(&url))
            .await?
            .json()
            .await
            .map_err(transport)?;
        let view = ServiceView {
            services: list.services,
            endpoints: list.endpoints,
        };
        Ok((view, list.resource_version.parse().unwrap_or(0)))
    }

    async fn watch_services(
        &self,
        node: &str,
        revision: u64,
    ) -> Result<ServiceChanges, AgentError> {
        let url = format!(
            "{}/api/v1/nodes/{node}/services?watch=true&resourceVersion={revision}",
            self.base
        );
        self.watch(&url, parse_service_line).await
    }

    async fn p2p_key(&self) -> Result<ServerKey, AgentError> {
        let url = format!("{}{TRACKER_KEY_PATH}", self.base);
        let response = self
            .send_within(|http| http.get(&url).timeout(TRACKER_TIMEOUT))
            .await?;
        response.json().await.map_err(transport)
    }

    async fn p2p_task(&self, request: &TaskRequest) -> Result<TaskAssignment, AgentError> {
        let url = format!("{}{TRACKER_TASKS_PATH}", self.base);
        let response = self
            .send_within(|http| http.post(&url).json(request).timeout(TRACKER_TIMEOUT))
            .await?;
        response.json().await.map_err(transport)
    }

    async fn p2p_report(&self, report: &PeerReport) -> Result<TaskAssignment, AgentError> {
        let url = format!("{}{TRACKER_REPORTS_PATH}", self.base);
        let response = self
            .send_within(|http| http.post(&url).json(report).timeout(TRACKER_TIMEOUT))
            .await?;
        response.json().await.map_err(transport)
    }

    async fn preheats(&self, node: &str) -> Result<Vec<PreheatAssignment>, AgentError> {
        let url = format!("{}/api/v1/nodes/{node}/preheats", self.base);
        let response = self.send(|http| http.get(&url)).await?;
        let list: serde_json::Value = response.json().await.map_err(transport)?;
        serde_json::from_value(list["items"].clone()).map_err(|e| {
            AgentError::Api(format!(
                "the preheat list is not what the agent expects: {e}"
            ))
        })
    }

    async fn report_preheat(
        &self,
        node: &str,
        project: &str,
        name: &str,
        report: &PreheatReport,
    ) -> Result<(), AgentError> {
        // Node, project and preheat names need no escaping in a URL.
        let url = format!(
            "{}/api/v1/nodes/{node}/preheats/{project}/{name}",
            self.base
        );
        self.send(|http| http.put(&url).json(report))
            .await
            .map(drop)
    }
}

impl HttpNodeApi {
    /// Whether the server answers a GET of `url` with the caller's `token`:
    /// each right the agent's endpoint checks has a route the server guards
    /// with it, so asking that route is asking the server's own rules.
    async fn token_may_get(&self, url: &str, token: &str) -> Result<bool, AgentError> {
        let response = self
            .http
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(transport)?;
        Ok(response.status().is_success())
    }

    /// The changes a watch at `url` streams, each line read by `parse`
    /// (`None`: a line of no interest).
    async fn watch<C: Send + 'static>(
        &self,
        url: &str,
        parse: fn(&str) -> Result<Option<C>, AgentError>,
    ) -> Result<BoxStream<'static, Result<C, AgentError>>, AgentError> {
        let response = self.send_within(|http| http.get(url)).await?;
        let bytes = response.bytes_stream().map_err(transport);
        Ok(ndjson_lines(bytes)
            .filter_map(move |line| {
                std::future::ready(match line {
                    Err(err) => Some(Err(err)),
                    Ok(line) => parse(&line).transpose(),
                })
            })
            .boxed())
    }

    /// `GET /api/v1/nodes/{node}/{kind}/{project}/{name}`; a 404 is `None`.
    async fn config_object<T: serde::de::DeserializeOwned>(
        &self,
        node: &str,
        kind: &str,
        project: &str,
        name: &str,
    ) -> Result<Option<T>, AgentError> {
        let url = format!("{}/api/v1/nodes/{node}/{kind}/{project}/{name}", self.base);
        match self.send(|http| http.get(&url)).await {
            Ok(response) => Ok(Some(response.json().await.map_err(transport)?)),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(err),
        }
    }
}

fn parse_watch_line(line: &str) -> Result<Option<PodChange>, AgentError> {
    let event = watch_event(line)?;
    match event.kind.as_str() {
        "ADDED" | "MODIFIED" => Ok(Some(PodChange::Upsert(Box::new(decode(event.object)?)))),
        "DELETED" => {
            let (project, name) = deleted_key(&event.object);
            Ok(Some(PodChange::Deleted { project, name }))
        }
        _ => Ok(None),
    }
}

/// A line of the node's service watch: a service or an endpoints object,
/// told apart by the object's `kind`.
fn parse_service_line(line: &str) -> Result<Option<ServiceChange>, AgentError> {
    let event = watch_event(line)?;
    let endpoints = event.object["kind"] == "Endpoints";
    match event.kind.as_str() {
        "ADDED" | "MODIFIED" if endpoints => Ok(Some(ServiceChange::Endpoints(Box::new(decode(
            event.object,
        )?)))),
        "ADDED" | "MODIFIED" => Ok(Some(ServiceChange::Service(Box::new(decode(
            event.object,
        )?)))),
        "DELETED" => {
            let (project, name) = deleted_key(&event.object);
            Ok(Some(if endpoints {
                ServiceChange::EndpointsDeleted { project, name }
            } else {
                ServiceChange::ServiceDeleted { project, name }
            }))
        }
        _ => Ok(None),
    }
}

/// One watch line; an `ERROR` line is the watch's failure.
fn watch_event(line: &str) -> Result<WatchLine, AgentError> {
    let event: WatchLine =
        serde_json::from_str(line).map_err(|e| AgentError::Api(format!("watch event: {e}")))?;
    if event.kind == "ERROR" {
        return Err(AgentError::Api(format!(
            "watch: {}",
            event.object["message"]
        )));
    }
    Ok(event)
}

fn decode<T: serde::de::DeserializeOwned>(object: serde_json::Value) -> Result<T, AgentError> {
    let kind = object["kind"].as_str().unwrap_or("object").to_string();
    serde_json::from_value(object).map_err(|e| AgentError::Api(format!("{kind}: {e}")))
}

/// The project and name of a deleted object.
fn deleted_key(object: &serde_json::Value) -> (String, String) {
    let field = |name: &str| {
        object["metadata"][name]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    (field("project"), field("name"))
}

/// Splits a byte stream into lines.
fn ndjson_lines(
    bytes: impl futures_util::Stream<Item = Result<bytes::Bytes, AgentError>> + Send + 'static,
) -> BoxStream<'static, Result<String, AgentError>> {
    futures_util::stream::unfold(
        (Box::pin(bytes), Vec::<u8>::new()),
        |(mut bytes, mut buffer)| async move {
            loop {
                if let Some(at) = buffer.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=at).collect();
                    let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                    return Some((Ok(text), (bytes, buffer)));
                }
                match bytes.next().await {
                    Some(Ok(chunk)) => buffer.extend_from_slice(&chunk),
                    Some(Err(err)) => return Some((Err(err), (bytes, buffer))),
                    None => return None,
                }
            }
        },
    )
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;

    #[async_trait]
    impl TokenSource for Fixed {
        async fn token(&self) -> Result<String, AgentError> {
            Ok("t".into())
        }
        async fn refresh(&self) -> Result<String, AgentError> {
            Ok("t".into())
        }
    }

    #[tokio::test]
    async fn a_server_that_stalls_after_accepting_fails_the_call_in_time() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        // Accepts, reads nothing, answers nothing.
        let stall = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let api = HttpNodeApi::new(&base, Arc::new(Fixed))
            .unwrap()
            .with_request_timeout(Duration::from_millis(300));
        let started = std::time::Instant::now();
        let err = api.pod_stopped("shop", "web-1", "u1").await.unwrap_err();
        assert!(matches!(err, AgentError::Unreachable(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        stall.abort();
    }

    /// A server whose tracker routes answer `status`, or the key when
    /// `status` is 200.
    async fn tracker_answering(status: u16) -> HttpNodeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let answer = move |headers: axum::http::HeaderMap| async move {
            assert_eq!(headers["authorization"], "Bearer t", "as the node");
            let status = axum::http::StatusCode::from_u16(status).unwrap();
            let body = json!({"keyId": "k1", "publicKey": "AAAA"});
            (status, axum::Json(body))
        };
        let router = axum::Router::new()
            .route(TRACKER_KEY_PATH, axum::routing::get(answer))
            .route(TRACKER_TASKS_PATH, axum::routing::post(answer));
        tokio::spawn(async move { axum::serve(listener, router).await });
        HttpNodeApi::new(&base, Arc::new(Fixed)).unwrap()
    }

    #[tokio::test]
    async fn the_tracker_calls_reach_their_routes_and_refusals_are_errors() {
        let key = tracker_answering(200).await.p2p_key().await.unwrap();
        assert_eq!(key.key_id, "k1");

        let request = TaskRequest {
            digest: wharf_oci::Digest::of(wharf_oci::DigestAlgorithm::Sha256, b"x"),
            size: 1,
            repository: "shop/web".into(),
        };
        let older = tracker_answering(404).await.p2p_task(&request).await;
        assert!(matches!(older, Err(AgentError::NotFound(_))), "{older:?}");
        let unavailable = tracker_answering(503).await.p2p_task(&request).await;
        assert!(
            matches!(unavailable, Err(AgentError::Api(_))),
            "{unavailable:?}"
        );
    }
}
