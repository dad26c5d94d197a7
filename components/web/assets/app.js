// Earshot's page: one meeting's presence, talk time and live transcript, resumable
// across reloads. Plain ES module, no build step, nothing loaded from elsewhere.
//
// Resume: every final segment is kept in localStorage under its meeting with its
// stream `offset`; on load they are rendered and the transcript socket reconnects with
// `?since=<newest offset>` (`0-0`, the whole retained history, when there is none). Lines
// are keyed by offset, so a segment delivered twice is shown once.
//
// Interims: each source (mic, sys) has at most one greyed line in the transcript list,
// opened where its utterance first appeared, updated in place by that source's later
// interims and replaced in place by its final, so two people talking at once each keep
// their words on screen and a finished line does not jump.

/** The subprotocol the server selects; the token rides along as `bearer.<token>`. */
const SUBPROTOCOL = 'earshot.v1';
/** DESIGN.md's meeting id grammar. */
const MEETING_ID = /^[A-Za-z0-9._-]{1,128}$/;
/** Segments kept per meeting in this browser: as many as the server keeps
 *  (TRANSCRIPT_STREAM_MAXLEN), a few MB at most. */
const MAX_STORED_SEGMENTS = 10_000;
/** Storage writes are coalesced: a replay burst of many segments is one write. */
const SAVE_DELAY_MS = 200;
/** Reconnect backoff: doubles from the minimum up to the maximum, with jitter. */
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15_000;
/** A socket open this long counts as healthy: the next failure starts backoff over. */
const STABLE_AFTER_MS = 5_000;
/** Idle proxies close quiet sockets after about a minute; the server accepts keepalives. */
const KEEPALIVE_MS = 30_000;
const KEEPALIVE = '{"type":"keepalive"}';
/** DESIGN.md: 1008 is an auth failure — retrying with the same token cannot succeed. */
const CLOSE_AUTH_FAILED = 1008;
/** Token renewal (as `earshot stream`): when a third of the token's remaining life is left,
 *  at most a minute before its exp; a failed token URL is asked again after a few seconds. */
const RENEW_MARGIN_MAX_MS = 60_000;
const RENEW_RETRY_MS = 5_000;

const SOURCE_NAMES = { mic: 'Microphone', sys: 'System audio' };
const KEY_MEETING = 'earshot.meeting';
const KEY_TOKEN = 'earshot.token';
/** Where fresher tokens come from (`#token_url=…`): GET, JSON `{"token"}` or the bare token. */
const KEY_TOKEN_URL = 'earshot.token_url';
const KEY_AUTOCONNECT = 'earshot.autoconnect';
const transcriptKey = (meeting) => `earshot.transcript.${meeting}`;

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else node.setAttribute(k, v);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

// ---------------------------------------------------------------- storage

const storage = {
  get(key) {
    try { return localStorage.getItem(key); } catch { return null; }
  },
  set(key, value) {
    try { localStorage.setItem(key, value); return true; } catch { return false; }
  },
  remove(key) {
    try { localStorage.removeItem(key); } catch { /* storage disabled */ }
  },
};

// ---------------------------------------------------------------- offsets

/** A stream id `<ms>-<seq>` as two BigInts, or null. */
function parseOffset(s) {
  const m = typeof s === 'string' ? /^(\d{1,20})-(\d{1,20})$/.exec(s) : null;
  return m ? [BigInt(m[1]), BigInt(m[2])] : null;
}

function compareOffsets(a, b) {
  const x = parseOffset(a);
  const y = parseOffset(b);
  if (!x || !y) return a < b ? -1 : a > b ? 1 : 0;
  if (x[0] !== y[0]) return x[0] < y[0] ? -1 : 1;
  return x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0;
}

// ---------------------------------------------------------------- transcript

