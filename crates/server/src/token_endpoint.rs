//! `/service/token`: the token server of the Docker registry token scheme.
//!
//! `GET` with optional Basic credentials (what docker, skopeo, podman and
//! oras use), and `POST` with an OAuth2 form (`grant_type=password` or
//! `refresh_token`, what docker uses once it holds a refresh token). The
//! token grants the intersection of the scopes asked for and what the caller
//! may do; asking for more is not an error, it just yields less.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Form, Query, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use wharf_audit::{AuditEvent, Outcome};
use wharf_auth::{AuthError, IssuedToken, Principal, Scope};

use crate::{AppState, ClientAddr};

/// Largest `Authorization` header read; longer ones are refused unread.
const MAX_AUTHORIZATION: usize = 4096;

type Params = Vec<(String, String)>;

fn param<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({ "errors": [{ "code": code, "message": message }] });
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"wharf\""),
        );
    }
    response
}

fn refusal(err: &AuthError) -> Response {
    match err {
        AuthError::Unauthenticated(message) => {
            error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
        }
        AuthError::RateLimited { retry_after_secs } => {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "TOOMANYREQUESTS",
                &err.to_string(),
            );
            if let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
        AuthError::Invalid(message) => error(StatusCode::BAD_REQUEST, "UNSUPPORTED", message),
        other => {
            tracing::error!(error = %other, "token request failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN",
                "internal error",
            )
        }
    }
}

/// `user:password` from a Basic `Authorization` header.
pub(crate) fn basic_credentials(
    headers: &HeaderMap,
) -> Result<Option<(String, String)>, AuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || AuthError::Unauthenticated("malformed credentials".into());
    if value.len() > MAX_AUTHORIZATION {
        return Err(malformed());
    }
    let value = value.to_str().map_err(|_| malformed())?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Err(malformed());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(AuthError::Unauthenticated(
            "use Basic credentials here".into(),
        ));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (user, password) = decoded.split_once(':').ok_or_else(malformed)?;
    Ok(Some((user.to_string(), password.to_string())))
}

