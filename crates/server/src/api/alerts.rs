//! Alert rules, silences and webhook receivers, in a project
//! (`/api/v1/projects/{project}/alerts/...`: members read rules and
//! silences, maintainers and up write them and manage receivers) or
//! cluster-wide (`/api/v1/alerts/...`, administrators). One handler serves
//! both: the scope is the `{project}` path parameter, when there is one.
//! A receiver's secret is sealed before it is stored and never returned.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Extension, Path, State};
use axum::{Json, http::StatusCode};
use wharf_api::{AlertReceiver, AlertRule, Delivery, ObjectMeta, Silence, SilenceSpec};

use super::{ApiCaller, ApiErrorReply, ApiResult, Body as JsonBody};
use crate::AppState;
use crate::alerts::{now_ms, read_log, remove_log, secret_name};

type Params = Path<HashMap<String, String>>;

fn scope(params: &HashMap<String, String>) -> Option<String> {
    params.get("project").cloned()
}

fn name(params: &HashMap<String, String>) -> String {
    params.get("name").cloned().unwrap_or_default()
}

/// `project/kind/name`, or `kind/name` for the cluster's, for audit.
fn resource(project: &Option<String>, kind: &str, name: &str) -> String {
    match project {
        Some(project) => format!("{project}/{kind}/{name}"),
        None => format!("{kind}/{name}"),
    }
}

// ----- rules -----

/// `GET .../alerts/rules`: the rules with their alerts and history.
pub(crate) async fn list_rules(
    State(state): State<Arc<AppState>>,
    Path(params): Params,
) -> ApiResult<Json<Vec<AlertRule>>> {
    let objects = state.control.objects();
    Ok(Json(objects.list_scoped(scope(&params).as_deref()).await?))
}

/// `GET .../alerts/rules/{name}`
pub(crate) async fn get_rule(
    State(state): State<Arc<AppState>>,
    Path(params): Params,
) -> ApiResult<Json<AlertRule>> {
    let objects = state.control.objects();
    let rule = objects
        .require(scope(&params).as_deref(), &name(&params))
        .await?;
    Ok(Json(rule))
}

/// `POST .../alerts/rules`: creates or updates a rule (its status stays).
pub(crate) async fn apply_rule(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(params): Params,
    JsonBody(mut rule): JsonBody<AlertRule>,
) -> ApiResult<(StatusCode, Json<AlertRule>)> {
    let project = scope(&params);
    rule.metadata.project = project.clone();
    let resource = resource(&project, "alertrule", &rule.metadata.name);
    let work = async {
        // What the store would refuse at evaluation, refused now.
        wharf_tsdb::check_metric(&rule.spec.metric)
            .map_err(|e| ApiErrorReply::invalid(format!("spec.metric: {e}")))?;
        wharf_tsdb::Matcher::parse_list(&rule.spec.tags)
            .map_err(|e| ApiErrorReply::invalid(format!("spec.tags: {e}")))?;
        Ok::<_, ApiErrorReply>(state.control.objects().apply_alert_rule(rule).await?)
    };
    let (rule, created) = state
        .audited(&caller, "alertrule.apply", resource, work)
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(rule)))
}

/// `DELETE .../alerts/rules/{name}`
pub(crate) async fn delete_rule(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(params): Params,
) -> ApiResult<Json<AlertRule>> {
    let (project, name) = (scope(&params), name(&params));
    let objects = state.control.objects();
    let work = objects.delete::<AlertRule>(project.as_deref(), &name, None);
    let resource = resource(&project, "alertrule", &name);
    let deleted = state
        .audited(&caller, "alertrule.delete", resource, work)
        .await?;
    Ok(Json(deleted))
}

// ----- silences -----

/// `GET .../alerts/silences`: active and expired ones.
pub(crate) async fn list_silences(
    State(state): State<Arc<AppState>>,
    Path(params): Params,
) -> ApiResult<Json<Vec<Silence>>> {
    let objects = state.control.objects();
    Ok(Json(objects.list_scoped(scope(&params).as_deref()).await?))
}

