//! Lifecycle hooks on real containers: `postStart` runs after the start,
//! `preStop` runs to its end before the container gets SIGTERM (each
//! leaves a line in a hostPath file that outlives the pod), and a failing
//! `postStart` stops the container, which restarts, with a
//! `FailedPostStartHook` event.

use std::time::Duration;

use super::{Cli, Node, NodeSpec, name_of, prerequisites, push_demo_image, wait_for};

/// A one-replica deployment whose container appends to `/trace/log` (a
/// hostPath at `trace`) and has `hooks` (YAML at the container's
/// indentation); it writes `term` when it gets SIGTERM, which comes after
/// a grace of 10 s.
fn hooked(name: &str, image: &str, trace: &str, hooks: &str) -> String {
    let volumes = format!(
        "      volumes:\n        - {{name: trace, hostPath: {{path: '{trace}', type: DirectoryOrCreate}}}}\n"
    );
    let container =
        format!("          volumeMounts: [{{name: trace, mountPath: /trace}}]\n{hooks}");
    let script = "trap 'echo term >> /trace/log; exit 0' TERM
echo started >> /trace/log
while true; do sleep 0.2; done";
    super::sec::deployment(name, image, &volumes, &container, script).replace(
        "terminationGracePeriodSeconds: 1\n",
        "terminationGracePeriodSeconds: 10\n",
    )
}

/// The `lifecycle` of a container: each hook given runs its busybox sh
/// script through `exec`.
fn lifecycle(hooks: &[(&str, &str)]) -> String {
    let mut yaml = "          lifecycle:\n".to_string();
    for (hook, script) in hooks {
        yaml.push_str(&format!(
            "            {hook}:\n              exec: {{command: [/bin/busybox, sh, -c, '{script}']}}\n"
        ));
    }
    yaml
}

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_stop_runs_before_sigterm_and_post_start_after_the_start() {
    if !prerequisites("lifecycle") {
        return;
    }
    let server = super::common::TestServer::start();
    let cli = Cli::login(&server);
    let robot = push_demo_image(&server, &cli).await;
    let _node = Node::start(
        &cli,
        NodeSpec::local("wgr-1", "wgrbr1", "wgr1-", "10.104.1.0/24"),
        &robot,
    );
    let traces = tempfile::tempdir().unwrap();
    cli.run(&[
        "settings",
        "set",
        "--host-path-prefixes",
        &traces.path().display().to_string(),
    ]);
    let image = format!("{}/shop/web:1.0", server.host());

    // postStart and a slow preStop: the container gets SIGTERM only once
    // the hook has finished.
    let trace = traces.path().join("hooked");
    let hooks = lifecycle(&[
        ("postStart", "echo poststart >> /trace/log"),
        (
            "preStop",
            "echo prestop >> /trace/log; sleep 2; echo prestop-done >> /trace/log",
        ),
    ]);
    let manifest = hooked("hooked", &image, &trace.display().to_string(), &hooks);
    cli.run_with(&["apply", "-f", "-"], &manifest);
    let log = trace.join("log");
    wait_for("the postStart hook", Duration::from_secs(60), || {
        let seen = lines(&log);
        (seen.contains(&"started".to_string()) && seen.contains(&"poststart".to_string()))
            .then_some(())
    });
    cli.run(&["delete", "deployment", "hooked", "-p", "shop"]);
    let seen = wait_for("the container stopped", Duration::from_secs(30), || {
        let seen = lines(&log);
        seen.contains(&"term".to_string()).then_some(seen)
    });
    let at = |line: &str| seen.iter().position(|l| l == line).unwrap();
    assert!(
        at("prestop") < at("prestop-done") && at("prestop-done") < at("term"),
        "preStop runs to its end before SIGTERM: {seen:?}"
    );
    wait_for("the pod gone", Duration::from_secs(30), || {
        cli.pods("shop").is_empty().then_some(())
    });

    // A failing postStart stops the container, which restarts.
    let trace = traces.path().join("broken");
    let hooks = lifecycle(&[("postStart", "exit 3")]);
    cli.run_with(
        &["apply", "-f", "-"],
        &hooked("broken", &image, &trace.display().to_string(), &hooks),
    );
    let pod = wait_for("the broken pod restarted", Duration::from_secs(60), || {
        cli.pods("shop").into_iter().find(|p| {
            p["status"]["containerStatuses"][0]["restartCount"]
                .as_u64()
                .is_some_and(|n| n >= 1)
        })
    });
    let described = cli.run(&["describe", "pod", "-p", "shop", &name_of(&pod)]);
    assert!(described.contains("FailedPostStartHook"), "{described}");
    assert!(
        described.contains("postStart hook of container main failed"),
        "{described}"
    );
    let last = &pod["status"]["containerStatuses"][0]["lastState"]["terminated"];
    assert!(last.is_object(), "the stopped run is the last state: {pod}");
}
