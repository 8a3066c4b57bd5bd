// The dashboard's record and breakdown panels: record figures and their chart, the usage or
// the records of a view broken down by every subcount field the API offers
// (`/api/v1/breakdowns`: a field the pipeline adds appears here without a change), and the
// most viewed and downloaded records with their metadata. Built on the public API only.
import {
  GRANULARITY_WORDS,
  METRIC_LABELS,
  apiUrl,
  el,
  formatDate,
  formatNumber,
  formatShare,
  getJSON,
  locale,
  metricWord,
  table,
  withLang,
  _,
} from "./common.js";

const $ = (id) => document.getElementById(id);
const LIMIT = 20;
const TOP_RECORDS = 10;
// Fields shown elsewhere: visitor countries on the map, items in the top lists.
const NOT_PANELS = new Set(["country", "item"]);
export const BY = ["usage", "records"];
// The API's field names (`/api/v1/breakdowns` field_labels, English) in the page's language.
const FIELD_NAMES = {
  resource_type: _("Resource type"),
  access_status: _("Access status"),
  language: _("Language"),
  subject: _("Subject"),
  publisher: _("Publisher"),
  funder: _("Funder"),
  affiliation: _("Affiliation"),
  file_format: _("File format"),
  referrer: _("Referrer"),
  country: _("Visitor country"),
  item: _("Item"),
};

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
    el("span", { class: "visually-hidden" }, _("Download") + " "),
    ...["csv", "xlsx"].map((format) =>
      el("a", { href: withLang(href(format)), download: "", class: "download", dataset: { format } }, format.toUpperCase()),
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
        last
          ? _("{count} all time, to {date}", { count: formatNumber(value), date: formatDate(last.as_of) })
          : _("No cumulative figure for this range"),
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
  const since = asOf ? _("to {date}", { date: formatDate(asOf) }) : _("no harvest processed yet");
  $("record-figures").replaceChildren(
    recordCard("added", _("Records added"), records.period.added, _("{count} ever added, {since}", { count: formatNumber(held.added), since })),
    recordCard("removed", _("Records removed"), records.period.removed, _("{count} ever removed, {since}", { count: formatNumber(held.removed), since })),
    recordCard("total", _("Records held"), held.total, asOf ? _("as of {date}", { date: formatDate(asOf) }) : _("no harvest processed yet")),
  );
  downloads($("records-downloads"), (format) =>
    apiUrl(href, { start: range.start, end: range.end, granularity, format }),
  );
  const labels = records.series.map((b) => b.period);
  const added = records.series.map((b) => b.added);
  const totals = records.series.map((b) => b.total);
  const datasets = [
    { type: "bar", label: _("Records added"), data: added, backgroundColor: "#1f6fb2", order: 2 },
    {
      type: "line",
      label: _("Records held"),
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
  const title = _("Records added per {granularity}", { granularity: GRANULARITY_WORDS[records.granularity] || records.granularity });
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
          held: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false }, title: { display: true, text: _("Held") } },
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
    labels.length
      ? _("{title} and records held, {count} periods from {first} to {last}", { title, count: labels.length, first: labels[0], last: labels[labels.length - 1] })
      : _("No periods"),
  );
  table(
    $("records-table"),
    [
      { label: _("Period"), rowHeader: true },
      { label: _("Added"), numeric: true },
      { label: _("Removed"), numeric: true },
      { label: _("Held at the end"), numeric: true },
    ],
    records.series.map((b) => [
      b.period,
      formatNumber(b.added),
      formatNumber(b.removed),
      b.total === null ? "–" : formatNumber(b.total),
    ]),
    _("No periods"),
  );
  const empty = records.period.added === 0 && records.period.removed === 0 && held.total === 0;
  $("records-empty").hidden = !empty;
  $("records-empty").textContent = empty
    ? _("No records harvested up to {date}.", { date: formatDate(range.end) })
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
      unknown: { key: "", label: _("Not given"), value: part.unknown[metric], share: part.unknown.share },
      other: { key: "(other)", label: _("Other values"), value: part.other[metric], share: part.other.share },
    };
  }
  const listed = answer.values.filter((r) => r.value !== "");
  const unknown = answer.values.find((r) => r.value === "");
  const more = answer.other.values;
  return {
    whole: answer.whole.total,
    named: listed.map((r) => ({ key: r.value, label: valueLabel(field, r.value, vocabularies), value: r.total, share: r.share })),
    unknown: { key: "", label: _("Not given"), value: unknown ? unknown.total : 0, share: unknown ? unknown.share : 0 },
    other: {
      key: "(other)",
      label: more ? _("Other values ({count})", { count: formatNumber(more) }) : _("Other values"),
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
    el("details", { class: "table-toggle" }, el("summary", {}, _("Show as a table")), el("div", { class: "scroll" }, el("table", {}))),
  );
}

