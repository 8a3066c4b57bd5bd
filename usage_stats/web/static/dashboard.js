// The dashboard: single figures, time series, country map and top lists of one view (the
// regional network, a national node or a repository), built on the public API only. Every
// control lives in the URL, so a view can be shared; presets count back from the last day
// with data, so "last 30 days" is never an empty month that has not been processed yet.
import {
  COUNTER_METRICS,
  GRANULARITY_WORDS,
  LEVEL_LABELS,
  METRIC_DESCRIPTIONS,
  METRICS,
  METRIC_LABELS,
  addDays,
  apiUrl,
  countryName,
  daysBetween,
  el,
  formatChange,
  formatDate,
  formatNumber,
  formatRange,
  formatShare,
  getJSON,
  isIsoDay,
  lang,
  locale,
  metricWord,
  parseDay,
  table,
  withLang,
  _,
} from "./common.js";
import { BY, panelPaths, renderBreakdowns, renderCumulativeFigures, renderRecords, renderTopRecords } from "./panels.js";

const FIGURES = [
  "views",
  "downloads",
  "outlinks",
  "conversions",
  "unique_item_investigations",
  "unique_item_requests",
];
const RANGES = ["7d", "30d", "90d", "ytd", "12m", "all", "custom"];
const GRANULARITIES = ["day", "week", "month", "quarter", "year"];
const LEVEL_COLORS = { R: "#1f6fb2", N: "#e0861a", L: "#2f9e62" };
const MAP_COLORS = ["#dbe9f6", "#a9cce3", "#6fa8d6", "#3a7fc1", "#0d4f91"];
const MAX_DAY_BUCKETS = 1100;

const VENDOR = "/static/vendor";
const LIBRARIES = ["chart.umd.min.js", "d3-array.min.js", "d3-geo.min.js", "topojson-client.min.js"];

const $ = (id) => document.getElementById(id);

/** Inserted scripts with async=false run in insertion order (d3-geo needs d3-array) without
 * holding up this module; each promise settles when its library has run. */
function loadLibraries() {
  return Object.fromEntries(
    LIBRARIES.map((name) => {
      const script = el("script", { src: `${VENDOR}/${name}` });
      script.async = false;
      const loaded = new Promise((resolve, reject) => {
        script.addEventListener("load", resolve);
        script.addEventListener("error", () => reject(new Error(`could not load ${VENDOR}/${name}`)));
      });
      document.head.append(script);
      return [name, loaded];
    }),
  );
}
const page = { view: null, target: null, coverage: null, generation: 0, marked: false, panelsMarked: false };
let chart = null;
let map = null;

function parseView(pathname) {
  const parts = pathname.replace(/\/+$/, "").split("/").slice(2).map(decodeURIComponent);
  if (parts.length === 0) return { kind: "network" };
  if (parts.length === 2 && parts[0] === "source") return { kind: "source", key: parts[1] };
  if (parts.length === 2 && parts[0] === "node") return { kind: "node", country: parts[1].toUpperCase() };
  return { kind: "unknown", path: pathname };
}

function readState() {
  const query = new URLSearchParams(location.search);
  const pick = (name, allowed, fallback) => (allowed.includes(query.get(name)) ? query.get(name) : fallback);
  const start = isIsoDay(query.get("start")) ? query.get("start") : null;
  const end = isIsoDay(query.get("end")) ? query.get("end") : null;
  let range = pick("range", RANGES, null);
  if (!range || (range === "custom" && !(start && end))) range = start && end ? "custom" : "12m";
  return {
    range,
    start,
    end,
    granularity: pick("granularity", GRANULARITIES, "month"),
    metric: pick("metric", METRICS, "views"),
    by: pick("by", BY, "usage"),
  };
}

function writeState(state) {
  const query = new URLSearchParams({ range: state.range });
  if (new URLSearchParams(location.search).get("lang")) query.set("lang", lang);
  if (state.range === "custom") {
    query.set("start", state.start);
    query.set("end", state.end);
  }
  query.set("granularity", state.granularity);
  query.set("metric", state.metric);
  if (state.by && state.by !== "usage") query.set("by", state.by);
  history.pushState(null, "", `${location.pathname}?${query}`);
}

