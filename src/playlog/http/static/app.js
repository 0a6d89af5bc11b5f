// The playlog operator console (SPEC section 15). Plain ES module, no build
// step: Preact + htm from the vendored release file beside this one.
//
// Rules this page keeps:
// - every time it shows is the server's (progress events, API answers), never
//   the browser's clock: a manual clock moves the page exactly as it moves air;
// - it never shows stale data silently: the connection state is always on
//   screen, and a lost stream shows "stale since" until it is live again;
// - writes are for the operator role only, always a dry run first, then a
//   reason and a confirmation.
import {
  html, render, useState, useEffect, useRef, useCallback,
} from "./preact-htm-standalone-3.1.1.module.js";

const API = "/api/v1";
// No event for this long (progress events come every second) and the page
// says the stream is stale.
const STALE_AFTER_MS = 3500;
const SILENT_AFTER_MS = 15 * 60000;
const CUT_LEAD_MS = 10000;

// -- helpers -------------------------------------------------------------------

const num = (v) => (v === undefined || v === null || v === "" ? 0 : Number(v));

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(API + path, {
      credentials: "same-origin",
      headers: options.body ? { "Content-Type": "application/json" } : {},
      ...options,
    });
  } catch (err) { // the server is not answering at all
    const error = new Error(`the server does not answer (${err.message})`);
    error.code = "UNAVAILABLE";
    throw error;
  }
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (!response.ok) {
    const error = new Error((body && body.message) || response.statusText);
    error.status = response.status;
    error.code = (body && body.code) || String(response.status);
    error.body = body;
    throw error;
  }
  return body;
}

const pad = (n, w = 2) => String(n).padStart(w, "0");

function timeOfDay(ms) {
  if (!ms) return "–";
  const d = new Date(ms);
  return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
}