/** The fields of a segment worth keeping; null if it is not a usable final segment. */
function storedSegment(msg) {
  if (!msg || typeof msg.text !== 'string' || !parseOffset(msg.offset)) return null;
  const seg = {
    offset: msg.offset,
    source: typeof msg.source === 'string' ? msg.source : '?',
    text: msg.text,
    start_ms: Number.isFinite(msg.start_ms) ? msg.start_ms : 0,
    end_ms: Number.isFinite(msg.end_ms) ? msg.end_ms : 0,
  };
  if (typeof msg.speaker === 'string' && msg.speaker) seg.speaker = msg.speaker;
  if (Number.isFinite(msg.confidence)) seg.confidence = msg.confidence;
  return seg;
}

/** One meeting's final segments, ordered and unique by offset, mirrored to localStorage. */
class Transcript {
  constructor(meeting) {
    this.meeting = meeting;
    this.segments = [];
    this.offsets = new Set();
    this.saveTimer = null;
    this.onStorageFull = () => {};
    let raw = [];
    try { raw = JSON.parse(storage.get(transcriptKey(meeting)) || '[]'); } catch { raw = []; }
    // Whatever was stored is re-validated: a corrupt entry is dropped, not fatal.
    for (const item of Array.isArray(raw) ? raw : []) this.add(storedSegment(item), false);
  }

  /** The newest offset, the resume point for `?since=`. */
  get lastOffset() {
    return this.segments.length ? this.segments[this.segments.length - 1].offset : null;
  }

  /** Inserts a segment in offset order (and stores it, unless `persist` is false).
   *  Returns its index, or -1 if it is already here. */
  add(seg, persist = true) {
    if (!seg || this.offsets.has(seg.offset)) return -1;
    let i = this.segments.length;
    // Segments arrive in order; only an out-of-order one walks back.
    while (i > 0 && compareOffsets(this.segments[i - 1].offset, seg.offset) > 0) i--;
    this.segments.splice(i, 0, seg);
    this.offsets.add(seg.offset);
    if (persist) this.scheduleSave();
    return i;
  }

  scheduleSave() {
    if (this.saveTimer === null) this.saveTimer = setTimeout(() => this.save(), SAVE_DELAY_MS);
  }

  save() {
    clearTimeout(this.saveTimer);
    this.saveTimer = null;
    let dropped = 0;
    if (this.segments.length > MAX_STORED_SEGMENTS) dropped = this.segments.length - MAX_STORED_SEGMENTS;
    for (;;) {
      const keep = this.segments.slice(dropped);
      if (storage.set(transcriptKey(this.meeting), JSON.stringify(keep))) break;
      // Quota exceeded: keep the newest lines (resume only needs the last offset).
      if (keep.length <= 1) return;
      dropped += Math.ceil(keep.length / 4);
    }
    if (dropped > 0) this.onStorageFull(dropped);
  }

  forget() {
    clearTimeout(this.saveTimer);
    this.saveTimer = null;
    storage.remove(transcriptKey(this.meeting));
  }
}

// ---------------------------------------------------------------- formatting

function pad(n) { return String(n).padStart(2, '0'); }

/** Milliseconds as `m:ss` or `h:mm:ss`. */
function duration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
}

/** Unix milliseconds as local wall-clock time. */
function clock(ms) {
  return Number.isFinite(ms) ? new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' }) : '?';
}

function sourceName(s) { return SOURCE_NAMES[s] || s; }

// ---------------------------------------------------------------- sockets

