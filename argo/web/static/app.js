// The coordinator dashboard's pages, kept live: the server paints each page with its data; this
// script (after common.js) follows the live feed (/api/events, server-sent events) and redraws what
// changed.
"use strict";

// -- the overview ----------------------------------------------------------------------------------

function overviewPage() {
  const refresh = throttle(async () => {
    const data = await getJSON("/api/overview");
    const sites = document.querySelector("#sites tbody");
    sites.replaceChildren(...data.sites.map((s) => el("tr", { "data-site": s.name },
      el("td", {}, s.name), el("td", {}, el("span", { class: `health h-${s.status}` }, s.status)), el("td", {}, String(s.nodes)),
      el("td", {}, String(s.backlog)), el("td", {}, String(s.running)), el("td", {}, String(s.assigned)), el("td", {}, duration(s.queue_wait_s)),
      el("td", { title: s.last_seen }, duration(s.last_seen_age_s) + " ago"), el("td", { class: s.channel_error ? "error" : "" }, s.channel_error || "ok"))));
    if (!data.sites.length) sites.append(el("tr", { class: "empty" }, el("td", { colspan: 9 }, "No site has joined this coordinator yet.")));
    const workflows = document.querySelector("#workflows tbody");
    workflows.replaceChildren(...data.workflows.map((w) => el("tr", { "data-workflow": w.id },
      el("td", {}, String(w.id)), el("td", {}, el("a", { href: `/workflows/${w.id}` }, w.name)), el("td", { class: `wf-${w.status}` }, w.status),
      el("td", {}, progress(w.counts, w.tasks)), el("td", {}, String(w.tasks)), el("td", {}, w.project || "-"), el("td", {}, w.owner || "-"),
      el("td", {}, duration(w.age_s)), el("td", {}, String(w.finished_per_min)))));
    if (!data.workflows.length) workflows.append(el("tr", { class: "empty" }, el("td", { colspan: 9 }, "No workflow you may see.")));
  }, 500);
  follow({ after: INITIAL.after }, refresh);
  setInterval(refresh, 5000); // heartbeats (backlog, last seen) change without events
}

// -- a workflow ------------------------------------------------------------------------------------

