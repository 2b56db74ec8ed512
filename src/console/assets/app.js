// The Tributary console: a few pages over the admin API. Every value that
// comes from the engine or the upstream is set as text, never as markup.
'use strict';

const TOKEN_KEY = 'tributary.admin_token';
const main = document.getElementById('main');

// ---- small helpers ---------------------------------------------------------

/** An element: h('td', {class: 'num'}, 'text', child, …). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace `el`'s children, leaving out the absent ones. */
function put(el, ...children) {
  el.replaceChildren(...children.flat(2).filter((c) => c !== null && c !== undefined && c !== false));
}

function table(headers, rows, attrs) {
  return h('table', attrs,
    h('thead', {}, h('tr', {}, headers.map((t) => h('th', { class: /^(lag|objects|delivered|dead|depth|attempts|dropped|rows|per)/i.test(t) ? 'num' : null }, t)))),
    h('tbody', {}, rows));
}

const fmt = {
  n: (v) => (v === null || v === undefined ? '–' : Number(v).toLocaleString('en-US', { maximumFractionDigits: 1 })),
  ms: (v) => (v === null || v === undefined ? '–' : v < 1000 ? `${v} ms` : `${(v / 1000).toFixed(1)} s`),
  time: (v) => (v ? v.replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '–'),
};

function badge(text, cls) {
  return h('span', { class: `badge ${cls || text}` }, text);
}

function toast(text) {
  let el = document.getElementById('toast');
  if (!el) document.body.append((el = h('div', { id: 'toast', role: 'status' })));
  el.textContent = text;
  el.classList.add('show');
  clearTimeout(el.hideTimer);
  el.hideTimer = setTimeout(() => el.classList.remove('show'), 3000);
}

// ---- the API ---------------------------------------------------------------

class ApiError extends Error {}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY)}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await response.json().catch(() => null);
  if (response.status === 401) {
    signOut('The admin token was refused; sign in again.');
    throw new ApiError('unauthorized');
  }
  if (!response.ok) throw new ApiError((data && data.error && data.error.message) || `${response.status} ${response.statusText}`);
  return data;
}

const enc = encodeURIComponent;

// ---- live updates: the overview as server-sent events, read with fetch so
// the token travels in a header ------------------------------------------------

