// Stoflow Jobs ops dashboard: one page, views chosen by the URL fragment (#/overview, #/jobs?…,
// #/jobs/42, …), data from /v1/dashboard/* and /v1/*, live updates from /v1/events (SSE).
// Plain JS, no dependencies, embedded in the API binary.
"use strict";

// Kinds and states come from the server (jobs::kinds::ALL_KINDS, JobState), written into the page.
const { kinds: KINDS, states: STATES } = JSON.parse(document.getElementById("config").textContent);
const view = document.getElementById("view");
let current = { name: "", onChange: null, token: 0 };

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
function fmtTime(t) { return t ? new Date(t).toLocaleString() : ""; }
function fmtAge(s) {
  if (s == null) return "";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}
function fmtMs(ms) { return ms == null ? "" : fmtAge(ms / 1000); }
// At most two decimals, none trailing (a pace of 9.2/s, not 9.200000000000001/s).
function fmtNum(n) { return n == null ? "" : String(Math.round(n * 100) / 100); }
// A time, or a dash where there is none yet.
function fmtTimeOrDash(t) { return t ? fmtTime(t) : "—"; }
// A failure for people: its class, then its message.
function fmtError(cls, msg) { return `<span class="muted">${esc(cls || "")}</span> ${esc((msg || "").slice(0, 300))}`; }
function stateBadge(s) { return `<span class="state ${esc(s)}" data-state="${esc(s)}">${esc(s)}</span>`; }
function toast(msg) {
  const t = document.getElementById("toast");
  t.textContent = msg; t.style.display = "block";
  clearTimeout(toast.timer); toast.timer = setTimeout(() => { t.style.display = "none"; }, 4000);
}

// ---- sign-in --------------------------------------------------------------------------------
// The dashboard's data needs an ops user's access token (POST /v1/auth/login). Tokens live in
// sessionStorage (gone with the tab); an expired access token is renewed once with the refresh
// token, else the sign-in form comes back.
const session = {
  get access() { return sessionStorage.getItem("stoflow.access"); },
  get refresh() { return sessionStorage.getItem("stoflow.refresh"); },
  save(t) {
    sessionStorage.setItem("stoflow.access", t.access_token);
    sessionStorage.setItem("stoflow.refresh", t.refresh_token);
  },
  clear() { sessionStorage.removeItem("stoflow.access"); sessionStorage.removeItem("stoflow.refresh"); },
};
async function renew() {
  if (!session.refresh) return false;
  const r = await fetch("/v1/auth/refresh", {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ refresh_token: session.refresh }),
  });
  if (!r.ok) { session.clear(); return false; }
  session.save(await r.json());
  return true;
}
function showLogin(message) {
  stopLive();
  document.body.classList.add("signed-out");
  view.innerHTML = `<form id="login" class="login" data-testid="login">
      <h2>Sign in</h2>
      ${message ? `<p class="dead-worker" data-testid="login-error">${esc(message)}</p>` : ""}
      <label>E-mail <input name="email" type="email" autocomplete="username" required data-testid="login-email"></label>
      <label>Password <input name="password" type="password" autocomplete="current-password" required data-testid="login-password"></label>
      <button type="submit" data-testid="login-submit">Sign in</button>
    </form>`;
  document.getElementById("login").onsubmit = async ev => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const r = await fetch("/v1/auth/login", {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ email: f.get("email"), password: f.get("password") }),
    });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) return showLogin(body.detail || `sign-in failed (${r.status})`);
    session.save(body);
    start();
  };
}
function signOut() { session.clear(); showLogin(); }

async function api(path, opts = {}, retried = false) {
  const headers = { "content-type": "application/json", authorization: `Bearer ${session.access}` };
  const r = await fetch(path, { ...opts, headers });
  if (r.status === 401 && !retried && await renew()) return api(path, opts, true);
  const text = await r.text();
  let body; try { body = JSON.parse(text); } catch { body = text; }
  if (!r.ok) {
    const msg = (body && body.detail) || `${r.status} ${r.statusText}`;
    if (r.status === 401 || r.status === 403) {
      session.clear();
      showLogin(r.status === 403 ? `${msg} (signed in as a seller?)` : msg);
    }
    const e = new Error(msg);
    e.status = r.status; throw e;
  }
  return body;
}
const post = (path, body) => api(path, { method: "POST", body: body ? JSON.stringify(body) : undefined });