/** The days a state means: presets end on the last day with data (or today, with none). */
function resolveRange(state) {
  const today = new Date().toISOString().slice(0, 10);
  const last = page.coverage.last_day || today;
  const first = page.coverage.first_day || last;
  switch (state.range) {
    case "7d":
      return { start: addDays(last, -6), end: last };
    case "30d":
      return { start: addDays(last, -29), end: last };
    case "90d":
      return { start: addDays(last, -89), end: last };
    case "ytd":
      return { start: `${last.slice(0, 4)}-01-01`, end: last };
    case "all":
      return { start: first, end: last };
    case "custom":
      return state.start <= state.end
        ? { start: state.start, end: state.end }
        : { start: state.end, end: state.start };
    default: {
      const date = parseDay(last);
      date.setUTCFullYear(date.getUTCFullYear() - 1);
      return { start: addDays(date.toISOString().slice(0, 10), 1), end: last };
    }
  }
}

function resolveTarget(view, sources) {
  const api = "/api/v1";
  if (view.kind === "network") {
    const portal = sources.find((s) => s.type === "L");
    return {
      kind: _("Regional network"),
      title: portal ? portal.name : _("All repositories"),
      stats: `${api}/global`,
      items: `${api}/global/top`,
      sources: `${api}/global/top-sources`,
    };
  }
  if (view.kind === "node") {
    const node = sources.find((s) => s.type === "N" && s.country === view.country);
    if (!node) return { missing: _("No national node is registered for country “{country}”.", { country: view.country }) };
    return {
      kind: `${_("National node")} · ${countryName(node.country)}`,
      country: node.country,
      title: node.name,
      stats: `${api}/nodes/${node.site_id}`,
      items: `${api}/nodes/${node.site_id}/top`,
      sources: `${api}/nodes/${node.site_id}/top-sources`,
    };
  }
  if (view.kind === "source") {
    const source = sources.find((s) => s.type === "R" && s.source_key === view.key);
    if (!source) return { missing: _("No repository is registered with the key “{key}”.", { key: view.key }) };
    return {
      kind: `${_("Repository")} · ${countryName(source.country)}`,
      title: source.name,
      stats: `${api}/sources/${source.site_id}`,
      items: `${api}/sources/${source.site_id}/top`,
      sources: null,
      spikes: `${api}/sources/${source.site_id}/spikes`,
    };
  }
  return { missing: _("There is no dashboard at {path}.", { path: view.path }) };
}

function buildGoto(sources) {
  const select = $("goto");
  const here = location.pathname.replace(/\/+$/, "");
  const option = (href, label) => el("option", { value: href, selected: href === here }, label);
  const nodes = sources.filter((s) => s.type === "N").sort((a, b) => a.name.localeCompare(b.name, locale));
  const repositories = sources
    .filter((s) => s.type === "R")
    .sort((a, b) => a.name.localeCompare(b.name, locale));
  select.replaceChildren(
    option("/dashboard", _("Regional network")),
    nodes.length
      ? el("optgroup", { label: _("National nodes") }, nodes.map((n) => option(`/dashboard/node/${n.country.toLowerCase()}`, n.name)))
      : null,
    repositories.length
      ? el("optgroup", { label: _("Repositories") }, repositories.map((r) => option(`/dashboard/source/${encodeURIComponent(r.source_key)}`, r.name)))
      : null,
  );
  select.addEventListener("change", () => {
    location.href = `${select.value}${location.search}`;
  });
}

function syncControls(state, range) {
  $("range").value = state.range;
  $("start").value = range.start;
  $("end").value = range.end;
  $("granularity").value = state.granularity;
  $("metric").value = state.metric;
  $("by").value = state.by;
}