const live = {
  overview: null,
  listeners: new Set(),
  controller: null,
  start() {
    if (this.controller) return;
    this.controller = new AbortController();
    this.read(this.controller.signal);
  },
  stop() {
    if (this.controller) this.controller.abort();
    this.controller = null;
    document.getElementById('live').classList.remove('on');
  },
  async read(signal) {
    const dot = document.getElementById('live');
    while (!signal.aborted) {
      try {
        const response = await fetch('/v1/console/events', { headers: { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY)}` }, signal });
        if (response.status === 401) return signOut('The admin token was refused; sign in again.');
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let buffer = '';
        dot.classList.add('on');
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let end;
          while ((end = buffer.indexOf('\n\n')) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
            if (data) this.publish(JSON.parse(data));
          }
        }
      } catch (e) {
        if (signal.aborted) return;
      }
      dot.classList.remove('on');
      await new Promise((r) => setTimeout(r, 2000));
    }
  },
  publish(overview) {
    this.overview = overview;
    for (const listener of this.listeners) listener(overview);
  },
  /** Call `listener` with every overview while the page shows; returns nothing. */
  follow(listener) {
    this.listeners.clear();
    this.listeners.add(listener);
    if (this.overview) listener(this.overview);
  },
};

// ---- charts ----------------------------------------------------------------

const SVG = 'http://www.w3.org/2000/svg';

/** A small chart of an hour of points: lag (ms) and throughput (per second). */
function chart(title, points) {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', '0 0 300 60');
  svg.setAttribute('preserveAspectRatio', 'none');
  const draw = (values, cls) => {
    const max = Math.max(1, ...values);
    const line = document.createElementNS(SVG, 'polyline');
    line.setAttribute('class', cls);
    line.setAttribute('points', values.map((v, i) => `${(i / Math.max(1, values.length - 1)) * 300},${58 - (v / max) * 54}`).join(' '));
    svg.append(line);
  };
  const last = points[points.length - 1] || {};
  const el = h('div', { class: 'chart' },
    h('div', { class: 'title' }, h('span', {}, title),
      h('span', {}, h('span', { class: 'lag' }, `lag ${fmt.ms(last.lag_ms)}`), h('span', { class: 'muted' }, ' · '), h('span', { class: 'rate' }, `${fmt.n(last.per_sec)}/s`))),
    svg);
  draw(points.map((p) => p.lag_ms || 0), 'lag');
  draw(points.map((p) => p.per_sec || 0), 'rate');
  return el;
}

// ---- pages -----------------------------------------------------------------

/** Bumped by every route: a page's late answers must not draw over the next page. */
let currentView = 0;

function page(title, ...children) {
  put(main, h('h1', {}, title), ...children);
}

function failed(e) {
  if (e instanceof ApiError && e.message === 'unauthorized') return;
  main.append(h('p', { class: 'error' }, String(e.message || e)));
}

async function overviewPage() {
  const sources = h('tbody');
  const sinks = h('tbody');
  const charts = h('div', { class: 'charts' });
  page('Overview',
    h('h2', {}, 'Sources'),
    table(['Source', 'Kind', 'Phase', 'Lag', 'Objects', 'Per second', 'Backfill', 'Parked', 'Last error'], [], { id: 'sources' }),
    h('h2', {}, 'Sinks and queue fan-out'),
    table(['Sink', 'Kind', 'State', 'Cursor', 'Lag (changes)', 'Lag', 'Delivered', 'Delivered/s', 'Dead letters', 'Last error'], [], { id: 'sinks' }),
    h('h2', {}, 'The last hour'),
    charts);
  main.querySelector('#sources tbody').replaceWith(sources);
  main.querySelector('#sinks tbody').replaceWith(sinks);
  const view = currentView;
  let history = {};
  try {
    history = (await api('GET', '/v1/console/history')).series;
  } catch (e) {
    return failed(e);
  }
  if (view !== currentView) return;
  live.follow((o) => {
    for (const [key, point] of Object.entries(o.points || {})) {
      const series = (history[key] = history[key] || []);
      if (!series.length || series[series.length - 1].at !== point.at) series.push(point);
      if (series.length > 360) series.shift();
    }
    put(sources, ...o.sources.map((s) => {
      const share = s.lists ? Math.round((100 * s.lists_done) / s.lists) : s.phase === 'live' ? 100 : 0;
      return h('tr', { 'data-source': s.name },
        h('td', {}, h('a', { href: `#/sources/${enc(s.name)}` }, s.name)),
        h('td', {}, s.kind),
        h('td', { class: 'phase' }, s.paused ? badge('paused') : badge(s.phase), s.role === 'standby' ? [' ', badge('standby', 'standby')] : null),
        h('td', { class: 'num' }, fmt.ms(s.lag_ms)),
        h('td', { class: 'num' }, fmt.n(s.objects)),
        h('td', { class: 'num' }, fmt.n(s.objects_per_sec)),
        h('td', {}, s.lists ? [h('span', { class: 'bar', title: `${s.lists_done} of ${s.lists} lists` }, h('span', { 'data-width': share })),
          `${fmt.n(s.fetched)} fetched · ${s.lists_done}/${s.lists} lists`] : h('span', { class: 'muted' }, 'no backfill lists')),
        h('td', { class: 'num' }, fmt.n(s.parked_events)),
        h('td', { class: 'error' }, s.last_error || ''));
    }));
    for (const bar of sources.querySelectorAll('[data-width]')) bar.style.width = `${bar.dataset.width}%`;
    put(sinks, ...o.sinks.map((s) => h('tr', { 'data-sink': s.name },
      h('td', {}, s.name === 'queue:fanout' ? h('a', { href: '#/apps' }, s.name) : h('a', { href: `#/sinks/${enc(s.name)}` }, s.name)),
      h('td', {}, s.kind),
      h('td', {}, s.disabled ? badge('disabled', 'bad') : s.paused ? badge('paused') : badge(s.role, s.role), s.rewind_pending ? [' ', badge('rewinding', 'paused')] : null),
      h('td', { class: 'mono' }, s.cursor || '–'),
      h('td', { class: 'num' }, fmt.n(s.lag_changes)),
      h('td', { class: 'num' }, fmt.ms(s.lag_ms)),
      h('td', { class: 'num delivered' }, fmt.n(s.delivered)),
      h('td', { class: 'num' }, fmt.n(s.delivered_per_sec)),
      h('td', { class: 'num' }, s.dead_letters ? h('a', { href: `#/sinks/${enc(s.name)}` }, fmt.n(s.dead_letters)) : '0'),
      h('td', { class: 'error' }, s.last_error || ''))));
    put(charts, ...Object.keys(history).sort().map((key) => chart(key, history[key])));
  });
}

