//! The agent's `GET /metrics`: its newest collection under the Prometheus
//! names the server federates them by (`wharf_tsdb::prometheus`), and
//! this process's CPU and memory. Same credential as the server's: the
//! agent asks the server whether the bearer token may scrape.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use wharf_api::FalconSample;
use wharf_tsdb::prometheus::{CONTENT_TYPE, Exposition, process_metrics};

use crate::endpoint::{EndpointState, refuse};

/// `GET /metrics` on the agent's endpoint.
pub(crate) async fn metrics(
    State(state): State<Arc<EndpointState>>,
    headers: HeaderMap,
) -> Response {
    let Some(token) = crate::endpoint::bearer(&headers) else {
        return refuse(StatusCode::UNAUTHORIZED, "a bearer token is required");
    };
    match state.api.may_read_metrics(token).await {
        Ok(true) => {}
        Ok(false) => {
            return refuse(
                StatusCode::FORBIDDEN,
                "the server does not let this token read metrics",
            );
        }
        Err(err) => return refuse(StatusCode::BAD_GATEWAY, format!("asking the server: {err}")),
    }
    let samples = state.latest.get();
    // /proc reads: off the async workers.
    match tokio::task::spawn_blocking(move || render(&samples)).await {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(err) => refuse(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    }
}

fn render(samples: &[FalconSample]) -> String {
    let mut out = Exposition::default();
    for s in samples {
        out.falcon(&s.endpoint, &s.metric, &s.tags, s.counter_type, s.value);
    }
    process_metrics(&mut out);
    out.render()
}

#[cfg(test)]
mod tests {
    use wharf_api::CounterType;

    use super::*;

    #[test]
    fn the_newest_collection_is_served_under_prometheus_names() {
        let sample = |metric: &str, tags: &str, kind| FalconSample {
            endpoint: "n1".into(),
            metric: metric.into(),
            tags: tags.into(),
            value: 2.5,
            timestamp: 0,
            counter_type: kind,
            step: 10,
        };
        let text = render(&[
            sample("load.1min", "", CounterType::Gauge),
            sample(
                "container.cpu.usage_seconds",
                "project=p,pod=w,container=c",
                CounterType::Counter,
            ),
        ]);
        assert!(text.contains("node_load_1min{node=\"n1\"} 2.5\n"), "{text}");
        assert!(
            text.contains("container_cpu_usage_seconds_total{node=\"n1\",container=\"c\",pod=\"w\",project=\"p\"} 2.5\n"),
            "{text}"
        );
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
    }
}
