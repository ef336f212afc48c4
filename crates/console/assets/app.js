// The orderflow console: a page per hash route (#/overview, #/orders, #/orders/<orderNo>,
// #/topics, #/dlq, #/stock), drawn from the services' own APIs through /console/api.
// Every text from the services goes into the page as text (never as HTML).
"use strict";

const state = { session: null, config: {}, timer: null, gen: 0, series: { rate: [], lag: [] }, last: null };
const SERVICES = ["order", "stock", "payment"];

// ---- DOM helpers ----
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}
const main = () => document.getElementById("main");
function show(...nodes) { main().replaceChildren(...nodes); }
function say(text, ok) {
  const m = document.getElementById("message");
  m.textContent = text || "";
  m.className = ok ? "ok" : "";
}
function table(headers, rows) {
  return el("table", {},
    el("thead", {}, el("tr", {}, headers.map(h => el("th", { class: h.num ? "num" : null, scope: "col" }, h.label || h)))),
    el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: headers.length, class: "muted" }, "Nothing here."))));
}
function time(ms) { return ms ? new Date(ms).toISOString().replace("T", " ").replace("Z", "") : "—"; }
function num(v) { return v === undefined || v === null || Number.isNaN(v) ? "—" : Number(v).toLocaleString("en-US", { maximumFractionDigits: 1 }); }

// ---- talking to the console ----
class ApiError extends Error {}
async function api(path, options = {}) {
  const headers = {};
  if (options.body !== undefined) headers["content-type"] = "application/json";
  if (options.method && options.method !== "GET" && state.session) headers["x-csrf-token"] = state.session.csrf;
  let response;
  try {
    response = await fetch(path, { method: options.method || "GET", headers, credentials: "same-origin",
      body: options.body === undefined ? undefined : JSON.stringify(options.body) });
  } catch (e) {
    throw new ApiError("The console does not answer: is orderflow still running?");
  }
  const text = await response.text();
  let body = null;
  if (text && (response.headers.get("content-type") || "").includes("json")) {
    try { body = JSON.parse(text); } catch (e) { body = null; }
  } else { body = text; }
  if (response.status === 401 && path !== "/console/session") { signedOut(); throw new ApiError("Your session ended: sign in again."); }
  if (!response.ok) {
    const message = body && body.error && body.error.message;
    throw new ApiError(message || `The request failed (HTTP ${response.status}).`);
  }
  return body;
}
const svc = (service, path, options) => api(`/console/api/${service}/${path}`, options);
const canAct = () => state.session && state.session.role === "admin";
async function act(what, confirmText, run) {
  if (!canAct()) { say("Signed in with the read-only token: it may look, not change."); return; }
  if (confirmText && !window.confirm(confirmText)) return;
  try { await run(); say(what, true); route(); } catch (e) { say(e.message); }
}
function button(label, onclick, cls) {
  return el("button", { type: "button", class: cls, onclick, disabled: !canAct(), title: canAct() ? null : "read-only session" }, label);
}

// ---- signing in ----
function signedOut() {
  state.session = null;
  state.gen++;
  document.getElementById("nav").hidden = true;
  document.getElementById("who").textContent = "";
  stopPolling();
  const input = el("input", { type: "password", name: "token", id: "token", autocomplete: "current-password", required: true });
  const form = el("form", { class: "signin", onsubmit: async e => {
    e.preventDefault();
    try {
      state.session = await api("/console/session", { method: "POST", body: { token: input.value } });
      say("");
      await start();
    } catch (err) { say(err.message); }
  } },
    el("h1", {}, "Sign in"),
    el("p", { class: "muted" }, "Use the admin token (orderflow up prints it) to look and act, or the read-only token to look."),
    el("label", { for: "token" }, "Token", input),
    el("button", { type: "submit" }, "Sign in"));
  show(form);
  input.focus();
}
async function start() {
  document.getElementById("nav").hidden = false;
  const out = el("button", { type: "button", class: "secondary", onclick: async () => {
    await api("/console/session", { method: "DELETE" }).catch(() => {});
    signedOut();
  } }, "Sign out");
  document.getElementById("who").replaceChildren(`signed in: ${state.session.role} `, out);
  state.config = await api("/console/config");
  if (!location.hash || location.hash === "#/") location.hash = "#/overview"; else route();
}