async function sourcePage(name) {
  page(`Source ${name}`, h('p', { class: 'muted' }, 'Loading…'));
  const render = async (shown) => {
    const [{ sources }, { lines }] = await Promise.all([api('GET', '/v1/sources'), api('GET', `/v1/sources/${enc(name)}/logs`)]);
    if (!shown()) return;
    const source = sources.find((s) => s.name === name);
    if (!source) throw new ApiError(`no source named '${name}'`);
    const pause = h('button', { type: 'button', onclick: () => act('POST', `/v1/sources/${enc(name)}/${source.paused ? 'resume' : 'pause'}`, source.paused ? 'resumed' : 'paused') },
      source.paused ? 'Resume' : 'Pause');
    const resources = [];
    for (const account of source.accounts) {
      const lists = new Set([...Object.keys(account.backfill), ...Object.keys(account.follow)]);
      for (const list of [...lists].sort()) {
        const b = account.backfill[list] || {};
        const f = account.follow[list] || {};
        resources.push(h('tr', {},
          h('td', {}, account.account || 'platform'), h('td', {}, list), h('td', {}, f.strategy || '–'),
          h('td', {}, b.skipped ? badge('skipped', 'bad') : b.done ? 'done' : `${fmt.n(b.fetched)} fetched`, b.objects_per_sec ? ` · ${fmt.n(b.objects_per_sec)}/s` : ''),
          h('td', {}, fmt.time(f.fresh_at)), h('td', {}, fmt.time(f.next_at)), h('td', { class: 'error' }, b.skipped || '')));
      }
    }
    const reconciles = source.accounts.filter((a) => a.reconcile).map((a) => {
      const last = a.reconcile.last || {};
      return h('tr', {}, h('td', {}, a.account || 'platform'), h('td', {}, a.reconcile.running ? 'running' : 'idle'),
        ...['checked', 'missing', 'extra', 'differed', 'repaired'].map((k) => h('td', { class: 'num' }, fmt.n(last[k]))),
        h('td', {}, fmt.time(a.reconcile.next_at)));
    });
    page(`Source ${name}`,
      h('div', { class: 'cards' },
        card('Phase', source.paused ? 'paused' : source.phase), card('Kind', source.kind), card('Lag', fmt.ms(source.lag_ms)),
        card('Objects', fmt.n(Object.values(source.objects).reduce((a, b) => a + b, 0))), card('Parked events', fmt.n(source.parked_events)),
        card('Cursor', source.cursor || '–')),
      h('div', { class: 'actions' }, pause),
      source.last_error ? h('p', { class: 'error' }, source.last_error) : null,
      source.parked_events ? h('p', { class: 'notice' }, `${source.parked_events} upstream event(s) parked: tributary parked --source ${name} --config … lists them; --redrive stores them again.`) : null,
      reconciles.length ? [h('h2', {}, 'Last reconcile'), table(['Account', 'State', 'Checked', 'Missing', 'Extra', 'Differed', 'Repaired', 'Next'], reconciles)] : null,
      h('h2', {}, 'Recent log lines'),
      logTable(lines),
      h('h2', {}, 'Objects'),
      table(['Object type', 'Rows'], Object.entries(source.objects).map(([o, n]) =>
        h('tr', {}, h('td', {}, h('a', { href: `#/changes?source=${enc(name)}&object=${enc(o)}` }, o)), h('td', { class: 'num' }, fmt.n(n))))),
      h('h2', {}, 'Accounts and resources'),
      table(['Account', 'Resource', 'Strategy', 'Backfill', 'Fresh at', 'Next listing', 'Skipped'], resources));
  };
  await refreshing(render, 2000);
}

