/* beeaudio dashboard: every hive's state, a swarm-score timeline per hive, and the alert list.
 *
 * Plain JavaScript, no build step and no CDN: the collector serves this file as it is, on a network that may
 * have no internet. It uses only the public REST API (/api/v1/...) with a read (or admin) token, which comes
 * from the URL fragment (#token=..., never sent to the server in a request line or a Referer) or from the
 * form, and is kept in localStorage. Hive names and alert details come from users and devices: they are
 * inserted as text nodes, never as HTML.
 */
(function () {
  "use strict";

  const API = "api/v1";
  const POLL_MS = 5000;
  // History is a rollup query per hive: refresh it when the hive reports something new, and at least this often.
  const HISTORY_MAX_AGE_MS = 60000;
  const HISTORY_MIN_AGE_MS = 15000;
  const HISTORY_PARALLEL = 4;
  const TOKEN_KEY = "beeaudio.token";
  const RANGE_KEY = "beeaudio.range";
  const RANGES = {
    "6h": { seconds: 6 * 3600, bucket: 300 },
    "24h": { seconds: 24 * 3600, bucket: 900 },
    "7d": { seconds: 7 * 86400, bucket: 3600 },
  };
  const STATE_ORDER = { swarm: 0, offline: 1, unknown: 2, normal: 3 };
  const STATE_TEXT = { swarm: "Swarming", offline: "Offline", unknown: "Unknown", normal: "Normal" };
  const ALERT_TEXT = {
    swarm_started: "Swarm started",
    swarm_ended: "Swarm ended",
    hive_offline: "Hive offline",
    hive_back: "Hive back online",
    microphone_silent: "Microphone silent",
    microphone_back: "Microphone signal back",
  };
  const SVG_NS = "http://www.w3.org/2000/svg";

  const app = {
    token: null,
    range: "6h",
    hives: [],
    alerts: [],
    history: new Map(), // hive_id -> {data, fetchedAt, lastSeen, range}
    lastUpdate: null,
    timer: null,
    busy: false,
  };

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- token

  function readFragmentToken() {
    const fragment = new URLSearchParams(window.location.hash.replace(/^#/, ""));
    const token = fragment.get("token");
    if (token) {
      localStorage.setItem(TOKEN_KEY, token);
      // Take the secret out of the address bar (and out of bookmarks and screenshots of it).
      history.replaceState(null, "", window.location.pathname + window.location.search);
    }
    return token || localStorage.getItem(TOKEN_KEY);
  }

  function showLogin(message) {
    stopPolling();
    $("login").hidden = false;
    $("main").hidden = true;
    $("forget-token").hidden = true;
    $("login-message").textContent = message;
    $("token-input").focus();
  }

  function forgetToken() {
    localStorage.removeItem(TOKEN_KEY);
    app.token = null;
    showLogin("Paste a read token (or the admin token) for this collector.");
  }

  // ---------------------------------------------------------------- API

  class AuthError extends Error {}

  async function api(path, params) {
    const url = new URL(API + path, document.baseURI);
    if (params) {
      for (const [key, value] of Object.entries(params)) {
        if (value !== null && value !== undefined) url.searchParams.set(key, value);
      }
    }
    const response = await fetch(url, {
      headers: { Authorization: "Bearer " + app.token, Accept: "application/json" },
      cache: "no-store",
    });
    if (response.status === 401 || response.status === 403) {
      throw new AuthError("The collector refused this token (" + response.status + ").");
    }
    if (!response.ok) {
      let detail = "";
      try {
        detail = (await response.json()).detail || "";
      } catch (_) {
        /* not JSON */
      }
      throw new Error(path + ": HTTP " + response.status + (detail ? " — " + JSON.stringify(detail) : ""));
    }
    return response.json();
  }

  function asList(payload, key) {
    if (Array.isArray(payload)) return payload;
    if (payload && Array.isArray(payload[key])) return payload[key];
    if (payload && Array.isArray(payload.items)) return payload.items;
    return [];
  }

  // ---------------------------------------------------------------- polling

  async function refresh() {
    if (app.busy || !app.token) return;
    app.busy = true;
    try {
      const range = RANGES[app.range];
      const from = new Date(Date.now() - range.seconds * 1000);
      const [hives, alerts] = await Promise.all([
        api("/hives"),
        api("/alerts", { since: from.toISOString(), limit: 1000 }),
      ]);
      app.hives = asList(hives, "hives");
      app.alerts = asList(alerts, "alerts");
      await refreshHistories(from, range);
      app.lastUpdate = new Date();
      setBanner(null);
      $("login").hidden = true;
      $("main").hidden = false;
      $("forget-token").hidden = false;
      render();
    } catch (error) {
      if (error instanceof AuthError) {
        localStorage.removeItem(TOKEN_KEY);
        app.token = null;
        showLogin(error.message + " Paste a read token or the admin token.");
      } else {
        setBanner("Cannot reach the collector: " + error.message + " — retrying every " + POLL_MS / 1000 + " s.");
        renderFooter();
      }
    } finally {
      app.busy = false;
    }
  }

  async function refreshHistories(from, range) {
    const now = Date.now();
    const due = app.hives.filter((hive) => {
      const cached = app.history.get(hive.hive_id);
      if (!cached || cached.range !== app.range) return true;
      const age = now - cached.fetchedAt;
      return age > HISTORY_MAX_AGE_MS || (cached.lastSeen !== hive.last_seen && age > HISTORY_MIN_AGE_MS);
    });
    const to = new Date(now + 60000);
    // A few requests at a time: an apiary of hundreds of hives must not flood the collector.
    const queue = [...due];
    const worker = async () => {
      for (let hive = queue.shift(); hive; hive = queue.shift()) {
        const data = await api("/hives/" + encodeURIComponent(hive.hive_id) + "/history", {
          from: from.toISOString(),
          to: to.toISOString(),
          bucket: range.bucket,
        });
        app.history.set(hive.hive_id, { data, fetchedAt: now, lastSeen: hive.last_seen, range: app.range });
      }
    };
    await Promise.all(Array.from({ length: Math.min(HISTORY_PARALLEL, queue.length) }, worker));
  }

  function startPolling() {
    stopPolling();
    refresh();
    app.timer = window.setInterval(refresh, POLL_MS);
  }

  function stopPolling() {
    if (app.timer !== null) window.clearInterval(app.timer);
    app.timer = null;
  }

  function setBanner(message) {
    const banner = $("banner");
    banner.hidden = !message;
    banner.textContent = message || "";
  }

  // ---------------------------------------------------------------- formatting

  function parseTime(value) {
    if (!value) return null;
    const date = new Date(value);
    return Number.isNaN(date.getTime()) ? null : date;
  }

  function ago(date) {
    if (!date) return "never";
    const seconds = Math.round((Date.now() - date.getTime()) / 1000);
    if (seconds < 0) return "just now";
    if (seconds < 60) return seconds + " s ago";
    if (seconds < 3600) return Math.round(seconds / 60) + " min ago";
    if (seconds < 86400) {
      const h = Math.floor(seconds / 3600);
      const m = Math.round((seconds % 3600) / 60);
      return h + " h" + (m ? " " + m + " min" : "") + " ago";
    }
    return Math.round(seconds / 86400) + " d ago";
  }

  function clock(date, withDay) {
    if (!date) return "—";
    const options = { hour: "2-digit", minute: "2-digit" };
    if (withDay) {
      options.weekday = "short";
    }
    return date.toLocaleString(undefined, options);
  }

  function percent(value) {
    return typeof value === "number" && Number.isFinite(value) ? Math.round(value * 100) + " %" : "—";
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function svg(tag, attributes) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attributes || {})) node.setAttribute(key, value);
    return node;
  }

  function stateOf(hive) {
    return STATE_TEXT[hive.state] ? hive.state : "unknown";
  }

  function hiveName(hiveId) {
    const hive = app.hives.find((h) => h.hive_id === hiveId);
    return hive ? hive.name || hive.hive_id : hiveId;
  }

  // ---------------------------------------------------------------- rendering

  function render() {
    renderSummary();
    renderHives();
    renderAlerts();
    renderFooter();
  }

  function renderSummary() {
    const summary = $("summary");
    summary.replaceChildren();
    const counts = { swarm: 0, offline: 0, unknown: 0, normal: 0 };
    for (const hive of app.hives) counts[stateOf(hive)] += 1;
    for (const state of ["swarm", "offline", "unknown", "normal"]) {
      if (!counts[state] && state !== "normal") continue;
      const chip = el("span", "chip chip-" + state);
      chip.append(el("strong", null, String(counts[state])), " " + STATE_TEXT[state].toLowerCase());
      summary.append(chip);
    }
  }

  function renderHives() {
    const container = $("hives");
    const hives = [...app.hives].sort(
      (a, b) =>
        STATE_ORDER[stateOf(a)] - STATE_ORDER[stateOf(b)] ||
        String(a.name || a.hive_id).localeCompare(String(b.name || b.hive_id), undefined, { numeric: true }),
    );
    $("no-hives").hidden = hives.length > 0;
    container.replaceChildren(...hives.map(hiveCard));
    for (const hive of hives) {
      const chart = container.querySelector('[data-chart="' + CSS.escape(hive.hive_id) + '"]');
      if (chart) drawChart(chart, hive);
    }
  }

  function hiveCard(hive) {
    const state = stateOf(hive);
    const card = el("article", "hive hive-" + state);
    card.dataset.hiveId = hive.hive_id;
    card.dataset.state = state;

    const head = el("div", "hive-head");
    const title = el("div", "hive-title");
    title.append(el("h3", null, hive.name || hive.hive_id));
    if (hive.name && hive.name !== hive.hive_id) title.append(el("span", "hive-id", hive.hive_id));
    const badge = el("span", "badge badge-" + state, STATE_TEXT[state]);
    badge.setAttribute("role", "status");
    head.append(title, badge);
    card.append(head);

    const since = parseTime(hive.since);
    const lastSeen = parseTime(hive.last_seen);
    const facts = el("dl", "facts");
    const fact = (label, value, extra, title) => {
      const item = el("div", "fact" + (extra ? " " + extra : ""));
      const dd = el("dd", null, value);
      if (title) dd.title = title;
      item.append(el("dt", null, label), dd);
      facts.append(item);
    };
    fact("Swarm score", percent(hive.swarm_score), "fact-score");
    fact("Confidence", percent(hive.confidence));
    fact("Last seen", ago(lastSeen), state === "offline" ? "fact-alert" : "", lastSeen ? lastSeen.toLocaleString() : "");
    fact(
      STATE_TEXT[state] + " since",
      since ? clock(since, Date.now() - since.getTime() > 86400000) : "—",
      "",
      since ? since.toLocaleString() + " (" + ago(since) + ")" : "",
    );
    fact("Model", hive.model_version || "—", "fact-wide", hive.model_version || "");
    card.append(facts);

    // An unknown hive always says why (a silent microphone, unfamiliar audio, too few readings ...).
    if (state === "unknown" && hive.reason_text) {
      const reason = el("p", "reason reason-" + (hive.reason || "other"), hive.reason_text);
      reason.dataset.reason = hive.reason || "";
      card.append(reason);
    }

    const caption = el("div", "chart-caption");
    caption.append(
      el("span", "legend legend-score", "swarm score"),
      el("span", "legend legend-swarm", "swarming"),
      el("span", "legend legend-offline", "offline"),
    );
    const silentHere =
      hive.reason === "no_signal" ||
      app.alerts.some((a) => a.hive_id === hive.hive_id && a.kind === "microphone_silent");
    if (silentHere) caption.append(el("span", "legend legend-silent", "no signal"));
    caption.append(el("span", "legend-range", "last " + app.range.replace("h", " h").replace("d", " d")));
    const chart = el("div", "chart");
    chart.dataset.chart = hive.hive_id;
    card.append(caption, chart);

    const counts = hive.counts && typeof hive.counts === "object" ? Object.entries(hive.counts) : [];
    const left = notCounted(hive.window);
    if (counts.length || left.length) {
      const line = el("p", "counts");
      line.append("Latest windows: ");
      counts.forEach(([label, n], i) => {
        if (i) line.append(" · ");
        line.append(el("span", "count-" + label, n + " " + label));
      });
      // Windows the state did not count (no signal, poor signal, unfamiliar), so the numbers add up.
      if (left.length) {
        if (counts.length) line.append(" · ");
        line.append(el("span", "count-excluded", "not counted: " + left.join(", ")));
      }
      card.append(line);
    }
    return card;
  }

  function notCounted(window) {
    if (!window || typeof window !== "object") return [];
    const parts = [];
    if (window.no_signal) parts.push(window.no_signal + " without signal");
    if (window.poor_signal) parts.push(window.poor_signal + " poor signal");
    if (window.unfamiliar) parts.push(window.unfamiliar + " unfamiliar");
    return parts;
  }

  function stateIntervals(hive, start, end) {
    // Swarm and offline periods from this hive's alerts; the current state closes the picture up to now.
    const intervals = [];
    const open = { swarm: null, offline: null, silent: null };
    const closes = { swarm_ended: "swarm", hive_back: "offline", microphone_back: "silent" };
    const alerts = app.alerts
      .filter((a) => a.hive_id === hive.hive_id)
      .map((a) => ({ kind: a.kind, at: parseTime(a.at) }))
      .filter((a) => a.at)
      .sort((a, b) => a.at - b.at);
    for (const alert of alerts) {
      const t = alert.at.getTime();
      if (alert.kind === "swarm_started") open.swarm = t;
      else if (alert.kind === "hive_offline") open.offline = t;
      else if (alert.kind === "microphone_silent") open.silent = t;
      else if (closes[alert.kind]) {
        const kind = closes[alert.kind];
        intervals.push({ kind, from: open[kind] === null ? start : open[kind], to: t });
        open[kind] = null;
      }
    }
    // "silent" is not a state of its own: an unknown hive whose reason is no_signal.
    const state = hive.state === "unknown" && hive.reason === "no_signal" ? "silent" : stateOf(hive);
    const since = parseTime(hive.since);
    for (const kind of ["swarm", "offline", "silent"]) {
      if (open[kind] !== null) intervals.push({ kind, from: open[kind], to: state === kind ? end : open[kind] });
      else if (state === kind) intervals.push({ kind, from: since ? since.getTime() : start, to: end });
    }
    return intervals
      .map((i) => ({ kind: i.kind, from: Math.max(i.from, start), to: Math.min(i.to, end) }))
      .filter((i) => i.to > i.from);
  }

  function thresholds(params) {
    // Draw the hysteresis thresholds when the collector reports them, whatever their exact names.
    const lines = [];
    if (!params || typeof params !== "object") return lines;
    for (const [key, value] of Object.entries(params)) {
      if (typeof value !== "number" || value <= 0 || value >= 1) continue;
      if (/enter|exit|leave|threshold/i.test(key) && !/count|min_|seconds|window/i.test(key)) {
        lines.push({ key, value });
      }
    }
    return lines.slice(0, 2);
  }

  function timeTicks(start, end) {
    const hour = 3600e3;
    const steps = [1, 2, 3, 6, 12, 24];
    const stepHours = steps.find((s) => (end - start) / (s * hour) <= 6) || 24;
    // Ticks on round local clock hours (local midnight for days).
    const t = new Date(start);
    t.setMinutes(0, 0, 0);
    do t.setHours(t.getHours() + 1);
    while (t.getHours() % stepHours !== 0);
    const ticks = [];
    for (; t.getTime() < end; t.setHours(t.getHours() + stepHours)) ticks.push(t.getTime());
    return { ticks, withDay: stepHours >= 24 };
  }

  function drawChart(container, hive) {
    const range = RANGES[app.range];
    const end = Date.now();
    const start = end - range.seconds * 1000;
    const width = Math.max(260, Math.round(container.clientWidth || 320));
    const height = 128;
    const pad = { left: 36, right: 8, top: 8, bottom: 20 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const x = (t) => pad.left + ((t - start) / (end - start)) * plotW;
    const y = (v) => pad.top + (1 - v) * plotH;

    const root = svg("svg", {
      width,
      height,
      viewBox: "0 0 " + width + " " + height,
      class: "timeline",
      role: "img",
      "aria-label": "Swarm score and state of " + (hive.name || hive.hive_id) + " over the last " + app.range,
    });

    for (const interval of stateIntervals(hive, start, end)) {
      root.append(
        svg("rect", {
          class: "band band-" + interval.kind,
          x: x(interval.from),
          y: pad.top,
          width: Math.max(1, x(interval.to) - x(interval.from)),
          height: plotH,
        }),
      );
    }

    for (const v of [0, 0.5, 1]) {
      root.append(svg("line", { class: "grid", x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v) }));
      const label = svg("text", { class: "axis", x: pad.left - 4, y: y(v) + 3, "text-anchor": "end" });
      label.textContent = v === 0.5 ? "50%" : v === 1 ? "100%" : "0";
      root.append(label);
    }
    for (const line of thresholds(hive.params)) {
      root.append(
        svg("line", { class: "threshold", x1: pad.left, x2: width - pad.right, y1: y(line.value), y2: y(line.value) }),
      );
    }
    const { ticks, withDay } = timeTicks(start, end);
    for (const t of ticks) {
      root.append(svg("line", { class: "tick", x1: x(t), x2: x(t), y1: pad.top + plotH, y2: pad.top + plotH + 3 }));
      // Keep the labels inside the chart: the last one may sit right at its edge.
      const anchor = x(t) > width - 24 ? "end" : x(t) < pad.left + 16 ? "start" : "middle";
      const label = svg("text", { class: "axis", x: x(t), y: height - 5, "text-anchor": anchor });
      label.textContent = withDay
        ? new Date(t).toLocaleDateString(undefined, { weekday: "short", day: "numeric" })
        : new Date(t).toLocaleTimeString(undefined, { hour: "numeric" });
      root.append(label);
    }

    const cached = app.history.get(hive.hive_id);
    const bucketSeconds = (cached && cached.data && cached.data.bucket_seconds) || range.bucket;
    const buckets = asList(cached && cached.data, "buckets");
    const points = buckets
      .map((b) => {
        const t = parseTime(b.start);
        // The score of the windows that count (a silent or unfamiliar stretch is a gap, not a calm hive);
        // collectors that predate the evidence split only have the mean of every window.
        let score = "mean_evidence_swarm_score" in b ? b.mean_evidence_swarm_score : b.mean_swarm_score;
        if (typeof score !== "number" && !("mean_evidence_swarm_score" in b) && b.mean_probabilities) {
          score = b.mean_probabilities.swarm;
        }
        return t && typeof score === "number" ? { t: t.getTime() + (bucketSeconds * 1000) / 2, v: score, b } : null;
      })
      .filter((p) => p && p.t >= start && p.t <= end)
      .sort((a, b) => a.t - b.t);

    if (points.length === 0) {
      const empty = svg("text", { class: "nodata", x: pad.left + plotW / 2, y: pad.top + plotH / 2 + 4, "text-anchor": "middle" });
      empty.textContent = (buckets.length ? "no usable readings in the last " : "no readings in the last ") + app.range;
      root.append(empty);
    } else {
      // Connect readings unless the hive was silent for a while: a gap in the line is a gap in the data.
      const maxGap = Math.max(3 * bucketSeconds * 1000, 30 * 60 * 1000);
      const runs = [];
      let run = [];
      for (const p of points) {
        if (run.length && p.t - run[run.length - 1].t > maxGap) {
          runs.push(run);
          run = [];
        }
        run.push(p);
      }
      runs.push(run);
      for (const r of runs) {
        const line = r.map((p, i) => (i ? "L" : "M") + x(p.t).toFixed(1) + "," + y(p.v).toFixed(1)).join("");
        const area = line + "L" + x(r[r.length - 1].t).toFixed(1) + "," + y(0) + "L" + x(r[0].t).toFixed(1) + "," + y(0) + "Z";
        root.append(svg("path", { class: "score-area", d: area }));
        root.append(svg("path", { class: "score-line", d: line }));
        if (r.length === 1) root.append(svg("circle", { class: "score-dot", cx: x(r[0].t), cy: y(r[0].v), r: 2.5 }));
      }
      addHover(root, points, { x, y, pad, plotH, width, bucketSeconds });
    }
    container.replaceChildren(root);
  }

  function addHover(root, points, geometry) {
    const { x, y, pad, plotH, width } = geometry;
    const guide = svg("line", { class: "hover-line", y1: pad.top, y2: pad.top + plotH, visibility: "hidden" });
    const dot = svg("circle", { class: "hover-dot", r: 3.5, visibility: "hidden" });
    const label = svg("text", { class: "hover-label", y: pad.top + 10, visibility: "hidden" });
    const catcher = svg("rect", {
      class: "hover-catcher",
      x: pad.left,
      y: pad.top,
      width: width - pad.left - pad.right,
      height: plotH,
    });
    root.append(guide, dot, label, catcher);
    const show = (event) => {
      const box = root.getBoundingClientRect();
      const px = event.clientX - box.left;
      let best = points[0];
      for (const p of points) if (Math.abs(x(p.t) - px) < Math.abs(x(best.t) - px)) best = p;
      const bx = x(best.t);
      guide.setAttribute("x1", bx);
      guide.setAttribute("x2", bx);
      dot.setAttribute("cx", bx);
      dot.setAttribute("cy", y(best.v));
      const right = bx > width / 2;
      label.setAttribute("x", right ? bx - 6 : bx + 6);
      label.setAttribute("text-anchor", right ? "end" : "start");
      const n = best.b.counts ? Object.values(best.b.counts).reduce((s, c) => s + Number(c || 0), 0) : null;
      label.textContent = clock(new Date(best.t)) + " · swarm " + percent(best.v) + (n ? " · " + n + " windows" : "");
      for (const node of [guide, dot, label]) node.setAttribute("visibility", "visible");
    };
    const hide = () => {
      for (const node of [guide, dot, label]) node.setAttribute("visibility", "hidden");
    };
    catcher.addEventListener("pointermove", show);
    catcher.addEventListener("pointerdown", show);
    catcher.addEventListener("pointerleave", hide);
  }

  function renderAlerts() {
    const list = $("alerts");
    const alerts = [...app.alerts]
      .map((a) => ({ ...a, date: parseTime(a.at) }))
      .sort((a, b) => (b.date ? b.date.getTime() : 0) - (a.date ? a.date.getTime() : 0))
      .slice(0, 50);
    $("no-alerts").hidden = alerts.length > 0;
    list.replaceChildren(
      ...alerts.map((alert) => {
        const item = el("li", "alert alert-" + alert.kind);
        const what = el("div", "alert-what");
        what.append(el("span", "alert-kind", ALERT_TEXT[alert.kind] || alert.kind), el("span", "alert-hive", hiveName(alert.hive_id)));
        const when = el("time", "alert-when", clock(alert.date, true) + " · " + ago(alert.date));
        if (alert.date) when.dateTime = alert.date.toISOString();
        item.append(what, when);
        const details = describeDetails(alert);
        if (details) item.append(el("div", "alert-details", details));
        return item;
      }),
    );
  }

  function describeDetails(alert) {
    // Say what a beekeeper needs (how sure, how long silent); the full record stays in the API.
    const details = alert.details && typeof alert.details === "object" ? alert.details : {};
    if (alert.kind === "swarm_started" || alert.kind === "swarm_ended") {
      return typeof details.score === "number" ? "smoothed swarm score " + percent(details.score) : "";
    }
    if (alert.kind === "hive_offline" && typeof details.offline_after_seconds === "number") {
      return "no readings for more than " + Math.round(details.offline_after_seconds / 60) + " min";
    }
    if (alert.kind === "microphone_silent" && typeof details.no_signal === "number") {
      return details.no_signal + " of the last " + details.readings + " readings had no signal: check the microphone";
    }
    return "";
  }

  function renderFooter() {
    $("updated").textContent = app.lastUpdate
      ? "Updated " + app.lastUpdate.toLocaleTimeString() + " · refreshes every " + POLL_MS / 1000 + " s"
      : "connecting…";
  }

  function renderRangeButtons() {
    for (const button of $("range").querySelectorAll("button")) {
      button.setAttribute("aria-pressed", String(button.dataset.range === app.range));
    }
  }

  // ---------------------------------------------------------------- start

  async function showVersion() {
    try {
      const response = await fetch(new URL(API + "/health", document.baseURI), { cache: "no-store" });
      const health = await response.json();
      if (health.version) $("version").textContent = "collector " + health.version;
    } catch (_) {
      /* the next poll reports the problem */
    }
  }

  function init() {
    const savedRange = localStorage.getItem(RANGE_KEY);
    if (savedRange && RANGES[savedRange]) app.range = savedRange;
    renderRangeButtons();
    $("range").addEventListener("click", (event) => {
      const button = event.target.closest("button[data-range]");
      if (!button || button.dataset.range === app.range) return;
      app.range = button.dataset.range;
      localStorage.setItem(RANGE_KEY, app.range);
      renderRangeButtons();
      refresh();
    });
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("token-input").value.trim();
      if (!token) return;
      localStorage.setItem(TOKEN_KEY, token);
      app.token = token;
      $("token-input").value = "";
      startPolling();
    });
    $("forget-token").addEventListener("click", forgetToken);
    window.addEventListener("hashchange", () => {
      const token = readFragmentToken();
      if (token && token !== app.token) {
        app.token = token;
        startPolling();
      }
    });
    let resizeTimer = null;
    window.addEventListener("resize", () => {
      window.clearTimeout(resizeTimer);
      resizeTimer = window.setTimeout(() => app.lastUpdate && renderHives(), 150);
    });
    showVersion();
    app.token = readFragmentToken();
    if (app.token) startPolling();
    else showLogin("Paste a read token (or the admin token) for this collector.");
  }

  init();
})();