/** A WebSocket that reconnects with backoff until stopped or refused for auth. */
class Channel {
  constructor({ label, pill, url, token, onMessage }) {
    Object.assign(this, { label, pill, url, token, onMessage });
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
    this.keepalive = null;
    this.stopped = false;
    this.openedAt = 0;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.keepalive);
    if (this.ws) {
      this.ws.onopen = this.ws.onmessage = this.ws.onclose = this.ws.onerror = null;
      try { this.ws.close(1000, 'bye'); } catch { /* already closing */ }
      this.ws = null;
    }
    this.show('idle', 'not connected');
  }

  /** A fresher token: sent on the open socket (`refresh`, no reconnect) and used for any
   *  later reconnect. */
  refresh(token) {
    this.token = token;
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ type: 'refresh', token }));
  }

  show(state, text) {
    this.pill.dataset.state = state;
    this.pill.querySelector('b').textContent = text;
    this.pill.title = `${this.label}: ${text}`;
  }

  connect() {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    let ws;
    try {
      ws = new WebSocket(`${scheme}//${location.host}${this.url()}`, [SUBPROTOCOL, `bearer.${this.token}`]);
    } catch (e) {
      // A token with characters a subprotocol cannot carry: no point retrying.
      this.show('failed', `cannot connect: ${e.message}`);
      return;
    }
    this.ws = ws;
    this.show('connecting', this.attempt ? `reconnecting (try ${this.attempt + 1})…` : 'connecting…');
    ws.onopen = () => {
      this.openedAt = Date.now();
      this.show('open', 'connected');
      // Behind a GRIP proxy without Earshot's hold extension (Pushpin, Fanout) the
      // snapshot and history go out on the connection's first client message.
      ws.send(KEEPALIVE);
      this.keepalive = setInterval(() => {
        if (ws.readyState === WebSocket.OPEN) ws.send(KEEPALIVE);
      }, KEEPALIVE_MS);
    };
    ws.onmessage = (e) => {
      if (typeof e.data !== 'string') return;
      let msg;
      try { msg = JSON.parse(e.data); } catch { return; }
      if (msg && msg.type === 'refreshed') return this.show('open', `connected (token renewed until ${clock(msg.exp * 1000)})`);
      if (msg && typeof msg === 'object') this.onMessage(msg);
    };
    ws.onclose = (e) => {
      clearInterval(this.keepalive);
      this.ws = null;
      if (this.stopped) return;
      const why = `closed ${e.code}${e.reason ? ` (${e.reason})` : ''}`;
      if (e.code === CLOSE_AUTH_FAILED) {
        this.show('failed', `${why} — check the token`);
        return;
      }
      if (this.openedAt && Date.now() - this.openedAt >= STABLE_AFTER_MS) this.attempt = 0;
      this.openedAt = 0;
      const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
      const delay = Math.round(base / 2 + Math.random() * base / 2);
      this.attempt += 1;
      this.show('closed', `${why} — retrying in ${Math.ceil(delay / 1000)} s`);
      this.timer = setTimeout(() => this.connect(), delay);
    };
  }
}

// ---------------------------------------------------------------- the page

const ui = {
  form: $('connect'),
  meeting: $('meeting'),
  token: $('token'),
  connectButton: $('connect-button'),
  disconnectButton: $('disconnect-button'),
  forgetButton: $('forget-button'),
  formError: $('form-error'),
  pillMeeting: $('conn-meeting'),
  pillTranscript: $('conn-transcript'),
  presence: $('presence'),
  talk: $('talk'),
  talkEmpty: $('talk-empty'),
  notices: $('notices'),
  scroller: $('transcript-scroll'),
  list: $('transcript'),
  empty: $('transcript-empty'),
  count: $('line-count'),
};

const state = {
  meeting: null,
  transcript: null,
  channels: [],
  /** source → { connected, connection_id, since_ms, left_ms, reason } */
  presence: {},
  /** source → bool */
  speaking: {},
  /** { talk: { source → ms }, overlap_ms, silence_ms, window_ms } or null */
  stats: null,
  /** source → its open interim line (an `li.interim` in the transcript list) */
  interims: new Map(),
};

function notice(text, kind = 'notice') {
  const dismiss = el('button', { type: 'button', class: 'secondary', text: 'Dismiss' });
  const box = el('div', { class: kind, role: 'alert' }, el('p', { text }), dismiss);
  dismiss.addEventListener('click', () => box.remove());
  ui.notices.append(box);
}

function lineNode(seg, interim = false) {
  const text = el('span', { class: 'text', text: seg.text });
  const body = el('span', { class: 'body' }, seg.speaker ? el('span', { class: 'speaker', text: `${seg.speaker}:` }) : null, text);
  const attrs = { class: interim ? 'line interim' : 'line', 'data-offset': seg.offset };
  if (interim) {
    attrs['data-source'] = seg.source;
    // Interims change several times a second: a screen reader hears the final, not each guess.
    attrs['aria-hidden'] = 'true';
  }
  if (Number.isFinite(seg.confidence)) attrs.title = `confidence ${Math.round(seg.confidence * 100)}%`;
  return el('li', attrs,
    el('time', { text: duration(seg.start_ms), title: `${duration(seg.start_ms)}–${duration(seg.end_ms)} into the ${sourceName(seg.source)} stream` }),
    el('span', { class: 'src', 'data-source': seg.source, text: seg.source, title: sourceName(seg.source) }),
    body);
}

