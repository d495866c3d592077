//! The Marketplace pages (every logged-in user), as the StratusLab Marketplace's web
//! interface had them: `/marketplace`, the entries (the latest per image and endorser, or
//! every entry with `history`) browsed and queried by identifier, OS, endorser, kind and
//! creation date, each with this site's policy verdict on its image;
//! `/marketplace/images/{identifier}`, one image: the verdict, an entry's metadata (type,
//! checksums, endorser, OS, version, dates, locations) and the image's whole history of
//! entries; `/marketplace/endorsers`, who endorses entries here and the endorser
//! certificates the site registered; `/marketplace/upload`, a signed metadata file sent from
//! the browser (multipart, with the CSRF token of [`super::csrf`]) and checked by
//! [`crate::images::Images::upload_entry`], the API's and CLI's own path: same checks, same
//! messages. `assets/marketplace.js` tells an open page of new entries from the event stream.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};
use serde::Deserialize;
use stratus_common::api::{Endorser, MarketplaceEntry, PolicyVerdict};
use stratus_common::marketplace::{parse_timestamp, ImageKind};

use super::layout::{not_found, page, Section};
use super::{csrf, html, viewer, Page};
use crate::api::extract::origin;
use crate::api::status_of;
use crate::api::Shared;
use crate::failure::{Failure, InputError};
use crate::images::ImageError;
use crate::marketplace::registry::MAX_PAGE_LIMIT;
use crate::marketplace::Query as RegistryQuery;
use crate::services::Services;
use crate::users::Caller;

/// Entries per page of the list.
const PAGE: usize = 25;
/// The multipart field holding the signed metadata file.
const FILE_FIELD: &str = "metadata";

pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/marketplace", get(entries))
        .route("/marketplace/endorsers", get(endorsers))
        .route("/marketplace/upload", get(upload_form).post(upload))
        .route("/marketplace/images/{identifier}", get(image))
}

/// The list's query, as the form sends it (every field text, checked here so that a wrong
/// one is named in the page's message).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Browse {
    identifier: String,
    os: String,
    endorser: String,
    kind: String,
    /// A day (`2024-05-01`) or an RFC 3339 time: entries created then or later.
    from: String,
    /// A day or an RFC 3339 time: entries created then or earlier.
    to: String,
    /// `on`: every entry, not only the latest per image and endorser.
    history: String,
    offset: String,
}

/// `value` (a day, or an RFC 3339 time) in epoch milliseconds; a day is its first moment for
/// `from`, its last for `to`.
fn time_bound(field: &'static str, value: &str) -> Result<Option<u64>, InputError> {
    if value.is_empty() {
        return Ok(None);
    }
    let day = value.len() == 10 && value.as_bytes()[4] == b'-' && value.as_bytes()[7] == b'-';
    let text = match (day, field) {
        (true, "from") => format!("{value}T00:00:00Z"),
        (true, _) => format!("{value}T23:59:59.999Z"),
        (false, _) => value.to_owned(),
    };
    parse_timestamp(field, &text)
        .map(Some)
        .map_err(|e| InputError::named(field, e.to_string()))
}

impl Browse {
    fn to_query(&self) -> Result<RegistryQuery, InputError> {
        let text = |v: &str| Some(v.trim().to_owned()).filter(|v| !v.is_empty());
        let kind = match self.kind.as_str() {
            "" => None,
            "machine" => Some(ImageKind::Machine),
            "disk" => Some(ImageKind::Disk),
            other => {
                return Err(InputError::new(
                    "kind",
                    format!("machine or disk, not {other:?}"),
                ))
            }
        };
        let offset = match self.offset.as_str() {
            "" => 0,
            raw => raw.parse().map_err(|_| {
                InputError::new("offset", format!("a number of entries, not {raw:?}"))
            })?,
        };
        Ok(RegistryQuery {
            identifier: text(&self.identifier),
            os: text(&self.os),
            endorser: text(&self.endorser),
            kind,
            created_from: time_bound("from", self.from.trim())?,
            created_to: time_bound("to", self.to.trim())?,
            history: self.history == "on",
            limit: Some(PAGE),
            offset,
        })
    }

