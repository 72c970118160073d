//! The dashboard on real containers: a deployment started on a real agent
//! (runc, a pool address) appears on the open deployments page through the
//! watch, its pods turn Running there, and the pod page streams the
//! container's log live; the node and IP pool pages show the pods and the
//! addresses they hold. Screenshots go under
//! `$CARGO_TARGET_TMPDIR/dashboard-screenshots/<test>/`.

use std::time::Duration;

use super::common::TestServer;
use super::common::browser::{Browser, browser_available};
use super::common::server::ADMIN_PASSWORD;
use super::{
    Cli, Node, NodeSpec, pool_yaml, prerequisites, push_demo_image, running_pods, wait_for,
    wait_node_ready,
};

const NODE: &str = "wdc-dash-1";

/// Two replicas printing a numbered line every half second, on `pool`.
fn ticker(image: &str, pool: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: ticker, namespace: shop, annotations: {{wharf.io/ip-pool: {pool}}}}}\n\
         spec:\n  replicas: 2\n  selector: {{matchLabels: {{app: ticker}}}}\n  template:\n    \
         metadata: {{labels: {{app: ticker}}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      \
         containers: [{{name: main, image: '{image}', \
         command: ['/bin/sh', '-c', 'i=0; while :; do echo \"tick $i\"; i=$((i+1)); sleep 0.5; done']}}]\n"
    )
}

/// The highest `tick N` in `text`.
fn last_tick(text: &str) -> Option<u64> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("tick "))
        .filter_map(|n| n.parse().ok())
        .max()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_turns_running_in_the_dashboard_and_its_log_streams() {
    if !prerequisites("the dashboard on real containers") || !browser_available() {
        return;
    }
    let server = TestServer::start();
    let cli = Cli::login(&server);
    let robot = push_demo_image(&server, &cli).await;
    cli.run_with(
        &["ippool", "import", "-"],
        &pool_yaml("wdc-pool", "10.125.2"),
    );
    let _node = Node::start(
        &cli,
        NodeSpec::local(NODE, "wdcbr1", "wdc1-", "10.125.1.0/24"),
        &robot,
    );
    wait_node_ready(&cli);
    let base = server.url();
    let mut browser =
        Browser::start("a_deployment_turns_running_in_the_dashboard_and_its_log_streams").await;
    browser.log_in(&base, "admin", ADMIN_PASSWORD).await;

    // The deployments page is open before the deployment exists: the
    // watch brings it in and its rollout completes on the page.
    browser
        .open(&format!("{base}/ui/projects/shop/deployments"))
        .await;
    browser.wait_text("main", "No deployments").await;
    let image = format!("{}/shop/web:1.0", server.host());
    cli.run_with(&["apply", "-f", "-"], &ticker(&image, "wdc-pool"));
    browser.wait_text("tr[data-key=ticker]", "ticker").await;
    browser.screenshot("deployment-appears").await;
    wait_for("2 ticker pods running", Duration::from_secs(90), || {
        running_pods(&cli, "ticker-", 2)
    });
    browser.wait_text("tr[data-key=ticker]", "complete").await;
    browser.wait_text("tr[data-key=ticker]", "2/2").await;
    browser.screenshot("deployment-complete").await;

    // The deployment's page lists its pods, Running, each linked to its node.
    browser
        .click_labelled("tr[data-key=ticker]", "ticker")
        .await;
    browser.wait_text("#rollout-state", "complete").await;
    let running = browser
        .run(
            "for (let i = 0; i < 200; i++) { \
               const rows = [...document.querySelectorAll('#pods ~ .data-table tbody tr')]; \
               const n = rows.filter((r) => r.textContent.includes('Running') && r.textContent.includes('wdc-dash-1')).length; \
               if (n === 2) return n; \
               await new Promise((r) => setTimeout(r, 100)); } \
             return document.querySelector('#pods ~ .data-table').textContent;",
        )
        .await;
    assert_eq!(
        running, 2,
        "two Running pods on {NODE} on the deployment page: {running}"
    );
    browser.screenshot("deployment-pods-running").await;

    // A pod's page: its pool address, and its log streaming live.
    let pod = browser
        .run("return document.querySelector('#pods ~ .data-table tbody tr a').textContent;")
        .await;
    let pod = pod.as_str().expect("a pod name").to_string();
    browser.click_labelled("#pods ~ .data-table", &pod).await;
    browser.wait_text("#pod-ip", "10.125.2.").await;
    browser.wait_text("main .charts", "CPU (cores)").await;
    let first = browser.wait_text("#pod-log", "tick ").await;
    let seen = last_tick(&first).expect("a tick line");
    // Lines written after the page opened arrive without a reload.
    let later = browser
        .wait_text("#pod-log", &format!("tick {}", seen + 3))
        .await;
    assert!(last_tick(&later).unwrap() >= seen + 3, "{later}");
    browser
        .run("document.getElementById('pod-log').scrollIntoView();")
        .await;
    browser.screenshot("pod-log-streaming").await;

    // Pod -> node: the node page lists both pods.
    browser.click_labelled("main dl", NODE).await;
    browser.wait_text("main h1", &format!("Node {NODE}")).await;
    browser.wait_text("#pods ~ .data-table", "(2 rows)").await;
    browser.wait_text("main dl", "Ready").await;
    browser.screenshot("node-with-charts").await;
    browser
        .run("document.getElementById('pods').scrollIntoView();")
        .await;
    browser.screenshot("node-with-pods").await;

    // The pool shows the two addresses in use.
    browser.open(&format!("{base}/ui/ippools")).await;
    browser.wait_text("tr[data-key=wdc-pool]", "2 used").await;
    browser.screenshot("ip-pool-usage").await;
    browser.finish().await;
}
