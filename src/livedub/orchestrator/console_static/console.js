// livedub live console: renders GET /v1/console/events (server-sent events) into the table.
// Rows are built from the JSON generically: a field the server adds (e.g. `language`) shows up
// without a change here. No framework, no build step.
"use strict";
(() => {
  const tbody = document.querySelector("#streams tbody");
  const status = document.getElementById("status");
  const result = document.getElementById("result");
  const notice = document.getElementById("notice");
  const state = { doc: null, renders: 0, actions: [] };
  window.livedubConsole = state; // read by the browser test

  const el = (tag, attrs = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  };
  const fmtS = (s) => {
    if (s === null || s === undefined) return "–";
    const t = Math.floor(s), h = Math.floor(t / 3600), m = Math.floor((t % 3600) / 60), sec = t % 60;
    return (h ? `${h}h ` : "") + (h || m ? `${m}m ` : "") + `${sec}s`;
  };
  const num = (v, digits, unit) => (v === null || v === undefined ? "–" : `${Number(v).toFixed(digits)}${unit}`);

  // `language`: the worker's own key (GET /v1/streams `language`); none: the stream's only worker.
  async function act(streamId, language, action, button) {
    button.disabled = true;
    const who = language ? `${streamId}/${language}` : streamId;
    const query = language ? `?language=${encodeURIComponent(language)}` : "";
    try {
      const resp = await fetch(`/v1/streams/${encodeURIComponent(streamId)}/actions/${action}${query}`, {
        method: "POST", credentials: "same-origin", headers: { "X-Livedub-Console": "1" },
      });
      const body = await resp.json().catch(() => ({}));
      state.actions.push({ streamId, language, action, status: resp.status, body });
      result.textContent = resp.ok
        ? `${who}: ${action} → ${body.result}`
        : `${who}: ${action} refused (${resp.status} ${body.message || body.error || ""})`;
      if (resp.status === 401) location.href = "/login";
    } finally {
      button.disabled = false;
    }
  }

  function cell(field, content, cls) {
    const td = el("td", { "data-field": field });
    if (cls) td.className = cls;
    td.append(content);
    return td;
  }

  function row(r, actionsAllowed) {
    const f = r.figures || {};
    const w = r.worker || {};
    const seg = f.segments || {};
    const mode = r.original_only ? "original_only" : "dubbed";
    const reasons = Object.entries(f.fallback_reasons || {}).map(([k, v]) => `${k} ${v}`).join(", ");
    const lines = el("div", { class: "lines" },
      el("div", { "data-field": "last_transcript", title: w.last_transcript || "" }, w.last_transcript || "–"),
      el("div", { class: "tr", "data-field": "last_translation", title: w.last_translation || "" }, w.last_translation || "–"));
    const links = el("div");
    for (const [name, url] of Object.entries(r.links || {})) {
      links.append(el("div", {}, el("a", { href: url, "data-link": name, target: "_blank", rel: "noopener" }, name === "hls" ? "HLS preview" : url)));
    }
    const buttons = el("div");
    const add = (action, label) => {
      const b = el("button", { type: "button", "data-action": action }, label);
      b.disabled = !actionsAllowed;
      b.addEventListener("click", () => act(r.stream_id, r.key_language, action, b));
      buttons.append(b);
    };
    add(r.original_only ? "dubbed" : "original_only", r.original_only ? "Dub again" : "Original only");
    add("restart", "Restart");
    add("stop", "Stop");
    const tr = el("tr", { "data-stream-id": r.stream_id, "data-language": r.language || "" },
      cell("stream_id", r.stream_id),
      cell("language", r.language || "–"),
      cell("state", el("span", { class: `state state-${r.state}` }, r.state)),
      cell("uptime_s", fmtS(r.uptime_s), "num"),
      cell("mode", mode === "original_only" ? "original only" : "dubbed", `mode-${mode}`),
      cell("segments", `${seg.dubbed ?? "–"} / ${seg.original ?? "–"}`, "num"),
      cell("fallback_reasons", reasons || "–", "reasons"),
      cell("breaker", f.breaker || "–"),
      cell("inflight", f.inflight ?? "–", "num"),
      cell("output_delay", num(f.output_delay_ms === undefined ? null : f.output_delay_ms / 1000, 1, " s"), "num"),
      cell("av_sync", num(f.av_sync_delta_ms, 1, " ms"), "num"),
      cell("lines", lines),
      cell("links", links),
      cell("actions", buttons));
    tr.dataset.pid = r.pid ?? "";
    tr.dataset.dubbed = seg.dubbed ?? "";
    tr.dataset.original = seg.original ?? "";
    return tr;
  }

  function render(doc) {
    state.doc = doc;
    state.renders += 1;
    tbody.replaceChildren(...doc.streams.map((r) => row(r, doc.actions_allowed)));
    document.getElementById("empty").hidden = doc.streams.length > 0;
    document.getElementById("logout").hidden = doc.auth !== "token";
    notice.hidden = doc.actions_allowed;
    notice.textContent = "Actions are off: the orchestrator has no ORCH_API_TOKEN (set one, or --insecure-open-api for local experiments).";
    status.className = "";
    status.textContent = `${doc.count} stream(s), updated ${new Date(doc.generated_at * 1000).toLocaleTimeString()}`;
  }

  const source = new EventSource("/v1/console/events");
  source.addEventListener("rows", (ev) => render(JSON.parse(ev.data)));
  source.onerror = () => {
    status.className = "down";
    status.textContent = "disconnected: retrying…";
    // a 401 (signed out, token changed) ends the stream for good: go to the sign-in form
    if (source.readyState === EventSource.CLOSED) location.href = "/login";
  };
})();
