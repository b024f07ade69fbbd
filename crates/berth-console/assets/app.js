// The console's shell: signing in and out, the navigation, and the routes
// (`#/functions`, `#/functions/NAME`, `#/tasks?…`, `#/tasks/ID`, `#/usage`,
// `#/fleet`). Each page is built from the API's answers, then shown.

import * as api from "./api.js";
import { errorBox, h, replace } from "./dom.js";
import { functionsView, functionView } from "./functions.js";
import { revokeUrls } from "./output.js";
import { fleetView, usageView } from "./service.js";
import { tasksView, taskView } from "./tasks.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const signOut = document.getElementById("sign-out");

const routes = [
  [/^\/functions$/, functionsView],
  [/^\/functions\/([^/]+)$/, functionView],
  [/^\/tasks$/, tasksView],
  [/^\/tasks\/([^/]+)$/, taskView],
  [/^\/usage$/, usageView],
  [/^\/fleet$/, fleetView],
];

/** Counts renders: a page whose render is not the latest stays unseen. */
let generation = 0;
let shown = null;
let notice = null;

function currentRoute() {
  const raw = window.location.hash.replace(/^#/, "") || "/functions";
  const at = raw.indexOf("?");
  return at < 0
    ? { path: raw, params: new URLSearchParams() }
    : { path: raw.slice(0, at), params: new URLSearchParams(raw.slice(at + 1)) };
}

function go(hash) {
  if (window.location.hash === hash) render();
  else window.location.hash = hash;
}

async function render() {
  const gen = ++generation;
  const here = window.location.hash;
  const ctx = {
    alive: () => gen === generation && window.location.hash === here,
    // Renders the same page again (a running task, after a change).
    refresh: () => {
      if (gen === generation) render();
    },
    go,
  };
  const { path, params } = currentRoute();
  if (api.key() === null) {
    shown = null;
    nav.hidden = true;
    signOut.hidden = true;
    revokeUrls();
    replace(main, signInView());
    return;
  }
  nav.hidden = false;
  signOut.hidden = false;
  markNav(path);
  showFleet();
  if (shown !== here) {
    revokeUrls();
    replace(main, h("p", { class: "muted", text: "Loading…" }));
  }
  let page;
  try {
    const route = routes.find(([re]) => re.test(path));
    if (!route) {
      page = h("div", {}, h("h1", { text: "Not found" }), h("p", {}, "No page at ", h("code", { text: path }), "."));
    } else {
      const args = route[0].exec(path).slice(1).map(decodeURIComponent);
      page = await route[1](ctx, params, ...args);
    }
  } catch (err) {
    if (err?.status === 401) return; // signed out: the sign-in page follows
    page = h("div", {}, errorBox(err));
  }
  if (!ctx.alive()) return;
  shown = here;
  replace(main, page);
}

function markNav(path) {
  for (const a of nav.querySelectorAll("a")) {
    const active = path.startsWith("/" + a.dataset.nav);
    if (active) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

async function showFleet() {
  const link = nav.querySelector('[data-nav="fleet"]');
  try {
    link.hidden = !(await api.isAdmin());
  } catch {
    link.hidden = true;
  }
}

function signInView() {
  const input = h("input", {
    id: "signin-key",
    name: "key",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
  });
  const button = h("button", { id: "signin-submit", type: "submit", class: "primary", text: "Sign in" });
  const status = h("p", { class: "form-status", role: "status" });
  if (notice) {
    replace(status, errorBox(notice));
    notice = null;
  }
  const form = h(
    "form",
    {
      id: "signin-form",
      class: "card narrow",
      onsubmit: async (event) => {
        event.preventDefault();
        const candidate = input.value.trim();
        if (!candidate) return;
        button.disabled = true;
        replace(status, "Checking the key…");
        try {
          if (await api.accepts(candidate)) {
            api.setKey(candidate);
            input.value = "";
            shown = null;
            const wanted = window.location.hash;
            go(wanted && wanted !== "#/signin" ? wanted : "#/functions");
            return;
          }
          replace(status, errorBox({ code: "unauthorized", message: "This server does not accept that key." }));
        } catch (err) {
          replace(status, errorBox(err));
        } finally {
          button.disabled = false;
        }
      },
    },
    h("h1", { text: "Sign in" }),
    h("label", { for: "signin-key", text: "API key" }),
    input,
    h(
      "p",
      { class: "hint" },
      "The key stays in this tab's session storage and is forgotten when the tab closes. ",
      "It is sent only to this server, as ",
      h("code", { text: "Authorization: Bearer" }),
      ". The admin's key is in the server's data directory (",
      h("code", { text: "admin.key" }),
      ").",
    ),
    button,
    status,
  );
  queueMicrotask(() => input.focus());
  return form;
}

signOut.addEventListener("click", () => {
  api.forget();
  shown = null;
  go("#/functions");
});

window.addEventListener("berth:unauthorized", () => {
  notice = { code: "unauthorized", message: "The server no longer accepts the key: sign in again." };
  render();
});
window.addEventListener("hashchange", render);
render();
