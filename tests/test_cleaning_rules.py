"""Each cleaning rule on hand-made frames, at its boundaries."""

import dataclasses
import json
import re
from importlib import metadata

import counter_robots
import polars as pl
import pytest

from support import at, events, registry
from usage_stats.pipeline.cleaning import CleaningRules, clean_events, rejected_by_reason
from usage_stats.pipeline.metrics import daily_deltas
from usage_stats.pipeline.processing import DayTally
from usage_stats.pipeline.robots import RobotListError, load_robot_list, robot_user_agents

BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"


def reasons(frame: pl.DataFrame, rules: CleaningRules = CleaningRules()) -> dict[str, int]:
    result = clean_events(frame, registry(), rules)
    counts = {k: v for k, v in rejected_by_reason(result.rejected).items() if v}
    counts["kept"] = result.sessions.height
    assert result.sessions.height + result.rejected.height == frame.height
    # the tallies counted on the fate codes are those of the outputs
    assert result.rejected_by_reason() == rejected_by_reason(result.rejected)
    by_fates, by_outputs = DayTally(), DayTally()
    by_fates.add(frame, result)
    by_outputs.add(frame, dataclasses.replace(result, fates=None))
    assert by_fates == by_outputs
    assert sum(by_fates.events_in.values()) == frame.height
    return counts


# --- robots list ----------------------------------------------------------------------------


def test_robot_list_is_the_packaged_counter_list_and_names_its_version():
    robots = load_robot_list()
    assert robots.version == f"counter-robots {metadata.version('counter-robots')}"
    assert len(robots.patterns) > 300 and "bot" in robots.patterns
    result = clean_events(events({}), registry())
    assert result.robots_list_version == robots.version


@pytest.mark.parametrize(
    "agent",
    ["Mozilla/5.0 (compatible; Googlebot/2.1)", "MyBOT 1.0", "SomeRoBoT", "python-requests/2.3"],
)
def test_robot_user_agent_is_matched_case_insensitively(agent):
    assert robot_user_agents([agent]) == {agent}


def test_normal_browser_is_not_a_robot():
    assert robot_user_agents([BROWSER, None]) == set()


AGENTS = [
    BROWSER,
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "curl/8.5.0",
    "Wget/1.21.4",
    "python-requests/2.31.0",
    "Java/17.0.2",
    "ia_archiver",
    "Zotero/6.0",
    "x",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15",
    "facebookexternalhit/1.1",
]


def test_vectorised_decision_is_the_python_regex_search_and_covers_the_library():
    robots = load_robot_list()
    python = re.compile("|".join(f"(?:{p})" for p in robots.patterns), re.IGNORECASE)
    agents = AGENTS + [a.upper() for a in AGENTS] + [f"{a} v{i}" for i, a in enumerate(AGENTS)]
    ours = robot_user_agents(agents)
    assert ours == {a for a in agents if python.search(a)}
    # counter-robots matches case-sensitively: what it finds we find, and also `JAVA/17`…
    assert {a for a in agents if counter_robots.is_robot_or_machine(a)} < ours
    assert BROWSER not in ours and {"curl/8.5.0", "x", "Java/17.0.2", "JAVA/17.0.2"} <= ours


def test_null_empty_and_blank_user_agents_are_alike_and_left_to_the_behaviour_rule():
    assert robot_user_agents([None, "", "   "]) == set()
    frame = events(
        {"visit_id": 1, "visitor_id": "a1", "user_agent": None},
        {"visit_id": 2, "visitor_id": "a2", "user_agent": ""},
        {"visit_id": 3, "visitor_id": "a3", "user_agent": "  "},
        *visit_of(11, 0.1, visit_id=4),  # no agent either, but a robot by behaviour
    )
    assert reasons(frame) == {"kept": 3, "robot_behaviour": 11}


def test_robots_list_from_a_file_json_or_text(tmp_path):
    text = tmp_path / "robots.txt"
    text.write_text("^harvester\\b\n\nspecialcrawler\n")
    listed = tmp_path / "COUNTER_Robots_list.json"
    listed.write_text(json.dumps([{"pattern": "^harvester\\b"}, {"pattern": "specialcrawler"}]))
    for path in (text, listed):
        robots = load_robot_list(str(path))
        assert robots.patterns == ("^harvester\\b", "specialcrawler")
        assert robots.version.startswith(f"{path.name} sha256:")
        assert robot_user_agents(["Harvester 2", "a SpecialCrawler", "Googlebot"], robots) == {
            "Harvester 2",
            "a SpecialCrawler",
        }
    frame = events({"user_agent": "Harvester 2"}, {"visit_id": 2, "user_agent": "Googlebot"})
    result = clean_events(frame, registry(), CleaningRules(robots_list=str(text)))
    assert rejected_by_reason(result.rejected)["robot_user_agent"] == 1
    assert result.robots_list_version == load_robot_list(str(text)).version


