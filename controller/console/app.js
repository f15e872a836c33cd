// The console: sign-in, the layout, the router (every page has its own URL under /ui/), and
// live updates (each page's refresh runs every few seconds while the tab is visible).

import { ApiError, currentSession, loadSession, signIn, signOut } from "./api.js";
import { fill, go, h, link } from "./dom.js";
import * as devices from "./devices.js";
import * as drift from "./drift.js";
import * as models from "./models.js";
import * as overview from "./overview.js";
import * as rollouts from "./rollouts.js";

const REFRESH_MS = 2000;

const ROUTES = [
  { pattern: /^\/ui\/?$/, page: overview.mount, nav: "overview", title: "Overview" },
  { pattern: /^\/ui\/devices\/?$/, page: devices.list, nav: "devices", title: "Devices" },
  { pattern: /^\/ui\/devices\/([^/]+)$/, page: devices.detail, nav: "devices", title: "Device" },
  { pattern: /^\/ui\/models\/?$/, page: models.list, nav: "models", title: "Models" },
  { pattern: /^\/ui\/models\/([^/]+)$/, page: models.detail, nav: "models", title: "Model" },
  { pattern: /^\/ui\/rollouts\/?$/, page: rollouts.list, nav: "rollouts", title: "Rollouts" },
  { pattern: /^\/ui\/rollouts\/(\d+)$/, page: rollouts.detail, nav: "rollouts", title: "Rollout" },
  { pattern: /^\/ui\/drift\/?$/, page: drift.list, nav: "drift", title: "Drift" },
  { pattern: /^\/ui\/drift\/([^/]+)\/([^/]+)$/, page: drift.detail, nav: "drift", title: "Drift" },
];

const NAV = [
  ["overview", "/ui/", "Overview"],
  ["devices", "/ui/devices", "Devices"],
  ["models", "/ui/models", "Models"],
  ["rollouts", "/ui/rollouts", "Rollouts"],
  ["drift", "/ui/drift", "Drift"],
];

let refresh = null;
let generation = 0;
let refreshing = false;

const root = document.getElementById("app");

function showError(where, error) {
  const text = error instanceof Error ? error.message : String(error);
  fill(where, h("p", { class: "error", role: "alert" }, text));
}

function signInPage(message) {
  const token = h("input", {
    type: "password", name: "token", id: "token", autocomplete: "off", required: true,
    placeholder: "efk_…",
  });
  const status = h("p", { class: "error", role: "alert" }, message || "");
  const form = h(
    "form",
    { class: "card signin", id: "signin" },
    h("h1", {}, "edgefleet"),
    h("label", { for: "token" }, "Operator token"),
    token,
    h("button", { type: "submit" }, "Sign in"),
    status,
    h("p", { class: "muted" }, "Create one with ", h("code", {}, "edgefleet token create NAME --role viewer"), "."),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await signIn(token.value);
      token.value = "";
      await route();
    } catch (e) {
      status.textContent = e instanceof ApiError && e.status === 401 ? "Unknown or revoked token." : e.message;
    }
  });
  fill(root, form);
  token.focus();
}

function layout(active) {
  const session = currentSession();
  const out = h("button", { type: "button", class: "link", id: "signout" }, "Sign out");
  out.addEventListener("click", async () => {
    await signOut().catch(() => {});
    signInPage("Signed out.");
  });
  const main = h("main", { id: "page" });
  fill(
    root,
    h(
      "header",
      { class: "top" },
      h("span", { class: "brand" }, "edgefleet"),
      h("nav", {}, NAV.map(([key, href, label]) => {
        const a = link(href, label);
        if (key === active) a.setAttribute("aria-current", "page");
        return a;
      })),
      h("span", { class: "who" }, `${session.name} (${session.role})`, out),
    ),
    main,
  );
  return main;
}

async function route() {
  generation += 1;
  const mine = generation;
  refresh = null;
  if (!currentSession() && !(await loadSession())) {
    signInPage();
    return;
  }
  const url = new URL(window.location.href);
  const match = ROUTES.map((r) => ({ r, m: url.pathname.match(r.pattern) })).find((x) => x.m);
  if (!match) {
    const main = layout("");
    showError(main, `No page at ${url.pathname}.`);
    return;
  }
  document.title = `${match.r.title} · edgefleet`;
  const main = layout(match.r.nav);
  const params = match.m.slice(1).map(decodeURIComponent);
  try {
    const page = await match.r.page(main, params, url.searchParams);
    if (mine === generation && page && page.refresh) refresh = page.refresh;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) signInPage("Your session ended; sign in again.");
    else if (mine === generation) showError(main, e);
  }
}

document.addEventListener("click", (event) => {
  const a = event.target.closest("a[data-nav]");
  if (!a || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
  event.preventDefault();
  go(a.getAttribute("href"));
});
window.addEventListener("popstate", route);

window.setInterval(async () => {
  if (!refresh || refreshing || document.visibilityState !== "visible") return;
  refreshing = true;
  try {
    await refresh();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) signInPage("Your session ended; sign in again.");
  } finally {
    refreshing = false;
  }
}, REFRESH_MS);

route();
