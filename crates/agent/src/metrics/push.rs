//! falcon's push API on the agent's endpoint, so that falcon plugins and
//! scripts keep working: `POST /v1/push` with a JSON array of
//! `{endpoint, metric, timestamp, step, value, counterType, tags}`,
//! answered `success`, and forwarded to the server as this node's.
//!
//! Who may push: like falcon's agent, which listens on localhost only,
//! processes on this machine: requests from other addresses get 403 (the
//! endpoint is otherwise reachable from the server, and perhaps further).
//! A sample keeps the endpoint it names (scripts push for their host), but
//! the agent adds the tag `pushed_by=<this node>`, which no collected
//! sample carries, and refuses the metric names its collector reports
//! (`cpu.`, `mem.`, `container.` ...): a push cannot pass for any node's
//! or container's own series, and shows which node forwarded it.
//!
//! A flood cannot exhaust the agent's memory: a body is read only up to
//! [`MAX_PUSH_BYTES`], at most [`MAX_PUSHES_IN_FLIGHT`] pushes are read
//! and forwarded at once (more get 429 at once), and nothing is queued:
//! a push is answered once the server stored it. The server's
//! per-endpoint series limit bounds what pushes can add there.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use wharf_api::{FalconSample, format_tags};

use crate::endpoint::{EndpointState, refuse};

/// Largest push body (falcon's clients push a few hundred samples).
pub const MAX_PUSH_BYTES: usize = 1 << 20;
/// Most samples in one push.
pub const MAX_PUSH_SAMPLES: usize = 5_000;
/// Pushes read and forwarded at the same time.
pub const MAX_PUSHES_IN_FLIGHT: usize = 4;
/// The tag naming the node that forwarded a user push.
pub const PUSHED_BY_TAG: &str = "pushed_by";

/// Metric namespaces the agent's collector reports; user pushes may not
/// use them.
const AGENT_NAMESPACES: &[&str] = &[
    "cpu.",
    "load.",
    "mem.",
    "df.",
    "disk.io.",
    "net.if.",
    "ss.",
    "container.",
    "image.",
];

/// Whether `metric` is in a namespace the agent's collector reports.
pub fn is_agent_metric(metric: &str) -> bool {
    AGENT_NAMESPACES.iter().any(|ns| metric.starts_with(ns))
}

/// `POST /v1/push`.
pub(crate) async fn push(
    State(state): State<Arc<EndpointState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Body,
) -> Response {
    if !peer.ip().is_loopback() {
        return drain_and_refuse(
            body,
            StatusCode::FORBIDDEN,
            "pushes are taken from this machine only (as falcon's agent takes them)",
        )
        .await;
    }
    let Ok(_permit) = state.pushes.try_acquire() else {
        return drain_and_refuse(
            body,
            StatusCode::TOO_MANY_REQUESTS,
            format!("{MAX_PUSHES_IN_FLIGHT} pushes are in progress; push again later"),
        )
        .await;
    };
    let bytes = match axum::body::to_bytes(body, MAX_PUSH_BYTES).await {
        Ok(bytes) => bytes,
        Err(err) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body: at most {MAX_PUSH_BYTES} bytes ({err})"),
            );
        }
    };
    let samples = match parse(&bytes, &state.node, crate::metrics::unix_seconds()) {
        Ok(samples) => samples,
        Err((status, message)) => return refuse(status, message),
    };
    match state.api.push_metrics(&state.node, &samples).await {
        Ok(()) => (StatusCode::OK, "success").into_response(),
        Err(err) => refuse(
            StatusCode::BAD_GATEWAY,
            format!("forwarding to the server: {err}"),
        ),
    }
}

