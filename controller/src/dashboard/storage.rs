//! The Storage page (`/storage`, every logged-in user): the user's persistent disks and the
//! public ones (never another user's private disk), as `stratus-describe-volumes` lists them,
//! and the forms of the guide's chapter 7: create (size, tag, visibility, type), update (what
//! `PATCH /api/v1/volumes/{id}` allows), attach to one of the user's running instances,
//! detach (forced once stuck), delete. Each form posts to its own route, checked for its CSRF
//! token ([`super::csrf`]), and calls the same [`crate::volumes::Volumes`] action the API
//! handler calls: same rules, same messages. A refusal is shown as the service's message with
//! its status and changes nothing; a success redirects back to the page (so a reload does
//! not post again). Attachment states are kept current by `assets/storage.js` from the event
//! stream (`volume-*` events).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Form, FromRequest, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup};
use serde::Deserialize;
use stratus_common::api::{Instance, InstanceState};
use stratus_common::volumes::{is_uuid, AttachmentState, CreateVolume, UpdateVolume, Volume};
use stratus_common::volumes::{VolumeState, VolumeType, MAX_TAG_LEN};

use super::layout::{page, Section};
use super::{csrf, html, viewer, Page};
use crate::api::extract::origin;
use crate::api::{status_of, Shared};
use crate::failure::{Failure, InputError};
use crate::services::Services;
use crate::users::Caller;

pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/storage", get(show))
        .route("/storage/volumes", post(create))
        .route("/storage/volumes/{id}/update", post(update))
        .route("/storage/volumes/{id}/attach", post(attach))
        .route("/storage/volumes/{id}/detach", post(detach))
        .route("/storage/volumes/{id}/delete", post(delete))
}

/// What a successful form leads back to the page to say (`?done=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Done {
    Created,
    Updated,
    Attach,
    Detach,
    Deleted,
}

