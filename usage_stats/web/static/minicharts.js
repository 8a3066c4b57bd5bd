// What the item widget and the embeddable repository view share: paired bars of views and
// downloads per period (SVG, no library) and the top countries as a list with bars.
import { METRIC_LABELS, countryName, el, formatNumber, metricWord, _ } from "./common.js";

const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

function svg(tag, attributes, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  if (text) node.append(document.createTextNode(text));
  return node;
}

/** Paired bars per period in `#chart`; the tallest bar fills the height. */
export function drawChart(series) {
  const chart = $("chart");
  const width = 320;
  const height = 110;
  const max = Math.max(1, ...series.map((p) => Math.max(p.views, p.downloads)));
  const slot = width / Math.max(1, series.length);
  const bar = Math.max(0.5, slot * 0.4);
  const shapes = [];
  series.forEach((p, i) => {
    for (const [j, metric] of ["views", "downloads"].entries()) {
      const h = (p[metric] / max) * (height - 4);
      const rect = svg("rect", {
        class: metric,
        x: i * slot + slot * 0.1 + j * bar,
        y: height - h,
        width: bar,
        height: h,
      });
      rect.append(svg("title", {}, `${p.period}: ${formatNumber(p[metric])} ${metricWord(metric)}`));
      shapes.push(rect);
    }
  });
  chart.replaceChildren(...shapes);
  chart.dataset.periods = String(series.length);
  if (series.length) {
    chart.setAttribute(
      "aria-label",
      _("Views and downloads per period from {first} to {last}", { first: series[0].period, last: series[series.length - 1].period }),
    );
  }
}

/** The five countries with the most views and downloads in `#countries`. */
export function drawCountries(rows) {
  const top = rows
    .filter((r) => r.views + r.downloads > 0)
    .sort((a, b) => b.views + b.downloads - (a.views + a.downloads) || (a.country || "").localeCompare(b.country || ""))
    .slice(0, 5);
  const max = Math.max(1, ...top.map((r) => r.views + r.downloads));
  $("countries").replaceChildren(
    ...top.map((r) => {
      const bar = el("span", { class: "bar", "aria-hidden": "true" });
      bar.style.width = `${((r.views + r.downloads) / max) * 100}%`;
      return el(
        "li",
        { dataset: { country: r.country || "" } },
        el("span", {}, countryName(r.country)),
        el(
          "span",
          { class: "num", title: `${METRIC_LABELS.views} · ${METRIC_LABELS.downloads}` },
          `${formatNumber(r.views)} · ${formatNumber(r.downloads)}`,
        ),
        bar,
      );
    }),
  );
}

/** The figure cards of `totals`' views and downloads in `#figures`. */
export function drawFigures(totals) {
  $("figures").replaceChildren(
    ...["views", "downloads"].map((metric) =>
      el(
        "div",
        { class: "figure", dataset: { metric, value: String(totals[metric]) } },
        el("p", { class: "label" }, METRIC_LABELS[metric]),
        el("p", { class: "value" }, formatNumber(totals[metric])),
      ),
    ),
  );
}
