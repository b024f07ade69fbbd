// Building pages with DOM calls only: whatever the server says is set as
// text, never parsed as HTML.

/**
 * `h("a", {href: "#/x", class: "c", onclick: f}, "text", child, [more])`:
 * `on*` members become listeners, `text` the text, `true` an empty
 * attribute; `null`, `undefined` and `false` are left out.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name === "text") el.textContent = String(value);
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Replaces an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/** `<dl>` of [term, value] pairs; pairs whose value is absent are left out. */
export function dl(pairs, attrs) {
  const items = [];
  for (const [term, value] of pairs) {
    if (value === undefined || value === null || value === "") continue;
    items.push(h("dt", { text: term }), h("dd", {}, value));
  }
  return h("dl", attrs || {}, items);
}

/** A table of rows (arrays of cells); `empty` is shown when there is none. */
export function table(headings, rows, empty, attrs) {
  if (rows.length === 0) return h("p", { class: "muted" }, empty);
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      attrs || {},
      h("thead", {}, h("tr", {}, headings.map((t) => h("th", { scope: "col", text: t })))),
      h(
        "tbody",
        {},
        rows.map((cells) => h("tr", {}, cells.map((c) => h("td", {}, c)))),
      ),
    ),
  );
}

export function section(title, ...children) {
  return h("section", { class: "card" }, h("h2", { text: title }), children);
}

/** An error, as the API put it. */
export function errorBox(err) {
  const code = err && err.code ? h("code", { text: err.code }) : null;
  return h("div", { class: "error", role: "alert" }, code, code ? " " : null, String(err?.message ?? err));
}

export const TERMINAL = ["succeeded", "failed", "timed_out", "cancelled"];

export function statusBadge(status, attrs) {
  return h("span", { ...(attrs || {}), class: `badge status-${status}` }, status);
}

/** Milliseconds for people. */
export function ms(v) {
  if (v === undefined || v === null) return "–";
  if (v < 1000) return `${v} ms`;
  if (v < 60_000) return `${(v / 1000).toFixed(v < 10_000 ? 2 : 1)} s`;
  const min = Math.floor(v / 60_000);
  return `${min} min ${Math.round((v % 60_000) / 1000)} s`;
}

/** Bytes for people (binary units, as the CLI writes them). */
export function bytes(n) {
  if (n === undefined || n === null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u += 1;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

/** An RFC 3339 time in the browser's own zone and format. */
export function time(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

export function functionLink(name, attrs) {
  return h("a", { ...(attrs || {}), href: "#/functions/" + encodeURIComponent(name) }, name);
}

export function taskLink(id, attrs) {
  return h("a", { ...(attrs || {}), href: "#/tasks/" + encodeURIComponent(id), class: "mono" }, id);
}