function dateTime(ms) {
  if (!ms) return "–";
  const d = new Date(ms);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${timeOfDay(ms)} UTC`;
}

function span(ms) {
  if (ms === null || ms === undefined) return "–";
  const sign = ms < 0 ? "-" : "";
  let s = Math.floor(Math.abs(ms) / 1000);
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  return h ? `${sign}${h}:${pad(m)}:${pad(s)}` : `${sign}${m}:${pad(s)}`;
}

// The status of an entry at `now` (SPEC section 2), as the server decides it.
function statusOf(entry, now, lockedUntil) {
  const start = num(entry.start_utc_ms), end = num(entry.end_utc_ms);
  if (end <= now) return "past";
  if (start < now) return "on-air"; // an entry starting at now has not aired yet: locked
  if (start < lockedUntil) return "locked";
  return "flexible";
}

function titleOf(entry) {
  const segs = entry.segments || [];
  const main = segs.find((s) => !["filler", "padding", "bumper"].includes(s.segment_type)) || segs[0];
  return (main && (main.title || main.asset_uri)) || entry.block_id;
}

function useRoute() {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const on = () => setHash(location.hash);
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  const m = hash.match(/^#\/channel\/(.+)$/);
  return m ? { page: "rundown", channel: decodeURIComponent(m[1]) } : { page: "overview" };
}

// -- sign in -------------------------------------------------------------------

function SignIn({ onDone }) {
  const [token, setToken] = useState("");
  const [error, setError] = useState(null);
  const submit = async (e) => {
    e.preventDefault();
    try {
      onDone(await api("/session", { method: "POST", body: JSON.stringify({ token }) }));
    } catch (err) { setError(err); }
  };
  return html`<form class="signin" onSubmit=${submit}>
    <h2>Sign in</h2>
    <p>Paste your playlog token (from <code>playlog token</code>). It is sent once; the
      browser then keeps an HttpOnly session cookie.</p>
    <input type="password" name="token" autocomplete="off" value=${token}
      onInput=${(e) => setToken(e.target.value)} placeholder="token" />
    <button type="submit">Sign in</button>
    ${error && html`<p class="refusal">${error.code}: ${error.message}</p>`}
  </form>`;
}

// -- the channels overview -----------------------------------------------------

function health(now, engines, runwayMs) {
  if (engines.some((e) => num(e.last_nack_utc_ms) && num(e.last_nack_generation_id) >= num(e.applied_generation_id)))
    return ["bad", "an engine refuses (NACK)"];
  // Silent: neither an acknowledgement nor as-run for a quarter of an hour
  // (an engine on air reports as-run as each event ends).
  const heard = (e) => Math.max(num(e.last_acknowledged_utc_ms), num(e.last_as_run_received_utc_ms));
  if (engines.some((e) => now - heard(e) > SILENT_AFTER_MS)) return ["bad", "an engine is silent"];
  if (runwayMs < 24 * 3600000) return ["warn", "runway under 24 h"];
  if (engines.some((e) => num(e.generations_behind) > 0)) return ["warn", "an engine lags"];
  return ["ok", "ok"];
}

// Each engine's applied generation, and how far and how long it lags.
function Engines({ engines, now }) {
  if (!engines.length) return html`<span class="muted">no engine</span>`;
  return engines.map((e) => {
    const behind = num(e.generations_behind);
    const nack = num(e.last_nack_utc_ms) && num(e.last_nack_generation_id) >= num(e.applied_generation_id);
    return html`<span class=${"engine" + (nack ? " nack" : behind ? " lag" : "")} data-engine=${e.engine_id}
      title=${nack ? `NACK of generation ${e.last_nack_generation_id}: ${e.last_nack_detail}` : ""}>
      ${e.engine_id}: ${e.applied_generation_id}${behind ? ` (−${behind} for ${span(now - num(e.behind_since_utc_ms))})` : ""}${nack ? " NACK" : ""}</span>`;
  });
}

function Overview() {
  const [rows, setRows] = useState(null);
  const [now, setNow] = useState(0);
  const [error, setError] = useState(null);
  useEffect(() => {
    let stop = false;
    const poll = async () => {
      try {
        const { channels } = await api("/channels");
        const out = await Promise.all((channels || []).map(async (c) => {
          const [nn, eng] = await Promise.all([
            api(`/channels/${encodeURIComponent(c.channel_id)}/now`),
            api(`/channels/${encodeURIComponent(c.channel_id)}/engines`),
          ]);
          setNow(num(nn.now_utc_ms));
          return { channel: c, now: num(nn.now_utc_ms), nn: (nn.channels || [])[0] || {}, engines: eng.engines || [] };
        }));
        if (!stop) { setRows(out); setError(null); }
      } catch (err) { if (!stop) setError(err); }
      if (!stop) setTimeout(poll, 1000);
    };
    poll();
    return () => { stop = true; };
  }, []);
  return html`<section class="overview">
    <header class="bar"><h1>Channels</h1>
      <span class="clock" data-testid="server-clock">${timeOfDay(now)} UTC</span>
      <span class=${"conn " + (error ? "lost" : "live")} data-testid="connection">${error ? "not answering" : "live"}</span>
    </header>
    ${error && html`<div class="stale" data-testid="stale-banner">Not live: the table below is stale since
      ${dateTime(now)} (server time): ${error.code} ${error.message}. Retrying every second…</div>`}
    ${rows === null ? html`<p>Loading…</p>` : html`<table class="channels">
      <thead><tr><th></th><th>channel</th><th>on air</th><th>left</th><th>next</th>
        <th>generation</th><th>engines (applied, lag)</th><th>runway</th></tr></thead>
      <tbody>${rows.map(({ channel, now, nn, engines }) => {
        const runway = num(nn.covered_until_utc_ms) ? num(nn.covered_until_utc_ms) - now : 0;
        const [colour, why] = health(now, engines, runway);
        const onAir = nn.on_air, next = nn.next;
        return html`<tr class=${"health-" + colour} data-channel=${channel.channel_id}>
          <td><span class=${"dot " + colour} title=${why}></span></td>
          <td><a href=${"#/channel/" + encodeURIComponent(channel.channel_id)}>${channel.display_name || channel.channel_id}</a></td>
          <td>${onAir ? onAir.title : "nothing on air"}</td>
          <td class="num">${onAir ? span(num(onAir.end_utc_ms) - now) : "–"}</td>
          <td>${next ? `${timeOfDay(num(next.start_utc_ms))} ${next.title}` : "–"}</td>
          <td class="num">${channel.current_generation_id}</td>
          <td><${Engines} engines=${engines} now=${now} /></td>
          <td class="num">${runway > 0 ? span(runway) : "none"}</td>
        </tr>`;
      })}</tbody></table>`}
  </section>`;
}

// -- a channel's rundown -------------------------------------------------------

function useLive(channelId) {
  // The window read through the API, kept current by the channel's events.
  const [state, setState] = useState({ entries: [], now: 0, lockedUntil: 0, generation: 0 });
  const [conn, setConn] = useState({ state: "connecting", staleSince: 0, lastEvent: 0 });
  const [side, setSide] = useState({ asRun: [], reconcile: null, engines: [] });
  const known = useRef({ generation: -1, now: 0 });
  const [failure, setFailure] = useState(null);
  const refresh = useCallback(async () => {
    const id = encodeURIComponent(channelId);
    const w = await api(`/channels/${id}/window`);
    known.current.generation = num(w.channel_generation_id);
    known.current.now = num(w.now_utc_ms);
    setState({ entries: w.entries || [], now: num(w.now_utc_ms), lockedUntil: num(w.locked_until_utc_ms),
      generation: num(w.channel_generation_id) });
    const [ar, rc, en] = await Promise.all([
      api(`/channels/${id}/as-run`), api(`/channels/${id}/reconcile`), api(`/channels/${id}/engines`),
    ]);
    setSide({ asRun: ar.records || [], reconcile: rc, engines: en.engines || [] });
  }, [channelId]);

  useEffect(() => {
    let closed = false;
    let pending = null;
    const refetch = () => {
      if (pending) return;
      pending = setTimeout(async () => {
        pending = null;
        try { await refresh(); setFailure(null); } catch (err) { setFailure(err); }
      }, 50);
    };
    const source = new EventSource(`${API}/channels/${encodeURIComponent(channelId)}/events`);
    const heard = () => setConn((c) => ({ state: "live", staleSince: 0, lastEvent: known.current.now || c.lastEvent }));
    source.addEventListener("snapshot", (e) => {
      const d = JSON.parse(e.data);
      if (d.complete) { known.current.now = num(d.now_utc_ms); heard(); refetch(); }
    });
    source.addEventListener("replaced", () => { heard(); refetch(); });
    source.addEventListener("progress", (e) => {
      const d = JSON.parse(e.data);
      known.current.now = num(d.now_utc_ms);
      heard();
      setState((s) => ({ ...s, now: num(d.now_utc_ms), lockedUntil: num(d.locked_until_utc_ms) }));
      if (num(d.channel_generation_id) !== known.current.generation) refetch();
    });
    source.addEventListener("error", (e) => {
      if (e.data) { // the server's own last event: the stream ends with it
        const d = JSON.parse(e.data);
        setConn((c) => ({ state: `ended: ${d.code}`, staleSince: c.staleSince || known.current.now, lastEvent: c.lastEvent }));
        return;
      }
      setConn((c) => ({ state: "reconnecting", staleSince: c.staleSince || known.current.now, lastEvent: c.lastEvent }));
    });
    // Progress events are the heartbeat: silence means stale, even with the
    // socket still open (a dead proxy, a stopped server).
    let lastSeen = performance.now();
    const mark = () => { lastSeen = performance.now(); };
    ["snapshot", "replaced", "progress"].forEach((k) => source.addEventListener(k, mark));
    const watchdog = setInterval(() => {
      if (!closed && performance.now() - lastSeen > STALE_AFTER_MS) {
        setConn((c) => (c.state === "live" || c.state === "connecting"
          ? { state: "no heartbeat", staleSince: c.staleSince || known.current.now, lastEvent: c.lastEvent } : c));
      }
    }, 500);
    refetch();
    return () => { closed = true; source.close(); clearInterval(watchdog); if (pending) clearTimeout(pending); };
  }, [channelId, refresh]);
  return { state, conn, side, refresh, failure };
}

function Timeline({ entries, now, lockedUntil }) {
  if (!entries.length) return html`<div class="timeline empty">nothing published</div>`;
  const from = num(entries[0].start_utc_ms), to = num(entries[entries.length - 1].end_utc_ms);
  const pct = (t) => `${Math.max(0, Math.min(100, ((t - from) / (to - from)) * 100))}%`;
  return html`<div class="timeline" data-testid="timeline">
    ${entries.map((e) => html`<div class=${"block " + statusOf(e, now, lockedUntil)}
      style=${{ left: pct(num(e.start_utc_ms)), width: `calc(${pct(num(e.end_utc_ms))} - ${pct(num(e.start_utc_ms))})` }}
      title=${`${e.block_id} ${timeOfDay(num(e.start_utc_ms))}`}></div>`)}
    <div class="line lock" style=${{ left: pct(lockedUntil) }} title="lock boundary"></div>
    <div class="line now" style=${{ left: pct(now) }} title="now"></div>
  </div>`;
}

function RecordDialog({ id, onClose }) {
  const [record, setRecord] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => { api(`/records/${encodeURIComponent(id)}`).then((r) => setRecord(r.record), setError); }, [id]);
  return html`<div class="dialog" role="dialog" data-testid="record-dialog">
    <h3>Override record ${id}</h3>
    ${error && html`<p class="refusal">${error.code}: ${error.message}</p>`}
    ${record && html`<dl>
      <dt>layer</dt><dd>${record.layer}</dd>
      <dt>reason</dt><dd>${record.reason_code}</dd>
      <dt>actor</dt><dd>${record.actor}</dd>
      <dt>created</dt><dd>${dateTime(num(record.created_utc_ms))}</dd>
      <dt>resulting generation</dt><dd>${record.resulting_generation_id}</dd>
      <dt>superseded</dt><dd>${((record.superseded && record.superseded.entries) || []).map((s) => html`<div>${s.block_id} (gen ${s.generation_id})</div>`)}</dd>
    </dl>`}
    <button onClick=${onClose}>Close</button>
  </div>`;
}

function Rundown({ channelId, who }) {
  const { state, conn, side, refresh, failure } = useLive(channelId);
  const [record, setRecord] = useState(null);
  const [action, setAction] = useState(null);
  const { entries, now, lockedUntil } = state;
  const onAirIndex = entries.findIndex((e) => statusOf(e, now, lockedUntil) === "on-air");
  const nextIndex = entries.findIndex((e) => num(e.start_utc_ms) > now);
  const onAir = onAirIndex >= 0 ? entries[onAirIndex] : null;
  const next = nextIndex >= 0 ? entries[nextIndex] : null;
  const lockDepth = lockedUntil - now;
  const nextToLock = entries.find((e) => num(e.start_utc_ms) >= lockedUntil);
  const asRunByBlock = {};
  for (const r of side.asRun) {
    const ev = r.event || {};
    const cur = asRunByBlock[ev.block_id];
    asRunByBlock[ev.block_id] = {
      start: cur ? Math.min(cur.start, num(ev.started_utc_ms)) : num(ev.started_utc_ms),
      end: cur ? Math.max(cur.end, num(ev.ended_utc_ms)) : num(ev.ended_utc_ms),
      status: ev.status,
    };
  }
  const discrepancies = (side.reconcile && side.reconcile.discrepancies) || [];
  const flagged = {};
  for (const d of discrepancies) (flagged[d.block_id] = flagged[d.block_id] || []).push(d.kind.replace("DISCREPANCY_KIND_", ""));
  const live = conn.state === "live";
  return html`<section class="rundown">
    <header class="bar">
      <a href="#/">← channels</a>
      <h1>${channelId}</h1>
      <span class=${"conn " + (live ? "live" : "lost")} data-testid="connection">${live ? "live" : conn.state}</span>
      <span class="muted">generation <b data-testid="generation">${state.generation}</b></span>
      <span class="muted">engines: <${Engines} engines=${side.engines} now=${now} /></span>
    </header>
    ${!live && conn.staleSince ? html`<div class="stale" data-testid="stale-banner">
      Not live: the data below is stale since ${dateTime(conn.staleSince)} (server time). Reconnecting…</div>` : ""}
    ${failure && html`<p class="refusal" data-testid="read-failure">${failure.code}: ${failure.message}</p>`}
    <div class="clocks">
      <div><label>time of day</label><span data-testid="clock-now">${timeOfDay(now)}</span></div>
      <div><label>left on air</label><span class="big" data-testid="clock-left">${onAir ? span(num(onAir.end_utc_ms) - now) : "–"}</span></div>
      <div><label>to next</label><span data-testid="clock-next">${next ? span(num(next.start_utc_ms) - now) : "–"}</span></div>
      <div><label>to next lock</label><span data-testid="clock-lock">${nextToLock ? span(num(nextToLock.start_utc_ms) - lockDepth - now) : "–"}</span></div>
    </div>
    <${Timeline} entries=${entries} now=${now} lockedUntil=${lockedUntil} />
    <table class="entries" data-testid="rundown">
      <thead><tr><th>start</th><th>end</th><th>duration</th><th>block</th><th>title</th><th>status</th>
        <th>gen</th><th>override</th><th>actual start</th><th>actual end</th><th>deviation</th>
        ${who.operator ? html`<th></th>` : ""}</tr></thead>
      <tbody>${entries.map((e, i) => {
        const status = statusOf(e, now, lockedUntil);
        const aired = asRunByBlock[e.block_id];
        const classes = ["row", status, i === nextIndex ? "next" : ""].join(" ");
        return html`<tr class=${classes} data-block=${e.block_id} data-status=${status}>
          <td>${timeOfDay(num(e.start_utc_ms))}</td><td>${timeOfDay(num(e.end_utc_ms))}</td>
          <td class="num">${span(num(e.end_utc_ms) - num(e.start_utc_ms))}</td>
          <td>${e.block_id}</td><td>${titleOf(e)}${i === nextIndex ? html` <span class="tag">next</span>` : ""}</td>
          <td><span class=${"status " + status}>${status.replace("-", " ")}</span></td>
          <td class="num">${e.generation_id}</td>
          <td>${e.is_operator_override ? html`<button class="override" title="open its audit record"
            onClick=${() => setRecord(e.override_record_id)}>override</button>` : ""}</td>
          <td>${aired ? timeOfDay(aired.start) : ""}</td><td>${aired ? timeOfDay(aired.end) : ""}</td>
          <td class="num">${aired ? span(aired.start - num(e.start_utc_ms)) : ""}${flagged[e.block_id] ? html` <span class="flag" title="reconciliation">${flagged[e.block_id].join(", ")}</span>` : ""}</td>
          ${who.operator ? html`<td>${status === "on-air" ? html`<button class="act" onClick=${() => setAction(cutOf(e, now))}>cut…</button>`
            : status !== "past" ? html`<button class="act" onClick=${() => setAction(replaceOf(e))}>replace…</button>
              <button class="act" onClick=${() => setAction(publishOf(e))}>publish…</button>` : ""}</td>` : ""}
        </tr>`;
      })}</tbody>
    </table>
    ${discrepancies.length ? html`<div class="discrepancies"><h3>Reconciliation</h3><ul>
      ${discrepancies.map((d) => html`<li><b>${d.kind}</b> ${d.block_id} ${d.detail}</li>`)}</ul></div>` : ""}
    ${record && html`<${RecordDialog} id=${record} onClose=${() => setRecord(null)} />`}
    ${who.operator ? html`<${ActionPanel} channelId=${channelId} action=${action} setAction=${setAction} onDone=${refresh} />`
      : html`<p class="muted readonly" data-testid="read-only">Read-only: changes need the operator role.</p>`}
  </section>`;
}

// -- operator actions: dry run first, then reason and confirmation ------------

function bareEntry(e) {
  const { generation_id, is_operator_override, override_record_id, ...rest } = e;
  return rest;
}

function replaceOf(e) {
  return { kind: "replace", body: { block_id: e.block_id, entry: bareEntry(e), operator_override: true } };
}

function publishOf(e) {
  return { kind: "publish", body: { range_start_utc_ms: e.start_utc_ms, range_end_utc_ms: e.end_utc_ms,
    entries: [bareEntry(e)], operator_override: true } };
}

function cutOf(e, now) {
  // The cut point: ten seconds ahead of the server's now, on a whole second,
  // so that it is still ahead when the operator confirms (a confirmation
  // after it has passed is refused as PAST_WINDOW_IMMUTABLE: pick the row's
  // cut again). Edit it in the JSON for another point.
  const end = num(e.end_utc_ms);
  const at = Math.min(end - 1000, Math.ceil((now + CUT_LEAD_MS) / 1000) * 1000);
  return { kind: "publish", cut: true, body: {
    range_start_utc_ms: String(at), range_end_utc_ms: String(end),
    entries: [{ block_id: `${e.block_id}-cut`, block_index: e.block_index, start_utc_ms: String(at),
      end_utc_ms: String(end), programming_day_date: e.programming_day_date,
      segments: [{ segment_id: "cut-1", segment_type: "content", asset_uri: "asset://breaking-news",
        asset_offset_ms: "0", duration_ms: String(end - at), title: "Breaking news" }] }],
    operator_override: true } };
}

function ActionPanel({ channelId, action, setAction, onDone }) {
  const [kind, setKind] = useState("publish");
  const [text, setText] = useState("");
  const [preview, setPreview] = useState(null);
  const [result, setResult] = useState(null);
  const [reason, setReason] = useState("");
  const [confirmed, setConfirmed] = useState(false);
  useEffect(() => {
    if (!action) return;
    setKind(action.kind); setText(JSON.stringify(action.body, null, 2));
    setPreview(null); setResult(null); setConfirmed(false);
  }, [action]);
  const send = async (validateOnly) => {
    let body;
    try { body = JSON.parse(text); } catch (err) {
      setResult({ error: { code: "INVALID_ARGUMENT", message: `the JSON does not parse: ${err.message}` } }); return;
    }
    body.validate_only = validateOnly;
    if (reason) body.reason_code = reason;
    try {
      const answer = await api(`/channels/${encodeURIComponent(channelId)}/${kind}`, { method: "POST", body: JSON.stringify(body) });
      if (validateOnly) { setPreview(answer); setResult(null); } else {
        setResult({ ok: answer }); setPreview(null); setConfirmed(false); onDone();
      }
    } catch (err) {
      setResult({ error: { code: err.code, message: err.message } });
      if (validateOnly) setPreview(null);
    }
  };
  return html`<section class="actions" data-testid="actions">
    <h2>Operator action</h2>
    <label>kind <select value=${kind} onChange=${(e) => setKind(e.target.value)} name="kind">
      <option value="publish">publish a range (a cut is a publish from a point on air)</option>
      <option value="replace">replace an entry</option></select></label>
    <textarea name="request" rows="12" value=${text} onInput=${(e) => { setText(e.target.value); setPreview(null); }}
      placeholder="the request as JSON (protobuf JSON: PublishAtomicReplaceRequest or ReplaceEntryRequest), or pick a row's action above"></textarea>
    <label>reason code <input name="reason" value=${reason} onInput=${(e) => { setReason(e.target.value); setPreview(null); }} placeholder="BREAKING_NEWS" /></label>
    <div><button data-testid="dry-run" onClick=${() => send(true)}>Dry run</button>
      <button onClick=${() => { setAction(null); setText(""); setPreview(null); setResult(null); }}>Clear</button></div>
    ${preview && html`<div class="diff" data-testid="diff">
      <h3>Dry run: generation ${preview.published_generation_id} would</h3>
      <div class="cols"><div><h4>replace</h4><ul>${(preview.would_supersede || []).map((s) => html`<li class="minus">${s.block_id} (gen ${s.generation_id}) ${timeOfDay(num(s.start_utc_ms))}–${timeOfDay(num(s.end_utc_ms))}</li>`)}</ul></div>
      <div><h4>with</h4><ul>${(preview.would_write || []).map((w) => html`<li class="plus">${w.block_id} ${timeOfDay(num(w.start_utc_ms))}–${timeOfDay(num(w.end_utc_ms))} ${titleOf(w)}</li>`)}</ul></div></div>
      <p>Reason: <b>${reason || "none given"}</b></p>
      <label><input type="checkbox" name="confirm" checked=${confirmed} onChange=${(e) => setConfirmed(e.target.checked)} /> I confirm this change to air</label>
      <button data-testid="commit" disabled=${!confirmed || !reason} onClick=${() => send(false)}>Make it</button>
    </div>`}
    ${result && result.error && html`<p class="refusal" data-testid="refusal"><b>${result.error.code}</b>: ${result.error.message}</p>`}
    ${result && result.ok && html`<p class="done" data-testid="done">Done: generation ${result.ok.published_generation_id}${result.ok.override_record_id ? `, override record ${result.ok.override_record_id}` : ""}</p>`}
  </section>`;
}

// -- the page ------------------------------------------------------------------

function App() {
  const route = useRoute();
  const [who, setWho] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => { api("/session").then(setWho, setError); }, []);
  if (error) return html`<p class="refusal">${error.code}: ${error.message}</p>`;
  if (!who) return html`<p>Loading…</p>`;
  if (who.auth && !who.signed_in) return html`<${SignIn} onDone=${setWho} />`;
  const signOut = async () => { setWho(await api("/session", { method: "DELETE" })); };
  return html`<div>
    <nav class="top"><b>playlog</b> console
      <span class="who" data-testid="who">${who.principal} (${who.roles.join(", ")})${who.operator ? "" : " · read-only"}</span>
      ${who.auth ? html`<button onClick=${signOut}>Sign out</button>` : ""}</nav>
    ${route.page === "rundown" ? html`<${Rundown} key=${route.channel} channelId=${route.channel} who=${who} />` : html`<${Overview} />`}
  </div>`;
}

render(html`<${App} />`, document.getElementById("app"));