    /// The list's address with this query at `offset`.
    fn at(&self, offset: usize) -> String {
        let mut pairs = vec![];
        for (name, value) in [
            ("identifier", &self.identifier),
            ("os", &self.os),
            ("endorser", &self.endorser),
            ("kind", &self.kind),
            ("from", &self.from),
            ("to", &self.to),
            ("history", &self.history),
        ] {
            if !value.is_empty() {
                pairs.push(format!("{name}={}", escape_query(value)));
            }
        }
        pairs.push(format!("offset={offset}"));
        format!("/marketplace?{}", pairs.join("&"))
    }
}

/// Percent-encodes a query value (everything but unreserved characters).
fn escape_query(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The site policy's verdict on each image of `entries` (asked once per image).
async fn verdicts(
    services: &Services,
    entries: &[MarketplaceEntry],
) -> HashMap<String, Result<PolicyVerdict, ImageError>> {
    let mut identifiers: Vec<&str> = entries.iter().map(|e| e.identifier.as_str()).collect();
    identifiers.sort_unstable();
    identifiers.dedup();
    let asked = identifiers
        .iter()
        .map(|id| services.images.policy_verdict(id));
    let answers = futures_util::future::join_all(asked).await;
    identifiers
        .into_iter()
        .map(str::to_owned)
        .zip(answers)
        .collect()
}

fn subnav(current: &str) -> Markup {
    html! {
        nav.subnav aria-label="Marketplace" {
            @for (path, name) in [("/marketplace", "Entries"), ("/marketplace/endorsers", "Endorsers"), ("/marketplace/upload", "Upload")] {
                a href=(path) aria-current=[(path == current).then_some("page")] { (name) }
            }
        }
    }
}

async fn entries(
    State(services): Shared,
    headers: HeaderMap,
    Query(browse): Query<Browse>,
) -> Page {
    let caller = match viewer(&services, &headers).await {
        Ok(caller) => caller,
        Err(answer) => return Ok(answer),
    };
    let position = services.events.position();
    let listed = match browse.to_query() {
        Ok(query) => services
            .images
            .list(&query)
            .await
            .map_err(|e| (status_of(e.kind()), e.to_string())),
        Err(e) => Err((status_of(e.kind()), e.to_string())),
    };
    let (status, body) = match listed {
        Ok(list) => {
            let verdicts = verdicts(&services, &list.marketplace.items).await;
            let page = &list.marketplace;
            (
                StatusCode::OK,
                html! {
                    p.muted #total {
                        (page.total) " matching " @if page.total == 1 { "entry" } @else { "entries" }
                        @if page.total > 0 { ", " (page.offset + 1) " to " (page.offset + page.items.len() as u64) " shown" }
                    }
                    (entries_table(&page.items, &verdicts))
                    nav.pages {
                        @if page.offset > 0 {
                            a rel="prev" href=(browse.at((page.offset as usize).saturating_sub(PAGE))) { "← newer" }
                        }
                        @if page.offset + (page.items.len() as u64) < page.total {
                            a rel="next" href=(browse.at(page.offset as usize + PAGE)) { "older →" }
                        }
                    }
                },
            )
        }
        Err((status, message)) => (status, html! { p.error role="alert" { (message) } }),
    };
    Ok(html(
        status,
        page(
            &caller,
            Section::Marketplace,
            "Marketplace",
            Some(position),
            &["marketplace.js"],
            html! {
                (subnav("/marketplace"))
                p #new-entries.notice hidden { span.count {} " since this page was made: " a href="" { "reload" } "." }
                section #marketplace data-watch="image-entry-appended" {
                    h2 { "Marketplace entries" }
                    p.muted {
                        "Signed image metadata: each endorser's statement about an image, never deleted. "
                        "Run an image by its identifier ("
                        code { "stratus-run-instance IDENTIFIER" } "); the site policy decides which entry is used."
                    }
                    (query_form(&browse))
                    (body)
                }
            },
        )
        .into_string(),
    ))
}