function nearBottom() {
  const s = ui.scroller;
  return s.scrollHeight - s.scrollTop - s.clientHeight < 48;
}

function afterLinesChanged(stick) {
  const finals = ui.list.children.length - state.interims.size;
  ui.empty.hidden = ui.list.children.length > 0;
  ui.count.textContent = finals ? `(${finals} line${finals === 1 ? '' : 's'})` : '';
  if (stick) ui.scroller.scrollTop = ui.scroller.scrollHeight;
}

function renderTranscript() {
  const frag = document.createDocumentFragment();
  for (const seg of state.transcript?.segments ?? []) frag.append(lineNode(seg));
  state.interims.clear();
  ui.list.replaceChildren(frag);
  afterLinesChanged(true);
}

/** The first open interim line: finals that have none of their own go above it. */
function firstInterim() {
  return ui.list.querySelector(':scope > li.interim');
}

/** An interim of `msg.source`: its line is opened at the end, or updated in place;
 *  empty text closes it. The other sources' lines are not touched. */
function showInterim(msg) {
  if (typeof msg.source !== 'string' || typeof msg.text !== 'string') return;
  const stick = nearBottom();
  const open = state.interims.get(msg.source);
  if (!msg.text) {
    open?.remove();
    state.interims.delete(msg.source);
  } else {
    const node = lineNode({ ...msg, offset: undefined }, true);
    if (open) open.replaceChildren(...node.childNodes);
    else {
      ui.list.append(node);
      state.interims.set(msg.source, node);
    }
  }
  afterLinesChanged(stick);
}

/** Puts a final line where it belongs: in its source's interim line's place when it is
 *  the newest line (the live case), else in offset order among the finals. */
function placeFinal(node, source, nextOffset) {
  const open = state.interims.get(source);
  if (nextOffset === undefined && open) {
    open.replaceWith(node);
    state.interims.delete(source);
    return;
  }
  // Offsets are validated digits and a dash: safe inside a selector as they are.
  const next = nextOffset === undefined ? firstInterim() : ui.list.querySelector(`:scope > li[data-offset="${nextOffset}"]`);
  ui.list.insertBefore(node, next);
}

function onTranscriptMessage(msg) {
  if (msg.meeting_id !== undefined && msg.meeting_id !== state.meeting) return;
  switch (msg.type) {
    case 'transcript': {
      if (!msg.is_final) return showInterim(msg);
      const stick = nearBottom();
      const seg = storedSegment(msg);
      if (seg) {
        const i = state.transcript.add(seg);
        // A repeat (i < 0) changes nothing, not even the source's open interim.
        if (i >= 0) placeFinal(lineNode(seg), seg.source, state.transcript.segments[i + 1]?.offset);
      } else if (typeof msg.text === 'string') {
        // A final segment without an offset cannot be resumed or deduplicated: shown, not kept.
        placeFinal(lineNode(msg), msg.source, undefined);
      }
      afterLinesChanged(stick);
      return;
    }
    case 'history_truncated':
      notice(`Part of this meeting's transcript is no longer kept by the server: lines after ${msg.since} up to ${msg.first_offset} are missing here.`);
      return;
    default:
      // Unknown message types are someone else's future: ignore them.
  }
}

// ---- meeting events

/** The snapshot's `sources` ([{source, connection_id, since_ms}]) as source → entry. */
function presenceEntries(list) {
  const out = {};
  for (const e of Array.isArray(list) ? list : []) if (e && typeof e.source === 'string') out[e.source] = e;
  return out;
}

