//! Pool grants over the API: create (the project and pool must exist, a
//! second grant of a pair overlaps), list, show, apply as YAML, delete;
//! and a Deployment naming a managed pool its project holds no grant on,
//! refused at apply and at update with nothing stored.

mod common;

use common::*;
use http::{Method, StatusCode};
use serde_json::json;
use wharf_api::Pool;

const WEB_ON_CORE: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      nodeSelector: {wharf.io/pool: core}
      containers: [{name: web, image: shop/web:1}]
"#;

async fn managed_pool(app: &TestApp, name: &str) {
    let mut pool = Pool::default();
    pool.metadata.name = name.into();
    pool.spec.cluster = "bj".into();
    app.app.control.objects().create(pool).await.unwrap();
}

/// `GET uri` as `token`.
async fn get(app: &TestApp, token: &str, uri: &str) -> Reply {
    app.api(token, Method::GET, uri, json!(null)).await
}

/// `DELETE /api/v1/poolgrants/core.shop`, which must succeed.
async fn revoke_core_shop(app: &TestApp, admin: &str) {
    app.api(
        admin,
        Method::DELETE,
        "/api/v1/poolgrants/core.shop",
        json!(null),
    )
    .await
    .expect(StatusCode::NO_CONTENT);
}

fn grant(pool: &str, project: &str) -> serde_json::Value {
    json!({"metadata": {"name": format!("{pool}.{project}")},
           "spec": {"pool": pool, "project": project}})
}

#[tokio::test]
async fn grants_are_created_listed_applied_and_deleted() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_project(&admin, "shop", false).await;
    let post = |body| app.api(&admin, Method::POST, "/api/v1/poolgrants", body);

    let no_pool = post(grant("core", "shop")).await;
    assert_eq!(no_pool.status, StatusCode::NOT_FOUND, "{}", no_pool.text());
    managed_pool(&app, "core").await;
    let no_project = post(grant("core", "ghost")).await;
    assert_ne!(no_project.status, StatusCode::CREATED);
    post(grant("core", "shop"))
        .await
        .expect(StatusCode::CREATED);
    let again = post(grant("core", "shop")).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(again.text().contains("overlaps"), "{}", again.text());

    let listed = get(&app, &admin, "/api/v1/poolgrants?pool=core").await;
    assert_eq!(listed.json()["items"].as_array().unwrap().len(), 1);
    let other_pool = get(&app, &admin, "/api/v1/poolgrants?pool=batch").await;
    assert!(other_pool.json()["items"].as_array().unwrap().is_empty());

    let applied = app
        .apply_yaml(
            &admin,
            "apiVersion: wharf.io/v1\nkind: PoolGrant\nspec: {pool: core, project: shop, quota: {pods: 2}}\n",
        )
        .await;
    assert_eq!(applied.status, StatusCode::OK, "{}", applied.text());
    assert_eq!(applied.json()["results"][0]["action"], "configured");
    let shown = get(&app, &admin, "/api/v1/poolgrants/core.shop").await;
    assert_eq!(shown.json()["spec"]["quota"]["pods"], 2);

    revoke_core_shop(&app, &admin).await;
    let gone = get(&app, &admin, "/api/v1/poolgrants/core.shop").await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn only_administrators_apply_grants() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    let (_, developer) = app.shop_with_guest_and_developer(&admin).await;
    managed_pool(&app, "core").await;
    let refused = app
        .apply_yaml(
            &developer,
            "apiVersion: wharf.io/v1\nkind: PoolGrant\nspec: {pool: core, project: shop}\n",
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text());
}

#[tokio::test]
async fn a_deployment_on_a_pool_its_project_may_not_use_is_refused() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_project(&admin, "shop", false).await;
    managed_pool(&app, "core").await;

    let refused = app.apply_yaml(&admin, WEB_ON_CORE).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text());
    assert!(
        refused
            .text()
            .contains("project shop may not place pods on pool core"),
        "{}",
        refused.text()
    );
    let stored = get(&app, &admin, "/api/v1/projects/shop/deployments/web").await;
    assert_eq!(stored.status, StatusCode::NOT_FOUND, "nothing stored");

    // Granted, it applies; revoked, an update naming the pool is refused.
    app.api(
        &admin,
        Method::POST,
        "/api/v1/poolgrants",
        grant("core", "shop"),
    )
    .await
    .expect(StatusCode::CREATED);
    let applied = app.apply_yaml(&admin, WEB_ON_CORE).await;
    assert_eq!(applied.status, StatusCode::OK, "{}", applied.text());
    revoke_core_shop(&app, &admin).await;
    let current = get(&app, &admin, "/api/v1/projects/shop/deployments/web")
        .await
        .json();
    let mut changed = current.clone();
    changed["spec"]["replicas"] = json!(2);
    let update = app
        .api(
            &admin,
            Method::PUT,
            "/api/v1/projects/shop/deployments/web",
            changed,
        )
        .await;
    assert_eq!(update.status, StatusCode::FORBIDDEN, "{}", update.text());
}
