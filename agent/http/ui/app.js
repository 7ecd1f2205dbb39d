// ctk web UI: vanilla JavaScript, hash routes, reads and writes only through this agent's /v1 API.
// Every value reaches the DOM as text (el() appends text nodes, never HTML).
"use strict";

const API = "../v1/";            // relative: works at /ui/ and behind a path-prefix proxy
const REFRESH_MS = 5000;
const RANK = { passing: 0, warning: 1, critical: 2 };
const SERF = { 0: "none", 1: "alive", 2: "leaving", 3: "left", 4: "failed" };
const prefs = { filter: "", unhealthyOnly: false, hideGone: false };
const $main = document.getElementById("main");
let generation = 0;              // bumps on each navigation; stale async work checks it and stops
let timer = null;

// ---------------------------------------------------------------- helpers

function el(tag, props, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (typeof v === "boolean" || k === "value") e[k] = v;
    else e.setAttribute(k, v);
  }
  return add(e, kids);
}

// Append children as nodes or text; arrays are flattened, null/undefined/false skipped.
function add(parent, kids) {
  for (const kid of kids.flat(Infinity)) {
    if (kid !== null && kid !== undefined && kid !== false) parent.append(kid instanceof Node ? kid : String(kid));
  }
  return parent;
}

const fill = (parent, ...kids) => { parent.replaceChildren(); return add(parent, kids); };

const enc = (s) => encodeURIComponent(s);
const encPath = (p) => p.split("/").map(enc).join("/");
const statusOf = (s) => (s in RANK ? s : "critical");   // maintenance and unknown states count as critical
const worst = (checks) => checks.map((c) => statusOf(c.Status)).reduce((w, s) => (RANK[s] > RANK[w] ? s : w), "passing");
const badge = (status, text) => el("span", { class: `badge ${statusOf(status)}` }, text ?? status);

function countBadges(counts) {
  return Object.keys(RANK).map((s) =>
    el("span", { class: `badge ${s} count-${s}${counts[s] ? "" : " zero"}`, title: `${counts[s]} ${s}` }, counts[s]));
}

function output(text) {
  if (!text) return el("span", { class: "muted" }, "—");
  const lines = text.split("\n");
  if (text.length <= 160 && lines.length === 1) return el("pre", {}, text);
  return el("details", { class: "out" },
    el("summary", {}, lines[0].slice(0, 120) + ` … (${text.length} chars)`), el("pre", {}, text));
}

function showError(err) {
  const box = document.getElementById("error");
  box.hidden = !err;
  box.textContent = err ? `Error: ${err.message || err}` : "";
}

async function request(method, path, body) {
  const r = await fetch(API + path, { method, body, cache: "no-store" });
  if (!r.ok) throw new Error(`${method} /v1/${path}: ${r.status} ${(await r.text()).trim()}`);
  return r.json();
}

async function getJSON(path, { missing, okStatus } = {}) {
  const r = await fetch(API + path, { cache: "no-store", headers: { Accept: "application/json" } });
  if (r.status === 404 && missing !== undefined) return missing;
  if (!r.ok && r.status !== okStatus) throw new Error(`GET /v1/${path}: ${r.status} ${(await r.text()).trim()}`);
  return r.json();
}

// Re-fetch every REFRESH_MS; redraw only when the data changed. Returns a redraw function for controls.
function live(gen, fetcher, render) {
  let last = "", data = null;
  const draw = () => { if (data !== null) render(data); };
  const tick = async () => {
    try {
      const d = await fetcher();
      if (gen !== generation) return;
      showError(null);
      const key = JSON.stringify(d);
      if (key !== last) { last = key; data = d; draw(); }
    } catch (err) {
      if (gen === generation) showError(err);
    }
  };
  timer = setInterval(tick, REFRESH_MS);
  tick();
  return draw;
}