/// Scopes from repeated `scope` parameters, each possibly space-separated.
fn scopes(values: impl Iterator<Item = String>) -> Result<Vec<Scope>, AuthError> {
    values
        .flat_map(|v| {
            v.split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .map(|s| Scope::parse(&s))
        .collect()
}

impl AppState {
    fn check_service(&self, service: Option<&str>) -> Result<(), AuthError> {
        let ours = &self.identity.config().service;
        match service {
            Some(asked) if asked != ours => Err(AuthError::Invalid(format!(
                "token requested for service {asked:?}; this server is {ours:?}"
            ))),
            _ => Ok(()),
        }
    }

    /// Records a refused token request that never reached a password check
    /// (those are recorded as logins), and passes the error on.
    fn refused(&self, source: Option<std::net::IpAddr>, err: AuthError) -> AuthError {
        self.refused_as("unknown", source, err)
    }

    /// As [`AppState::refused`], for a request whose actor is known: a
    /// refresh token this server signed names its account even when it is
    /// no longer valid.
    fn refused_as(
        &self,
        actor: &str,
        source: Option<std::net::IpAddr>,
        err: AuthError,
    ) -> AuthError {
        self.audit.record(
            AuditEvent::new(actor, "token.refused", "registry", Outcome::Failed)
                .with_source(source)
                .with_detail(err.to_string()),
        );
        err
    }

    async fn login(
        &self,
        user: &str,
        password: &str,
        source: Option<std::net::IpAddr>,
    ) -> Result<Principal, AuthError> {
        let outcome = self.identity.authenticate(user, password, source).await;
        let event = match &outcome {
            Ok(_) => AuditEvent::new(user, "login", "registry", Outcome::Success),
            Err(err) => AuditEvent::new(user, "login", "registry", Outcome::Failed)
                .with_detail(err.to_string()),
        };
        self.audit.record(event.with_source(source));
        outcome
    }

    async fn registry_token(
        &self,
        principal: &Principal,
        scopes: &[Scope],
    ) -> Result<IssuedToken, AuthError> {
        let access = self.identity.grant(principal, scopes).await?;
        self.identity.issue_registry_token(principal, access).await
    }
}

/// `GET /service/token?service=...&scope=...[&offline_token=true]`
pub(crate) async fn get_token(
    State(state): State<Arc<AppState>>,
    ClientAddr(source): ClientAddr,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    let result = async {
        let refused = |err| state.refused(source, err);
        state
            .check_service(param(&params, "service"))
            .map_err(refused)?;
        let scopes = scopes(
            params
                .iter()
                .filter(|(k, _)| k == "scope")
                .map(|(_, v)| v.clone()),
        )
        .map_err(refused)?;
        let principal = match basic_credentials(&headers).map_err(refused)? {
            Some((user, password)) => state.login(&user, &password, source).await?,
            None => Principal::Anonymous,
        };
        let token = state.registry_token(&principal, &scopes).await?;
        let refresh = match param(&params, "offline_token") {
            Some("true") if principal != Principal::Anonymous => {
                Some(state.identity.issue_refresh_token(&principal).await?.token)
            }
            _ => None,
        };
        Ok::<_, AuthError>((token, refresh))
    }
    .await;
    match result {
        Ok((token, refresh)) => {
            let mut body = json!({
                "token": token.token,
                "access_token": token.token,
                "expires_in": token.expires_in,
                "issued_at": wharf_api::rfc3339(token.issued_at.saturating_mul(1000)),
            });
            if let Some(refresh) = refresh {
                body["refresh_token"] = Value::String(refresh);
            }
            Json(body).into_response()
        }
        Err(err) => refusal(&err),
    }
}

/// `POST /service/token` with an OAuth2 form.
pub(crate) async fn post_token(
    State(state): State<Arc<AppState>>,
    ClientAddr(source): ClientAddr,
    Form(form): Form<Params>,
) -> Response {
    let result = async {
        let refused = |err| state.refused(source, err);
        state
            .check_service(param(&form, "service"))
            .map_err(refused)?;
        let scopes =
            scopes(param(&form, "scope").map(str::to_string).into_iter()).map_err(refused)?;
        let (principal, refresh) = match param(&form, "grant_type") {
            Some("password") => {
                let user = param(&form, "username").unwrap_or_default();
                let password = param(&form, "password").unwrap_or_default();
                let principal = state.login(user, password, source).await?;
                let refresh = match param(&form, "access_type") {
                    Some("offline") => {
                        Some(state.identity.issue_refresh_token(&principal).await?.token)
                    }
                    _ => None,
                };
                (principal, refresh)
            }
            Some("refresh_token") => {
                let refresh = param(&form, "refresh_token").unwrap_or_default();
                let principal =
                    state
                        .identity
                        .verify_refresh_token(refresh)
                        .await
                        .map_err(|err| {
                            let actor = state.identity.signed_subject(refresh);
                            state.refused_as(actor.as_deref().unwrap_or("unknown"), source, err)
                        })?;
                (principal, Some(refresh.to_string()))
            }
            other => {
                return Err(refused(AuthError::Invalid(format!(
                    "unsupported grant_type {other:?}: use password or refresh_token"
                ))));
            }
        };
        let token = state.registry_token(&principal, &scopes).await?;
        Ok::<_, AuthError>((
            token,
            refresh,
            param(&form, "scope").unwrap_or_default().to_string(),
        ))
    }
    .await;
    match result {
        Ok((token, refresh, scope)) => {
            let mut body = json!({
                "access_token": token.token,
                "expires_in": token.expires_in,
                "issued_at": wharf_api::rfc3339(token.issued_at.saturating_mul(1000)),
                "scope": scope,
            });
            if let Some(refresh) = refresh {
                body["refresh_token"] = Value::String(refresh);
            }
            Json(body).into_response()
        }
        Err(err) => refusal(&err),
    }
}
