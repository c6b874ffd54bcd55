"""Email: one message over SMTP, and bulk sends that fan out to the email pool."""

from __future__ import annotations

import smtplib
import uuid
from email.message import EmailMessage
from typing import Any

from celery import Task, shared_task

from fleet.messages import derived_ids
from fleet.progress import report_progress
from fleet.publish import publish_many
from fleet.retries import retry_later
from fleet.settings import Settings

#: SMTP failures worth retrying: the server or the network may recover.
TRANSIENT_SMTP_ERRORS = (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, ConnectionError, TimeoutError)
FANOUT_CHUNK = 100
#: What the guide's bulk route sends when the caller gives no subject or body.
DEFAULT_SUBJECT = "No Subject"
DEFAULT_BODY = ""


class SMTPUnreachable(ConnectionError):
    """No SMTP server answers where the settings point; the message names them."""


def _connect(settings: Settings) -> smtplib.SMTP:
    try:
        return smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout)
    except OSError as exc:  # refused, unresolvable, timed out: the task retries it as transient
        raise SMTPUnreachable(
            f"cannot reach the SMTP server at FLEET_SMTP_HOST={settings.smtp_host} "
            f"FLEET_SMTP_PORT={settings.smtp_port}: {exc}"
        ) from exc


def _deliver(settings: Settings, message: EmailMessage) -> None:
    with _connect(settings) as smtp:
        if settings.smtp_starttls:
            smtp.starttls()
        if settings.smtp_user:
            smtp.login(settings.smtp_user, settings.smtp_password)
        smtp.send_message(message)


@shared_task(bind=True, name="tasks.send_email", max_retries=5)
def send_email(self: Task, recipient: str, subject: str, body: str) -> dict[str, Any]:
    """Send one plain-text email (the guide's signature: ``recipient, subject, body``).

    The Message-ID is derived from the task id, so a redelivered task (late
    acks are at-least-once) produces a duplicate a mail system can recognise.
    """
    settings: Settings = self.app.fleet_settings
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = recipient
    message["Subject"] = subject
    message["Message-ID"] = f"<{self.request.id}@fleet>"
    message.set_content(body)
    try:
        _deliver(settings, message)
    except smtplib.SMTPResponseException as exc:
        if 400 <= exc.smtp_code < 500:  # 4xx: try again later, says the server
            raise retry_later(self, exc) from exc
        raise
    except TRANSIENT_SMTP_ERRORS as exc:
        raise retry_later(self, exc) from exc
    # The guide's result, plus ``to`` (fleet's earlier name for the recipient) and the Message-ID.
    return {
        "status": "success",
        "recipient": recipient,
        "subject": subject,
        "to": recipient,
        "message_id": message["Message-ID"],
    }


@shared_task(bind=True, name="tasks.send_bulk_emails")
def send_bulk_emails(
    self: Task, recipients: list[str], subject: str = DEFAULT_SUBJECT, body: str = DEFAULT_BODY
) -> dict[str, Any]:
    """Fan out one ``send_email`` per recipient, reporting PROGRESS per chunk.

    Each chunk is published with pipelined confirms; progress counts messages
    RabbitMQ has confirmed, so a crash mid-way never overstates what was queued.
    The emails' task ids derive from this task's, so a run again (retry,
    redelivery, replay) republishes the same ids and each email is sent once.
    ``sent`` counts queued sends (as the guide's does); each one's delivery is
    its own task in ``task_ids``.
    """
    total = len(recipients)
    task_ids: list[str] = []
    ids = derived_ids(self.request.id or str(uuid.uuid4()))
    for start in range(0, total, FANOUT_CHUNK):
        chunk = recipients[start : start + FANOUT_CHUNK]
        calls = [(send_email.name, (to, subject, body), {}, {"task_id": next(ids)}) for to in chunk]
        task_ids += publish_many(self.app, calls)
        report_progress(self, len(task_ids), total)
    return {"status": "completed", "total": total, "sent": len(task_ids), "failed": [], "task_ids": task_ids}