function bindControls() {
  const metric = $("metric");
  metric.replaceChildren(...METRICS.map((m) => el("option", { value: m, title: METRIC_DESCRIPTIONS[m] || null }, METRIC_LABELS[m])));
  $("lang").addEventListener("change", (event) => {
    // The choice is remembered (the server reads the cookie) and carried in the address.
    const chosen = event.target.value;
    document.cookie = `lang=${chosen}; path=/; max-age=31536000; SameSite=Lax`;
    const query = new URLSearchParams(location.search);
    query.set("lang", chosen);
    location.href = `${location.pathname}?${query}`;
  });
  const change = (patch) => {
    writeState({ ...readState(), ...patch });
    refresh();
  };
  $("range").addEventListener("change", (event) => {
    const value = event.target.value;
    if (value === "custom") change({ range: "custom", start: $("start").value, end: $("end").value });
    else change({ range: value });
  });
  for (const id of ["start", "end"]) {
    $(id).addEventListener("change", () => {
      if (isIsoDay($("start").value) && isIsoDay($("end").value)) {
        change({ range: "custom", start: $("start").value, end: $("end").value });
      }
    });
  }
  $("granularity").addEventListener("change", (event) => change({ granularity: event.target.value }));
  metric.addEventListener("change", (event) => change({ metric: event.target.value }));
  $("by").addEventListener("change", (event) => change({ by: event.target.value }));
  $("controls").addEventListener("submit", (event) => event.preventDefault());
  window.addEventListener("popstate", () => refresh());
}

function setStatus(text, state) {
  $("status").textContent = text;
  document.body.dataset.state = state;
  $("content").setAttribute("aria-busy", state === "loading" ? "true" : "false");
}

function renderFigures(totals, previous, previousRange) {
  const since = formatRange(previousRange.start, previousRange.end);
  $("figures").replaceChildren(
    ...FIGURES.map((metric) => {
      const value = totals[metric];
      const before = previous[metric];
      let change;
      if (before === 0 && value === 0) change = el("p", { class: "change flat" }, _("no usage in either period"));
      else if (before === 0) change = el("p", { class: "change up" }, _("new: none the period before"));
      else {
        const ratio = (value - before) / before;
        const direction = ratio > 0 ? "up" : ratio < 0 ? "down" : "flat";
        const arrow = { up: "▲", down: "▼", flat: "■" }[direction];
        change = el(
          "p",
          { class: `change ${direction}`, title: _("{count} in {range}", { count: formatNumber(before), range: since }) },
          el("span", { "aria-hidden": "true" }, `${arrow} `),
          `${formatChange(ratio)} `,
          el("span", { class: "since" }, _("vs {range}", { range: since })),
        );
      }
      return el(
        "article",
        { class: "figure", dataset: { metric, value: String(value), previous: String(before) } },
        el("h3", { title: METRIC_DESCRIPTIONS[metric] || null }, METRIC_LABELS[metric], COUNTER_METRICS.includes(metric) ? el("abbr", { class: "tag", title: _("COUNTER Release 5.1 metric") }, "COUNTER") : null),
        el("p", { class: "value" }, formatNumber(value)),
        change,
      );
    }),
  );
}

/** The API's sentence of what the figures count (English), or its like in the page's language
 * by the reach's kind. */
function reachText(reach) {
  if (lang === "en") return reach.label;
  const name = page.target.title;
  const country = page.target.country ? countryName(page.target.country) : "";
  switch (reach.kind) {
    case "repository":
      return _("Use of the items of {name}, wherever it happened: on the repository, on national nodes and on the regional portal.", { name });
    case "national":
      return _("Use of the items of the repositories of {country}, wherever it happened in the network: on the repositories, on {name} and on the regional portal (and of items no registered repository claims, used on the sites of {country}).", { name, country });
    case "network":
      return _("The whole network: every use on every site (repositories, national nodes and the regional portal).");
    default:
      return reach.label;
  }
}

/** What the figures count (the API says it: a national node is its country's items, the network
 * everything), under the title. */