/** `talk_ms`: source → milliseconds (non-numbers are skipped). */
function talkEntries(t) {
  const out = {};
  if (t && typeof t === 'object' && !Array.isArray(t)) {
    for (const [source, v] of Object.entries(t)) if (Number.isFinite(v)) out[source] = v;
  }
  return out;
}

function applyStats(ev) {
  const talk = talkEntries(ev.talk_ms);
  const num = (v) => (Number.isFinite(v) ? v : null);
  state.stats = {
    talk,
    overlap_ms: num(ev.overlap_ms),
    silence_ms: num(ev.silence_ms),
    window_ms: num(ev.window_ms),
  };
}

function onMeetingEvent(ev) {
  if (ev.meeting_id !== undefined && ev.meeting_id !== state.meeting) return;
  const at = Number.isFinite(ev.at_ms) ? ev.at_ms : Date.now();
  switch (ev.type) {
    case 'snapshot': {
      const entries = presenceEntries(ev.sources);
      for (const [source, p] of Object.entries(state.presence)) {
        if (!entries[source] && p.connected) state.presence[source] = { ...p, connected: false, left_ms: null, reason: null };
      }
      for (const [source, e] of Object.entries(entries)) {
        state.presence[source] = { connected: true, connection_id: e.connection_id, since_ms: e.since_ms ?? null };
      }
      // A snapshot starts over: a speech_ended missed while disconnected must not
      // leave a source "speaking" forever.
      state.speaking = {};
      // `talk` holds the stats event's figures (null before any audio was analysed).
      if (ev.talk && typeof ev.talk === 'object') applyStats(ev.talk);
      break;
    }
    case 'source_connected':
      state.presence[ev.source] = { connected: true, connection_id: ev.connection_id, since_ms: at };
      break;
    case 'source_disconnected': {
      const p = state.presence[ev.source];
      // A late disconnect of a replaced connection must not hide the current one.
      if (p && p.connected && ev.connection_id && p.connection_id && p.connection_id !== ev.connection_id) return;
      state.presence[ev.source] = { connected: false, connection_id: ev.connection_id, left_ms: at, reason: ev.reason ?? null };
      state.speaking[ev.source] = false;
      break;
    }
    case 'speech_started':
    case 'speech_ended':
      if (typeof ev.source === 'string') state.speaking[ev.source] = ev.type === 'speech_started';
      break;
    case 'stats':
      applyStats(ev);
      break;
    default:
      return;
  }
  renderMeeting();
}

function knownSources() {
  return [...new Set([...Object.keys(SOURCE_NAMES), ...Object.keys(state.presence), ...Object.keys(state.stats?.talk ?? {})])];
}

function renderPresence() {
  ui.presence.replaceChildren(...knownSources().map((source) => {
    const p = state.presence[source];
    const speaking = Boolean(state.speaking[source] && p?.connected);
    let detail = 'not connected';
    if (p?.connected) detail = p.since_ms ? `connected since ${clock(p.since_ms)} (${duration(Date.now() - p.since_ms)})` : 'connected';
    else if (p?.left_ms) detail = `left at ${clock(p.left_ms)}${p.reason ? ` (${p.reason})` : ''}`;
    return el('li', { 'data-source': source, 'data-state': p?.connected ? 'connected' : 'disconnected', 'data-speaking': String(speaking) },
      el('span', { class: 'dot', 'aria-hidden': 'true' }),
      el('span', { class: 'name', text: sourceName(source) }),
      el('span', { class: 'speaking', text: 'speaking', 'aria-hidden': speaking ? null : 'true' }),
      el('span', { class: 'detail', text: detail }));
  }));
}

function barRow(kind, label, ms, total) {
  const pct = total > 0 ? Math.min(100, (100 * ms) / total) : 0;
  const bar = el('span');
  bar.style.width = `${pct.toFixed(1)}%`;
  return el('div', { class: 'bar-row', 'data-kind': kind },
    el('span', { class: 'label', text: label }),
    el('div', { class: 'bar', role: 'meter', 'aria-label': `${label}: ${duration(ms)}`, 'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-valuenow': pct.toFixed(0) }, bar),
    el('span', { class: 'value', text: duration(ms) }));
}