def test_a_bad_robots_list_is_named(tmp_path):
    bad = tmp_path / "robots.txt"
    bad.write_text("fine\nbroken(\n")
    with pytest.raises(RobotListError, match=r"robots.txt: pattern 2 'broken\(' is not a valid"):
        load_robot_list(str(bad))
    with pytest.raises(RobotListError, match="cannot be read"):
        load_robot_list(str(tmp_path / "missing.txt"))


def test_robot_user_agent_rows_are_rejected_and_browsers_kept():
    frame = events(
        {"visit_id": 1, "user_agent": "Mozilla/5.0 (compatible; bingbot/2.0)"},
        {
            "visit_id": 1,
            "user_agent": "Mozilla/5.0 (compatible; bingbot/2.0)",
            "event_time": at(100),
        },
        {"visit_id": 2, "user_agent": BROWSER},
    )
    assert reasons(frame) == {"robot_user_agent": 2, "kept": 1}


# --- behaviour rule -------------------------------------------------------------------------


def visit_of(n_actions: int, spacing: float, visit_id: int = 1) -> list[dict]:
    """n views of different items, `spacing` seconds apart, so no double click interferes."""
    return [
        {
            "visit_id": visit_id,
            "event_time": at(i * spacing),
            "raw_identifier": f"oai:www.kerwa.ucr.ac.cr:10669/{i}",
            "url": f"https://www.kerwa.ucr.ac.cr/items/{i}",
        }
        for i in range(n_actions)
    ]


@pytest.mark.parametrize(
    ("n_actions", "spacing", "expected"),
    [
        (10, 0.1, "kept"),  # ≤ 10 actions: always human, however fast
        (11, 0.1, "robot_behaviour"),  # 11 actions averaging < 2 s
        (11, 100, "kept"),  # 11 slow actions
        (99, 100, "kept"),  # 99 slow actions: still human
        (100, 100, "robot_behaviour"),  # 100 actions: robot however slow
    ],
)
def test_behaviour_rule_boundaries_of_action_count(n_actions, spacing, expected):
    assert reasons(events(*visit_of(n_actions, spacing))) == {expected: n_actions} | (
        {"kept": n_actions} if expected == "kept" else {"kept": 0}
    )


def test_behaviour_rule_average_of_exactly_two_seconds_is_a_robot():
    # 11 actions over 22 s: average 2.0 s, which is not *more than* 2 s.
    frame = events(*visit_of(11, 2.2))
    assert reasons(frame) == {"robot_behaviour": 11, "kept": 0}
    # 11 actions over 22.1 s: average just above 2 s.
    rows = visit_of(11, 2.2)
    rows[-1]["event_time"] = at(22.1)
    assert reasons(events(*rows)) == {"kept": 11}


def test_behaviour_thresholds_are_configuration():
    rules = CleaningRules(always_human_max_actions=20)
    assert reasons(events(*visit_of(15, 0.1)), rules) == {"kept": 15}


# --- thumbnails -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://repo.org/bitstream/1/x.pdf.jpg", "thumbnail"),
        ("https://repo.org/bitstream/1/x.doc.png", "thumbnail"),
        ("https://repo.org/bitstream/1/x.docx.png", "thumbnail"),
        ("https://repo.org/bitstream/1/x.jpeg.jpg", "thumbnail"),  # an image's rendition
        ("https://repo.org/bitstream/1/x.PDF.JPG?sequence=3", "thumbnail"),
        ("https://repo.org/bitstream/1/x.pptx.jpeg#page=1", "thumbnail"),
        ("https://repo.org/bitstream/1/x.pdf", "kept"),
        ("https://repo.org/bitstream/1/photo.jpg", "kept"),
        ("https://repo.org/bitstream/1/photo.2019.jpg", "kept"),
        ("https://repo.org/bitstream/1/figure.v2.png", "kept"),
        ("https://repo.org/bitstream/1/map.large.jpeg", "kept"),
        ("https://repo.org/bitstream/1/scan.page1.png?sequence=2", "kept"),
        ("https://repo.org/bitstream/1/thesis.pdf.zip", "kept"),
        ("https://repo.org/bitstream/1/notapdf.jpg", "kept"),  # no dot before the extension
    ],
)
def test_thumbnails(url, expected):
    frame = events({"action": "download", "action_type": 3, "url": url})
    assert reasons(frame) == {expected: 1} | ({"kept": 1} if expected == "kept" else {"kept": 0})