function card(label, value) {
  return h('div', { class: 'card' }, h('div', { class: 'label' }, label), h('div', { class: 'value' }, value));
}

function logTable(lines) {
  if (!lines.length) return h('p', { class: 'muted' }, 'No log lines in this process yet.');
  return table(['At', 'Level', 'Kind', 'Message'], lines.slice().reverse().slice(0, 50).map((l) =>
    h('tr', {}, h('td', { class: 'mono' }, fmt.time(l.at)), h('td', {}, l.level), h('td', {}, l.kind || ''),
      h('td', {}, l.message, l.fields.length ? h('span', { class: 'muted' }, ' ', l.fields.map(([k, v]) => `${k}=${v}`).join(' ')) : ''))), { class: 'logs' });
}

/** Render now and every `ms` while the page shows; `render` gets a check
 * that says whether it still does (after its awaits). */
async function refreshing(render, ms) {
  const view = currentView;
  const shown = () => view === currentView;
  try {
    await render(shown);
  } catch (e) {
    return shown() && failed(e);
  }
  const timer = setInterval(async () => {
    if (!shown()) return clearInterval(timer);
    if (document.activeElement && ['INPUT', 'SELECT'].includes(document.activeElement.tagName)) return;
    try {
      await render(shown);
    } catch (e) {
      clearInterval(timer);
      if (shown()) failed(e);
    }
  }, ms);
}

async function act(method, path, done, body) {
  try {
    await api(method, path, body);
    toast(done);
    route();
  } catch (e) {
    if (!(e instanceof ApiError && e.message === 'unauthorized')) toast(`failed: ${e.message}`);
  }
}

