// healthswitch status page: renders /v1/status, and the transitions of
// /v1/events/stream as they happen. No framework, nothing fetched from
// elsewhere. Data is inserted as text, never as HTML.
"use strict";

const MAX_EVENTS = 50;
let events = [];       // newest last, unique by epoch and time
let status = null;
let skewMS = 0;        // server clock minus ours, from the Date header
let fetching = false, again = false;

function el(tag, attrs, ...kids) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") n.className = v; else n.setAttribute(k, v);
  }
  for (const k of kids.flat()) {
    if (k !== null && k !== undefined && k !== false) n.append(k instanceof Node ? k : String(k));
  }
  return n;
}

// Icons tell states apart by shape as well as colour.
const ICONS = {
  up: "M8 1a7 7 0 1 0 0 14A7 7 0 0 0 8 1zm-1.2 10L3.6 7.8l1.1-1.1 2.1 2.1 4.5-4.5 1.1 1.1z",
  down: "M8 1 15 14H1zm-.8 4v5h1.6V5zm0 6v1.6h1.6V11z",
  drained: "M2 2h12v12H2zm3 3v6h2V5zm4 0v6h2V5z",
  unknown: "M8 1a7 7 0 1 0 0 14A7 7 0 0 0 8 1zm0 2.5a2.6 2.6 0 0 1 1.1 5l-.3.2v1H7.2V8.2c0-.5.3-.8.8-1a1 1 0 1 0-1-1.4H5.4A2.6 2.6 0 0 1 8 3.5zM7.2 11h1.6v1.6H7.2z",
};
function icon(state) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 16 16");
  svg.setAttribute("aria-hidden", "true");
  const p = document.createElementNS(ns, "path");
  p.setAttribute("d", ICONS[state] || ICONS.unknown);
  p.setAttribute("fill", "currentColor");
  p.setAttribute("fill-rule", "evenodd");
  svg.append(p);
  return svg;
}
function badge(state, small) {
  return el("span", { class: "badge " + state + (small ? " small" : ""), "data-state": state }, icon(state), state);
}

function serverNow() { return Date.now() + skewMS; }
function ago(t) {
  if (!t) return "never";
  const s = (serverNow() - Date.parse(t)) / 1000;
  if (s < 1) return "just now";
  if (s < 90) return Math.round(s) + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  if (s < 172800) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}
function clock(t) {
  const d = new Date(t);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}
// tms reads an RFC 3339 time to the microsecond (Date.parse stops at the
// millisecond, and a switch takes less).
function tms(t) {
  const m = /^(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)$/.exec(t);
  return m ? Date.parse(m[1] + m[3]) + (m[2] ? parseFloat(m[2]) * 1000 : 0) : Date.parse(t);
}
function ms(a, b) { return tms(b) - tms(a); }
function fmtMS(v) { return v < 0.01 ? "<0.01 ms" : v < 1 ? v.toFixed(2) + " ms" : v < 100 ? v.toFixed(1) + " ms" : Math.round(v) + " ms"; }
function ageSpan(t) { return el("span", { class: "age", "data-t": t || "" }, ago(t)); }

// Fields the page knows; whatever else status carries is shown as is.
const CLUSTER_KNOWN = new Set(["name", "state", "since", "reason", "drained", "sidecar", "probe", "notify"]);
const NAME_KNOWN = new Set(["name", "a", "aaaa", "weights", "all_down", "level"]);
function extras(obj, known) {
  const out = [];
  for (const [k, v] of Object.entries(obj)) {
    if (known.has(k) || v === null || v === undefined) continue;
    out.push([k, typeof v === "object" ? JSON.stringify(v) : String(v)]);
  }
  return out;
}

function renderSummary(doc) {
  const dl = document.getElementById("summary");
  dl.replaceChildren(...[["zones", (doc.zones || []).join(" ")], ["policy", doc.policy], ["detect", doc.detect],
    ["all_down", doc.all_down], ["epoch", doc.epoch]].map(([k, v]) => el("div", {}, el("dt", {}, k), el("dd", { "data-key": k }, v))));
}

function sigCell(sig) { return el("span", { class: "sig " + sig }, sig); }