fn query_form(browse: &Browse) -> Markup {
    html! {
        form.filter #query method="get" action="/marketplace" {
            label { "identifier " input name="identifier" value=(browse.identifier) size="28" placeholder="27 characters"; }
            label { "OS " input name="os" value=(browse.os) size="12"; }
            label { "endorser " input name="endorser" value=(browse.endorser) type="email" placeholder="email"; }
            label { "kind "
                select name="kind" {
                    option value="" { "any" }
                    option value="machine" selected[browse.kind == "machine"] { "machine" }
                    option value="disk" selected[browse.kind == "disk"] { "disk" }
                }
            }
            label { "created from " input name="from" value=(browse.from) placeholder="2024-05-01" size="11"; }
            label { "to " input name="to" value=(browse.to) placeholder="2024-12-31" size="11"; }
            label { input name="history" type="checkbox" checked[browse.history == "on"]; " whole history" }
            button type="submit" { "Query" }
        }
    }
}

fn verdict_cell(verdict: Option<&Result<PolicyVerdict, ImageError>>) -> Markup {
    match verdict {
        Some(Ok(v)) if v.allowed => html! { span.verdict data-allowed="true" { "allowed" } },
        Some(Ok(v)) => html! {
            span.verdict data-allowed="false" title=[v.reason.as_deref()] {
                "refused" @if let Some(code) = &v.code { ": " (code) }
            }
        },
        Some(Err(e)) => html! { span.verdict.muted title=(e.to_string()) { "unknown" } },
        None => html! { span.verdict.muted { "–" } },
    }
}

