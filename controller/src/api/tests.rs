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

#[tokio::test]
async fn passwords_are_counted_in_characters_and_token_lifetimes_are_bounded() {
    let api = Api::new().await;
    let json = "application/json";
    // Five characters, eleven bytes: too short, as the message says.
    let body = json!({"name": "bob", "password": "ééé:z"}).to_string();
    let answered = api.admin(Method::POST, "/api/v1/users", json, &body).await;
    assert_error(
        &answered,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "password: must be at least 8 characters",
    );
    let body = json!({"password": "ééé:z"}).to_string();
    let answered = api
        .admin(Method::PATCH, "/api/v1/users/admin", json, &body)
        .await;
    assert_error(
        &answered,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "password: must be at least 8 characters",
    );
    // Eight characters of any script are enough.
    let body = json!({"name": "bob", "password": "пароль12"}).to_string();
    let answered = api.admin(Method::POST, "/api/v1/users", json, &body).await;
    assert_eq!(answered.status, StatusCode::CREATED, "{}", answered.body);
    // A lifetime past ten years (here, one that would end in the year 584 million) is refused.
    for secs in [
        0_u64,
        crate::users::tokens::MAX_TOKEN_LIFETIME_SECS + 1,
        1 << 63,
    ] {
        let body = json!({"name": "ci", "expires_in_secs": secs}).to_string();
        let answered = api.admin(Method::POST, "/api/v1/tokens", json, &body).await;
        assert_error(
            &answered,
            StatusCode::BAD_REQUEST,
            "bad_request",
            "expires_in_secs: must be 1 to 315360000",
        );
    }
    let answered = api
        .get("/api/v1/tokens", &basic("admin", "password1"), None)
        .await;
    assert_eq!(answered.body, json!([]), "nothing was made");
}

/// Every operation of the OpenAPI document reaches its handler through the router (the
/// request is refused by the handler's own authentication or input checks, never by the
/// router as an unknown path or method).
#[tokio::test]
async fn every_documented_operation_is_routed() {
    let api = Api::new().await;
    let document: Value = serde_json::from_str(openapi::document_json()).unwrap();
    let paths = document["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        let uri = path
            .replace("{id}", "1")
            .replace("{volume}", "v")
            .replace("{name}", "node-1")
            .replace("{sha256}", &"0".repeat(64))
            .replace("{identifier}", "x");
        assert!(
            !uri.contains('{'),
            "a path parameter the test does not fill: {path}"
        );
        for method in item.as_object().unwrap().keys() {
            let method: Method = method.to_uppercase().parse().unwrap();
            let request = Api::request(method.clone(), &uri, None)
                .header(header::CONTENT_TYPE, "application/json")
                .body(HttpBody::from("{}"))
                .unwrap();
            let response = api.router.clone().oneshot(request).await.unwrap();
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert_ne!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}: {text}"
            );
            assert!(
                !text.contains("no such API resource"),
                "{method} {path} is documented but not routed"
            );
            operations += 1;
        }
    }
    assert_eq!(operations, 61, "operations in the document");
}

/// The document is whole: every `$ref` resolves, every operation has an ID of its own, a
/// tag the document describes, a success answer, and the error shape for its failures.
#[test]
fn the_openapi_document_is_whole() {
    let document: Value = serde_json::from_str(openapi::document_json()).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    let schemas = document["components"]["schemas"].as_object().unwrap();
    fn refs<'a>(value: &'a Value, into: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    into.push(r);
                }
                map.values().for_each(|v| refs(v, into));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, into)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&document, &mut all);
    for r in &all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{r} is not a schema reference"));
        assert!(schemas.contains_key(name), "{r} does not resolve");
    }
    let tags: Vec<&str> = openapi::TAGS.iter().map(|(name, _)| *name).collect();
    let mut ids = std::collections::HashSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let id = operation["operationId"].as_str().unwrap();
            assert!(ids.insert(id.to_owned()), "operation ID {id} twice");
            let tag = operation["tags"][0].as_str().unwrap_or_default();
            assert!(tags.contains(&tag), "{method} {path}: tag {tag:?}");
            let responses = operation["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{method} {path} has no success answer"
            );
            assert_eq!(
                responses["400"]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ApiError",
                "{method} {path}"
            );
            assert!(operation["security"].is_array(), "{method} {path}");
        }
    }
}

/// Routes are added to the API only through utoipa-axum's `routes!` (which documents them):
/// no module of the API calls axum's own `route`, so nothing is served undocumented.
#[test]
fn the_api_is_routed_only_through_its_document() {
    for (file, source) in [
        ("mod.rs", include_str!("mod.rs")),
        ("accounts.rs", include_str!("accounts.rs")),
        ("cluster.rs", include_str!("cluster.rs")),
        ("console.rs", include_str!("console.rs")),
        ("events.rs", include_str!("events.rs")),
        ("metrics.rs", include_str!("metrics.rs")),
        ("openapi.rs", include_str!("openapi.rs")),
        ("power.rs", include_str!("power.rs")),
        ("usage.rs", include_str!("usage.rs")),
    ] {
        for pattern in [".route(", "axum::routing::", ".nest("] {
            assert!(
                !source.contains(pattern),
                "api/{file} uses {pattern} directly: register the route with routes!()"
            );
        }
    }
}

#[tokio::test]
async fn the_instance_list_pages_in_id_order_with_a_link_to_the_next_page() {
    let api = Api::new().await;
    let admin = basic("admin", "password1");
    for _ in 0..3 {
        let made = api
            .admin(
                Method::POST,
                "/api/v1/instances",
                "application/json",
                r#"{"image": "ttylinux"}"#,
            )
            .await;
        assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    }
    let ids = |answered: &Answered| -> Vec<u64> {
        answered
            .body
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_u64().unwrap())
            .collect()
    };
    let all = api.get("/api/v1/instances", &admin, None).await;
    let every = ids(&all);
    assert_eq!(every.len(), 3);
    assert!(
        all.headers.get(header::LINK).is_none(),
        "no limit, no pages"
    );
    let first = api.get("/api/v1/instances?limit=2", &admin, None).await;
    assert_eq!(ids(&first), every[..2]);
    let link = first.headers[header::LINK].to_str().unwrap().to_owned();
    assert_eq!(
        link,
        format!(
            "</api/v1/instances?limit=2&after={}>; rel=\"next\"",
            every[1]
        )
    );
    let next = link.trim_start_matches('<').split('>').next().unwrap();
    let second = api.get(next, &admin, None).await;
    assert_eq!(ids(&second), every[2..]);
    assert!(second.headers.get(header::LINK).is_none(), "the last page");
    for (query, mentions) in [
        ("limit=0", "limit: must be 1 to 1000, not 0"),
        ("limit=1001", "limit: must be 1 to 1000, not 1001"),
        ("limit=x", "query"),
        ("page=2", "query"),
    ] {
        let answered = api
            .get(&format!("/api/v1/instances?{query}"), &admin, None)
            .await;
        assert_error(&answered, StatusCode::BAD_REQUEST, "bad_request", mentions);
    }
}