// ---- live updates ---------------------------------------------------------------------------
// /v1/events read with fetch (EventSource cannot send the bearer token); reconnects after a drop.
let liveAbort = null;
function stopLive() {
  if (liveAbort) liveAbort.abort();
  liveAbort = null;
  const live = document.getElementById("live");
  live.textContent = "offline"; live.className = "live off";
}
async function connectLive() {
  const live = document.getElementById("live");
  stopLive();
  const ctl = new AbortController();
  liveAbort = ctl;
  while (!ctl.signal.aborted) {
    try {
      const r = await fetch("/v1/events", {
        headers: { authorization: `Bearer ${session.access}`, accept: "text/event-stream" },
        signal: ctl.signal,
      });
      if (r.status === 401 && await renew()) continue;
      if (!r.ok) throw new Error(`${r.status}`);
      live.textContent = "live"; live.className = "live on";
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const ev = buf.slice(0, i); buf = buf.slice(i + 2);
          const data = ev.split("\n").filter(l => l.startsWith("data:")).map(l => l.slice(5).trim()).join("\n");
          if (!data) continue;
          let c; try { c = JSON.parse(data); } catch { continue; }
          if (current.onChange) current.onChange(c);
        }
      }
    } catch (e) {
      if (ctl.signal.aborted) return;
    }
    live.textContent = "reconnecting"; live.className = "live off";
    await new Promise(res => setTimeout(res, 1000));
  }
}
// Re-runs `f` at most once per `ms` while changes keep coming.
function debounce(f, ms) {
  let t = null;
  return () => { if (!t) t = setTimeout(() => { t = null; f(); }, ms); };
}