def test_thumbnail_pattern_is_configuration():
    rules = CleaningRules(thumbnail_pattern=r"(?i)/thumbnails?/")
    frame = events(
        {"action": "download", "action_type": 3, "url": "https://r.org/thumbnail/1.png"},
        {"action": "download", "action_type": 3, "url": "https://r.org/b/x.pdf.jpg", "visit_id": 2},
    )
    assert reasons(frame, rules) == {"thumbnail": 1, "kept": 1}


# --- double clicks --------------------------------------------------------------------------


def clicks(*seconds: float, action: str = "download") -> pl.DataFrame:
    code = {"view": 1, "download": 3}[action]
    return events(*[{"event_time": at(s), "action": action, "action_type": code} for s in seconds])


def counter_totals(frame: pl.DataFrame) -> tuple[int, int, int, int]:
    """Total/Unique Item Investigations and Requests over everything kept."""
    deltas = daily_deltas(clean_events(frame, registry()).sessions)
    totals = deltas.filter(pl.col("scope") == "global").select(
        pl.col(
            "total_item_investigations",
            "total_item_requests",
            "unique_item_investigations",
            "unique_item_requests",
        ).sum()
    )
    return totals.row(0)


def test_double_click_inside_window_counts_once():
    assert reasons(clicks(0, 29)) == {"double_click": 1, "kept": 1}


def test_double_click_of_exactly_thirty_seconds_counts_once():
    assert reasons(clicks(0, 30)) == {"double_click": 1, "kept": 1}
    assert reasons(clicks(0, 30.001)) == {"kept": 2}


def test_double_click_outside_window_counts_twice():
    assert reasons(clicks(0, 35)) == {"kept": 2}


def test_double_click_keeps_the_later_click():
    result = clean_events(clicks(0, 29), registry())
    assert result.sessions.get_column("event_time").to_list() == [at(29)]


def test_chain_of_clicks_twenty_seconds_apart_for_two_minutes_is_one():
    assert reasons(clicks(0, 20, 40, 60, 80, 100, 120)) == {"double_click": 6, "kept": 1}


def test_counter_audit_test_e_2_3():
    """15 inside and 15 outside pairs, each by its own user: 45 / 45 / 30 / 30."""
    rows = []
    for test in range(30):
        gap = 1 + test % 15 * 2 if test < 15 else 31 + test
        user = {"visit_id": 100 + test, "visitor_id": f"{test:016x}", "ip_hash": test}
        file = f"https://www.kerwa.ucr.ac.cr/bitstream/10669/{test}/article.pdf"
        for second in (test * 1000, test * 1000 + gap):
            rows.append(
                user
                | {
                    "event_time": at(second),
                    "action": "download",
                    "action_type": 3,
                    "url": file,
                    "raw_identifier": f"oai:www.kerwa.ucr.ac.cr:10669/{test}",
                }
            )
    frame = events(*rows)
    assert reasons(frame) == {"double_click": 15, "kept": 45}
    assert counter_totals(frame) == (45, 45, 30, 30)


def test_two_files_of_one_item_ten_seconds_apart_are_two_requests_one_unique():
    frame = events(
        {"event_time": at(0), "action": "download", "action_type": 3, "url": "https://h/b/1/a.pdf"},
        {
            "event_time": at(10),
            "action": "download",
            "action_type": 3,
            "url": "https://h/b/1/b.pdf",
        },
    )
    assert reasons(frame) == {"kept": 2}
    assert counter_totals(frame) == (2, 2, 1, 1)


def test_same_user_across_a_visit_boundary_is_one_click():
    # Matomo opened a second visit for the same cookie 10 s later: still one click, kept in
    # the later visit, which is also the one session counted for the unique metrics.
    frame = events(
        {"visit_id": 1, "visitor_id": "cafe", "event_time": at(0)},
        {"visit_id": 2, "visitor_id": "cafe", "event_time": at(10)},
    )
    result = clean_events(frame, registry())
    assert reasons(frame) == {"double_click": 1, "kept": 1}
    assert result.sessions.get_column("visit_id").to_list() == [2]
    assert counter_totals(frame) == (1, 0, 1, 0)


def test_same_user_across_the_top_of_an_hour_is_one_click():
    # No visit id: sessions are user + hour, so the two clicks fall into two sessions, but
    # the double-click rule follows the user (IP + agent) and the URL, not the session.
    top = 3540  # T0 is 10:01:00, so 10:59:50 and 11:00:05
    frame = events(
        {"visit_id": None, "visitor_id": None, "ip_hash": 9, "event_time": at(top + 50)},
        {"visit_id": None, "visitor_id": None, "ip_hash": 9, "event_time": at(top + 65)},
    )
    assert reasons(frame) == {"double_click": 1, "kept": 1}
    assert counter_totals(frame) == (1, 0, 1, 0)


