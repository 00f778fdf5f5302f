"""The states a subscriber, an enrollment and an email go through, the kinds of email,
and the kinds of what comes back (bounces, complaints, clicks).

Kept apart from the tables (``drip.core.models``) so code that only names a state, such as
the CLI's options, does not load the database layer.
"""

from __future__ import annotations

from enum import StrEnum


class SubscriberStatus(StrEnum):
    PENDING = "pending"  #: signed up, confirmation link not yet followed
    ACTIVE = "active"  #: confirmed; receives lessons
    UNSUBSCRIBED = "unsubscribed"  #: left; never mailed again unless they sign up anew
    SUPPRESSED = "suppressed"  #: the mail server rejected the address permanently


class EnrollmentStatus(StrEnum):
    PENDING = "pending"  #: waiting for the subscriber's confirmation
    ACTIVE = "active"  #: lessons are being delivered
    COMPLETED = "completed"  #: every day of the course was sent
    CANCELLED = "cancelled"  #: stopped by unsubscribe, suppression or deletion


class DeliveryStatus(StrEnum):
    SCHEDULED = "scheduled"  #: waiting for due_at (also after a temporary failure)
    SENDING = "sending"  #: claimed by a worker until claimed_until
    SENT = "sent"  #: accepted by the mail server
    FAILED = "failed"  #: given up: permanent rejection or too many attempts
    CANCELLED = "cancelled"  #: the subscriber left before it went out
    SKIPPED = "skipped"  #: its day was removed from the course


#: the start of a skipped lesson's ``last_error`` when its ``send_if`` ruled it out (the
#: funnel counts these apart from days removed from the course)
CONDITION_NOT_MET = "condition not met"

#: statuses from which a delivery may still go out
PENDING_DELIVERY = (DeliveryStatus.SCHEDULED, DeliveryStatus.SENDING)


class EmailKind(StrEnum):
    LESSON = "lesson"  #: one day of a course; its key is the day id
    CONFIRM = "confirm"  #: the double opt-in link for one signup
    WELCOME = "welcome"  #: on confirmation, when the course has ``welcome_email``
    GOODBYE = "goodbye"  #: after an unsubscribe, when the course has ``goodbye_email``
    LINK = "link"  #: a fresh unsubscribe link, asked for on the page of a broken one
    AFTER_COURSE = "after_course"  #: the day after the last lesson, when the course has one


class MailEventKind(StrEnum):
    HARD = "hard"  #: the address does not exist or refuses mail for good
    SOFT = "soft"  #: a temporary refusal the sending server gave up on
    COMPLAINT = "complaint"  #: the recipient marked an email as spam


class ClickLink(StrEnum):
    CLASS = "class"  #: a lesson's link to the day's class (the one link counted)


class EventType(StrEnum):
    """What drip tells the webhook endpoints about (``drip.outbox.webhooks``)."""

    SUBSCRIBER_PENDING = "subscriber.pending"  #: signed up; a confirmation is queued
    SUBSCRIBER_CONFIRMED = "subscriber.confirmed"  #: confirmed, or added confirmed
    SUBSCRIBER_UNSUBSCRIBED = "subscriber.unsubscribed"  #: left, by any door
    SUBSCRIBER_BOUNCED = "subscriber.bounced"  #: a bounce came back (hard or soft)
    SUBSCRIBER_COMPLAINED = "subscriber.complained"  #: marked an email as spam
    LESSON_SENT = "lesson.sent"  #: the mail server accepted a lesson
    LESSON_CLICKED = "lesson.clicked"  #: a lesson's class link followed, the first time
    COURSE_COMPLETED = "course.completed"  #: the last lesson went out
    ENROLLMENT_PAUSED = "enrollment.paused"  #: the subscriber paused her lessons
    ENROLLMENT_RESUMED = "enrollment.resumed"  #: a pause ended early
    ENROLLMENT_RESTARTED = "enrollment.restarted"  #: the course begins again from day 1


class WebhookStatus(StrEnum):
    """One event on its way to one endpoint."""

    SCHEDULED = "scheduled"  #: waiting for due_at (also between retries)
    SENDING = "sending"  #: claimed by a worker until claimed_until
    DELIVERED = "delivered"  #: the endpoint answered 2xx
    FAILED = "failed"  #: given up: three days of failures, or the endpoint turned off
