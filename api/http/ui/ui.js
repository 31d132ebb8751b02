// The operator's page of `sluice serve`: polls the server's own routes every
// few seconds and draws what they say; a chat playground streaming over
// /v1/chat/completions and an embeddings similarity box. Same origin only
// (the Content-Security-Policy allows nothing else); the API key, when the
// server asks for one, goes in an Authorization header and stays in this
// tab's sessionStorage.
'use strict';

const POLL_MS = 2000;
const HISTORY = 60; // chart points: 2 minutes at POLL_MS
const KEY_SLOT = 'sluice-key';
const $ = (id) => document.getElementById(id);

let apiKey = sessionStorage.getItem(KEY_SLOT) || '';
let pollTimer = null;
let adminDenied = false; // the key lacks the admin scope: the live limits are not asked for again
let lastMetrics = null; // {t, requests, request_s, gen_tokens}
const history = [];     // {rps, tps, latency_ms}

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (apiKey) h.Authorization = 'Bearer ' + apiKey;
  return h;
}

// One call to the server. 401 shows the key form and throws; other errors throw with the server's message.
async function api(path, opts) {
  opts = opts || {};
  const r = await fetch(path, Object.assign({}, opts, {headers: headers(opts.headers), cache: 'no-store'}));
  if (r.status === 401) {
    askKey(apiKey ? 'the key was refused' : '');
    throw new Error('this server needs an API key');
  }
  return r;
}

async function json(path, opts) {
  const r = await api(path, opts);
  const body = await r.json().catch(() => null);
  if (!r.ok && !(path === '/readyz' && body)) {
    const msg = body && body.error ? body.error.message : 'HTTP ' + r.status;
    const e = new Error(msg);
    e.status = r.status;
    throw e;
  }
  return body;
}

function askKey(why) {
  $('keyform').hidden = false;
  $('key-error').textContent = why || '';
  $('key').focus();
}

function useKey(ev) {
  ev.preventDefault();
  apiKey = $('key').value.trim();
  $('key').value = '';
  if (apiKey) sessionStorage.setItem(KEY_SLOT, apiKey);
  else sessionStorage.removeItem(KEY_SLOT);
  $('keyform').hidden = true;
  adminDenied = false;
  $('key-change').hidden = !apiKey;
  poll();
}

// ---------------------------------------------------------------- formatting

function bytes(n) {
  if (n === undefined || n === null || isNaN(n)) return '–';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + ' ' + u[i];
}

function num(v, digits) {
  if (v === undefined || v === null || isNaN(v)) return '–';
  return digits === undefined ? String(v) : Number(v).toFixed(digits);
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function fillDl(dl, pairs) {
  dl.replaceChildren();
  for (const [k, v] of pairs) { dl.append(el('dt', k), el('dd', v)); }
}

// ---------------------------------------------------------------- Prometheus text

// {name: [{labels: {...}, value}]}; histogram buckets skipped.
function parseMetrics(text) {
  const out = {};
  for (const line of text.split('\n')) {
    if (!line || line[0] === '#') continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m || m[1].endsWith('_bucket')) continue;
    const labels = {};
    if (m[3]) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
      let l;
      while ((l = re.exec(m[3]))) labels[l[1]] = l[2];
    }
    (out[m[1]] = out[m[1]] || []).push({labels, value: Number(m[4])});
  }
  return out;
}

function sum(ms, name, filter) {
  return (ms[name] || []).filter((s) => !filter || filter(s.labels)).reduce((a, s) => a + s.value, 0);
}

function one(ms, name, filter) {
  const s = (ms[name] || []).find((x) => !filter || filter(x.labels));
  return s ? s.value : undefined;
}

// ---------------------------------------------------------------- sections

function showModels(list) {
  const tb = $('models').tBodies[0];
  tb.replaceChildren();
  for (const m of list.data) {
    const tr = el('tr');
    tr.dataset.model = m.id;
    tr.dataset.state = m.state;
    const cells = [m.id, m.kind || '', m.state, m.backend || list.memory.device, m.precision || '',
      bytes(m.weight_bytes), bytes(m.workspace_bytes), num(m.requests), num(m.errors)];
    cells.forEach((c, i) => {
      const td = el('td', c, i >= 5 ? 'num' : '');
      if (i === 2) td.className = m.state === 'ready' ? 'ok' : m.state === 'failed' ? 'bad' : '';
      if (i === 2 && m.last_error) td.title = m.last_error;
      tr.append(td);
    });
    tb.append(tr);
  }
  fillSelect($('chat-model'), list.data.filter((m) => m.kind === 'decoder').map((m) => m.id));
  fillSelect($('emb-model'), list.data.filter((m) => m.kind !== 'decoder').map((m) => m.id));
}

