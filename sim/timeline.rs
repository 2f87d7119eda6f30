//! A seed's timeline as one self-contained HTML page (inline SVG and
//! script, nothing fetched): a lane per node with its role and term over
//! time, faults as bands, a lane per lock with who held it under which
//! token (from grant to release or session end), a lane per client with
//! each call from invocation to answer (calls open at the run's end
//! marked), fenced-resource rejections marked, and the first violation
//! highlighted with the checker's message. Wheel zooms, drag pans, hover
//! shows details.
//!
//! `cargo sim --replay NAME --seed N --html out.html` (see runner.rs).
//! The page's script sets `data-rendered` on `<body>` when it has drawn,
//! and `data-error` if anything threw, which the headless-browser check
//! reads.

use crate::trace::Trace;

/// Renders `trace` of `name` at `seed`; `verdict` is the first violation,
/// if any, as the runner printed it.
pub fn render(name: &str, seed: u64, trace: &Trace, verdict: Option<&str>) -> String {
    let events = format!("[{}]", trace.lines().join(",\n"));
    let title = format!("{name} seed {seed}");
    PAGE.replace("__TITLE__", &html_escape(&title))
        .replace(
            "__VERDICT__",
            &html_escape(verdict.unwrap_or("no violation")),
        )
        .replace("__OK__", if verdict.is_some() { "bad" } else { "good" })
        // Inside a <script>, only "</" could end it early.
        .replace("__EVENTS__", &events.replace("</", "<\\/"))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const PAGE: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>raftlock timeline: __TITLE__</title>
<style>
 body { font: 13px/1.4 system-ui, sans-serif; margin: 0; color: #222; }
 header { padding: 8px 12px; border-bottom: 1px solid #ccc; }
 header h1 { font-size: 15px; margin: 0 0 4px; }
 .verdict { font-weight: 600; }
 .verdict.bad { color: #b00020; } .verdict.good { color: #1b7f3b; }
 #help { color: #666; }
 #wrap { overflow: auto; }
 svg { display: block; }
 .lane-label { font-size: 12px; fill: #333; }
 .seg-label { font-size: 10px; fill: #111; pointer-events: none; }
 .legend span { display: inline-block; margin-right: 12px; }
 .legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px; vertical-align: middle; }
</style></head>
<body>
<header>
 <h1>__TITLE__</h1>
 <div class="verdict __OK__">__VERDICT__</div>
 <div class="legend">
  <span><i style="background:#2e7d32"></i>leader</span>
  <span><i style="background:#f9a825"></i>candidate</span>
  <span><i style="background:#b0bec5"></i>follower</span>
  <span><i style="background:#ef9a9a"></i>fault</span>
  <span><i style="background:#64b5f6"></i>lock held</span>
  <span><i style="background:#8e24aa"></i>wait cancelled</span>
  <span><i style="background:#a5d6a7"></i>call answered</span>
  <span><i style="background:#ffe082"></i>call refused or failed</span>
  <span><i style="background:#ff7043"></i>call open at the end</span>
  <span><i style="background:#d50000"></i>stale token refused / violation</span>
 </div>
 <div id="help">Wheel: zoom time. Drag: pan. Hover: details. Add #t=FROM-TO (seconds) to the address to open on a window.</div>
</header>
<div id="wrap"><svg id="tl" xmlns="http://www.w3.org/2000/svg"></svg></div>
<script>
window.onerror = function (msg) { document.body.setAttribute('data-error', String(msg)); };
const EVENTS = __EVENTS__;
(function () {
  const NS = 'http://www.w3.org/2000/svg';
  const svg = document.getElementById('tl');
  const LANE = 22, LEFT = 150, TOP = 24;
  const end = Math.max(1, ...EVENTS.map(e => Math.max(e.t_us, e.until_us || 0))) * 1.02;
  let width = Math.max(900, window.innerWidth - 20);
  let x0 = 0, x1 = end;
  // '#t=21.2-21.5' opens the page on that window, in seconds.
  const win = /t=([0-9.]+)-([0-9.]+)/.exec(location.hash);
  if (win && +win[2] > +win[1]) { x0 = +win[1] * 1e6; x1 = Math.min(end, +win[2] * 1e6); }
  const lanes = [];
  const laneOf = {};
  function lane(key, label) {
    if (!(key in laneOf)) { laneOf[key] = lanes.length; lanes.push({ key: key, label: label, items: [] }); }
    return lanes[laneOf[key]];
  }
  const color = { Leader: '#2e7d32', Candidate: '#f9a825', PreCandidate: '#fdd835', Follower: '#b0bec5' };
  // Faults first, so the band lane is on top.
  const faults = lane('faults', 'faults');
  EVENTS.filter(e => e.kind === 'fault').forEach(e => faults.items.push({
    from: e.t_us, to: Math.max(e.until_us || e.t_us, e.t_us + 20000), fill: '#ef9a9a',
    // Its heal names the target: Restart(2), ResumeClient(1), Unclog(...).
    text: e.fault + (e.heals ? ' ' + e.heals.split(' at ')[0].replace(/^[A-Za-z]+/, '') : ''),
    tip: e.fault + ' at ' + (e.t_us / 1e6).toFixed(3) + ' s; healed by ' + (e.heals || 'nothing') }));
  // Nodes: each role event starts a segment that the next one ends.
  const nodes = [...new Set(EVENTS.filter(e => e.kind === 'role').map(e => e.node))].sort((a, b) => a - b);
  nodes.forEach(n => {
    const l = lane('node-' + n, 'node ' + n);
    const rs = EVENTS.filter(e => e.kind === 'role' && e.node === n);
    rs.forEach((e, i) => l.items.push({
      from: e.t_us, to: i + 1 < rs.length ? rs[i + 1].t_us : end, fill: color[e.role] || '#cfd8dc',
      text: e.role === 'Leader' ? 'L t' + e.term : 't' + e.term,
      tip: 'node ' + n + ': ' + e.role + ' in term ' + e.term + ' from ' + (e.t_us / 1e6).toFixed(3) + ' s' }));
  });
  // Locks: the first replica to apply a grant dates it; the hold ends
  // where the first replica applied its release, or the holder's session
  // ended (closed or expired); a hold still on at the run's end runs to it.
  const first = (kind, key) => {
    const m = {};
    EVENTS.filter(e => e.kind === kind).forEach(e => { const k = key(e); if (!(k in m)) m[k] = e; });
    return m;
  };
  const grants = first('grant', e => e.index);
  const ends = first('session_end', e => e.session);
  const releases = first('release', e => e.lock + '/' + e.session + '/' + e.token);
  const cancels = Object.values(first('cancel', e => e.index));
  const byLock = {};
  Object.values(grants).sort((a, b) => a.t_us - b.t_us).forEach(g => (byLock[g.lock] = byLock[g.lock] || []).push(g));
  cancels.forEach(c => { byLock[c.lock] = byLock[c.lock] || []; });
  Object.keys(byLock).sort().forEach(name => {
    const l = lane('lock-' + name, 'lock ' + name);
    byLock[name].forEach(g => {
      let to = end, why = 'still held at the end of the run';
      const rel = releases[name + '/' + g.session + '/' + g.token];
      const se = ends[g.session];
      if (rel && rel.t_us >= g.t_us) { to = rel.t_us; why = 'released at ' + (to / 1e6).toFixed(3) + ' s (index ' + rel.index + ')'; }
      if (se && se.t_us >= g.t_us && se.t_us < to) { to = se.t_us; why = 'session ' + (se.expired ? 'expired' : 'closed') + ' at ' + (to / 1e6).toFixed(3) + ' s (index ' + se.index + ')'; }
      l.items.push({ from: g.t_us, to: Math.max(to, g.t_us + 5000), fill: '#64b5f6',
        text: 's' + g.session + ' #' + g.token,
        tip: 'lock ' + name + ': session ' + g.session + ' holds with token ' + g.token + ' (' + g.mode + ', index ' + g.index + (g.queued ? ', after waiting' : '') + '); ' + why });
    });
    cancels.filter(c => c.lock === name).forEach(c => l.items.push({ from: c.t_us, to: c.t_us, mark: true, fill: '#8e24aa',
      tip: 'session ' + c.session + ' cancelled its wait at ' + (c.t_us / 1e6).toFixed(3) + ' s (index ' + c.index + ')' }));
  });
  // Clients: each call from invocation to completion; a call still open
  // when the run ended is drawn to the end and marked so (the checkers
  // count it as ambiguous: it may or may not have taken effect).
  const done = first('client_call', e => e.node + '/' + e.call_id);
  EVENTS.filter(e => e.kind === 'call').forEach(c => {
    const l = lane('client-' + c.node, 'client ' + c.node);
    const d = done[c.node + '/' + c.call_id];
    const what = c.call.replace(/\{.*$/, '').trim();
    const ok = d && /^Ok/.test(d.result);
    l.items.push({ from: c.t_us, to: Math.max(d ? d.t_us : end, c.t_us + 2000),
      fill: !d ? '#ff7043' : ok ? '#a5d6a7' : '#ffe082',
      text: d ? what : what + ' (open at end)',
      tip: 'client ' + c.node + ' call ' + c.call_id + ': ' + c.call + ' invoked at ' + (c.t_us / 1e6).toFixed(3) + ' s; ' +
        (d ? 'answered at ' + (d.t_us / 1e6).toFixed(3) + ' s: ' + d.result : 'still open when the run ended (ambiguous)') });
  });
  // Fenced resources: accepted writes as thin ticks, refusals in red.
  EVENTS.filter(e => e.kind === 'resource_accept' || e.kind === 'resource_reject').forEach(e => {
    const l = lane('res-' + e.resource, 'resource ' + e.resource);
    const bad = e.kind === 'resource_reject';
    l.items.push({ from: e.t_us, to: e.t_us, mark: true, fill: bad ? '#d50000' : '#90a4ae',
      tip: (bad ? 'refused stale token ' : 'accepted token ') + e.token + ' from client ' + e.node + ' at ' + (e.t_us / 1e6).toFixed(3) + ' s' });
  });
  const violations = EVENTS.filter(e => e.kind === 'violation');
  // Overlapping segments of one lane (concurrent faults, shared holders)
  // go on rows of their own, first fit, so none hides another.
  lanes.forEach(l => {
    const rowEnds = [];
    l.items.filter(it => !it.mark).sort((a, b) => a.from - b.from).forEach(it => {
      let r = rowEnds.findIndex(e => e <= it.from);
      if (r < 0) { r = rowEnds.length; rowEnds.push(0); }
      rowEnds[r] = it.to;
      it.row = r;
    });
    l.rows = Math.max(1, rowEnds.length);
  });
  function px(t) { return LEFT + (t - x0) / (x1 - x0) * (width - LEFT - 10); }
  function el(name, attrs, parent) {
    const n = document.createElementNS(NS, name);
    for (const k in attrs) n.setAttribute(k, attrs[k]);
    (parent || svg).appendChild(n);
    return n;
  }
  function draw() {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const height = TOP + lanes.reduce((h, l) => h + l.rows * LANE, 0) + 10;
    svg.setAttribute('width', width); svg.setAttribute('height', height);
    // Time axis: about ten ticks.
    const span = (x1 - x0) / 1e6, step = Math.pow(10, Math.floor(Math.log10(span / 10)));
    for (let s = Math.ceil(x0 / 1e6 / step) * step; s * 1e6 <= x1; s += step) {
      el('line', { x1: px(s * 1e6), x2: px(s * 1e6), y1: TOP - 4, y2: height, stroke: '#eee' });
      el('text', { x: px(s * 1e6) + 2, y: TOP - 8, class: 'lane-label' }).textContent = (+s.toFixed(6)) + ' s';
    }
    let laneTop = TOP;
    lanes.forEach((l, i) => {
      const base = laneTop;
      laneTop += l.rows * LANE;
      if (i % 2) el('rect', { x: 0, y: base, width: width, height: l.rows * LANE, fill: '#fafafa' });
      const g = el('g', { 'data-lane': l.key });
      const y = base;
      el('text', { x: 6, y: y + 15, class: 'lane-label' }, g).textContent = l.label;
      l.items.forEach(it => {
        if (it.to < x0 || it.from > x1) return;
        const a = Math.max(px(it.from), LEFT), b = Math.min(px(it.to), width - 10);
        const ry = y + (it.row || 0) * LANE;
        const r = it.mark
          ? el('rect', { x: a - 1, y: y + 2, width: 3, height: l.rows * LANE - 4, fill: it.fill }, g)
          : el('rect', { x: a, y: ry + 3, width: Math.max(1, b - a), height: LANE - 6, fill: it.fill, stroke: '#fff' }, g);
        el('title', {}, r).textContent = it.tip;
        if (!it.mark && it.text && b - a > 7 * it.text.length) {
          el('text', { x: a + 3, y: ry + 15, class: 'seg-label' }, g).textContent = it.text;
        }
      });
    });
    violations.forEach(v => {
      const x = px(v.t_us);
      const ln = el('line', { x1: x, x2: x, y1: TOP - 4, y2: height, stroke: '#d50000', 'stroke-width': 2, 'data-violation': v.checker });
      el('title', {}, ln).textContent = v.checker + ': ' + v.message;
    });
  }
  svg.addEventListener('wheel', ev => {
    ev.preventDefault();
    const t = x0 + (ev.offsetX - LEFT) / (width - LEFT - 10) * (x1 - x0);
    const k = ev.deltaY < 0 ? 0.8 : 1.25;
    x0 = Math.max(0, t - (t - x0) * k); x1 = Math.min(end, t + (x1 - t) * k);
    draw();
  }, { passive: false });
  let drag = null;
  svg.addEventListener('mousedown', ev => { drag = { x: ev.clientX, a: x0, b: x1 }; });
  window.addEventListener('mouseup', () => { drag = null; });
  window.addEventListener('mousemove', ev => {
    if (!drag) return;
    const dt = (ev.clientX - drag.x) / (width - LEFT - 10) * (drag.b - drag.a);
    const w = drag.b - drag.a;
    x0 = Math.min(Math.max(0, drag.a - dt), end - w); x1 = x0 + w;
    draw();
  });
  draw();
  document.body.setAttribute('data-rendered', String(lanes.length));
  document.body.setAttribute('data-lanes', lanes.map(l => l.key).join(' '));
  const items = lanes.flatMap(l => l.items);
  document.body.setAttribute('data-holds-released', String(items.filter(it => /; released at/.test(it.tip || '')).length));
  document.body.setAttribute('data-calls-open', String(items.filter(it => /still open when the run ended/.test(it.tip || '')).length));
})();
</script>
</body></html>
"##;
