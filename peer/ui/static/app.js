// redleader dashboard: polls the agent's read-only JSON API every second and
// renders it. No library, no build step. Every value from the API goes into
// the page through textContent or an attribute, never as HTML: member names
// and URLs come from the network.
'use strict';

(() => {
  const POLL_MS = 1000;        // while the tab is visible
  const HIDDEN_POLL_MS = 5000; // while it is not
  const CHART_SAMPLES = 300;   // 5 minutes of 1 s samples
  const MAX_EVENTS = 200;
  const MAX_JOBS = 50;
  // Rates are averaged over SMOOTH seconds: jobs count their bytes when a
  // segment (32 MiB) is done, so per-second values come in lumps.
  const SMOOTH = 5;

  const state = {
    status: null,
    members: [],
    events: null,     // null: not available (election not running)
    policy: null,
    jobs: [],
    samples: [],      // throughput samples, oldest first
    seq: 0,           // newest throughput sample seen
    interval: 1,
    totals: null,
    lastOK: 0,        // Date.now() of the last fully answered poll
    lastError: '',
  };

  // ---- fetching ----

  async function getJSON(path) {
    const r = await fetch(path, { cache: 'no-store', credentials: 'omit', redirect: 'error' });
    if (!r.ok) {
      let msg = r.status + ' ' + r.statusText;
      try { msg = (await r.json()).error || msg; } catch (_) { /* not JSON */ }
      const e = new Error(path + ': ' + msg);
      e.status = r.status;
      throw e;
    }
    return r.json();
  }

  async function poll() {
    const since = state.seq;
    const [st, ms, ev, po, jo, tp] = await Promise.allSettled([
      getJSON('/v1/status'),
      getJSON('/v1/members'),
      getJSON('/v1/events'),
      getJSON('/v1/policy'),
      getJSON('/v1/jobs'),
      getJSON('/v1/throughput' + (since > 0 ? '?since=' + since : '')),
    ]);
    const errors = [];
    if (st.status === 'fulfilled') state.status = st.value; else errors.push(st.reason);
    if (ms.status === 'fulfilled') state.members = ms.value || []; else errors.push(ms.reason);
    // 503: the election (or the job queue) is not running now: not an outage.
    if (ev.status === 'fulfilled') state.events = ev.value || [];
    else if (ev.reason.status === 503) state.events = null; else errors.push(ev.reason);
    if (po.status === 'fulfilled') state.policy = po.value;
    else if (po.reason.status === 503) state.policy = null; else errors.push(po.reason);
    if (jo.status === 'fulfilled') state.jobs = jo.value || [];
    else if (jo.reason.status !== 503) errors.push(jo.reason);
    if (tp.status === 'fulfilled') addSamples(tp.value, since); else errors.push(tp.reason);
    if (errors.length === 0) {
      state.lastOK = Date.now();
      state.lastError = '';
    } else {
      state.lastError = String(errors[0].message || errors[0]);
    }
    render();
  }

  function addSamples(tp, since) {
    state.interval = tp.interval_s || 1;
    state.totals = tp.totals;
    if (tp.seq < since) {
      // The agent restarted: its samples start over.
      state.samples = [];
      state.seq = 0;
    }
    for (const s of tp.samples || []) {
      if (s.seq > state.seq) state.samples.push(s);
    }
    state.seq = Math.max(state.seq, tp.seq);
    if (state.samples.length > CHART_SAMPLES) state.samples.splice(0, state.samples.length - CHART_SAMPLES);
  }

  function schedule() {
    const wait = document.hidden ? HIDDEN_POLL_MS : POLL_MS;
    setTimeout(() => { poll().catch(showError).finally(schedule); }, wait);
  }

  function showError(e) {
    state.lastError = String(e && e.message || e);
    renderLive();
  }

  // ---- formatting ----

  function bytes(n) {
    if (n == null || n < 0) return '—';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n.toFixed(0) : n.toFixed(n < 10 ? 2 : 1)) + ' ' + units[i];
  }

  function bits(bytesPerSecond) {
    let v = bytesPerSecond * 8;
    const units = ['bit/s', 'kbit/s', 'Mbit/s', 'Gbit/s'];
    let i = 0;
    while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
    return (i === 0 ? v.toFixed(0) : v.toFixed(v < 10 ? 2 : 1)) + ' ' + units[i];
  }

  function duration(s) {
    s = Math.max(0, Math.floor(s));
    const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60), sec = s % 60;
    if (d > 0) return d + 'd ' + h + 'h';
    if (h > 0) return h + 'h ' + m + 'm';
    if (m > 0) return m + 'm ' + sec + 's';
    return sec + 's';
  }

  function ago(iso) {
    if (!iso) return '—';
    const t = Date.parse(iso);
    if (isNaN(t) || t <= 0) return '—';
    return duration((Date.now() - t) / 1000) + ' ago';
  }

  function clock(iso) {
    const d = new Date(iso);
    if (isNaN(d)) return '—';
    const p = (n) => String(n).padStart(2, '0');
    return p(d.getHours()) + ':' + p(d.getMinutes()) + ':' + p(d.getSeconds());
  }

  function rate(r) {
    if (r == null || r === '') return '—';
    return r === '0' ? 'unlimited' : r.replace(/bit$/, 'bit/s');
  }

  const short = (node) => node ? node.slice(0, 8) : '';

  // named replaces the node IDs of known members in text by their names.
  function named(text) {
    for (const m of state.members) {
      if (m.name && m.node) text = text.split(m.node).join(m.name);
    }
    return text;
  }

  function nameOf(node) {
    if (!node) return '—';
    const m = state.members.find((x) => x.node === node);
    return m && m.name ? m.name : short(node);
  }

  // ---- DOM helpers ----

  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v == null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k === 'title') e.title = v;
      // Through the CSSOM: the CSP forbids style attributes.
      else if (k === 'width') e.style.width = v;
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) {
      if (c == null || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function setText(id, text) {
    const e = document.getElementById(id);
    if (e.textContent !== text) e.textContent = text;
  }

  function fillKV(id, pairs) {
    const dl = document.getElementById(id);
    dl.replaceChildren(...pairs.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', {}, v)]));
  }

  function fillBody(table, rows) {
    document.querySelector('#' + table + ' tbody').replaceChildren(...rows);
  }

  // ---- rendering ----

  function render() {
    renderLive();
    renderHeader();
    renderLeader();
    renderRaft();
    renderPolicy();
    renderRates();
    renderChart();
    renderMembers();
    renderJobs();
    renderEvents();
  }

  function renderLive() {
    const live = document.getElementById('live');
    if (state.lastError && Date.now() - state.lastOK > 3 * POLL_MS) {
      live.className = 'live down';
      live.textContent = 'agent not answering: ' + state.lastError;
    } else if (state.lastOK) {
      live.className = 'live ok';
      live.textContent = 'live · updated ' + clock(new Date(state.lastOK).toISOString());
    }
  }

  function renderHeader() {
    const st = state.status;
    if (!st) return;
    setText('agent-name', st.name || short(st.node));
    const role = document.getElementById('agent-role');
    role.className = 'pill' + (st.role === 'leader' ? ' leader' : '');
    role.textContent = st.role === 'leader' ? 'Red Leader' : 'peer';
    const facts = [st.subnet, st.location && 'location ' + st.location, st.addr, st.version, 'up ' + duration(st.uptime_s)]
      .filter(Boolean).join(' · ');
    setText('agent-facts', facts);
    document.title = (st.name || 'agent') + ' · redleader';
  }

  function renderLeader() {
    const st = state.status;
    const rl = st && st.red_leader;
    const name = document.getElementById('rl-name');
    if (!rl || !rl.node) {
      name.className = 'big none';
      setText('rl-name', st && st.raft && st.raft.state ? 'none yet' : 'no election');
      setText('rl-facts', '');
      document.getElementById('rl-why').replaceChildren();
      setText('rl-reason', '');
      return;
    }
    name.className = 'big';
    setText('rl-name', rl.name || nameOf(rl.node));
    name.dataset.node = rl.node;
    setText('rl-facts', 'node ' + short(rl.node) + ' · epoch ' + rl.epoch + ' · since ' + ago(rl.since) +
      ' · ' + (rl.confirmed ? 'confirmed' : 'not confirmed yet'));
    // Why: its ranking inputs as this agent sees them, and the reason the
    // appointment committed.
    const m = state.members.find((x) => x.node === rl.node);
    const why = document.getElementById('rl-why');
    if (m) {
      why.replaceChildren(
        el('dt', { text: 'priority' }), el('dt', { text: 'version' }), el('dt', { text: 'progress' }), el('dt', { text: 'uptime' }),
        el('dd', { text: m.priority }), el('dd', { text: String(m.version) }), el('dd', { text: bytes(m.progress) }),
        el('dd', { text: duration(m.uptime_s) }));
    } else {
      why.replaceChildren();
    }
    let reason = '';
    if (state.events) {
      for (let i = state.events.length - 1; i >= 0; i--) {
        const e = state.events[i];
        if (e.kind === 'appoint' && e.node === rl.node && e.epoch === rl.epoch) { reason = e.reason; break; }
      }
    }
    setText('rl-reason', reason ? 'Why: ' + named(reason) : (m && m.rank === 1 ? 'Why: ranks first by the ranking rules.' : ''));
  }

  function renderRaft() {
    const st = state.status;
    if (!st || !st.raft || !st.raft.state) {
      fillKV('raft', [['state', 'not running']]);
      return;
    }
    const r = st.raft;
    fillKV('raft', [
      ['state here', r.state],
      ['leader', r.leader ? nameOf(r.leader) : '—'],
      ['voters', String(r.voters)],
      ['standbys', String(r.standbys)],
      ['term', String(r.term)],
      ['commit index', String(r.commit_index)],
      ['cluster', el('span', { class: 'mono', title: r.cluster_id, text: short(r.cluster_id) || '—' })],
    ]);
  }

  function renderPolicy() {
    const p = state.policy;
    if (!p) {
      fillKV('policy', [['policy', 'not available']]);
      return;
    }
    fillKV('policy', [
      ['version', String(p.version || 0)],
      ['Red Leader WAN', rate(p.leader_rate)],
      ['others WAN', rate(p.peer_rate)],
      ['LAN serving', rate(p.lan_rate)],
    ]);
  }

  // recentRate is the mean rate of a field over the last n samples.
  function recentRate(field, n) {
    const s = state.samples.slice(-n);
    if (s.length === 0) return 0;
    return s.reduce((a, x) => a + x[field], 0) / (s.length * state.interval);
  }

  function renderRates() {
    const t = state.totals || {};
    const row = (label, field) => [
      el('dt', { text: label }),
      el('dd', { text: bits(recentRate(field, SMOOTH)) }),
      el('dd', { class: 'muted', text: t[field] != null ? bytes(t[field]) + ' total' : '' }),
    ];
    document.getElementById('rates').replaceChildren(
      ...row('WAN in', 'wan'), ...row('LAN in', 'lan_in'), ...row('LAN out', 'lan_out'),
      el('dt', { text: 'from cache' }), el('dd', { text: '' }),
      el('dd', { class: 'muted', text: t.cache != null ? bytes(t.cache) + ' total' : '' }));
  }

  // niceMax rounds a rate up to 1, 2 or 5 × 10^n (bytes/s as bits).
  function niceMax(bytesPerSecond) {
    const b = Math.max(bytesPerSecond * 8, 8000); // at least 8 kbit/s
    const p = Math.pow(10, Math.floor(Math.log10(b)));
    for (const m of [1, 2, 5, 10]) if (b <= m * p) return m * p / 8;
    return 10 * p / 8;
  }

  const SVG = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text != null) e.textContent = text;
    return e;
  }

  // smooth returns the samples' rates (bytes/s) of field as moving averages
  // over SMOOTH seconds.
  function smooth(field) {
    const s = state.samples, iv = state.interval, n = Math.max(1, Math.round(SMOOTH / iv));
    const out = new Array(s.length);
    let sum = 0;
    for (let i = 0; i < s.length; i++) {
      sum += s[i][field];
      if (i >= n) sum -= s[i - n][field];
      out[i] = sum / (Math.min(i + 1, n) * iv);
    }
    return out;
  }

  function renderChart() {
    const box = document.getElementById('chart');
    const W = Math.max(box.clientWidth, 300), H = Math.max(box.clientHeight, 120);
    box.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    const left = 78, right = 10, top = 8, bottom = 22;
    const pw = W - left - right, ph = H - top - bottom;
    const s = state.samples;
    const series = { wan: smooth('wan'), lan_in: smooth('lan_in'), lan_out: smooth('lan_out') };
    let peak = 0;
    for (const v of Object.values(series)) for (const x of v) peak = Math.max(peak, x);
    const ymax = niceMax(peak);
    const span = CHART_SAMPLES * state.interval; // seconds across the plot
    const now = s.length ? Date.parse(s[s.length - 1].time) : Date.now();
    const X = (t) => left + pw * (1 - (now - t) / 1000 / span);
    const Y = (v) => top + ph * (1 - v / ymax);
    const parts = [];
    for (let i = 0; i <= 4; i++) {
      const v = ymax * i / 4, y = Y(v);
      parts.push(svg('line', { class: 'grid-line', x1: left, x2: W - right, y1: y, y2: y }));
      parts.push(svg('text', { class: 'axis', x: left - 6, y: y + 4, 'text-anchor': 'end' }, bits(v)));
    }
    for (let m = 0; m <= span / 60; m++) {
      const x = left + pw * (1 - m * 60 / span);
      parts.push(svg('text', { class: 'axis', x: x, y: H - 6, 'text-anchor': m === 0 ? 'end' : 'middle' }, m === 0 ? 'now' : '−' + m + ' min'));
    }
    const line = (field) => s.map((x, i) => X(Date.parse(x.time)).toFixed(1) + ',' + Y(series[field][i]).toFixed(1)).join(' ');
    if (s.length > 1) {
      const first = X(Date.parse(s[0].time)).toFixed(1), last = X(Date.parse(s[s.length - 1].time)).toFixed(1);
      parts.push(svg('polygon', { class: 'wan-area', points: first + ',' + Y(0) + ' ' + line('wan') + ' ' + last + ',' + Y(0) }));
      parts.push(svg('polyline', { class: 'lanout', points: line('lan_out') }));
      parts.push(svg('polyline', { class: 'lanin', points: line('lan_in') }));
      parts.push(svg('polyline', { class: 'wan', points: line('wan') }));
    } else {
      parts.push(svg('text', { class: 'axis', x: left + pw / 2, y: top + ph / 2, 'text-anchor': 'middle' }, 'collecting samples…'));
    }
    box.replaceChildren(...parts);
  }

  const STATUS_ORDER = { alive: 0, suspect: 1, left: 2, dead: 3 };

  function renderMembers() {
    const st = state.status;
    const seat = st && st.red_leader ? st.red_leader.node : '';
    const raftLeader = st && st.raft ? st.raft.leader : '';
    const ms = state.members.slice().sort((a, b) =>
      (STATUS_ORDER[a.status] ?? 9) - (STATUS_ORDER[b.status] ?? 9) ||
      (a.rank || 1e9) - (b.rank || 1e9) || a.name.localeCompare(b.name));
    const alive = ms.filter((m) => m.status === 'alive').length;
    setText('members-count', ms.length + ' listed · ' + alive + ' alive');
    fillBody('members', ms.map((m) => {
      const cls = [m.self ? 'self' : '', m.node === seat ? 'red-leader' : '', m.status === 'left' || m.status === 'dead' ? 'gone' : '']
        .filter(Boolean).join(' ');
      return el('tr', { class: cls, 'data-node': m.node, 'data-status': m.status },
        el('td', {}, el('strong', { text: m.name || short(m.node) }),
          m.node === seat ? el('span', { class: 'tag rl', text: 'Red Leader' }) : null,
          m.node === raftLeader ? el('span', { class: 'tag raft', text: 'Raft leader' }) : null,
          m.self ? el('span', { class: 'tag', text: 'this agent' }) : null),
        el('td', { class: 'mono', title: m.node, text: short(m.node) }),
        el('td', { class: 'mono', text: m.addr + ':' + m.gossip_port }),
        el('td', {}, el('span', { class: 'pill ' + m.status, text: m.status })),
        el('td', { class: 'num', text: m.rank > 0 ? String(m.rank) : '—' }),
        el('td', {}, m.eligible ? 'yes' : el('span', { class: 'why-not', text: 'no: ' + (m.ineligible || (m.not_leader_material ? 'not leader material' : 'not ranked')) })),
        el('td', { text: m.priority }),
        el('td', { class: 'num', text: String(m.version) }),
        el('td', { class: 'num', text: bytes(m.progress) }),
        el('td', { class: 'num', text: duration(m.uptime_s) }));
    }));
  }

  function renderJobs() {
    const jobs = state.jobs.slice(-MAX_JOBS).reverse();
    const running = state.jobs.filter((j) => j.state === 'running').length;
    setText('jobs-count', state.jobs.length ? state.jobs.length + ' · ' + running + ' running' : '');
    document.getElementById('jobs-empty').hidden = state.jobs.length > 0;
    fillBody('jobs', jobs.map((j) => {
      const pct = j.total > 0 ? Math.min(100, 100 * j.held / j.total) : (j.state === 'done' ? 100 : 0);
      const b = j.bytes || {};
      const sum = (b.cache || 0) + (b.peers || 0) + (b.origin || 0);
      const share = (n) => (sum > 0 ? 100 * n / sum : 0).toFixed(2) + '%';
      const reasons = Object.entries(b.origin_by_reason || {}).filter(([, n]) => n > 0)
        .map(([k, n]) => k + ' ' + bytes(n)).join(', ');
      return el('tr', { 'data-job': j.id, 'data-state': j.state, 'data-held': j.held, 'data-total': j.total },
        el('td', { class: 'mono', text: j.id }),
        el('td', {}, el('div', { class: 'url', title: j.url, text: j.url }),
          el('div', { class: 'sub', text: j.priority + ' priority' + (j.share ? ' · shared' : '') + (j.resumes ? ' · resumed ' + j.resumes + '×' : '') })),
        el('td', {}, el('span', { class: 'pill ' + j.state, text: j.state })),
        el('td', {},
          el('div', { class: 'bar' }, j.total < 0 && j.state === 'running'
            ? el('span', { class: 'indeterminate' })
            : el('span', { class: 'held', width: pct.toFixed(2) + '%' })),
          el('div', { class: 'sub progress-text', text: bytes(j.held) + ' of ' + (j.total >= 0 ? bytes(j.total) : 'unknown') +
            (j.total > 0 ? ' (' + pct.toFixed(1) + '%)' : '') }),
          j.error ? el('div', { class: 'err', text: j.error }) : null),
        el('td', {},
          el('div', { class: 'bar', title: 'cache / peers / origin' },
            el('span', { class: 'src-cache', width: share(b.cache || 0) }),
            el('span', { class: 'src-peers', width: share(b.peers || 0) }),
            el('span', { class: 'src-origin', width: share(b.origin || 0) })),
          el('div', { class: 'sub', text: 'cache ' + bytes(b.cache || 0) + ' · peers ' + bytes(b.peers || 0) + ' · origin ' + bytes(b.origin || 0) }),
          reasons ? el('div', { class: 'sub', text: 'origin: ' + reasons }) : null),
        el('td', { class: 'sub', text: j.started ? ago(j.started) : 'queued ' + ago(j.created) }));
    }));
  }

  function renderEvents() {
    const empty = document.getElementById('events-empty');
    if (!state.events) {
      empty.hidden = false;
      fillBody('events', []);
      return;
    }
    empty.hidden = true;
    const evs = state.events.slice(-MAX_EVENTS).reverse();
    fillBody('events', evs.map((e) => el('tr', { class: 'sev-' + e.severity },
      el('td', { class: 'num', text: String(e.seq) }),
      el('td', { title: e.time, text: clock(e.time) }),
      el('td', { text: e.kind }),
      el('td', { text: e.node ? nameOf(e.node) : '' }),
      el('td', { class: 'num', text: e.epoch ? String(e.epoch) : '' }),
      el('td', { text: named(e.reason) }))));
  }

  window.addEventListener('resize', renderChart);
  poll().catch(showError).finally(schedule);
})();
