// Drift: per model version (and device group), each feature's histogram against the training
// baseline, PSI / KS / Wasserstein per window over time with the thresholds, flagged features
// first, the prediction-class distribution, accuracy from feedback, and the retrain request the
// drift triggered with its snapshot.

import { api, path } from "./api.js";
import { lines, overlay } from "./charts.js";
import { badge, fill, go, h, link, num, pct, section, table, time } from "./dom.js";

export async function list(main) {
  const models = await api("/models");
  fill(main, h("h1", {}, "Drift"),
    models.length === 0 ? h("p", { class: "muted" }, "No model yet.") :
      table(["Model", "Versions"], models.map((m) => [
        m.name,
        m.versions.slice().reverse().slice(0, 20).map((v) => [link(`/ui/drift/${path(m.name)}/${v}`, `v${v}`), " "]),
      ]), { id: "drift-models" }));
}

const ORDER = { drift: 0, warn: 1, ok: 2, insufficient: 3 };

function binLabels(edges) {
  if (!edges || edges.length === 0) return ["all"];
  return [`<${num(edges[0])}`, ...edges.slice(1).map((e, i) => `${num(edges[i])}–${num(e)}`), `≥${num(edges[edges.length - 1])}`];
}

function feature(f, history) {
  const series = (key) => history.windows.map((w) => [w.from, (w.features.find((x) => x.name === f.name) || {})[key] ?? null]);
  return h("div", { class: "feature card", dataset: { feature: f.name, status: f.status } },
    h("h3", {}, f.name, " ", badge(f.status)),
    h("p", { class: "muted" }, f.reason),
    table(["PSI", "KS statistic", "KS p", "Wasserstein", "Jensen–Shannon", "Values", "Sampled"], [[
      num(f.psi), num(f.ks_statistic), num(f.ks_pvalue), num(f.wasserstein), num(f.jensen_shannon), String(f.count), String(f.samples),
    ]]),
    f.reference_counts && f.reference_counts.length ? overlay(binLabels(f.edges), f.reference_counts, f.current_counts) : null,
    h("div", { class: "over-time" },
      h("div", {}, h("h4", {}, "PSI per window"), lines([{ name: "PSI", points: series("psi") }], {
        thresholds: [{ value: history.psi_warn, label: "warn" }, { value: history.psi_drift, label: "drift" }],
        height: 140 })),
      h("div", {}, h("h4", {}, "KS p-value per window"), lines([{ name: "KS p", points: series("ks_pvalue") }], {
        thresholds: [{ value: history.ks_p_drift, label: "drift" }], height: 140, yMax: 1 })),
      h("div", {}, h("h4", {}, "Wasserstein per window"), lines([{ name: "Wasserstein", points: series("wasserstein") }], {
        thresholds: [{ value: history.wasserstein_drift, label: "drift" }], height: 140 }))));
}

export async function detail(main, [name, version], query) {
  const group = query.get("group") || "";
  const input = h("input", { name: "group", value: group, placeholder: "all devices" });
  const form = h("form", { class: "filters" }, h("label", {}, "Device group ", input), h("button", { type: "submit" }, "Show"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const q = input.value.trim() ? `?group=${encodeURIComponent(input.value.trim())}` : "";
    go(`/ui/drift/${path(name)}/${path(version)}${q}`);
  });
  const body = h("div", { id: "drift" });
  fill(main, h("h1", {}, link("/ui/drift", "Drift"), " / ", link(`/ui/models/${path(name)}`, name), ` v${version}`), form, body);
  const q = group ? `?group=${encodeURIComponent(group)}` : "";
  // The per-window history changes once a window: fetched again only when a new one may have closed.
  let history = null;
  let historyAt = 0;
  const refresh = async () => {
    const stale = !history || Date.now() - historyAt >= history.window_secs * 1000;
    const [report, fresh, requests] = await Promise.all([
      api(`/models/${path(name)}/versions/${path(version)}/drift${q}`),
      stale ? api(`/models/${path(name)}/versions/${path(version)}/drift/history${q}`) : Promise.resolve(history),
      api(`/retrain?model=${encodeURIComponent(name)}`),
    ]);
    if (stale) historyAt = Date.now();
    history = fresh;
    const features = report.features.slice().sort((a, b) => (ORDER[a.status] ?? 9) - (ORDER[b.status] ?? 9));
    const mine = requests.filter((r) => r.version === report.version);
    const out = report.output;
    fill(body,
      h("p", { id: "drift-summary" },
        `${report.drifted_features} of ${report.features.length} features drifted · ${report.rows} rows, ${report.samples} sampled · `,
        `${time(report.from)} to ${time(report.to)}`),
      report.has_baseline ? null : h("p", { class: "error" }, "This version was pushed without training data: no baseline to compare with."),
      section("Retrain requests", mine.length === 0 ? h("p", { class: "muted" }, "None for this version.") :
        table(["Request", "When", "Reason", "Rows", "Snapshot"], mine.map((r) => [
          `#${r.id}`, time(r.created_at), r.reason, String(r.rows),
          [h("a", { href: `/api/v1/retrain/${r.id}/files/data.csv`, download: `retrain-${r.id}.csv` }, "data.csv"), " ",
            h("a", { href: `/api/v1/retrain/${r.id}/files/manifest.json`, download: `retrain-${r.id}.json` }, "manifest.json")],
        ]), { id: "retrain-requests" })),
      section("Predictions", out ? [
        h("p", {}, `${out.name}: `, badge(out.status), ` PSI ${num(out.psi)}, χ² p ${num(out.chi2_pvalue)}`),
        overlay(out.reference_counts.map((_, i) => `class ${i}`), out.reference_counts, out.current_counts),
      ] : h("p", { class: "muted" }, "No class output in the baseline."),
      h("p", { id: "accuracy" }, report.accuracy ?
        `Accuracy from feedback: ${pct(report.accuracy.accuracy)} (${report.accuracy.correct} of ${report.accuracy.labeled} labelled)` :
        "No feedback labels yet.")),
      h("div", { id: "features" }, features.map((f) => feature(f, history))));
  };
  await refresh();
  return { refresh };
}