def test_the_user_is_the_login_then_the_cookie_then_ip_and_agent():
    base = {"event_time": at(0)}
    later = {"event_time": at(10)}
    # the same login on two cookies (two browsers): one user
    assert reasons(
        events(
            base | {"user_hash": 1, "visitor_id": "aa", "visit_id": 1},
            later | {"user_hash": 1, "visitor_id": "bb", "visit_id": 2},
        )
    ) == {"double_click": 1, "kept": 1}
    # two logins behind one cookie (a shared computer): two users
    assert reasons(
        events(
            base | {"user_hash": 1, "visitor_id": "aa", "visit_id": 1},
            later | {"user_hash": 2, "visitor_id": "aa", "visit_id": 2},
        )
    ) == {"kept": 2}
    # two cookies behind one IP and agent (an institution's proxy): two users
    assert reasons(
        events(
            base | {"visitor_id": "aa", "visit_id": 1, "user_agent": BROWSER},
            later | {"visitor_id": "bb", "visit_id": 2, "user_agent": BROWSER},
        )
    ) == {"kept": 2}
    # no cookie: IP and agent; another agent on the same IP is another user
    anonymous = {"visitor_id": None, "visit_id": None}
    assert reasons(
        events(
            base | anonymous | {"user_agent": BROWSER},
            later | anonymous | {"user_agent": BROWSER},
            later | anonymous | {"user_agent": "Mozilla/5.0 (Macintosh) Safari/605.1.15"},
        )
    ) == {"double_click": 1, "kept": 2}


def test_double_click_needs_same_url_and_user():
    frame = events(
        {"event_time": at(0)},
        {"event_time": at(5), "url": "https://www.kerwa.ucr.ac.cr/items/1/full"},  # other URL
        {"event_time": at(6), "visitor_id": "other", "visit_id": 2},  # other user
        {"event_time": at(7), "site_id": 2, "visit_id": 3},  # other site (platform)
    )
    assert reasons(frame) == {"kept": 4}


def test_same_url_recorded_under_two_identifier_spellings_is_one_click():
    frame = events(
        {"event_time": at(0), "raw_identifier": "oai:https://www.kerwa.ucr.ac.cr/server:10669/578"},
        {"event_time": at(10), "raw_identifier": "oai:www.kerwa.ucr.ac.cr:10669/578"},
    )
    assert reasons(frame) == {"double_click": 1, "kept": 1}


def test_clicks_without_url_fall_back_to_item_and_action():
    frame = events(
        {"event_time": at(0), "url": None},
        {"event_time": at(10), "url": None},
        {"event_time": at(12), "url": None, "raw_identifier": "oai:www.kerwa.ucr.ac.cr:10669/9"},
        {"event_time": at(14), "url": None, "action": "download", "action_type": 3},
    )
    assert reasons(frame) == {"double_click": 1, "kept": 3}


# --- other reasons --------------------------------------------------------------------------


def test_rows_without_identifier_unknown_sites_and_invalid_rows_have_their_reason():
    frame = events(
        {"raw_identifier": None},
        {"raw_identifier": "  ", "event_time": at(100)},
        {"site_id": 77, "visit_id": 9},
        {"action_type": None, "action": None, "visit_id": 3},
        {"action_type": 8, "action": None, "visit_id": 4},
        {"visit_id": None, "ip_hash": None},
    )
    assert reasons(frame) == {
        "no_identifier": 2,
        "unknown_site": 1,
        "invalid_row": 2,
        "other_action": 1,
        "kept": 0,
    }


def test_every_row_gets_exactly_one_reason_in_rule_order():
    # A robot agent on a row without identifier: the robot rule comes first.
    frame = events({"user_agent": "Googlebot", "raw_identifier": None})
    assert reasons(frame) == {"robot_user_agent": 1, "kept": 0}


def test_sessions_hold_no_ip_or_user_agent():
    result = clean_events(events({}), registry())
    assert not {"ip_hash", "user_agent", "visitor_id"} & set(result.sessions.columns)
    assert not {"ip_hash", "user_agent"} & set(result.rejected.columns)


def test_surrogate_session_without_visit_id_uses_agent_ip_and_hour():
    frame = events(
        {"visit_id": None, "ip_hash": 1, "event_time": at(0)},
        {"visit_id": None, "ip_hash": 1, "event_time": at(100)},  # same hour: same session
        {"visit_id": None, "ip_hash": 1, "event_time": at(3600)},  # next hour: new session
        {"visit_id": None, "ip_hash": 2, "event_time": at(200)},  # other IP: new session
    )
    sessions = clean_events(frame, registry()).sessions
    assert sessions.get_column("session_id").n_unique() == 3