function renderBreakdown(section, field, by, answer, metric, vocabularies, range) {
  const rows = panelRows(field, by, answer, metric, vocabularies);
  const what = by === "usage" ? metricWord(metric) : _("records held");
  const multi = answer.multi_valued;
  const span = { start: formatDate(range.start), end: formatDate(range.end), limit: LIMIT, whole: formatNumber(rows.whole) };
  section.querySelector(".breakdown-note").textContent =
    by === "usage"
      ? _("{metric} between {start} and {end}, top {limit}; share of all {whole} {what}.", { ...span, metric: METRIC_LABELS[metric], what }) +
        (multi ? " " + _("An item counts under each of its values: shares can add up to more than 100 %.") : "")
      : (answer.as_of
          ? _("Records held as of {date}, top {limit}; share of all {whole}.", { ...span, date: formatDate(answer.as_of) })
          : _("Records held, top {limit}; share of all {whole}.", span)) +
        (multi ? " " + _("A record counts under each of its values: shares can add up to more than 100 %.") : "");
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
      ? _("No {what} between {start} and {end}.", { what, start: formatDate(range.start), end: formatDate(range.end) })
      : _("No records harvested yet.")
    : "";
  table(
    section.querySelector("table"),
    [
      { label: section.querySelector("h2").textContent, rowHeader: true },
      { label: by === "usage" ? METRIC_LABELS[metric] : _("Records"), numeric: true },
      { label: _("Share"), numeric: true },
    ],
    shown.map((r) => [r.label, formatNumber(r.value), r.share === null ? "–" : formatShare(r.share)]),
    empty ? emptyNote.textContent : _("Nothing to show"),
  );
}

/** The panels of every field the API offers for `by`, each filled as its answer arrives. */
export function renderBreakdowns({ paths, vocabularies, range, state, isCurrent }) {
  const box = $("breakdowns");
  const by = BY.includes(state.by) ? state.by : "usage";
  const fields = (by === "usage" ? vocabularies.usage : vocabularies.records).filter((f) => !NOT_PANELS.has(f));
  const labels = vocabularies.field_labels || {};
  const named = (field) => FIELD_NAMES[field] || labels[field] || field.charAt(0).toLocaleUpperCase(locale) + field.slice(1).replace(/_/g, " ");
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
        note.textContent = _("Could not load this breakdown: {message}", { message: problem.message });
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
        { label: _("Record") },
        { label: _("Type") },
        { label: _("Year"), numeric: true },
        { label: _("Repository") },
        { label: METRIC_LABELS[metric], numeric: true },
        { label: _("Share"), numeric: true },
      ],
      answer.period.values.map((r) => {
        const record = records[r.value] || {};
        return [
          formatNumber(r.rank),
          el(
            "a",
            { href: withLang(apiUrl("/widget/item", { identifier: r.value })), class: "item-link", dataset: { key: r.value } },
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
      metric === "views" ? _("No record was viewed in this range") : _("No record was downloaded in this range"),
    );
    target.dataset.metric = metric;
    downloads($(`top-${metric}-downloads`), (format) =>
      apiUrl(paths.usageBreakdown("item"), { start: range.start, end: range.end, metric, limit: TOP_RECORDS, format }),
    );
  }
}
