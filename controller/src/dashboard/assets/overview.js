// The overview, kept current from the event stream: instance counts by state (every instance's
// state came with the page), hosts up, the leader and term, and the activity log.
"use strict";

(function () {
  const live = window.stratusLive;
  const activity = document.getElementById("activity-list");
  const MAX_ACTIVITY = 50;
  const states = JSON.parse(document.getElementById("instance-states").textContent);

  function count(state, delta) {
    const dd = document.querySelector(`dd.count[data-state="${CSS.escape(state)}"]`);
    if (dd) dd.textContent = String(Number(dd.textContent) + delta);
  }

  // What a host's instance count counts: instances placed there, not Done or Failed.
  const placed = (state) => state !== "Done" && state !== "Failed";

  function hostCount(host, delta) {
    if (!host) return;
    const cell = document.querySelector(`tr[data-host="${CSS.escape(host)}"] td.instances`);
    if (cell) cell.textContent = String(Number(cell.textContent) + delta);
  }

  function instanceEvent(event) {
    const state = event.details.state;
    if (!state) return;
    const id = event.object.id;
    const [before, beforeHost] = states[id] || [null, null];
    const host = event.host || beforeHost;
    if (before === state && beforeHost === host) return;
    if (before) count(before, -1);
    count(state, 1);
    if (before && placed(before)) hostCount(beforeHost, -1);
    if (placed(state)) hostCount(host, 1);
    states[id] = [state, host];
  }

  function hostEvent(event) {
    const row = document.querySelector(`tr[data-host="${CSS.escape(event.object.id)}"]`);
    const status = event.type === "host-up" ? "up" : "down";
    if (row && row.dataset.status !== status) {
      row.dataset.status = status;
      row.querySelector("td.status").textContent = status;
      const up = document.getElementById("hosts-up");
      up.dataset.up = String(Number(up.dataset.up) + (status === "up" ? 1 : -1));
      up.textContent = `${up.dataset.up} of ${up.dataset.total}`;
    }
  }

  live.subscribe((event) => {
    activity.prepend(live.activityItem(event));
    while (activity.children.length > MAX_ACTIVITY) activity.lastElementChild.remove();
    if (event.type.startsWith("instance-")) instanceEvent(event);
    if (event.type === "host-up" || event.type === "host-down") hostEvent(event);
    if (event.type === "leader-changed") live.leaderChanged(event);
  });
})();