function workflowPage() {
  const id = INITIAL.workflow;
  const table = { page: INITIAL.page.page, per_page: INITIAL.page.per_page, sort: INITIAL.page.sort, descending: INITIAL.page.descending, pages: INITIAL.page.pages };
  const filters = document.getElementById("filters");
  const dagNodes = new Map();
  let grouped = false;

  function query() {
    const form = new FormData(filters);
    const q = new URLSearchParams({ page: table.page, per_page: form.get("per_page"), sort: table.sort, order: table.descending ? "desc" : "asc" });
    for (const name of ["state", "site", "app", "q"]) if (form.get(name)) q.set(name, form.get(name));
    return q;
  }

  async function loadTasks() {
    const data = await getJSON(`/api/workflows/${id}/tasks?` + query());
    Object.assign(table, { page: data.page, pages: data.pages, per_page: data.per_page });
    const body = document.querySelector("#tasks tbody");
    body.replaceChildren(...data.tasks.map(taskRow));
    if (!data.tasks.length) body.append(el("tr", { class: "empty" }, el("td", { colspan: 10 }, "No task matches.")));
    showPager("tasks", table, data);
  }

  function taskRow(t) {
    return el("tr", { "data-task": t.id, "data-state": t.state },
      el("td", {}, el("a", { href: `/tasks/${t.id}` }, t.name)), el("td", {}, t.app), el("td", { class: "state" }, key(t.state), t.state),
      el("td", { class: "site" }, t.site), el("td", { class: "attempt" }, String(t.attempt)), el("td", {}, t.created_at),
      el("td", { class: "started" }, t.started_at || ""), el("td", { class: "ended" }, t.ended_at || ""),
      el("td", {}, t.return_code === null ? "" : String(t.return_code)),
      el("td", { class: "message" }, t.waiting ? `waiting: ${t.waiting}` : t.message));
  }

  tableControls(filters, "tasks", table, loadTasks);
  const cancel = document.getElementById("cancel");
  if (cancel) armed(cancel, "Really cancel the workflow?", async () => { await post(`/api/workflows/${id}/cancel`); });

  const refreshSummary = throttle(async () => {
    const w = await getJSON(`/api/workflows/${id}`);
    document.getElementById("wf-progress").replaceChildren(progress(w.counts, w.tasks));
    const counts = document.getElementById("wf-counts");
    showCounts(counts, w.counts);
    counts.append(`· ${w.tasks} tasks`);
    document.getElementById("rate").textContent = w.finished_per_min;
    const status = document.getElementById("wf-status");
    status.textContent = w.status;
    status.className = `wf-${w.status}`;
    if (w.status !== "running" && cancel) cancel.remove();
  }, 500);

  async function loadDag() {
    const dag = await getJSON(`/api/workflows/${id}/dag`);
    grouped = dag.grouped;
    drawDag(document.getElementById("dag"), dag, dagNodes);
    document.getElementById("dag-note").textContent = dag.grouped
      ? `${dag.nodes.reduce((n, g) => n + g.size, 0)} tasks in ${dag.nodes.length} groups (by ${dag.by}); each bar shows its tasks by state`
      : `${dag.nodes.length} tasks over ${dag.levels} levels; click a task to open it`;
  }
  const refreshDag = throttle(loadDag, 1000);
  const refreshRows = throttle(loadTasks, 1000);
  const refreshPlots = throttle(loadPlots, 10000);

  follow({ workflow: id, after: INITIAL.after }, (events) => {
    let filtered = false;
    const form = new FormData(filters);
    for (const e of events) {
      if (e.workflow_status) continue;
      if (!e.task_id) continue;
      const row = document.querySelector(`#tasks tr[data-task="${CSS.escape(e.task_id)}"]`);
      if (row) {
        row.dataset.state = e.to;
        row.querySelector(".state").replaceChildren(key(e.to), e.to);
        if (e.site) row.querySelector(".site").textContent = e.site;
        row.querySelector(".attempt").textContent = e.attempt;
      }
      const node = dagNodes.get(e.task_id);
      if (node) { node.setAttribute("class", `node st-${e.to}`); node.dataset.state = e.to; node.querySelector("title").textContent = `${e.task_id}: ${e.to}`; }
      if (form.get("state") || table.sort === "state") filtered = true;
    }
    refreshSummary();
    if (grouped) refreshDag();
    if (filtered || events.length) refreshRows();
    refreshPlots();
  });
  loadDag().catch((e) => { document.getElementById("dag-note").textContent = "the graph could not be loaded: " + e.message; });
  loadPlots();

  async function loadPlots() {
    const note = document.getElementById("plots-note");
    try {
      const p = await getJSON(`/api/workflows/${id}/plots`);
      lineChart(document.getElementById("plot-utilisation"), p.utilisation, "nodes");
      barChart(document.getElementById("plot-throughput"), p.throughput);
      ganttChart(document.getElementById("plot-gantt"), p.gantt);
      modelChart(document.getElementById("plot-models"), p.apps);
      note.textContent = p.gantt_total > p.gantt_limit ? `the Gantt chart shows the first ${p.gantt_limit} of ${p.gantt_total} attempts` : "";
    } catch (e) { note.textContent = "the plots could not be loaded: " + e.message; }
  }
}


// -- the DAG ---------------------------------------------------------------------------------------

function drawDag(container, dag, nodesById) {
  nodesById.clear();
  const perColumn = dag.grouped ? 12 : 40;
  const [w, h, gapX, gapY] = dag.grouped ? [150, 34, 60, 12] : [12, 12, 40, 4];
  const byLevel = new Map();
  for (const n of dag.nodes) { if (!byLevel.has(n.level)) byLevel.set(n.level, []); byLevel.get(n.level).push(n); }
  const position = new Map();
  let x = 10, height = 0;
  for (const level of [...byLevel.keys()].sort((a, b) => a - b)) {
    const nodes = byLevel.get(level);
    const columns = Math.ceil(nodes.length / perColumn);
    nodes.forEach((n, i) => {
      const cx = x + Math.floor(i / perColumn) * (w + gapX / 3);
      const cy = 10 + (i % perColumn) * (h + gapY);
      position.set(n.id, [cx, cy]);
      height = Math.max(height, cy + h + 10);
    });
    x += columns * (w + gapX / 3) + gapX;
  }
  const drawing = svg("svg", { width: x, height, viewBox: `0 0 ${x} ${height}`, id: "dag-svg" });
  const edges = dag.edges.length <= 5000 ? dag.edges : [];
  for (const [from, to] of edges) {
    const a = position.get(from), b = position.get(to);
    if (!a || !b) continue;
    drawing.append(svg("path", { class: "edge", d: `M${a[0] + w},${a[1] + h / 2} C${a[0] + w + gapX / 2},${a[1] + h / 2} ${b[0] - gapX / 2},${b[1] + h / 2} ${b[0]},${b[1] + h / 2}` }));
  }
  for (const n of dag.nodes) {
    const [nx, ny] = position.get(n.id);
    if (dag.grouped) {
      const g = svg("g", { "data-group": n.id });
      g.append(svg("rect", { x: nx, y: ny, width: w, height: h, fill: "#fff", stroke: "#999" }));
      g.append(svg("text", { x: nx + 4, y: ny + 12 }, `${n.app} · level ${n.level} · ${n.size}`));
      let bx = nx + 4;
      for (const s of STATES) {
        const count = n.counts[s] || 0;
        if (!count) continue;
        const bw = ((w - 8) * count) / n.size;
        g.append(svg("rect", { class: `st-${s}`, "data-state": s, x: bx, y: ny + 18, width: bw, height: 10 }, undefined));
        bx += bw;
      }
      g.append(svg("title", {}, `${n.app}, level ${n.level}: ` + Object.entries(n.counts).map(([s, c]) => `${c} ${s}`).join(", ")));
      drawing.append(g);
    } else {
      const link = svg("a", { href: `/tasks/${n.id}` });
      const rect = svg("rect", { class: `node st-${n.state}`, "data-task": n.id, "data-state": n.state, x: nx, y: ny, width: w, height: h, rx: 2 });
      rect.append(svg("title", {}, `${n.id}: ${n.state}`));
      link.append(rect);
      drawing.append(link);
      nodesById.set(n.id, rect);
    }
  }
  container.replaceChildren(drawing);
}