function renderCluster(c) {
  const rows = [];
  if (c.sidecar && c.sidecar.signal !== "none") {
    const s = c.sidecar;
    rows.push(el("tr", {}, el("th", {}, "sidecar"), el("td", {}, sigCell(s.signal),
      s.reason ? el("span", {}, " · " + s.reason) : null,
      el("div", { class: "sub" }, "last report ", ageSpan(s.last_report),
        s.boot_id ? " · boot " + s.boot_id + " #" + s.sequence : ""))));
  }
  if (c.probe && c.probe.signal !== "none") {
    const p = c.probe;
    rows.push(el("tr", {}, el("th", {}, "probe"), el("td", {}, sigCell(p.signal),
      p.reason ? el("span", {}, " · " + p.reason) : null,
      (p.targets || []).map(t => el("div", { class: "sub" }, el("span", { class: "mono" }, t.url), " ", t.state,
        " · ", t.last_ok ? "ok" : "failed", " ", ageSpan(t.last_at),
        t.last_rtt_ms ? " · " + fmtMS(t.last_rtt_ms) : "", t.last_error ? " · " + t.last_error : "")))));
  }
  if (!rows.length) rows.push(el("tr", {}, el("th", {}, "signals"), el("td", { class: "sub" }, "none configured")));
  for (const n of c.notify || []) {
    rows.push(el("tr", {}, el("th", {}, "ingress"), el("td", {},
      el("span", { class: "sig " + (n.last_error ? "down" : n.last_ok ? "up" : "") }, n.last_error ? "not acknowledged" : n.last_ok ? "acknowledged" : "not told yet"),
      el("div", { class: "sub" }, el("span", { class: "mono" }, n.url), n.last_ok ? [" · last ack ", ageSpan(n.last_ok)] : "",
        n.failures ? " · " + n.failures + " failures" : "", n.last_error ? " · " + n.last_error : ""))));
  }
  for (const [k, v] of extras(c, CLUSTER_KNOWN)) rows.push(el("tr", {}, el("th", {}, k), el("td", {}, v)));
  return el("article", { class: "cluster", "data-cluster": c.name, "data-state": c.state },
    el("h3", {}, c.name, badge(c.state)),
    el("p", { class: "why" }, c.reason),
    el("p", { class: "since" }, c.state + " since ", ageSpan(c.since), " (" + clock(c.since) + ")", c.drained ? " · drained by operator" : ""),
    el("table", { class: "signals" }, el("tbody", {}, rows)));
}

function renderName(n) {
  const addrs = [...(n.a || []), ...(n.aaaa || [])];
  const avail = [];
  const lv = n.level || (status ? { policy: status.policy, all_down: status.all_down } : {});
  if (n.all_down) avail.push(el("div", { class: "alldown" }, "no cluster up: all_down " + (lv.all_down || "")));
  if (n.weights) avail.push(el("div", { class: "sub" }, Object.entries(n.weights).map(([c, w]) => c + " " + Math.round(w * 100) + "%").join(" · ")));
  for (const [k, v] of extras(n, NAME_KNOWN)) avail.push(el("div", {}, k + ": " + v));
  avail.push(el("span", { class: "sub" }, ["policy " + lv.policy, "all_down " + lv.all_down,
    lv.ttl !== undefined ? "ttl " + lv.ttl : "", lv.slow_start && lv.slow_start !== "0s" ? "slow_start " + lv.slow_start : ""].filter(Boolean).join(" · ")));
  return el("tr", { "data-name": n.name },
    el("td", { class: "mono" }, n.name),
    el("td", { class: "answers" }, addrs.length ? addrs.map(a => el("span", { class: "addr mono" }, a)) : el("span", { class: "sub" }, "no address")),
    el("td", {}, avail));
}

function renderStatus(doc) {
  status = doc;
  renderSummary(doc);
  const cl = (doc.clusters || []).map(renderCluster);
  document.getElementById("clusters").replaceChildren(...(cl.length ? cl : [el("p", { class: "empty" }, "no cluster")]));
  document.querySelector("#names tbody").replaceChildren(...(doc.names || []).map(renderName));
}

