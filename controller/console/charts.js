// Small SVG charts: horizontal bars, lines over time with threshold lines, and overlaid
// histograms. Sizes are in the viewBox; the SVG scales to its container.

import { h, num, s, time } from "./dom.js";

const W = 640;
const PAD = { left: 48, right: 12, top: 12, bottom: 28 };

// Horizontal bars: [{label, value, href?}], value counts.
export function bars(items, { unit = "" } = {}) {
  const max = Math.max(1, ...items.map((i) => i.value));
  return h(
    "div",
    { class: "bars" },
    items.map((item) => {
      const fill = h("span", { class: "bar-fill" });
      fill.style.width = `${(100 * item.value) / max}%`;
      return h(
        "div",
        { class: "bar", dataset: { label: item.label, value: item.value } },
        h("span", { class: "bar-label" }, item.label),
        h("span", { class: "bar-track" }, fill),
        h("span", { class: "bar-value" }, `${item.value}${unit}`),
      );
    }),
  );
}

function scale(domain, range) {
  const [d0, d1] = domain;
  const [r0, r1] = range;
  const span = d1 - d0 || 1;
  return (v) => r0 + ((v - d0) / span) * (r1 - r0);
}

// Lines over time: series [{name, points: [[unix, value|null]]}], thresholds [{value, label}].
export function lines(series, { thresholds = [], height = 200, yMin = 0, yMax } = {}) {
  const all = series.flatMap((x) => x.points).filter(([, v]) => v !== null && v !== undefined);
  const values = all.map(([, v]) => v).concat(thresholds.map((t) => t.value));
  if (all.length === 0) return h("p", { class: "muted" }, "No data yet.");
  const xs = all.map(([t]) => t);
  const x0 = Math.min(...xs);
  const x1 = Math.max(...xs, x0 + 1);
  const top = yMax ?? (Math.max(...values) * 1.1 || 1);
  const x = scale([x0, x1], [PAD.left, W - PAD.right]);
  const y = scale([yMin, top], [height - PAD.bottom, PAD.top]);
  const svg = s("svg", { viewBox: `0 0 ${W} ${height}`, class: "chart", role: "img" });
  for (const tick of [yMin, (yMin + top) / 2, top]) {
    svg.append(
      s("line", { x1: PAD.left, x2: W - PAD.right, y1: y(tick), y2: y(tick), class: "grid" }),
      s("text", { x: PAD.left - 4, y: y(tick) + 4, class: "axis", "text-anchor": "end" }, num(tick)),
    );
  }
  svg.append(
    s("text", { x: PAD.left, y: height - 8, class: "axis" }, time(x0)),
    s("text", { x: W - PAD.right, y: height - 8, class: "axis", "text-anchor": "end" }, time(x1)),
  );
  for (const t of thresholds) {
    svg.append(
      s("line", { x1: PAD.left, x2: W - PAD.right, y1: y(t.value), y2: y(t.value), class: "threshold" }),
      s("text", { x: W - PAD.right - 2, y: y(t.value) - 3, class: "axis threshold-label", "text-anchor": "end" },
        `${t.label} ${num(t.value)}`),
    );
  }
  series.forEach((line, ix) => {
    const pts = line.points.filter(([, v]) => v !== null && v !== undefined);
    const cls = `series series-${ix % 6}`;
    if (pts.length === 1) {
      svg.append(s("circle", { cx: x(pts[0][0]), cy: y(pts[0][1]), r: 3, class: cls }));
    } else if (pts.length > 1) {
      svg.append(s("polyline", { points: pts.map(([t, v]) => `${x(t)},${y(v)}`).join(" "), class: cls }));
    }
  });
  const legend = h(
    "div",
    { class: "legend" },
    series.map((line, ix) => h("span", { class: `key series-${ix % 6}` }, line.name)),
  );
  return h("figure", { class: "figure" }, svg, legend);
}

// Two distributions over the same bins, each normalised to shares: reference (training) and
// current (traffic), drawn side by side per bin.
export function overlay(labels, reference, current, { height = 160, names = ["training", "traffic"] } = {}) {
  const share = (counts) => {
    const total = counts.reduce((a, b) => a + b, 0) || 1;
    return counts.map((c) => c / total);
  };
  const [r, c] = [share(reference), share(current)];
  const top = Math.max(0.01, ...r, ...c);
  const n = Math.max(r.length, c.length, 1);
  const band = (W - PAD.left - PAD.right) / n;
  const y = scale([0, top], [height - PAD.bottom, PAD.top]);
  const svg = s("svg", { viewBox: `0 0 ${W} ${height}`, class: "chart", role: "img" });
  svg.append(s("text", { x: PAD.left - 4, y: y(top) + 4, class: "axis", "text-anchor": "end" }, `${num(top * 100)}%`));
  for (let i = 0; i < n; i += 1) {
    const x = PAD.left + i * band;
    const w = Math.max(1, band / 2 - 1);
    svg.append(
      s("rect", { x, y: y(r[i] || 0), width: w, height: y(0) - y(r[i] || 0), class: "ref" },
        s("title", {}, `${labels[i] ?? i}: ${names[0]} ${num((r[i] || 0) * 100)}%`)),
      s("rect", { x: x + w, y: y(c[i] || 0), width: w, height: y(0) - y(c[i] || 0), class: "cur" },
        s("title", {}, `${labels[i] ?? i}: ${names[1]} ${num((c[i] || 0) * 100)}%`)),
    );
  }
  const step = Math.max(1, Math.ceil(n / 8));
  for (let i = 0; i < n; i += step) {
    svg.append(s("text", { x: PAD.left + i * band, y: height - 8, class: "axis" }, labels[i] ?? String(i)));
  }
  const legend = h("div", { class: "legend" },
    h("span", { class: "key ref" }, names[0]), h("span", { class: "key cur" }, names[1]));
  return h("figure", { class: "figure" }, svg, legend);
}