impl Done {
    fn as_str(self) -> &'static str {
        match self {
            Done::Created => "created",
            Done::Updated => "updated",
            Done::Attach => "attach",
            Done::Detach => "detach",
            Done::Deleted => "deleted",
        }
    }

    fn message(self, volume: &str) -> String {
        match self {
            Done::Created => format!("DISK {volume} created."),
            Done::Updated => format!("Disk {volume} updated."),
            Done::Attach => {
                format!("Disk {volume} is being attached: it shows attached once the guest has it.")
            }
            Done::Detach => {
                format!("Disk {volume} is being detached: it goes once the guest releases it.")
            }
            Done::Deleted => format!("Disk {volume} deleted."),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Shown {
    done: Option<Done>,
    volume: String,
}

/// The page's message: what was done, or why it was not.
enum Message {
    Done(String),
    Refused(String),
}

/// What the page shows, as this node knew it when the page was made.
struct StorageView {
    /// The caller's disks and the public ones.
    volumes: Vec<Volume>,
    /// The caller's running instances, which disks may be attached to.
    running: Vec<Instance>,
    /// The event stream's position when the page was made.
    position: u64,
    /// The session's form token.
    csrf: String,
    /// A fresh idempotency key for the create form (a form sent twice makes one disk).
    create_key: String,
}

async fn load(
    services: &Services,
    caller: &Caller,
    csrf: String,
) -> Result<StorageView, Box<dyn Failure>> {
    let position = services.events.position();
    let volumes = services
        .volumes
        .list(caller)
        .await
        .map_err(|e| Box::new(e) as Box<dyn Failure>)?
        .into_iter()
        // An administrator's list has everyone's disks: this page is the user's own view.
        .filter(|v| v.owner == caller.name || v.visibility == "public")
        .collect();
    let running = services
        .instances
        .list(caller)
        .await
        .map_err(|e| Box::new(e) as Box<dyn Failure>)?
        .into_iter()
        .filter(|i| i.owner == caller.name && i.state == InstanceState::Running)
        .collect();
    Ok(StorageView {
        volumes,
        running,
        position,
        csrf,
        create_key: crate::decide::uuid(),
    })
}

/// The page, with `message`, answered with `status`; a failure to read the state is shown as
/// its message (with its status) on a page without the lists.
async fn answer(
    services: &Services,
    caller: &Caller,
    csrf: String,
    status: StatusCode,
    message: Option<Message>,
) -> Response {
    match load(services, caller, csrf).await {
        Ok(view) => html(
            status,
            render(caller, &view, message.as_ref()).into_string(),
        ),
        Err(e) => html(
            status_of(e.kind()),
            page(
                caller,
                Section::Storage,
                "Storage",
                None,
                &[],
                html! { p.error role="alert" { (e.to_string()) } },
            )
            .into_string(),
        ),
    }
}

async fn show(
    State(services): Shared,
    headers: axum::http::HeaderMap,
    Query(shown): Query<Shown>,
) -> Page {
    let caller = match viewer(&services, &headers).await {
        Ok(caller) => caller,
        Err(answer) => return Ok(answer),
    };
    let message = shown
        .done
        .filter(|_| is_uuid(&shown.volume))
        .map(|done| Message::Done(done.message(&shown.volume)));
    Ok(answer(
        &services,
        &caller,
        csrf::token(&headers),
        StatusCode::OK,
        message,
    )
    .await)
}

/// A form's POST, once its session and CSRF token are checked: who sent it and its fields.
struct Posted {
    caller: Caller,
    csrf: String,
    fields: HashMap<String, String>,
}

impl Posted {
    fn text(&self, name: &str) -> &str {
        self.fields.get(name).map_or("", |v| v.trim())
    }
}

/// Reads a form's POST: without a session, the way to the login form; with a missing or wrong
/// token or from another site, the page with the refusal (403). Nothing is done in either case.
async fn posted(services: &Services, request: Request) -> Result<Posted, Response> {
    let (parts, body) = request.into_parts();
    let caller = viewer(services, &parts.headers).await?;
    let token = csrf::token(&parts.headers);
    let host = origin(&parts).host;
    let headers = parts.headers.clone();
    let request = Request::from_parts(parts, body);
    let fields = match Form::<HashMap<String, String>>::from_request(request, &()).await {
        Ok(Form(fields)) => fields,
        Err(rejection) => {
            let message = format!("form: {}", rejection.body_text());
            return Err(answer(
                services,
                &caller,
                token,
                StatusCode::BAD_REQUEST,
                Some(Message::Refused(message)),
            )
            .await);
        }
    };
    let presented = fields.get(csrf::FIELD).map(String::as_str);
    if let Err(refusal) = csrf::check(&headers, host.as_deref(), presented) {
        tracing::warn!(user = %caller.name, %refusal, "web form refused");
        return Err(answer(
            services,
            &caller,
            token,
            status_of(refusal.kind()),
            Some(Message::Refused(refusal.to_string())),
        )
        .await);
    }
    Ok(Posted {
        caller,
        csrf: token,
        fields,
    })
}

/// The answer to a form once acted on: back to the page saying what was done, or the page
/// with the refusal (the service's message, with the status its kind gives).
async fn outcome<E: Failure>(
    services: &Services,
    form: Posted,
    result: Result<(Done, String), E>,
) -> Page {
    Ok(match result {
        Ok((done, volume)) => Redirect::to(&format!(
            "/storage?done={}&volume={volume}#{volume}",
            done.as_str()
        ))
        .into_response(),
        Err(e) => {
            answer(
                services,
                &form.caller,
                form.csrf,
                status_of(e.kind()),
                Some(Message::Refused(e.to_string())),
            )
            .await
        }
    })
}

fn visibility(field: &'static str, value: &str) -> Result<bool, InputError> {
    match value {
        "public" => Ok(true),
        "private" => Ok(false),
        other => Err(InputError::new(
            field,
            format!("public or private, not {other:?}"),
        )),
    }
}

fn volume_type(value: &str) -> Result<VolumeType, InputError> {
    value.parse().map_err(|e| InputError::new("type", e))
}

/// The create form's fields as the API's request.
fn create_request(form: &Posted) -> Result<CreateVolume, InputError> {
    let size = form.text("size");
    let size = size
        .parse::<u64>()
        .map_err(|_| InputError::new("size", format!("a whole number of GiB, not {size:?}")))?;
    let tag = form.text("tag");
    Ok(CreateVolume {
        size,
        tag: (!tag.is_empty()).then(|| tag.to_owned()),
        public: visibility("visibility", form.text("visibility"))?,
        volume_type: Some(volume_type(form.text("type"))?),
    })
}

async fn create(State(services): Shared, request: Request) -> Page {
    let form = match posted(&services, request).await {
        Ok(form) => form,
        Err(answer) => return Ok(answer),
    };
    let result = async {
        let request = create_request(&form)?;
        let key = Some(form.text("key").to_owned()).filter(|k| !k.is_empty());
        let volume = services.volumes.create(&form.caller, request, key).await?;
        Ok::<_, crate::volumes::VolumeActionError>((Done::Created, volume.id))
    }
    .await;
    outcome(&services, form, result).await
}

async fn update(State(services): Shared, Path(id): Path<String>, request: Request) -> Page {
    let form = match posted(&services, request).await {
        Ok(form) => form,
        Err(answer) => return Ok(answer),
    };
    let result = async {
        let update = UpdateVolume {
            public: Some(visibility("visibility", form.text("visibility"))?),
            tag: Some(form.text("tag").to_owned()),
            volume_type: Some(volume_type(form.text("type"))?),
        };
        services.volumes.update(&form.caller, &id, update).await?;
        Ok::<_, crate::volumes::VolumeActionError>((Done::Updated, id.clone()))
    }
    .await;
    outcome(&services, form, result).await
}

fn instance_field(form: &Posted) -> Result<u64, InputError> {
    let value = form.text("instance");
    if value.is_empty() {
        return Err(InputError::new(
            "instance",
            "choose one of your running instances",
        ));
    }
    value.parse().map_err(|_| {
        InputError::new(
            "instance",
            format!("instance IDs are numbers, not {value:?}"),
        )
    })
}

async fn attach(State(services): Shared, Path(id): Path<String>, request: Request) -> Page {
    let form = match posted(&services, request).await {
        Ok(form) => form,
        Err(answer) => return Ok(answer),
    };
    let result = async {
        let instance = instance_field(&form)?;
        services.volumes.attach(&form.caller, instance, &id).await?;
        Ok::<_, crate::volumes::VolumeActionError>((Done::Attach, id.clone()))
    }
    .await;
    outcome(&services, form, result).await
}

async fn detach(State(services): Shared, Path(id): Path<String>, request: Request) -> Page {
    let form = match posted(&services, request).await {
        Ok(form) => form,
        Err(answer) => return Ok(answer),
    };
    let result = async {
        let instance = instance_field(&form)?;
        let force = form.text("force") == "true";
        services
            .volumes
            .detach(&form.caller, instance, &id, force)
            .await?;
        Ok::<_, crate::volumes::VolumeActionError>((Done::Detach, id.clone()))
    }
    .await;
    outcome(&services, form, result).await
}

async fn delete(State(services): Shared, Path(id): Path<String>, request: Request) -> Page {
    let form = match posted(&services, request).await {
        Ok(form) => form,
        Err(answer) => return Ok(answer),
    };
    let result = services
        .volumes
        .delete(&form.caller, &id)
        .await
        .map(|()| (Done::Deleted, id.clone()));
    outcome(&services, form, result).await
}

/// The hidden field every form carries.
fn token_field(csrf: &str) -> Markup {
    html! { input type="hidden" name=(csrf::FIELD) value=(csrf); }
}

fn render(caller: &Caller, view: &StorageView, message: Option<&Message>) -> Markup {
    let csrf = view.csrf.as_str();
    page(
        caller,
        Section::Storage,
        "Storage",
        Some(view.position),
        &["storage.js"],
        html! {
            @match message {
                Some(Message::Done(text)) => p.notice role="status" { (text) },
                Some(Message::Refused(text)) => p.error role="alert" { (text) },
                None => {},
            }
            p #stale.notice hidden { "Disks changed since this page was made: " a href="/storage" { "reload" } "." }
            div.grid #storage data-user=(caller.name) {
                section.wide {
                    h2 { "Persistent disks " span.muted { "(yours, and other users' public ones)" } }
                    @if view.volumes.is_empty() {
                        p.muted #no-volumes { "No disks yet: create one below." }
                    }
                    table #volumes {
                        thead { tr {
                            th { "disk" } th { "tag" } th { "size" } th { "type" } th { "visibility" }
                            th { "owner" } th { "state" } th { "created" } th { "attachments" } th { "actions" }
                        } }
                        tbody #volume-rows {
                            @for volume in &view.volumes {
                                (volume_row(caller, view, volume, csrf))
                            }
                        }
                    }
                }
                section {
                    h2 { "New disk" }
                    form.stacked #create method="post" action="/storage/volumes" {
                        (token_field(csrf))
                        input type="hidden" name="key" value=(view.create_key);
                        label { "Size (GiB) " input name="size" type="number" min="1" step="1" value="1" required; }
                        label { "Tag " input name="tag" maxlength=(MAX_TAG_LEN) placeholder="my-disk"; }
                        label { "Visibility "
                            select name="visibility" {
                                option value="private" selected { "private (only you)" }
                                option value="public" { "public (every user may attach it)" }
                            }
                        }
                        label { "Type "
                            select name="type" {
                                option value="data-rw" selected { "data-rw (one instance at a time)" }
                                option value="data-ro" { "data-ro (read-only, many instances)" }
                            }
                        }
                        button type="submit" { "Create disk" }
                    }
                }
            }
            (running_instances(view))
        },
    )
}