/// The samples of a push body, checked, tagged `pushed_by=node`; an error
/// names the sample's index and field.
fn parse(body: &[u8], node: &str, now: i64) -> Result<Vec<FalconSample>, (StatusCode, String)> {
    let bad = |message: String| (StatusCode::BAD_REQUEST, message);
    let values: Vec<serde_json::Value> = serde_json::from_slice(body)
        .map_err(|e| bad(format!("body: not a JSON array of samples: {e}")))?;
    if values.len() > MAX_PUSH_SAMPLES {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} samples in one push; at most {MAX_PUSH_SAMPLES}",
                values.len()
            ),
        ));
    }
    values
        .into_iter()
        .enumerate()
        .map(|(index, value)| {
            let mut sample: FalconSample = serde_json::from_value(value)
                .map_err(|e| bad(format!("sample {index}: {e}")))?;
            if is_agent_metric(&sample.metric) {
                return Err(bad(format!(
                    "sample {index}: metric: {:?} is in a namespace the agent reports itself ({}); push it under another name",
                    sample.metric,
                    AGENT_NAMESPACES.join(" ")
                )));
            }
            let mut tags = sample
                .tag_map()
                .map_err(|e| bad(format!("sample {index}: tags: {e}")))?;
            tags.insert(PUSHED_BY_TAG.to_owned(), node.to_owned());
            sample.tags = format_tags(&tags);
            wharf_tsdb::validate(&sample, now).map_err(|e| bad(format!("sample {index}: {e}")))?;
            Ok(sample)
        })
        .collect()
}

/// Answers a request refused before its body was read, reading (and
/// dropping) up to [`MAX_PUSH_BYTES`] of it first: a client still
/// sending would otherwise see a reset instead of the answer.
async fn drain_and_refuse(body: Body, status: StatusCode, message: impl Into<String>) -> Response {
    let mut read = 0;
    let mut stream = body.into_data_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        read += chunk.len();
        if read > MAX_PUSH_BYTES {
            break;
        }
    }
    refuse(status, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn body(samples: &str) -> Vec<u8> {
        format!("[{samples}]").into_bytes()
    }

    const GOOD: &str = r#"{"endpoint":"host1","metric":"app.requests","timestamp":1700000000,"step":60,"value":3,"counterType":"COUNTER","tags":"idc=bj,pushed_by=someone"}"#;

    #[test]
    fn a_falcon_push_is_tagged_with_the_node_that_forwards_it() {
        let samples = parse(&body(GOOD), "n1", NOW).unwrap();
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].endpoint, "host1");
        // A pushed_by of the user's own is replaced: it cannot pose as another node's.
        assert_eq!(samples[0].tags, "idc=bj,pushed_by=n1");
    }

    #[test]
    fn bad_samples_are_named_by_index_and_field() {
        let missing =
            r#"{"endpoint":"h","timestamp":1700000000,"step":60,"value":1,"counterType":"GAUGE"}"#;
        let (status, message) = parse(&body(&format!("{GOOD},{missing}")), "n1", NOW).unwrap_err();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            message.starts_with("sample 1: ") && message.contains("metric"),
            "{message}"
        );

        let future = GOOD.replace("1700000000", "1800000000");
        let (_, message) = parse(&body(&future), "n1", NOW).unwrap_err();
        assert!(message.starts_with("sample 0: timestamp:"), "{message}");

        let bad_tags = GOOD.replace("idc=bj", "oops");
        let (_, message) = parse(&body(&bad_tags), "n1", NOW).unwrap_err();
        assert!(message.starts_with("sample 0: tags:"), "{message}");

        let (_, message) = parse(b"{\"not\":\"an array\"}", "n1", NOW).unwrap_err();
        assert!(message.starts_with("body:"), "{message}");
    }

    #[test]
    fn the_agents_own_metric_names_are_refused() {
        for metric in ["cpu.busy", "container.mem.working_set", "df.bytes.used"] {
            let push = GOOD.replace("app.requests", metric);
            let (status, message) = parse(&body(&push), "n1", NOW).unwrap_err();
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert!(message.contains("sample 0: metric:"), "{message}");
        }
        assert!(!is_agent_metric("cpuinfo.mhz"));
    }

    #[test]
    fn too_many_samples_are_refused_with_the_limit() {
        let many = vec![GOOD; MAX_PUSH_SAMPLES + 1].join(",");
        let (status, message) = parse(&body(&many), "n1", NOW).unwrap_err();
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(message.contains(&MAX_PUSH_SAMPLES.to_string()), "{message}");
    }
}
