// Usage and the fleet: shown when this server's API has them (its OpenAPI
// document says so), as the server reports them; otherwise said to be
// missing. Nothing here is made up.

import * as api from "./api.js";
import { h } from "./dom.js";

async function serviceView(title, endpoint, missing) {
  const paths = await api.apiPaths();
  if (!paths[endpoint]?.get) {
    return h(
      "div",
      {},
      h("h1", { text: title }),
      h("p", { id: "not-available", class: "muted" }, "Not available on this server: its API has no ", h("code", { text: `GET ${endpoint}` }), ". ", missing),
    );
  }
  const data = await api.json(endpoint);
  return h(
    "div",
    {},
    h("h1", { text: title }),
    h("p", { class: "muted" }, "As ", h("code", { text: `GET ${endpoint}` }), " answers:"),
    h("pre", { class: "output", text: JSON.stringify(data, null, 2) }),
  );
}

export function usageView() {
  return serviceView("Usage", "/v1/usage", "Each task's own usage (CPU time, peak memory, wall time) is on its page.");
}

export function fleetView() {
  return serviceView("Fleet", "/v1/executors", "This server runs its functions on its own Docker Engine.");
}
