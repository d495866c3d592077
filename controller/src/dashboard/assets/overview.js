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

  function instanceEvent(event) {
    const state = event.details.state;
    if (!state) return;
    const id = event.object.id;
    const before = states[id];
    if (before === state) return;
    if (before) count(before, -1);
    count(state, 1);
    states[id] = state;
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
