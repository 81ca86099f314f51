// The aigw dashboard: polls /dashboard/api/... and draws what it gets. Every value is put on the
// page with textContent or an attribute, never as HTML; charts are SVG elements built one by one.
"use strict";

const POLL_MS = 3000;
const ANOMALIES_MS = 60000;
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = String(value);
    else if (key === "onclick") node.addEventListener("click", value);
    else node.setAttribute(key, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, options = {}) {
  const headers = {};
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  if ((options.method || "GET") !== "GET") headers["X-Aigw-Dashboard"] = "1";
  const response = await fetch("/dashboard/api/" + path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
    credentials: "same-origin",
    cache: "no-store",
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new ApiError(response.status, (body.error && body.error.message) || response.statusText);
  }
  return body;
}

function flash(message, isError) {
  const node = $("flash");
  node.textContent = message;
  node.className = isError ? "error" : "";
  node.hidden = !message;
}

function rows(tableId, items, render, emptyText) {
  const body = $(tableId).querySelector("tbody");
  const columns = $(tableId).querySelectorAll("thead th").length;
  body.replaceChildren(...(items.length
    ? items.map(render)
    : [el("tr", {}, el("td", { colspan: columns, class: "empty", text: emptyText || "none" }))]));
}

const cell = (text, cls) => el("td", { text: text === null || text === undefined ? "" : text, class: cls });
const num = (text) => cell(text, "num");
const shortId = (id) => el("td", { class: "id", title: id, text: id.length > 12 ? id.slice(0, 12) + "…" : id });
const when = (iso) => (iso ? iso.replace("T", " ").replace(/\.\d+Z$|Z$/, "") : "");
const money = (value) => (value === null || value === undefined ? "unknown" : "$" + Number(value).toFixed(6));
const seconds = (s) => (s < 1 ? s.toFixed(2) + " s" : s < 120 ? s.toFixed(0) + " s" : (s / 60).toFixed(0) + " min");

function policyTags(decisions) {
  const td = el("td");
  for (const d of decisions || []) {
    td.append(el("span", { class: "tag outcome-" + d.outcome, title: d.reason || "", text: d.policy + ": " + d.outcome }));
  }
  return td;
}

function stateCell(status) {
  return el("td", { class: "state-" + status, text: status });
}

// --- charts ---------------------------------------------------------------------------------------

function chart(figureId, title, minutes, series, unit) {
  const width = 420, height = 150, left = 44, right = 8, top = 8, bottom = 20;
  const values = series.flatMap((s) => minutes.map((m) => m[s.key]).filter((v) => v !== null && v !== undefined));
  const max = Math.max(1e-9, ...values);
  const x = (i) => left + (i * (width - left - right)) / Math.max(1, minutes.length - 1);
  const y = (v) => top + (height - top - bottom) * (1 - v / max);
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img", "aria-label": title });
  root.append(svg("line", { class: "axis", x1: left, y1: y(0), x2: width - right, y2: y(0) }));
  root.append(svg("line", { class: "axis", x1: left, y1: top, x2: left, y2: y(0) }));
  root.append(svg("text", { x: left - 4, y: top + 8, "text-anchor": "end" }, format(max) + unit));
  root.append(svg("text", { x: left - 4, y: y(0), "text-anchor": "end" }, "0"));
  if (minutes.length) {
    root.append(svg("text", { x: left, y: height - 4 }, minutes[0].minute.slice(11, 16)));
    root.append(svg("text", { x: width - right, y: height - 4, "text-anchor": "end" },
      minutes[minutes.length - 1].minute.slice(11, 16) + " UTC"));
  }
  series.forEach((s, index) => {
    let points = [];
    const flush = () => {
      if (points.length === 1) root.append(svg("circle", { class: "s" + index, cx: points[0][0], cy: points[0][1], r: 3 }));
      if (points.length > 1) root.append(svg("polyline", { class: "s" + index, points: points.map((p) => p.join(",")).join(" ") }));
      points = [];
    };
    minutes.forEach((m, i) => {
      const v = m[s.key];
      if (v === null || v === undefined) flush();
      else points.push([x(i).toFixed(1), y(v).toFixed(1)]);
    });
    flush();
  });
  const legend = el("div", { class: "legend" }, ...series.map((s, i) => el("span", { class: "k" + i, text: "■ " + s.label })));
  $(figureId).replaceChildren(el("figcaption", { text: title }), root, legend);
}

function format(v) {
  if (v >= 100) return v.toFixed(0);
  if (v >= 1) return v.toFixed(1);
  return v.toPrecision(2);
}

// --- sections ------------------------------------------------------------------------------------

function drawOverview(o) {
  rows("queues", o.queues, (q) => el("tr", { "data-queue": q.name },
    cell(q.name), num(q.depth), num(seconds(q.oldest_age_s)), num(q.in_flight), num(q.retrying), num(q.failed)));
  rows("workers", o.workers, (w) => el("tr", {},
    cell(w.name, "id"), cell(w.queues.join(", ")), cell(w.state), cell(w.hostname), num(w.successful), num(w.failed)),
    "no live worker");
  const minutes = o.minutes;
  chart("chart-throughput", "Requests per minute", minutes,
    [{ key: "requests", label: "requests" }, { key: "failures", label: "failures" }], "");
  chart("chart-latency", "Provider latency (ms)", minutes,
    [{ key: "latency_p50_ms", label: "p50" }, { key: "latency_p95_ms", label: "p95" }], "");
  chart("chart-overhead", "Gateway overhead (ms)", minutes,
    [{ key: "overhead_p50_ms", label: "p50" }, { key: "overhead_p95_ms", label: "p95" }], "");
  $("history-note").textContent = o.audit_log.found ? "(from the audit log)" : "(no audit log on this host yet)";
  for (const period of ["today", "7d"]) {
    rows("cost-" + period, o.cost[period], (c) => el("tr", {},
      cell(c.service), cell(c.model), num(c.requests), num(money(c.cost_usd) + (c.unpriced && c.cost_usd !== null ? " + " + c.unpriced + " unpriced" : ""))),
      "no requests");
  }
  $("viewer").textContent = o.viewer.role === "operator" ? "operator" : "service " + o.viewer.service;
  $("updated").textContent = "updated " + when(o.now) + " UTC";
}

