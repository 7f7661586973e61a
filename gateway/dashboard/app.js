// The dashboard: signs in with a key kept in session storage, reads the gateway's JSON and draws it.
// Everything it shows comes from /dashboard/api/summary (and, for admins, /admin/upstreams and /admin/teams).
"use strict";

const KEY = "sora-gateway-key";
const REFRESH_MS = 2000;
const COLORS = ["#2e90fa", "#12b76a", "#f79009", "#7a5af8", "#ee46bc", "#06aed4", "#f04438", "#667085"];
const MEASURES = [
  ["videos", "Videos", v => String(v)],
  ["video_seconds", "Video-seconds", v => String(v)],
  ["cost_usd", "Cost", v => "$" + v.toFixed(2)],
];
const QUOTA_NAMES = {
  requests_per_minute: "requests / minute", concurrent_jobs: "concurrent jobs", videos_per_day: "videos / day",
  video_seconds_per_month: "video-seconds / month", budget_usd_per_month: "budget USD / month",
};
let timer = null;

const $ = selector => document.querySelector(selector);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  return node;
}

class SignedOut extends Error {}

async function api(path) {
  const response = await fetch(path, { headers: { authorization: "Bearer " + sessionStorage.getItem(KEY) } });
  if (response.status === 401) throw new SignedOut("That key was not accepted.");
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ? body.error.message : "HTTP " + response.status);
  return body;
}

function showSignIn(message = "") {
  clearInterval(timer);
  timer = null;
  $("#board").hidden = true;
  $("#sign-out").hidden = true;
  $("#sign-in").hidden = false;
  $("#scope").textContent = "";
  $("#sign-in-error").textContent = message;
}

async function refresh() {
  try {
    const data = await api("/dashboard/api/summary");
    render(data);
    if (data.scope === "admin") {
      const [upstreams, teams] = await Promise.all([api("/admin/upstreams"), api("/admin/teams")]);
      renderKeys(upstreams.data);
      renderQuotas(teams.data);
    }
    $("#updated").textContent = "Updated " + new Date(data.generated_at * 1000).toISOString().slice(11, 19) +
      " UTC · refreshes every " + REFRESH_MS / 1000 + " s";
  } catch (error) {
    if (error instanceof SignedOut) {
      sessionStorage.removeItem(KEY);
      showSignIn(error.message);
    } else {
      $("#updated").textContent = "Could not refresh: " + error.message;
    }
  }
}

function start() {
  $("#sign-in").hidden = true;
  $("#board").hidden = false;
  $("#sign-out").hidden = false;
  refresh();
  timer = setInterval(refresh, REFRESH_MS);
}

function render(data) {
  $("#scope").textContent = data.scope === "admin" ? "admin · all teams" : "team " + data.team;
  $("#scope").dataset.scope = data.scope;
  for (const section of document.querySelectorAll(".admin")) section.hidden = data.scope !== "admin";
  for (const holder of document.querySelectorAll(".charts")) {
    const series = data[holder.dataset.breakdown];
    holder.replaceChildren(...MEASURES.map(([measure, title, format]) =>
      chart(holder.dataset.breakdown, measure, title, format, data.days, series)));
  }
  rows("#running", data.running, job => [
    el("code", {}, job.id), job.team, job.model, job.status,
    progress(job.progress),
  ], job => ({ "data-id": job.id, "data-progress": job.progress }), "Nothing is running.");
  rows("#failures", data.failures, job => [
    new Date(job.failed_at * 1000).toISOString().slice(0, 16).replace("T", " "),
    el("code", {}, job.id), job.team, job.code, job.reason,
  ], job => ({ "data-id": job.id }), "No failures.");
}

function progress(percent) {
  const bar = el("span", { class: "bar" }, el("span"));
  bar.firstChild.style.width = percent + "%";
  return el("span", {}, bar, el("span", { class: "percent" }, percent + "%"));
}

