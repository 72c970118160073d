//! The dashboard in a real browser: Debian's headless Chromium, driven
//! through chromedriver, against a `wharf server` child process. Logging in
//! through the form, creating a project, adding a member, creating a robot
//! (its secret shown once), an image pushed with skopeo seen with its
//! layers, a developer kept out of another team's private project (in the
//! page and on a direct API call with the cookie), and a change by cookie
//! without the CSRF header refused.
//!
//! Each test saves screenshots (PNG) under
//! `$CARGO_TARGET_TMPDIR/dashboard-screenshots/<test>/`
//! (`target/tmp/dashboard-screenshots/` in a default build).

mod common;

use common::browser::{Browser, browser_available};
use common::skopeo::Skopeo;
use common::{Image, OciLayout, TestServer, require_tool};
use reqwest::{Method, StatusCode};
use serde_json::json;

const PASSWORD: &str = "a-long-password-1";
/// WebDriver's key codes for Tab and Enter.
const TAB: char = '\u{e004}';
const ENTER: char = '\u{e007}';

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_creates_a_project_adds_a_member_and_a_robot() {
    if !browser_available() {
        return;
    }
    let server = TestServer::start();
    let admin = server.admin().await;
    admin.create_user("dora", PASSWORD).await;
    let base = server.url();
    let mut browser = Browser::start("admin_creates_a_project_adds_a_member_and_a_robot").await;
    let admin_password = common::server::ADMIN_PASSWORD;
    browser.log_in(&base, "admin", admin_password).await;
    browser.wait_text("#top nav", "Users").await;
    browser.screenshot("projects-empty").await;

    // Create a project through the form; the app goes to its page.
    browser.fill("form input[name=name]", "web").await;
    browser.fill("form input[name=quota]", "2").await;
    browser.click_labelled("main", "Create project").await;
    browser.wait_text("main h1", "Project web").await;
    browser.wait_text("main", "of 2.0 GiB").await;
    browser.screenshot("project-created").await;
    let project = admin.project("web").await;
    assert_eq!(project["quota_bytes"], 2u64 << 30, "{project}");
    assert_eq!(project["public"], false, "{project}");

    // Members: add dora as developer.
    browser.click_labelled("nav.tabs", "Members").await;
    browser.fill("form input[name=user]", "dora").await;
    browser
        .find("#new-member-role")
        .await
        .select_by_value("developer")
        .await
        .expect("choosing the role");
    browser.click_labelled("main", "Add member").await;
    browser
        .wait_text("main nav.tabs ~ .status", "dora is now developer of web")
        .await;
    browser.wait_text("tr[data-key=dora]", "dora").await;
    browser.screenshot("member-added").await;
    let (status, members) = admin
        .call(Method::GET, "/api/v1/projects/web/members", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        members
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["user"] == "dora" && m["role"] == "developer"),
        "{members}"
    );

    // Robots: create one with pull and push; its secret is shown once.
    browser.click_labelled("nav.tabs", "Robots").await;
    browser.fill("form input[name=name]", "ci").await;
    browser.click("form input[name=push]").await;
    browser.click_labelled("main", "Create robot").await;
    browser.wait_text(".secret h2", "robot$web+ci").await;
    browser.screenshot("robot-secret").await;
    let secret = browser
        .find(".secret input.copy-text")
        .await
        .prop("value")
        .await
        .expect("the secret field's value")
        .expect("the secret field has a value");
    assert!(secret.len() >= 16, "{secret:?}");
    // The secret shown is the robot's real credential.
    let login = server
        .client()
        .post(format!("{base}/api/v1/login"))
        .json(&json!({"username": "robot$web+ci", "password": secret}))
        .send()
        .await
        .expect("logging the robot in");
    assert_eq!(login.status(), StatusCode::OK);
    browser
        .wait_text("tr[data-key='robot$web+ci']", "pull, push")
        .await;

    // Once dismissed (or reloaded), it is nowhere on the page.
    browser.click_labelled(".secret", "I have stored it").await;
    browser.client.refresh().await.expect("reloading");
    browser
        .wait_text("tr[data-key='robot$web+ci']", "robot$web+ci")
        .await;
    let source = browser.client.source().await.expect("the page source");
    assert!(!source.contains(&secret), "the secret is shown once only");
    browser.screenshot("robot-listed").await;

    // Administrators' pages: the users, and the audit log filtered to the
    // dashboard's logins (the filter lives in the query string).
    browser.click_labelled("#top nav", "Users").await;
    browser.wait_text("tr[data-key=dora]", "dora").await;
    browser.screenshot("users").await;
    browser.click_labelled("#top nav", "Audit log").await;
    browser
        .fill("form.filters input[name=action]", "login")
        .await;
    browser.click_labelled("form.filters", "Filter").await;
    let audit = browser.wait_text("main table tbody", "dashboard").await;
    assert!(audit.contains("admin"), "{audit}");
    let url = browser.client.current_url().await.unwrap();
    assert!(url.as_str().ends_with("/ui/audit?action=login"), "{url}");
    browser.screenshot("audit-logins").await;
    browser.click_labelled("#top nav", "Settings").await;
    browser.click("input[name=anonymous_pull]").await;
    browser
        .fill("textarea[name=host_path_prefixes]", "/srv/data")
        .await;
    browser.click_labelled("main", "Save settings").await;
    browser.wait_text("main .status", "Settings saved").await;
    let (status, settings) = admin.call(Method::GET, "/api/v1/settings", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(settings["anonymous_pull"], true, "{settings}");
    assert_eq!(
        settings["host_path_prefixes"],
        json!(["/srv/data"]),
        "{settings}"
    );
    browser.screenshot("settings-saved").await;
    browser.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_image_shows_with_its_layers() {
    if !browser_available() || !require_tool("skopeo", "apt-get install skopeo") {
        return;
    }
    let server = TestServer::start();
    let admin = server.admin().await;
    admin.create_project("shop", false, None).await;
    let image = Image::sample();
    let dir = tempfile::tempdir().expect("temporary directory");
    let layout = OciLayout::create(&dir.path().join("src"));
    layout.add_image(&image, "v1");
    let skopeo = Skopeo::new(&server);
    skopeo
        .copy(&layout.reference("v1"), &skopeo.image("shop/app:v1"), &[])
        .await;

    let base = server.url();
    let mut browser = Browser::start("pushed_image_shows_with_its_layers").await;
    browser
        .log_in(&base, "admin", common::server::ADMIN_PASSWORD)
        .await;
    browser.click("tr[data-key=shop] a").await;
    browser.wait_text("main h1", "Project shop").await;
    browser.click("tr[data-key='shop/app'] a").await;
    let manifest = image.manifest.digest.to_string();
    let row = format!("tr[data-key='{manifest}']");
    let text = browser.wait_text(&row, "v1").await;
    assert!(text.contains("linux/amd64"), "{text}");
    let pull = browser
        .find(&format!("{row} input.copy-text"))
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pull, format!("docker pull {}/shop/app:v1", server.host()));
    browser.screenshot("artifacts").await;

    browser
        .click(&format!("{row} a[href$='/artifacts/v1']"))
        .await;
    browser.wait_text("main h2", "Layers (2,").await;
    for layer in &image.layers {
        let digest = layer.digest.to_string();
        browser.find(&format!("tr[data-key='{digest}']")).await;
    }
    let summary = browser.wait_text("dl.summary", &manifest).await;
    assert!(summary.contains("linux/amd64"), "{summary}");
    browser.screenshot("artifact-layers").await;

    // A narrow window: the page reflows, only tables scroll sideways.
    browser.client.set_window_size(400, 800).await.unwrap();
    // When this fails, the elements (outside the scrolling table boxes)
    // that stick out or overflow name the culprit.
    let widths = browser
        .run(
            "const wide = [...document.querySelectorAll('body *')] \
               .filter(e => !e.closest('.table-scroll')) \
               .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1 \
                         || e.scrollWidth > e.clientWidth + 1) \
               .map(e => e.tagName + '.' + e.className); \
             return [document.documentElement.scrollWidth, window.innerWidth, wide];",
        )
        .await;
    assert!(
        widths[0].as_u64() <= widths[1].as_u64(),
        "the page is wider than a 400 px window: {widths}"
    );
    browser.find("#top a[href='/ui/projects']").await;
    browser.screenshot("artifact-narrow").await;
    browser.client.set_window_size(1280, 800).await.unwrap();

    // Deleting: the project is refused while it holds a repository (the
    // API's words shown); the tag goes.
    browser.open(&format!("{base}/ui/projects/shop")).await;
    browser
        .click_and_confirm("main .heading button.danger")
        .await;
    let refusal = browser
        .wait_text("main [role=alert]", "still has 1 repositories")
        .await;
    assert!(refusal.contains("shop/app"), "{refusal}");
    browser.screenshot("project-delete-refused").await;
    browser.click("tr[data-key='shop/app'] a").await;
    browser
        .click_and_confirm("button[aria-label='delete tag v1']")
        .await;
    browser
        .wait_text("main .status", "tag app:v1 deleted")
        .await;
    browser.wait_text(&row, "untagged").await;
    browser.screenshot("tag-deleted").await;
    let (status, artifacts) = admin
        .call(
            Method::GET,
            "/api/v1/projects/shop/repositories/app/artifacts",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(artifacts[0]["tags"], json!([]), "{artifacts}");
    browser.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn developer_cannot_see_another_teams_private_project() {
    if !browser_available() {
        return;
    }
    let server = TestServer::start();
    let admin = server.admin().await;
    admin.create_user("dev", PASSWORD).await;
    admin.create_project("team-a", false, None).await;
    admin.create_project("team-b", false, None).await;
    admin.set_member("team-a", "dev", "developer").await;

    let base = server.url();
    let mut browser = Browser::start("developer_cannot_see_another_teams_private_project").await;
    // Keyboard only: the form starts focused, Tab moves on, Enter submits.
    browser.open(&format!("{base}/")).await;
    browser.find("form.login").await;
    let focused = browser.client.active_element().await.unwrap();
    assert_eq!(
        focused.attr("name").await.unwrap().as_deref(),
        Some("username")
    );
    focused.send_keys(&format!("dev{TAB}")).await.unwrap();
    let focused = browser.client.active_element().await.unwrap();
    assert_eq!(
        focused.attr("name").await.unwrap().as_deref(),
        Some("password")
    );
    focused
        .send_keys(&format!("{PASSWORD}{ENTER}"))
        .await
        .unwrap();
    browser.wait_text("#current-user", "dev").await;
    let list = browser.wait_text("main table", "team-a").await;
    assert!(!list.contains("team-b"), "{list}");
    let nav = browser.find("#top nav").await.text().await.unwrap();
    assert!(!nav.contains("Users"), "no admin pages for dev: {nav}");
    browser.screenshot("own-projects-only").await;

    browser.open(&format!("{base}/ui/projects/team-b")).await;
    let refusal = browser.wait_text("main [role=alert]", "team-b").await;
    browser.screenshot("other-team-refused").await;
    let (_, api_refusal) = server
        .api_as(&common::Credentials::new("dev", PASSWORD))
        .await
        .call(Method::GET, "/api/v1/projects/team-b", None)
        .await;
    assert_eq!(
        refusal, api_refusal["error"]["message"],
        "the page shows the API's own message"
    );

    // The cookie itself is out of the page's reach, and a direct API call
    // with it is refused as the bearer token's would be.
    let cookies = browser.run("return document.cookie;").await;
    assert!(
        !cookies.as_str().unwrap().contains("wharf_session"),
        "{cookies}"
    );
    let direct = browser
        .run(
            "const r = await fetch('/api/v1/projects/team-b'); \
             return [r.status, await r.json()];",
        )
        .await;
    assert_eq!(direct[0], 403, "{direct}");
    assert_eq!(direct[1]["error"]["code"], "DENIED", "{direct}");
    let own = browser
        .run("const r = await fetch('/api/v1/projects/team-a'); return r.status;")
        .await;
    assert_eq!(own, 200);
    browser.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_by_cookie_without_the_csrf_header_is_refused() {
    if !browser_available() {
        return;
    }
    let server = TestServer::start();
    let admin = server.admin().await;
    let base = server.url();
    let mut browser = Browser::start("a_change_by_cookie_without_the_csrf_header_is_refused").await;
    browser
        .log_in(&base, "admin", common::server::ADMIN_PASSWORD)
        .await;
    browser.screenshot("logged-in").await;

    let create = |name: &str, csrf: &str| {
        format!(
            "{csrf} \
             const r = await fetch('/api/v1/projects', {{method: 'POST', \
               headers: Object.assign({{'content-type': 'application/json'}}, headers), \
               body: JSON.stringify({{name: '{name}'}})}}); \
             return [r.status, await r.json()];"
        )
    };
    let refused = browser.run(&create("forged", "const headers = {};")).await;
    assert_eq!(refused[0], 403, "{refused}");
    assert_eq!(refused[1]["error"]["code"], "CSRF", "{refused}");
    let (status, _) = admin
        .call(Method::GET, "/api/v1/projects/forged", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was created");

    let wrong = browser
        .run(&create(
            "forged",
            "const headers = {'x-wharf-csrf': 'guessed'};",
        ))
        .await;
    assert_eq!(wrong[0], 403, "{wrong}");

    // With the session's token, as the app sends it, the same call works.
    let allowed = browser
        .run(&create(
            "allowed",
            "const session = await (await fetch('/api/v1/session')).json(); \
             const headers = {'x-wharf-csrf': session.csrf};",
        ))
        .await;
    assert_eq!(allowed[0], 201, "{allowed}");
    browser.open(&format!("{base}/ui/projects")).await;
    browser.wait_text("main table", "allowed").await;
    browser.screenshot("only-the-allowed-project").await;

    // Another tab logs out and in again: the cookie is replaced, this
    // page's CSRF token is stale; the app fetches the new one and its
    // change goes through (the stale token alone is refused).
    let relogin = format!(
        "const old = (await (await fetch('/api/v1/session')).json()).csrf; \
         await fetch('/api/v1/session', {{method: 'DELETE', headers: {{'x-wharf-csrf': old}}}}); \
         const r = await fetch('/api/v1/session', {{method: 'POST', \
           headers: {{'content-type': 'application/json'}}, \
           body: JSON.stringify({{username: 'admin', password: '{}'}})}}); \
         const stale = await fetch('/api/v1/projects', {{method: 'POST', \
           headers: {{'content-type': 'application/json', 'x-wharf-csrf': old}}, \
           body: JSON.stringify({{name: 'stale'}})}}); \
         return [r.status, stale.status];",
        common::server::ADMIN_PASSWORD
    );
    let statuses = browser.run(&relogin).await;
    assert_eq!(statuses, json!([200, 403]));
    browser.fill("form input[name=name]", "after-relogin").await;
    browser.click_labelled("main", "Create project").await;
    browser.wait_text("main h1", "Project after-relogin").await;
    browser.screenshot("created-after-relogin").await;

    // Logging out clears the cookie: the API sees no session afterwards.
    browser.click_labelled("#top", "Log out").await;
    browser.find("form.login").await;
    let after = browser
        .run("return (await fetch('/api/v1/projects')).status;")
        .await;
    assert_eq!(after, 401);
    browser.screenshot("logged-out").await;
    browser.finish().await;
}

/// Every page of the dashboard's second half renders its data, with no
/// error, against objects made through the API: a node (registered, no
/// agent) with a deployment's pods bound to it, an IP pool, a replication
/// endpoint (this server, checked from the page) and a policy run from the
/// page, an alert rule, a cluster, pool and machine class, and the cost
/// page. Pages follow links: pod -> node, node -> pods, deployment -> pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_replication_alert_inventory_and_cost_pages_render() {
    if !browser_available() {
        return;
    }
    let server = TestServer::start();
    let admin = server.admin().await;
    let base = server.url();
    admin.start_cluster("shop", "wdc-node-a").await;
    admin
        .schedule("shop", "api", 3, std::time::Duration::from_secs(30))
        .await;
    let pool = json!({"apiVersion": "wharf.io/v1", "kind": "IpPool", "metadata": {"name": "wdc-pool"},
        "spec": {"cidr": "10.125.9.0/24", "gateway": "10.125.9.1"}});
    admin
        .expect(Method::POST, "/api/v1/ippools", Some(pool), StatusCode::OK)
        .await;
    let endpoint = json!({"name": "self", "url": base, "username": "admin", "password": common::server::ADMIN_PASSWORD});
    admin
        .expect(
            Method::POST,
            "/api/v1/replication/endpoints",
            Some(endpoint),
            StatusCode::CREATED,
        )
        .await;
    let policy = json!({"name": "to-self", "endpoint": "self", "filters": {"projects": ["shop"]}, "destNamespace": "mirror"});
    admin
        .expect(
            Method::POST,
            "/api/v1/replication/policies",
            Some(policy),
            StatusCode::CREATED,
        )
        .await;
    let rule = json!({"metadata": {"name": "busy"}, "spec": {"metric": "cpu.busy", "op": ">", "threshold": 90.0}});
    admin
        .expect(
            Method::POST,
            "/api/v1/alerts/rules",
            Some(rule),
            StatusCode::CREATED,
        )
        .await;
    let cluster = json!({"metadata": {"name": "dc1"}, "spec": {"kind": "physical", "idc": "east"}});
    admin
        .expect(
            Method::POST,
            "/api/v1/clusters",
            Some(cluster),
            StatusCode::CREATED,
        )
        .await;
    let pool = json!({"metadata": {"name": "general"}, "spec": {"cluster": "dc1"}});
    admin
        .expect(
            Method::POST,
            "/api/v1/pools",
            Some(pool),
            StatusCode::CREATED,
        )
        .await;
    let class =
        json!({"metadata": {"name": "small"}, "spec": {"pricePerHour": 0.05, "tier": "batch"}});
    admin
        .expect(
            Method::POST,
            "/api/v1/machineclasses",
            Some(class),
            StatusCode::CREATED,
        )
        .await;

    let mut browser =
        Browser::start("cluster_replication_alert_inventory_and_cost_pages_render").await;
    browser
        .log_in(&base, "admin", common::server::ADMIN_PASSWORD)
        .await;

    // Nodes, and a node's pods (node -> pods -> pod -> node).
    browser.click_labelled("#top nav", "Nodes").await;
    browser.wait_text("tr[data-key=wdc-node-a]", "Ready").await;
    // Allocation is the bound pods' requests: "first" and three "api" pods.
    browser.wait_text("tr[data-key=wdc-node-a]", "4 / 10").await;
    browser.screenshot("nodes").await;
    browser
        .click_labelled("tr[data-key=wdc-node-a]", "wdc-node-a")
        .await;
    browser.wait_text("main h1", "Node wdc-node-a").await;
    // "first" and the three "api" pods.
    browser.wait_text("#pods ~ .data-table", "(4 rows)").await;
    browser.wait_text("main dl", "4 of 10").await;
    browser.wait_text(".chart figcaption", "CPU busy").await;
    browser.screenshot("node").await;

    // Deployments -> deployment -> its pods -> a pod -> its node.
    browser
        .open(&format!("{base}/ui/projects/shop/deployments"))
        .await;
    browser.wait_text("tr[data-key=api]", "api").await;
    browser.screenshot("deployments").await;
    browser.click_labelled("tr[data-key=api]", "api").await;
    browser.wait_text("main h1", "Deployment api").await;
    browser.wait_text("#pods ~ .data-table", "(3 rows)").await;
    let pod = browser
        .run("return document.querySelector('#pods ~ .data-table tbody tr a').textContent;")
        .await;
    let pod = pod.as_str().expect("a pod name").to_string();
    assert!(pod.starts_with("api-"), "{pod}");
    browser.click_labelled("#pods ~ .data-table", &pod).await;
    browser.wait_text("main h1", &format!("Pod {pod}")).await;
    browser.wait_text("main dl", "wdc-node-a").await;
    browser.screenshot("pod").await;
    browser.click_labelled("main dl", "wdc-node-a").await;
    browser.wait_text("main h1", "Node wdc-node-a").await;

    // The project's pods, live: a scale-up shows without a reload.
    browser.open(&format!("{base}/ui/projects/shop/pods")).await;
    browser.wait_text(".pager", "(4 rows)").await;
    admin.apply_deployment("shop", "api", 5).await;
    browser.wait_text(".pager", "(6 rows)").await;
    browser.screenshot("pods").await;

    // IP pools.
    browser.click_labelled("#top nav", "IP pools").await;
    browser.wait_text("tr[data-key=wdc-pool]", "0 used").await;
    browser
        .click_labelled("tr[data-key=wdc-pool]", "wdc-pool")
        .await;
    browser.wait_text("main dl", "10.125.9.0/24").await;

    // Replication: the endpoint's check, and a policy run to its job page.
    browser.click_labelled("#top nav", "Replication").await;
    browser.click_labelled("tr[data-key=self]", "Check").await;
    browser
        .wait_text("tr[data-key=self] .check-result", "reachable")
        .await;
    browser.screenshot("replication").await;
    browser
        .click_labelled("tr[data-key=to-self]", "Run now")
        .await;
    browser.wait_text("main h1", "Replication job").await;
    browser.wait_text("#job-state", "succeeded").await;
    browser.screenshot("replication-job").await;

    // Alerts, inventory, cost.
    browser.click_labelled("#top nav", "Alerts").await;
    browser.wait_text("main", "cpu.busy").await;
    browser.click_labelled("main", "Show chart").await;
    browser
        .wait_text(".chart figcaption", "busy: cpu.busy")
        .await;
    browser.screenshot("alerts").await;
    browser.click_labelled("#top nav", "Clusters").await;
    browser.wait_text("tr[data-key=dc1]", "physical").await;
    browser.wait_text("tr[data-key=general]", "dc1").await;
    browser.wait_text("tr[data-key=small]", "batch").await;
    browser.screenshot("inventory").await;
    browser.click_labelled("#top nav", "Cost").await;
    browser
        .wait_text(".chart figcaption", "Cost by project")
        .await;
    browser.screenshot("cost").await;
    let errors = browser
        .run("return [...document.querySelectorAll('main .error')].map((e) => e.textContent);")
        .await;
    assert_eq!(errors, json!([]), "the cost page shows no error");
    browser.finish().await;
}
