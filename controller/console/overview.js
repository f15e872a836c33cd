// Overview: devices online and offline, versions in service per model, rollouts in progress,
// open retrain requests, the newest refusals and rollbacks.

import { api, path } from "./api.js";
import { bars } from "./charts.js";
import { ago, badge, fill, h, link, section, table } from "./dom.js";

function stat(key, label, value, href) {
  return h("div", { class: "stat", dataset: { stat: key } },
    h("span", { class: "stat-value" }, String(value)),
    href ? link(href, label) : h("span", { class: "stat-label" }, label));
}

function render(o) {
  const byModel = new Map();
  for (const v of o.in_service) {
    if (!byModel.has(v.model)) byModel.set(v.model, []);
    byModel.get(v.model).push({ label: `v${v.version}`, value: v.devices });
  }
  return [
    h("div", { class: "stats" },
      stat("online", "online", o.online, "/ui/devices?state=online"),
      stat("offline", "offline", o.offline, "/ui/devices?state=offline"),
      stat("decommissioned", "decommissioned", o.decommissioned, "/ui/devices?state=decommissioned"),
      stat("rollouts", "rollouts in progress", o.rollouts.length, "/ui/rollouts"),
      stat("retrain", "open retrain requests", o.open_retrain_requests, "/ui/drift")),
    section("Versions in service",
      byModel.size === 0 ? h("p", { class: "muted" }, "No device reports a version yet.") : null,
      [...byModel.entries()].map(([name, items]) =>
        h("div", { class: "model-bars", dataset: { model: name } }, h("h3", {}, link(`/ui/models/${path(name)}`, name)),
          bars(items, { unit: " devices" })))),
    section("Rollouts in progress",
      o.rollouts.length === 0 ? h("p", { class: "muted" }, "None.") :
        table(["Rollout", "Version", "State", "Wave", "Reason"], o.rollouts.map((r) => [
          link(`/ui/rollouts/${r.id}`, `#${r.id}`),
          `${r.model.name}:${r.model.version}`,
          badge(r.state),
          `${r.wave} of ${r.waves} (${r.percent}%)`,
          r.reason || "",
        ]), { id: "active-rollouts" })),
    section("Recent refusals and rollbacks",
      o.recent.length === 0 ? h("p", { class: "muted" }, "None reported.") :
        table(["When", "Device", "What", "Detail"], o.recent.map((e) => [
          ago(e.at), link(`/ui/devices/${path(e.device)}`, e.device), badge(e.kind), e.detail,
        ]), { id: "recent" })),
  ];
}

export async function mount(main) {
  const body = h("div", { id: "overview" });
  fill(main, h("h1", {}, "Overview"), body);
  const refresh = async () => fill(body, render(await api("/overview")));
  await refresh();
  return { refresh };
}