function renderReach(reach) {
  const note = $("reach");
  note.textContent = reach ? reachText(reach) : "";
  note.hidden = !reach;
  note.dataset.kind = reach ? reach.kind : "";
}

function renderNotice(stats, range) {
  const notice = $("notice");
  const complete = stats.complete_through;
  if (!complete) {
    notice.textContent = _("No processing status is recorded for these figures yet: they may be incomplete.");
    notice.hidden = false;
  } else if (complete < range.end) {
    notice.textContent = _("Data is complete through {date}; figures for later days are still being processed and may change.", { date: formatDate(complete) });
    notice.hidden = false;
  } else {
    notice.hidden = true;
  }
  notice.dataset.completeThrough = complete || "";
}

function cumulative(values) {
  let sum = 0;
  return values.map((v) => (sum += v));
}

/** The series periods (their `start` days, ascending) holding each flagged day: index → flags. */
function flaggedPeriods(series, flagged) {
  const marks = new Map();
  if (!flagged) return marks;
  for (const spike of flagged.spikes) {
    let at = -1;
    series.forEach((p, i) => {
      if (p.start <= spike.date) at = i;
    });
    if (at >= 0) marks.set(at, [...(marks.get(at) || []), spike]);
  }
  return marks;
}

function spikeText(spike) {
  const what = spike.scope === "source" ? _("the repository's usage") : _("usage of {item}", { item: spike.key });
  const usual = spike.baseline
    ? _("{factor}× its usual {baseline}", { factor: formatNumber(spike.factor), baseline: formatNumber(spike.baseline) })
    : _("with no usual use");
  const origins = [];
  if (spike.reason.includes("blocks")) origins.push(_("{share}% of the excess from a few network blocks", { share: Math.round(spike.top_blocks_share * 100) }));
  if (spike.reason.includes("countries")) origins.push(_("{share}% from {countries}", { share: Math.round(spike.top_countries_share * 100), countries: spike.top_countries.split(",").map(countryName).join(", ") }));
  return _("{date}: {what} was {usage} investigations, {usual}; {origins}. Flagged for review (still counted).", {
    date: formatDate(spike.date),
    what,
    usage: formatNumber(spike.usage),
    usual,
    origins: origins.join("; "),
  });
}

/** A note per flagged day (COUNTER's unusual usage) for the repository's operator. */
function renderSpikes(flagged) {
  const box = $("spikes");
  const list = $("spikes-list");
  list.replaceChildren();
  const spikes = flagged ? flagged.spikes : [];
  for (const spike of spikes) {
    const li = document.createElement("li");
    li.dataset.date = spike.date;
    li.dataset.scope = spike.scope;
    li.dataset.key = spike.key;
    li.textContent = spikeText(spike);
    list.append(li);
  }
  box.hidden = spikes.length === 0;
  box.dataset.days = flagged ? flagged.days.join(",") : "";
}

