// Live dashboard: one Server-Sent Events stream of plant snapshots, rendered into plain DOM.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const cards = new Map(); // line id → its <section>

function el(tag, attrs = {}, text = "") {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
}

function clock(ts) {
  return ts ? new Date(ts * 1000).toLocaleTimeString([], { hour12: false }) : "—";
}

function ago(ts, now) {
  if (!ts) return "never";
  const s = Math.max(0, now - ts);
  if (s < 90) return `${Math.round(s)}s ago`;
  if (s < 5400) return `${Math.round(s / 60)}m ago`;
  return `${(s / 3600).toFixed(1)}h ago`;
}

function ms(seconds) {
  return seconds == null ? "—" : `${Math.round(seconds * 1000)} ms`;
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function sparkline(svg, points) {
  const line = svg.querySelector("polyline");
  if (points.length < 2) { line.setAttribute("points", ""); return; }
  const values = points.map((p) => p[1]);
  const max = Math.max(...values, 0.001) * 1.25; // headroom: a steady latency sits mid-chart
  const step = 200 / (points.length - 1);
  line.setAttribute("points", values
    .map((v, i) => `${(i * step).toFixed(1)},${(38 - (v / max) * 34).toFixed(1)}`)
    .join(" "));
}

function lineCard(line) {
  let card = cards.get(line.id);
  if (!card) {
    card = $("#line-tpl").content.firstElementChild.cloneNode(true);
    card.dataset.line = line.id;
    $("#lines").appendChild(card);
    cards.set(line.id, card);
  }
  return card;
}

function renderCameras(card, cameras, now) {
  const list = $(".cameras", card);
  list.replaceChildren(...cameras.map((c) => {
    const li = el("li", { class: `state-${c.state}`, "data-camera": c.id,
                          title: c.reason || c.state });
    li.append(el("span", { class: "dot" }), el("strong", {}, c.id), el("span", {}, c.state),
      el("span", { class: "muted" },
        `${c.judged_fps.toFixed(1)} fps · last ${ago(c.last_verdict_at, now)}`));
    return li;
  }));
}

function renderEpisodes(card, episodes) {
  $(".stopped", card).hidden = episodes.length === 0;
  $(".episodes", card).replaceChildren(...episodes.map((e) =>
    el("li", {}, `Stopped at ${clock(e.since)}${e.camera_id ? " by " + e.camera_id : ""}: ` +
      (e.reason || "stop-line workflow") + ` (episode ${e.episode_id.slice(0, 8)})`)));
}

function renderGallery(card, items) {
  const gallery = $(".gallery", card);
  const key = items.map((i) => i.verdict_id).join(",");
  $(".gallery-empty", card).hidden = items.length > 0;
  if (gallery.dataset.key === key) return; // keep loaded images: no flicker
  gallery.dataset.key = key;
  gallery.replaceChildren(...items.map((item) => {
    const shot = el("button", { class: `shot sev-${item.severity || "none"}`,
                                "data-verdict": item.verdict_id, type: "button" });
    const img = el("img", { alt: `${item.classes.join(", ")} on ${item.camera_id}`,
                            src: `/evidence/${encodeURIComponent(item.verdict_id)}.jpg` });
    img.addEventListener("error", () => { img.alt = "evidence expired"; });
    const cap = el("div", { class: "cap" });
    cap.append(el("span", { class: "cls" }, item.classes.join(", ") || item.rule), el("br"),
      document.createTextNode(`${item.camera_id} #${item.seq} · ${clock(item.at)}`));
    shot.append(img, cap);
    shot.addEventListener("click", () => openDetails(item.verdict_id));
    return shot;
  }));
}

function renderLine(line, now) {
  const card = lineCard(line);
  const name = $(".line-name", card);
  if (!name.dataset.set) {
    name.textContent = line.name;
    if (line.name !== line.id) name.append(el("small", {}, line.id));
    name.dataset.set = "1";
  }
  setText($(".count-pass", card), String(line.counts.PASS));
  setText($(".count-fail", card), String(line.counts.FAIL));
  setText($(".count-fault", card), String(line.counts.FAULT));
  setText($(".yield", card), line.yield == null ? "—" : `${line.yield.toFixed(1)}%`);
  setText($(".line-model", card), line.model ? `model ${line.model}` : "");
  sparkline($(".spark", card), line.latency.points);
  setText($(".latency-text", card),
    `last ${ms(line.latency.last)} · p50 ${ms(line.latency.p50)} · p95 ${ms(line.latency.p95)}`);
  renderEpisodes(card, line.episodes);
  const sh = line.shadow;
  $(".shadow", card).hidden = !sh;
  if (sh) {
    setText($(".shadow", card), `shadow ${sh.model}: ${sh.compared} frames compared, agreement ` +
      (sh.agreement == null ? "—" : `${(100 * sh.agreement).toFixed(1)}%`) +
      `, new FAILs ${sh.new_fails}, missed FAILs ${sh.missed_fails}`);
  }
  $(".drift", card).replaceChildren(...(line.drift || []).map((d) =>
    el("li", {}, `DRIFT on ${d.camera_id}: ${d.statistic} ` +
      (d.current_mean == null ? "" : `${d.reference_mean} → ${d.current_mean} `) +
      `(PSI ${d.psi}, ${d.model}, since ${clock(d.since)})`)));
  renderCameras(card, line.cameras, now);
  const mix = Object.entries(line.defects).map(([cls, n]) => `${cls} ${n}`).join(" · ");
  setText($(".defect-mix", card), mix ? `(${mix})` : "");
  renderGallery(card, line.gallery);
}

function renderActions(actions) {
  $("#no-actions").hidden = actions.length > 0;
  $("#actions tbody").replaceChildren(...actions.slice(0, 15).map((a) => {
    const tr = el("tr");
    tr.append(el("td", {}, clock(a.at)), el("td", {}, a.line_id + (a.camera_id ? "/" + a.camera_id : "")),
      el("td", {}, `${a.workflow} (${a.kind})`),
      el("td", { class: `outcome-${a.outcome}` }, a.outcome), el("td", {}, a.detail));
    return tr;
  }));
}

function renderUnknown(unknown, now) {
  // events from lines/cameras not in the config: shown apart, never as a plant line
  const panel = $("#unknown");
  panel.hidden = !unknown || !unknown.events;
  if (panel.hidden) return;
  const c = unknown.counts;
  setText($("#unknown-summary"), `${unknown.events} events · PASS ${c.PASS} · FAIL ${c.FAIL} · ` +
    `FAULT ${c.FAULT}` + (unknown.not_listed ? ` · ${unknown.not_listed} from sources not listed` : ""));
  $("#unknown-sources tbody").replaceChildren(...unknown.sources.map((s) => {
    const tr = el("tr", { "data-line": s.line_id, "data-camera": s.id });
    tr.append(el("td", {}, s.line_id), el("td", {}, s.id || "—"), el("td", {}, s.state),
      el("td", {}, String(s.counts.PASS)), el("td", {}, String(s.counts.FAIL)),
      el("td", {}, String(s.counts.FAULT)), el("td", {}, ago(s.last_verdict_at, now)));
    return tr;
  }));
}

function render(snap) {
  const now = snap.generated_at;
  setText($("#plant"), snap.plant);
  setText($("#since"), snap.since ? `since ${new Date(snap.since * 1000).toLocaleString()}` : "");
  const lag = snap.lag || {};
  setText($("#lag"), lag.total == null ? "" : `detect lag: ${lag.total} frames`);
  if (snap.kafka_ok === false) status("broker unreachable", "conn-down");
  for (const line of snap.lines) renderLine(line, now);
  renderUnknown(snap.unknown_sources, now);
  renderActions(snap.actions);
  document.body.dataset.version = String(snap.version);
}

// The unknown-defect channel's line in the details: the highest part score against the
// threshold, and what the line's rule made of it ("" when the verdict has no report).
function anomalySummary(v) {
  const a = v && v.anomaly;
  if (!a) return "";
  const top = a.parts.reduce((m, p) => Math.max(m, p.score), 0);
  const outcome = !a.flagged ? "within" : a.action === "fail" ? "over: FAIL" : "over: review";
  return `Unknown-defect score ${a.parts.length ? top.toFixed(2) : "—"} ` +
    `(threshold ${a.threshold.toFixed(2)}, ${a.parts.length} part(s) scored` +
    (a.skipped ? `, ${a.skipped} at the frame edge` : "") + `): ${outcome}`;
}

async function openDetails(verdictId) {
  const dialog = $("#details");
  const img = `/evidence/${encodeURIComponent(verdictId)}.jpg`;
  const raw = `/api/verdicts/${encodeURIComponent(verdictId)}`;
  $("#details-title").textContent = `Verdict ${verdictId}`;
  $("#details-img").src = img;
  $("#details-full").href = img;
  $("#details-raw").href = raw;
  $("#details-json").textContent = "loading…";
  const anomaly = $("#details-anomaly");
  anomaly.hidden = true;
  if (!dialog.open) dialog.showModal();
  try {
    const resp = await fetch(raw);
    const body = resp.ok ? await resp.json() : null;
    $("#details-json").textContent = body ? JSON.stringify(body, null, 2)
                                          : `${resp.status}: ${await resp.text()}`;
    anomaly.textContent = anomalySummary(body);
    anomaly.hidden = !anomaly.textContent;
  } catch (err) {
    $("#details-json").textContent = String(err);
  }
}

function status(text, cls) {
  const c = $("#conn");
  c.textContent = text;
  c.className = `conn ${cls}`;
}

// ------------------------------------------------------------------ trends (from the lake)

const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#2f5fd0", "#c2410c", "#15803d", "#7c3aed", "#0e7490", "#be185d", "#4d7c0f", "#a16207"];

function svg(tag, attrs = {}, text = "") {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text) node.textContent = text;
  return node;
}