/// The caller's running instances: every attach form's choices (kept current by the script).
fn running_instances(view: &StorageView) -> Markup {
    html! {
        template #instance-options {
            @for instance in &view.running {
                option value=(instance.id) { "VM " (instance.id) " · " (instance.name) }
            }
        }
    }
}

fn volume_row(caller: &Caller, view: &StorageView, volume: &Volume, csrf: &str) -> Markup {
    let mine = volume.owner == caller.name || caller.admin;
    let id = volume.id.as_str();
    let state = label(volume.state);
    html! {
        tr id=(id) data-id=(id) data-state=(state) data-owner=(volume.owner) data-visibility=(volume.visibility) {
            td { code { (id) } }
            td.tag { (volume.tag) }
            td { (volume.size) " GiB" }
            td.type { (volume.volume_type.as_str()) }
            td.visibility { (volume.visibility) }
            td.owner { (volume.owner) }
            td.state { (state) @if let Some(reason) = &volume.reason { " (" (reason) ")" } }
            td { (volume.created) }
            td {
                ul.attachments {
                    @for attachment in &volume.attachments {
                        li data-instance=(attachment.instance) data-state=(attachment.state.as_str()) {
                            "VM " (attachment.instance) " on " (attachment.device) " "
                            span.attachment-state { (attachment.state.as_str()) }
                            @if mine || attachment_is_callers(view, attachment.instance) {
                                (detach_form(id, attachment.instance, attachment.state, csrf))
                            }
                        }
                    }
                }
            }
            td.actions {
                @if volume.state == VolumeState::Available {
                    form.inline.attach method="post" action={ "/storage/volumes/" (id) "/attach" } {
                        (token_field(csrf))
                        select name="instance" required aria-label="instance" {
                            option value="" { "instance…" }
                            @for instance in &view.running {
                                option value=(instance.id) { "VM " (instance.id) " · " (instance.name) }
                            }
                        }
                        button type="submit" { "Attach" }
                    }
                }
                @if mine {
                    details {
                        summary { "Change" }
                        form.stacked.update method="post" action={ "/storage/volumes/" (id) "/update" } {
                            (token_field(csrf))
                            label { "Tag " input name="tag" value=(volume.tag) maxlength=(MAX_TAG_LEN); }
                            label { "Visibility "
                                select name="visibility" {
                                    option value="private" selected[volume.visibility == "private"] { "private" }
                                    option value="public" selected[volume.visibility == "public"] { "public" }
                                }
                            }
                            label { "Type "
                                select name="type" {
                                    option value="data-rw" selected[volume.volume_type == VolumeType::DataRw] { "data-rw" }
                                    option value="data-ro" selected[volume.volume_type == VolumeType::DataRo] { "data-ro" }
                                }
                            }
                            button type="submit" { "Save" }
                        }
                    }
                    form.inline.delete method="post" action={ "/storage/volumes/" (id) "/delete" } {
                        (token_field(csrf))
                        button type="submit" { "Delete" }
                    }
                }
            }
        }
    }
}