function renderSeries(stats, metric, flagged) {
  const labels = stats.series.map((p) => p.period);
  const totals = stats.series.map((p) => p[metric]);
  const levels = stats.series_by_level.length
    ? stats.series_by_level
    : [{ level: null, series: stats.series }];
  const datasets = levels.map(({ level, series }) => ({
    type: "bar",
    label: level ? LEVEL_LABELS[level] || level : METRIC_LABELS[metric],
    data: series.map((p) => p[metric]),
    backgroundColor: LEVEL_COLORS[level] || "#1f6fb2",
    stack: "periods",
    order: 2,
  }));
  datasets.push({
    type: "line",
    label: _("Cumulative total"),
    data: cumulative(totals),
    yAxisID: "cumulative",
    borderColor: "#333",
    backgroundColor: "#333",
    pointRadius: labels.length > 60 ? 0 : 2,
    borderWidth: 2,
    order: 1,
  });
  const marks = flaggedPeriods(stats.series, flagged);
  if (marks.size) {
    datasets.push({
      type: "line",
      label: _("Flagged for review (usage spike)"),
      data: totals.map((v, i) => (marks.has(i) ? v : null)),
      showLine: false,
      pointStyle: "triangle",
      pointRadius: 8,
      pointHoverRadius: 10,
      borderColor: "#b3261e",
      backgroundColor: "#b3261e",
      order: 0,
    });
  }
  const title = _("{metric} per {granularity}", { metric: METRIC_LABELS[metric], granularity: GRANULARITY_WORDS[stats.granularity] || stats.granularity });
  if (!chart) {
    chart = new Chart($("series-chart"), {
      data: { labels, datasets },
      options: {
        locale,
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        scales: {
          x: { stacked: true, ticks: { maxRotation: 0, autoSkip: true } },
          y: { stacked: true, beginAtZero: true, title: { display: true, text: title } },
          cumulative: {
            position: "right",
            beginAtZero: true,
            grid: { drawOnChartArea: false },
            title: { display: true, text: _("Cumulative") },
          },
        },
        plugins: { legend: { position: "bottom" } },
      },
    });
  } else {
    chart.data.labels = labels;
    chart.data.datasets = datasets;
    chart.options.scales.y.title.text = title;
    chart.update();
  }
  const canvas = $("series-chart");
  canvas.setAttribute("aria-label", _("{title}, {count} periods from {first} to {last}", { title, count: labels.length, first: labels[0], last: labels[labels.length - 1] }));
  canvas.dataset.periods = String(labels.length);
  canvas.dataset.flagged = [...marks.keys()].map((i) => labels[i]).join(",");
  const running = cumulative(totals);
  table(
    $("series-table"),
    [
      { label: _("Period"), rowHeader: true },
      ...levels.map(({ level }) => ({ label: level ? LEVEL_LABELS[level] || level : _("Total"), numeric: true })),
      ...(levels.length > 1 ? [{ label: _("Total"), numeric: true }] : []),
      { label: _("Cumulative"), numeric: true },
    ],
    labels.map((label, i) => [
      marks.has(i) ? `${label} ⚑` : label,
      ...levels.map(({ series }) => formatNumber(series[i][metric])),
      ...(levels.length > 1 ? [formatNumber(totals[i])] : []),
      formatNumber(running[i]),
    ]),
    _("No periods"),
  );
}

async function loadMap(libraries, data) {
  const [world, countries] = await data;
  await Promise.all([libraries["d3-geo.min.js"], libraries["topojson-client.min.js"]]);
  const byNumeric = {};
  for (const [alpha2, c] of Object.entries(countries)) byNumeric[c.numeric] = alpha2;
  const features = topojson
    .feature(world, world.objects.countries)
    .features.filter((f) => f.id !== "010"); // Antarctica: no readers, a third of the picture
  const projection = d3.geoNaturalEarth1().fitSize([960, 500], { type: "FeatureCollection", features });
  const path = d3.geoPath(projection);
  const svg = $("map");
  const ns = "http://www.w3.org/2000/svg";
  const shapes = {};
  for (const feature of features) {
    const alpha2 = byNumeric[feature.id];
    const shape = document.createElementNS(ns, "path");
    shape.setAttribute("d", path(feature));
    shape.setAttribute("class", "country");
    if (alpha2) shape.dataset.country = alpha2;
    const title = document.createElementNS(ns, "title");
    shape.append(title);
    svg.append(shape);
    if (alpha2) (shapes[alpha2] ||= []).push(shape);
  }
  return { shapes };
}

/** Class breaks on the quantiles of the countries with usage: a few large countries would
 * otherwise paint every other country the lightest shade. */
function breaks(values) {
  const sorted = values.filter((v) => v > 0).sort((a, b) => a - b);
  if (!sorted.length) return [];
  const cuts = [];
  for (let i = 1; i < MAP_COLORS.length; i++) {
    const cut = d3.quantile(sorted, i / MAP_COLORS.length);
    if (!cuts.length || cut > cuts[cuts.length - 1]) cuts.push(Math.ceil(cut));
  }
  return cuts;
}

