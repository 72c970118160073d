//! The registry's side of the Docker token scheme: bearer tokens checked
//! against the access they grant, challenges that tell clients where to get
//! a token, and registry events recorded in the audit log.

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use http::HeaderMap;
use wharf_audit::{AuditEvent, AuditLog, Outcome};
use wharf_auth::{AccessEntry, Action, AuthError, Identity, Principal};
use wharf_oci::RepositoryName;
use wharf_registry::http::{
    Authorizer, Caller, EventKind, EventSink, Need, Refusal, RegistryEvent,
};
use wharf_registry::{QuotaSource, RegistryError};

/// Admits registry requests that carry a token granting what they need.
pub(crate) struct TokenAuthorizer {
    pub identity: Arc<Identity>,
    pub audit: AuditLog,
    /// Base URL clients reach the server at; derived from `Host` when unset.
    pub public_url: Option<String>,
}

/// The audit record of a refused token (`area`: `registry` or `api`): under
/// the account it names when this server signed it (an expired or revoked
/// token), `unknown` when it is forged or garbage and names no one.
pub(crate) fn token_rejected(
    identity: &Identity,
    token: &str,
    area: &str,
    source: Option<IpAddr>,
    why: String,
) -> AuditEvent {
    let actor = identity
        .signed_subject(token)
        .unwrap_or_else(|| "unknown".into());
    AuditEvent::new(actor, "token.rejected", area, Outcome::Failed)
        .with_source(source)
        .with_detail(why)
}

