"""Properties over large input spaces (hypothesis): the schedule for any zone, send time,
send days and outages; message headers for any name and subject."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime, time, timedelta
from email import message_from_bytes, policy
from zoneinfo import ZoneInfo, available_timezones

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drip.core.entries import MAX_NAME, clean_name
from drip.core.schedule import plan_next
from drip.sending.message import Prototype, _encoded, quoted_printable

ZONES = sorted(z for z in available_timezones() if "/" in z and not z.startswith("Etc/"))
DAYS = [f"day-{n}" for n in range(1, 8)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    zone=st.sampled_from(ZONES),
    send_at=st.times(),
    weekdays=st.frozensets(st.integers(0, 6), min_size=1),
    start=st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2027, 12, 31)),
    delays=st.lists(st.timedeltas(timedelta(0), timedelta(days=9)), min_size=7, max_size=7),
)
def test_a_course_walks_one_lesson_per_local_day_in_order(
    zone: str,
    send_at: time,
    weekdays: frozenset[int],
    start: datetime,
    delays: list[timedelta],
) -> None:
    """Whatever the zone (DST included), send time, send days and outages (a run may come
    any time up to nine days after a lesson is due): every day goes out once, in order, at
    most one per local date, none before its due time, each later one on an allowed
    weekday at or after the send time, local."""
    tz = ZoneInfo(zone)
    now = start.replace(tzinfo=UTC)
    done: list[str] = []
    sent: list[datetime] = []
    for delay in delays:
        plan = plan_next(
            day_ids=DAYS,
            done=done,
            last_sent_at=sent[-1] if sent else None,
            resuming=not sent,
            now=now,
            zone=tz,
            send_at=send_at,
            weekdays=weekdays,
        )
        assert plan.day_id is not None and plan.due_at is not None
        if sent:
            assert plan.due_at > sent[-1]
            local = plan.due_at.astimezone(tz)
            assert local.date() > sent[-1].astimezone(tz).date(), "one lesson per local day"
            assert local.weekday() in weekdays
            assert local.time().replace(fold=0) >= send_at or _in_a_dst_gap(local, send_at)
        now = max(now, plan.due_at) + delay  # the run that sends it comes late, or not
        done.append(plan.day_id)
        sent.append(now)
    assert done == DAYS, "no day skipped or repeated"
    finished = plan_next(
        day_ids=DAYS,
        done=done,
        last_sent_at=sent[-1],
        resuming=False,
        now=now,
        zone=tz,
        send_at=send_at,
        weekdays=weekdays,
    )
    assert finished.day_id is None


def _in_a_dst_gap(local: datetime, send_at: time) -> bool:
    """send_at did not exist that day (clocks jumped over it): the lesson goes at the same
    instant, which reads as a later wall time, never an earlier one."""
    wall = datetime.combine(local.date(), send_at, tzinfo=local.tzinfo)
    return wall.astimezone(UTC).astimezone(local.tzinfo).time() != send_at


# -- headers ----------------------------------------------------------------------------------

_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=300
)


@settings(max_examples=300, deadline=None)
@given(name=_TEXT, subject=_TEXT.filter(lambda s: s.strip()))
def test_any_name_and_subject_parse_back_without_injecting_headers(name: str, subject: str) -> None:
    """Any display name and subject (CR, LF, non-ASCII, =?…?= words, very long): the
    message parses, its lines stay within 998 characters, no header appears that drip did
    not write, and the subject and name decode to the text given, whitespace folded."""
    prototype = Prototype(
        from_name="Maya", from_address="hello@example.com", subject=subject, headers=()
    )
    message = prototype.build(
        to_name=name,
        to_address="ana@example.org",
        message_id="m1@example.com",
        date=datetime(2026, 11, 25, 7, 0, tzinfo=UTC),
        text=quoted_printable("Hello"),
        html=quoted_printable("<p>Hello</p>"),
    )
    assert max(len(line) for line in message.data.split(b"\r\n")) <= 998
    parsed = message_from_bytes(message.data, policy=policy.default)
    assert set(parsed.keys()) == {
        "From",
        "Subject",
        "MIME-Version",
        "To",
        "Date",
        "Message-ID",
        "Content-Type",
    }
    assert str(parsed["Subject"]) == " ".join(subject.split())
    to = parsed["To"]
    assert to.addresses[0].addr_spec == "ana@example.org"
    assert to.addresses[0].display_name == " ".join(name.split())


@settings(max_examples=1000, deadline=None)
@given(
    st.one_of(
        st.text(alphabet="ab=. ~!<>?\t\u00e9-/:\r\n", max_size=90),
        st.from_regex(r"https://[a-z.]{1,20}/[A-Za-z0-9._~=-]{0,70}", fullmatch=True),
    )
)
def test_plain_text_is_quoted_printable_as_the_full_encoder_makes_it(text: str) -> None:
    """Links and plain words skip the encoder; what they give is what it gives."""
    assert quoted_printable(text) == _encoded(text)


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=120))
def test_a_name_loses_every_control_character_and_nothing_else(name: str) -> None:
    """A name is cleaned as if each control or format character (Unicode category C)
    were a space, whatever way is taken to find out there is none."""
    spaced = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in name)
    assert clean_name(name) == " ".join(spaced.split())[:MAX_NAME]