// -- plots (plain SVG) -----------------------------------------------------------------------------

function frame(container, xs, ys, width = 560, height = 200) {
  const pad = { l: 40, r: 10, t: 10, b: 22 };
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const [y0, y1] = [0, Math.max(1, ...ys)];
  const sx = (x) => pad.l + ((x - x0) / (x1 - x0 || 1)) * (width - pad.l - pad.r);
  const sy = (y) => height - pad.b - ((y - y0) / (y1 - y0 || 1)) * (height - pad.t - pad.b);
  const plot = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "plot" });
  plot.append(svg("line", { class: "axis", x1: pad.l, y1: height - pad.b, x2: width - pad.r, y2: height - pad.b }));
  plot.append(svg("line", { class: "axis", x1: pad.l, y1: pad.t, x2: pad.l, y2: height - pad.b }));
  plot.append(svg("text", { x: 2, y: pad.t + 8 }, String(+y1.toFixed(2))));
  plot.append(svg("text", { x: 2, y: height - pad.b }, "0"));
  container.replaceChildren(plot);
  return { plot, sx, sy, x0, x1, width, height, pad };
}

function timeLabels(f, asTime = true) {
  const fmt = (t) => asTime ? new Date(t * 1000).toISOString().slice(11, 19) : String(+t.toPrecision(3));
  f.plot.append(svg("text", { x: f.pad.l, y: f.height - 6 }, fmt(f.x0)));
  f.plot.append(svg("text", { x: f.width - f.pad.r - 50, y: f.height - 6 }, fmt(f.x1)));
}

function empty(container, what) { container.replaceChildren(el("p", { class: "note" }, what)); }

function lineChart(container, seriesBySite, unit) {
  const sites = Object.keys(seriesBySite);
  const points = sites.flatMap((s) => seriesBySite[s]);
  if (!points.length) return empty(container, "no task has started yet");
  const f = frame(container, points.map((p) => p[0]), points.map((p) => p[1]));
  sites.forEach((site, i) => {
    let d = "", last = null;
    for (const [t, v] of seriesBySite[site]) {
      d += last === null ? `M${f.sx(t)},${f.sy(v)}` : `H${f.sx(t)}V${f.sy(v)}`;
      last = v;
    }
    f.plot.append(svg("path", { class: `line series-${i % 6}`, d, fill: "none", "data-site": site }));
    f.plot.append(svg("text", { x: f.width - 120, y: 14 + 12 * i, class: `series-${i % 6}` }, `${site} (${unit})`));
  });
  timeLabels(f);
}

function barChart(container, series) {
  if (!series.length) return empty(container, "no task has finished yet");
  const f = frame(container, [series[0][0], series[series.length - 1][0] + 60], series.map((p) => p[1]));
  const bw = Math.max(1, f.sx(series[0][0] + 60) - f.sx(series[0][0]) - 1);
  for (const [t, n] of series) {
    const bar = svg("rect", { class: "bar", x: f.sx(t), y: f.sy(n), width: bw, height: f.sy(0) - f.sy(n) });
    bar.append(svg("title", {}, `${new Date(t * 1000).toISOString().slice(11, 16)}: ${n} finished`));
    f.plot.append(bar);
  }
  timeLabels(f);
}

