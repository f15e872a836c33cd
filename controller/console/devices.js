// Devices: a filterable, paged list, and a device's page with its versions, last activation and
// refusal, and error rate and latency over time.

import { api, apiWithHeaders, path } from "./api.js";
import { lines } from "./charts.js";
import { ago, badge, fill, go, h, link, model, num, pct, section, table, time } from "./dom.js";

const PAGE = 50;

function labels(map) {
  return Object.entries(map || {}).map(([k, v]) => h("span", { class: "label" }, `${k}=${v}`));
}

function state(d) {
  if (d.decommissioned_at) return "decommissioned";
  return d.online ? "online" : "offline";
}

export async function list(main, _params, query) {
  const label = h("input", { name: "label", value: query.get("label") || "", placeholder: "site=x,function=y" });
  const select = h("select", { name: "state" },
    ["", "online", "offline", "decommissioned"].map((v) =>
      h("option", { value: v, selected: v === (query.get("state") || "") }, v || "any state")));
  const form = h("form", { class: "filters", id: "device-filter" },
    h("label", {}, "Labels ", label), h("label", {}, "State ", select), h("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    if (label.value.trim()) next.set("label", label.value.trim());
    if (select.value) next.set("state", select.value);
    go(`/ui/devices${next.size ? `?${next}` : ""}`);
  });
  const body = h("div", { id: "devices" });
  fill(main, h("h1", {}, "Devices"), form, body);
  const page = Math.max(0, Number.parseInt(query.get("page") || "0", 10) || 0);
  const refresh = async () => {
    const q = new URLSearchParams();
    for (const key of ["label", "state"]) if (query.get(key)) q.set(key, query.get(key));
    q.set("limit", PAGE);
    q.set("offset", page * PAGE);
    const { body: devices, headers } = await apiWithHeaders(`/devices?${q}`);
    const total = Number(headers.get("x-total-count") || devices.length);
    const pages = Math.max(1, Math.ceil(total / PAGE));
    const to = (p) => {
      const next = new URLSearchParams(query);
      next.set("page", p);
      return `/ui/devices?${next}`;
    };
    fill(body,
      h("p", { class: "muted", id: "device-count", dataset: { total } },
        `${total} devices · page ${page + 1} of ${pages}`),
      table(["Device", "State", "Labels", "Serving", "Desired", "Last seen", "p99"], devices.map((d) => [
        link(`/ui/devices/${path(d.id)}`, d.id),
        badge(state(d)),
        labels(d.labels),
        model(d.status && d.status.active),
        model(d.desired),
        ago(d.last_seen),
        d.status && d.status.latency_p99_ms != null ? `${num(d.status.latency_p99_ms)} ms` : "–",
      ]), { id: "device-table" }),
      h("nav", { class: "pager" },
        page > 0 ? link(to(page - 1), "← previous") : null,
        page + 1 < pages ? link(to(page + 1), "next →") : null));
  };
  await refresh();
  return { refresh };
}

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

export async function detail(main, [id]) {
  const body = h("div", { id: "device" });
  fill(main, h("h1", {}, link("/ui/devices", "Devices"), " / ", id), body);
  const refresh = async () => {
    const [d, points] = await Promise.all([api(`/devices/${path(id)}`), api(`/devices/${path(id)}/metrics`)]);
    const st = d.status || {};
    const act = st.last_activation;
    const refusal = st.last_refusal;
    fill(body,
      section("Device", facts([
        ["State", badge(state(d))],
        ["Labels", labels(d.labels)],
        ["Enrolled", time(d.enrolled_at)],
        ["Last seen", `${ago(d.last_seen)} (${time(d.last_seen)})`],
        ["Agent", st.agent_version || "–"],
        ["Desired", `${model(d.desired)}${d.desired_sequence ? ` (document ${d.desired_sequence})` : ""}`],
        ["Active", h("span", { id: "active-version" }, model(st.active))],
        ["Previous", model(st.previous)],
        ["Engines", (st.engines || []).join(", ") || "–"],
        ["Decommissioned", d.decommissioned_at ? `${time(d.decommissioned_at)}: ${d.decommission_reason || ""}` : "no"],
      ])),
      section("Last activation", act ? facts([
        ["Version", model(act.model)],
        ["Result", act.ok ? badge("activated", "ok") : badge("rolled back", "failed")],
        ["Error", act.error || "–"],
        ["When", time(act.at)],
        ["Took", `${act.duration_ms} ms`],
      ]) : h("p", { class: "muted" }, "None reported.")),
      section("Last refused document", refusal ? facts([
        ["Class", badge(refusal.class, "failed")],
        ["Reason", refusal.message],
        ["Sequence", refusal.sequence ?? "–"],
        ["When", time(refusal.at)],
      ]) : h("p", { class: "muted" }, "None.")),
      section("Serving", facts([
        ["Requests", String(st.requests ?? 0)],
        ["Error rate", pct(st.error_rate)],
        ["Latency p50 / p99", `${num(st.latency_p50_ms)} / ${num(st.latency_p99_ms)} ms`],
      ]),
      h("h3", {}, "Error rate"),
      lines([{ name: "error rate", points: points.map((p) => [p.at, p.error_rate]) }]),
      h("h3", {}, "Latency (ms)"),
      lines([
        { name: "p50", points: points.map((p) => [p.at, p.latency_p50_ms]) },
        { name: "p99", points: points.map((p) => [p.at, p.latency_p99_ms]) },
      ])));
  };
  await refresh();
  return { refresh };
}
