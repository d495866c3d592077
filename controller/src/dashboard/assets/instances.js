// The instances pages, kept current from the event stream. On the list, a row changes state
// as its events come, and an instance created after the page was made gets a row when it
// passes the page's filter. On an instance's page, its state and history grow, and the
// serial console is followed through the API's console stream (?follow=true), keeping the
// latest lines.
"use strict";

(function () {
  const live = window.stratusLive;

  function stateText(event) {
    const state = event.details.state;
    return event.details.reason ? `${state} (${event.details.reason})` : state;
  }

  const rows = document.getElementById("instance-rows");
  if (rows) {
    const filter = document.getElementById("instances").dataset;
    const shown = document.getElementById("shown");
    const admits = (event, state) =>
      (!filter.state || filter.state === state) &&
      (!filter.owner || filter.owner === (event.owner || "")) &&
      (!filter.host || filter.host === (event.host || ""));
    const recount = () => { shown.textContent = `${rows.children.length} shown`; };

    live.subscribe((event) => {
      if (!event.type.startsWith("instance-") || !event.details.state) return;
      const id = event.object.id;
      const state = event.details.state;
      let row = rows.querySelector(`tr[data-id="${CSS.escape(id)}"]`);
      if (!row) {
        if (!admits(event, state)) return;
        row = document.createElement("tr");
        row.dataset.id = id;
        const link = document.createElement("a");
        link.href = `/instances/${encodeURIComponent(id)}`;
        link.textContent = id;
        const first = document.createElement("td");
        first.append(link);
        row.append(
          first,
          live.cell("name", event.details.name || ""),
          live.cell("owner", event.owner || ""),
          live.cell("host", event.host || "–"),
          live.cell("state", ""),
          live.cell("ip", "–"),
          live.cell("since", event.time),
        );
        rows.prepend(row);
      }
      row.dataset.state = state;
      row.querySelector("td.state").textContent = stateText(event);
      if (event.host) row.querySelector("td.host").textContent = event.host;
      if (filter.state && filter.state !== state) row.remove();
      recount();
    });
  }

  const instance = document.getElementById("instance");
  if (instance) {
    const id = instance.dataset.id;
    live.subscribe((event) => {
      if (event.object.kind !== "instance" || event.object.id !== id) return;
      if (!event.details.state) return;
      instance.dataset.state = event.details.state;
      document.getElementById("state").textContent = stateText(event);
      const history = document.getElementById("history-rows");
      const row = document.createElement("tr");
      row.dataset.state = event.details.state;
      row.append(
        live.cell("", event.time),
        live.cell("state", event.details.state),
        live.cell("", event.details.reason || ""),
      );
      history.append(row);
    });
    followConsole(id, document.getElementById("console"));
  }

  // Streams the console into `pre`, keeping its last KEEP lines; starts again after a break
  // (a leader change) from the kept output, which the controller sends whole first.
  function followConsole(id, pre) {
    const KEEP = 200;
    let text = "";
    const decoder = new TextDecoder();
    // Leaving the page ends the stream (see live.js).
    const leaving = new AbortController();
    window.addEventListener("pagehide", () => leaving.abort());
    async function run() {
      text = "";
      const response = await fetch(`/api/v1/instances/${encodeURIComponent(id)}/console?follow=true`,
                                   { signal: leaving.signal });
      if (!response.ok) throw new Error(`console: ${response.status}`);
      const reader = response.body.getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        text += decoder.decode(value, { stream: true });
        const lines = text.split("\n");
        if (lines.length > KEEP) text = lines.slice(-KEEP).join("\n");
        pre.textContent = text;
        pre.scrollTop = pre.scrollHeight;
      }
    }
    function again() {
      if (leaving.signal.aborted) return;
      const state = document.getElementById("instance").dataset.state;
      if (state === "Done" || state === "Failed") return;
      setTimeout(() => run().then(again, again), 2000);
    }
    run().then(again, again);
  }
})();
