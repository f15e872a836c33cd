// Models: every model with its versions; a model's page with each version's metrics, params,
// dataset and commit, its aliases, and the lineage graph (parent chain, and the retrain request
// and dataset snapshot each retrained version came from).

import { api, path } from "./api.js";
import { fill, h, link, num, s, section, table, time } from "./dom.js";

export async function list(main) {
  const models = await api("/models");
  fill(main, h("h1", {}, "Models"),
    models.length === 0 ? h("p", { class: "muted" }, "No model pushed yet: edgefleet model push FILE --name NAME.") :
      table(["Model", "Versions", "Aliases", "Created"], models.map((m) => [
        link(`/ui/models/${path(m.name)}`, m.name),
        String(m.versions.length),
        Object.entries(m.aliases).map(([a, v]) => h("span", { class: "label" }, `${a} → v${v}`)),
        time(m.created_at),
      ]), { id: "model-table" }));
}

const short = (hex) => (hex ? hex.slice(0, 12) : "–");

function pairs(map, format = (v) => v) {
  const entries = Object.entries(map || {});
  return entries.length === 0 ? "–" : entries.map(([k, v]) => h("span", { class: "label" }, `${k}=${format(v)}`));
}

// Versions as nodes down the page, parent → child edges, retrain requests as nodes beside the
// versions trained from their snapshot.
function lineage(versions, requests) {
  const rowH = 56;
  const width = 640;
  const index = new Map(versions.map((v, i) => [v.version, i]));
  const height = Math.max(1, versions.length) * rowH + 16;
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart lineage", role: "img", id: "lineage" });
  const y = (i) => 16 + i * rowH + 16;
  const vx = 120;
  versions.forEach((v, i) => {
    const parent = v.manifest.lineage.parent_version;
    if (parent != null && index.has(parent)) {
      svg.append(s("path", {
        d: `M ${vx - 40} ${y(index.get(parent))} C ${vx - 90} ${y(index.get(parent))}, ${vx - 90} ${y(i)}, ${vx - 40} ${y(i)}`,
        class: "edge",
      }));
    }
  });
  const requestFor = new Map();
  for (const r of requests) for (const t of r.trained_versions) requestFor.set(t, r);
  versions.forEach((v, i) => {
    const g = s("g", { class: "node", dataset: { version: v.version } });
    g.append(
      s("rect", { x: vx - 40, y: y(i) - 16, width: 80, height: 32, rx: 6 }),
      s("text", { x: vx, y: y(i) + 5, "text-anchor": "middle" }, `v${v.version}`),
    );
    svg.append(g);
    const ds = v.manifest.lineage.dataset_sha256;
    const r = requestFor.get(v.version);
    if (r) {
      svg.append(
        s("line", { x1: vx + 40, y1: y(i), x2: 300, y2: y(i), class: "edge" }),
        s("text", { x: 306, y: y(i) - 2, class: "request" }, `retrain request #${r.id} from v${r.version}`),
        s("text", { x: 306, y: y(i) + 14, class: "axis" }, `snapshot ${short(r.dataset_sha256)} · ${r.rows} rows`,
          s("title", {}, r.reason)),
      );
    } else if (ds) {
      svg.append(s("text", { x: vx + 52, y: y(i) + 5, class: "axis" }, `dataset ${short(ds)}`));
    }
  });
  return svg;
}

export async function detail(main, [name]) {
  const [summary, requests] = await Promise.all([api(`/models/${path(name)}`), api(`/retrain?model=${encodeURIComponent(name)}`)]);
  const shown = summary.versions.slice(-50);
  const versions = await Promise.all(shown.map((v) => api(`/models/${path(name)}/versions/${v}`)));
  fill(main,
    h("h1", {}, link("/ui/models", "Models"), " / ", name),
    section("Aliases", pairs(Object.fromEntries(Object.entries(summary.aliases).map(([a, v]) => [a, `v${v}`])))),
    section("Versions", table(["Version", "Metrics", "Params", "Dataset", "Commit", "Source", "Pushed", "Drift"],
      versions.map((v) => {
        const l = v.manifest.lineage;
        return [
          `v${v.version}${v.aliases.length ? ` (${v.aliases.join(", ")})` : ""}`,
          pairs(l.metrics, num),
          pairs(l.params),
          h("code", { title: l.dataset_sha256 || "" }, short(l.dataset_sha256)),
          h("code", {}, l.code_commit ? l.code_commit.slice(0, 12) : "–"),
          l.source ? `${l.source.system} ${l.source.reference}` : "–",
          `${time(v.created_at)} by ${v.created_by}`,
          link(`/ui/drift/${path(name)}/${v.version}`, "drift"),
        ];
      }), { id: "version-table" })),
    section("Lineage", lineage(versions, requests)),
    section("Retrain requests", requests.length === 0 ? h("p", { class: "muted" }, "None.") :
      table(["Request", "From", "Reason", "Rows", "Snapshot", "Trained"], requests.map((r) => [
        `#${r.id}`, `v${r.version}`, r.reason, String(r.rows), h("code", {}, short(r.dataset_sha256)),
        r.trained_versions.map((v) => `v${v}`).join(", ") || "not yet",
      ]))));
}