// One fetch at a time; a request while one runs schedules one more.
async function refresh() {
  if (fetching) { again = true; return; }
  fetching = true;
  try {
    const r = await fetch("/v1/status", { cache: "no-store" });
    if (!r.ok) throw new Error(r.status + " " + r.statusText);
    const date = Date.parse(r.headers.get("Date"));
    if (date && Math.abs(date - Date.now()) > 1500) skewMS = date - Date.now();
    renderStatus(await r.json());
  } catch (e) {
    setLive("lost", "cannot read /v1/status: " + e.message);
  } finally {
    fetching = false;
    if (again) { again = false; refresh(); }
  }
}

function latency(ev) {
  const parts = [];
  const obsRcv = ev.observed_at && ev.received_at ? Math.max(0, ms(ev.observed_at, ev.received_at)) : null;
  const rcvApp = ev.received_at ? Math.max(0, ms(ev.received_at, ev.applied_at)) : null;
  if (obsRcv !== null) parts.push(["obs", obsRcv, "observed → received"]);
  if (rcvApp !== null) parts.push(["rcv", rcvApp, "received → applied"]);
  return parts;
}

function renderTimeline() {
  const ol = document.getElementById("timeline");
  if (!events.length) return;
  const scale = Math.max(1, ...events.map(ev => latency(ev).reduce((s, p) => s + p[1], 0)));
  const items = events.slice().reverse().map(ev => {
    const parts = latency(ev);
    const total = parts.reduce((s, p) => s + p[1], 0);
    const bar = el("div", { class: "bar", title: parts.map(p => p[2] + " " + fmtMS(p[1])).join(", ") },
      parts.map(([cls, v]) => { const s = el("span", { class: cls }); s.style.width = (100 * v / scale) + "%"; return s; }));
    const lat = parts.length
      ? parts.map(p => p[2] + " " + fmtMS(p[1])).join(" · ") + (parts.length > 1 ? " · detection " + fmtMS(total) : "")
      : "applied (no report behind it)";
    const li = el("li", { "data-epoch": ev.epoch, "data-cluster": ev.cluster },
      el("div", { class: "when" }, el("div", { class: "mono" }, clock(ev.applied_at)), el("div", { class: "sub" }, ageSpan(ev.applied_at))),
      el("div", { class: "move" }, el("b", {}, ev.cluster), badge(ev.from, true), "→", badge(ev.to, true)),
      el("div", { class: "reason" }, ev.reason),
      el("div", {}, bar, el("div", { class: "lat" }, lat)));
    if (ev.fresh) li.classList.add("fresh");
    ev.fresh = false;
    return li;
  });
  ol.replaceChildren(...items);
}

function setLive(state, text) {
  const p = document.getElementById("live");
  p.dataset.live = state;
  p.textContent = text;
}

function connect() {
  // since=0: the recent-events ring first, then live; a reconnect resumes
  // from Last-Event-ID on its own.
  const es = new EventSource("/v1/events/stream?since=0");
  es.onopen = () => { setLive("live", "live"); refresh(); };
  es.onerror = () => {
    setLive("lost", "reconnecting…");
    // The browser retries by itself unless the server refused (e.g. 503,
    // too many readers): then start over after a pause.
    if (es.readyState === EventSource.CLOSED) setTimeout(connect, 5000);
  };
  es.addEventListener("transition", m => {
    const ev = JSON.parse(m.data);
    // Epochs start over when the DNS server restarts: an event is its epoch
    // and its time, and the timeline is in time order.
    if (events.some(e => e.epoch === ev.epoch && e.applied_at === ev.applied_at)) return;
    ev.fresh = true;
    events.push(ev);
    events.sort((a, b) => tms(a.applied_at) - tms(b.applied_at));
    if (events.length > MAX_EVENTS) events = events.slice(-MAX_EVENTS);
    renderTimeline();
    refresh();
  });
}

// Ages tick locally; signals that change without a transition (a report's
// time, a probe's round trip) come with a slow re-read.
setInterval(() => document.querySelectorAll(".age").forEach(s => { s.textContent = ago(s.dataset.t); }), 1000);
setInterval(refresh, 5000);
refresh();
connect();
