//! Proxy cache projects in this server: which projects are caches (their
//! `proxy_cache` setting, read through [`Identity`]), the audit records of
//! what the cache fetches, and the checks of a new proxy project. The cache
//! itself is `wharf_replication::proxy`, which reaches the upstream with the
//! replication endpoint's client and credentials.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use wharf_audit::{AuditEvent, AuditLog, Outcome};
use wharf_auth::{AuthError, Identity, ProxyCache};
use wharf_registry::{Registry, RegistryError};
use wharf_replication::Replication;
use wharf_replication::proxy::{
    FetchHook, ProxyFetch, ProxyProjects, ProxySettings, PullThroughCache,
};

/// Shortest TTL accepted: a tag checked upstream on nearly every pull is
/// no cache. Longest: a week.
const MIN_TTL_SECS: u64 = 1;
const MAX_TTL_SECS: u64 = 7 * 24 * 3600;

/// How long a project's setting is reused without reading its record:
/// every registry read and write asks, and the setting changes only when
/// a project is created or deleted.
const SETTING_FRESHNESS: Duration = Duration::from_secs(1);

/// Projects' proxy settings, from their records, each read at most once a
/// second.
pub(crate) struct ProjectProxies {
    identity: Arc<Identity>,
    recent: Mutex<HashMap<String, (Instant, Option<ProxySettings>)>>,
}

impl ProjectProxies {
    pub(crate) fn new(identity: Arc<Identity>) -> ProjectProxies {
        ProjectProxies {
            identity,
            recent: Mutex::new(HashMap::new()),
        }
    }

    async fn read(&self, project: &str) -> Result<Option<ProxySettings>, RegistryError> {
        match self.identity.project(project).await {
            Ok(project) => Ok(project.proxy_cache.map(|proxy| ProxySettings {
                endpoint: proxy.endpoint,
                ttl: Duration::from_secs(proxy.ttl_secs),
            })),
            Err(AuthError::NotFound(_)) => Ok(None),
            Err(err) => Err(RegistryError::Internal(format!(
                "reading project {project}: {err}"
            ))),
        }
    }
}

#[async_trait]
impl ProxyProjects for ProjectProxies {
    async fn settings(&self, project: &str) -> Result<Option<ProxySettings>, RegistryError> {
        {
            let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, settings)) = recent.get(project)
                && at.elapsed() < SETTING_FRESHNESS
            {
                return Ok(settings.clone());
            }
        }
        let settings = self.read(project).await?;
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        // Names come from requests: keep only the last second's.
        if recent.len() > 1024 {
            recent.retain(|_, (at, _)| at.elapsed() < SETTING_FRESHNESS);
        }
        recent.insert(project.to_string(), (Instant::now(), settings.clone()));
        Ok(settings)
    }
}

/// The cache the registry routes consult, auditing each fetch.
pub(crate) fn pull_through_cache(
    registry: Arc<Registry>,
    proxies: Arc<ProjectProxies>,
    replication: &Replication,
    audit: AuditLog,
) -> PullThroughCache {
    PullThroughCache::new(registry, proxies, Arc::new(replication.clone()))
        .with_fetch_hook(fetch_auditor(audit))
}

/// `proxy.fetch` records: who pulled what from which endpoint, the digest
/// and size stored, or why the fetch failed.
fn fetch_auditor(audit: AuditLog) -> FetchHook {
    Arc::new(move |fetch: ProxyFetch| {
        let (outcome, detail) = match &fetch.error {
            None => (
                Outcome::Success,
                format!(
                    "from endpoint {}: {} ({} bytes)",
                    fetch.endpoint,
                    fetch.digest.as_ref().map(|d| d.as_str()).unwrap_or("-"),
                    fetch.bytes
                ),
            ),
            Some(error) => (
                Outcome::Failed,
                format!("from endpoint {}: {error}", fetch.endpoint),
            ),
        };
        audit.record(
            AuditEvent::new(fetch.actor, "proxy.fetch", fetch.resource, outcome)
                .with_source(fetch.source)
                .with_detail(detail),
        );
    })
}

/// The proxy setting of a project being created, checked: the endpoint
/// exists, the TTL is within bounds, and no repositories are left under
/// the name (a cache holds only what it fetched). Errors name the field.
pub(crate) async fn checked_setting(
    replication: &Replication,
    registry: &Registry,
    project: &str,
    endpoint: String,
    ttl_secs: Option<u64>,
) -> Result<ProxyCache, AuthError> {
    let ttl_secs = ttl_secs.unwrap_or(ProxyCache::DEFAULT_TTL_SECS);
    if !(MIN_TTL_SECS..=MAX_TTL_SECS).contains(&ttl_secs) {
        return Err(AuthError::Invalid(format!(
            "proxy_cache.ttl_secs: {ttl_secs} is outside {MIN_TTL_SECS}..={MAX_TTL_SECS} seconds"
        )));
    }
    let endpoints = replication
        .endpoints()
        .await
        .map_err(|e| AuthError::Invalid(format!("proxy_cache.endpoint: {e}")))?;
    if !endpoints.iter().any(|e| e.name == endpoint) {
        return Err(AuthError::Invalid(format!(
            "proxy_cache.endpoint: no replication endpoint named {endpoint:?} \
             (add it with `wharf replication endpoint add`)"
        )));
    }
    let occupied = registry
        .project_has_repositories(project)
        .await
        .map_err(|e| AuthError::Invalid(format!("project {project}: {e}")))?;
    if occupied {
        return Err(AuthError::Invalid(format!(
            "proxy_cache: project {project} still has repositories; \
             a proxy cache holds only what it fetches"
        )));
    }
    Ok(ProxyCache { endpoint, ttl_secs })
}
