// Building nodes (never markup from data), formatting, and in-page links.

export const SVG_NS = "http://www.w3.org/2000/svg";

function build(node, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// An HTML element: h("a", {href: "/ui/"}, "text", child...).
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

// An SVG element.
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

// A link inside the console: the router handles it without a reload.
export function link(href, ...children) {
  return h("a", { href, dataset: { nav: "" } }, ...children);
}

// Moves to another console page without a reload.
export function go(href) {
  window.history.pushState({}, "", href);
  window.dispatchEvent(new PopStateEvent("popstate"));
}

export function time(unix) {
  if (!unix) return "never";
  return new Date(unix * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

export function ago(unix, now = Date.now() / 1000) {
  if (!unix) return "never";
  const secs = Math.max(0, Math.round(now - unix));
  if (secs < 90) return `${secs} s ago`;
  if (secs < 5400) return `${Math.round(secs / 60)} min ago`;
  if (secs < 129600) return `${Math.round(secs / 3600)} h ago`;
  return `${Math.round(secs / 86400)} d ago`;
}

// Three significant digits, as the CLI prints measurements.
export function num(v) {
  if (v === undefined || v === null) return "–";
  if (!Number.isFinite(v)) return String(v);
  if (v === 0) return "0";
  const digits = Math.min(12, Math.max(0, 2 - Math.floor(Math.log10(Math.abs(v)))));
  return String(Number(v.toFixed(digits)));
}

export function pct(v) {
  return v === undefined || v === null ? "–" : `${num(v * 100)}%`;
}

export function model(ref) {
  return ref ? `${ref.name}:${ref.version}` : "–";
}

// A table: headers and rows of cells (nodes or text).
export function table(headers, rows, attrs = {}) {
  return h(
    "table",
    attrs,
    h("thead", {}, h("tr", {}, headers.map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))),
  );
}

export function badge(text, kind = text) {
  return h("span", { class: `badge badge-${kind}` }, text);
}

export function section(title, ...children) {
  return h("section", { class: "card" }, h("h2", {}, title), ...children);
}

// Replaces a node's children.
export function fill(node, ...children) {
  node.replaceChildren();
  return build(node, {}, children);
}
