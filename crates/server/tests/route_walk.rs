//! Walks every API route and a sample of every registry route and proves
//! that none answers an anonymous, unauthorized or badly-authenticated caller.

mod common;

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use wharf_server::{Access, InventoryAction, route_table};

/// Fills a route template with names that exist in the test's world.
fn concrete(path: &str) -> String {
    path.replace("{project}", "walk")
        .replace("{user}", "plain")
        .replace("{robot}", "ci")
        .replace("{name}", "admin")
        .replace("{node}", "n1")
        .replace("{pool}", "p1")
        .replace("{grant}", "p1.walk")
}

/// Routes a user with no role anywhere may legitimately use.
fn open_to_any_user(method: &Method, path: &str) -> bool {
    matches!(
        (method.as_str(), path),
        ("GET", "/api/v1/me")
            | ("GET", "/api/v1/session")
            | ("GET", "/api/v1/projects")
            | ("POST", "/api/v1/projects")
            | ("GET", "/api/v1/nodes")
            | ("GET", "/api/v1/nodes/{node}")
            | ("GET", "/api/v1/events")
            // Pools are cluster-wide facts, like nodes.
            | ("GET", "/api/v1/ippools")
            | ("GET", "/api/v1/ippools/{pool}")
            // The commit index shows each caller the projects they read.
            | ("GET", "/api/v1/commits/ips")
            // Apply checks the project of each object in the body.
            | ("POST", "/api/v1/apply")
    )
}

#[tokio::test]
async fn no_api_route_serves_anonymous_or_unauthorized_callers() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_user(&admin, "plain", "plain-password").await;
    app.create_project(&admin, "walk", false).await;
    let plain = app.api_login("plain", "plain-password").await;
    let mut forged = plain.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });

    let table = route_table();
    assert!(table.len() >= 20, "the table lists every route");
    for route in table {
        let uri = concrete(route.path);
        let what = format!("{} {}", route.method, route.path);
        if route.access == Access::Public {
            continue;
        }
        let anonymous = app
            .send(route.method.clone(), &uri, &[], Bytes::new())
            .await;
        assert_eq!(
            anonymous.status,
            StatusCode::UNAUTHORIZED,
            "{what} answered anonymously"
        );
        assert_eq!(anonymous.json()["error"]["code"], "UNAUTHORIZED", "{what}");

        let tampered = app
            .api(&forged, route.method.clone(), &uri, serde_json::json!({}))
            .await;
        assert_eq!(
            tampered.status,
            StatusCode::UNAUTHORIZED,
            "{what} accepted a tampered token"
        );

        let as_plain = app
            .api(&plain, route.method.clone(), &uri, serde_json::json!({}))
            .await;
        if open_to_any_user(&route.method, route.path) {
            assert_ne!(as_plain.status, StatusCode::FORBIDDEN, "{what}");
        } else {
            assert_eq!(
                as_plain.status,
                StatusCode::FORBIDDEN,
                "{what} answered a user with no role: {}",
                String::from_utf8_lossy(&as_plain.body)
            );
        }
    }
}

/// Whether an inventory role may do `action`.
fn role_allows(role: &str, action: InventoryAction) -> bool {
    match action {
        InventoryAction::Read => true,
        InventoryAction::Operate => role != "viewer",
        InventoryAction::Manage => role == "clusterAdmin",
    }
}

