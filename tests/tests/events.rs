//! The event stream (`GET /api/v1/events`) against a real controller, agent and guest: an
//! instance's life arrives as typed events in order; a client that reconnects with
//! `Last-Event-ID` gets exactly what it missed; a user never receives another user's events;
//! a client asking from before the node's window is told events were lost; `stratus-events`
//! prints the same events; bad requests get JSON errors naming the field.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use stratus_common::api::InstanceState;
use stratus_common::events::{EventEnvelope, EVENTS_LOST};
use stratus_e2e::events::EventStream;
use stratus_e2e::TestCloud;

const BOOT: Duration = Duration::from_secs(120);
const SOON: Duration = Duration::from_secs(30);

fn kinds(events: &[EventEnvelope]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

fn seqs(events: &[EventEnvelope]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

fn increasing(events: &[EventEnvelope]) -> bool {
    events.windows(2).all(|w| w[0].seq < w[1].seq)
}

#[test]
fn an_instance_life_streams_in_order_and_a_reconnect_misses_nothing() {
    let cloud = TestCloud::with_agent("events").unwrap();
    cloud.create_user("alice").unwrap();
    cloud.create_user("bob").unwrap();
    let mut alice = EventStream::open(&cloud, "alice", "", None).unwrap();
    let mut bob = EventStream::open(&cloud, "bob", "", None).unwrap();
    let mut admin = EventStream::open(&cloud, "admin", "?types=instance-", None).unwrap();

    let vm = cloud
        .run_instance("alice", json!({"image": "appliance", "type": "t1.micro"}))
        .unwrap();
    let object = format!("instance/{}", vm.id);
    let life = alice.until(BOOT, |e| e.kind == "instance-running").unwrap();
    assert_eq!(life[0].kind, "instance-created", "{:?}", kinds(&life));
    assert!(increasing(&life), "{:?}", seqs(&life));
    for event in &life {
        assert_eq!(event.object.key(), object);
        assert_eq!(event.owner.as_deref(), Some("alice"));
    }
    let running = life.last().unwrap();
    assert_eq!(running.host.as_deref(), Some(cloud.host_name.as_str()));
    assert_eq!(running.details["state"], "Running");
    // The administrator's filtered stream numbers the same changes the same.
    let seen_by_admin = admin.until(SOON, |e| e.seq == running.seq).unwrap();
    assert_eq!(seqs(&seen_by_admin), seqs(&life));

    // Alice goes away; meanwhile her instance is killed.
    let last = running.seq;
    drop(alice);
    let (status, _) = cloud
        .delete("alice", &format!("/instances/{}", vm.id))
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    cloud
        .wait_state("alice", vm.id, InstanceState::Done, BOOT)
        .unwrap();
    let end = admin.until(SOON, |e| e.kind == "instance-done").unwrap();
    // Back with her last event's number: exactly what she missed, once, in order.
    let mut alice = EventStream::open(&cloud, "alice", "", Some(last)).unwrap();
    assert_eq!(alice.position, Some(last));
    let missed = alice.until(SOON, |e| e.kind == "instance-done").unwrap();
    assert_eq!(seqs(&missed), seqs(&end), "{:?}", kinds(&missed));
    assert!(missed[0].seq > last);

    // Bob saw nothing of Alice's: the first event he gets is one for everyone.
    cloud.register_appliance("second").unwrap();
    let bob_saw = bob.until(SOON, |e| e.kind == "image-registered").unwrap();
    assert_eq!(kinds(&bob_saw), ["image-registered"]);
    assert_eq!(bob_saw[0].object.key(), "image/second");

    // From before this node's window: told so first, then what is kept.
    let mut early = EventStream::open(&cloud, "alice", "", Some(1)).unwrap();
    let kept = early
        .until(SOON, |e| e.object.key() == "image/second")
        .unwrap();
    assert_eq!(kept[0].kind, EVENTS_LOST, "{:?}", kinds(&kept));
    assert!(kept[0].details["through_seq"].as_u64().unwrap() >= 1);
    // What Alice may see of the cloud's history: the appliance's registration, her
    // instance's life, the second image.
    assert_eq!(kept[1].object.key(), "image/appliance");
    assert_eq!(
        seqs(&kept[2..]),
        [seqs(&life), seqs(&end), seqs(&bob_saw)].concat()
    );

    // The CLI prints the same events: the latest, as JSON lines and as text.
    let out = cloud.stratus("alice", &["events", "-n", "3", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let printed: Vec<EventEnvelope> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(printed, kept[kept.len() - 3..]);
    let out = cloud.stratus("alice", &["events", "--type", "instance-done"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains("instance-done") && text.contains(&format!(" {object} owner=alice")),
        "{text}"
    );
    // Bob's CLI shows none of it.
    let out = cloud.stratus("bob", &["events", "--json"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("\"instance"), "{text}");
}

#[test]
fn bad_event_requests_get_json_errors_naming_the_field() {
    let cloud = TestCloud::start("events-bad").unwrap();
    let http = cloud.client().unwrap();
    let get = |query: &str, last_event_id: Option<&str>| -> (StatusCode, Value) {
        let mut request = http
            .get(cloud.url(&format!("/events{query}")))
            .basic_auth("admin", Some(cloud.password("admin")));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().unwrap();
        let status = response.status();
        (status, response.json().unwrap_or(Value::Null))
    };
    for (query, id, field) in [
        ("", Some("abc"), "Last-Event-ID"),
        ("?types=Instance-Running", None, "types"),
        ("?object=instance", None, "object"),
        ("?last=5000", None, "last"),
        ("?since=x", None, "query"),
        ("?colour=red", None, "query"),
    ] {
        let (status, body) = get(query, id);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query} {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{query}: {body}");
    }
    let response = http.get(cloud.url("/events")).send().unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().unwrap();
    assert!(body["code"].is_string(), "{body}");

    // What is kept, without following: the stream ends by itself.
    cloud.create_user("carol").unwrap();
    let mut kept = EventStream::open(&cloud, "admin", "?follow=false&since=0", None).unwrap();
    let events = kept
        .until(SOON, |e| e.kind == "user-created" && e.object.id == "carol")
        .unwrap();
    assert_eq!(events[0].kind, EVENTS_LOST);
    assert!(increasing(&events));
}
