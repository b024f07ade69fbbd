// Tasks: the list (by function and status, a page at a time, newest
// first) and one task's page (status, timing, usage, attempts, logs,
// output). A task that has not ended is asked about again every second.

import * as api from "./api.js";
import {
  TERMINAL,
  bytes,
  dl,
  errorBox,
  functionLink,
  h,
  ms,
  replace,
  section,
  statusBadge,
  table,
  taskLink,
  time,
} from "./dom.js";
import { outputView } from "./output.js";

const STATUSES = ["queued", "running", "succeeded", "failed", "timed_out", "cancelled"];
const LIMITS = ["20", "50", "100"];

/** Output larger than this is not fetched for a preview, only on request. */
const PREVIEW_FETCH_BYTES = 4 * 1024 * 1024;

function select(id, label, options, value) {
  return [
    h("label", { for: id, text: label }),
    h(
      "select",
      { id, name: id },
      options.map(([v, text]) => h("option", { value: v, selected: v === value }, text)),
    ),
  ];
}

export async function tasksView(ctx, params) {
  const fn = params.get("function") || "";
  const status = params.get("status") || "";
  const limit = LIMITS.includes(params.get("limit")) ? params.get("limit") : "20";
  const cursor = params.get("cursor") || "";
  const [page, { functions }] = await Promise.all([
    api.json("/v1/tasks" + api.query({ function: fn, status, limit, cursor })),
    api.json("/v1/functions"),
  ]);
  const names = functions.map((f) => f.name);
  if (fn && !names.includes(fn)) names.push(fn);

  const filters = h(
    "form",
    { id: "task-filters", class: "filters" },
    select("filter-function", "Function", [["", "any"], ...names.sort().map((n) => [n, n])], fn),
    select("filter-status", "Status", [["", "any"], ...STATUSES.map((s) => [s, s])], status),
    select("filter-limit", "Per page", LIMITS.map((n) => [n, n]), limit),
    h("button", { type: "button", onclick: () => ctx.refresh(), text: "Refresh" }),
  );
  filters.addEventListener("change", () => {
    const q = api.query({
      function: filters.elements["filter-function"].value,
      status: filters.elements["filter-status"].value,
      limit: filters.elements["filter-limit"].value === "20" ? "" : filters.elements["filter-limit"].value,
    });
    ctx.go("#/tasks" + q);
  });

  const rows = page.tasks.map((t) => [
    taskLink(t.id, { "data-task": t.id }),
    functionLink(t.function),
    String(t.version),
    t.kind,
    statusBadge(t.status),
    time(t.created_at),
    ms(t.usage?.wall_ms ?? t.timing?.run_ms),
    t.error ? h("code", { text: t.error.code }) : t.exit_code !== null && t.exit_code !== undefined ? `exit ${t.exit_code}` : "",
  ]);
  const base = { function: fn, status, limit: limit === "20" ? "" : limit };
  const paging = h(
    "p",
    { class: "paging" },
    cursor ? h("a", { href: "#/tasks" + api.query(base), text: "← Newest" }) : null,
    page.next_cursor
      ? h("a", { id: "tasks-older", href: "#/tasks" + api.query({ ...base, cursor: page.next_cursor }), text: "Older →" })
      : null,
  );
  return h(
    "div",
    {},
    h("h1", { text: "Tasks" }),
    filters,
    table(
      ["Task", "Function", "Version", "Kind", "Status", "Created", "Took", "Result"],
      rows,
      cursor ? "No older tasks." : "No tasks match.",
      { id: "tasks-table" },
    ),
    paging,
  );
}

/** Where the task's time went, as a bar and in numbers. */
function timingView(t) {
  const parts = [
    ["queue", "Queue", t.timing?.queued_ms],
    ["pull", "Pull", t.timing?.pull_ms],
    ["start", "Start", t.timing?.start_ms],
    ["run", "Run", t.timing?.run_ms],
  ];
  const total = parts.reduce((sum, [, , v]) => sum + (v || 0), 0);
  const bar = h("div", { class: "timing-bar", role: "img", "aria-label": "where the time went" });
  for (const [key, label, v] of parts) {
    if (!v || total === 0) continue;
    const seg = h("span", { class: `seg seg-${key}`, title: `${label}: ${ms(v)}` });
    seg.style.width = `${Math.max((v / total) * 100, 0.5)}%`;
    bar.appendChild(seg);
  }
  return h(
    "div",
    { id: "task-timing" },
    total > 0 ? bar : null,
    h(
      "ul",
      { class: "legend" },
      parts.map(([key, label, v]) => h("li", {}, h("span", { class: `swatch seg-${key}` }), `${label} ${ms(v)}`)),
      h("li", {}, h("strong", { text: `Total ${ms(total)}` })),
    ),
  );
}

