//! The API's OpenAPI 3.1 document, served at `GET /api/v1/openapi.json`. Each operation comes
//! from its handler's `#[utoipa::path]` and is registered with the route itself (utoipa-axum's
//! `routes!`), so the document and the routes cannot drift apart; the schemas come from the
//! types (`stratus-common`'s `openapi` feature). This module adds what every operation shares:
//! the authentication schemes and the JSON error answers an operation can give.

use std::sync::LazyLock;

use axum::response::IntoResponse;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, OpenApi, Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use stratus_common::api::ApiError;

/// The document's tags, in the order a reader meets them.
pub const TAGS: &[(&str, &str)] = &[
    (
        "instances",
        "Virtual machines: run, describe, kill, power, console",
    ),
    ("volumes", "Persistent disks and their attachments"),
    (
        "groups",
        "Server groups: instances placed together (affinity) or apart (anti-affinity)",
    ),
    (
        "images",
        "Site images and the Marketplace of signed entries",
    ),
    ("networks", "Virtual networks"),
    (
        "hosts",
        "Hypervisor hosts: enrolment, inventory, image pre-caching",
    ),
    (
        "agents",
        "What host agents call, with their host certificate",
    ),
    ("users", "Accounts, API tokens and certificate subjects"),
    ("cluster", "The controller group"),
    ("events", "The event stream"),
    ("monitoring", "Metrics and this document"),
];

/// Authentication schemes, as the document names them.
pub const BASIC: &str = "basic";
pub const TOKEN: &str = "token";
pub const USER_CERTIFICATE: &str = "user_certificate";
pub const SESSION: &str = "session";
pub const HOST_CERTIFICATE: &str = "host_certificate";

/// The document's base: title, version, tags and authentication schemes. Operations and
/// schemas are added by the router as it registers each route.
pub fn base() -> OpenApi {
    let mut doc = OpenApi::builder()
        .info(
            utoipa::openapi::InfoBuilder::new()
                .title("StratusLab API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "The controller's HTTP API. Every error is a JSON object `{code, message}`; \
                     the message names the field at fault. Users authenticate with HTTP Basic, \
                     an API token or an X.509 client certificate; host agents with their host \
                     certificate.",
                ))
                .license(Some(utoipa::openapi::License::new("Apache-2.0")))
                .build(),
        )
        .tags(Some(TAGS.iter().map(|(name, description)| {
            utoipa::openapi::tag::TagBuilder::new()
                .name(*name)
                .description(Some(*description))
                .build()
        })))
        .build();
    let components = doc.components.get_or_insert_with(Default::default);
    let schemes = [
        (
            BASIC,
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        ),
        (
            TOKEN,
            SecurityScheme::Http(
                utoipa::openapi::security::HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token (`POST /api/v1/tokens`)"))
                    .build(),
            ),
        ),
        (
            USER_CERTIFICATE,
            SecurityScheme::MutualTls {
                description: Some(
                    "An X.509 client certificate whose subject is mapped to an account".into(),
                ),
                extensions: None,
            },
        ),
        (
            SESSION,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                super::extract::SESSION_COOKIE,
                "The dashboard's session (an API token in a cookie)",
            ))),
        ),
        (
            HOST_CERTIFICATE,
            SecurityScheme::MutualTls {
                description: Some("A host certificate issued by the site CA".into()),
                extensions: None,
            },
        ),
    ];
    for (name, scheme) in schemes {
        components.security_schemes.insert(name.to_owned(), scheme);
    }
    let (name, schema) = (ApiError::name().into_owned(), ApiError::schema());
    components.schemas.insert(name, schema);
    doc
}