function controls(redraw, { filter = true, unhealthy = true, gone = false } = {}) {
  const box = (key, label, id) => el("label", {}, el("input", {
    type: "checkbox", id, checked: prefs[key], onchange: (e) => { prefs[key] = e.target.checked; redraw(); },
  }), " " + label);
  return el("div", { class: "controls" },
    filter && el("input", { type: "search", id: "filter", placeholder: "Filter by name or tag", value: prefs.filter,
      oninput: (e) => { prefs.filter = e.target.value; redraw(); } }),
    unhealthy && box("unhealthyOnly", "Only unhealthy", "only-unhealthy"),
    gone && box("hideGone", "Hide failed/left nodes", "hide-gone"));
}

const matches = (...texts) => !prefs.filter || texts.flat().some((t) => String(t).toLowerCase()
  .includes(prefs.filter.toLowerCase()));

// "All passing" only when nothing is warning or critical; otherwise the worst state leads.
function summaryBanner(counts, noun) {
  const total = counts.passing + counts.warning + counts.critical;
  const banner = (cls, text) => el("div", { class: `banner ${cls}`, id: "summary" }, text);
  if (counts.critical) return banner("critical", `${counts.critical} of ${total} ${noun} critical`);
  if (counts.warning) return banner("warning", `${counts.warning} of ${total} ${noun} warning`);
  return total ? banner("passing", `All ${total} ${noun} passing`) : banner("", `No ${noun}`);
}

const hiddenNote = (shown, total) => (shown >= total ? null
  : el("p", { class: "muted", id: "hidden-note" }, `${total - shown} of ${total} hidden by the filters above`));
const head = (...names) => el("thead", {}, el("tr", {}, names.map((h) => el("th", {}, h))));

function tally(items) {
  const counts = { passing: 0, warning: 0, critical: 0 };
  for (const i of items) counts[i.status]++;
  return counts;
}

// ---------------------------------------------------------------- services

// An instance's status is the worst of its node's checks and its own service checks.
const instance = (e) => ({ node: e.Node, svc: e.Service, checks: e.Checks || [], status: worst(e.Checks || []) });

async function fetchServices() {
  const names = Object.keys(await getJSON("catalog/services")).sort();
  const all = await Promise.all(names.map((n) => getJSON("health/service/" + enc(n))));
  return names.map((name, i) => {
    const instances = all[i].map(instance);
    return { name, instances, counts: tally(instances), tags: [...new Set(instances.flatMap((x) => x.svc.Tags || []))] };
  });
}

function viewServices(gen) {
  const body = el("div");
  const redraw = live(gen, fetchServices, (services) => {
    const total = { passing: 0, warning: 0, critical: 0 };
    services.forEach((s) => Object.keys(total).forEach((k) => { total[k] += s.counts[k]; }));
    const shown = services.filter((s) => matches(s.name, s.tags)
      && (!prefs.unhealthyOnly || s.counts.warning + s.counts.critical > 0));
    fill(body, summaryBanner(total, "instances"), hiddenNote(shown.length, services.length),
      shown.length === 0 ? el("p", { class: "empty" }, "No services match.") : el("table", { id: "services" },
        head("Service", "Instances (passing / warning / critical)", "Tags"),
        el("tbody", {}, shown.map((s) => el("tr", { "data-service": s.name },
          el("td", {}, el("a", { href: "#/service/" + enc(s.name) }, s.name)),
          el("td", {}, countBadges(s.counts)),
          el("td", {}, s.tags.map((t) => el("span", { class: "tag" }, t))))))));
  });
  fill($main, el("h1", {}, "Services"), controls(redraw), body);
}

function checkRows(checks) {
  return el("table", { class: "checks" },
    head("Status", "Check", "Type", "Output"),
    el("tbody", {}, checks.map((c) => el("tr", { "data-check": c.CheckID },
      el("td", {}, badge(c.Status)),
      el("td", {}, c.Name, el("div", { class: "muted" }, c.CheckID + (c.ServiceID ? "" : " (node)"))),
      el("td", {}, c.Type || "—"),
      el("td", { class: "output" }, output(c.Output))))));
}