/** A finished task's logs and output (fetched); a running one's, a note. */
async function payloads(t) {
  if (!TERMINAL.includes(t.status)) {
    const note = "Shown once the task ends; this page follows it.";
    return [
      section("Logs", h("p", { class: "muted", text: note })),
      section("Output", h("p", { class: "muted", text: note })),
    ];
  }
  const base = api.path("v1", "tasks", t.id);
  // A sync call's output went to its caller: the server keeps none.
  const sync = t.kind === "sync";
  const [logs, output] = await Promise.all([
    api.request("GET", base + "/logs"),
    sync ? null : api.request("GET", base + "/output"),
  ]);
  let logsView;
  if (logs.ok) {
    const text = await logs.text();
    logsView = [h("pre", { id: "task-logs", class: "output", text }), text ? null : h("p", { class: "muted", text: "It wrote nothing to stderr." })];
  } else {
    logsView = errorBox(await api.errorOf(logs));
  }
  let outputPart;
  if (sync) {
    outputPart = h("p", { class: "muted", text: "A sync call's output goes to its caller; the server does not keep it." });
  } else if (output.status === 404) {
    outputPart = h("p", { class: "muted", text: (await api.errorOf(output)).message });
  } else if (!output.ok) {
    outputPart = errorBox(await api.errorOf(output));
  } else {
    const size = Number(output.headers.get("content-length") ?? "NaN");
    if (size > PREVIEW_FETCH_BYTES) {
      await output.body?.cancel();
      outputPart = largeOutput(base + "/output", size, t.id);
    } else {
      outputPart = await outputView(await output.blob(), "task-output", `output-${t.id}`);
    }
  }
  return [section("Logs", logsView), section("Output", outputPart)];
}

/** Output too large to fetch unasked: a button fetches and saves it. */
function largeOutput(url, size, id) {
  const place = h("div", {});
  const button = h("button", {
    type: "button",
    text: `Fetch the output (${bytes(size)})`,
    onclick: async () => {
      button.disabled = true;
      replace(place, h("p", { class: "muted", text: "Fetching…" }));
      try {
        const resp = await api.request("GET", url);
        if (!resp.ok) throw await api.errorOf(resp);
        replace(place, await outputView(await resp.blob(), "task-output", `output-${id}`));
      } catch (err) {
        replace(place, errorBox(err));
        button.disabled = false;
      }
    },
  });
  replace(place, button);
  return place;
}

export async function taskView(ctx, _params, id) {
  const t = await api.json(api.path("v1", "tasks", id));
  const ended = TERMINAL.includes(t.status);
  if (!ended) {
    setTimeout(() => {
      if (ctx.alive()) ctx.refresh();
    }, 1000);
  }
  const cancel = ended
    ? null
    : h("button", {
        id: "task-cancel",
        type: "button",
        text: "Cancel",
        onclick: async () => {
          const resp = await api.request("DELETE", api.path("v1", "tasks", t.id));
          if (!resp.ok && resp.status !== 409) {
            replace(actions, errorBox(await api.errorOf(resp)));
            return;
          }
          ctx.refresh();
        },
      });
  const actions = h("p", { class: "actions" }, cancel, h("button", { type: "button", text: "Refresh", onclick: () => ctx.refresh() }));
  const attempts = t.attempts || [];
  return h(
    "div",
    {},
    h("p", { class: "crumbs" }, h("a", { href: "#/tasks", text: "Tasks" }), " / "),
    h("h1", {}, "Task ", h("span", { id: "task-id", class: "mono", text: t.id }), " ", statusBadge(t.status, { id: "task-status" })),
    actions,
    dl(
      [
        ["Function", functionLink(t.function)],
        ["Version", String(t.version)],
        ["Kind", t.kind],
        ["Attempt", `${t.attempt} of ${t.max_attempts}`],
        ["Node", t.node ?? undefined],
        ["Created", time(t.created_at)],
        ["Started", time(t.started_at)],
        ["Finished", time(t.finished_at)],
        ["Exit code", t.exit_code ?? undefined],
        ["Error", t.error ? h("span", {}, h("code", { text: t.error.code }), " ", t.error.message) : undefined],
        ["Input", t.input_bytes !== null && t.input_bytes !== undefined ? bytes(t.input_bytes) : undefined],
        ["Output", t.output_bytes !== null && t.output_bytes !== undefined ? bytes(t.output_bytes) : undefined],
      ],
      { id: "task-facts" },
    ),
    section("Timing", timingView(t)),
    section(
      "Usage",
      dl([
        ["CPU time", ms(t.usage?.cpu_ms)],
        ["Peak memory", bytes(t.usage?.peak_memory_bytes)],
        ["Wall time", ms(t.usage?.wall_ms)],
      ]),
    ),
    attempts.length
      ? section(
          "Attempts",
          table(
            ["Attempt", "Node", "Started", "Finished", "Ended"],
            attempts.map((a) => [String(a.attempt), a.node, time(a.started_at), time(a.finished_at), a.ended ?? "running"]),
            "",
          ),
        )
      : null,
    await payloads(t),
  );
}