function renderCountries(stats, metric) {
  const rows = stats.by_country
    .filter((r) => r[metric] > 0 || r.views > 0 || r.downloads > 0)
    .sort((a, b) => b[metric] - a[metric] || (a.country || "").localeCompare(b.country || ""));
  const total = rows.reduce((sum, r) => sum + r[metric], 0);
  const extra = metric === "views" || metric === "downloads" ? [] : [metric];
  table(
    $("country-table"),
    [
      { label: _("Country"), rowHeader: true },
      { label: METRIC_LABELS.views, numeric: true },
      { label: METRIC_LABELS.downloads, numeric: true },
      ...extra.map((m) => ({ label: METRIC_LABELS[m], numeric: true })),
      { label: _("Share of {metric}", { metric: metricWord(metric) }), numeric: true },
    ],
    rows.map((r) => [
      countryName(r.country),
      formatNumber(r.views),
      formatNumber(r.downloads),
      ...extra.map((m) => formatNumber(r[m])),
      total ? formatShare(r[metric] / total) : "–",
    ]),
    _("No usage in this range"),
  );
  if (!map) return;
  const values = Object.fromEntries(rows.map((r) => [r.country, r[metric]]));
  const cuts = breaks(Object.values(values));
  const colour = (v) => MAP_COLORS[cuts.filter((c) => v > c).length] || MAP_COLORS[MAP_COLORS.length - 1];
  let painted = 0;
  for (const shape of $("map").querySelectorAll("path.country")) {
    shape.classList.remove("has-data");
    shape.style.fill = "";
    shape.querySelector("title").textContent = "";
  }
  for (const [code, shapes] of Object.entries(map.shapes)) {
    const value = values[code] || 0;
    for (const shape of shapes) {
      shape.querySelector("title").textContent = `${countryName(code)}: ${formatNumber(value)} ${metricWord(metric)}`;
      if (value > 0) {
        shape.style.fill = colour(value);
        shape.classList.add("has-data");
      }
    }
    if (value > 0) painted += 1;
  }
  $("map").dataset.countriesWithData = String(painted);
  const legend = $("map-legend");
  if (!cuts.length) {
    legend.replaceChildren(_("No {metric} in this range", { metric: metricWord(metric) }));
    return;
  }
  const bounds = [1, ...cuts.map((c) => c + 1)];
  legend.replaceChildren(
    el("span", { class: "legend-title" }, `${METRIC_LABELS[metric]}: `),
    ...bounds.map((low, i) => {
      const high = cuts[i];
      const label = high === undefined ? `${formatNumber(low)}+` : low === high ? formatNumber(low) : `${formatNumber(low)}–${formatNumber(high)}`;
      const swatch = el("span", { class: "swatch", "aria-hidden": "true" });
      swatch.style.background = MAP_COLORS[i];
      return el("span", { class: "legend-item" }, swatch, label);
    }),
  );
}

function renderItems(top, metric) {
  const extra = metric === "views" || metric === "downloads" ? [] : [metric];
  table(
    $("items-table"),
    [
      { label: "#", numeric: true },
      { label: _("Item") },
      { label: METRIC_LABELS.views, numeric: true },
      { label: METRIC_LABELS.downloads, numeric: true },
      ...extra.map((m) => ({ label: METRIC_LABELS[m], numeric: true })),
    ],
    top.items.map((item) => [
      formatNumber(item.rank),
      el(
        "a",
        { href: withLang(apiUrl("/widget/item", { identifier: item.identifier })), class: "item-link" },
        item.title ? el("span", { class: "item-title" }, item.title) : null,
        el("span", { class: "identifier" }, item.identifier),
      ),
      formatNumber(item.views),
      formatNumber(item.downloads),
      ...extra.map((m) => formatNumber(item[m])),
    ]),
    _("No item was used in this range"),
  );
}