async function sinkPage(name) {
  const figures = h('div', { class: 'cards' });
  const state = h('div', { class: 'actions' });
  const letters = h('div');
  const logs = h('div');
  const chartBox = h('div', { class: 'charts' });
  const rewindTo = h('input', { name: 'to', placeholder: 'chg_… or 2026-12-01T09:00:00Z', size: 34, required: true });
  const rewind = h('form', { class: 'inline', id: 'rewind', onsubmit: (event) => {
    event.preventDefault();
    const to = rewindTo.value.trim();
    const body = to.startsWith('chg_') ? { to_change: to } : { to_time: to };
    act('POST', `/v1/sinks/${enc(name)}/rewind`, `rewinding ${name}`, body);
  } }, h('label', {}, 'Rewind to a change id or a time (everything since is delivered again)', rewindTo), h('button', { type: 'submit', class: 'primary' }, 'Rewind'));
  page(`Sink ${name}`, figures, state, h('h2', {}, 'Rewind'), rewind, h('h2', {}, 'The last hour'), chartBox,
    h('h2', {}, 'Dead letters'), letters, h('h2', {}, 'Recent log lines'), logs);
  const view = currentView;
  let history = [];
  try {
    history = (await api('GET', '/v1/console/history')).series[`sink:${name}`] || [];
  } catch (e) {
    return failed(e);
  }
  if (view !== currentView) return;
  live.follow((o) => {
    const s = o.sinks.find((x) => x.name === name);
    if (!s) return;
    const point = (o.points || {})[`sink:${name}`];
    if (point) history.push(point);
    put(figures, 
      card('State', s.disabled ? 'disabled' : s.paused ? 'paused' : s.role), card('Cursor', s.cursor || '–'),
      h('div', { class: 'card', id: 'delivered' }, h('div', { class: 'label' }, 'Delivered (this process)'), h('div', { class: 'value' }, fmt.n(s.delivered))),
      card('Delivered/s', fmt.n(s.delivered_per_sec)), card('Lag', `${fmt.n(s.lag_changes)} · ${fmt.ms(s.lag_ms)}`), card('Dead letters', fmt.n(s.dead_letters)));
    const paused = s.paused;
    if (state.dataset.paused !== String(paused)) {
      state.dataset.paused = String(paused);
      put(state, h('button', { type: 'button', onclick: () => act('POST', `/v1/sinks/${enc(name)}/${paused ? 'resume' : 'pause'}`, paused ? 'resumed' : 'paused') }, paused ? 'Resume' : 'Pause'),
        s.last_error ? h('span', { class: 'error' }, s.last_error) : null);
    }
    put(chartBox, chart(`sink:${name}`, history));
  });
  await refreshing(async (shown) => {
    const [dead, log] = await Promise.all([api('GET', `/v1/sinks/${enc(name)}/dead_letters?limit=200`), api('GET', `/v1/sinks/${enc(name)}/logs`)]);
    if (!shown()) return;
    const rows = dead.dead_letters.map((l) => h('tr', { 'data-dead-letter': l.id },
      h('td', { class: 'mono' }, l.id), h('td', { class: 'mono' }, l.change_id), h('td', { class: 'error' }, l.error),
      h('td', { class: 'num' }, l.attempts), h('td', {}, fmt.time(l.created_at), l.redrive_requested ? [' ', badge('redriving', 'paused')] : null),
      h('td', {}, h('button', { type: 'button', class: 'redrive', onclick: () => act('POST', `/v1/sinks/${enc(name)}/dead_letters/redrive`, `redriving ${l.id}`, { ids: [l.id] }) }, 'Redrive'), ' ',
        h('button', { type: 'button', class: 'danger discard', onclick: () => confirm(`Discard ${l.id} for good?`) && act('DELETE', `/v1/sinks/${enc(name)}/dead_letters/${enc(l.id)}`, `discarded ${l.id}`) }, 'Discard'))));
    put(letters, rows.length
      ? h('div', {}, h('div', { class: 'actions' }, h('button', { type: 'button', id: 'redrive-all', onclick: () => act('POST', `/v1/sinks/${enc(name)}/dead_letters/redrive`, 'redriving every dead letter') }, 'Redrive all')),
        table(['Id', 'Change', 'Error', 'Attempts', 'Parked', ''], rows, { id: 'dead-letters' }))
      : h('p', { class: 'muted', id: 'no-dead-letters' }, 'No dead letters.'));
    put(logs, logTable(log.lines));
  }, 2000);
}

const FILTERS = [['source', 'Source'], ['object', 'Object type'], ['object_id', 'Object id'], ['op', 'Op'], ['type', 'Event type'], ['since', 'Since (RFC 3339)'], ['until', 'Until']];