// ---- metrics (Prometheus text) ----
function parseMetrics(text) {
  const series = new Map();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const l of (m[3] || "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    series.set(m[1] + "{" + (m[3] || "") + "}", { name: m[1], labels, value: Number(m[4]) });
  }
  return series;
}
async function metrics() {
  // `up`'s three services share one registry: the same series from each counts once.
  const all = new Map();
  const texts = await Promise.all(SERVICES.map(s => svc(s, "metrics").catch(() => "")));
  for (const t of texts) for (const [k, v] of parseMetrics(t)) if (!all.has(k)) all.set(k, v);
  return [...all.values()];
}
const named = (series, name) => series.filter(s => s.name === name);
const total = (series, name) => named(series, name).reduce((a, s) => a + s.value, 0);
// The upper bound of the bucket holding quantile `q` of a cumulative histogram (a Map from
// `le` to count, `Infinity` for +Inf); null when it is empty.
function quantile(buckets, q) {
  const n = buckets.get(Infinity) || 0;
  if (!n) return null;
  const bounds = [...buckets.keys()].filter(le => le !== Infinity).sort((a, b) => a - b);
  for (const le of bounds) if (buckets.get(le) >= q * n) return le;
  return bounds.length ? bounds[bounds.length - 1] : null;
}
function spark(values) {
  const max = Math.max(1, ...values);
  const points = values.map((v, i) => `${(i / Math.max(1, values.length - 1)) * 100},${36 - (v / max) * 34}`).join(" ");
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 100 36");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("aria-hidden", "true");
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", points);
  svg.append(line);
  return svg;
}
function card(label, value, values, id) {
  return el("div", { class: "card", "data-card": id }, el("div", { class: "label" }, label), el("div", { class: "value" }, value), values ? spark(values) : null);
}

// ---- pages ----
async function overview() {
  const series = await metrics();
  const now = Date.now();
  const orders = total(series, "orderflow_orders");
  let rate = 0;
  if (state.last) rate = Math.max(0, (orders - state.last.orders) / ((now - state.last.at) / 1000));
  state.last = { orders, at: now };
  const lag = named(series, "orderflow_consumer_lag_messages");
  const lagTotal = total(series, "orderflow_consumer_lag_messages");
  for (const [k, v] of [["rate", rate], ["lag", lagTotal]]) { state.series[k].push(v); if (state.series[k].length > 60) state.series[k].shift(); }
  const buckets = new Map();
  for (const s of named(series, "orderflow_order_completion_seconds_bucket")) {
    if (s.labels.outcome !== "PAID") continue;
    const le = s.labels.le === "+Inf" ? Infinity : Number(s.labels.le);
    buckets.set(le, (buckets.get(le) || 0) + s.value);
  }
  const ms = q => { const v = quantile(buckets, q); return v === null ? "—" : `≤ ${num(v * 1000)} ms`; };
  const byStatus = named(series, "orderflow_orders").map(s => `${s.labels.status} ${num(s.value)}`).join(" · ");
  const violations = total(series, "orderflow_invariant_violations");
  const checked = named(series, "orderflow_invariant_checked_at_seconds")[0];
  return [
    el("h1", {}, "Overview"),
    el("div", { class: "cards" },
      card("orders/s", num(rate), state.series.rate, "rate"),
      card("create → PAID p50", ms(0.5), null, "p50"),
      card("create → PAID p99", ms(0.99), null, "p99"),
      card("orders by status", byStatus || "—", null, "status"),
      card("consumer lag (messages)", num(lagTotal), state.series.lag, "lag"),
      card("dead letters", num(total(series, "orderflow_dead_letters")), null, "dlq"),
      card("outbox backlog", num(total(series, "orderflow_outbox_backlog")), null, "outbox"),
      card("invariants", checked ? (violations ? `${num(violations)} violations` : "hold") : "not checked yet", null, "invariants")),
    el("h2", {}, "Lag per consumer group"),
    table(["group", "topic", { label: "waiting", num: true }, { label: "oldest (s)", num: true }],
      lag.sort((a, b) => (a.labels.group + a.labels.topic).localeCompare(b.labels.group + b.labels.topic)).map(s => {
        const age = series.find(o => o.name === "orderflow_consumer_lag_oldest_age_seconds" && o.labels.group === s.labels.group && o.labels.topic === s.labels.topic);
        return el("tr", { "data-lag": `${s.labels.group}/${s.labels.topic}` }, el("td", {}, s.labels.group), el("td", {}, s.labels.topic),
          el("td", { class: "num" }, num(s.value)), el("td", { class: "num" }, num(age && age.value)));
      }))];
}

