// The volumes page, kept current: on any volume-* event, the volume is read again from the
// API and its row drawn anew as the server draws it (volumes.rs), or marked deleted.
"use strict";

(function () {
  const live = window.stratusLive;
  const rows = document.getElementById("volume-rows");
  if (!rows) return;

  function link(href, text) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    return a;
  }

  function draw(volume) {
    const row = document.createElement("tr");
    row.id = volume.id;
    row.dataset.volume = volume.id;
    row.dataset.state = volume.state;
    const id = document.createElement("code");
    id.textContent = volume.id;
    const first = document.createElement("td");
    first.append(id);
    const host = document.createElement("td");
    host.className = "host";
    host.append(link(`/hosts/${encodeURIComponent(volume.host)}`, volume.host));
    const attachments = document.createElement("td");
    attachments.className = "attachments";
    if (volume.attachments.length === 0) attachments.append("–");
    const list = document.createElement("ul");
    for (const a of volume.attachments) {
      const li = document.createElement("li");
      li.dataset.instance = String(a.instance);
      li.dataset.state = a.state;
      const state = document.createElement("span");
      state.className = "state";
      state.textContent = a.state;
      li.append(link(`/instances/${a.instance}`, `instance ${a.instance}`), ` ${a.device} `, state,
                ` since ${a.since}`);
      if (a.read_only) li.append(" (read-only)");
      if (a.remote) li.append(" (over NBD)");
      list.append(li);
    }
    attachments.append(list);
    row.append(
      first,
      live.cell("tag", volume.tag || ""),
      live.cell("owner", volume.owner),
      live.cell("visibility", volume.visibility),
      live.cell("size", `${volume.size} GiB`),
      live.cell("state", volume.reason ? `${volume.state} (${volume.reason})` : volume.state),
      host,
      attachments,
      live.cell("since", volume.created),
    );
    return row;
  }

  async function redraw(id) {
    const response = await fetch(`/api/v1/volumes/${encodeURIComponent(id)}`);
    const row = document.getElementById(id);
    if (response.status === 404) {
      if (row) {
        row.dataset.state = "deleted";
        row.querySelector("td.state").textContent = "deleted";
      }
      return;
    }
    if (!response.ok) return;
    const fresh = draw(await response.json());
    if (row) row.replaceWith(fresh);
    else rows.prepend(fresh);
  }

  // One read at a time per volume, the last event winning.
  const pending = new Map();
  live.subscribe((event) => {
    if (event.object.kind !== "volume") return;
    const id = event.object.id;
    if (pending.has(id)) { pending.set(id, true); return; }
    pending.set(id, false);
    const run = () => redraw(id).finally(() => {
      if (pending.get(id)) { pending.set(id, false); run(); } else pending.delete(id);
    });
    run();
  });
})();