function renderSources(top, metric) {
  const extra = metric === "views" || metric === "downloads" ? [] : [metric];
  table(
    $("sources-table"),
    [
      { label: "#", numeric: true },
      { label: _("Repository") },
      { label: _("Country") },
      { label: METRIC_LABELS.views, numeric: true },
      { label: METRIC_LABELS.downloads, numeric: true },
      ...extra.map((m) => ({ label: METRIC_LABELS[m], numeric: true })),
    ],
    top.sources.map((s) => [
      formatNumber(s.rank),
      s.source_key
        ? el("a", { href: `/dashboard/source/${encodeURIComponent(s.source_key)}${location.search}` }, s.name)
        : _("site {id}", { id: s.site_id }),
      countryName(s.country),
      formatNumber(s.views),
      formatNumber(s.downloads),
      ...extra.map((m) => formatNumber(s[m])),
    ]),
    _("No repository's items were used in this range"),
  );
}

function renderDownloads(range, state) {
  const { stats, items, sources } = page.target;
  const base = { start: range.start, end: range.end };
  const hrefs = {
    series: (format) => withLang(apiUrl(stats, { ...base, granularity: state.granularity, table: "series", format })),
    country: (format) => withLang(apiUrl(stats, { ...base, granularity: state.granularity, table: "country", format })),
    items: (format) => withLang(apiUrl(items, { ...base, metric: state.metric, limit: 10, format })),
    sources: (format) => (sources ? withLang(apiUrl(sources, { ...base, metric: state.metric, limit: 10, format })) : null),
  };
  for (const box of document.querySelectorAll(".downloads[data-table]")) {
    const href = hrefs[box.dataset.table];
    if (!href("csv")) continue;
    box.replaceChildren(
      el("span", { class: "visually-hidden" }, _("Download") + " "),
      ...["csv", "xlsx"].map((format) =>
        el("a", { href: href(format), download: "", class: "download", dataset: { format } }, format.toUpperCase()),
      ),
    );
  }
}

function previousPeriod(range) {
  const days = daysBetween(range.start, range.end);
  const end = addDays(range.start, -1);
  return { start: addDays(end, -(days - 1)), end };
}

async function refresh() {
  const generation = ++page.generation;
  const state = readState();
  const range = resolveRange(state);
  syncControls(state, range);
  if (state.granularity === "day" && daysBetween(range.start, range.end) > MAX_DAY_BUCKETS) {
    setStatus(_("Daily figures are offered for up to {days} days; choose week or a coarser granularity for {range}.", { days: formatNumber(MAX_DAY_BUCKETS), range: formatRange(range.start, range.end) }), "error");
    return;
  }
  setStatus(_("Loading {range}…", { range: formatRange(range.start, range.end) }), "loading");
  const before = previousPeriod(range);
  const { target } = page;
  const stats = getJSON(target.stats, { start: range.start, end: range.end, granularity: state.granularity });
  const previous = getJSON(target.stats, { start: before.start, end: before.end, granularity: "year" });
  try {
    const spikes = target.spikes
      ? getJSON(target.spikes, { start: range.start, end: range.end }).catch(() => null)
      : Promise.resolve(null);
    const [now, then] = await Promise.all([stats, previous]);
    if (generation !== page.generation) return;
    renderFigures(now.totals, then.totals, before);
    renderReach(now.reach);
    if (!page.marked) {
      performance.mark("first-figures");
      page.marked = true;
    }
    // The top lists scan every item of the range: asked only now, so that they do not
    // compete with the figures for the server.
    const top = { start: range.start, end: range.end, metric: state.metric, limit: 10 };
    const items = getJSON(target.items, top);
    const sources = target.sources ? getJSON(target.sources, top) : null;
    for (const pending of [items, sources]) if (pending) pending.catch(() => {});
    renderNotice(now, range);
    renderDownloads(range, state);
    await page.libraries["chart.umd.min.js"];
    const flagged = await spikes;
    renderSeries(now, state.metric, flagged);
    renderSpikes(flagged);
    if (!map) map = await loadMap(page.libraries, page.mapData);
    renderCountries(now, state.metric);
    renderItems(await items, state.metric);
    if (sources) renderSources(await sources, state.metric);
    if (generation !== page.generation) return;
    const empty = Object.values(now.totals).every((v) => v === 0);
    setStatus(
      empty
        ? _("No usage recorded between {start} and {end}.", { start: formatDate(range.start), end: formatDate(range.end) })
        : `${formatRange(range.start, range.end)} · ${formatNumber(now.totals[state.metric])} ${metricWord(state.metric)}`,
      empty ? "empty" : "ready",
    );
  } catch (problem) {
    if (generation !== page.generation) return;
    setStatus(_("Could not load the figures: {message}", { message: problem.message }), "error");
  } finally {
    // The record and breakdown panels, below the fold, are asked for once the usage above
    // them is drawn (their requests would otherwise queue beside the top lists' and hold
    // them up); they settle on their own (body[data-panels]), a failure shown in its panel.
    if (generation === page.generation) loadPanels(generation, range, state);
  }
}