// ---- router ---------------------------------------------------------------------------------
function route() {
  const h = location.hash.replace(/^#\/?/, "") || "overview";
  const [path, query] = h.split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/");
  const name = parts[0];
  document.querySelectorAll("nav a").forEach(a => a.classList.toggle("active", a.dataset.nav === name));
  current = { name, onChange: null, token: current.token + 1 };
  const views = { overview, workers, jobs: parts[1] ? () => jobDetail(parts[1]) : () => jobList(params), marketplaces, audit };
  (views[name] || overview)().catch(e => {
    // 401/403 already brought the sign-in form back.
    if (e.status !== 401 && e.status !== 403) view.innerHTML = `<p class="dead-worker">Error: ${esc(e.message)}</p>`;
  });
}
window.addEventListener("hashchange", route);

// ---- overview -------------------------------------------------------------------------------
async function overview() {
  const token = current.token;
  const render = async () => {
    const o = await api("/v1/dashboard/overview");
    if (token !== current.token) return;
    const rows = o.queues.map(q => {
      const cells = STATES.map(s => `<td class="num"><a data-testid="count-${esc(q.kind)}-${s}" href="#/jobs?kind=${esc(q.kind)}&state=${s}">${q[s]}</a></td>`).join("");
      const btn = q.paused
        ? `<button data-testid="resume-${esc(q.kind)}" data-act="resume" data-kind="${esc(q.kind)}">resume</button>`
        : `<button data-testid="pause-${esc(q.kind)}" data-act="pause" data-kind="${esc(q.kind)}">pause</button>`;
      const est = q.counts_estimated ? ` <span class="muted" title="done/dead/cancelled over 1,000 are estimated from table statistics">≈</span>` : "";
      return `<tr><td><a href="#/jobs?kind=${esc(q.kind)}">${esc(q.kind)}</a>${est}</td>${cells}
        <td class="num">${fmtAge(q.oldest_pending_age_s)}</td>
        <td data-testid="paused-${esc(q.kind)}">${q.paused ? '<span class="state retrying">paused</span>' : ""}</td><td>${btn}</td></tr>`;
    }).join("");
    const pct = o.percentiles.map(p => `<tr><td>${esc(p.kind)}</td><td class="num">${p.runs}</td>
      <td class="num">${fmtMs(p.run_p50_ms)}</td><td class="num">${fmtMs(p.run_p95_ms)}</td><td class="num">${fmtMs(p.run_p99_ms)}</td>
      <td class="num">${fmtMs(p.start_p50_ms)}</td><td class="num">${fmtMs(p.start_p95_ms)}</td><td class="num">${fmtMs(p.start_p99_ms)}</td></tr>`).join("")
      || `<tr><td colspan="8" class="muted">no runs finished in the last hour</td></tr>`;
    view.innerHTML = `
      <h2>Queues <span class="muted">· ${o.workers_live} live worker process(es) · ${fmtTime(o.generated_at)}</span></h2>
      <table data-testid="queues"><tr><th>kind</th>${STATES.map(s => `<th class="num">${s}</th>`).join("")}<th class="num">oldest waiting</th><th></th><th></th></tr>${rows}</table>
      <div class="cards">
        <div class="card"><h3>Throughput, last hour (per minute)</h3>${throughputChart(o.throughput)}</div>
        <div class="card"><h3>Failure rate, last hour</h3>${failureChart(o.throughput)}</div>
      </div>
      <h2>Run time and start latency (last hour)</h2>
      <table data-testid="percentiles"><tr><th>kind</th><th class="num">runs</th><th class="num">run p50</th><th class="num">run p95</th><th class="num">run p99</th>
        <th class="num">start p50</th><th class="num">start p95</th><th class="num">start p99</th></tr>${pct}</table>`;
    view.querySelectorAll("button[data-act]").forEach(b => b.onclick = async () => {
      try { await post(`/v1/queues/${b.dataset.kind}/${b.dataset.act}`); toast(`${b.dataset.kind}: ${b.dataset.act}d`); render(); }
      catch (e) { toast(e.message); }
    });
  };
  await render();
  current.onChange = debounce(() => render().catch(() => {}), 300);
}

// Per-minute buckets of the last hour: done (bars) and dead (red bars on top).
function minutes(points) {
  const now = Date.now(), start = Math.floor(now / 60000) * 60000 - 59 * 60000;
  const done = new Array(60).fill(0), dead = new Array(60).fill(0);
  for (const p of points) {
    const i = Math.floor((new Date(p.minute).getTime() - start) / 60000);
    if (i >= 0 && i < 60) { done[i] += p.done; dead[i] += p.dead; }
  }
  return { done, dead };
}
function throughputChart(points) {
  const { done, dead } = minutes(points);
  const max = Math.max(1, ...done.map((d, i) => d + dead[i]));
  const W = 600, H = 140, bw = W / 60;
  let bars = "";
  for (let i = 0; i < 60; i++) {
    const hd = (done[i] / max) * (H - 20), hx = (dead[i] / max) * (H - 20);
    bars += `<rect x="${i * bw + 1}" y="${H - 14 - hd}" width="${bw - 2}" height="${hd}" fill="#2f5bea"><title>${done[i]} done</title></rect>`;
    bars += `<rect x="${i * bw + 1}" y="${H - 14 - hd - hx}" width="${bw - 2}" height="${hx}" fill="#c4320a"><title>${dead[i]} dead</title></rect>`;
  }
  const total = done.reduce((a, b) => a + b, 0), totalDead = dead.reduce((a, b) => a + b, 0);
  return `<svg viewBox="0 0 ${W} ${H}" width="100%" data-testid="throughput-chart">${bars}
    <text x="0" y="${H - 2}">-60 min</text><text x="${W - 30}" y="${H - 2}">now</text><text x="0" y="10">max ${max}/min</text></svg>
    <div class="legend"><span><i class="sw" style="background:#2f5bea"></i>done ${total}</span><span><i class="sw" style="background:#c4320a"></i>dead ${totalDead}</span></div>`;
}
function failureChart(points) {
  const { done, dead } = minutes(points);
  const W = 600, H = 140;
  const pts = done.map((d, i) => {
    const n = d + dead[i];
    return n ? `${(i + 0.5) * W / 60},${H - 14 - (dead[i] / n) * (H - 24)}` : null;
  }).filter(Boolean);
  const n = done.reduce((a, b) => a + b, 0) + dead.reduce((a, b) => a + b, 0);
  const rate = n ? (100 * dead.reduce((a, b) => a + b, 0) / n).toFixed(1) : "0.0";
  return `<svg viewBox="0 0 ${W} ${H}" width="100%" data-testid="failure-chart">
    <line x1="0" x2="${W}" y1="${H - 14}" y2="${H - 14}" stroke="#e4e7ec"/>
    <polyline fill="none" stroke="#c4320a" stroke-width="2" points="${pts.join(" ")}"/>
    ${pts.map(p => { const [x, y] = p.split(","); return `<circle cx="${x}" cy="${y}" r="2.5" fill="#c4320a"/>`; }).join("")}
    <text x="0" y="10">100%</text><text x="0" y="${H - 2}">-60 min</text><text x="${W - 30}" y="${H - 2}">now</text></svg>
    <div class="legend"><span>dead / finished over the hour: <b>${rate}%</b></span></div>`;
}

// ---- workers --------------------------------------------------------------------------------
async function workers() {
  const token = current.token;
  const render = async () => {
    const w = await api("/v1/dashboard/workers");
    if (token !== current.token) return;
    const rows = w.workers.map(p => `<tr data-testid="worker-row" class="${p.status !== "live" ? "muted" : ""}">
      <td>${esc(p.host)}</td><td class="num">${p.pid}</td><td>${p.kinds.map(esc).join(", ")}</td>
      <td>${Object.entries(p.concurrency || {}).map(([k, v]) => `${esc(k)}: ${esc(v)}`).join(", ")}</td>
      <td class="num" data-testid="in-flight">${p.in_flight}</td><td>${fmtTime(p.heartbeat_at)}</td>
      <td class="${p.status === "dead" ? "dead-worker" : ""}" data-testid="worker-status">${esc(p.status)}</td>
      <td>${p.metrics_url ? `<a href="${esc(p.metrics_url)}">metrics</a>` : ""}</td><td class="muted">${esc(p.id)}</td></tr>`).join("");
    view.innerHTML = `<h2>Worker processes <span class="muted">· dead = no heartbeat for ${w.lease_timeout_ms} ms</span></h2>
      <table data-testid="workers"><tr><th>host</th><th class="num">pid</th><th>kinds</th><th>concurrency</th><th class="num">in flight</th>
      <th>last heartbeat</th><th>status</th><th></th><th>id</th></tr>${rows || '<tr><td colspan="9" class="muted">no worker process has registered</td></tr>'}</table>`;
  };
  await render();
  current.onChange = debounce(() => render().catch(() => {}), 1000);
}

// ---- jobs -----------------------------------------------------------------------------------
function filterQuery(f) {
  const p = new URLSearchParams();
  for (const k of ["kind", "state", "q"]) if (f[k]) p.set(k, f[k]);
  return p;
}
function jobRow(j) {
  const err = j.last_error ? `<span class="muted">${esc(j.last_error.class)}:</span> ${esc(j.last_error.message).slice(0, 160)}` : "";
  return `<tr data-id="${j.id}" data-testid="job-row"><td><a href="#/jobs/${j.id}" data-testid="job-link-${j.id}">#${j.id}</a></td><td>${esc(j.kind)}</td>
    <td data-testid="job-state-${j.id}">${stateBadge(j.state)}</td><td class="num">${j.attempt}/${j.max_attempts}</td>
    <td>${fmtTime(j.created_at)}</td><td><code>${esc(JSON.stringify(j.args)).slice(0, 120)}</code></td><td>${err}</td></tr>`;
}
async function jobList(params) {
  const token = current.token;
  const f = { kind: params.get("kind") || "", state: params.get("state") || "", q: params.get("q") || "" };
  const opt = (list, sel) => `<option value="">any</option>` + list.map(x => `<option ${x === sel ? "selected" : ""}>${x}</option>`).join("");
  view.innerHTML = `<h2>Jobs</h2>
    <form class="filters" id="filters">
      kind <select name="kind" data-testid="filter-kind">${opt(KINDS, f.kind)}</select>
      state <select name="state" data-testid="filter-state">${opt(STATES, f.state)}</select>
      <input name="q" placeholder="id, text in arguments or error, trace id" size="36" value="${esc(f.q)}" data-testid="filter-q">
      <button class="primary">Filter</button>
    </form>
    <div class="bulk">Bulk:
      <select id="bulk-action" data-testid="bulk-action"><option value="retry">retry (dead, cancelled)</option><option value="cancel">cancel (scheduled, pending, retrying)</option></select>
      every job matching this filter
      <button id="bulk-preview" data-testid="bulk-preview">Preview</button>
      <span id="bulk-count" data-testid="bulk-count"></span>
      <button id="bulk-apply" class="danger" data-testid="bulk-apply" disabled>Apply</button>
    </div>
    <table data-testid="jobs"><thead><tr><th>id</th><th>kind</th><th>state</th><th class="num">attempt</th><th>created</th><th>arguments</th><th>last error</th></tr></thead><tbody id="rows"></tbody></table>
    <p><button id="more" style="display:none" data-testid="more">Older jobs</button> <span id="searched" class="muted"></span></p>`;
  document.getElementById("filters").onsubmit = ev => {
    ev.preventDefault();
    const fd = new FormData(ev.target);
    location.hash = "#/jobs?" + filterQuery(Object.fromEntries(fd)).toString();
  };
  let cursor = null;
  const load = async () => {
    const p = filterQuery(f); p.set("limit", "50"); if (cursor) p.set("cursor", cursor);
    const page = await api("/v1/dashboard/jobs?" + p);
    if (token !== current.token) return;
    document.getElementById("rows").insertAdjacentHTML("beforeend", page.jobs.map(jobRow).join(""));
    cursor = page.next_cursor;
    document.getElementById("more").style.display = cursor ? "" : "none";
    document.getElementById("searched").textContent = page.searched_down_to ? `searched down to job #${page.searched_down_to}` : "";
    if (!document.querySelector("#rows tr") && !cursor) document.getElementById("rows").innerHTML = `<tr><td colspan="7" class="muted">no jobs match</td></tr>`;
  };
  document.getElementById("more").onclick = () => load().catch(e => toast(e.message));
  const bulkBody = () => ({ action: document.getElementById("bulk-action").value, kind: f.kind || null, state: f.state || null, q: f.q || null });
  document.getElementById("bulk-action").onchange = () => { document.getElementById("bulk-apply").disabled = true; document.getElementById("bulk-count").textContent = ""; };
  document.getElementById("bulk-preview").onclick = async () => {
    try {
      const r = await post("/v1/dashboard/bulk/preview", bulkBody());
      document.getElementById("bulk-count").textContent = `${r.count} job(s) would change`;
      document.getElementById("bulk-apply").disabled = r.count === 0;
    } catch (e) { toast(e.message); }
  };
  document.getElementById("bulk-apply").onclick = async () => {
    try {
      const r = await post("/v1/dashboard/bulk", bulkBody());
      toast(`${r.changed} job(s) changed`);
      document.getElementById("bulk-apply").disabled = true;
      document.getElementById("bulk-count").textContent = `${r.changed} changed`;
    } catch (e) { toast(e.message); }
  };
  await load();
  // Live: a visible job's state cell follows its changes.
  current.onChange = c => {
    const cell = document.querySelector(`[data-testid="job-state-${c.id}"]`);
    if (cell) cell.innerHTML = stateBadge(c.state);
  };
}

async function jobDetail(id) {
  const token = current.token;
  const render = async () => {
    const d = await api(`/v1/dashboard/jobs/${encodeURIComponent(id)}`);
    if (token !== current.token) return;
    const j = d.job;
    const errors = (j.errors || []).map(e => `<tr data-testid="error-row"><td class="num">${e.attempt}</td><td>${fmtTime(e.at)}</td>
      <td data-testid="error-class">${esc(e.class)}</td><td data-testid="error-message">${esc(e.message)}</td><td class="num">${fmtMs(e.delay_ms)}</td></tr>`).join("")
      || `<tr><td colspan="5" class="muted">no failed attempt</td></tr>`;
    // A permanent failure would fail the same way again: no retry offered for it.
    const canRetry = j.state === "cancelled" || (j.state === "dead" && !(j.last_error && j.last_error.permanent));
    const canCancel = ["scheduled", "pending", "retrying"].includes(j.state);
    view.innerHTML = `<h2>Job #${j.id} · ${esc(j.kind)} · <span data-testid="detail-state">${stateBadge(j.state)}</span></h2>
      <p>${canRetry ? `<button class="primary" id="retry" data-testid="retry">Retry now</button>` : ""}
         ${canCancel ? `<button class="danger" id="cancel" data-testid="cancel">Cancel</button>` : ""}</p>
      <div class="cards">
        <div class="card"><dl>
          <dt>attempt</dt><dd>${j.attempt} of ${j.max_attempts}${j.snoozes ? ` (${j.snoozes} snoozes)` : ""}</dd>
          <dt>priority</dt><dd>${j.priority}</dd>
          <dt>created</dt><dd>${fmtTime(j.created_at)}</dd>
          <dt>last run started</dt><dd>${fmtTime(j.attempted_at)}</dd>
          <dt>finished</dt><dd>${fmtTime(j.finished_at)}</dd>
          <dt>next run</dt><dd>${fmtTime(j.next_run_at)}</dd>
          <dt>waited before run</dt><dd>${fmtMs(d.timings.queued_ms)}</dd>
          <dt>run time</dt><dd>${fmtMs(d.timings.run_ms)}</dd>
          <dt>total</dt><dd>${fmtMs(d.timings.total_ms)}</dd>
          <dt>worker</dt><dd>${esc(j.worker || "")}</dd>
          <dt>idempotency key</dt><dd>${esc(j.idempotency_key || "")}</dd>
          <dt>trace id</dt><dd><code data-testid="trace-id">${esc(d.trace_id || "")}</code></dd>
        </dl></div>
        <div class="card"><h3>Arguments <span class="muted">(secrets redacted)</span></h3><pre data-testid="args">${esc(JSON.stringify(j.args, null, 2))}</pre>
          ${j.result != null ? `<h3>Result</h3><pre>${esc(JSON.stringify(j.result, null, 2))}</pre>` : ""}</div>
      </div>
      <h3>Attempts that failed</h3>
      <table data-testid="errors"><tr><th class="num">attempt</th><th>at</th><th>class</th><th>message</th><th class="num">waited after</th></tr>${errors}</table>
      ${d.listing ? `<h3>Listing</h3><pre data-testid="listing">${esc(JSON.stringify(d.listing, null, 2))}</pre>` : ""}
      ${d.account ? `<h3>Marketplace account</h3><pre data-testid="account">${esc(JSON.stringify(d.account, null, 2))}</pre>` : ""}`;
    const act = (name) => async () => {
      try { await post(`/v1/jobs/${j.id}/${name}`); toast(`job #${j.id}: ${name}`); render(); } catch (e) { toast(e.message); }
    };
    if (canRetry) document.getElementById("retry").onclick = act("retry");
    if (canCancel) document.getElementById("cancel").onclick = act("cancel");
  };
  await render();
  current.onChange = c => { if (String(c.id) === String(id)) render().catch(() => {}); };
}

// ---- marketplaces ---------------------------------------------------------------------------
async function marketplaces() {
  const [m, limits] = await Promise.all([api("/v1/dashboard/marketplaces"), api("/v1/limits")]);
  const soon = t => t && (new Date(t).getTime() - Date.now()) < 3600e3;
  const none = (n, what) => `<tr><td colspan="${n}" class="muted">${what}</td></tr>`;
  const circuits = limits.marketplaces.map(c => `<tr data-testid="circuit-${esc(c.marketplace)}"><td>${esc(c.marketplace)}</td>
    <td><span class="state ${c.circuit === "closed" ? "done" : "dead"}">${esc(c.circuit)}</span></td><td class="num">${c.failures}</td>
    <td>${fmtTime(c.opened_at)}</td><td>${fmtTime(c.next_probe_at)}</td><td class="num">${c.jobs_waiting_on_limit}</td>
    <td class="num">${c.jobs_waiting_on_circuit}</td><td class="muted wrap">${esc(c.last_error || "")}</td></tr>`).join("")
    || none(8, "no marketplace called yet");
  const keys = limits.keys.map(k => `<tr data-testid="budget-row"><td>${esc(k.key)}</td><td class="num">${fmtNum(k.per_second)}/s</td>
    <td class="num">${k.used} / ${k.window_limit}</td><td class="num">${k.remaining ?? ""}</td><td>${fmtTime(k.resets_at)}</td>
    <td>${k.blocked_until ? `${fmtTime(k.blocked_until)} <span class="muted">${esc(k.blocked_reason || "")}</span>` : ""}</td></tr>`).join("")
    || none(6, "no request sent yet");
  const ext = a => a.extension_online == null ? "" : a.extension_online ? '<span class="state done">online</span>' : '<span class="state dead">offline</span>';
  const acc = m.accounts.map(a => `<tr data-testid="account-${a.id}"><td>${esc(a.marketplace)}</td><td>${a.id}</td><td>${a.tenant_id ?? ""}</td><td>${esc(a.external_user_id)}</td><td>${esc(a.shop_id || "")}</td>
    <td>${esc(a.status)}${a.status_reason ? ` <span class="muted">${esc(a.status_reason)}</span>` : ""}</td>
    <td class="${soon(a.access_expires_at) ? "dead-worker" : ""}">${fmtTime(a.access_expires_at)}</td><td>${fmtTime(a.refresh_expires_at)}</td>
    <td data-testid="last-push">${fmtTimeOrDash(a.last_push_at)}</td><td data-testid="last-poll">${fmtTimeOrDash(a.last_poll_at)}</td>
    <td data-testid="extension">${ext(a)}</td></tr>`).join("")
    || none(11, "no connected account");
  const dsw = m.double_sell.map(d => `<tr data-testid="double-sell-${esc(d.marketplace)}"><td>${esc(d.marketplace)}</td><td class="num">${d.sales}</td>
    <td class="num">${fmtMs(d.p50_ms)}</td><td class="num">${fmtMs(d.max_ms)}</td><td class="num">${d.open}</td></tr>`).join("")
    || none(5, "no product sold out in the last hour");
  const recent = m.recent_errors.map(e => `<tr data-testid="recent-error"><td>${fmtTime(e.at)}</td><td>${esc(e.marketplace)}</td>
    <td>${e.job_id ? `<a href="#/jobs/${e.job_id}">#${e.job_id}</a>` : ""}</td><td>${esc(e.kind)}</td><td>${esc(e.class)}</td>
    <td class="wrap">${esc(e.message.slice(0, 300))}</td></tr>`).join("")
    || none(6, "no marketplace failure recorded");
  const plugin = m.plugin_waiting.map(p => `<tr data-testid="plugin-waiting"><td>${p.account_id}</td><td>${p.tenant_id ?? ""}</td><td>${esc(p.seller)}</td>
    <td>${esc(p.account_status)}</td><td class="num">${p.pending}</td><td class="num">${p.leased}</td><td>${fmtTime(p.oldest_at)}</td>
    <td>${fmtTime(p.plugin_last_seen_at)}${p.extension_online ? "" : ` <span class="dead-worker">extension offline</span>`}</td></tr>`).join("")
    || none(8, "no plugin task waiting");
  const lst = m.listings.map(l => `<tr><td>${esc(l.marketplace)}</td><td>${esc(l.status)}</td><td class="num">${l.count}</td></tr>`).join("")
    || none(3, "no listing");
  const errs = m.listing_errors.map(l => `<tr><td>${esc(l.marketplace)}</td><td>product ${l.product_id}</td><td>${esc(l.status)}</td>
    <td class="wrap" data-testid="listing-error">${fmtError(l.class, l.message)}</td><td>${fmtTime(l.updated_at)}</td></tr>`).join("")
    || none(5, "no listing error");
  view.innerHTML = `<h2>Marketplaces</h2>
    <h3>Circuits</h3>
    <table data-testid="circuits"><tr><th>marketplace</th><th>circuit</th><th class="num">failures</th><th>opened</th><th>next probe</th>
      <th class="num">jobs waiting on a limit</th><th class="num">jobs waiting on the circuit</th><th>last error</th></tr>${circuits}</table>
    <h3>Rate-limit budgets</h3>
    <table data-testid="budgets"><tr><th>key</th><th class="num">pace</th><th class="num">used / window</th><th class="num">remaining</th><th>resets</th><th>blocked until</th></tr>${keys}</table>
    <h3>Recent marketplace failures (429, 5xx, refusals)</h3>
    <table data-testid="recent-errors"><tr><th>at</th><th>marketplace</th><th>job</th><th>kind</th><th>class</th><th>message</th></tr>${recent}</table>
    <h3>Accounts and token expiry</h3>
    <table data-testid="accounts"><tr><th>marketplace</th><th>id</th><th>tenant</th><th>seller</th><th>shop</th><th>status</th><th>access token expires</th><th>refresh token expires</th>
      <th>last push</th><th>last poll</th><th>extension</th></tr>${acc}</table>
    <h3>Double-sell window, last hour <span class="muted">· sale on the marketplace → last other listing withdrawn</span></h3>
    <table data-testid="double-sell"><tr><th>sold on</th><th class="num">sold out</th><th class="num">p50</th><th class="num">max</th><th class="num">still open</th></tr>${dsw}</table>
    <h3>Plugin tasks waiting per seller (Vinted)</h3>
    <table data-testid="plugin-tasks"><tr><th>account</th><th>tenant</th><th>seller</th><th>status</th><th class="num">pending</th><th class="num">leased</th><th>oldest</th><th>extension last seen</th></tr>${plugin}</table>
    <div class="cards"><div><h3>Listings</h3><table><tr><th>marketplace</th><th>status</th><th class="num">count</th></tr>${lst}</table></div>
    <div><h3>Recent listing errors</h3><table data-testid="listing-errors"><tr><th>marketplace</th><th>product</th><th>status</th><th>error</th><th>at</th></tr>${errs}</table></div></div>`;
}

// ---- audit ----------------------------------------------------------------------------------
async function audit() {
  const a = await api("/v1/dashboard/audit?limit=200");
  const rows = a.entries.map(e => `<tr data-testid="audit-row"><td>${fmtTime(e.at)}</td><td>${esc(e.actor)}</td><td>${esc(e.action)}</td>
    <td>${esc(e.target || "")}</td><td><code>${e.filter ? esc(JSON.stringify(e.filter)) : ""}</code></td><td class="num">${e.count}</td><td>${esc(e.reason || "")}</td></tr>`).join("")
    || `<tr><td colspan="7" class="muted">no action recorded yet</td></tr>`;
  view.innerHTML = `<h2>Audit log</h2><table data-testid="audit"><tr><th>when</th><th>who</th><th>action</th><th>target</th><th>filter</th><th class="num">jobs</th><th>reason</th></tr>${rows}</table>`;
}

function start() {
  document.body.classList.remove("signed-out");
  connectLive();
  route();
}
document.getElementById("signout").onclick = signOut;
if (session.access) start(); else showLogin();