function fillSelect(sel, names) {
  const keep = sel.value;
  if ([...sel.options].map((o) => o.value).join() === names.join()) return;
  sel.replaceChildren(...names.map((n) => { const o = el('option', n); o.value = n; return o; }));
  if (names.includes(keep)) sel.value = keep;
}

function showMemory(list, ms) {
  const box = $('memory');
  box.replaceChildren();
  const used = list.memory.used_bytes, budget = list.memory.budget_bytes;
  box.append(el('div', list.memory.device + ': ' + bytes(used) + ' of ' + bytes(budget) + ' budget'));
  const bar = el('div', undefined, 'bar'), fill = el('div');
  fill.style.width = (budget ? Math.min(100, 100 * used / budget) : 0).toFixed(1) + '%';
  bar.append(fill);
  box.append(bar);
  const dl = el('dl');
  const pairs = [];
  for (const m of list.data)
    if (m.state === 'ready') pairs.push([m.id, bytes(m.weight_bytes) + ' weights + ' + bytes(m.workspace_bytes) + ' workspace']);
  if (ms) pairs.push(['pending queue', bytes(one(ms, 'sluice_pending_bytes')) + ' in ' + num(one(ms, 'sluice_pending_items')) + ' items']);
  fillDl(dl, pairs);
  box.append(dl);
}

function showBatching(ms, limits) {
  const batches = one(ms, 'sluice_batches_total') || 0;
  const seqs = one(ms, 'sluice_batch_size_sum') || 0, toks = one(ms, 'sluice_batch_tokens_sum') || 0;
  const waits = one(ms, 'sluice_queue_wait_seconds_count') || 0, wait_s = one(ms, 'sluice_queue_wait_seconds_sum') || 0;
  const pairs = [
    ['batches', num(batches)],
    ['mean batch', batches ? num(seqs / batches, 1) + ' seqs, ' + num(toks / batches, 0) + ' tokens' : '–'],
    ['largest batch', num(one(ms, 'sluice_batch_sequences_max')) + ' seqs'],
    ['mean queue wait', waits ? num(1000 * wait_s / waits, 2) + ' ms' : '–'],
    ['pending items', num(one(ms, 'sluice_pending_items'))],
    ['in-flight batches', num(one(ms, 'sluice_in_flight_batches'))],
    ['paused / draining', (one(ms, 'sluice_paused') ? 'paused' : 'no') + ' / ' + (one(ms, 'sluice_draining') ? 'draining' : 'no')],
  ];
  if (limits) {
    pairs.push(['max batch', limits.max_batch_seqs + ' seqs, ' + limits.max_batch_tokens + ' tokens']);
    pairs.push(['max queue delay', limits.max_queue_delay_ms + ' ms']);
    pairs.push(['max pending', limits.max_pending_items + ' items, ' + bytes(limits.max_pending_bytes)]);
  } else {
    pairs.push(['live limits', 'an admin key shows them']);
  }
  fillDl($('batching'), pairs);
}

function showGeneration(ms) {
  const models = [...new Set((ms.sluice_gen_sequences || []).map((s) => s.labels.model))];
  const pairs = [];
  for (const m of models) {
    const of = (st) => (l) => l.model === m && l.state === st;
    pairs.push([m, num(one(ms, 'sluice_gen_sequences', of('running'))) + ' running, ' +
      num(one(ms, 'sluice_gen_sequences', of('waiting'))) + ' waiting']);
    pairs.push(['KV blocks', num(one(ms, 'sluice_gen_kv_blocks', of('used'))) + ' used of ' +
      num(one(ms, 'sluice_gen_kv_blocks', of('total')))]);
    const n = one(ms, 'sluice_gen_ttft_seconds_count', (l) => l.model === m);
    const t = one(ms, 'sluice_gen_ttft_seconds_sum', (l) => l.model === m);
    pairs.push(['mean time to first token', n ? num(1000 * t / n, 1) + ' ms' : '–']);
    pairs.push(['tokens generated', num(one(ms, 'sluice_gen_generated_tokens_total', (l) => l.model === m))]);
  }
  if (!pairs.length) pairs.push(['', 'no generation yet']);
  fillDl($('generation'), pairs);
}

