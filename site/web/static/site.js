// A lone site's dashboard pages, kept live: the server paints each page with its data; this script
// (after common.js) follows the site's job events (/api/events) and redraws what changed.
"use strict";

// -- the jobs ----------------------------------------------------------------------------------------

function jobsPage() {
  const table = { ...INITIAL.page };
  const filters = document.getElementById("filters");

  function query() {
    const form = new FormData(filters);
    const q = new URLSearchParams({ page: table.page, per_page: form.get("per_page"), sort: table.sort, order: table.descending ? "desc" : "asc" });
    for (const name of ["state", "workflow", "q"]) if (form.get(name)) q.set(name, form.get(name));
    return q;
  }

  function jobRow(j) {
    return el("tr", { "data-job": j.id, "data-state": j.state },
      el("td", {}, el("a", { href: `/jobs/${j.id}` }, String(j.id))), el("td", {}, j.name), el("td", {}, j.workflow), el("td", {}, j.app),
      el("td", { class: "state" }, key(j.state), j.state), el("td", {}, j.return_code === null ? "" : String(j.return_code)),
      el("td", { class: "updated" }, j.updated_at || ""), el("td", {}, String(j.retries)), el("td", { class: "message" }, j.error));
  }

  async function loadJobs() {
    const data = await getJSON("/api/jobs?" + query());
    Object.assign(table, { page: data.page, pages: data.pages, per_page: data.per_page });
    const body = document.querySelector("#jobs tbody");
    body.replaceChildren(...data.jobs.map(jobRow));
    if (!data.jobs.length) body.append(el("tr", { class: "empty" }, el("td", { colspan: 9 }, "No job matches.")));
    showPager("jobs", table, data);
  }

  async function loadSummary() {
    const s = await getJSON("/api/summary");
    document.getElementById("wf-progress").replaceChildren(progress(s.counts, s.total));
    showCounts(document.getElementById("counts"), s.counts);
  }

  tableControls(filters, "jobs", table, loadJobs);
  const refreshSummary = throttle(loadSummary, 500);
  const refreshJobs = throttle(loadJobs, 1000);
  follow({ after: INITIAL.after }, (events) => {
    for (const e of events) {  // the rows on screen change at once; the page is fetched again after
      const row = document.querySelector(`#jobs tr[data-job="${e.job_id}"]`);
      if (row) { row.dataset.state = e.to; row.querySelector(".state").replaceChildren(key(e.to), e.to); row.querySelector(".updated").textContent = e.at; }
    }
    refreshSummary();
    refreshJobs();
  });
}

// -- a job -------------------------------------------------------------------------------------------

function jobPage() {
  const id = INITIAL.job;
  const kill = document.getElementById("kill");
  if (kill) armed(kill, "Really kill this job?", async () => { await post(`/api/jobs/${id}/kill`); });
  follow({ job: id, after: INITIAL.after }, (events) => {
    const history = document.querySelector("#history tbody");
    for (const e of events) {
      history.append(el("tr", { "data-event": e.id }, el("td", {}, e.at), el("td", {}, e.from), el("td", {}, key(e.to), e.to), el("td", {}, e.message)));
      const state = document.getElementById("job-state");
      state.dataset.state = e.to;
      state.replaceChildren(key(e.to), e.to);
      if (FINAL.includes(e.to) && kill) kill.remove();
    }
  });
}

const PAGES = { jobs: jobsPage, job: jobPage };
PAGES[document.body.dataset.page]?.();
