// The embeddable repository view: a repository's views and downloads of the last 12 months
// with data, per month, and its top countries, for an iframe on the repository's home page.
// The server found the repository (body[data-site-id]); the figures come from the public API.
import { addDays, formatDate, formatRange, getJSON, parseDay, _ } from "./common.js";
import { drawChart, drawCountries, drawFigures } from "./minicharts.js";

const $ = (id) => document.getElementById(id);

function setStatus(text, state) {
  $("status").textContent = text;
  $("status").hidden = !text;
  document.body.dataset.state = state;
}

/** The 12 months ending on the last day with data (a year back, plus one day). */
function lastYear(last) {
  const date = parseDay(last);
  date.setUTCFullYear(date.getUTCFullYear() - 1);
  return { start: addDays(date.toISOString().slice(0, 10), 1), end: last };
}

async function boot() {
  const site = document.body.dataset.siteId;
  try {
    const coverage = await getJSON("/api/v1/coverage");
    const range = lastYear(coverage.last_day || new Date().toISOString().slice(0, 10));
    const stats = await getJSON(`/api/v1/sources/${encodeURIComponent(site)}`, { ...range, granularity: "month" });
    $("range").textContent = _("Last 12 months: {range}", { range: formatRange(stats.start, stats.end) });
    drawFigures(stats.totals);
    drawChart(stats.series);
    drawCountries(stats.by_country);
    const empty = stats.totals.views + stats.totals.downloads === 0;
    setStatus(
      empty ? _("No views or downloads recorded between {start} and {end}.", { start: formatDate(stats.start), end: formatDate(stats.end) }) : "",
      empty ? "empty" : "ready",
    );
    if (stats.complete_through && stats.complete_through < stats.end) {
      $("notice").textContent = _("Complete through {date}.", { date: formatDate(stats.complete_through) });
      $("notice").hidden = false;
    }
  } catch (problem) {
    setStatus(_("Could not load usage: {message}", { message: problem.message }), "error");
  }
}

boot();