/// What every operation shares, added once the routes are registered: by default a user's
/// authentication, and the error answers its shape can give.
pub fn finish(doc: &mut OpenApi) {
    let user_auth: Vec<SecurityRequirement> = [BASIC, TOKEN, USER_CERTIFICATE, SESSION]
        .iter()
        .map(|scheme| SecurityRequirement::new(*scheme, Vec::<String>::new()))
        .collect();
    for (path, item) in doc.paths.paths.iter_mut() {
        let has_path_parameters = path.contains('{');
        for (method, operation) in operations(item) {
            let anonymous = operation
                .security
                .as_ref()
                .is_some_and(|s| s.iter().any(|r| r == &SecurityRequirement::default()));
            if operation.security.is_none() {
                operation.security = Some(user_auth.clone());
            }
            let mut errors = vec![
                (
                    400,
                    "Bad input: the message names the field, parameter or header",
                ),
                (403, "Not allowed to this caller"),
                (
                    503,
                    "No leader to take the request (a controller election is under way)",
                ),
            ];
            if !anonymous {
                errors.push((401, "Not authenticated"));
                errors.push((
                    429,
                    "Too many failed logins for this account or address (see Retry-After)",
                ));
            }
            if has_path_parameters {
                errors.push((404, "No such object"));
            }
            if method != "get" {
                errors.push((409, "The object's state does not allow this"));
            }
            if operation.request_body.is_some() {
                errors.push((413, "Body too large"));
                errors.push((415, "The body must be `application/json`"));
            }
            for (status, description) in errors {
                operation
                    .responses
                    .responses
                    .entry(status.to_string())
                    .or_insert_with(|| error_response(status, description).into());
            }
        }
    }
}

/// Each operation of a path with its method's name.
fn operations(item: &mut PathItem) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("get", item.get.as_mut()),
        ("put", item.put.as_mut()),
        ("post", item.post.as_mut()),
        ("delete", item.delete.as_mut()),
        ("patch", item.patch.as_mut()),
        ("head", item.head.as_mut()),
    ]
    .into_iter()
    .filter_map(|(method, operation)| operation.map(|o| (method, o)))
}

/// An error answer: the JSON error shape.
fn error_response(status: u16, description: &str) -> Response {
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(RefOr::Ref(Ref::from_schema_name(ApiError::name()))))
            .build(),
    );
    if status == 401 {
        response = response.header(
            "WWW-Authenticate",
            HeaderBuilder::new()
                .description(Some("The Basic realm"))
                .build(),
        );
    }
    if status == 429 {
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .description(Some("Seconds until a login may be tried again"))
                .build(),
        );
    }
    response.build()
}

/// The document, built once from the routes.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    let (_, mut doc) = super::api_routes().split_for_parts();
    finish(&mut doc);
    let mut json = serde_json::to_value(&doc).expect("the OpenAPI document serialises");
    unsigned(&mut json);
    serde_json::to_string_pretty(&json).expect("the OpenAPI document serialises")
});

/// Rust's unsigned integers as the document says them: utoipa writes a `u64` as `int64` with
/// `minimum: 0`, whose implied maximum is 2^63 - 1 where the API takes up to 2^64 - 1. Each
/// becomes `uint64` (or `uint32`) with its real maximum, unless the schema sets one.
fn unsigned(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            let is_unsigned = map.get("type").is_some_and(|t| {
                t == "integer"
                    || t.as_array()
                        .is_some_and(|a| a.iter().any(|t| t == "integer"))
            }) && map
                .get("minimum")
                .and_then(serde_json::Value::as_f64)
                .is_some_and(|m| m >= 0.0);
            if is_unsigned {
                let maximum = match map.get("format").and_then(|f| f.as_str()) {
                    Some("int64") => Some(("uint64", serde_json::Value::from(u64::MAX))),
                    Some("int32") => Some(("uint32", serde_json::Value::from(u32::MAX))),
                    _ => None,
                };
                if let Some((format, maximum)) = maximum {
                    map.insert("format".into(), format.into());
                    map.entry("maximum").or_insert(maximum);
                }
            }
            map.values_mut().for_each(unsigned);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(unsigned),
        _ => {}
    }
}

/// The whole document as JSON.
pub fn document_json() -> &'static str {
    &DOCUMENT
}

/// `GET /api/v1/openapi.json`: the document, to anyone (it holds no site data).
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "monitoring",
    security(()),
    responses((status = OK, description = "This document (OpenAPI 3.1)", content_type = "application/json"))
)]
pub async fn document() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        document_json(),
    )
}