function renderTalk() {
  const s = state.stats;
  ui.talkEmpty.hidden = Boolean(s);
  if (!s) return ui.talk.replaceChildren();
  const talk = Object.values(s.talk);
  // The window: given, or reconstructed (speech without double-counted overlap, plus silence).
  const total = s.window_ms ?? Math.max(talk.reduce((a, b) => a + b, 0) - (s.overlap_ms ?? 0) + (s.silence_ms ?? 0), ...talk, 0);
  const rows = Object.entries(s.talk).map(([source, ms]) => barRow(source, sourceName(source), ms, total));
  if (s.overlap_ms !== null) rows.push(barRow('overlap', 'Cross-talk', s.overlap_ms, total));
  if (s.silence_ms !== null) rows.push(barRow('silence', 'Silence', s.silence_ms, total));
  ui.talk.replaceChildren(...rows);
}

function renderMeeting() {
  renderPresence();
  renderTalk();
}

// ---- connecting

function stopChannels() {
  clearTimeout(renewal.timer);
  for (const c of state.channels) c.stop();
  state.channels = [];
  ui.disconnectButton.disabled = true;
}

/** Shows `meeting`'s stored transcript and resets the live panels. */
function openMeeting(meeting) {
  stopChannels();
  state.transcript?.save();
  state.meeting = meeting;
  state.presence = {};
  state.speaking = {};
  state.stats = null;
  state.transcript = new Transcript(meeting);
  state.transcript.onStorageFull = (n) => notice(`Browser storage is full: the ${n} oldest lines are no longer kept in this browser.`);
  ui.notices.replaceChildren();
  renderTranscript();
  renderMeeting();
}

// ---------------------------------------------------------------- token renewal

/** The token's `exp` in unix ms, read (not verified) from its claims; null if unreadable. */
function tokenExpMs(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(part + '='.repeat((4 - (part.length % 4)) % 4)));
    return Number.isFinite(claims.exp) ? claims.exp * 1000 : null;
  } catch { return null; }
}

const renewal = { timer: null, warned: false };

/** Plans the renewal of `token` on the open sockets before it expires. */
function scheduleRenewal(token) {
  clearTimeout(renewal.timer);
  renewal.warned = false;
  const exp = tokenExpMs(token);
  if (exp === null) return;
  const remaining = exp - Date.now();
  const wait = Math.max(0, remaining - Math.min(remaining / 3, RENEW_MARGIN_MAX_MS));
  renewal.timer = setTimeout(() => renew(exp), wait);
}

/** Fetches a fresher token from the token URL and refreshes the sockets with it; without a
 *  token URL, asks the user for one (the server closes the sockets at `exp`). */
async function renew(exp) {
  const url = storage.get(KEY_TOKEN_URL);
  if (!url) {
    notice(`The token expires at ${clock(exp)}: paste a fresh one and press Connect to stay connected.`);
    return;
  }
  try {
    const resp = await fetch(url, { credentials: 'include', cache: 'no-store' });
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    const text = (await resp.text()).trim();
    let token = text;
    try {
      const body = JSON.parse(text);
      if (body && typeof body.token === 'string') token = body.token;
    } catch { /* the bare token */ }
    if (!(tokenExpMs(token) > exp)) throw new Error('it gave no fresher token');
    applyToken(token);
  } catch (e) {
    if (!renewal.warned) notice(`Could not renew the token from the token URL (${e.message}); retrying until it expires at ${clock(exp)}.`);
    renewal.warned = true;
    if (Date.now() < exp) renewal.timer = setTimeout(() => renew(exp), RENEW_RETRY_MS);
  }
}

/** Uses `token` from now on: refreshes the open sockets, remembers it, plans its renewal. */
function applyToken(token) {
  ui.token.value = token;
  storage.set(KEY_TOKEN, token);
  for (const c of state.channels) c.refresh(token);
  scheduleRenewal(token);
}