function ganttChart(container, items) {
  if (!items.length) return empty(container, "no task has started yet");
  const bySite = new Map();
  for (const it of items) { if (!bySite.has(it.site)) bySite.set(it.site, []); bySite.get(it.site).push(it); }
  const lanes = []; // [site, lane ends]
  const placed = [];
  for (const [site, runs] of bySite) {
    const ends = [];
    for (const r of runs) {
      let lane = ends.findIndex((end) => end <= r.start);
      if (lane < 0) { lane = ends.length; ends.push(0); }
      ends[lane] = r.end;
      placed.push([site, lane, r]);
    }
    lanes.push([site, ends.length]);
  }
  const rowH = 6, gap = 8;
  let offset = 10;
  const top = new Map();
  for (const [site, count] of lanes) { top.set(site, offset); offset += count * rowH + gap + 12; }
  const f = frame(container, items.flatMap((i) => [i.start, i.end]), [1], 1100, offset + 24);
  for (const [site] of lanes) f.plot.append(svg("text", { x: f.pad.l + 2, y: top.get(site) + 8 }, site));
  for (const [site, lane, r] of placed) {
    const bar = svg("rect", { class: `st-${r.state}`, x: f.sx(r.start), y: top.get(site) + 12 + lane * rowH, width: Math.max(1, f.sx(r.end) - f.sx(r.start)), height: rowH - 1 });
    bar.append(svg("title", {}, `${r.task} attempt ${r.attempt} at ${site}: ${r.state}, ${(r.end - r.start).toFixed(1)} s`));
    f.plot.append(bar);
  }
  timeLabels(f);
}

function modelChart(container, apps) {
  container.replaceChildren();
  const names = Object.keys(apps).sort();
  if (!names.length) return empty(container, "no app yet");
  for (const name of names) {
    const app = apps[name];
    const box = el("div", { class: "model", "data-app": name });
    container.append(box);
    const runs = app.runs.filter((r) => r.x !== null);
    const sites = Object.keys(app.models);
    const caption = `${name}: ${app.runs.length} finished run(s)` + (app.feature ? `, seconds against ${app.feature}` : ", seconds per run") +
      (sites.length ? "; models: " + sites.map((s) => `${s} ${app.models[s].serial_s.toFixed(2)} s + ${app.models[s].parallel_s.toFixed(3)} s·x/n`).join("; ") : "; no site has fitted a model yet");
    box.append(el("p", {}, caption));
    if (!runs.length) continue;
    const xs = runs.map((r) => r.x);
    const plotBox = el("div");
    box.append(plotBox);
    const f = frame(plotBox, [Math.min(...xs, 0), Math.max(...xs, 1)], runs.map((r) => r.seconds).concat(sites.map((s) => app.models[s].serial_s + app.models[s].parallel_s * Math.max(...xs, 1))));
    runs.forEach((r) => { const dot = svg("circle", { cx: f.sx(r.x), cy: f.sy(r.seconds), r: 2.5, class: "series-0" }); dot.append(svg("title", {}, `${r.task} at ${r.site}: ${r.seconds.toFixed(2)} s`)); f.plot.append(dot); });
    sites.forEach((s, i) => {
      const m = app.models[s];
      f.plot.append(svg("line", { class: `line series-${(i + 1) % 6}`, x1: f.sx(f.x0), y1: f.sy(m.serial_s + m.parallel_s * f.x0), x2: f.sx(f.x1), y2: f.sy(m.serial_s + m.parallel_s * f.x1) }));
    });
    timeLabels(f, false);
  }
}

// -- a task ----------------------------------------------------------------------------------------

function taskPage() {
  const id = INITIAL.task;
  const kill = document.getElementById("kill");
  if (kill) armed(kill, "Really kill this task?", async () => { await post(`/api/tasks/${id}/kill`); });
  follow({ workflow: INITIAL.workflow, after: INITIAL.after }, (events) => {
    const history = document.querySelector("#history tbody");
    for (const e of events) {
      if (e.task_id !== id) continue;
      history.append(el("tr", { "data-event": e.id }, el("td", {}, e.at), el("td", {}, String(e.attempt)), el("td", {}, e.site), el("td", {}, e.from),
        el("td", {}, key(e.to), e.to), el("td", {}, e.move), el("td", {}, e.message)));
      const state = document.getElementById("task-state");
      state.dataset.state = e.to;
      state.replaceChildren(key(e.to), e.to);
      if (e.site) document.getElementById("task-site").textContent = e.site;
      document.getElementById("task-attempt").textContent = e.attempt;
      if (FINAL.includes(e.to) && kill) kill.remove();
    }
  });
}

const PAGES = { overview: overviewPage, workflow: workflowPage, task: taskPage };
PAGES[document.body.dataset.page]?.();
