//! The HTTP layer as a client meets it, through the router: every error is the JSON error
//! shape (also the framework's own rejections), bodies must be JSON objects of the JSON type,
//! and failed logins are limited per account and per source address.

use std::net::SocketAddr;

use axum::body::Body as HttpBody;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use base64::Engine as _;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::*;
use crate::users::throttle::FailureLimits;

struct Api {
    router: Router,
    _dir: tempfile::TempDir,
}

fn basic(user: &str, password: &str) -> String {
    let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {pair}")
}

/// What came back: status, headers and the body as JSON (every answer here must be JSON).
struct Answered {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

impl Api {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let services = crate::services::tests::cloud(dir.path(), &[]).await;
        Self {
            router: router(Arc::new(services)),
            _dir: dir,
        }
    }

    async fn send(&self, request: Request<HttpBody>) -> Answered {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        if status.is_client_error() || status.is_server_error() {
            assert_eq!(
                headers.get(header::CONTENT_TYPE).unwrap(),
                "application/json",
                "a {status} that is not JSON: {:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&bytes)))
        };
        if body.get("code").is_some() {
            assert!(body["message"].is_string(), "{body}");
        }
        Answered {
            status,
            headers,
            body,
        }
    }

    fn request(method: Method, uri: &str, auth: Option<&str>) -> axum::http::request::Builder {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(auth) = auth {
            builder = builder.header(header::AUTHORIZATION, auth);
        }
        builder
    }

    async fn admin(&self, method: Method, uri: &str, content_type: &str, body: &str) -> Answered {
        let request = Self::request(method, uri, Some(&basic("admin", "password1")))
            .header(header::CONTENT_TYPE, content_type)
            .body(HttpBody::from(body.to_owned()))
            .unwrap();
        self.send(request).await
    }

    async fn get(&self, uri: &str, auth: &str, from: Option<SocketAddr>) -> Answered {
        let mut request = Self::request(Method::GET, uri, Some(auth))
            .body(HttpBody::empty())
            .unwrap();
        if let Some(addr) = from {
            request.extensions_mut().insert(ConnectInfo(addr));
        }
        self.send(request).await
    }

    async fn instance_count(&self) -> usize {
        let answered = self
            .get("/api/v1/instances", &basic("admin", "password1"), None)
            .await;
        assert_eq!(answered.status, StatusCode::OK);
        answered.body.as_array().unwrap().len()
    }
}

fn assert_error(answered: &Answered, status: StatusCode, code: &str, mentions: &str) {
    assert_eq!(answered.status, status, "{}", answered.body);
    assert_eq!(answered.body["code"], code, "{}", answered.body);
    let message = answered.body["message"].as_str().unwrap();
    assert!(message.contains(mentions), "{message:?} lacks {mentions:?}");
}

#[tokio::test]
async fn bodies_must_be_json_objects_of_the_json_type_and_change_nothing_otherwise() {
    let api = Api::new().await;
    let json = "application/json";
    // serde would read an array into the struct field by field.
    let answered = api
        .admin(Method::POST, "/api/v1/instances", json, r#"["appliance"]"#)
        .await;
    assert_error(
        &answered,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "body: must be a JSON object",
    );
    for body in ["\"appliance\"", "42", "null", ""] {
        let answered = api
            .admin(Method::POST, "/api/v1/instances", json, body)
            .await;
        assert_error(&answered, StatusCode::BAD_REQUEST, "bad_request", "body");
    }
    // A cross-site form can send text/plain without a preflight: refused, on every route.
    let site_image = r#"{"name": "x", "format": "raw", "disk": {"locations": ["http://images.example/x"], "sha256": "00"}}"#;
    for (uri, body) in [
        ("/api/v1/images", site_image),
        ("/api/v1/instances", r#"{"image": "appliance"}"#),
    ] {
        let answered = api.admin(Method::POST, uri, "text/plain", body).await;
        assert_error(
            &answered,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type must be application/json",
        );
    }
    let answered = api
        .admin(Method::POST, "/api/v1/images", json, "[1, 2]")
        .await;
    assert_error(
        &answered,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "must be a JSON object",
    );
    // JSON types with parameters or a +json suffix are JSON.
    let answered = api
        .admin(
            Method::POST,
            "/api/v1/instances",
            "application/json; charset=utf-8",
            r#"{"image": "appliance", "colour": "red"}"#,
        )
        .await;
    assert_error(&answered, StatusCode::BAD_REQUEST, "bad_request", "colour");
    // Over the body limit (2 MB): 413, as JSON.
    let big = format!(r#"{{"name": "{}"}}"#, "x".repeat(3 << 20));
    let answered = api.admin(Method::POST, "/api/v1/images", json, &big).await;
    assert_error(
        &answered,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "body",
    );
    assert_eq!(api.instance_count().await, 0);
}

#[tokio::test]
async fn the_frameworks_own_rejections_are_json_errors() {
    let api = Api::new().await;
    let admin = basic("admin", "password1");
    // A path segment that is not UTF-8 once percent-decoded.
    let answered = api.get("/api/v1/instances/%FF%FE", &admin, None).await;
    assert_error(&answered, StatusCode::BAD_REQUEST, "bad_request", "UTF-8");
    // Query strings that do not parse.
    let answered = api.get("/api/v1/images?limit=many", &admin, None).await;
    assert_error(&answered, StatusCode::BAD_REQUEST, "bad_request", "limit");
    let answered = api
        .admin(
            Method::DELETE,
            "/api/v1/instances/1/volumes/x?force=maybe",
            "",
            "",
        )
        .await;
    assert_error(&answered, StatusCode::BAD_REQUEST, "bad_request", "force");
    // An agent route without a host certificate: refused before anything else is read.
    let answered = api
        .get(
            "/api/v1/hosts/node-1/desired?since=yesterday",
            "Bearer token",
            None,
        )
        .await;
    assert_error(
        &answered,
        StatusCode::UNAUTHORIZED,
        "host_certificate_required",
        "join token",
    );
    // A method the route does not have: 405 with what it does have.
    let answered = api.admin(Method::PUT, "/api/v1/instances", "", "").await;
    assert_error(
        &answered,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "Method Not Allowed",
    );
    let allow = answered
        .headers
        .get(header::ALLOW)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    let answered = api.get("/nowhere", &admin, None).await;
    assert_error(&answered, StatusCode::NOT_FOUND, "not_found", "no such");
}

#[tokio::test]
async fn free_texts_refuse_direction_overrides() {
    let api = Api::new().await;
    // U+202E turns "disk-exe.txt" around on an operator's screen.
    let body = json!({"size": 1, "tag": "invoice\u{202e}txt.exe"}).to_string();
    let answered = api
        .admin(Method::POST, "/api/v1/volumes", "application/json", &body)
        .await;
    assert_error(
        &answered,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "tag: bidirectional formatting characters are not allowed (found U+202E)",
    );
}

#[tokio::test]
async fn failed_logins_are_limited_per_account_and_per_address_and_others_go_on() {
    let api = Api::new().await;
    let admin = basic("admin", "password1");
    let body = json!({"name": "alice", "password": "alice-password"}).to_string();
    let created = api
        .admin(Method::POST, "/api/v1/users", "application/json", &body)
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let attacker: SocketAddr = "192.0.2.66:40000".parse().unwrap();
    let limits = FailureLimits::default();
    // Wrong passwords for alice: 401 each, until the account's budget is spent.
    for _ in 0..limits.per_account.burst {
        let answered = api
            .get(
                "/api/v1/instances",
                &basic("alice", "guess"),
                Some(attacker),
            )
            .await;
        assert_error(
            &answered,
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "authentication required",
        );
    }
    let answered = api
        .get(
            "/api/v1/instances",
            &basic("alice", "guess"),
            Some(attacker),
        )
        .await;
    assert_error(
        &answered,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_failures",
        "too many failed logins for this account; try again in 6 s",
    );
    assert_eq!(answered.headers.get(header::RETRY_AFTER).unwrap(), "6");
    // Even the right password waits now: the account is what is protected.
    let answered = api
        .get(
            "/api/v1/instances",
            &basic("alice", "alice-password"),
            Some("198.51.100.1:1".parse().unwrap()),
        )
        .await;
    assert_eq!(answered.status, StatusCode::TOO_MANY_REQUESTS);
    // Names that do not exist cost a check too, and spend the address's budget.
    let remaining = limits.per_source.burst - limits.per_account.burst;
    for n in 0..remaining {
        let answered = api
            .get(
                "/api/v1/instances",
                &basic(&format!("nobody{n}"), "guess"),
                Some(attacker),
            )
            .await;
        assert_eq!(
            answered.status,
            StatusCode::UNAUTHORIZED,
            "{}",
            answered.body
        );
    }
    let answered = api
        .get(
            "/api/v1/instances",
            &basic("nobody", "guess"),
            Some(attacker),
        )
        .await;
    assert_error(
        &answered,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_failures",
        "from this address",
    );
    // The administrator, already verified once, is never held up, from that address either.
    for from in [Some(attacker), None] {
        let answered = api.get("/api/v1/instances", &admin, from).await;
        assert_eq!(answered.status, StatusCode::OK, "{}", answered.body);
    }
}

#[tokio::test]
async fn an_expired_api_token_is_refused_and_one_in_time_is_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let services = Arc::new(crate::services::tests::cloud(dir.path(), &[]).await);
    let api = Api {
        router: router(services.clone()),
        _dir: dir,
    };
    let now = crate::decide::now_ms();
    for (secret, expires_ms) in [
        ("stratus-api_old", now - 1),
        ("stratus-api_new", now + 60_000),
    ] {
        services
            .replica
            .propose(crate::state::Command::CreateApiToken {
                digest: crate::decide::secret_digest(secret),
                token: crate::state::ApiToken {
                    id: secret.into(),
                    owner: "admin".into(),
                    name: secret.into(),
                    created_ms: now - 10_000,
                    expires_ms: Some(expires_ms),
                },
            })
            .await
            .unwrap()
            .unwrap();
    }
    let answered = api
        .get("/api/v1/instances", "Bearer stratus-api_old", None)
        .await;
    assert_error(
        &answered,
        StatusCode::UNAUTHORIZED,
        "token_invalid",
        "unknown, revoked or expired",
    );
    let answered = api
        .get("/api/v1/tokens", "Bearer stratus-api_new", None)
        .await;
    assert_eq!(answered.status, StatusCode::OK, "{}", answered.body);
    assert_eq!(
        answered.body.as_array().unwrap().len(),
        2,
        "an admin sees every token"
    );
}
