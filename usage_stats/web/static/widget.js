// The item widget: an item's views and downloads over time and by country, small enough to
// embed in a repository's item page (an iframe), with no library beyond the shared helpers.
import {
  addDays,
  countryName,
  el,
  formatDate,
  formatNumber,
  formatRange,
  getJSON,
  isIsoDay,
} from "./common.js";

const $ = (id) => document.getElementById(id);
const GRANULARITIES = ["day", "week", "month", "quarter", "year"];
const SVG = "http://www.w3.org/2000/svg";

function setStatus(text, state) {
  $("status").textContent = text;
  $("status").hidden = !text;
  document.body.dataset.state = state;
}

function svg(tag, attributes, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  if (text) node.append(document.createTextNode(text));
  return node;
}

/** Paired bars per period; the tallest bar fills the height. */
function drawChart(series) {
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
      rect.append(svg("title", {}, `${p.period}: ${formatNumber(p[metric])} ${metric}`));
      shapes.push(rect);
    }
  });
  chart.replaceChildren(...shapes);
  chart.dataset.periods = String(series.length);
  if (series.length) {
    chart.setAttribute("aria-label", `Views and downloads per ${series.length > 1 ? "period" : "period"} from ${series[0].period} to ${series[series.length - 1].period}`);
  }
}

function drawCountries(rows) {
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
        el("span", { class: "num" }, `${formatNumber(r.views)} · ${formatNumber(r.downloads)}`),
        bar,
      );
    }),
  );
}

async function boot() {
  const query = new URLSearchParams(location.search);
  const identifier = query.get("identifier");
  if (!identifier) {
    setStatus("This widget needs an item: add ?identifier=… to its address.", "error");
    return;
  }
  const granularity = GRANULARITIES.includes(query.get("granularity")) ? query.get("granularity") : "month";
  let start = isIsoDay(query.get("start")) ? query.get("start") : null;
  let end = isIsoDay(query.get("end")) ? query.get("end") : null;
  try {
    if (!start || !end) {
      const coverage = await getJSON("/api/v1/coverage");
      const last = coverage.last_day || new Date().toISOString().slice(0, 10);
      end ||= last;
      start ||= coverage.first_day || addDays(end, -364);
    }
    const stats = await getJSON("/api/v1/items", { identifier, start, end, granularity });
    $("range").textContent = formatRange(stats.start, stats.end);
    $("figures").replaceChildren(
      ...["views", "downloads"].map((metric) =>
        el(
          "div",
          { class: "figure", dataset: { metric, value: String(stats.totals[metric]) } },
          el("p", { class: "label" }, metric === "views" ? "Views" : "Downloads"),
          el("p", { class: "value" }, formatNumber(stats.totals[metric])),
        ),
      ),
    );
    drawChart(stats.series);
    drawCountries(stats.by_country);
    const empty = stats.totals.views + stats.totals.downloads === 0;
    setStatus(empty ? `No views or downloads recorded between ${formatDate(stats.start)} and ${formatDate(stats.end)}.` : "", empty ? "empty" : "ready");
    if (stats.complete_through && stats.complete_through < stats.end) {
      $("notice").textContent = `Complete through ${formatDate(stats.complete_through)}.`;
      $("notice").hidden = false;
    }
  } catch (problem) {
    if (problem.status === 404) setStatus("No usage is recorded for this item yet.", "empty");
    else setStatus(`Could not load usage: ${problem.message}`, "error");
  }
}

boot();
