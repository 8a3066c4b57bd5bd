// The dashboard's record and breakdown panels: record figures and their chart, the usage or
// the records of a view broken down by every subcount field the API offers
// (`/api/v1/breakdowns`: a field the pipeline adds appears here without a change), and the
// most viewed and downloaded records with their metadata. Built on the public API only.
import { METRIC_LABELS, apiUrl, el, formatDate, formatNumber, formatShare, getJSON, locale, table } from "./common.js";

const $ = (id) => document.getElementById(id);
const LIMIT = 20;
const TOP_RECORDS = 10;
// Fields shown elsewhere: visitor countries on the map, items in the top lists.
const NOT_PANELS = new Set(["country", "item"]);
export const BY = ["usage", "records"];

let languages = null;
try {
  languages = new Intl.DisplayNames([locale], { type: "language" });
} catch {
  languages = null;
}
let recordsChart = null;

/** A value as a reader says it: a COAR concept by its label, a language by its name. */
export function valueLabel(field, value, vocabularies) {
  const labels = (vocabularies.value_labels || {})[field];
  if (labels && labels[value]) {
    const label = labels[value];
    return label.charAt(0).toLocaleUpperCase(locale) + label.slice(1);
  }
  if (field === "language" && languages && /^[a-z]{2,3}$/.test(value)) {
    try {
      const name = languages.of(value);
      if (name && name !== value) return name.charAt(0).toLocaleUpperCase(locale) + name.slice(1);
    } catch {
      // not a code the browser knows: the code itself
    }
  }
  return value;
}

/** The API paths of a view's records and breakdowns, from its usage path (`/api/v1/global`,
 * `/api/v1/nodes/<id>`, `/api/v1/sources/<id>`). */
export function panelPaths(stats) {
  return {
    records: stats.replace(/^\/api\/v1\//, "/api/v1/records/"),
    cumulative: `${stats}/cumulative`,
    usageBreakdown: (field) => `${stats}/breakdown/${encodeURIComponent(field)}`,
    recordBreakdown: (field) => `${stats.replace(/^\/api\/v1\//, "/api/v1/records/")}/breakdown/${encodeURIComponent(field)}`,
  };
}

function downloads(box, href) {
  box.replaceChildren(
    el("span", { class: "visually-hidden" }, "Download "),
    ...["csv", "xlsx"].map((format) =>
      el("a", { href: href(format), download: "", class: "download", dataset: { format } }, format.toUpperCase()),
    ),
  );
}

// --- cumulative single figures ---------------------------------------------------------------

/** Each usage figure's all-time value (the snapshot of the range's last processed day), as a
 * second line of its card. */
export function renderCumulativeFigures(cumulative) {
  const buckets = cumulative.series.filter((b) => b.as_of);
  const last = buckets[buckets.length - 1];
  for (const card of document.querySelectorAll("#figures .figure")) {
    card.querySelector(".all-time")?.remove();
    const value = last ? last[card.dataset.metric] : null;
    card.dataset.cumulative = value === null || value === undefined ? "" : String(value);
    card.append(
      el(
        "p",
        { class: "all-time" },
        last ? `${formatNumber(value)} all time, to ${formatDate(last.as_of)}` : "No cumulative figure for this range",
      ),
    );
  }
}

// --- records ---------------------------------------------------------------------------------

function recordCard(key, title, value, allTime) {
  return el(
    "article",
    { class: "figure", dataset: { record: key, value: String(value) } },
    el("h3", {}, title),
    el("p", { class: "value" }, formatNumber(value)),
    el("p", { class: "all-time" }, allTime),
  );
}

export function renderRecords(records, range, granularity, href) {
  const asOf = records.as_of;
  const held = records.cumulative;
  const since = asOf ? `to ${formatDate(asOf)}` : "no harvest processed yet";
  $("record-figures").replaceChildren(
    recordCard("added", "Records added", records.period.added, `${formatNumber(held.added)} ever added, ${since}`),
    recordCard("removed", "Records removed", records.period.removed, `${formatNumber(held.removed)} ever removed, ${since}`),
    recordCard("total", "Records held", held.total, asOf ? `as of ${formatDate(asOf)}` : "no harvest processed yet"),
  );
  downloads($("records-downloads"), (format) =>
    apiUrl(href, { start: range.start, end: range.end, granularity, format }),
  );
  const labels = records.series.map((b) => b.period);
  const added = records.series.map((b) => b.added);
  const totals = records.series.map((b) => b.total);
  const datasets = [
    { type: "bar", label: "Records added", data: added, backgroundColor: "#1f6fb2", order: 2 },
    {
      type: "line",
      label: "Records held",
      data: totals,
      yAxisID: "held",
      borderColor: "#333",
      backgroundColor: "#333",
      pointRadius: labels.length > 60 ? 0 : 2,
      borderWidth: 2,
      spanGaps: false,
      order: 1,
    },
  ];
  const title = `Records added per ${records.granularity}`;
  if (!recordsChart) {
    recordsChart = new Chart($("records-chart"), {
      data: { labels, datasets },
      options: {
        locale,
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        scales: {
          x: { ticks: { maxRotation: 0, autoSkip: true } },
          y: { beginAtZero: true, title: { display: true, text: title } },
          held: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false }, title: { display: true, text: "Held" } },
        },
        plugins: { legend: { position: "bottom" } },
      },
    });
  } else {
    recordsChart.data.labels = labels;
    recordsChart.data.datasets = datasets;
    recordsChart.options.scales.y.title.text = title;
    recordsChart.update();
  }
  const canvas = $("records-chart");
  canvas.setAttribute(
    "aria-label",
    labels.length ? `${title} and records held, ${labels.length} periods from ${labels[0]} to ${labels[labels.length - 1]}` : "No periods",
  );
  table(
    $("records-table"),
    [
      { label: "Period", rowHeader: true },
      { label: "Added", numeric: true },
      { label: "Removed", numeric: true },
      { label: "Held at the end", numeric: true },
    ],
    records.series.map((b) => [
      b.period,
      formatNumber(b.added),
      formatNumber(b.removed),
      b.total === null ? "–" : formatNumber(b.total),
    ]),
    "No periods",
  );
  const empty = records.period.added === 0 && records.period.removed === 0 && held.total === 0;
  $("records-empty").hidden = !empty;
  $("records-empty").textContent = empty
    ? `No records harvested up to ${formatDate(range.end)}.`
    : "";
}

