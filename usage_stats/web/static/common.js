// What the dashboard and the item widget share: the public API, the reader's locale, and
// building DOM from data without ever parsing data as HTML.

// The page's language, chosen by the server (web/i18n.py) and written into the page as data:
// the catalogue (English message → translation; empty in English), the BCP 47 locale of
// numbers and dates, and CLDR's country names in that language.
const i18n = (() => {
  try {
    return JSON.parse(document.getElementById("i18n").textContent);
  } catch {
    return {};
  }
})();
const messages = i18n.messages || {};
const territories = i18n.territories || {};
export const lang = i18n.lang || document.documentElement.lang || "en";

/** A message in the page's language, `{name}` placeholders filled from `values` (the
 * catalogue's keys are the English messages, as gettext's are; scripts/i18n.sh extracts
 * every `_("…")` call). */
export function _(message, values = {}) {
  const text = messages[message] || message;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in values ? String(values[name]) : whole));
}

export const METRIC_LABELS = {
  views: _("Views"),
  downloads: _("Downloads"),
  outlinks: _("Outlinks"),
  conversions: _("Conversions"),
  total_item_investigations: _("Total item investigations"),
  unique_item_investigations: _("Unique item investigations"),
  total_item_requests: _("Total item requests"),
  unique_item_requests: _("Unique item requests"),
};
/** What a COUNTER metric counts, in the page's language (its name stays COUNTER's). */
export const METRIC_DESCRIPTIONS = {
  total_item_investigations: _("Every view or download of an item's content or metadata"),
  unique_item_investigations: _("Items viewed or downloaded, once per session"),
  total_item_requests: _("Every download of an item's full text"),
  unique_item_requests: _("Items downloaded, once per session"),
};
/** A metric's name inside a sentence ("12 views"): lower case, but COUNTER's names as written. */
export const metricWord = (metric) =>
  METRIC_LABELS[metric].includes("_") ? METRIC_LABELS[metric] : METRIC_LABELS[metric].toLocaleLowerCase(lang);
export const METRICS = Object.keys(METRIC_LABELS);
export const COUNTER_METRICS = METRICS.filter((m) => m.includes("_item_"));
export const LEVEL_LABELS = { R: _("Repository"), N: _("National node"), L: _("Regional portal") };
export const GRANULARITY_WORDS = {
  day: _("day"),
  week: _("week"),
  month: _("month"),
  quarter: _("quarter"),
  year: _("year"),
};

export const locale = i18n.locale || lang;
const numbers = new Intl.NumberFormat(locale);
const percents = new Intl.NumberFormat(locale, {
  style: "percent",
  maximumFractionDigits: 1,
  signDisplay: "exceptZero",
});
const shares = new Intl.NumberFormat(locale, { style: "percent", maximumFractionDigits: 1 });
const dates = new Intl.DateTimeFormat(locale, { dateStyle: "medium", timeZone: "UTC" });

export const formatNumber = (n) => numbers.format(n);
export const formatChange = (ratio) => percents.format(ratio);
export const formatShare = (ratio) => shares.format(ratio);
export const formatDate = (iso) => dates.format(parseDay(iso));
export const formatRange = (start, end) => dates.formatRange(parseDay(start), parseDay(end));

/** The reader's name of a country (ISO 3166 alpha-2), from CLDR in the page's language;
 * visitors with no known country have none, so they are labelled as such rather than hidden. */
export function countryName(code) {
  // ZZ is the pipeline's "no country could be determined" (ISO's user-assigned unknown).
  if (!code || code === "ZZ" || !/^[A-Z]{2}$/.test(code)) return _("Unknown country");
  return territories[code] || code;
}

/** `href` with the page's language, so that a link or a download speaks it too. */
export function withLang(href) {
  if (lang === "en") return href;
  return `${href}${href.includes("?") ? "&" : "?"}lang=${lang}`;
}

// Days are calendar days in UTC, as the API counts them.
export function parseDay(iso) {
  const [y, m, d] = iso.split("-").map(Number);
  return new Date(Date.UTC(y, m - 1, d));
}
export const isoDay = (date) => date.toISOString().slice(0, 10);
export function addDays(iso, days) {
  const date = parseDay(iso);
  date.setUTCDate(date.getUTCDate() + days);
  return isoDay(date);
}
export const daysBetween = (start, end) => Math.round((parseDay(end) - parseDay(start)) / 86400000) + 1;
export const isIsoDay = (text) =>
  typeof text === "string" && /^\d{4}-\d{2}-\d{2}$/.test(text) && !isNaN(parseDay(text));

export class ApiProblem extends Error {
  constructor(status, message, url) {
    super(message);
    this.status = status;
    this.url = url;
  }
}

export function apiUrl(path, params = {}) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (Array.isArray(value)) for (const each of value) query.append(name, each);
    else if (value !== undefined && value !== null && value !== "") query.set(name, value);
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

/** GET a JSON document of the public API; a refusal becomes an ApiProblem carrying the API's
 * own message (it names the parameter at fault). */
export async function getJSON(path, params) {
  const url = apiUrl(path, params);
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      message = (await response.json()).error.message || message;
    } catch {
      // not a JSON error body; the status line will do
    }
    throw new ApiProblem(response.status, message, url);
  }
  return response.json();
}

/** createElement with attributes and children; strings become text nodes, never HTML. */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function table(target, head, rows, empty) {
  const headRow = el("tr", {}, head.map((h) => el("th", { scope: "col", class: h.numeric ? "num" : null }, h.label)));
  const body = rows.length
    ? rows.map((cells) =>
        el("tr", {}, cells.map((cell, i) => el(i === 0 && head[0].rowHeader ? "th" : "td", {
          scope: i === 0 && head[0].rowHeader ? "row" : null,
          class: head[i].numeric ? "num" : null,
        }, cell))),
      )
    : [el("tr", {}, el("td", { colspan: head.length, class: "empty" }, empty))];
  target.replaceChildren(el("thead", {}, headRow), el("tbody", {}, body));
}
