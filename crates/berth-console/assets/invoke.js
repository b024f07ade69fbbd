// Calling a function from the page: a file or a text as the body, an
// optional path and query, synchronously (the answer is shown) or as an
// async task (its page follows).

import * as api from "./api.js";
import { dl, errorBox, h, ms, replace, section, taskLink } from "./dom.js";
import { outputView, revokeUrls } from "./output.js";

/** `queue;dur=0, run;dur=5` as [["queue", 0], ["run", 5]]. */
export function serverTiming(value) {
  if (!value) return [];
  return value
    .split(",")
    .map((entry) => {
      const [name, ...params] = entry.trim().split(";");
      const dur = params.map((p) => p.trim()).find((p) => p.startsWith("dur="));
      return [name.trim(), dur ? Number(dur.slice(4)) : null];
    })
    .filter(([name]) => name);
}

function radio(name, value, label, checked) {
  const id = `${name}-${value}`;
  return h(
    "label",
    { class: "inline", for: id },
    h("input", { type: "radio", id, name, value, checked }),
    " ",
    label,
  );
}

export function invokeForm(f) {
  const file = h("input", { id: "invoke-file", name: "file", type: "file" });
  const text = h("textarea", { id: "invoke-text", name: "text", rows: 5, spellcheck: "false", hidden: true });
  const subPath = h("input", { id: "invoke-path", name: "path", type: "text", placeholder: "/", autocomplete: "off" });
  const queryInput = h("input", { id: "invoke-query", name: "query", type: "text", placeholder: "a=1&b=2", autocomplete: "off" });
  const contentType = h("input", {
    id: "invoke-content-type",
    name: "content-type",
    type: "text",
    placeholder: "the file's own, or text/plain",
    autocomplete: "off",
  });
  const asTask = h("input", { id: "invoke-async", name: "async", type: "checkbox" });
  const submit = h("button", { id: "invoke-submit", type: "submit", class: "primary", text: "Invoke" });
  const result = h("div", { id: "invoke-result", "aria-live": "polite" });

  const form = h(
    "form",
    { id: "invoke-form", class: "grid-form" },
    h("span", { class: "label" }, "Body"),
    h("div", {}, radio("invoke-source", "file", "a file", true), radio("invoke-source", "text", "text", false)),
    h("label", { for: "invoke-file", text: "File" }),
    file,
    h("label", { for: "invoke-text", text: "Text", hidden: true }),
    text,
    h("label", { for: "invoke-path", text: "Path (optional)" }),
    subPath,
    h("label", { for: "invoke-query", text: "Query (optional)" }),
    queryInput,
    h("label", { for: "invoke-content-type", text: "Content-Type (optional)" }),
    contentType,
    h("span", { class: "label" }, "Mode"),
    h("label", { class: "inline", for: "invoke-async" }, asTask, " run as an async task (the answer is its id; it has no path)"),
    h("span"),
    h("div", {}, submit),
  );

  const source = () => form.elements["invoke-source"].value;
  form.addEventListener("change", () => {
    const isText = source() === "text";
    file.hidden = isText;
    form.querySelector('label[for="invoke-file"]').hidden = isText;
    text.hidden = !isText;
    form.querySelector('label[for="invoke-text"]').hidden = !isText;
    subPath.disabled = asTask.checked;
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let body;
    if (source() === "file") {
      body = file.files[0];
      if (!body) {
        replace(result, errorBox({ message: "Choose a file to send, or send text." }));
        return;
      }
    } else {
      body = text.value;
    }
    let url = api.path("v1", "functions", f.name, asTask.checked ? "tasks" : "invoke");
    const sub = subPath.value.trim().replace(/^\/+/, "");
    if (sub && !asTask.checked) url += "/" + sub.split("/").map(encodeURIComponent).join("/");
    const q = queryInput.value.trim().replace(/^\?/, "");
    if (q) url += "?" + q;
    const headers = {};
    if (contentType.value.trim()) headers["Content-Type"] = contentType.value.trim();

    submit.disabled = true;
    revokeUrls();
    replace(result, h("p", { class: "muted", text: "Running…" }));
    const began = performance.now();
    try {
      const resp = await api.request("POST", url, { body, headers });
      const blob = await resp.blob();
      const took = Math.round(performance.now() - began);
      replace(result, await answer(resp, blob, took));
    } catch (err) {
      replace(result, errorBox(err));
    } finally {
      submit.disabled = false;
    }
  });

  return section("Invoke", form, result);
}

async function answer(resp, blob, took) {
  const status = h(
    "p",
    { id: "invoke-status", class: resp.ok ? "ok" : "failed" },
    h("strong", { text: `${resp.status} ${resp.statusText}`.trim() }),
    ` · answered in ${ms(took)}`,
  );
  if (resp.status === 202) {
    const task = JSON.parse(await blob.text());
    return h(
      "div",
      {},
      status,
      dl([["Task", taskLink(task.id, { id: "invoke-task-link" })], ["Status", task.status]]),
      h("p", { class: "muted", text: "Queued: its page shows it run, then its output and logs." }),
    );
  }
  const err = resp.ok ? null : api.errorFromBody(resp, await blob.text());
  const details = err?.details || {};
  const id = resp.headers.get("x-berth-task-id") ?? details.task_id;
  const timing = serverTiming(resp.headers.get("server-timing"));
  const facts = dl([
    ["Task", id ? taskLink(id, { id: "invoke-task-link" }) : undefined],
    ["Version", resp.headers.get("x-berth-version") ?? undefined],
    [
      "Server-Timing",
      timing.length
        ? h("span", { id: "invoke-timing" }, timing.map(([n, d]) => (d === null ? n : `${n} ${ms(d)}`)).join(" · "))
        : undefined,
    ],
    ["Content-Type", resp.headers.get("content-type") ?? undefined],
    ["Exit code", details.exit_code ?? undefined],
  ]);
  if (err) {
    return h(
      "div",
      {},
      status,
      errorBox(err),
      facts,
      details.stderr ? h("pre", { class: "output", id: "invoke-stderr", text: details.stderr }) : null,
    );
  }
  return h("div", {}, status, facts, await outputView(blob, "invoke-output", id ? `output-${id}` : "output"));
}