async function changesPage(params) {
  const inputs = FILTERS.map(([key, label]) => h('label', {}, label, key === 'op'
    ? h('select', { name: key }, ['', 'read', 'insert', 'update', 'delete'].map((o) => h('option', { value: o, selected: params.get(key) === o }, o || 'any')))
    : h('input', { name: key, value: params.get(key) || '', size: key === 'since' || key === 'until' ? 22 : 14 })));
  const form = h('form', { class: 'inline', id: 'filters', onsubmit: (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    for (const el of form.querySelectorAll('input, select')) if (el.value.trim()) query.set(el.name, el.value.trim());
    const next = `#/changes?${query}`;
    // the same filters again: read again
    if (location.hash === next) route();
    else location.hash = next;
  } }, inputs, h('button', { type: 'submit', class: 'primary' }, 'Filter'));
  const body = h('tbody');
  const more = h('button', { type: 'button', hidden: true }, 'Older');
  page('Changes', form, table(['Change', 'Committed', 'Source', 'Object', 'Object id', 'Op', 'Type'], [], { id: 'changes' }), h('div', { class: 'actions' }, more));
  main.querySelector('#changes tbody').replaceWith(body);
  const view = currentView;
  const load = async (before) => {
    const query = new URLSearchParams(params);
    query.set('limit', '100');
    if (before) query.set('before', before);
    const { changes, next } = await api('GET', `/v1/changes?${query}`);
    if (view !== currentView) return;
    body.append(...changes.map((c) => h('tr', {},
      h('td', { class: 'mono' }, c.id), h('td', {}, fmt.time(c.committed_at)), h('td', {}, c.source), h('td', {}, c.object),
      h('td', { class: 'mono' }, h('a', { href: `#/objects/${enc(c.source)}/${enc(c.object)}/${enc(c.object_id)}` }, c.object_id)),
      h('td', {}, c.op), h('td', {}, c.type))));
    more.hidden = !next;
    more.onclick = () => load(next).catch(failed);
    if (!body.children.length) body.append(h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'No change matches.')));
  };
  await load().catch(failed);
}

async function objectPage(source, object, id) {
  page(`${object} ${id}`, h('p', { class: 'muted' }, 'Loading…'));
  const view = currentView;
  try {
    const query = new URLSearchParams({ source, object, object_id: id, limit: '1000' });
    const { changes } = await api('GET', `/v1/changes?${query}`);
    if (view !== currentView) return;
    changes.reverse();
    const steps = changes.map((c) => {
      const before = c.previous_attributes || {};
      const after = c.data || {};
      const fields = c.op === 'update' ? Object.keys(before) : [];
      return h('div', { class: 'step', 'data-change': c.id },
        h('div', { class: 'head' }, badge(c.op, c.op === 'delete' ? 'bad' : c.op), h('strong', {}, c.type), h('span', { class: 'mono muted' }, c.id), h('span', { class: 'muted' }, fmt.time(c.committed_at)),
          c.upstream_event_id ? h('span', { class: 'mono muted' }, c.upstream_event_id) : null),
        fields.length
          ? table(['Field', 'Before', 'After'], fields.map((f) => h('tr', {}, h('td', { class: 'mono' }, f),
            h('td', { class: 'mono before' }, JSON.stringify(before[f])), h('td', { class: 'mono after' }, JSON.stringify(after[f])))), { class: 'diff' })
          : c.op === 'delete' ? h('p', { class: 'muted' }, 'Deleted.') : h('pre', {}, JSON.stringify(after, null, 2)));
    });
    page(`${object} ${id}`, h('p', { class: 'muted' }, `${changes.length} change(s) in ${source}, oldest first`), steps.length ? steps : h('p', {}, 'No change of this object is in the change log.'));
  } catch (e) {
    failed(e);
  }
}

