// Rollouts: the list, and a rollout's page: its waves (devices activated, failed, pending), every
// gate's measured value against its threshold over time, the timeline of events, and pause /
// resume / abort for operators (abort asks for a confirmation).

import { api, canOperate, path } from "./api.js";
import { lines } from "./charts.js";
import { ago, badge, fill, h, link, model, num, section, table, time } from "./dom.js";

export async function list(main) {
  const body = h("div", { id: "rollouts" });
  fill(main, h("h1", {}, "Rollouts"), body);
  const refresh = async () => {
    const rollouts = await api("/rollouts");
    fill(body, rollouts.length === 0 ? h("p", { class: "muted" }, "No rollout yet: edgefleet rollout create.") :
      table(["Rollout", "Version", "State", "Wave", "Devices", "Activated", "Failed", "Updated"], rollouts.map((r) => [
        link(`/ui/rollouts/${r.id}`, `#${r.id}`),
        model(r.model),
        badge(r.state),
        `${r.wave} of ${r.plan.waves.length}`,
        String(r.measurements.devices),
        String(r.measurements.activated),
        String(r.measurements.failed),
        ago(r.updated_at),
      ]), { id: "rollout-table" }));
  };
  await refresh();
  return { refresh };
}

// The threshold written in a gate ("error_rate<0.05" → 0.05).
export function threshold(gate) {
  const m = gate.match(/(<=|>=|<|>|==)\s*(-?[0-9.]+(?:e-?\d+)?)/i);
  return m ? Number(m[2]) : null;
}

function gateRows(gates) {
  return gates.map((g) => [
    h("code", {}, g.gate),
    h("span", { class: "gate-value" }, num(g.value)),
    num(threshold(g.gate)),
    g.passed === true ? badge("passed", "ok") : g.passed === false ? badge("failed") : badge(g.skipped ? "skipped" : "pending"),
    g.waiting || "",
  ]);
}

function actions(r, reload) {
  if (!canOperate() || !["running", "paused", "promoting"].includes(r.state)) return null;
  const status = h("span", { class: "muted", role: "status" });
  const act = async (action) => {
    try {
      await api(`/rollouts/${r.id}/${action}`, { method: "POST" });
      status.textContent = `${action} sent`;
      await reload();
    } catch (e) {
      status.textContent = e.message;
    }
  };
  const confirm = h("span", { class: "confirm", hidden: true },
    `Abort rollout #${r.id} and send every changed device back? `,
    h("button", { type: "button", class: "danger", id: "confirm-abort", onclick: () => act("abort") }, "Yes, abort"),
    h("button", { type: "button", onclick: () => { confirm.hidden = true; } }, "Keep it"));
  return h("div", { class: "actions", id: "rollout-actions" },
    r.state === "running" ? h("button", { type: "button", id: "pause", onclick: () => act("pause") }, "Pause") : null,
    r.state === "paused" ? h("button", { type: "button", id: "resume", onclick: () => act("resume") }, "Resume") : null,
    h("button", { type: "button", class: "danger", id: "abort", onclick: () => { confirm.hidden = false; } }, "Abort"),
    confirm, status);
}

function gateCharts(history) {
  const names = [...new Set(history.gates.flatMap((p) => p.gates.map((g) => g.gate)))];
  return names.map((gate) => {
    const points = history.gates.map((p) => [p.at, (p.gates.find((g) => g.gate === gate) || {}).value ?? null]);
    const t = threshold(gate);
    return h("div", { class: "gate-chart", dataset: { gate } }, h("h3", {}, h("code", {}, gate)),
      lines([{ name: "measured", points }], { thresholds: t === null ? [] : [{ value: t, label: "threshold" }], height: 140 }));
  });
}

function describe(e) {
  const d = e.detail || {};
  if (d.reason) return d.reason;
  if (e.action === "rollout.advance") return `wave ${d.wave} (${d.percent}%)`;
  if (d.measurements) return `${d.measurements.activated} activated, ${d.measurements.failed} failed`;
  return "";
}

export async function detail(main, [id]) {
  const head = h("div");
  const body = h("div", { id: "rollout", dataset: { id } });
  fill(main, h("h1", {}, link("/ui/rollouts", "Rollouts"), ` / #${id}`), head, body);
  const refresh = async () => {
    const [r, history] = await Promise.all([api(`/rollouts/${path(id)}`), api(`/rollouts/${path(id)}/history`)]);
    const ended = r.state === "completed" || r.state === "aborted";
    fill(head, h("p", {},
      h("strong", {}, model(r.model)), " ", badge(r.state), " ",
      h("span", { id: "current-wave" }, `wave ${r.wave} of ${r.plan.waves.length}`),
      r.reason ? h("span", { class: "reason", id: "rollout-reason" }, ` · ${r.reason}`) : null,
      r.waiting_for ? h("span", { class: "muted" }, ` · waiting for ${r.waiting_for}`) : null),
      actions(r, refresh));
    fill(body,
      // Activated and failed are what the wave's devices report now; pending only while it runs.
      section("Waves", table(["Wave", "Share", "Devices", "Serving it now", "Failed", "Pending"], r.plan.waves.map((percent, i) => {
        const w = r.waves.find((x) => x.wave === i + 1) || { devices: [], activated: 0, failed: 0 };
        return [
          `${i + 1}${i + 1 === r.wave ? " (current)" : i + 1 > r.wave ? " (not started)" : ""}`,
          `${percent}%`,
          String(w.devices.length),
          String(w.activated),
          String(w.failed),
          ended ? "–" : String(Math.max(0, w.devices.length - w.activated - w.failed)),
        ];
      }), { id: "waves" })),
      section("Gates", r.gates.length === 0 ? h("p", { class: "muted" }, "Not judged yet.") :
        table(["Gate", "Measured", "Threshold", "Result", "Waiting for"], gateRows(r.gates), { id: "gates" }),
        gateCharts(history)),
      section("Timeline", table(["When", "Event", "By", "Detail"], history.events.map((e) => [
        time(e.at), e.action.replace("rollout.", ""), e.actor, describe(e),
      ]), { id: "timeline" })),
      section("Devices", table(["Device", "Wave", "Outcome", "Error"], r.devices.slice(0, 500).map((d) => [
        link(`/ui/devices/${path(d.device)}`, d.device), String(d.wave), badge(d.outcome), d.error || "",
      ]))));
  };
  await refresh();
  return { refresh };
}