// --- breakdowns ------------------------------------------------------------------------------

/** The rows a panel shows, from a usage breakdown (`period` part) or a record breakdown, all
 * with `label`, `value` (the figure) and `share`; the unknown and other rows apart. */
export function panelRows(field, by, answer, metric, vocabularies) {
  if (by === "usage") {
    const part = answer.period;
    const named = part.values.map((r) => ({ key: r.value, label: valueLabel(field, r.value, vocabularies), value: r[metric], share: r.share }));
    return {
      whole: part.whole[metric],
      named,
      unknown: { key: "", label: "Not given", value: part.unknown[metric], share: part.unknown.share },
      other: { key: "(other)", label: "Other values", value: part.other[metric], share: part.other.share },
    };
  }
  const listed = answer.values.filter((r) => r.value !== "");
  const unknown = answer.values.find((r) => r.value === "");
  const more = answer.other.values;
  return {
    whole: answer.whole.total,
    named: listed.map((r) => ({ key: r.value, label: valueLabel(field, r.value, vocabularies), value: r.total, share: r.share })),
    unknown: { key: "", label: "Not given", value: unknown ? unknown.total : 0, share: unknown ? unknown.share : 0 },
    other: {
      key: "(other)",
      label: more ? `Other values (${formatNumber(more)})` : "Other values",
      value: answer.other.total,
      share: answer.other.share,
    },
  };
}

function bar(row, kind) {
  const width = Math.max(0, Math.min(1, row.share || 0));
  const fill = el("span", { class: "bar-fill", "aria-hidden": "true" });
  fill.style.width = `${(width * 100).toFixed(2)}%`;
  return el(
    "li",
    { class: `bar ${kind}`, dataset: { key: row.key, value: String(row.value), share: String(row.share ?? "") } },
    el("span", { class: "bar-label", title: row.key || null }, row.label),
    el("span", { class: "bar-track", "aria-hidden": "true" }, fill),
    el("span", { class: "bar-figure" }, formatNumber(row.value), " ", el("span", { class: "bar-share" }, `(${row.share === null ? "–" : formatShare(row.share)})`)),
  );
}

function panelSection(field, label) {
  const id = `breakdown-${field}`;
  return el(
    "section",
    { class: "panel breakdown", id, "aria-labelledby": `${id}-title`, dataset: { field, state: "loading" } },
    el("div", { class: "panel-head" }, el("h2", { id: `${id}-title` }, label), el("div", { class: "downloads" })),
    el("p", { class: "breakdown-note" }),
    el("ol", { class: "bars" }),
    el("p", { class: "empty", hidden: true }),
    el("details", { class: "table-toggle" }, el("summary", {}, "Show as a table"), el("div", { class: "scroll" }, el("table", {}))),
  );
}

