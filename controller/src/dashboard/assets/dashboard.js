// The dashboard, kept current from the event stream (GET /api/v1/events, server-sent events):
// the page was rendered with the stream's position at that moment (data-since), so following
// from there misses nothing; the browser reconnects by itself with the last event's ID, also
// to a node that took over as leader. Only textContent is ever set: no markup from events.
"use strict";

(function () {
  const main = document.getElementById("dashboard");
  if (!main) return;
  const connection = document.getElementById("connection");
  const rows = document.getElementById("instance-rows");
  const activity = document.getElementById("activity-list");
  const MAX_ACTIVITY = 50;

  function setConnection(state, text) {
    connection.dataset.state = state;
    connection.textContent = text;
  }

  function cell(className, text) {
    const td = document.createElement("td");
    if (className) td.className = className;
    td.textContent = text;
    return td;
  }

  function recount() {
    const counts = {};
    for (const row of rows.querySelectorAll("tr[data-state]")) {
      counts[row.dataset.state] = (counts[row.dataset.state] || 0) + 1;
    }
    for (const dd of document.querySelectorAll("dd.count[data-state]")) {
      dd.textContent = String(counts[dd.dataset.state] || 0);
    }
  }

  function instanceEvent(event) {
    const id = event.object.id;
    const state = event.details.state;
    if (!state) return;
    let row = rows.querySelector(`tr[data-id="${CSS.escape(id)}"]`);
    if (!row) {
      row = document.createElement("tr");
      row.dataset.id = id;
      row.append(
        cell("", id),
        cell("name", event.details.name || ""),
        cell("owner", event.owner || ""),
        cell("host", event.host || "–"),
        cell("state", ""),
        cell("since", event.time),
      );
      rows.prepend(row);
    }
    row.dataset.state = state;
    row.querySelector("td.state").textContent =
      event.details.reason ? `${state} (${event.details.reason})` : state;
    if (event.host) row.querySelector("td.host").textContent = event.host;
    recount();
  }

  function addActivity(event) {
    const li = document.createElement("li");
    li.dataset.seq = String(event.seq);
    const time = document.createElement("time");
    time.textContent = event.time;
    const type = document.createElement("span");
    type.className = "type";
    type.textContent = event.type;
    const object = document.createElement("span");
    object.className = "object";
    object.textContent = `${event.object.kind}/${event.object.id}`;
    li.append(time, " ", type, " ", object);
    if (event.owner) li.append(` owner ${event.owner}`);
    if (event.host) li.append(` on ${event.host}`);
    if (event.details && event.details.reason) li.append(`: ${event.details.reason}`);
    activity.prepend(li);
    while (activity.children.length > MAX_ACTIVITY) activity.lastElementChild.remove();
  }

  function handle(message) {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch (e) {
      return;
    }
    addActivity(event);
    if (event.type.startsWith("instance-")) instanceEvent(event);
    if (event.type === "leader-changed") {
      const leader = event.details.leader;
      document.getElementById("leader").textContent = leader ? `node ${leader}` : "none";
      document.getElementById("term").textContent = String(event.details.term);
    }
    if (event.type === "events-lost") {
      // This node could not tell everything since the page was made: show it afresh.
      window.location.reload();
    }
  }

  const source = new EventSource(`/api/v1/events?since=${encodeURIComponent(main.dataset.since)}`);
  source.onopen = () => setConnection("live", "live");
  source.onerror = () => setConnection("reconnecting", "reconnecting…");
  source.onmessage = handle;
  // Typed events arrive under their type's name: listen to every one the page knows.
  const types = [
    "instance-created", "instance-booting", "instance-running", "instance-stopping",
    "instance-done", "instance-failed", "instance-stopped", "instance-powering-off",
    "instance-starting", "instance-rebooting", "volume-created", "volume-available",
    "volume-failed", "volume-deleting", "volume-deleted", "volume-attaching",
    "volume-attached", "volume-detaching", "volume-detached", "volume-stuck",
    "host-registered", "host-enrolled", "host-certificate-renewed", "host-revoked",
    "image-registered", "image-entry-appended", "image-pinned", "image-unpinned",
    "endorser-registered", "network-defined", "user-created", "member-added",
    "member-promoted", "member-removed", "leader-changed", "cluster-bootstrapped",
    "events-lost",
  ];
  for (const type of types) source.addEventListener(type, handle);
})();