async function orders(params) {
  const q = new URLSearchParams(params);
  const search = el("form", { class: "inline", onsubmit: e => {
    e.preventDefault();
    const f = new FormData(e.target);
    if (f.get("orderNo")) { location.hash = `#/orders/${encodeURIComponent(f.get("orderNo").trim())}`; return; }
    const next = new URLSearchParams();
    for (const k of ["userId", "status"]) if (f.get(k)) next.set(k, f.get(k));
    location.hash = `#/orders?${next}`;
  } },
    el("label", {}, "orderNo", el("input", { name: "orderNo", placeholder: "ORD…" })),
    el("label", {}, "user", el("input", { name: "userId", inputmode: "numeric", value: q.get("userId") || "" })),
    el("label", {}, "status", el("select", { name: "status" }, ["", "PENDING", "PAID", "CANCELLED"].map(s => el("option", { value: s, selected: q.get("status") === s }, s || "any")))),
    el("button", { type: "submit" }, "Search"));
  const query = new URLSearchParams();
  for (const k of ["userId", "status", "before"]) if (q.get(k)) query.set(k, q.get(k));
  query.set("limit", "50");
  const found = await svc("order", `api/orders?${query}`);
  const rows = found.map(o => el("tr", {},
    el("td", {}, el("a", { href: `#/orders/${encodeURIComponent(o.orderNo)}` }, o.orderNo)),
    el("td", { class: "num" }, o.userId), el("td", { class: `status-${o.status}` }, o.status),
    el("td", { class: "num" }, o.totalAmount), el("td", {}, time(o.createdAt)), el("td", {}, time(o.updatedAt))));
  const pager = el("div", { class: "pager" },
    q.get("before") ? el("a", { href: `#/orders?${new URLSearchParams([...q].filter(([k]) => k !== "before"))}` }, "« newest") : null,
    found.length === 50 ? el("a", { href: `#/orders?${new URLSearchParams({ ...Object.fromEntries(q), before: found[found.length - 1].orderId })}` }, "older »") : null);
  return [el("h1", {}, "Orders"), search,
    table(["orderNo", { label: "user", num: true }, "status", { label: "total", num: true }, "created", "updated"], rows), pager];
}

function traceIdOf(properties) {
  const tp = properties && properties.traceparent;
  return tp ? tp.split("-")[1] : null;
}

