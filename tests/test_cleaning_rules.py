"""Each cleaning rule on hand-made frames, at its boundaries."""

import polars as pl
import pytest

from support import at, events, registry
from usage_stats.cleaning import CleaningRules, clean_events, rejected_by_reason
from usage_stats.robots import load_robot_patterns, robot_user_agents

BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"


def reasons(frame: pl.DataFrame, rules: CleaningRules = CleaningRules()) -> dict[str, int]:
    result = clean_events(frame, registry(), rules)
    counts = {k: v for k, v in rejected_by_reason(result.rejected).items() if v}
    counts["kept"] = result.sessions.height
    assert result.sessions.height + result.rejected.height == frame.height
    return counts


# --- robots list ----------------------------------------------------------------------------


def test_robot_list_is_the_counter_list():
    patterns = load_robot_patterns()
    assert len(patterns) == 327
    assert patterns[0] == "bot"


@pytest.mark.parametrize(
    "agent",
    ["Mozilla/5.0 (compatible; Googlebot/2.1)", "MyBOT 1.0", "SomeRoBoT", "python-requests/2.3"],
)
def test_robot_user_agent_is_matched_case_insensitively(agent):
    assert robot_user_agents([agent]) == {agent}


def test_normal_browser_is_not_a_robot():
    assert robot_user_agents([BROWSER, None]) == set()


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
        ("https://repo.org/bitstream/1/x.jpeg.jpg", "thumbnail"),
        ("https://repo.org/bitstream/1/x.PDF.JPG?sequence=3", "thumbnail"),
        ("https://repo.org/bitstream/1/x.pdf", "kept"),
        ("https://repo.org/bitstream/1/photo.jpg", "kept"),
    ],
)
def test_thumbnails(url, expected):
    frame = events({"action": "download", "action_type": 3, "url": url})
    assert reasons(frame) == {expected: 1} | ({"kept": 1} if expected == "kept" else {"kept": 0})


# --- double clicks --------------------------------------------------------------------------


def clicks(*seconds: float, action: str = "download") -> pl.DataFrame:
    code = {"view": 1, "download": 3}[action]
    return events(*[{"event_time": at(s), "action": action, "action_type": code} for s in seconds])


def test_double_click_inside_window_counts_once():
    assert reasons(clicks(0, 29)) == {"double_click": 1, "kept": 1}


def test_double_click_outside_window_counts_twice():
    assert reasons(clicks(0, 35)) == {"kept": 2}


def test_double_click_keeps_the_later_click():
    result = clean_events(clicks(0, 29), registry())
    assert result.sessions.get_column("event_time").to_list() == [at(29)]


def test_chain_of_clicks_twenty_seconds_apart_for_two_minutes_is_one():
    assert reasons(clicks(0, 20, 40, 60, 80, 100, 120)) == {"double_click": 6, "kept": 1}


def test_double_click_needs_same_item_action_and_session():
    frame = events(
        {"event_time": at(0)},
        {"event_time": at(5), "action": "download", "action_type": 3},  # other action
        {"event_time": at(6), "raw_identifier": "oai:www.kerwa.ucr.ac.cr:10669/9"},  # other item
        {"event_time": at(7), "visit_id": 2},  # other session
    )
    assert reasons(frame) == {"kept": 4}


def test_double_click_merges_identifier_spellings():
    frame = events(
        {"event_time": at(0), "raw_identifier": "oai:https://www.kerwa.ucr.ac.cr/server:10669/578"},
        {"event_time": at(10), "raw_identifier": "oai:www.kerwa.ucr.ac.cr:10669/578"},
    )
    assert reasons(frame) == {"double_click": 1, "kept": 1}


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
