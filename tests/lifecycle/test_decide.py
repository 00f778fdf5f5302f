"""``signup.decide``: the table in ``drip.lifecycle.signup``'s docstring, row by row, with the
boundaries that separate its rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from drip.core.states import EnrollmentStatus as E
from drip.core.states import SubscriberStatus as S
from drip.lifecycle.signup import Action, decide

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
GAP = 600


@pytest.mark.parametrize(
    ("status", "enrollment", "last", "operator", "confirmed", "double_opt_in", "action"),
    [
        # suppressed: nothing, whatever else holds
        (S.SUPPRESSED, E.PENDING, None, True, True, False, Action.NOTHING),
        # already receiving or finished this course
        (S.ACTIVE, E.ACTIVE, None, False, False, True, Action.NOTHING),
        (S.ACTIVE, E.COMPLETED, None, True, True, False, Action.NOTHING),
        # active on another course, new to this one: asked to confirm this one
        (S.ACTIVE, E.PENDING, None, False, False, True, Action.CONFIRM),
        # left and came back on this course: confirm, even on a course without double opt-in
        (S.ACTIVE, E.CANCELLED, None, False, False, True, Action.CONFIRM),
        (S.UNSUBSCRIBED, E.CANCELLED, None, False, False, False, Action.CONFIRM),
        # left, added by the operator: only they can come back
        (S.UNSUBSCRIBED, E.CANCELLED, None, True, True, False, Action.NOTHING),
        # pending, added again by the operator: a confirmation
        (S.PENDING, E.PENDING, None, True, False, True, Action.CONFIRM),
        # the operator holds their consent
        (None, E.PENDING, None, True, True, True, Action.ACTIVATE),
        (S.PENDING, E.PENDING, NOW, True, True, True, Action.ACTIVATE),
        # a course without double opt-in, someone who never left
        (None, E.PENDING, None, False, False, False, Action.ACTIVATE),
        (S.PENDING, E.PENDING, NOW, False, False, False, Action.ACTIVATE),
        # anyone else: a confirmation, unless one went out within the gap
        (None, E.PENDING, None, False, False, True, Action.CONFIRM),
        (S.PENDING, E.PENDING, NOW - timedelta(seconds=GAP - 1), False, False, True, Action.WAIT),
        (S.PENDING, E.PENDING, NOW - timedelta(seconds=GAP), False, False, True, Action.CONFIRM),
    ],
)
def test_decide_follows_the_table(
    status: str | None,
    enrollment: str,
    last: datetime | None,
    operator: bool,
    confirmed: bool,
    double_opt_in: bool,
    action: Action,
) -> None:
    assert (
        decide(
            status=status,
            enrollment_status=enrollment,
            last_confirmation=last,
            by_operator=operator,
            confirmed=confirmed,
            double_opt_in=double_opt_in,
            resend_gap_seconds=GAP,
            now=NOW,
        )
        == action
    )