fn entries_table(
    items: &[MarketplaceEntry],
    verdicts: &HashMap<String, Result<PolicyVerdict, ImageError>>,
) -> Markup {
    html! {
        table #entries {
            thead { tr {
                th { "identifier" } th { "kind" } th { "OS" } th { "version" } th { "endorser" }
                th { "created" } th { "valid until" } th { "entry" } th { "site policy" }
            } }
            tbody #entry-rows {
                @for entry in items {
                    @let m = &entry.metadata;
                    tr data-identifier=(entry.identifier) data-seq=(entry.seq) data-deprecated=[m.deprecated.as_ref().map(|_| "true")] {
                        td { a href={ "/marketplace/images/" (entry.identifier) "?entry=" (entry.seq) } { code { (entry.identifier) } } }
                        td { (m.kind.as_str()) }
                        td { (m.os) " " (m.os_version) " " span.muted { (m.arch) } }
                        td { (m.version) }
                        td { a href={ "/marketplace?endorser=" (escape_query(&entry.endorser_email)) } { (entry.endorser_email) } }
                        td { (m.created) }
                        td { (m.valid_until) }
                        td { (entry.seq) @if m.deprecated.is_some() { " " span.deprecated { "deprecated" } } }
                        td.verdict { (verdict_cell(verdicts.get(&entry.identifier))) }
                    }
                }
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Shown {
    entry: String,
    uploaded: String,
}

async fn image(
    State(services): Shared,
    headers: HeaderMap,
    Path(identifier): Path<String>,
    Query(shown): Query<Shown>,
) -> Page {
    let caller = match viewer(&services, &headers).await {
        Ok(caller) => caller,
        Err(answer) => return Ok(answer),
    };
    let position = services.events.position();
    let query = RegistryQuery {
        identifier: Some(identifier.clone()),
        history: true,
        limit: Some(MAX_PAGE_LIMIT),
        ..RegistryQuery::default()
    };
    let history = services.images.list(&query).await?.marketplace;
    if history.items.is_empty() {
        return Ok(html(
            StatusCode::NOT_FOUND,
            not_found(
                &caller,
                Section::Marketplace,
                &format!("The Marketplace has no entry for image {identifier}."),
            )
            .into_string(),
        ));
    }
    let verdict = services.images.policy_verdict(&identifier).await;
    let asked = shown.entry.parse::<u64>().ok();
    let entry = asked
        .and_then(|seq| history.items.iter().find(|e| e.seq == seq))
        .or_else(|| {
            let used = verdict.as_ref().ok()?.entry.as_ref()?.seq;
            history.items.iter().find(|e| e.seq == used)
        })
        .unwrap_or(&history.items[0]);
    let uploaded = (shown.uploaded == "1" && asked == Some(entry.seq)).then_some(entry);
    Ok(html(
        StatusCode::OK,
        render_image(
            &caller,
            &identifier,
            entry,
            &verdict,
            &history.items,
            uploaded,
            position,
        )
        .into_string(),
    ))
}

fn render_image(
    caller: &Caller,
    identifier: &str,
    entry: &MarketplaceEntry,
    verdict: &Result<PolicyVerdict, ImageError>,
    history: &[MarketplaceEntry],
    uploaded: Option<&MarketplaceEntry>,
    position: u64,
) -> Markup {
    let m = &entry.metadata;
    page(
        caller,
        Section::Marketplace,
        &format!("Image {identifier}"),
        Some(position),
        &["marketplace.js"],
        html! {
            (subnav(""))
            @if let Some(up) = uploaded {
                p.notice role="status" #uploaded {
                    "UPLOADED " (up.identifier) " endorser " (up.endorser_email) " (entry " (up.seq) ")"
                }
            }
            p #new-entries.notice hidden { span.count {} " since this page was made: " a href="" { "reload" } "." }
            div.grid #image data-identifier=(identifier) data-watch="image-entry-appended" {
                section #policy {
                    h2 { "On this site" }
                    @match verdict {
                        Ok(v) if v.allowed => {
                            p.verdict data-allowed="true" {
                                "Allowed: instances of " code { (identifier) } " run "
                                @if let Some(used) = &v.entry { "entry " a href={ "?entry=" (used.seq) } { (used.seq) } " by " (used.endorser_email) } "."
                            }
                        }
                        Ok(v) => {
                            p.verdict data-allowed="false" {
                                "Refused"
                                @if let Some(code) = &v.code { " (" code { (code) } ")" }
                                @if let Some(reason) = &v.reason { ": " (reason) }
                            }
                        }
                        Err(e) => { p.error role="alert" { (e.to_string()) } }
                    }
                }
                section #entry data-seq=(entry.seq) {
                    h2 { "Entry " (entry.seq) " · " code { (identifier) } }
                    @if let Some(reason) = &m.deprecated {
                        p.error { "Deprecated by its endorser: " (reason) }
                    }
                    dl.facts {
                        dt { "type" } dd #kind { (m.kind.as_str()) }
                        dt { "format" } dd { (m.format.as_str()) @if m.compression.as_str() != "none" { " (" (m.compression.as_str()) ")" } }
                        dt { "size" } dd { (m.size) " bytes" }
                        dt { "checksum" } dd.checksums {
                            div { "SHA-256 " code #sha256 { (m.checksums.sha256) } }
                            @if let Some(sha1) = &m.checksums.sha1 { div { "SHA-1 " code { (sha1) } } }
                            @if let Some(md5) = &m.checksums.md5 { div { "MD5 " code { (md5) } } }
                        }
                        dt { "endorser" } dd #endorser { (entry.endorser_email) br; span.muted { (entry.endorser_subject) } }
                        dt { "trusted by" } dd { (trusted_by(&entry.trusted_by)) }
                        dt { "certificate" } dd { code.muted { (entry.cert_sha256) } }
                        dt { "OS" } dd #os { (m.os) " " (m.os_version) " " (m.arch) }
                        dt { "version" } dd #version { (m.version) }
                        dt { "description" } dd { (m.description) }
                        dt { "created" } dd { (m.created) }
                        dt { "valid until" } dd { (m.valid_until) }
                        dt { "uploaded" } dd { (entry.uploaded) }
                        dt { "locations" } dd { @for location in &m.locations { div { code { (location) } } } }
                        @if let Some(kernel) = &m.kernel {
                            dt { "kernel" } dd { code { (kernel.sha256) } }
                        }
                        @if let Some(initrd) = &m.initrd {
                            dt { "initrd" } dd { code { (initrd.sha256) } }
                        }
                        @if let Some(cmdline) = &m.cmdline {
                            dt { "command line" } dd { code { (cmdline) } }
                        }
                    }
                }
                section.wide #history {
                    h2 { "History " span.muted { "(every entry about this image, newest first; entries are never deleted)" } }
                    table {
                        thead { tr { th { "entry" } th { "endorser" } th { "version" } th { "created" } th { "valid until" } th { "uploaded" } th { "deprecated" } } }
                        tbody {
                            @for other in history {
                                tr data-seq=(other.seq) aria-current=[(other.seq == entry.seq).then_some("true")] {
                                    td { a href={ "?entry=" (other.seq) } { (other.seq) } }
                                    td { (other.endorser_email) }
                                    td { (other.metadata.version) }
                                    td { (other.metadata.created) }
                                    td { (other.metadata.valid_until) }
                                    td { (other.uploaded) }
                                    td { (other.metadata.deprecated.as_deref().unwrap_or("")) }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

fn trusted_by(how: &str) -> &'static str {
    match how {
        "ca" => "a certificate authority this site trusts",
        "endorser" => "an endorser certificate this site registered",
        _ => "–",
    }
}

async fn endorsers(State(services): Shared, headers: HeaderMap) -> Page {
    let caller = match viewer(&services, &headers).await {
        Ok(caller) => caller,
        Err(answer) => return Ok(answer),
    };
    let position = services.events.position();
    let registered = services.images.list_endorsers().await?;
    let every = RegistryQuery {
        history: true,
        limit: Some(MAX_PAGE_LIMIT),
        ..RegistryQuery::default()
    };
    let entries = services.images.list(&every).await?.marketplace;
    Ok(html(
        StatusCode::OK,
        render_endorsers(
            &caller,
            &registered,
            &entries.items,
            entries.total,
            position,
        )
        .into_string(),
    ))
}

/// One endorser's part of the Marketplace: entries, images, latest entry's creation.
#[derive(Default)]
struct Endorsements<'a> {
    entries: usize,
    images: std::collections::BTreeSet<&'a str>,
    latest: &'a str,
}

fn render_endorsers(
    caller: &Caller,
    registered: &[Endorser],
    entries: &[MarketplaceEntry],
    total: u64,
    position: u64,
) -> Markup {
    let mut by: BTreeMap<&str, Endorsements> = BTreeMap::new();
    for entry in entries {
        let e = by.entry(entry.endorser_email.as_str()).or_default();
        e.entries += 1;
        e.images.insert(entry.identifier.as_str());
        if entry.metadata.created.as_str() > e.latest {
            e.latest = entry.metadata.created.as_str();
        }
    }
    page(
        caller,
        Section::Marketplace,
        "Endorsers",
        Some(position),
        &["marketplace.js"],
        html! {
            (subnav("/marketplace/endorsers"))
            p #new-entries.notice hidden { span.count {} " since this page was made: " a href="" { "reload" } "." }
            div.grid #endorsers data-watch="image-entry-appended endorser-registered" {
                section {
                    h2 { "Endorsers of entries here" }
                    @if (entries.len() as u64) < total {
                        p.muted { "From the latest " (entries.len()) " of " (total) " entries." }
                    }
                    @if by.is_empty() { p.muted { "No entries yet." } }
                    @else {
                        table #endorser-rows {
                            thead { tr { th { "endorser" } th { "entries" } th { "images" } th { "latest created" } } }
                            tbody {
                                @for (email, e) in &by {
                                    tr data-endorser=(email) {
                                        td { a href={ "/marketplace?endorser=" (escape_query(email)) "&history=on" } { (email) } }
                                        td { (e.entries) }
                                        td { (e.images.len()) }
                                        td { (e.latest) }
                                    }
                                }
                            }
                        }
                    }
                }
                section {
                    h2 { "Endorser certificates this site registered" }
                    p.muted { "Entries are also accepted when signed by a certificate from a certificate authority the site trusts." }
                    @if registered.is_empty() { p.muted { "None." } }
                    @else {
                        table {
                            thead { tr { th { "subject" } th { "emails" } th { "valid until" } th { "added" } } }
                            tbody {
                                @for e in registered {
                                    tr {
                                        td { (e.subject) br; code.muted { (e.cert_sha256) } }
                                        td { (e.emails.join(", ")) }
                                        td { (e.not_after) }
                                        td { (e.added) " by " (e.added_by) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

fn render_upload(caller: &Caller, csrf: &str, error: Option<&str>, file: Option<&str>) -> Markup {
    page(
        caller,
        Section::Marketplace,
        "Upload",
        None,
        &[],
        html! {
            (subnav("/marketplace/upload"))
            @if let Some(error) = error {
                p.error role="alert" { (error) }
                @if let Some(file) = file { p.muted #refused-file { "File: " (file) } }
            }
            section #upload {
                h2 { "Upload a signed entry" }
                p {
                    "Choose the signed metadata file " code { "stratus-sign-metadata" } " wrote. "
                    "The site checks it as " code { "stratus-upload-metadata" } " uploads are checked: its structure, "
                    "the signature and the signer's certificate, its dates, then the site's deny lists and endorsers; "
                    "only then is the entry listed."
                }
                form.stacked #upload-form method="post" action="/marketplace/upload" enctype="multipart/form-data" {
                    input type="hidden" name=(csrf::FIELD) value=(csrf);
                    label { "Signed metadata " input name=(FILE_FIELD) type="file" accept=".json,application/json" required; }
                    button type="submit" { "Upload" }
                }
            }
        },
    )
}

async fn upload_form(State(services): Shared, headers: HeaderMap) -> Page {
    let caller = match viewer(&services, &headers).await {
        Ok(caller) => caller,
        Err(answer) => return Ok(answer),
    };
    Ok(html(
        StatusCode::OK,
        render_upload(&caller, &csrf::token(&headers), None, None).into_string(),
    ))
}

/// Why an upload from the page was not taken, before the Marketplace saw it.
#[derive(Debug, thiserror::Error)]
enum UploadFormError {
    #[error("file: send it with this page's upload form ({0})")]
    NotAForm(String),
    #[error("file: choose the signed metadata file stratus-sign-metadata wrote")]
    NoFile,
}

async fn upload(State(services): Shared, request: Request) -> Page {
    let (parts, body) = request.into_parts();
    let caller = match viewer(&services, &parts.headers).await {
        Ok(caller) => caller,
        Err(answer) => return Ok(answer),
    };
    let token = csrf::token(&parts.headers);
    let host = origin(&parts).host;
    let headers = parts.headers.clone();
    let refuse = |status: StatusCode, message: String, file: Option<&str>| {
        html(
            status,
            render_upload(&caller, &token, Some(&message), file).into_string(),
        )
    };
    let request = Request::from_parts(parts, body);
    let mut form = match Multipart::from_request(request, &()).await {
        Ok(form) => form,
        Err(rejection) => {
            let e = UploadFormError::NotAForm(rejection.body_text());
            return Ok(refuse(StatusCode::BAD_REQUEST, e.to_string(), None));
        }
    };
    let mut presented = None;
    let mut file = None;
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => {
                let message = UploadFormError::NotAForm(e.body_text()).to_string();
                return Ok(refuse(e.status(), message, None));
            }
        };
        let name = field.name().unwrap_or_default().to_owned();
        let file_name = field.file_name().unwrap_or_default().to_owned();
        let read = field.bytes().await;
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(e) => {
                let message = UploadFormError::NotAForm(e.body_text()).to_string();
                return Ok(refuse(e.status(), message, None));
            }
        };
        if name == csrf::FIELD {
            presented = Some(String::from_utf8_lossy(&bytes).into_owned());
        } else if name == FILE_FIELD {
            file = Some((file_name, bytes));
        }
    }
    if let Err(refusal) = csrf::check(&headers, host.as_deref(), presented.as_deref()) {
        tracing::warn!(user = %caller.name, %refusal, "web upload refused");
        return Ok(refuse(status_of(refusal.kind()), refusal.to_string(), None));
    }
    let Some((file_name, bytes)) = file.filter(|(_, bytes)| !bytes.is_empty()) else {
        return Ok(refuse(
            StatusCode::BAD_REQUEST,
            UploadFormError::NoFile.to_string(),
            None,
        ));
    };
    match services.images.upload_entry(&caller, &bytes).await {
        Ok(entry) => Ok(Redirect::to(&format!(
            "/marketplace/images/{}?entry={}&uploaded=1",
            entry.identifier, entry.seq
        ))
        .into_response()),
        Err(e) => Ok(refuse(status_of(e.kind()), e.to_string(), Some(&file_name))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_form_is_read_naming_a_wrong_field() {
        let browse = Browse {
            os: " ttylinux ".into(),
            kind: "machine".into(),
            from: "2024-05-01".into(),
            to: "2024-05-01".into(),
            history: "on".into(),
            ..Browse::default()
        };
        let query = browse.to_query().unwrap();
        assert_eq!(query.os.as_deref(), Some("ttylinux"));
        assert_eq!(query.kind, Some(ImageKind::Machine));
        assert!(query.history);
        let (from, to) = (query.created_from.unwrap(), query.created_to.unwrap());
        assert_eq!(to - from, 24 * 3600 * 1000 - 1, "the whole day");
        for (field, browse) in [
            (
                "kind",
                Browse {
                    kind: "floppy".into(),
                    ..Browse::default()
                },
            ),
            (
                "from",
                Browse {
                    from: "yesterday".into(),
                    ..Browse::default()
                },
            ),
            (
                "to",
                Browse {
                    to: "2024-13-45".into(),
                    ..Browse::default()
                },
            ),
            (
                "offset",
                Browse {
                    offset: "-1".into(),
                    ..Browse::default()
                },
            ),
        ] {
            let message = browse.to_query().unwrap_err().to_string();
            assert!(message.starts_with(&format!("{field}: ")), "{message}");
        }
    }

    #[test]
    fn paging_keeps_the_query_and_escapes_it() {
        let browse = Browse {
            endorser: "a&b=c@example.org".into(),
            ..Browse::default()
        };
        assert_eq!(
            browse.at(25),
            "/marketplace?endorser=a%26b%3Dc%40example.org&offset=25"
        );
    }

    #[test]
    fn the_upload_form_carries_the_token_and_messages_are_escaped() {
        let caller = Caller {
            name: "alice".into(),
            admin: false,
            seen: 0,
            via: crate::users::Via::Password,
        };
        let page =
            render_upload(&caller, "TOKEN", Some("<b>bad</b>"), Some("<i>f</i>")).into_string();
        assert!(page.contains(r#"name="csrf" value="TOKEN""#), "{page}");
        assert!(page.contains(r#"enctype="multipart/form-data""#), "{page}");
        assert!(!page.contains("<b>bad") && !page.contains("<i>f"), "{page}");
    }
}