/// `POST .../alerts/silences`: the body is the silence's spec; its name
/// is generated and its author is the caller.
pub(crate) async fn create_silence(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(params): Params,
    JsonBody(mut spec): JsonBody<SilenceSpec>,
) -> ApiResult<(StatusCode, Json<Silence>)> {
    let project = scope(&params);
    let name = format!("s-{:08x}", rand::random::<u32>());
    let resource = resource(&project, "silence", &name);
    spec.author = caller.principal.name().to_owned();
    let silence = Silence {
        metadata: ObjectMeta {
            name,
            project,
            ..ObjectMeta::default()
        },
        spec,
    };
    let work = async {
        if silence.spec.matchers.is_empty() {
            return Err(ApiErrorReply::invalid(
                "matchers: at least one label=value is needed",
            ));
        }
        if silence.spec.ends_at <= now_ms() {
            return Err(ApiErrorReply::invalid("endsAt: already past"));
        }
        Ok(state.control.objects().create(silence).await?)
    };
    let created = state
        .audited(&caller, "silence.create", resource, work)
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `POST .../alerts/silences/{name}/expire`: ends it now.
pub(crate) async fn expire_silence(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(params): Params,
) -> ApiResult<Json<Silence>> {
    let (project, name) = (scope(&params), name(&params));
    let now = now_ms();
    let objects = state.control.objects();
    let work = objects.modify::<Silence>(project.as_deref(), &name, |s| {
        let active = s.is_active(now);
        s.spec.ends_at = s.spec.ends_at.min(now);
        active
    });
    let resource = resource(&project, "silence", &name);
    let expired = state
        .audited(&caller, "silence.expire", resource, work)
        .await?;
    Ok(Json(expired))
}

// ----- receivers -----

fn without_secret(mut receiver: AlertReceiver) -> AlertReceiver {
    receiver.spec.secret = None;
    receiver
}

/// `GET .../alerts/receivers`, secrets left out.
pub(crate) async fn list_receivers(
    State(state): State<Arc<AppState>>,
    Path(params): Params,
) -> ApiResult<Json<Vec<AlertReceiver>>> {
    let objects = state.control.objects();
    let receivers: Vec<AlertReceiver> = objects.list_scoped(scope(&params).as_deref()).await?;
    Ok(Json(receivers.into_iter().map(without_secret).collect()))
}

/// `POST .../alerts/receivers`: creates or updates a receiver; the secret
/// is sealed before it is stored.
pub(crate) async fn apply_receiver(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(params): Params,
    JsonBody(mut receiver): JsonBody<AlertReceiver>,
) -> ApiResult<(StatusCode, Json<AlertReceiver>)> {
    let project = scope(&params);
    receiver.metadata.project = project.clone();
    if let Some(secret) = receiver.spec.secret.take() {
        if secret.is_empty() {
            return Err(ApiErrorReply::invalid("spec.secret: must not be empty"));
        }
        receiver.spec.secret = Some(state.alert_secrets.seal(&secret_name(&receiver), &secret));
    }
    let resource = resource(&project, "alertreceiver", &receiver.metadata.name);
    let work = state.control.objects().apply_alert_receiver(receiver);
    let (receiver, created) = state
        .audited(&caller, "alertreceiver.apply", resource, work)
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(without_secret(receiver))))
}

/// `DELETE .../alerts/receivers/{name}`, with its delivery log.
pub(crate) async fn delete_receiver(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(params): Params,
) -> ApiResult<Json<AlertReceiver>> {
    let (project, name) = (scope(&params), name(&params));
    let objects = state.control.objects();
    let work = async {
        let deleted = objects
            .delete::<AlertReceiver>(project.as_deref(), &name, None)
            .await?;
        remove_log(objects.store().as_ref(), project.as_deref(), &name)
            .await
            .map_err(wharf_control::ControlError::from)?;
        Ok::<_, wharf_control::ControlError>(deleted)
    };
    let resource = resource(&project, "alertreceiver", &name);
    let deleted = state
        .audited(&caller, "alertreceiver.delete", resource, work)
        .await?;
    Ok(Json(without_secret(deleted)))
}

/// `GET .../alerts/receivers/{name}/deliveries`: the delivery log, newest
/// first.
pub(crate) async fn deliveries(
    State(state): State<Arc<AppState>>,
    Path(params): Params,
) -> ApiResult<Json<Vec<Delivery>>> {
    let (project, name) = (scope(&params), name(&params));
    let objects = state.control.objects();
    objects
        .require::<AlertReceiver>(project.as_deref(), &name)
        .await?;
    let log = read_log(objects.store().as_ref(), project.as_deref(), &name)
        .await
        .map_err(wharf_control::ControlError::from)?;
    Ok(Json(log))
}
