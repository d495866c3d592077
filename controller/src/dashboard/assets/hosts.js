// The hosts pages. The list follows hosts going up and down from the event stream. A host's
// page draws its use with uPlot from GET /api/v1/hosts/{name}/usage (the hour's samples, or
// the day's 5-minute averages with their maxima), fetched again every step, and follows its
// status from the stream. Each graph's figure says how many points it shows (data-points).
"use strict";

(function () {
  const live = window.stratusLive;

  // Maintenance is shown as the page rendered it; a change says so until the page is read again
  // (drained depends on the instances, which the page does not count).
  function serviceEvent(event) {
    const name = event.object.id;
    const text = event.type === "host-in-service" ? "in service"
      : "maintenance" + (event.details.reason ? `: ${event.details.reason}` : "");
    const row = document.querySelector(`#hosts tr[data-host="${CSS.escape(name)}"]`);
    if (row) row.querySelector("td.service").textContent = text;
    const host = document.getElementById("host");
    if (host && host.dataset.host === name) document.getElementById("service").textContent = text;
  }

  live.subscribe((event) => {
    if (event.type === "host-maintenance" || event.type === "host-in-service") {
      serviceEvent(event);
      return;
    }
    if (event.type !== "host-up" && event.type !== "host-down") return;
    const status = event.type === "host-up" ? "up" : "down";
    const name = event.object.id;
    const row = document.querySelector(`#hosts tr[data-host="${CSS.escape(name)}"]`);
    if (row) {
      row.dataset.status = status;
      row.querySelector("td.status").textContent = status;
    }
    const host = document.getElementById("host");
    if (host && host.dataset.host === name) {
      host.dataset.status = status;
      document.getElementById("status").textContent = status;
    }
  });

  const host = document.getElementById("host");
  if (!host || typeof uPlot === "undefined") return;

  const KiB = 1024;
  function bytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let unit = 0;
    while (Math.abs(n) >= KiB && unit < units.length - 1) { n /= KiB; unit += 1; }
    return unit === 0 ? `${Math.round(n)} B` : `${n.toFixed(1)} ${units[unit]}`;
  }
  const percent = (n) => `${n.toFixed(0)} %`;
  const plain = (n) => n.toFixed(2).replace(/\.?0+$/, "");
  const rate = (n) => `${bytes(n)}/s`;

  // Each graph: the figures it plots from a point's avg (and max on the day graph).
  const GRAPHS = {
    cpu: { format: percent, lines: [["CPU", (s) => s.cpu_percent]], range: [0, 100] },
    load: { format: plain, lines: [["load", (s) => s.load1]] },
    memory: { format: bytes, lines: [["used", (s) => s.memory_used_bytes]], total: (s) => s.memory_total_bytes },
    disk: { format: bytes, lines: [["used", (s) => s.disk_used_bytes]], total: (s) => s.disk_total_bytes },
    network: { format: rate, lines: [["received", (s) => s.net_rx_bytes_per_sec], ["sent", (s) => s.net_tx_bytes_per_sec]] },
    instances: { format: plain, lines: [["running", (s) => s.instances]] },
  };
  const COLOURS = ["#2a7", "#37c", "#c73", "#a3c"];
  const day = host.dataset.range === "day";
  const charts = {};

  function build(points) {
    const xs = points.map((p) => p.avg.at_ms / 1000);
    for (const figure of document.querySelectorAll("figure[data-graph]")) {
      const graph = GRAPHS[figure.dataset.graph];
      const series = [{}];
      const data = [xs];
      graph.lines.forEach(([name, read], k) => {
        series.push({ label: day ? `${name} (avg)` : name, stroke: COLOURS[k], width: 1.5,
                      value: (u, v) => (v == null ? "–" : graph.format(v)) });
        data.push(points.map((p) => read(p.avg)));
        if (day) {
          series.push({ label: `${name} (max)`, stroke: COLOURS[k], width: 1, dash: [4, 4],
                        value: (u, v) => (v == null ? "–" : graph.format(v)) });
          data.push(points.map((p) => read(p.max)));
        }
      });
      if (graph.total) {
        series.push({ label: "total", stroke: "#888", width: 1,
                      value: (u, v) => (v == null ? "–" : graph.format(v)) });
        data.push(points.map((p) => graph.total(p.avg)));
      }
      figure.dataset.points = String(points.length);
      if (charts[figure.dataset.graph]) {
        charts[figure.dataset.graph].setData(data);
        continue;
      }
      const options = {
        width: Math.max(300, figure.clientWidth - 8),
        height: 180,
        series,
        scales: { x: { time: true }, y: graph.range ? { range: graph.range } : { range: (u, min, max) => [0, Math.max(max, 1) * 1.1] } },
        axes: [{}, { values: (u, ticks) => ticks.map(graph.format), size: 70 }],
        legend: { live: true },
      };
      charts[figure.dataset.graph] = new uPlot(options, data, figure);
    }
    const note = document.getElementById("graph-note");
    note.textContent = points.length === 0
      ? "(no measurements from this host yet)"
      : `(${points.length} points, every ${day ? "5 minutes" : "10 seconds"})`;
  }

  async function refresh() {
    const name = encodeURIComponent(host.dataset.host);
    const response = await fetch(`/api/v1/hosts/${name}/usage?range=${day ? "day" : "hour"}`);
    if (!response.ok) throw new Error(`usage: ${response.status}`);
    build((await response.json()).points);
  }
  const every = day ? 60000 : 10000;
  function again() { setTimeout(() => refresh().then(again, again), every); }
  refresh().then(again, again);
})();