async function timeline(orderNo) {
  const order = await svc("order", `api/orders/${encodeURIComponent(orderNo)}`);
  // The flow's topics are the ones its bindings consume (a broker's list also has its own).
  const bindings = (await Promise.all(SERVICES.map(s => svc(s, "admin/bindings")))).flat();
  const topics = [...new Set(bindings.map(b => b.destination))];
  const messages = (await Promise.all(topics.map(t =>
    svc("order", `admin/messages?${new URLSearchParams({ topic: t, key: orderNo })}`)))).flat()
    .sort((a, b) => a.bornAt - b.bornAt);
  const reservation = await svc("stock", `api/stock/reservations/${encodeURIComponent(orderNo)}`).catch(() => null);
  const payments = await svc("payment", `api/payments?${new URLSearchParams({ orderNo })}`).catch(() => []);
  const traceId = messages.map(m => traceIdOf(m.properties)).find(Boolean);
  const traceLink = traceId && state.config.traceUrl
    ? el("a", { href: state.config.traceUrl.replace("{traceId}", traceId), target: "_blank", rel: "noopener" }, traceId) : traceId || "none recorded";
  const events = [
    ...(order.events || []).map(e => ({ at: e.at, service: "order", what: e.event, detail: e.detail })),
    ...messages.map(m => ({ at: m.bornAt, service: "broker", what: `${m.topic} · ${m.tags}`, detail: `eventId ${m.properties.eventId || "—"}; consumed by ${(m.groups || []).map(g => `${g.group}${g.consumed ? "" : " (waiting)"}`).join(", ") || "no group"}` })),
    ...payments.map(p => ({ at: p.createdAt, service: "payment", what: `payment ${p.paymentId} ${p.status}`, detail: `${p.amount} by ${p.paymentMethod}${p.reason ? `: ${p.reason}` : ""}` })),
  ].sort((a, b) => a.at - b.at);
  return [
    el("h1", {}, `Order ${order.orderNo}`),
    el("p", {}, "Status ", el("span", { class: `status-${order.status}`, id: "order-status" }, order.status),
      ` · user ${order.userId} · total ${order.totalAmount} · created ${time(order.createdAt)}`,
      order.cancelReason ? ` · cancelled: ${order.cancelReason}` : ""),
    el("p", {}, "Trace: ", traceLink),
    el("h2", {}, "Timeline across the services"),
    table(["when", "service", "what", "detail"], events.map(e => el("tr", {}, el("td", {}, time(e.at)), el("td", {}, e.service), el("td", {}, e.what), el("td", {}, e.detail)))),
    el("h2", {}, `Messages (${messages.length})`),
    table(["topic", "tag", "keys", "eventId", "born", "groups"], messages.map(m => el("tr", { "data-message": m.topic },
      el("td", {}, m.topic), el("td", {}, m.tags), el("td", {}, m.keys), el("td", {}, m.properties.eventId || "—"), el("td", {}, time(m.bornAt)),
      el("td", {}, (m.groups || []).map(g => `${g.group}: ${g.consumed ? "consumed" : `waiting${g.attempts ? ` (${g.attempts} ${g.attempts === 1 ? "attempt" : "attempts"} so far)` : ""}`}`).join("; "))))),
    el("h2", {}, "Stock reservation"),
    reservation ? table(["state", "items", "reason"], [el("tr", {}, el("td", {}, reservation.state),
      el("td", {}, Object.entries(reservation.items || {}).map(([p, n]) => `${p} × ${n}`).join(", ")), el("td", {}, reservation.reason || "—"))])
      : el("p", { class: "muted" }, "No reservation."),
    el("h2", {}, "Payments and refunds"),
    table(["payment", "status", { label: "amount", num: true }, "transaction", "updated"], payments.map(p => el("tr", {},
      el("td", {}, p.paymentId), el("td", {}, p.status), el("td", { class: "num" }, p.amount), el("td", {}, p.transactionNo || "—"), el("td", {}, time(p.updatedAt)))))];
}

