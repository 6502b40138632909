// What both dashboards' pages share (the coordinator's, balsam.argo.web; a lone site's, balsam.site.web):
// the page's data, small DOM helpers, JSON calls with the CSRF value, the live feed, a progress bar,
// a button that asks before it acts. Loaded before the page's own script. No framework, no build.
"use strict";

const CSRF = document.querySelector("meta[name=csrf]")?.content || "";
const { states: STATES, final: FINAL } = JSON.parse(document.getElementById("states").textContent);
const INITIAL = JSON.parse(document.getElementById("initial")?.textContent || "{}");
const SVGNS = "http://www.w3.org/2000/svg";

// -- small helpers (text always set as text, never parsed as HTML) ------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function key(state) { return el("span", { class: `key st-${state}` }); }

async function getJSON(url) {
  const reply = await fetch(url, { credentials: "same-origin" });
  if (reply.status === 401) { location.href = "/signin?next=" + encodeURIComponent(location.pathname); throw new Error("signed out"); }
  const body = await reply.json();
  if (!reply.ok) throw new Error(body.error || reply.statusText);
  return body;
}

async function post(url) {
  const reply = await fetch(url, { method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": CSRF } });
  const body = await reply.json();
  if (!reply.ok) throw new Error(body.error || reply.statusText);
  return body;
}

// fn at most once per `ms`, and always once more after the last call (so the last change is shown)
function throttle(fn, ms) {
  let timer = null, again = false;
  const run = async () => {
    again = false;
    try { await fn(); } catch (e) { console.error(e); }
    timer = setTimeout(() => { timer = null; if (again) schedule(); }, ms);
  };
  const schedule = () => { if (timer) { again = true; } else { timer = setTimeout(run, 0); } };
  return schedule;
}

function duration(s) {
  if (s === null || s === undefined) return "-";
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${(s / 60).toFixed(1)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

function progress(counts, total) {
  const bar = svg("svg", { class: "progress", viewBox: "0 0 100 10", preserveAspectRatio: "none", role: "img" });
  bar.append(svg("title", {}, Object.entries(counts).map(([s, n]) => `${n} ${s}`).join(", ")));
  let x = 0;
  for (const s of STATES) {
    if (!counts[s]) continue;
    const w = (100 * counts[s]) / (total || 1);
    bar.append(svg("rect", { class: `st-${s}`, "data-state": s, x: x.toFixed(3), y: 0, width: w.toFixed(3), height: 10 }));
    x += w;
  }
  return bar;
}

// -- the live feed --------------------------------------------------------------------------------

window.argoFeed = { events: 0, last: 0, messages: 0 };

function follow(params, onEvents) {
  const live = document.getElementById("live");
  const source = new EventSource("/api/events?" + new URLSearchParams(params));
  source.onopen = () => { live.textContent = "live"; live.className = "live on"; };
  source.onerror = () => { live.textContent = "reconnecting"; live.className = "live off"; };
  source.addEventListener("events", (message) => {
    const events = JSON.parse(message.data);
    window.argoFeed.events += events.length;
    window.argoFeed.messages += 1;
    window.argoFeed.last = events[events.length - 1].id;
    onEvents(events);
  });
  source.addEventListener("ended", (message) => {
    source.close();
    live.textContent = "feed ended: " + JSON.parse(message.data);
    live.className = "live off";
  });
  return source;
}

// a button that asks once (its text becomes the question), then acts on a second click
function armed(button, question, action) {
  const label = button.textContent;
  button.addEventListener("click", async () => {
    if (button.dataset.armed !== "1") {
      button.dataset.armed = "1";
      button.textContent = question;
      setTimeout(() => { button.dataset.armed = ""; button.textContent = label; }, 5000);
      return;
    }
    button.disabled = true;
    try { await action(); button.textContent = "done"; } catch (e) { button.textContent = e.message; button.disabled = false; }
  });
}

// a paginated, sortable table's controls: the filter form, the pager buttons (#prev, #next) and the
// sortable headers (th[data-sort]) of `tableId`; each change sets `table` and calls `load`
function tableControls(filters, tableId, table, load) {
  filters.addEventListener("change", () => { table.page = 1; load(); });
  filters.addEventListener("submit", (e) => { e.preventDefault(); table.page = 1; load(); });
  document.getElementById("prev").addEventListener("click", () => { if (table.page > 1) { table.page -= 1; load(); } });
  document.getElementById("next").addEventListener("click", () => { if (table.page < table.pages) { table.page += 1; load(); } });
  for (const th of document.querySelectorAll(`#${tableId} th[data-sort]`)) {
    th.addEventListener("click", () => {
      table.descending = table.sort === th.dataset.sort ? !table.descending : false;
      table.sort = th.dataset.sort;
      table.page = 1;
      load();
    });
  }
}

// after a page of a table arrived: the pager's figures and which header is sorted
function showPager(tableId, table, data) {
  document.getElementById("page-no").textContent = data.page;
  document.getElementById("pages").textContent = data.pages;
  document.getElementById("total").textContent = data.total;
  for (const th of document.querySelectorAll(`#${tableId} th[data-sort]`)) {
    th.className = th.dataset.sort === table.sort ? `sorted-${table.descending ? "desc" : "asc"}` : "";
  }
}

// counts by state as keyed figures (<b data-count=STATE>) in `container`
function showCounts(container, counts) {
  container.replaceChildren();
  for (const [s, n] of Object.entries(counts)) container.append(el("span", { class: "count" }, key(s), s + " ", el("b", { "data-count": s }, String(n))), " ");
}