async function appsPage() {
  page('Apps and queues', h('p', { class: 'muted' }, 'Loading…'));
  await refreshing(async (shown) => {
    const { apps } = await api('GET', '/v1/console/apps');
    if (!shown()) return;
    const sections = apps.map((a) => h('section', { 'data-app': a.id },
      h('h2', {}, `${a.name} `, h('span', { class: 'mono muted' }, a.id), ' ', badge(a.kind, 'standby'), a.revoked ? [' ', badge('revoked', 'bad')] : null),
      h('p', {}, a.kind === 'inhouse' ? `Account: ${a.account || 'platform'}` : `Granted by: ${a.grants.length ? a.grants.join(', ') : 'no account yet'}`),
      a.queues.length
        ? table(['Queue', 'Code', 'Depth', 'Oldest unacknowledged', 'Dropped', 'Subscriptions'], a.queues.map((q) => h('tr', {},
          h('td', {}, q.name), h('td', { class: 'mono' }, q.code), h('td', { class: 'num' }, fmt.n(q.depth)), h('td', {}, fmt.time(q.oldest_unacked_at)),
          h('td', { class: 'num' }, fmt.n(q.dropped)), h('td', {}, q.subscriptions.map((s) => `${s.event_type} @ ${s.account}`).join(', ') || '–'))))
        : h('p', { class: 'muted' }, 'No queues.')));
    page('Apps and queues', sections.length ? sections : h('p', { class: 'muted' }, 'No apps yet: tributary apps create --config … --name … --kind inhouse --account platform'));
  }, 3000);
}

// ---- signing in, and the router --------------------------------------------

function signOut(reason) {
  sessionStorage.removeItem(TOKEN_KEY);
  live.stop();
  loginPage(reason);
}

function loginPage(reason) {
  document.getElementById('nav').hidden = true;
  if (document.body.dataset.admin !== 'on') {
    put(main, h('div', { class: 'login' }, h('h1', {}, 'The console is off'),
      h('p', {}, 'The console reads the admin API, which this engine runs without. Name the environment variable that holds the admin token in the config, then start the engine with it:'),
      h('pre', {}, '[api]\nadmin_token_env = "TRIBUTARY_ADMIN_TOKEN"'),
      h('pre', {}, 'TRIBUTARY_ADMIN_TOKEN=$(openssl rand -hex 24) tributary run --config tributary.toml')));
    return;
  }
  const input = h('input', { type: 'password', name: 'token', id: 'token', autocomplete: 'current-password', required: true, placeholder: 'admin token' });
  const error = h('p', { class: 'error' }, reason || '');
  const form = h('form', { id: 'login', onsubmit: async (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    const response = await fetch('/v1/console/overview', { headers: { Authorization: `Bearer ${input.value.trim()}` } });
    if (!response.ok) {
      sessionStorage.removeItem(TOKEN_KEY);
      error.textContent = response.status === 401 ? 'That is not the admin token.' : `The engine answered ${response.status}.`;
      return;
    }
    start();
  } }, h('label', { for: 'token' }, 'Admin token'), input, h('button', { type: 'submit', class: 'primary' }, 'Sign in'), error);
  put(main, h('div', { class: 'login' }, h('h1', {}, 'Sign in'),
    h('p', { class: 'muted' }, 'The token named by [api] admin_token_env. It is kept in this tab only.'), form));
  input.focus();
}

function route() {
  if (!sessionStorage.getItem(TOKEN_KEY)) return loginPage();
  currentView += 1;
  live.listeners.clear();
  const [path, query] = location.hash.replace(/^#\/?/, '').split('?');
  const parts = path.split('/').map(decodeURIComponent);
  const params = new URLSearchParams(query || '');
  switch (parts[0]) {
    case 'sources': return sourcePage(parts[1]);
    case 'sinks': return sinkPage(parts[1]);
    case 'changes': return changesPage(params);
    case 'objects': return objectPage(parts[1], parts[2], parts.slice(3).join('/'));
    case 'apps': return appsPage();
    default: return overviewPage();
  }
}

function start() {
  document.getElementById('nav').hidden = false;
  live.start();
  route();
}

document.getElementById('logout').addEventListener('click', () => signOut('Signed out.'));
window.addEventListener('hashchange', () => sessionStorage.getItem(TOKEN_KEY) && route());

// a link with #token=… (what `tributary demo` prints) signs in, and the
// token leaves the address bar at once
(function boot() {
  const match = location.hash.match(/^#token=([^&]+)/);
  if (match) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
    history.replaceState(null, '', `${location.pathname}#/`);
  }
  if (sessionStorage.getItem(TOKEN_KEY)) start();
  else loginPage();
})();