async function topics() {
  const per = await Promise.all(SERVICES.map(async s => ({ service: s,
    bindings: await svc(s, "admin/bindings"), progress: await svc(s, "admin/consumer-progress") })));
  const rows = [];
  for (const { service, bindings, progress } of per) {
    for (const b of bindings) {
      const p = progress.find(x => x.binding === b.name) || {};
      const paused = b.state === "PAUSED";
      rows.push(el("tr", { "data-binding": b.name, "data-group": b.group },
        el("td", {}, service), el("td", {}, b.name), el("td", {}, b.group), el("td", {}, b.destination),
        el("td", { class: paused ? "bad" : "ok" }, b.state), el("td", { class: "num", "data-lag": "" }, num(p.messages)), el("td", {}, time(p.oldestBornAt)),
        el("td", {},
          button(paused ? "Resume" : "Pause", () => act(`${b.name} ${paused ? "resumed" : "paused"}.`, null,
            () => svc(service, `admin/bindings/${encodeURIComponent(b.name)}`, { method: "PUT", body: { state: paused ? "RUNNING" : "PAUSED" } })), "secondary"),
          " ",
          button("Reset offset…", () => {
            const at = window.prompt(`Move ${b.group} on ${b.destination} back to the first message stored at or after this time (yyyy-mm-ddThh:mm:ss, UTC):`);
            if (!at) return;
            const ms = Date.parse(at.endsWith("Z") ? at : `${at}Z`);
            if (Number.isNaN(ms)) { say(`"${at}" is not a time: write it as 2026-12-04T10:30:00.`); return; }
            act(`${b.group} on ${b.destination} reset to ${time(ms)}.`,
              `Every message of ${b.destination} stored since ${time(ms)} will be delivered to ${b.group} again; the inbox absorbs those it already handled. Go on?`,
              () => svc(service, "admin/consumer-offsets", { method: "POST", body: { group: b.group, topic: b.destination, resetTo: { time: ms }, force: false } }));
          }, "secondary"),
          " ",
          button("Skip backlog", () => act(`${b.group} skipped the backlog of ${b.destination}.`,
            `The ${num(p.messages)} messages ${b.group} has not handled on ${b.destination} will never be delivered to it (the compensation job still ends the orders they belong to). Go on?`,
            () => svc(service, "admin/consumer-offsets", { method: "POST", body: { group: b.group, topic: b.destination, resetTo: "latest", force: true } })), "danger"))));
    }
  }
  return [el("h1", {}, "Topics and consumer groups"),
    table(["service", "binding", "group", "topic", "state", { label: "lag", num: true }, "oldest waiting", "actions"], rows)];
}

async function deadLetters() {
  // Each service lists its own groups' dead letters.
  const per = await Promise.all(SERVICES.map(async s => (await svc(s, "admin/dlq?limit=200")).map(d => ({ ...d, service: s }))));
  const letters = per.flat();
  const detail = el("div", {});
  const rows = letters.map(d => el("tr", { "data-dead-letter": d.messageId },
    el("td", {}, el("input", { type: "checkbox", "aria-label": `select ${d.messageId}`, "data-select": d.messageId, "data-service": d.service })),
    el("td", {}, el("a", { href: "#", onclick: e => { e.preventDefault(); detail.replaceChildren(
      el("h2", {}, `Dead letter ${d.messageId}`),
      el("p", {}, `group ${d.group} · topic ${d.originTopic} · tag ${d.tags} · keys ${d.keys} · ${d.attempts} attempts · dead at ${time(d.deadAt)}`),
      el("p", {}, "Error: ", d.error), el("h2", {}, "Headers"), el("pre", {}, JSON.stringify(d.properties, null, 2)),
      el("h2", {}, "Payload"), el("pre", {}, d.body)); } }, d.messageId)),
    el("td", {}, d.group), el("td", {}, d.originTopic), el("td", {}, d.keys), el("td", {}, d.error), el("td", { class: "num" }, d.attempts), el("td", {}, time(d.deadAt)),
    el("td", {},
      button("Replay", () => act(`Dead letter ${d.messageId} replayed.`, `Deliver ${d.messageId} to ${d.group} again?`,
        () => svc(d.service, `admin/dlq/${encodeURIComponent(d.messageId)}/replay`, { method: "POST" })), "secondary"),
      " ",
      button("Purge", () => act(`Dead letter ${d.messageId} purged.`, `Delete ${d.messageId} for good? It cannot be replayed afterwards.`,
        () => svc(d.service, `admin/dlq/${encodeURIComponent(d.messageId)}`, { method: "DELETE" })), "danger"))));
  const selected = () => [...document.querySelectorAll("[data-select]:checked")].map(c => ({ id: c.dataset.select, service: c.dataset.service }));
  return [el("h1", {}, `Dead letters (${letters.length})`),
    el("p", {}, button("Replay selected", () => {
      const chosen = selected();
      if (!chosen.length) { say("Select the dead letters to replay first."); return; }
      act(`${chosen.length} dead letters replayed.`, `Deliver the ${chosen.length} selected dead letters again?`,
        async () => { for (const c of chosen) await svc(c.service, `admin/dlq/${encodeURIComponent(c.id)}/replay`, { method: "POST" }); });
    })),
    table(["", "message", "group", "topic", "keys", "error", { label: "attempts", num: true }, "dead at", "actions"], rows), detail];
}