/** Record figures and chart, the all-time figures, a panel per breakdown field the API offers
 * and the most viewed and downloaded records; `body[data-panels]` says when all are drawn. */
async function loadPanels(generation, range, state) {
  const isCurrent = () => generation === page.generation;
  document.body.dataset.panels = "loading";
  const paths = panelPaths(page.target.stats);
  const span = { start: range.start, end: range.end };
  const records = getJSON(paths.records, { ...span, granularity: state.granularity });
  const cumulative = getJSON(paths.cumulative, { ...span, granularity: "year" });
  try {
    const vocabularies = await page.vocabularies;
    const context = { paths, vocabularies, range, state, isCurrent };
    const hasItems = vocabularies.usage.includes("item");
    $("top-views-panel").hidden = !hasItems;
    $("top-downloads-panel").hidden = !hasItems;
    await Promise.all([
      cumulative.then((answer) => isCurrent() && renderCumulativeFigures(answer)),
      Promise.all([records, page.libraries["chart.umd.min.js"]]).then(
        ([answer]) => isCurrent() && renderRecords(answer, range, state.granularity, paths.records),
      ),
      renderBreakdowns(context),
      hasItems ? renderTopRecords(context) : null,
    ]);
    if (!isCurrent()) return;
    document.body.dataset.panels = "ready";
    if (!page.panelsMarked) {
      performance.mark("all-panels");
      page.panelsMarked = true;
    }
  } catch (problem) {
    if (!isCurrent()) return;
    document.body.dataset.panels = "error";
    document.body.dataset.panelsError = problem.message;
  }
}

async function boot() {
  page.view = parseView(location.pathname);
  const first = Promise.all([getJSON("/api/v1/coverage"), getJSON("/api/v1/sources")]);
  page.libraries = loadLibraries();
  page.vocabularies = getJSON("/api/v1/breakdowns");
  page.vocabularies.catch(() => {});
  page.mapData = Promise.all(
    ["countries-110m.json", "countries.json"].map((name) =>
      fetch(`${VENDOR}/${name}`).then((r) => {
        if (!r.ok) throw new Error(`could not load ${VENDOR}/${name}: ${r.status}`);
        return r.json();
      }),
    ),
  );
  page.mapData.catch(() => {});
  bindControls();
  try {
    const [coverage, sources] = await first;
    page.coverage = coverage;
    buildGoto(sources);
    page.target = resolveTarget(page.view, sources);
  } catch (problem) {
    setStatus(_("Could not reach the statistics API: {message}", { message: problem.message }), "error");
    return;
  }
  if (page.target.missing) {
    $("title").textContent = _("Not found");
    setStatus(page.target.missing, "missing");
    $("content").hidden = true;
    $("controls").hidden = true;
    return;
  }
  $("view-kind").textContent = page.target.kind;
  $("title").textContent = page.target.title;
  document.title = `${page.target.title} · ${_("Usage statistics")}`;
  $("sources-panel").hidden = !page.target.sources;
  await refresh();
}

boot();