function viewService(gen, name) {
  const body = el("div");
  const redraw = live(gen, async () => (await getJSON("health/service/" + enc(name))).map(instance), (instances) => {
    const shown = instances.filter((i) => (!prefs.unhealthyOnly || i.status !== "passing")
      && matches(i.svc.ID, i.node.Node, i.svc.Tags || []));
    fill(body, summaryBanner(tally(instances), "instances"), hiddenNote(shown.length, instances.length),
      shown.length === 0 ? el("p", { class: "empty" }, "No instances match.") : shown.map((i) =>
        el("div", { class: "card instance", "data-instance": i.svc.ID },
          el("div", { class: "head" }, badge(i.status), el("strong", {}, i.svc.ID),
            el("span", {}, "on node ", i.node.Node),
            el("code", { class: "addr" }, `${i.svc.Address || i.node.Address}:${i.svc.Port}`),
            el("span", {}, (i.svc.Tags || []).map((t) => el("span", { class: "tag" }, t)))),
          i.checks.length ? checkRows(i.checks) : el("p", { class: "empty" }, "No checks."))));
  });
  fill($main, el("h1", {}, el("a", { href: "#/services" }, "Services"), " / ", name), controls(redraw), body);
}

// ---------------------------------------------------------------- nodes

async function fetchNodes() {
  const [nodes, checks, members] = await Promise.all([
    getJSON("catalog/nodes"), getJSON("health/state/any"), getJSON("agent/members", { missing: [] })]);
  const byName = new Map(nodes.map((n) => [n.Node, { name: n.Node, address: n.Address, checks: [], svc: [] }]));
  for (const m of members) {
    if (!byName.has(m.Name)) byName.set(m.Name, { name: m.Name, address: m.Addr, checks: [], svc: [] });
    byName.get(m.Name).serf = SERF[m.Status] || String(m.Status);
  }
  for (const c of checks) byName.get(c.Node)?.[c.ServiceID ? "svc" : "checks"].push(c);
  return [...byName.values()].sort((a, b) => a.name.localeCompare(b.name)).map((n) => {
    const serfDown = n.checks.some((c) => c.CheckID === "serfHealth" && c.Status === "critical");
    const serf = n.serf || (serfDown ? "failed" : "unknown");
    return { ...n, serf, status: serf === "alive" || serf === "unknown" ? worst(n.checks) : "critical" };
  });
}

function viewNodes(gen) {
  const body = el("div");
  const redraw = live(gen, fetchNodes, (nodes) => {
    const shown = nodes.filter((n) => matches(n.name, n.address) && (!prefs.unhealthyOnly || n.status !== "passing")
      && (!prefs.hideGone || !["failed", "left"].includes(n.serf)));
    fill(body, summaryBanner(tally(nodes), "nodes"), hiddenNote(shown.length, nodes.length),
      shown.length === 0 ? el("p", { class: "empty" }, "No nodes match.") : el("table", { id: "nodes" },
        head("Node", "Health", "Address", "Serf", "Node checks", "Service checks"),
        el("tbody", {}, shown.map((n) => el("tr", { "data-node": n.name },
          el("td", {}, n.name), el("td", {}, badge(n.status)), el("td", {}, n.address), el("td", {}, n.serf),
          el("td", {}, n.checks.map((c) => el("div", {}, badge(c.Status), c.Name, output(c.Output)))),
          el("td", {}, countBadges(tally(n.svc.map((c) => ({ status: statusOf(c.Status) }))))))))));
  });
  fill($main, el("h1", {}, "Nodes"), controls(redraw, { gone: true }), body);
}

// ---------------------------------------------------------------- raft

async function fetchRaft() {
  const [conf, health, leader] = await Promise.all([
    getJSON("operator/raft/configuration?stale"),
    getJSON("operator/autopilot/health", { okStatus: 429 }).catch((err) => ({ error: String(err.message) })),
    getJSON("status/leader").catch(() => "")]);
  return { conf, health, leader };
}