function pct(v, digits = 1) {
  return v == null ? "—" : `${Number(v).toFixed(digits)}%`;
}

function utc(ts, bucket) {
  const iso = new Date(ts * 1000).toISOString();
  return bucket === "day" ? iso.slice(0, 10) : `${iso.slice(5, 10)} ${iso.slice(11, 16)}`;
}

function row(cells, attrs = {}) {
  const tr = el("tr", attrs);
  for (const c of cells) tr.append(el("td", {}, c == null ? "—" : String(c)));
  return tr;
}

function renderTrendChart(t, lines) {
  const chart = $("#trends-chart");
  const W = 640, H = 200, L = 40, R = 10, T = 10, B = 24;
  const x0 = Date.parse(t.since) / 1000, x1 = Date.parse(t.until) / 1000;
  const pts = t.yield.filter((r) => r.yield_pct != null);
  const lo = Math.max(0, Math.floor((Math.min(100, ...pts.map((r) => r.yield_pct)) - 1) / 5) * 5);
  const x = (s) => L + ((s - x0) / Math.max(1, x1 - x0)) * (W - L - R);
  const y = (v) => T + ((100 - v) / Math.max(1, 100 - lo)) * (H - T - B);
  const nodes = [];
  for (const v of [lo, (lo + 100) / 2, 100]) {
    nodes.push(svg("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }),
      svg("text", { x: 2, y: y(v) + 3 }, `${v}%`));
  }
  nodes.push(svg("text", { x: L, y: H - 6 }, utc(x0, t.bucket) + " UTC"),
    svg("text", { x: W - R, y: H - 6, "text-anchor": "end" }, utc(x1, t.bucket) + " UTC"));
  const legend = [];
  lines.forEach((line, i) => {
    const color = PALETTE[i % PALETTE.length];
    const mine = pts.filter((r) => r.line === line);
    if (!mine.length) return;
    const g = svg("g", { "data-line": line, stroke: color });
    // a bucket is drawn at its middle: an hour at hh:30, a day at noon
    const half = t.bucket === "day" ? 43200 : 1800;
    g.append(svg("polyline", { stroke: color,
      points: mine.map((r) => `${x(r.at_s + half).toFixed(1)},${y(r.yield_pct).toFixed(1)}`).join(" ") }));
    for (const r of mine) {
      const c = svg("circle", { cx: x(r.at_s + half).toFixed(1), cy: y(r.yield_pct).toFixed(1), r: 3,
        fill: color, class: "point", "data-at": r.at, "data-yield": r.yield_pct,
        "data-verdicts": r.verdicts });
      c.append(svg("title", {}, `${line} ${r.at} UTC: yield ${pct(r.yield_pct, 2)} ` +
        `(${r.pass} PASS, ${r.fail} FAIL, ${r.fault} FAULT)`));
      g.append(c);
    }
    nodes.push(g);
    const li = el("li", { "data-line": line });
    const sw = el("span", { class: "swatch" });
    sw.style.background = color; // CSSOM, not an inline style attribute: the CSP allows it
    li.append(sw, document.createTextNode(line));
    legend.push(li);
  });
  chart.replaceChildren(...nodes);
  $("#trends-legend").replaceChildren(...legend);
}

function renderTrends(t) {
  const none = $("#trends-none");
  $("#trends-body").hidden = !t.available;
  none.hidden = !!t.available;
  document.body.dataset.trends = t.available ? "lake" : "none";
  if (!t.available) {
    setText(none, `No lake: ${t.reason || "not available"}`);
    return;
  }
  setText($("#trends-window"), `from the lake · ${t.since.slice(0, 16).replace("T", " ")} → ` +
    `${t.until.slice(0, 16).replace("T", " ")} UTC · ${t.verdicts} verdicts`);
  setText($("#trends-bucket"), `per ${t.bucket}`);
  const lines = [...t.lines];
  for (const r of t.yield) if (!lines.includes(r.line)) lines.push(r.line);
  renderTrendChart(t, lines);
  $("#trends-yield tbody").replaceChildren(...lines.flatMap((line) => {
    const mine = t.yield.filter((r) => r.line === line);
    if (!mine.length) return [];
    const sum = (k) => mine.reduce((a, r) => a + r[k], 0);
    const p = sum("pass"), f = sum("fail");
    return [row([line, sum("verdicts"), p, f, sum("fault"),
      p + f ? pct((100 * p) / (p + f), 2) : null,
      p + f ? Math.round((1e6 * f) / (p + f)) : null], { "data-line": line })];
  }));
  $("#pareto-empty").hidden = t.pareto.length > 0;
  $("#trends-pareto tbody").replaceChildren(...t.pareto.map((r) =>
    row([r.class, r.findings, r.frames, pct(r.share_pct, 2), pct(r.cumulative_pct, 2)],
      { "data-class": r.class })));
  $("#shifts-none").hidden = t.shifts != null;
  $("#trends-shifts").hidden = t.shifts == null;
  $("#trends-shifts tbody").replaceChildren(...(t.shifts || []).map((r) =>
    row([r.shift, r.line, r.verdicts, r.pass, r.fail, r.fault, pct(r.yield_pct, 2), r.defect_ppm],
      { "data-shift": r.shift, "data-line": r.line })));
}

async function loadTrends() {
  try {
    const resp = await fetch("/api/trends");
    if (resp.ok) renderTrends(await resp.json());
  } catch (err) { /* next round */ }
}

async function start() {
  try {
    const resp = await fetch("/api/snapshot");
    if (resp.status === 401) {
      status("unauthorized: open /?token=…", "conn-down");
      return;
    }
    if (resp.ok) render(await resp.json());
  } catch (err) { /* the stream below retries */ }
  loadTrends();
  setInterval(loadTrends, 60000); // the server caches them too: the lake is read rarely
  const source = new EventSource("/api/stream");
  source.addEventListener("snapshot", (e) => {
    const snap = JSON.parse(e.data);
    if (snap.kafka_ok !== false) status("live", "conn-live");
    render(snap);
  });
  source.addEventListener("error", () => status("reconnecting…", "conn-down"));
}

start();