function connect(meeting, token) {
  if (state.meeting !== meeting || !state.transcript) openMeeting(meeting);
  else stopChannels();
  const enc = encodeURIComponent(meeting);
  state.channels = [
    new Channel({
      label: 'Events', pill: ui.pillMeeting, token,
      url: () => `/api/v1/ws/meetings/${enc}`,
      onMessage: onMeetingEvent,
    }),
    new Channel({
      label: 'Transcript', pill: ui.pillTranscript, token,
      // Evaluated on every (re)connect: resume after the newest line held here, or
      // from the start (`0-0`: everything the server retains) when there is none.
      url: () => `/api/v1/ws/transcript/${enc}?since=${encodeURIComponent(state.transcript.lastOffset ?? '0-0')}`,
      onMessage: onTranscriptMessage,
    }),
  ];
  for (const c of state.channels) c.start();
  ui.disconnectButton.disabled = false;
  scheduleRenewal(token);
}

function formError(text) {
  ui.formError.textContent = text || '';
  ui.formError.hidden = !text;
}

function submit(meeting, token) {
  meeting = meeting.trim();
  token = token.trim();
  if (!MEETING_ID.test(meeting)) return formError('A meeting id is 1–128 letters, digits, “.”, “_” or “-”.');
  if (!token) return formError('A subscribe token is needed (earshot token --scope subscribe --meeting <id>).');
  formError('');
  ui.meeting.value = meeting;
  ui.token.value = token;
  storage.set(KEY_MEETING, meeting);
  storage.set(KEY_TOKEN, token);
  storage.set(KEY_AUTOCONNECT, '1');
  // A new token for the meeting already open renews the live sockets instead of reconnecting.
  const open = state.channels.length > 0 && state.channels.every((c) => c.ws && c.ws.readyState === WebSocket.OPEN);
  if (open && state.meeting === meeting) return applyToken(token);
  connect(meeting, token);
}

/** `#meeting=…&token=…&token_url=…`: taken, remembered, and removed from the address bar
 *  and history. */
function takeFragment() {
  if (!location.hash || location.hash.length < 2) return null;
  const params = new URLSearchParams(location.hash.slice(1));
  const meeting = params.get('meeting');
  const token = params.get('token');
  const tokenUrl = params.get('token_url');
  if (tokenUrl) storage.set(KEY_TOKEN_URL, tokenUrl);
  if (!meeting && !token) return null;
  history.replaceState(null, '', location.pathname + location.search);
  return { meeting: meeting ?? storage.get(KEY_MEETING) ?? '', token: token ?? storage.get(KEY_TOKEN) ?? '' };
}

ui.form.addEventListener('submit', (e) => {
  e.preventDefault();
  submit(ui.meeting.value, ui.token.value);
});

ui.disconnectButton.addEventListener('click', () => {
  stopChannels();
  storage.set(KEY_AUTOCONNECT, '0');
});

ui.forgetButton.addEventListener('click', () => {
  stopChannels();
  state.transcript?.forget();
  state.transcript = null;
  storage.remove(KEY_TOKEN);
  storage.remove(KEY_TOKEN_URL);
  storage.remove(KEY_AUTOCONNECT);
  ui.token.value = '';
  if (state.meeting) openMeeting(state.meeting);
});

window.addEventListener('hashchange', () => {
  const f = takeFragment();
  if (f) submit(f.meeting, f.token);
});

// Unsaved lines are flushed when the page goes away (a reload, a closed tab).
window.addEventListener('pagehide', () => state.transcript?.save());
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'hidden') state.transcript?.save();
});

// "connected since … (3:12)" stays current.
setInterval(renderPresence, 15_000);

(function start() {
  const fragment = takeFragment();
  const meeting = fragment?.meeting ?? storage.get(KEY_MEETING) ?? '';
  const token = fragment?.token ?? storage.get(KEY_TOKEN) ?? '';
  ui.meeting.value = meeting;
  ui.token.value = token;
  if (fragment) return submit(meeting, token);
  if (MEETING_ID.test(meeting)) {
    openMeeting(meeting);
    if (token && storage.get(KEY_AUTOCONNECT) === '1') connect(meeting, token);
  } else {
    renderMeeting();
  }
})();