function viewRaft(gen) {
  const body = el("div");
  live(gen, fetchRaft, ({ conf, health, leader }) => {
    const hs = new Map((health.Servers || []).map((s) => [s.ID, s]));
    const top = Math.max(0, ...(health.Servers || []).map((s) => s.LastIndex || 0));
    const voters = conf.Servers.filter((s) => s.Voter).length;
    const lead = conf.Servers.find((s) => s.Leader);
    const yes = (b) => (b === undefined ? "?" : b ? "yes" : "no");
    const autopilot = health.error ? `autopilot: ${health.error}`
      : `failure tolerance ${health.FailureTolerance} · ${health.Healthy ? "healthy" : "UNHEALTHY"}`;
    fill(body,
      el("div", { class: `banner ${lead && health.Healthy ? "passing" : "critical"}`, id: "summary" },
        lead ? `Leader: ${lead.Node} (${leader || lead.Address})` : "No leader",
        ` · ${voters} voter(s) of ${conf.Servers.length} · ${autopilot}`),
      el("table", { id: "peers" },
        head("Node", "Address", "Leader", "Voter", "Healthy", "Serf", "Last contact", "Last term", "Last index", "Behind"),
        el("tbody", {}, [...conf.Servers].sort((a, b) => a.Node.localeCompare(b.Node)).map((s) => {
          const h = hs.get(s.ID) || {};
          return el("tr", { "data-peer": s.Node },
            el("td", {}, s.Node, el("div", { class: "muted" }, s.ID)), el("td", {}, s.Address),
            el("td", {}, s.Leader ? badge("passing", "leader") : "—"), el("td", {}, yes(s.Voter)),
            el("td", {}, h.Healthy === undefined ? "?" : badge(h.Healthy ? "passing" : "critical", yes(h.Healthy))),
            el("td", {}, h.SerfStatus ?? "?"), el("td", {}, h.LastContact || "—"), el("td", {}, h.LastTerm ?? "?"),
            el("td", {}, h.LastIndex ?? "?"), el("td", {}, h.LastIndex === undefined ? "?" : top - h.LastIndex));
        }))));
  });
  fill($main, el("h1", {}, "Raft peers"), body);
}

// ---------------------------------------------------------------- key/value

function decodeValue(b64) {
  if (b64 === null || b64 === undefined) return { text: "" };
  const bytes = Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0));
  try {
    return { text: new TextDecoder("utf-8", { fatal: true }).decode(bytes) };
  } catch {
    return { text: null, size: bytes.length };
  }
}

function crumbs(path) {
  const parts = path.split("/");
  const out = [el("a", { href: "#/kv/" }, "(root)")];
  parts.slice(0, -1).forEach((p, i) =>
    out.push(" / ", el("a", { href: "#/kv/" + encPath(parts.slice(0, i + 1).join("/")) + "/" }, p)));
  if (parts[parts.length - 1]) out.push(" / ", el("span", {}, parts[parts.length - 1]));
  return el("h1", { class: "crumbs" }, "Key/Value ", out);
}

async function viewKVFolder(gen, prefix) {
  const keys = await getJSON("kv/" + encPath(prefix) + "?keys&separator=/", { missing: [] });
  if (gen !== generation) return;
  const msg = el("div", { id: "kv-msg" });
  const name = el("input", { type: "text", id: "kv-new-key", placeholder: "key name (end with / for a folder)" });
  const value = el("textarea", { id: "kv-new-value", placeholder: "value" });
  const create = async () => {
    if (!name.value) return;
    const key = prefix + name.value;
    try {
      if (await request("PUT", "kv/" + encPath(key) + "?cas=0", value.value)) location.hash = "#/kv/" + encPath(key);
      else fill(msg, el("div", { class: "banner warning" }, `Key "${key}" already exists: not overwritten.`));
    } catch (err) { fill(msg, el("div", { class: "banner critical" }, err.message)); }
  };
  const items = keys.filter((k) => k !== prefix);
  fill($main, crumbs(prefix),
    items.length === 0 ? el("p", { class: "empty" }, "No keys under this prefix.") : el("table", { id: "kv-list" },
      el("tbody", {}, items.map((k) => el("tr", {}, el("td", {},
        el("a", { href: "#/kv/" + encPath(k), "data-key": k }, k.slice(prefix.length))))))),
    el("div", { class: "form" }, el("h2", {}, "Create a key in ", prefix || "(root)"), name, value,
      el("div", { class: "actions" }, el("button", { class: "primary", id: "kv-create", onclick: create }, "Create")), msg));
}

