// The item widget: an item's views and downloads over time and by country, small enough to
// embed in a repository's item page (an iframe), with no library beyond the shared helpers.
import { addDays, formatDate, formatRange, getJSON, isIsoDay, _ } from "./common.js";
import { drawChart, drawCountries, drawFigures } from "./minicharts.js";

const $ = (id) => document.getElementById(id);
const GRANULARITIES = ["day", "week", "month", "quarter", "year"];

function setStatus(text, state) {
  $("status").textContent = text;
  $("status").hidden = !text;
  document.body.dataset.state = state;
}

async function boot() {
  const query = new URLSearchParams(location.search);
  const identifier = query.get("identifier");
  if (!identifier) {
    setStatus(_("This widget needs an item: add ?identifier=… to its address."), "error");
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
    drawFigures(stats.totals);
    drawChart(stats.series);
    drawCountries(stats.by_country);
    const empty = stats.totals.views + stats.totals.downloads === 0;
    setStatus(empty ? _("No views or downloads recorded between {start} and {end}.", { start: formatDate(stats.start), end: formatDate(stats.end) }) : "", empty ? "empty" : "ready");
    if (stats.complete_through && stats.complete_through < stats.end) {
      $("notice").textContent = _("Complete through {date}.", { date: formatDate(stats.complete_through) });
      $("notice").hidden = false;
    }
  } catch (problem) {
    if (problem.status === 404) setStatus(_("No usage is recorded for this item yet."), "empty");
    else setStatus(_("Could not load usage: {message}", { message: problem.message }), "error");
  }
}

boot();
