//! Node and container metrics in falcon's format: agents push batches of
//! samples (`POST /api/v1/nodes/{node}/metrics`) into this server's
//! time-series store, and users query it (`GET /api/v1/metrics/query`).
//! Samples stay on the server that received them; nothing goes to the
//! Store (etcd).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Extension, Query as QueryParams, State};
use axum::{Json, http::StatusCode};
use serde::Serialize;
use wharf_api::FalconSample;
use wharf_auth::{Action, AuthError};
use wharf_tsdb::{Matcher, Query, QueryResult, Tsdb, TsdbError};

use super::{ApiCaller, ApiErrorReply, ApiResult, Body as JsonBody};
use crate::AppState;

/// Largest ingest body: about 50,000 samples.
pub(crate) const MAX_BODY_BYTES: usize = 8 << 20;
/// Most samples in one push.
const MAX_SAMPLES: usize = 50_000;
/// The range read when a query names no start: the last hour.
const DEFAULT_RANGE: i64 = 3600;

impl From<TsdbError> for ApiErrorReply {
    fn from(err: TsdbError) -> ApiErrorReply {
        let (status, code) = match &err {
            TsdbError::Invalid { .. } | TsdbError::BadQuery(_) => {
                (StatusCode::BAD_REQUEST, "INVALID")
            }
            TsdbError::SeriesLimit { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "SERIES_LIMIT"),
            TsdbError::UnknownMetric(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            TsdbError::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        };
        ApiErrorReply::new(status, code, err.to_string())
    }
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Runs store work off the async workers (it takes a lock and may read
/// files).
async fn off_workers<T: Send + 'static>(
    tsdb: &Arc<Tsdb>,
    work: impl FnOnce(&Tsdb) -> Result<T, TsdbError> + Send + 'static,
) -> ApiResult<T> {
    let tsdb = tsdb.clone();
    tokio::task::spawn_blocking(move || work(&tsdb))
        .await
        .map_err(|e| {
            ApiErrorReply::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string())
        })?
        .map_err(ApiErrorReply::from)
}

/// What a push stored.
#[derive(Serialize)]
pub(crate) struct PushReply {
    stored: usize,
    skipped: usize,
}

/// `POST /api/v1/nodes/{node}/metrics`: a batch of falcon samples from a
/// node's agent (its own metrics, its containers', and user pushes it
/// forwards). All or nothing: a bad sample is named by index and field.
pub(crate) async fn push(
    State(state): State<Arc<AppState>>,
    JsonBody(samples): JsonBody<Vec<FalconSample>>,
) -> ApiResult<Json<PushReply>> {
    if samples.len() > MAX_SAMPLES {
        return Err(ApiErrorReply::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "INVALID",
            format!(
                "{} samples in one push; at most {MAX_SAMPLES}",
                samples.len()
            ),
        ));
    }
    let ingested = off_workers(&state.metrics, move |tsdb| tsdb.insert(&samples, now())).await?;
    Ok(Json(PushReply {
        stored: ingested.stored,
        skipped: ingested.skipped,
    }))
}

/// `GET /api/v1/metrics/query`: series of one metric, by tag matchers and
/// endpoint, over a range at a step, optionally aggregated and as rates.
/// Administrators read everything; others only series with an exact
/// `project=NAME` matcher for a project they may pull from.
pub(crate) async fn query(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    QueryParams(params): QueryParams<HashMap<String, String>>,
) -> ApiResult<Json<QueryResult>> {
    let mut matchers = Matcher::parse_list(params.get("tags").map_or("", String::as_str))
        .map_err(ApiErrorReply::invalid)?;
    authorize(&state, &caller, &matchers).await?;
    if let Some(endpoint) = params.get("endpoint") {
        matchers.push(Matcher::Eq("endpoint".into(), endpoint.clone()));
    }
    let query = parse_query(&params, matchers, now())?;
    let answer = off_workers(&state.metrics, move |tsdb| tsdb.query(&query, now())).await?;
    Ok(Json(answer))
}

async fn authorize(state: &AppState, caller: &ApiCaller, matchers: &[Matcher]) -> ApiResult<()> {
    if caller.principal.is_admin() {
        return Ok(());
    }
    let project = matchers.iter().find_map(|m| match m {
        Matcher::Eq(key, value) if key == "project" => Some(value.as_str()),
        _ => None,
    });
    let Some(project) = project else {
        return Err(AuthError::Denied(
            "reading metrics needs an administrator, or a project=NAME tag matcher for a project you can read".into(),
        )
        .into());
    };
    state
        .identity
        .require(&caller.principal, project, Action::Pull)
        .await?;
    Ok(())
}

/// About 360 points over the range, in whole tens of seconds.
fn default_step(range: i64) -> i64 {
    ((range.max(0) as u64 / 360).max(10).div_ceil(10) * 10) as i64
}

fn parse_query(
    params: &HashMap<String, String>,
    matchers: Vec<Matcher>,
    now: i64,
) -> ApiResult<Query> {
    let metric = params
        .get("metric")
        .ok_or_else(|| ApiErrorReply::invalid("metric: required"))?
        .clone();
    wharf_tsdb::check_metric(&metric).map_err(|e| ApiErrorReply::invalid(e.to_string()))?;
    let number = |name: &str| -> ApiResult<Option<i64>> {
        params
            .get(name)
            .map(|v| {
                v.parse::<i64>().map_err(|_| {
                    ApiErrorReply::invalid(format!(
                        "{name}: {v:?} is not a whole number of seconds"
                    ))
                })
            })
            .transpose()
    };
    let end = number("end")?.unwrap_or(now);
    let start = number("start")?.unwrap_or(end - DEFAULT_RANGE);
    let step = number("step")?.unwrap_or_else(|| default_step(end - start));
    let agg = params
        .get("agg")
        .map(|a| a.parse())
        .transpose()
        .map_err(ApiErrorReply::invalid)?;
    let by = params
        .get("by")
        .map(|b| {
            b.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let rate = match params.get("rate").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiErrorReply::invalid(format!(
                "rate: {other:?} is not true or false"
            )));
        }
    };
    Ok(Query {
        metric,
        matchers,
        start,
        end,
        step,
        agg,
        by,
        rate,
    })
}