function renderBreakdown(section, field, by, answer, metric, vocabularies, range) {
  const rows = panelRows(field, by, answer, metric, vocabularies);
  const what = by === "usage" ? METRIC_LABELS[metric].toLowerCase() : "records held";
  const multi = answer.multi_valued;
  section.querySelector(".breakdown-note").textContent =
    by === "usage"
      ? `${METRIC_LABELS[metric]} between ${formatDate(range.start)} and ${formatDate(range.end)}, top ${LIMIT}; share of all ${formatNumber(rows.whole)} ${what}.` +
        (multi ? " An item counts under each of its values: shares can add up to more than 100 %." : "")
      : `Records held ${answer.as_of ? `as of ${formatDate(answer.as_of)}` : ""}, top ${LIMIT}; share of all ${formatNumber(rows.whole)}.` +
        (multi ? " A record counts under each of its values: shares can add up to more than 100 %." : "");
  const extra = [rows.unknown, rows.other].filter((r) => r.value > 0);
  const shown = [...rows.named, ...extra];
  const empty = rows.whole === 0 && !shown.some((r) => r.value > 0);
  section.dataset.state = empty ? "empty" : "ready";
  section.dataset.whole = String(rows.whole);
  section.dataset.by = by;
  section.querySelector(".bars").replaceChildren(
    ...rows.named.map((r) => bar(r, "named")),
    ...extra.map((r) => bar(r, r.key === "" ? "unknown" : "other")),
  );
  const emptyNote = section.querySelector(".empty");
  emptyNote.hidden = !empty;
  emptyNote.textContent = empty
    ? by === "usage"
      ? `No ${what} between ${formatDate(range.start)} and ${formatDate(range.end)}.`
      : "No records harvested yet."
    : "";
  table(
    section.querySelector("table"),
    [
      { label: section.querySelector("h2").textContent, rowHeader: true },
      { label: by === "usage" ? METRIC_LABELS[metric] : "Records", numeric: true },
      { label: "Share", numeric: true },
    ],
    shown.map((r) => [r.label, formatNumber(r.value), r.share === null ? "–" : formatShare(r.share)]),
    empty ? emptyNote.textContent : "Nothing to show",
  );
}

/** The panels of every field the API offers for `by`, each filled as its answer arrives. */
export function renderBreakdowns({ paths, vocabularies, range, state, isCurrent }) {
  const box = $("breakdowns");
  const by = BY.includes(state.by) ? state.by : "usage";
  const fields = (by === "usage" ? vocabularies.usage : vocabularies.records).filter((f) => !NOT_PANELS.has(f));
  const labels = vocabularies.field_labels || {};
  const named = (field) => labels[field] || field.charAt(0).toLocaleUpperCase(locale) + field.slice(1).replace(/_/g, " ");
  const sections = fields.map((field) => panelSection(field, named(field)));
  box.replaceChildren(...sections);
  return Promise.all(
    fields.map(async (field, i) => {
      const section = sections[i];
      const base = by === "usage" ? paths.usageBreakdown(field) : paths.recordBreakdown(field);
      const params = by === "usage"
        ? { start: range.start, end: range.end, metric: state.metric, limit: LIMIT }
        : { start: range.start, end: range.end, limit: LIMIT };
      downloads(section.querySelector(".downloads"), (format) => apiUrl(base, { ...params, format }));
      try {
        const answer = await getJSON(base, params);
        if (!isCurrent()) return;
        renderBreakdown(section, field, by, answer, state.metric, vocabularies, range);
      } catch (problem) {
        if (!isCurrent()) return;
        section.dataset.state = "error";
        const note = section.querySelector(".empty");
        note.hidden = false;
        note.textContent = `Could not load this breakdown: ${problem.message}`;
        throw problem;
      }
    }),
  );
}

// --- most viewed and downloaded records -------------------------------------------------------

export async function renderTopRecords({ paths, vocabularies, range, isCurrent }) {
  const ranked = await Promise.all(
    ["views", "downloads"].map((metric) =>
      getJSON(paths.usageBreakdown("item"), { start: range.start, end: range.end, metric, limit: TOP_RECORDS }),
    ),
  );
  const keys = [...new Set(ranked.flatMap((a) => a.period.values.map((r) => r.value)))];
  const described = keys.length ? await getJSON("/api/v1/items/metadata", { key: keys }) : { items: [] };
  if (!isCurrent()) return;
  const records = Object.fromEntries(described.items.map((r) => [r.key, r]));
  for (const [metric, answer] of [["views", ranked[0]], ["downloads", ranked[1]]]) {
    const target = $(`top-${metric}-table`);
    table(
      target,
      [
        { label: "#", numeric: true },
        { label: "Record" },
        { label: "Type" },
        { label: "Year", numeric: true },
        { label: "Repository" },
        { label: METRIC_LABELS[metric], numeric: true },
        { label: "Share", numeric: true },
      ],
      answer.period.values.map((r) => {
        const record = records[r.value] || {};
        return [
          formatNumber(r.rank),
          el(
            "a",
            { href: apiUrl("/widget/item", { identifier: r.value }), class: "item-link", dataset: { key: r.value } },
            record.title ? el("span", { class: "item-title" }, record.title) : null,
            el("span", { class: "identifier" }, r.value),
          ),
          record.resource_type ? valueLabel("resource_type", record.resource_type, vocabularies) : "–",
          record.publication_year ? String(record.publication_year) : "–",
          record.source_name || record.source_key || "–",
          formatNumber(r[metric]),
          r.share === null ? "–" : formatShare(r.share),
        ];
      }),
      `No record was ${metric === "views" ? "viewed" : "downloaded"} in this range`,
    );
    target.dataset.metric = metric;
    downloads($(`top-${metric}-downloads`), (format) =>
      apiUrl(paths.usageBreakdown("item"), { start: range.start, end: range.end, metric, limit: TOP_RECORDS, format }),
    );
  }
}
