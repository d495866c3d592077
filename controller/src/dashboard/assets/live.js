// Every page's link to the event stream (GET /api/v1/events, server-sent events). The page was
// rendered with the stream's position at that moment (main's data-since), so following from
// there misses nothing; the browser reconnects by itself with the last event's ID, also to a
// node that took over as leader. Page scripts subscribe with stratusLive.subscribe(handler);
// the stream opens once every script has run. Helpers here set only textContent: no markup
// from events ever reaches the page.
"use strict";

window.stratusLive = (function () {
  const handlers = [];
  const main = document.getElementById("page");

  function setConnection(state, text) {
    const connection = document.getElementById("connection");
    if (!connection) return;
    connection.dataset.state = state;
    connection.textContent = text;
  }

  function handle(message) {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch (e) {
      return;
    }
    if (event.type === "events-lost") {
      // This node could not tell everything since the page was made: show it afresh.
      window.location.reload();
      return;
    }
    for (const handler of handlers) handler(event);
  }

  // Typed events arrive under their type's name: listen to every one the site sends (the page
  // lists them, from the controller's own list).
  const TYPES = main ? (main.dataset.eventTypes || "").split(" ").filter(Boolean) : [];

  function open() {
    if (!main || main.dataset.since === undefined) return;
    const source = new EventSource(
      `/api/v1/events?since=${encodeURIComponent(main.dataset.since)}`);
    source.onopen = () => setConnection("live", "live");
    source.onerror = () => setConnection("reconnecting", "reconnecting…");
    source.onmessage = handle;
    for (const type of TYPES) source.addEventListener(type, handle);
    // Leaving the page ends the stream at once (a browser may keep it open a while; over
    // HTTP/1.1, which a proxy in front may still speak, it holds one of the six connections a
    // browser opens to a site).
    window.addEventListener("pagehide", () => source.close());
  }
  document.addEventListener("DOMContentLoaded", open);

  function cell(className, text) {
    const td = document.createElement("td");
    if (className) td.className = className;
    td.textContent = text;
    return td;
  }

  // One line of an activity log, as the server renders it (overview.rs activity_item).
  function activityItem(event) {
    const li = document.createElement("li");
    li.dataset.seq = String(event.seq);
    li.dataset.type = event.type;
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
    return li;
  }

  // Updates the leader and term shown on the page, if it shows them.
  function leaderChanged(event) {
    const leader = document.getElementById("leader");
    const term = document.getElementById("term");
    if (leader) leader.textContent = event.details.leader ? `node ${event.details.leader}` : "none";
    if (term) term.textContent = String(event.details.term);
  }

  return {
    subscribe(handler) { handlers.push(handler); },
    cell,
    activityItem,
    leaderChanged,
  };
})();
