"""Email providers' bounce and complaint webhooks (``POST /webhooks/bounces/{provider}``),
one module each with one protocol (``drip.feedback.providers.base``): Postmark, Mailgun,
SendGrid, Amazon SES (through SNS), and drip's own generic webhook. The web tier
dispatches from ``PROVIDERS``; the reports go to the bounce policy
(``drip.feedback.bounces``)."""

from __future__ import annotations

from types import ModuleType

from drip.feedback.providers import generic, mailgun, postmark, sendgrid, ses

#: every provider, by the name in its URL
PROVIDERS: dict[str, ModuleType] = {
    module.NAME: module for module in (postmark, mailgun, sendgrid, ses, generic)
}