#[tokio::test]
async fn inventory_roles_open_their_inventory_routes_and_nothing_of_the_administrators() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_user(&admin, "plain", "plain-password").await;
    app.create_project(&admin, "walk", false).await;
    let mut callers = Vec::new();
    for role in ["clusterAdmin", "poolOperator", "viewer"] {
        let user = role.to_lowercase();
        app.create_user(&admin, &user, "role-password").await;
        app.api(
            &admin,
            Method::PUT,
            &format!("/api/v1/users/{user}/inventoryrole"),
            serde_json::json!({"role": role}),
        )
        .await
        .expect(StatusCode::OK);
        callers.push((role, app.api_login(&user, "role-password").await));
    }
    let mut inventory_routes = 0;
    for route in route_table() {
        let uri = concrete(route.path);
        let what = format!("{} {}", route.method, route.path);
        for (role, token) in &callers {
            let reply = app
                .api(token, route.method.clone(), &uri, serde_json::json!({}))
                .await;
            let allowed = match route.access {
                Access::Inventory(action) => role_allows(role, action),
                // A role opens no administrator's route.
                Access::Admin | Access::MetricsReader => false,
                _ => continue,
            };
            if allowed {
                assert_ne!(
                    reply.status,
                    StatusCode::FORBIDDEN,
                    "{what} refused a {role}"
                );
            } else {
                assert_eq!(
                    reply.status,
                    StatusCode::FORBIDDEN,
                    "{what} answered a {role}: {}",
                    String::from_utf8_lossy(&reply.body)
                );
            }
        }
        inventory_routes += usize::from(matches!(route.access, Access::Inventory(_)));
    }
    assert!(inventory_routes >= 16, "clusters, pools, classes, cordon");
    // Only a system administrator sets roles.
    let (_, cluster_admin) = &callers[0];
    app.api(
        cluster_admin,
        Method::PUT,
        "/api/v1/users/plain/inventoryrole",
        serde_json::json!({"role": "clusterAdmin"}),
    )
    .await
    .expect(StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn no_registry_route_serves_callers_without_a_fitting_token() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_user(&admin, "plain", "plain-password").await;
    app.create_project(&admin, "walk", false).await;
    let digest = sha256(b"x");
    let endpoints = [
        (Method::GET, "/v2/".to_string()),
        (Method::GET, "/v2/_catalog".to_string()),
        (Method::GET, "/v2/walk/app/tags/list".to_string()),
        (Method::GET, "/v2/walk/app/manifests/v1".to_string()),
        (Method::HEAD, "/v2/walk/app/manifests/v1".to_string()),
        (Method::PUT, "/v2/walk/app/manifests/v1".to_string()),
        (Method::DELETE, "/v2/walk/app/manifests/v1".to_string()),
        (Method::GET, format!("/v2/walk/app/blobs/{digest}")),
        (Method::HEAD, format!("/v2/walk/app/blobs/{digest}")),
        (Method::DELETE, format!("/v2/walk/app/blobs/{digest}")),
        (Method::POST, "/v2/walk/app/blobs/uploads/".to_string()),
        (
            Method::GET,
            "/v2/walk/app/blobs/uploads/00000000-0000-0000-0000-000000000000".to_string(),
        ),
        (
            Method::PATCH,
            "/v2/walk/app/blobs/uploads/00000000-0000-0000-0000-000000000000".to_string(),
        ),
        (
            Method::PUT,
            "/v2/walk/app/blobs/uploads/00000000-0000-0000-0000-000000000000".to_string(),
        ),
        (
            Method::DELETE,
            "/v2/walk/app/blobs/uploads/00000000-0000-0000-0000-000000000000".to_string(),
        ),
        (Method::GET, format!("/v2/walk/app/referrers/{digest}")),
    ];
    // A token the plain user got for everything in `walk`: granted nothing.
    let plain = app
        .token_for(
            "plain",
            "plain-password",
            "repository:walk/app:pull,push,delete",
        )
        .await;
    for (method, uri) in endpoints {
        let anonymous = app.send(method.clone(), &uri, &[], Bytes::new()).await;
        assert_eq!(
            anonymous.status,
            StatusCode::UNAUTHORIZED,
            "{method} {uri} answered anonymously"
        );
        let challenge = anonymous.header("www-authenticate");
        assert!(
            challenge.starts_with(
                "Bearer realm=\"http://registry.test/service/token\",service=\"wharf\""
            ),
            "{challenge}"
        );

        let refused = app
            .v2(&plain, method.clone(), &uri, &[], Bytes::new())
            .await;
        if uri == "/v2/" {
            assert_eq!(refused.status, StatusCode::OK, "any valid token may ping");
        } else if uri == "/v2/_catalog" {
            // Not asked for in the token: the client is told which scope to ask.
            assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        } else {
            assert_eq!(
                refused.status,
                StatusCode::FORBIDDEN,
                "{method} {uri} served a user without access"
            );
        }
    }
}

#[tokio::test]
async fn a_metrics_robot_reads_metrics_and_nothing_else() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_user(&admin, "plain", "plain-password").await;
    app.create_project(&admin, "walk", false).await;
    let reply = app
        .api(
            &admin,
            Method::POST,
            "/api/v1/projects/walk/robots",
            serde_json::json!({"name": "scraper", "system_permissions": ["metrics:read"]}),
        )
        .await
        .expect(StatusCode::CREATED)
        .json();
    let token = reply["token"].as_str().unwrap().to_string();

    let mut scrape_routes = 0;
    for route in route_table() {
        let uri = concrete(route.path);
        let what = format!("{} {}", route.method, route.path);
        let reply = app
            .api(&token, route.method.clone(), &uri, serde_json::json!({}))
            .await;
        match route.access {
            Access::Public => {}
            Access::MetricsReader => {
                scrape_routes += 1;
                assert!(reply.status.is_success(), "{what}: {}", reply.status);
            }
            _ => assert_eq!(
                reply.status,
                StatusCode::FORBIDDEN,
                "{what} answered a metrics:read robot: {}",
                String::from_utf8_lossy(&reply.body)
            ),
        }
    }
    assert_eq!(scrape_routes, 2, "GET /metrics and its access check");
}