function showQueues(ready, ms) {
  const r = ready && ready.queue ? ready.queue : {};
  $('redis').textContent = 'Redis intake: ' + (r.redis || 'unknown') + (r.redis === 'off' ? ' (--redis none)' : '');
  const tb = $('queues').tBodies[0];
  tb.replaceChildren();
  const names = [...new Set([...(ms.sluice_redis_up || []), ...(ms.sluice_queue_depth || [])].map((s) => s.labels.queue))];
  for (const q of names) {
    const tr = el('tr');
    tr.dataset.queue = q;
    const up = one(ms, 'sluice_redis_up', (l) => l.queue === q);
    tr.append(el('td', q), el('td', up === undefined ? '–' : up ? 'up' : 'down', up ? 'ok' : 'bad'));
    for (const st of ['ready', 'delayed', 'leased', 'dlq'])
      tr.append(el('td', num(one(ms, 'sluice_queue_depth', (l) => l.queue === q && l.state === st)), 'num'));
    tb.append(tr);
  }
}

function sample(ms) {
  const now = performance.now() / 1000;
  const cur = {
    t: now,
    requests: sum(ms, 'sluice_request_duration_seconds_count'),
    request_s: sum(ms, 'sluice_request_duration_seconds_sum'),
    gen_tokens: sum(ms, 'sluice_gen_generated_tokens_total'),
  };
  if (lastMetrics && cur.t > lastMetrics.t) {
    const dt = cur.t - lastMetrics.t, dn = cur.requests - lastMetrics.requests;
    history.push({
      rps: Math.max(0, dn / dt),
      tps: Math.max(0, (cur.gen_tokens - lastMetrics.gen_tokens) / dt),
      latency_ms: dn > 0 ? 1000 * (cur.request_s - lastMetrics.request_s) / dn : 0,
    });
    while (history.length > HISTORY) history.shift();
  }
  lastMetrics = cur;
  drawChart();
}

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  return e;
}

// Two scales: requests and tokens per second on the left, latency (ms) on the right.
function drawChart() {
  const W = Math.max(300, $('chart').clientWidth || 600), H = 160, L = 44, R = 52, T = 8, B = 8;
  const s = svg('svg', {viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'throughput and latency'});
  const rate = Math.max(1, ...history.map((p) => Math.max(p.rps, p.tps)));
  const lat = Math.max(1, ...history.map((p) => p.latency_ms));
  for (let i = 0; i <= 4; i++) {
    const y = T + (H - T - B) * i / 4;
    s.append(svg('line', {x1: L, x2: W - R, y1: y, y2: y, class: 'grid'}));
  }
  const label = (x, y, text, anchor) => { const t = svg('text', {x, y, 'text-anchor': anchor}); t.textContent = text; s.append(t); };
  label(L - 4, T + 8, rate.toFixed(rate < 10 ? 1 : 0) + '/s', 'end');
  label(L - 4, H - B, '0', 'end');
  label(W - R + 4, T + 8, lat.toFixed(0) + ' ms', 'start');
  const x = (i) => L + (W - L - R) * (i + HISTORY - history.length) / (HISTORY - 1);
  const y = (v, max) => H - B - (H - T - B) * v / max;
  const line = (key, max, cls) => {
    if (history.length < 2) return;
    const pts = history.map((p, i) => x(i).toFixed(1) + ',' + y(p[key], max).toFixed(1)).join(' ');
    s.append(svg('polyline', {points: pts, fill: 'none', 'stroke-width': 2, class: cls}));
  };
  line('rps', rate, 'l1');
  line('tps', rate, 'l2');
  line('latency_ms', lat, 'l3');
  $('chart').replaceChildren(s);
  $('chart').dataset.points = String(history.length);
}

// ---------------------------------------------------------------- polling

