//! Alerts on a real container: a rule on the rate of a pod's
//! `container.cpu.usage_seconds` (the cores it burns) fires while a
//! CPU-burning container runs, and a loopback webhook receives the signed
//! firing notification; the resolved one follows once the burner is
//! deleted; a silence holds the next firing back until it is expired.

use std::time::Duration;

use super::common::TestServer;
use super::common::webhook::{SILENCE_CPU_HIGH, Webhook, cpu_rule_args};
use super::{Cli, Node, NodeSpec, name_of, prerequisites, push_demo_image, running_pods, wait_for};

const NODE: &str = "wmc-alerts-1";
const SECRET: &str = "wmc-hook-secret";

fn burner(image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: burner, namespace: shop}}\n\
         spec:\n  replicas: 1\n  selector: {{matchLabels: {{app: burner}}}}\n  template:\n    \
         metadata: {{labels: {{app: burner}}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      \
         containers: [{{name: main, image: '{image}', \
         command: ['/bin/sh', '-c', 'while :; do :; done'], \
         resources: {{limits: {{cpu: '1'}}}}}}]\n"
    )
}

/// The burner's pod once it runs.
fn start_burner(cli: &Cli, image: &str) -> String {
    cli.run_with(&["apply", "-f", "-"], &burner(image));
    let pods = wait_for("the burner running", Duration::from_secs(90), || {
        running_pods(cli, "burner-", 1)
    });
    name_of(&pods[0])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_burner_fires_a_signed_alert_that_resolves_and_a_silence_holds_it() {
    if !prerequisites("alerts on a CPU burner") {
        return;
    }
    let _burning = super::hpa::BURNING.lock().await;
    let server = TestServer::start_with(&["--alert-eval-interval", "1s"]);
    let cli = Cli::login(&server);
    let robot = push_demo_image(&server, &cli).await;
    let _node = Node::start_with(
        &cli,
        NodeSpec::local(NODE, "wmcbr1", "wmc1-", "10.108.1.0/24"),
        &robot,
        &["--metrics-interval", "1s"],
    );
    let hook = Webhook::start("127.0.0.1:0", SECRET);
    let receiver = hook.receiver_args();
    cli.run_with(&receiver, &format!("{SECRET}\n"));
    // A tenth of a core: on a loaded CI machine (load 9 on 2 cores) one
    // busy loop gets about a fifth of a core; an idle pod burns none.
    let rule = cpu_rule_args("10s", ">0.1");
    cli.run(&rule);
    let image = format!("{}/shop/web:1.0", server.host());

    let pod = start_burner(&cli, &image);
    let firing = hook
        .next(Duration::from_secs(120))
        .expect("a firing notification while the burner runs");
    assert_eq!(firing["status"], "firing", "{firing}");
    assert_eq!(firing["groupLabels"]["pod"], pod.as_str());
    let cores = firing["alerts"][0]["value"].as_f64().unwrap();
    assert!(
        (0.1..=1.1).contains(&cores),
        "the burner burns {cores} cores"
    );

    cli.run(&["delete", "deployment", "burner", "-p", "shop"]);
    let resolved = hook
        .next(Duration::from_secs(60))
        .expect("a resolved notification once the burner is gone");
    assert_eq!(resolved["status"], "resolved", "{resolved}");
    assert_eq!(resolved["groupLabels"]["pod"], pod.as_str());

    let silence = cli.json(&SILENCE_CPU_HIGH);
    let name = silence["metadata"]["name"].as_str().unwrap().to_owned();
    let pod = start_burner(&cli, &image);
    wait_for("the silenced alert firing", Duration::from_secs(90), || {
        let listed = cli.run(&["alert", "list", "-p", "shop"]);
        (listed.contains("firing") && listed.contains(&name) && listed.contains(&pod)).then_some(())
    });
    assert!(
        hook.next(Duration::from_secs(3)).is_none(),
        "a silenced alert is not notified"
    );
    cli.run(&["alert", "silence", "expire", &name, "-p", "shop"]);
    let told = hook
        .next(Duration::from_secs(30))
        .expect("the firing is told once the silence ends");
    assert_eq!(told["status"], "firing", "{told}");
    assert_eq!(told["groupLabels"]["pod"], pod.as_str());
    let log = cli.run(&["alert", "receiver", "deliveries", "ops", "-p", "shop"]);
    assert_eq!(log.matches("delivered").count(), 3, "{log}");
    cli.run(&["delete", "deployment", "burner", "-p", "shop"]);
}