function drawJobs(jobs) {
  rows("jobs", jobs, (j) => el("tr", { "data-job-id": j.id, "data-status": j.status },
    shortId(j.id), stateCell(j.status + (j.draft ? " (draft: " + (j.review || "pending") + ")" : "")),
    cell(j.service), cell(j.model), cell(j.queue), num(j.attempts), policyTags(j.policy),
    num(j.cost_usd === null ? "" : money(j.cost_usd)), cell(when(j.ended_at))), "no jobs yet");
}

function drawFailed(jobs) {
  rows("failed", jobs, (j) => el("tr", { "data-job-id": j.id },
    shortId(j.id), cell(j.service), cell(j.model),
    cell(j.error ? j.error.type + ": " + j.error.message : ""), cell(when(j.ended_at)),
    el("td", {}, el("button", { type: "button", class: "retry", "data-action": "retry", text: "Retry",
      onclick: (event) => act(event.target, "jobs/" + encodeURIComponent(j.id) + "/retry", undefined, "requeued") }))),
    "no failed jobs");
}

function drawDrafts(jobs) {
  const root = $("drafts");
  if (!jobs.length) {
    root.replaceChildren(el("p", { class: "empty", text: "no drafts waiting" }));
    return;
  }
  root.replaceChildren(...jobs.map((j) => {
    const path = "jobs/" + encodeURIComponent(j.id) + "/review";
    return el("div", { class: "draft", "data-job-id": j.id },
      el("div", {}, el("span", { class: "id", text: j.id }), " · ", j.service, " · ", j.model || "", " · ", when(j.ended_at)),
      el("pre", { text: j.output + (j.output_truncated ? "\n…" : "") }),
      el("button", { type: "button", class: "approve", "data-action": "approve", text: "Approve",
        onclick: (e) => act(e.target, path, { decision: "approve" }, "approved") }),
      " ",
      el("button", { type: "button", class: "reject", "data-action": "reject", text: "Reject",
        onclick: (e) => act(e.target, path, { decision: "reject" }, "rejected") }));
  }));
}

function drawAnomalies(found) {
  const list = $("anomalies");
  list.replaceChildren(...(found.anomalies.length
    ? found.anomalies.map((a) => el("li", {}, el("strong", { text: a.service + " · " + a.kind }), " ", when(a.hour), ": ", a.reason))
    : [el("li", { class: "empty", text: "none flagged" })]));
  $("anomaly-notes").replaceChildren(...found.notes.map((n) => el("li", { text: n })));
}

async function act(button, path, body, done) {
  button.disabled = true;
  try {
    const job = await api(path, { method: "POST", body: body === undefined ? {} : body });
    flash("job " + job.id + " " + done);
  } catch (error) {
    flash(error.message, true);
    button.disabled = false;
  }
  refresh();
}

// --- the loop --------------------------------------------------------------------------------------

let timer = null;
let anomaliesAt = 0;

async function refresh() {
  clearTimeout(timer);
  try {
    const [overview, jobs, failed, drafts] = await Promise.all([
      api("overview"), api("jobs"), api("failed"), api("drafts"),
    ]);
    drawOverview(overview);
    drawJobs(jobs.jobs);
    drawFailed(failed.jobs);
    drawDrafts(drafts.jobs);
    if (Date.now() - anomaliesAt > ANOMALIES_MS) {
      anomaliesAt = Date.now();
      drawAnomalies(await api("anomalies"));
    }
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return showLogin(error.message);
    flash("cannot reach the gateway: " + error.message, true);
  }
  timer = setTimeout(refresh, POLL_MS);
}

function showLogin(message) {
  clearTimeout(timer);
  $("main").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("viewer").textContent = "";
  if (message) flash(message, true);
}

function showMain() {
  $("login").hidden = true;
  $("main").hidden = false;
  $("logout").hidden = false;
  anomaliesAt = 0;
  refresh();
}

async function login(body) {
  try {
    await api("session", { method: "POST", body });
    flash("");
    showMain();
  } catch (error) {
    showLogin(error.message);
  }
}

async function start() {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("token");
    const token = input.value;
    input.value = "";
    login({ token });
  });
  $("logout").addEventListener("click", async () => {
    await api("session", { method: "DELETE" }).catch(() => {});
    showLogin("logged out");
  });
  const hash = new URLSearchParams(location.hash.slice(1));
  const link = hash.get("login");
  if (link) {
    history.replaceState(null, "", location.pathname);  // the used link leaves no trace in the URL
    return login({ link });
  }
  try {
    await api("me");
    showMain();
  } catch (error) {
    showLogin(error instanceof ApiError && error.status === 401 ? "" : error.message);
  }
}

start();