async function poll() {
  clearTimeout(pollTimer);
  try {
    const [list, ready, metrics] = await Promise.all([
      json('/v1/models'),
      json('/readyz').catch(() => null),
      api('/metrics').then((r) => (r.ok ? r.text() : '')),
    ]);
    const ms = parseMetrics(metrics);
    let limits = null;
    // asked once per key: a 403 every poll would fill the server's auth-rejection counter
    if (!adminDenied) {
      try { limits = await json('/v1/admin/config'); } catch (e) { if (e.status !== 403) throw e; adminDenied = true; }
    }
    showModels(list);
    showMemory(list, ms);
    showBatching(ms, limits);
    showGeneration(ms);
    showQueues(ready, ms);
    sample(ms);
    const pill = $('ready');
    pill.textContent = ready && ready.ready ? 'ready' : 'not ready' + (ready ? ': ' + ready.not_ready.join(', ') : '');
    pill.className = 'pill ' + (ready && ready.ready ? 'ok' : 'bad');
    $('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
    $('error').textContent = '';
    document.body.dataset.loaded = '1';
  } catch (e) {
    $('error').textContent = e.message;
  }
  pollTimer = setTimeout(poll, POLL_MS);
}

// ---------------------------------------------------------------- chat

let chatAbort = null;

async function send() {
  const out = $('answer');
  const model = $('chat-model').value;
  const body = {
    model: model || undefined,
    messages: [{role: 'user', content: $('prompt').value}],
    temperature: Number($('temperature').value),
    max_tokens: Number($('max-tokens').value),
    stream: true,
    stream_options: {include_usage: true},
  };
  chatAbort = new AbortController();
  $('send').disabled = true;
  $('stop').disabled = false;
  out.textContent = '';
  out.dataset.state = 'streaming';
  out.dataset.chunks = '0';
  const t0 = performance.now();
  let chunks = 0, tokens = 0;
  try {
    const r = await api('/v1/chat/completions', {
      method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body),
      signal: chatAbort.signal,
    });
    if (!r.ok) {
      const e = await r.json().catch(() => null);
      throw new Error(e && e.error ? e.error.message : 'HTTP ' + r.status);
    }
    const reader = r.body.getReader(), dec = new TextDecoder();
    let buf = '', done = false;
    while (!done) {
      const part = await reader.read();
      if (part.done) break;
      buf += dec.decode(part.value, {stream: true});
      let cut;
      while ((cut = buf.indexOf('\n\n')) >= 0) {
        const event = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        for (const line of event.split('\n')) {
          if (!line.startsWith('data: ')) continue;
          const data = line.slice(6);
          if (data === '[DONE]') { done = true; break; }
          const c = JSON.parse(data);
          if (c.error) throw new Error(c.error.message);
          if (c.usage) tokens = c.usage.completion_tokens;
          for (const ch of c.choices || []) {
            if (ch.delta && ch.delta.content) {
              out.textContent += ch.delta.content;
              chunks++;
              out.dataset.chunks = String(chunks);
            }
            if (ch.finish_reason) out.dataset.finish = ch.finish_reason;
          }
        }
      }
      const s = (performance.now() - t0) / 1000;
      $('chat-stats').textContent = chunks + ' chunks in ' + s.toFixed(1) + ' s';
    }
    out.dataset.state = 'done';
    const s = (performance.now() - t0) / 1000;
    $('chat-stats').textContent = (tokens || chunks) + ' tokens in ' + s.toFixed(1) + ' s (' +
      ((tokens || chunks) / s).toFixed(1) + '/s), finish: ' + (out.dataset.finish || '?');
  } catch (e) {
    if (e.name === 'AbortError') {
      out.dataset.state = 'stopped';
      $('chat-stats').textContent = 'stopped after ' + chunks + ' chunks';
    } else {
      out.dataset.state = 'error';
      out.textContent += (out.textContent ? '\n' : '') + e.message;
    }
  } finally {
    chatAbort = null;
    $('send').disabled = false;
    $('stop').disabled = true;
  }
}

function stop() {
  if (chatAbort) chatAbort.abort();
}

// ---------------------------------------------------------------- embeddings

async function compare() {
  const out = $('emb-sim');
  out.value = '…';
  out.dataset.state = 'busy';
  try {
    const r = await json('/v1/embeddings', {
      method: 'POST', headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({model: $('emb-model').value || undefined, input: [$('emb-a').value, $('emb-b').value]}),
    });
    const [a, b] = r.data.map((d) => d.embedding);
    let dot = 0, na = 0, nb = 0;
    for (let i = 0; i < a.length; i++) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
    out.value = (dot / Math.sqrt(na * nb)).toFixed(4);
    out.dataset.state = 'done';
  } catch (e) {
    out.value = e.message;
    out.dataset.state = 'error';
  }
}

// With a key, the document is fetched with it and shown from a blob: URL (a plain link would go without it).
async function openDocument(ev) {
  if (!apiKey) return;
  ev.preventDefault();
  try {
    const r = await api('/openapi.json');
    const blob = new Blob([await r.text()], {type: 'application/json'});
    window.open(URL.createObjectURL(blob), '_blank', 'noopener');
  } catch (e) {
    $('error').textContent = e.message;
  }
}

document.addEventListener('DOMContentLoaded', () => {
  $('keyform').addEventListener('submit', useKey);
  $('key-change').addEventListener('click', () => askKey(''));
  $('key-change').hidden = !apiKey;
  $('send').addEventListener('click', send);
  $('stop').addEventListener('click', stop);
  $('emb-go').addEventListener('click', compare);
  $('openapi').addEventListener('click', openDocument);
  drawChart();
  poll();
});