/// The bearer token of a request, if any.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The base URL of this server as the client addressed it.
pub(crate) fn base_url(public_url: Option<&str>, headers: &HeaderMap) -> String {
    if let Some(url) = public_url {
        return url.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or("localhost");
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
    {
        Some("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}")
}

fn scope_of(need: &Need) -> Option<String> {
    match need {
        Need::Login => None,
        Need::Catalog => Some("registry:catalog:*".into()),
        Need::Pull(repo) => Some(format!("repository:{repo}:pull")),
        Need::Push(repo) => Some(format!("repository:{repo}:pull,push")),
        Need::Delete(repo) => Some(format!("repository:{repo}:delete")),
    }
}

/// Whether the token names the resource at all, and whether it grants the need.
fn lookup(access: &[AccessEntry], need: &Need) -> (bool, bool) {
    let (kind, name, action) = match need {
        Need::Login => return (true, true),
        Need::Catalog => ("registry", "catalog", "*"),
        Need::Pull(repo) => ("repository", repo.as_str(), Action::Pull.as_str()),
        Need::Push(repo) => ("repository", repo.as_str(), Action::Push.as_str()),
        Need::Delete(repo) => ("repository", repo.as_str(), Action::Delete.as_str()),
    };
    let entries: Vec<&AccessEntry> = access
        .iter()
        .filter(|e| e.kind == kind && e.name == name)
        .collect();
    let granted = entries
        .iter()
        .any(|e| e.actions.iter().any(|a| a == action || a == "*"));
    (!entries.is_empty(), granted)
}

/// The resource and action a need is about, for messages and audit records.
fn describe(need: &Need) -> (String, Option<Action>) {
    match need {
        Need::Pull(repo) => (repo.to_string(), Some(Action::Pull)),
        Need::Push(repo) => (repo.to_string(), Some(Action::Push)),
        Need::Delete(repo) => (repo.to_string(), Some(Action::Delete)),
        Need::Catalog | Need::Login => ("catalog".to_string(), None),
    }
}

impl TokenAuthorizer {
    /// The `WWW-Authenticate` value telling the client where to get a token
    /// for `need`.
    fn challenge(&self, headers: &HeaderMap, need: &Need, error: Option<&str>) -> String {
        let realm = format!(
            "{}/service/token",
            base_url(self.public_url.as_deref(), headers)
        );
        let mut challenge = format!(
            "Bearer realm=\"{realm}\",service=\"{}\"",
            self.identity.config().service
        );
        if let Some(scope) = scope_of(need) {
            challenge.push_str(&format!(",scope=\"{scope}\""));
        }
        if let Some(error) = error {
            challenge.push_str(&format!(",error=\"{error}\""));
        }
        challenge
    }

    fn unauthorized(
        &self,
        headers: &HeaderMap,
        need: &Need,
        error: Option<&str>,
        message: String,
    ) -> RegistryError {
        RegistryError::Unauthorized {
            message,
            challenge: self.challenge(headers, need, error),
        }
    }

    /// Whether `principal` may do what `need` asks, right now.
    async fn allowed(&self, principal: &Principal, need: &Need) -> Result<bool, RegistryError> {
        let internal = |e: AuthError| RegistryError::Internal(e.to_string());
        Ok(match need {
            Need::Login => true,
            Need::Catalog => {
                *principal != Principal::Anonymous
                    || self
                        .identity
                        .settings()
                        .await
                        .map_err(internal)?
                        .anonymous_pull
            }
            Need::Pull(repo) | Need::Push(repo) | Need::Delete(repo) => {
                let action = describe(need).1.expect("repository needs have an action");
                self.identity
                    .actions_on(principal, repo.project())
                    .await
                    .map_err(internal)?
                    .contains(action)
            }
        })
    }
}

#[async_trait]
impl Authorizer for TokenAuthorizer {
    async fn admit(
        &self,
        headers: &HeaderMap,
        source: Option<IpAddr>,
        need: &Need,
    ) -> Result<Caller, RegistryError> {
        let Some(token) = bearer(headers) else {
            return Err(self.unauthorized(headers, need, None, "no token given".into()));
        };
        let (claims, principal) = match self.identity.verify_registry_token(token).await {
            Ok(verified) => verified,
            Err(AuthError::Unauthenticated(why)) => {
                self.audit.record(token_rejected(
                    &self.identity,
                    token,
                    "registry",
                    source,
                    why.clone(),
                ));
                return Err(self.unauthorized(headers, need, Some("invalid_token"), why));
            }
            Err(other) => return Err(RegistryError::Internal(other.to_string())),
        };
        let (mentioned, granted) = lookup(&claims.access, need);
        if granted {
            // A node pushes only while a commit it runs holds a grant: its
            // token may outlive the grant (by up to the token's lifetime),
            // so the grant is checked again on every push.
            if let (Need::Push(repo), Some(node)) = (need, principal.node_agent())
                && !self
                    .identity
                    .commit_push_granted(node, repo)
                    .await
                    .map_err(|e| RegistryError::Internal(e.to_string()))?
            {
                return Err(RegistryError::Denied(format!(
                    "node {node}'s commit grant for {repo} has ended"
                )));
            }
            return Ok(Caller {
                name: principal.name().to_string(),
                source,
                context: Arc::new(principal),
            });
        }
        let (resource, action) = describe(need);
        let action = action.map_or("list", Action::as_str);
        if !mentioned {
            // The client did not ask for this resource: tell it which scope to ask for.
            return Err(self.unauthorized(
                headers,
                need,
                Some("insufficient_scope"),
                format!("the token does not cover {resource}"),
            ));
        }
        if self.allowed(&principal, need).await? {
            // The client asked for less than it needs now (a pull token used
            // to push): point it at the wider scope, as RFC 6750 does.
            return Err(RegistryError::InsufficientScope {
                message: format!(
                    "the token does not grant {action} on {resource}; ask for a new one"
                ),
                challenge: self.challenge(headers, need, Some("insufficient_scope")),
            });
        }
        self.audit.record(
            AuditEvent::new(
                principal.name(),
                "access.denied",
                resource.clone(),
                Outcome::Denied,
            )
            .with_source(source)
            .with_detail(action),
        );
        Err(RegistryError::Denied(format!(
            "{} may not {action} {resource}",
            principal.name()
        )))
    }

    async fn may_pull(&self, caller: &Caller, repo: &RepositoryName) -> bool {
        let Some(principal) = caller.context.downcast_ref::<Principal>() else {
            return false;
        };
        // The same answer the token server gives (a node pulls everywhere).
        self.identity
            .registry_actions(principal, repo)
            .await
            .is_ok_and(|actions| actions.contains(Action::Pull))
    }
}

/// Registry events go to the audit log.
pub(crate) struct AuditSink(pub AuditLog);

impl EventSink for AuditSink {
    fn record(&self, event: RegistryEvent) {
        let action = match event.kind {
            EventKind::Push => "artifact.push",
            EventKind::Pull => "artifact.pull",
            EventKind::Delete => "artifact.delete",
        };
        let separator = if event.reference.contains(':') {
            '@'
        } else {
            ':'
        };
        let resource = format!("{}{separator}{}", event.repository, event.reference);
        let mut audit = AuditEvent::new(
            event.actor.clone(),
            action,
            resource.clone(),
            Outcome::Success,
        )
        .with_source(event.source);
        if let Some(digest) = event.digest {
            audit = audit.with_detail(digest.to_string());
        }
        self.0.record(audit);
        // A replicated write met a tag set by another write and the conflict
        // rule decided it: record the decision next to the write.
        if let Some(conflict) = event.conflict {
            self.0.record(
                AuditEvent::new(event.actor, "artifact.conflict", resource, Outcome::Success)
                    .with_source(event.source)
                    .with_detail(conflict),
            );
        }
    }

    fn refused(&self, refusal: Refusal) {
        self.0.record(
            AuditEvent::new(
                refusal.actor,
                refusal.action,
                refusal.resource,
                Outcome::Denied,
            )
            .with_source(refusal.source)
            .with_detail(refusal.reason),
        );
    }
}

/// Hands each registry event to several sinks (audit, replication).
pub(crate) struct EventFanOut(pub Vec<Arc<dyn EventSink>>);

impl EventSink for EventFanOut {
    fn record(&self, event: RegistryEvent) {
        if let Some((last, rest)) = self.0.split_last() {
            for sink in rest {
                sink.record(event.clone());
            }
            last.record(event);
        }
    }

    fn refused(&self, refusal: Refusal) {
        if let Some((last, rest)) = self.0.split_last() {
            for sink in rest {
                sink.refused(refusal.clone());
            }
            last.refused(refusal);
        }
    }
}

/// Project quotas come from the identity service.
pub(crate) struct ProjectQuotas(pub Arc<Identity>);

#[async_trait]
impl QuotaSource for ProjectQuotas {
    async fn quota(&self, project: &str) -> Option<u64> {
        self.0.project_quota(project).await.ok().flatten()
    }
}