function rows(selector, items, cells, attrs, empty) {
  const body = $(selector + " tbody");
  if (!items.length) {
    body.replaceChildren(el("tr", {}, el("td", { class: "empty", colspan: "6" }, empty)));
    return;
  }
  body.replaceChildren(...items.map(item => el("tr", attrs(item), ...cells(item).map(cell => el("td", {}, cell)))));
}

// One stacked bar per day, one colour per team (or model); every bar carries its numbers as data attributes.
function chart(breakdown, measure, title, format, days, series) {
  const names = Object.keys(series).sort();
  const totals = days.map((_, i) => names.reduce((sum, name) => sum + series[name][measure][i], 0));
  const max = Math.max(...totals, 0);
  const [width, height, left, bottom] = [360, 150, 34, 16];
  const plot = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title });
  const slot = (width - left) / days.length;
  const scale = max > 0 ? (height - bottom - 8) / max : 0;
  plot.append(label(left - 4, 10, format(round(max)), "end"), label(left - 4, height - bottom, "0", "end"));
  plot.append(svg("line", { x1: left, x2: width, y1: height - bottom, y2: height - bottom, stroke: "#e4e7ec" }));
  days.forEach((day, i) => {
    let y = height - bottom;
    names.forEach((name, n) => {
      const value = series[name][measure][i];
      if (!value) return;
      const h = Math.max(value * scale, 1);
      y -= h;
      const bar = svg("rect", { x: left + i * slot + 1, y, width: Math.max(slot - 2, 1), height: h,
        fill: COLORS[n % COLORS.length], "data-series": name, "data-day": day, "data-value": value });
      const tip = svg("title");
      tip.textContent = `${day} · ${name}: ${format(value)}`;
      bar.append(tip);
      plot.append(bar);
    });
  });
  plot.append(label(left, height - 3, days[0].slice(5), "start"), label(width, height - 3, days.at(-1).slice(5), "end"));
  const legend = el("ul", { class: "legend" }, ...names.map((name, n) => {
    const total = round(series[name][measure].reduce((a, b) => a + b, 0));
    const swatch = el("i");
    swatch.style.background = COLORS[n % COLORS.length];
    return el("li", { "data-series": name, "data-total": total }, swatch, `${name}: ${format(total)}`);
  }));
  if (!names.length) legend.append(el("li", { class: "empty" }, "no completed videos"));
  return el("figure", { "data-breakdown": breakdown, "data-measure": measure }, el("figcaption", {}, title), plot, legend);
}

function label(x, y, text, anchor) {
  const node = svg("text", { x, y, "text-anchor": anchor });
  node.textContent = text;
  return node;
}

function round(value) {
  return Math.round(value * 1e6) / 1e6;
}

function renderKeys(upstreams) {
  const keys = upstreams.flatMap(u => u.keys.map(key => ({ upstream: u.name, ...key })));
  rows("#keys", keys, key => [
    key.upstream, el("code", {}, key.label), el("span", { class: "state-" + key.state }, key.state),
    String(key.in_flight), `${key.successes} / ${key.failures}`, key.disabled_reason || key.last_error || "",
  ], key => ({ "data-label": key.label }), "No upstream keys.");
}

function renderQuotas(teams) {
  const lines = teams.flatMap(team => Object.entries(team.quotas || {})
    .filter(([, limit]) => limit !== null && limit !== undefined)
    .map(([name, limit]) => ({ team: team.name, name, limit, used: (team.usage || {})[name] || 0 })));
  rows("#quotas", lines, q => [
    q.team, QUOTA_NAMES[q.name] || q.name, String(round(q.used)), String(q.limit),
    progress(Math.min(100, Math.round(100 * q.used / (q.limit || 1)))),
  ], q => ({ "data-team": q.team, "data-limit": q.name }), "No team has a quota.");
}

document.addEventListener("DOMContentLoaded", () => {
  $("#sign-in-form").addEventListener("submit", event => {
    event.preventDefault();
    sessionStorage.setItem(KEY, $("#key").value.trim());
    $("#key").value = "";
    start();
  });
  $("#sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    showSignIn();
  });
  if (sessionStorage.getItem(KEY)) start(); else showSignIn();
});
