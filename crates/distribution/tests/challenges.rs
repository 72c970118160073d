//! The client against a small token-auth registry on loopback: which scope
//! a token is asked for, that it is cached, and how refusals come back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use reqwest::Method;
use wharf_distribution::{Client, RegistryCredentials, SendError, TokenScope};

/// The scopes asked of the token server, in order.
type Asked = Arc<Mutex<Vec<String>>>;

struct Fake {
    base: reqwest::Url,
    asked: Asked,
}

/// `/token` grants whatever scope is asked as the token `t:<scope>`; `/v2/`
/// paths answer 200 to a token that covers what `scope_for` says they need
/// and otherwise challenge for it, naming only pull for upload sessions (as
/// Wharf does for an upload's status).
async fn fake(basic: bool) -> Fake {
    let asked = Asked::default();
    let app = Router::new()
        .route("/token", get(token))
        .route("/v2/{*path}", any(resource))
        .with_state((asked.clone(), basic));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Fake {
        base: base.parse().unwrap(),
        asked,
    }
}

async fn token(
    State((asked, _)): State<(Asked, bool)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let scope = query.get("scope").cloned().unwrap_or_default();
    asked.lock().unwrap().push(scope.clone());
    axum::Json(serde_json::json!({ "token": format!("t:{scope}") })).into_response()
}

async fn resource(
    State((_, basic)): State<(Asked, bool)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let uploads = uri.path().contains("/blobs/uploads/");
    let offered = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let ok = if basic {
        offered.starts_with("Basic ")
    } else {
        let needed = if uploads { ":pull,push" } else { ":pull" };
        offered.starts_with("Bearer t:repository:r") && offered.ends_with(needed)
    };
    if ok {
        return StatusCode::OK.into_response();
    }
    let challenge = if basic {
        r#"Basic realm="fake""#.to_string()
    } else {
        let host = headers[header::HOST].to_str().unwrap();
        format!(r#"Bearer realm="http://{host}/token",service="fake",scope="repository:r:pull""#)
    };
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, challenge)],
    )
        .into_response()
}

fn client(fake: &Fake, scope: TokenScope) -> Client {
    Client::new("fake", fake.base.clone(), reqwest::Client::new())
        .with_credentials(Some(RegistryCredentials::new("u", "p")))
        .asking(scope)
}

#[tokio::test]
async fn a_token_is_asked_once_and_cached_for_its_scope() {
    let fake = fake(false).await;
    let client = client(&fake, TokenScope::Challenged);
    for _ in 0..2 {
        let answer = client.manifest(Method::GET, "r", "1").await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
    }
    assert_eq!(*fake.asked.lock().unwrap(), ["repository:r:pull"]);
}

#[tokio::test]
async fn replication_asks_for_the_scope_it_caches_not_the_challenges() {
    let fake = fake(false).await;
    let session = fake.base.join("/v2/r/blobs/uploads/1").unwrap();

    // Asking for what the challenge names caches a pull token under the push
    // scope: the session answers 401 again.
    let challenged = client(&fake, TokenScope::Challenged);
    let answer = challenged.upload_status("r", &session).await.unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);

    let requested = client(&fake, TokenScope::Requested);
    let answer = requested.upload_status("r", &session).await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(
        fake.asked.lock().unwrap().last().map(String::as_str),
        Some("repository:r:pull,push")
    );
}

#[tokio::test]
async fn basic_challenges_need_credentials_and_locations_stay_on_the_registry() {
    let fake = fake(true).await;
    let with = client(&fake, TokenScope::Requested);
    let answer = with.manifest(Method::HEAD, "r", "1").await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let without = Client::new("fake", fake.base.clone(), reqwest::Client::new());
    assert!(matches!(
        without.manifest(Method::HEAD, "r", "1").await,
        Err(SendError::BasicWithoutCredentials)
    ));
    assert!(fake.asked.lock().unwrap().is_empty());

    assert!(with.location("/v2/r/blobs/uploads/1?state=x").is_ok());
    assert!(matches!(
        with.location("http://elsewhere.example/v2/r/blobs/uploads/1"),
        Err(SendError::ForeignLocation(_))
    ));
}
