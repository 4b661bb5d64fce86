// The recsys playground: one user's list, why each item is there, real events, and the next list.
// Plain browser JavaScript, no build step, no dependency; every call goes to this API (relative URLs).
"use strict";

(() => {
  const KEY_STORE = "recsys.playground.key";
  const STAGES = ["lookup", "precomputed", "user_state", "candidates", "features", "ranking", "postprocess"];
  const ACTIONS = [
    { name: "view", label: "View", path: "interactions" },
    { name: "click", label: "Click", path: "interactions" },
    { name: "like", label: "Like", path: "interactions" },
    { name: "not_interested", label: "Not interested", path: "feedback", negative: true },
  ];
  const WHY = {
    similar_users: "people with a similar history chose it",
    similar_items: "close to items in the history",
    popular_in_category: "popular in the user's categories",
    popular: "popular overall",
    trending: "trending now",
    session: "close to what was just viewed or clicked in this session",
    content: "shares tags with the history",
  };
  const METRICS_EVERY_MS = 4000;

  const state = { config: null, key: "", user: "", panels: [], previous: new Map(), titles: new Map(), busy: false };
  const $ = (id) => document.getElementById(id);

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else if (name === "dataset") Object.assign(node.dataset, value);
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  class ApiError extends Error {
    constructor(status, body) {
      const detail = body && body.detail;
      const text = Array.isArray(detail) ? detail.map((d) => `${d.field}: ${d.reason}`).join("; ")
        : (detail || (typeof body === "string" ? body : "") || `HTTP ${status}`);
      super(text);
      this.status = status;
    }
  }

  async function api(path, { method = "GET", params = null, body = null } = {}) {
    const url = new URL(path, window.location.href);
    for (const [name, value] of Object.entries(params || {})) {
      if (value !== null && value !== undefined && value !== "") url.searchParams.set(name, value);
    }
    const headers = { Accept: "application/json" };
    if (state.key && state.config) headers[state.config.key_header] = state.key;
    if (body) headers["Content-Type"] = "application/json";
    const started = performance.now();
    const response = await fetch(url, { method, headers, body: body ? JSON.stringify(body) : undefined });
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = text; }
    if (!response.ok) throw new ApiError(response.status, data);
    return { data, headers: response.headers, ms: performance.now() - started };
  }

  // -- status ---------------------------------------------------------------------------------------------------
  let toastTimer = 0;
  function say(text, error = false) {
    const box = $("status");
    box.textContent = text;
    box.classList.toggle("error", error);
    box.classList.add("shown");
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => box.classList.remove("shown"), error ? 8000 : 4500);
  }

  function problem(error, what) {
    const text = error instanceof ApiError ? `${what}: ${error.message} (HTTP ${error.status})` : `${what}: ${error.message || error}`;
    say(text, true);
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) $("key-box").open = true;
  }

  // -- formatting -------------------------------------------------------------------------------------------------
  const ms = (value) => (value === null || value === undefined) ? "–" : value < 10 ? `${value.toFixed(1)} ms` : `${Math.round(value)} ms`;
  const pct = (value) => (value === null || value === undefined) ? "–" : `${(value * 100).toFixed(value < 0.1 ? 1 : 0)}%`;
  const score = (value) => Math.abs(value) >= 100 ? value.toFixed(0) : value.toPrecision(3);

  function ago(iso) {
    const then = new Date(iso);
    const seconds = (Date.now() - then.getTime()) / 1000;
    if (seconds < 0) return then.toISOString().slice(0, 10);
    if (seconds < 60) return `${Math.max(1, Math.round(seconds))} s ago`;
    if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
    if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
    return then.toISOString().slice(0, 10);
  }

  function value(v) {
    if (v === null || v === undefined) return "null";
    if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toPrecision(4);
    if (Array.isArray(v)) return v.length > 8 ? `[${v.slice(0, 8).map(value).join(", ")}, … ${v.length} values]` : `[${v.map(value).join(", ")}]`;
    return String(v);
  }

  const titleOf = (id) => (state.titles.get(id) || {}).title || `item ${id}`;
  const degradationClass = (level) => level === "full" ? "good" : level === "cold_start" ? "info" : "warn";

  // -- the user ------------------------------------------------------------------------------------------------------
  function renderUser(user) {
    const body = $("profile-body");
    const profile = user.profile || {};
    const facts = [
      ["id", el("span", { class: "mono", text: user.user_id })],
      ["catalog", user.known ? "known" : "not in the catalog (a new user)"],
      ["bucket", String(user.bucket)],
      ["assigned", el("span", { class: "mono", text: user.assigned_variant })],
    ];
    if (profile.preferred_categories && profile.preferred_categories.length) facts.push(["onboarding", profile.preferred_categories.join(", ")]);
    if (profile.total_interactions !== undefined && profile.total_interactions !== null) facts.push(["events", String(profile.total_interactions)]);
    if (profile.last_active_at) facts.push(["last active", ago(profile.last_active_at)]);
    if (user.unavailable.length) facts.push(["unavailable", user.unavailable.join(", ")]);
    const list = el("dl", { class: "facts" }, facts.map(([name, v]) => [el("dt", { text: name }), el("dd", {}, v)]));
    body.replaceWith(el("div", { id: "profile-body" }, list));

    const history = $("history");
    history.replaceChildren(...user.history.map((event) => el("li", { dataset: { item: event.item_id } },
      el("span", { class: "when", title: event.at, text: ago(event.at) }),
      el("span", { class: "what", text: event.title || `item ${event.item_id}` }),
      el("span", { class: "how" },
        el("b", { class: `action-${event.action}`, text: event.action.replace("_", " ") }),
        event.session ? el("span", { class: "chip info", text: "session", title: event.stored
          ? "in the live session log (the session aggregator) and the interaction store"
          : "in the live session log (the session aggregator); not in the interaction store (yet)" }) : null,
        (event.genres || []).slice(0, 3).map((g) => el("span", { class: "chip genre", text: g }))))));
    $("history-count").textContent = user.history.length ? `· newest ${user.history.length}` : "";
    $("history-empty").hidden = user.history.length > 0;
  }

  // -- an answer -----------------------------------------------------------------------------------------------------
  function stageBar(stageMs) {
    const total = stageMs.total || 0;
    const parts = STAGES.filter((s) => stageMs[s] !== undefined).map((s) => [s, stageMs[s]]);
    const known = parts.reduce((sum, [, v]) => sum + v, 0);
    if (total - known > 0.05) parts.push(["other", total - known]);
    const scale = Math.max(total, known) || 1;
    const bar = el("div", { class: "stagebar", role: "img", "aria-label": `stage times: ${parts.map(([s, v]) => `${s} ${ms(v)}`).join(", ")}` },
      parts.map(([stage, v]) => {
        const span = el("span", { class: `s-${stage}`, title: `${stage} ${ms(v)}` });
        span.style.width = `${(100 * v) / scale}%`;
        return span;
      }));
    const legend = el("div", { class: "legend" }, parts.map(([stage, v]) =>
      el("span", {}, el("i", { class: `s-${stage}` }), `${stage.replace("_", " ")} ${ms(v)}`)));
    return el("div", { class: "stages" }, bar, legend);
  }

  function ranks(answer) {
    return new Map(answer.items.map((item) => [item.item_id, item.rank]));
  }

  function renderPanel(index, panel, others) {
    const answer = panel.answer;
    const before = state.previous.get(panel.slot);
    const forced = answer.variant.startsWith("forced:");
    const chip = (kind, title, ...content) => el("span", { class: `chip ${kind}`.trim(), title }, ...content);
    const head = el("header", { class: "answer-head" },
      el("h2", { id: `panel-${index}-title` }, index === 0 ? "Variant" : "Compared with",
        el("span", { class: "mono", text: answer.variant }),
        forced ? chip("warn", "forced by the playground (variant=): logged as such, left out of experiment reports",
          "forced") : null),
      el("div", { class: "provenance" },
        chip("", "the answer's model version (the ranker, else the candidate artifact)",
          "model ", el("b", { text: answer.model_version })),
        answer.candidates_version ? chip("", "the candidate artifact loaded (two-tower model, FAISS index)",
          "candidates ", el("b", { text: answer.candidates_version })) : null,
        chip(degradationClass(answer.degradation), "the rung of the degradation ladder",
          answer.degradation.replace("_", " ")),
        chip(answer.cached ? "good" : "", "answered from the precomputed layer (layer 1)",
          answer.cached ? "cached" : "computed"),
        chip("", "server time of the whole pipeline; round trip in brackets",
          `${ms(answer.stage_ms.total)} (${ms(panel.ms)})`),
        chip("mono", `request_id ${answer.request_id}: sent back with every event`, answer.request_id.slice(0, 8))),
      stageBar(answer.stage_ms || {}));
    const other = others.length ? others[0] : null;
    const list = el("ol", { class: "items", "aria-label": `${answer.items.length} recommended items` },
      answer.items.map((item, position) => renderItem(index, position, item, before, other)));
    const body = answer.items.length ? list : el("p", { class: "empty", text: "No item." });
    return el("section", { class: "card answer", dataset: { panel: String(index), variant: answer.variant, requestId: answer.request_id },
      "aria-labelledby": `panel-${index}-title` }, head, body);
  }

  function movement(item, before) {
    if (!before) return null;
    const was = before.get(item.item_id);
    if (was === undefined) return el("span", { class: "move new", title: "not in the previous list", text: "new" });
    if (was > item.rank) return el("span", { class: "move up", title: `was #${was}`, text: `▲${was - item.rank}` });
    if (was < item.rank) return el("span", { class: "move down", title: `was #${was}`, text: `▼${item.rank - was}` });
    return null;
  }

  function renderItem(index, position, item, before, other) {
    const info = state.titles.get(item.item_id) || {};
    const moved = movement(item, before);
    const label = titleOf(item.item_id);
    const buttons = ACTIONS.map((action) => el("button", {
      type: "button", class: action.negative ? "neg" : null, dataset: { action: action.name },
      "aria-label": `${action.label}: ${label}`,
      onclick: (event) => act(index, position, item, action, event.currentTarget),
    }, action.label));
    const featuresOn = state.config && state.config.features;
    const more = el("button", {
      type: "button", class: "more", dataset: { action: "features" }, "aria-expanded": "false",
      "aria-label": `Ranker features of ${label}`, disabled: !featuresOn,
      title: featuresOn ? "the ranker's input for this item, read from the online store" : "this server ranks without features",
      onclick: (event) => toggleFeatures(item, event.currentTarget),
    }, "Features");
    const elsewhere = other ? el("span", { class: "chip other", title: `rank of this item in the other list (${other.name})`,
      text: other.ranks.has(item.item_id) ? `#${other.ranks.get(item.item_id)} in ${other.name}` : `not in ${other.name}` }) : null;
    return el("li", {
      class: moved && moved.classList.contains("new") ? "item fresh" : "item",
      dataset: { item: item.item_id, source: item.source, explanation: item.explanation },
    },
    el("div", { class: "rank", "aria-label": `rank ${item.rank}`, text: String(item.rank) }),
    el("div", { class: "body" },
      el("div", { class: "title" },
        el("span", { class: "name", text: label }), el("span", { class: "id", text: `#${item.item_id}` }), moved,
        el("span", { class: "score", title: "the score the list is ordered by", text: score(item.score) })),
      el("div", { class: "meta" },
        el("span", { class: "chip accent", title: "the candidate source that contributed most" },
          el("i", { text: "source" }), item.source),
        el("span", { class: "chip info", title: `explanation type: ${WHY[item.explanation] || item.explanation}` },
          el("i", { text: "why" }), item.explanation),
        (info.genres || []).slice(0, 4).map((g) => el("span", { class: "chip genre", text: g })),
        elsewhere),
      el("div", { class: "actions" }, buttons, more)));
  }

  async function toggleFeatures(item, button) {
    const body = button.closest(".body");
    const open = body.querySelector(".features");
    if (open) {
      open.remove();
      button.setAttribute("aria-expanded", "false");
      return;
    }
    button.disabled = true;
    try {
      const { data } = await api("playground/api/features", { params: { user_id: state.user, item_id: item.item_id } });
      const counts = {};
      data.features.forEach((f) => { counts[f.status] = (counts[f.status] || 0) + 1; });
      const table = el("table", {},
        el("caption", {}, `${data.service}: `, Object.entries(counts).map(([s, c]) => `${c} ${s}`).join(" · "),
          " (missing and stale values are replaced by their defaults)"),
        el("thead", {}, el("tr", {}, ["feature", "view", "value", "status", "default"].map((h) => el("th", { scope: "col", text: h })))),
        el("tbody", {}, data.features.map((f) => el("tr", {},
          el("td", { title: `${f.view}__${f.feature}`, text: f.feature }),
          el("td", { class: "muted", text: f.view }),
          el("td", { class: "value", text: value(f.value) }),
          el("td", {}, el("span", { class: `chip ${f.status === "present" ? "good" : f.status === "stale" ? "warn" : "bad"}`, text: f.status })),
          el("td", { class: "value muted", text: value(f.default) })))));
      body.append(el("div", { class: "features", tabindex: "0", role: "region", "aria-label": `features of ${titleOf(item.item_id)}` }, table));
      button.setAttribute("aria-expanded", "true");
    } catch (error) {
      problem(error, "features");
    } finally {
      button.disabled = false;
    }
  }

  // -- loading -----------------------------------------------------------------------------------------------------
  function wanted() {
    const slots = [$("variant").value];
    if ($("compare").value) slots.push($("compare").value);
    return slots;
  }

  async function recommend(user, variant) {
    const { data, ms: took } = await api("recommendations", { params: { user_id: user, n: $("n").value, debug: "true", variant } });
    return { slot: `${user}|${variant}`, variant, answer: data, ms: took };
  }

  async function titles(ids) {
    const missing = [...new Set(ids)].filter((id) => !state.titles.has(id));
    for (let start = 0; start < missing.length; start += 100) {
      const { data } = await api("playground/api/items", { params: { ids: missing.slice(start, start + 100).join(",") } });
      for (const [id, info] of Object.entries(data)) state.titles.set(id, info);
    }
  }

  async function load({ focus = null } = {}) {
    const user = $("user").value.trim();
    if (!user) { $("user").focus(); return null; }
    if (user !== state.user) state.previous.clear();
    state.user = user;
    remember();
    state.busy = true;
    $("show").disabled = true;
    try {
      const [profile, ...panels] = await Promise.all([
        api("playground/api/user", { params: { user_id: user } }), ...wanted().map((v) => recommend(user, v))]);
      await titles(panels.flatMap((p) => p.answer.items.map((i) => i.item_id)));
      renderUser(profile.data);
      const others = panels.map((p) => ({ name: p.answer.variant, ranks: ranks(p.answer) }));
      const sections = panels.map((p, i) => renderPanel(i, p, others.filter((_, j) => j !== i)));
      $("answers").replaceChildren(...sections);
      panels.forEach((p) => state.previous.set(p.slot, ranks(p.answer)));
      state.panels = panels;
      document.title = `${user} · recsys playground`;
      metrics();
      if (focus) restoreFocus(focus);
      return panels;
    } catch (error) {
      problem(error, "loading");
      return null;
    } finally {
      state.busy = false;
      $("show").disabled = false;
    }
  }

  function restoreFocus({ panel, position, action }) {
    const items = document.querySelectorAll(`[data-panel="${panel}"] .item`);
    const row = items[Math.min(position, items.length - 1)];
    const target = row && row.querySelector(`button[data-action="${action}"]`);
    if (target) target.focus();
  }

  async function act(index, position, item, action, button) {
    if (state.busy) return;
    const panel = state.panels[index];
    button.disabled = true;
    const body = { user_id: state.user, item_id: item.item_id, request_id: panel.answer.request_id };
    if (action.path === "feedback") body.kind = action.name;
    else Object.assign(body, { action_type: action.name, context: { page: "playground" } });
    try {
      const { data } = await api(action.path, { method: "POST", body });
      const before = ranks(panel.answer);
      const after = await load({ focus: { panel: index, position, action: action.name } });
      if (!after) return;
      const now = after[index].answer.items;
      const entered = now.filter((i) => !before.has(i.item_id)).length;
      const gone = before.has(item.item_id) && !now.some((i) => i.item_id === item.item_id);
      say(`${action.label} on “${titleOf(item.item_id)}” sent (event ${data.event_id.slice(0, 8)}); `
        + `next list: ${entered} new item${entered === 1 ? "" : "s"}${gone ? ", this one left" : ""}.`);
    } catch (error) {
      problem(error, action.label);
      button.disabled = false;
    }
  }

  // -- metrics -----------------------------------------------------------------------------------------------------
  let metricsFailed = false;
  async function metrics() {
    if (!state.key || document.hidden || metricsFailed) return;
    try {
      const { data } = await api("playground/api/metrics");
      const recent = data.recent && data.recent.requests && data.recent_seconds >= 5 ? data.recent : null;
      const shown = recent || data.total;
      $("metrics-window").textContent = recent ? `last ${Math.round(data.recent_seconds)} s` : "since start";
      $("m-requests").textContent = data.total.requests.toLocaleString();
      $("m-rate").textContent = recent ? `${recent.per_second.toFixed(1)}/s now` : "since start";
      $("m-p99").textContent = ms(shown.p99_ms);
      $("m-p50").textContent = `p50 ${ms(shown.p50_ms)}`;
      const rates = shown.cache_hit_rate || {};
      $("m-cache").textContent = pct(rates.precomputed);
      $("m-cache-more").textContent = ["layer 1", ...["embedding", "feature"].filter((l) => rates[l] !== undefined && rates[l] !== null)
        .map((l) => `${l} ${pct(rates[l])}`)].join(" · ");
      $("m-cache-more").title = "layer 1: precomputed lists; embedding: user vectors (layer 2); feature: user feature rows (layer 3)";
      $("m-degraded").textContent = pct(shown.degraded_share);
      $("m-levels").textContent = Object.entries(shown.levels).map(([l, c]) => `${l.replace("_", " ")} ${c}`).join(" · ");
    } catch (error) {
      metricsFailed = true;
      problem(error, "metrics");
    }
  }

  // -- set-up ------------------------------------------------------------------------------------------------------
  function remember() {
    const params = new URLSearchParams();
    if (state.user) params.set("user", state.user);
    if ($("variant").value) params.set("variant", $("variant").value);
    if ($("compare").value) params.set("compare", $("compare").value);
    if ($("n").value !== "10") params.set("n", $("n").value);
    const query = params.toString();
    window.history.replaceState(null, "", query ? `?${query}` : window.location.pathname);
  }

  function fillVariants(config) {
    for (const select of [$("variant"), $("compare")]) {
      for (const variant of config.variants) {
        const extra = variant.buckets ? ` (buckets ${variant.buckets[0]}–${variant.buckets[1]})` : "";
        select.append(el("option", { value: variant.name, text: `${variant.name}${extra}` }));
      }
    }
  }

  async function randomUser() {
    try {
      const { data } = await api("playground/api/random-user");
      $("user").value = data.user_id;
      await load();
    } catch (error) {
      problem(error, "random user");
    }
  }

  async function start() {
    const query = new URLSearchParams(window.location.search);
    try {
      state.config = (await api("playground/api/config")).data;
    } catch (error) {
      problem(error, "configuration");
      return;
    }
    fillVariants(state.config);
    state.key = window.localStorage.getItem(KEY_STORE) || state.config.suggested_key || "";
    $("key").value = state.key;
    if (!state.key) {
      $("key-box").open = true;
      say("Enter a playground key (serving.playground_api_keys) under “API key”.", true);
    }
    $("key").addEventListener("change", () => {
      state.key = $("key").value.trim();
      window.localStorage.setItem(KEY_STORE, state.key);
      metricsFailed = false;
      metrics();
    });
    for (const [name, id] of [["variant", "variant"], ["compare", "compare"], ["n", "n"]]) {
      const given = query.get(name);
      if (given && [...$(id).options].some((o) => o.value === given)) $(id).value = given;
    }
    for (const id of ["variant", "compare", "n"]) {
      $(id).addEventListener("change", () => { if (state.user) load(); else remember(); });
    }
    $("pick").addEventListener("submit", (event) => { event.preventDefault(); load(); });
    $("random").addEventListener("click", randomUser);
    document.addEventListener("keydown", (event) => {
      const typing = /^(INPUT|SELECT|TEXTAREA)$/.test(document.activeElement.tagName);
      if (event.key === "/" && !typing) { event.preventDefault(); $("user").focus(); $("user").select(); }
    });
    metrics();
    setInterval(metrics, METRICS_EVERY_MS);
    if (query.get("user")) {
      $("user").value = query.get("user");
      await load();
    } else {
      $("user").focus();
    }
  }

  document.addEventListener("DOMContentLoaded", start);
})();