async function stock() {
  const products = await svc("stock", "api/stock");
  return [el("h1", {}, "Stock"),
    table(["product", { label: "available", num: true }, { label: "frozen", num: true }, { label: "sold", num: true }, "change"],
      products.map(p => {
        const input = el("input", { type: "number", min: "0", value: p.available, "aria-label": `available units of ${p.productId}`, class: "units" });
        return el("tr", { "data-product": p.productId }, el("td", {}, p.productId), el("td", { class: "num" }, num(p.available)),
          el("td", { class: "num" }, num(p.frozen)), el("td", { class: "num" }, num(p.sold)),
          el("td", {}, input, " ", button("Set available", () => {
            const n = Number(input.value);
            if (!Number.isInteger(n) || n < 0) { say("Available units must be a whole number, 0 or more."); return; }
            act(`Product ${p.productId}: ${n} available.`, `Set product ${p.productId}'s available units to ${n}?`,
              () => svc("stock", `api/admin/stock/${p.productId}`, { method: "PUT", body: { available: n } }));
          })));
      }))];
}

// ---- routing ----
// Each route is a generation: a page that finishes after the user moved on is dropped, not
// drawn over the page they moved to.
const LIVE = new Set(["overview", "topics"]);
function stopPolling() { if (state.timer) { clearTimeout(state.timer); state.timer = null; } }
async function render(page, gen) {
  const nodes = await page();
  if (gen === state.gen) show(...nodes);
}
async function route() {
  if (!state.session) return;
  stopPolling();
  const gen = ++state.gen;
  const [path, query] = (location.hash.slice(1) || "/overview").split("?");
  const parts = path.split("/").filter(Boolean);
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.getAttribute("href") === `#/${parts[0]}`);
  const page = parts[0] === "orders" && parts[1] ? () => timeline(decodeURIComponent(parts[1]))
    : parts[0] === "orders" ? () => orders(query || "")
    : parts[0] === "topics" ? topics
    : parts[0] === "dlq" ? deadLetters
    : parts[0] === "stock" ? stock
    : overview;
  try {
    await render(page, gen);
  } catch (e) {
    if (gen === state.gen) say(e.message);
  }
  if (LIVE.has(parts[0] || "overview")) {
    const again = async () => {
      if (gen !== state.gen) return;
      try { await render(page, gen); } catch (e) { if (gen === state.gen) say(e.message); }
      if (gen === state.gen) state.timer = setTimeout(again, 2000);
    };
    if (gen === state.gen) state.timer = setTimeout(again, 2000);
  }
}
window.addEventListener("hashchange", () => { say(""); route(); });
(async () => {
  try {
    const session = await api("/console/session");
    if (!session.role) { signedOut(); return; }
    state.session = session;
    await start();
  } catch (e) {
    signedOut();
  }
})();