async function viewKVKey(gen, key) {
  const entry = (await getJSON("kv/" + encPath(key), { missing: [null] }))[0];
  if (gen !== generation) return;
  const parent = "#/kv/" + encPath(key.slice(0, key.lastIndexOf("/") + 1));
  if (!entry) {
    fill($main, crumbs(key),
      el("p", { class: "empty" }, "This key does not exist (any more). ", el("a", { href: parent }, "Back")));
    return;
  }
  const { text, size } = decodeValue(entry.Value);
  const msg = el("div", { id: "kv-msg" });
  const say = (cls, ...t) => fill(msg, el("div", { class: `banner ${cls}` }, ...t));
  const area = el("textarea", { id: "kv-value", value: text ?? "", disabled: text === null });
  const conflict = async (what) => {
    const now = (await getJSON("kv/" + encPath(key), { missing: [null] }))[0];
    const how = now ? `changed by someone else (ModifyIndex ${entry.ModifyIndex} → ${now.ModifyIndex})`
      : "deleted by someone else";
    const reload = el("a", { href: "#", onclick: (e) => { e.preventDefault(); route(); } }, "reload");
    say("critical", `Not ${what}: the key was ${how} since you loaded it. Your text is kept; `, reload,
      " to see the current value.");
  };
  const save = async () => {
    try {
      if (await request("PUT", `kv/${encPath(key)}?cas=${entry.ModifyIndex}&flags=${entry.Flags}`, area.value)) {
        Object.assign(entry, (await getJSON("kv/" + encPath(key)))[0]);
        fill(meta, metaItems());
        say("passing", `Saved (ModifyIndex ${entry.ModifyIndex}).`);
      } else await conflict("saved");
    } catch (err) { say("critical", err.message); }
  };
  const remove = async () => {
    if (!window.confirm(`Delete key "${key}"?`)) return;
    try {
      if (await request("DELETE", `kv/${encPath(key)}?cas=${entry.ModifyIndex}`)) location.hash = parent;
      else await conflict("deleted");
    } catch (err) { say("critical", err.message); }
  };
  const metaItems = () => ["Flags", "CreateIndex", "ModifyIndex", "LockIndex", "Session"].map((k) =>
    el("span", {}, `${k}: `, el("b", { "data-meta": k }, entry[k] ?? "—")));
  const meta = el("div", { class: "meta" }, metaItems());
  fill($main, crumbs(key), meta,
    text === null ? el("div", { class: "banner warning" }, `Binary value (${size} bytes): not editable here.`) : null,
    area, el("div", { class: "actions" },
      el("button", { class: "primary", id: "kv-save", onclick: save, disabled: text === null }, "Save"),
      el("button", { class: "danger", id: "kv-delete", onclick: remove }, "Delete")), msg);
}

// ---------------------------------------------------------------- routing

const ROUTES = [
  [/^#\/services$/, "services", viewServices],
  [/^#\/service\/(.+)$/, "services", (g, n) => viewService(g, decodeURIComponent(n))],
  [/^#\/nodes$/, "nodes", viewNodes],
  [/^#\/kv\/(.*)$/, "kv", (g, p) => {
    const path = p.split("/").map(decodeURIComponent).join("/");
    return path === "" || path.endsWith("/") ? viewKVFolder(g, path) : viewKVKey(g, path);
  }],
  [/^#\/raft$/, "raft", viewRaft],
];

async function route() {
  clearInterval(timer);
  const gen = ++generation;
  prefs.filter = "";          // the filter text is per view; the toggles stay on across views
  showError(null);
  const found = ROUTES.map(([re, nav, view]) => [location.hash.match(re), nav, view]).find(([m]) => m);
  if (!found) { location.replace("#/services"); return; }
  const [m, nav, view] = found;
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.nav === nav));
  fill($main, el("p", { class: "muted" }, "Loading…"));
  try {
    await view(gen, ...m.slice(1));
  } catch (err) {
    if (gen === generation) showError(err);
  }
}

async function agentInfo() {
  try {
    const self = await getJSON("agent/self");
    const c = self.Config;
    document.getElementById("agent-info").textContent =
      `datacenter ${c.Datacenter} · node ${c.NodeName} · ${c.Server ? "server" : "client"} · v${c.Version}`;
  } catch (err) { showError(err); }
}

window.addEventListener("hashchange", route);
agentInfo();
route();