/// Whether the instance is one of the caller's (who may detach a public disk from it).
fn attachment_is_callers(view: &StorageView, instance: u64) -> bool {
    view.running.iter().any(|i| i.id == instance)
}

fn detach_form(volume: &str, instance: u64, state: AttachmentState, csrf: &str) -> Markup {
    let stuck = state == AttachmentState::Stuck;
    html! {
        form.inline.detach method="post" action={ "/storage/volumes/" (volume) "/detach" } {
            (token_field(csrf))
            input type="hidden" name="instance" value=(instance);
            @if stuck {
                input type="hidden" name="force" value="true";
                button type="submit" title="The guest does not release the disk: free it anyway (unmount it first if you can)" { "Force detach" }
            } @else {
                button type="submit" disabled[state == AttachmentState::Detaching] { "Detach" }
            }
        }
    }
}

/// A volume state's name as the API writes it.
fn label(state: VolumeState) -> &'static str {
    match state {
        VolumeState::Creating => "creating",
        VolumeState::Available => "available",
        VolumeState::Failed => "failed",
        VolumeState::Deleting => "deleting",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::Via;

    fn caller(name: &str) -> Caller {
        Caller {
            name: name.into(),
            admin: false,
            seen: 0,
            via: Via::Password,
        }
    }

    fn volume(id: &str, owner: &str, tag: &str) -> Volume {
        Volume {
            id: id.into(),
            owner: owner.into(),
            tag: tag.into(),
            size: 1,
            visibility: "private".into(),
            volume_type: VolumeType::DataRw,
            state: VolumeState::Available,
            reason: None,
            host: "h".into(),
            created: "2026-01-01T00:00:00.000Z".into(),
            serial: id[..20].into(),
            users: 0,
            attachments: vec![stratus_common::volumes::VolumeAttachment {
                instance: 7,
                device: "/dev/vdb".into(),
                state: AttachmentState::Stuck,
                hotplug: true,
                read_only: false,
                remote: false,
                since: "2026-01-01T00:00:00.000Z".into(),
            }],
            changes: Vec::new(),
        }
    }

    fn view(volumes: Vec<Volume>) -> StorageView {
        StorageView {
            volumes,
            running: Vec::new(),
            position: 3,
            csrf: "TOKEN".into(),
            create_key: "key".into(),
        }
    }

    #[test]
    fn every_form_carries_the_token_and_values_are_escaped() {
        let id = "9c5a2c03-8243-4a1b-a248-0f0d22d948c2";
        let page = render(
            &caller("alice"),
            &view(vec![volume(id, "alice", "<script>x</script>")]),
            Some(&Message::Refused("size: <b>bad</b>".into())),
        )
        .into_string();
        assert!(!page.contains("<script>x"), "{page}");
        assert!(!page.contains("<b>bad"), "{page}");
        let forms = page.matches("<form").count();
        // Logout (no session change to forge) and create, attach, force detach, update,
        // delete: all but logout carry the token.
        let tokens = page.matches(r#"name="csrf" value="TOKEN""#).count();
        assert_eq!(
            tokens,
            forms - 1,
            "every form but logout has the token:\n{page}"
        );
        assert!(page.contains("Force detach"), "{page}");
    }

    #[test]
    fn another_users_public_disk_offers_no_change_or_delete() {
        let id = "9c5a2c03-8243-4a1b-a248-0f0d22d948c2";
        let mut public = volume(id, "bob", "shared");
        public.visibility = "public".into();
        public.attachments.clear();
        let page = render(&caller("alice"), &view(vec![public]), None).into_string();
        assert!(page.contains("/attach"), "{page}");
        assert!(!page.contains("/delete"), "{page}");
        assert!(!page.contains("/update"), "{page}");
    }

    #[test]
    fn form_fields_are_checked_naming_the_field() {
        let form = |pairs: &[(&str, &str)]| Posted {
            caller: caller("alice"),
            csrf: String::new(),
            fields: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let good = form(&[
            ("size", "5"),
            ("tag", "t"),
            ("visibility", "public"),
            ("type", "data-ro"),
        ]);
        assert_eq!(
            create_request(&good).unwrap(),
            CreateVolume {
                size: 5,
                tag: Some("t".into()),
                public: true,
                volume_type: Some(VolumeType::DataRo),
            }
        );
        let bad = form(&[
            ("size", "five"),
            ("visibility", "private"),
            ("type", "data-rw"),
        ]);
        assert!(create_request(&bad)
            .unwrap_err()
            .to_string()
            .starts_with("size: "));
        let bad = form(&[
            ("size", "1"),
            ("visibility", "everyone"),
            ("type", "data-rw"),
        ]);
        assert!(create_request(&bad)
            .unwrap_err()
            .to_string()
            .starts_with("visibility: "));
        let bad = form(&[("size", "1"), ("visibility", "private"), ("type", "floppy")]);
        assert!(create_request(&bad)
            .unwrap_err()
            .to_string()
            .starts_with("type: "));
        assert!(instance_field(&form(&[]))
            .unwrap_err()
            .to_string()
            .starts_with("instance: "));
    }
}
