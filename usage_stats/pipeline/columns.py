"""What each column of the pipeline's tables means, for people reading a schema (the Dagster
UI shows these beside every asset's columns). One entry per name: a name means the same thing
in every table it appears in."""

from __future__ import annotations

COLUMN_DESCRIPTIONS: dict[str, str] = {
    "date": "UTC day the event belongs to (the day of its visit's first action)",
    "site_id": "Matomo site id where the use happened (repository, national node or portal)",
    "level": "network level of that site: R repository, N national node, L regional portal",
    "visit_id": "Matomo visit id (idvisit), unique within a site",
    "visitor_id": "Matomo visitor id (the user cookie) as a 64-bit hash; the COUNTER user",
    "user_hash": "keyed hash of Matomo's user_id (a logged-in user); never the id itself",
    "ip_hash": "keyed hash of the visitor's IP address (salted); IPs are never stored",
    "user_agent": "the browser's user agent where the export has one (Matomo's tables do not)",
    "event_time": "time of the action, UTC",
    "action_type": "Matomo action type: 1 view, 2 outlink, 3 download, others not counted",
    "action": "view, download or outlink; null for actions that are not counted",
    "url": "the action's URL, Matomo's URL prefix restored",
    "raw_identifier": "item identifier as the tracker recorded it (custom variable), unnormalised",
    "visitor_country": "visitor's country as Matomo located it (ISO 3166 alpha-2)",
    "country": "visitor's country (ISO 3166 alpha-2); ZZ when unknown",
    "visit_first_action_time": "time of the visit's first action (behaviour rule)",
    "visit_last_action_time": "time of the visit's last action (behaviour rule)",
    "visit_total_actions": "actions in the visit (behaviour rule)",
    "session_id": "COUNTER session: the visit within the day, else user + date + hour",
    "item_id": "normalised item identifier: oai:<host>:<id>, a DOI 10.x/y or hdl:<prefix>/<id>",
    "owner_site_id": "site id of the repository that owns the item (by OAI, handle or DOI prefix)",
    "reason": "why the event is not counted (one of the cleaning rules, in their order)",
    "scope": "what the row adds up: item, source (a repository's items), site or global",
    "key": "the scope's key: the item id, the owning repository's site id, a site id, global",
    "views": "visits that viewed the item (LA Referencia)",
    "downloads": "visits that downloaded the item (LA Referencia)",
    "outlinks": "visits that followed an outlink of the item (LA Referencia)",
    "conversions": "visits with a view and a download or outlink of the item (LA Referencia)",
    "total_item_investigations": "COUNTER Total_Item_Investigations (views and downloads)",
    "unique_item_investigations": "COUNTER Unique_Item_Investigations (sessions)",
    "total_item_requests": "COUNTER Total_Item_Requests (downloads)",
    "unique_item_requests": "COUNTER Unique_Item_Requests (sessions)",
    "title": "the item's title from the page titles of its views",
    "seen": "when that title was last seen",
}
