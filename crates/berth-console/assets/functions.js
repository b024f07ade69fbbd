// Functions: the list, and one function's page (its version in force, every
// version, its recent tasks and a form to call it).

import * as api from "./api.js";
import { bytes, dl, functionLink, h, ms, section, statusBadge, table, taskLink, time } from "./dom.js";
import { invokeForm } from "./invoke.js";

export async function functionsView() {
  const { functions } = await api.json("/v1/functions");
  const rows = functions.map((f) => [
    functionLink(f.name, { "data-function": f.name }),
    String(f.latest_version),
    f.latest.mode,
    h("code", { text: f.latest.image }),
    String(f.version_count),
    time(f.updated_at),
  ]);
  return h(
    "div",
    {},
    h("h1", { text: "Functions" }),
    table(
      ["Name", "Version", "Mode", "Image", "Versions", "Updated"],
      rows,
      h(
        "span",
        {},
        "No functions yet. Deploy one with ",
        h("code", { text: "berth fn deploy NAME --image IMAGE" }),
        " (or PUT /v1/functions/NAME).",
      ),
      { id: "functions-table" },
    ),
  );
}

function seconds(s) {
  return s === undefined || s === null ? undefined : ms(s * 1000);
}

/** A version's settings, as deployed (defaults filled in). */
function config(v) {
  const env = Object.entries(v.env || {});
  return dl([
    ["Image", h("code", { text: v.image })],
    ["Pinned image", h("code", { class: "wrap", text: v.image_id })],
    ["Command", v.command ? h("code", { text: JSON.stringify(v.command) }) : "the image's own"],
    ["Mode", v.mode],
    ["CPU", `${v.cpu_millis}m`],
    ["Memory", bytes(v.memory_mb * 1024 * 1024)],
    ["Timeout", seconds(v.timeout_secs)],
    ["Concurrency", v.concurrency !== undefined ? `${v.concurrency} per instance` : undefined],
    ["Instances", v.min_instances !== undefined ? `${v.min_instances} to ${v.max_instances}` : undefined],
    ["Idle timeout", seconds(v.idle_timeout_secs)],
    ["Queue", v.max_queue !== undefined ? `${v.max_queue}, waiting at most ${ms(v.queue_timeout_secs * 1000)}` : undefined],
    ["Runs as root", v.run_as_root ? "yes" : "no"],
    [
      "Environment",
      env.length ? h("ul", { class: "plain" }, env.map(([k, val]) => h("li", {}, h("code", { text: `${k}=${val}` })))) : "none",
    ],
  ]);
}

export async function functionView(_ctx, _params, name) {
  const [f, recent] = await Promise.all([
    api.json(api.path("v1", "functions", name)),
    api.json("/v1/tasks" + api.query({ function: name, limit: 10 })),
  ]);
  const versions = f.versions || [];
  const versionRows = [...versions]
    .sort((a, b) => b.version - a.version)
    .map((v) => [
      v.version === f.latest_version ? h("strong", {}, `${v.version} (in force)`) : String(v.version),
      v.mode,
      h("code", { text: v.image }),
      h("code", { class: "wrap", text: v.image_id }),
      time(v.created_at),
    ]);
  const taskRows = recent.tasks.map((t) => [
    taskLink(t.id),
    statusBadge(t.status),
    String(t.version),
    t.kind,
    time(t.created_at),
    ms(t.timing?.run_ms),
  ]);
  return h(
    "div",
    {},
    h("p", { class: "crumbs" }, h("a", { href: "#/functions", text: "Functions" }), " / "),
    h("h1", { id: "function-name", text: f.name }),
    dl(
      [
        ["Version in force", String(f.latest_version)],
        ["Versions", String(f.version_count)],
        ["Created", time(f.created_at)],
        ["Updated", time(f.updated_at)],
      ],
      { class: "summary" },
    ),
    invokeForm(f),
    section(`Version ${f.latest_version}`, config(f.latest)),
    section(
      "Versions",
      table(["Version", "Mode", "Image", "Pinned image", "Created"], versionRows, "This server lists no versions."),
    ),
    section(
      "Recent tasks",
      table(["Task", "Status", "Version", "Kind", "Created", "Run"], taskRows, "No tasks yet."),
      h("p", {}, h("a", { href: "#/tasks" + api.query({ function: f.name }), text: "All tasks of " + f.name + " →" })),
    ),
  );
}
