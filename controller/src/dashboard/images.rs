//! The images page (administrators): the site's own images (name, format, the disk's digest
//! and size, who registered it) with the hosts whose cache holds each, which of them keep it
//! pinned, and how large the Marketplace is (its entries and endorsers are on the Marketplace
//! pages every user sees).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};
use stratus_common::api::{Host, Image, ImageList};

use super::hosts::bytes;
use super::instances::label;
use super::layout::{page, Section};
use super::{administrator, html, Page};
use crate::api::Shared;
use crate::marketplace::registry::Query;
use crate::services::Services;
use crate::users::Caller;

pub fn routes() -> Router<Arc<Services>> {
    Router::new().route("/images", get(list))
}

async fn list(State(services): Shared, headers: HeaderMap) -> Page {
    let caller = match administrator(&services, &headers).await {
        Ok(caller) => caller,
        Err(answer) => return Ok(answer),
    };
    let position = services.events.position();
    let images = services.images.list(&Query::default()).await?;
    let endorsers = services.images.list_endorsers().await?.len();
    let hosts = services.hosts.list(&caller).await?;
    Ok(html(
        StatusCode::OK,
        render(&caller, &images, endorsers, &hosts, position).into_string(),
    ))
}

/// The hosts whose cache holds `image`'s disk, each marked when it keeps it pinned.
fn holders(image: &Image, hosts: &[Host]) -> Vec<(String, bool)> {
    hosts
        .iter()
        .filter(|h| h.images.contains(&image.disk.sha256))
        .map(|h| (h.name.clone(), h.precache.contains(&image.disk.sha256)))
        .collect()
}

fn render(
    caller: &Caller,
    images: &ImageList,
    endorsers: usize,
    hosts: &[Host],
    position: u64,
) -> Markup {
    page(
        caller,
        Section::Images,
        "Images",
        Some(position),
        &[],
        html! {
            section {
                h2 { "Site images" }
                @if images.site.is_empty() { p.muted { "None registered." } }
                @else {
                    table #site-images {
                        thead { tr {
                            th { "name" } th { "format" } th { "disk SHA-256" } th { "size" }
                            th { "boots" } th { "owner" } th { "registered" } th { "cached on" }
                        } }
                        tbody {
                            @for image in &images.site {
                                tr data-image=(image.name) {
                                    td { (image.name) }
                                    td { (label(&image.format)) }
                                    td { code title=(image.disk.sha256) { (image.disk.sha256.get(..16).unwrap_or(&image.disk.sha256)) "…" } }
                                    td { (image.disk.size.map_or("–".into(), bytes)) }
                                    td { @if image.kernel.is_some() { "kernel and initrd" } @else { "its own disk" } }
                                    td { (image.owner) }
                                    td { (image.created) }
                                    td.cached {
                                        @let held = holders(image, hosts);
                                        @if held.is_empty() { "–" }
                                        @for (k, (host, pinned)) in held.iter().enumerate() {
                                            @if k > 0 { ", " }
                                            a href={ "/hosts/" (host) } { (host) }
                                            @if *pinned { " (pinned)" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            section {
                h2 { "Marketplace" }
                p {
                    (images.marketplace.total) " images (the latest entry per image and endorser), "
                    (endorsers) " registered endorsers. "
                    a href="/marketplace" { "Browse the Marketplace" } "."
                }
            }
        },
    )
}
