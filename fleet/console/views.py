"""The console's pages and forms. Pages read through fleet.ops.gather; forms act through it and
redirect back (post/redirect/get), so a reload never repeats an action."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, g, redirect, render_template, request, url_for

from fleet.api.auth import audit, identify, tokens_configured
from fleet.api.errors import ApiError
from fleet.api.ops_schemas import PAGE_MAX
from fleet.api.state import api_state
from fleet.console import session
from fleet.ops import gather
from fleet.ops.tasks import STATES
from queues import WORK_QUEUES

bp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates", static_folder="static")
#: seconds between the in-place refreshes of a page
REFRESH_SECONDS = 5
PAGES = (
    ("queues", "Queues"),
    ("dead_letters", "Dead letters"),
    ("scheduled", "Scheduled"),
    ("workers", "Workers"),
    ("tasks", "Tasks"),
)


@bp.before_request
def authenticate() -> Response | None:
    if request.endpoint in ("console.login", "console.static"):
        return None
    caller = session.current_caller(api_state().settings)
    if caller is None or not caller.scopes & {"read", "operate"}:
        return redirect(url_for("console.login", next=request.path))
    g.fleet_caller = caller
    if request.method == "POST" and not session.csrf_ok():
        return _page(
            "error.html",
            "Refused",
            status=403,
            message="The form's CSRF token is missing or stale: reload the page and try again.",
        )
    return None


@bp.after_request
def harden(response: Response) -> Response:
    session.keep_csrf(response)
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
        "form-action 'self'; base-uri 'none'"
    )
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


def _page(template: str, title: str, status: int = 200, **context: Any) -> Response:
    caller = g.get("fleet_caller")
    body = render_template(
        template,
        title=title,
        pages=PAGES,
        caller=caller,
        can_operate=caller is not None and session.may_operate(caller),
        open_console=not tokens_configured(api_state().settings),
        csrf=session.csrf_token(),
        refresh=REFRESH_SECONDS,
        notice=request.args.get("notice", ""),
        queues=list(WORK_QUEUES),
        now=datetime.now(UTC),
        **context,
    )
    return Response(body, status=status, mimetype="text/html")


def _guarded(read: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """What ``read`` gathers, or ``{"error": ...}`` for the page to show (broker down, 501...)."""
    try:
        return read()
    except ApiError as exc:
        return {"error": exc.message}


def _back(endpoint: str, notice: str, **values: Any) -> Response:
    return redirect(url_for(endpoint, **values) + "?" + urlencode({"notice": notice}), code=303)


def _act(action: Callable[[], str], endpoint: str, **values: Any) -> Response:
    """Run a form's action if the caller may operate; back to the page with what happened."""
    if not session.may_operate(g.fleet_caller):
        return _page("error.html", "Refused", status=403, message="This token may read, not act.")
    try:
        notice = action()
    except ApiError as exc:
        notice = f"failed: {exc.message}"
    return _back(endpoint, notice, **values)


# -- login ---------------------------------------------------------------------


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response:
    settings = api_state().settings
    target = request.values.get("next", "")
    target = target if target.startswith("/console") and not target.startswith("//") else url_for("console.queues")
    if not tokens_configured(settings):
        return redirect(target)
    error = ""
    if request.method == "POST":
        caller = identify(settings, request.form.get("token", "").strip()) if session.csrf_ok() else None
        if caller is not None and caller.scopes & {"read", "operate"}:
            response = redirect(target, code=303)
            session.log_in(response, request.form["token"].strip())
            return response
        error = "That token is not valid here (the console needs a read or operate token)."
    return _page("login.html", "Log in", status=401 if error else 200, error=error, next=target)


@bp.post("/logout")
def logout() -> Response:
    response = redirect(url_for("console.login"), code=303)
    session.log_out(response)
    return response


# -- pages ---------------------------------------------------------------------


@bp.get("/")
def queues() -> Response:
    state = api_state()
    data = _guarded(lambda: {"rows": [row.as_dict() for row in gather.queue_rows(state)]})
    return _page("queues.html", "Queues", **data)


@bp.get("/dead-letters/")
@bp.get("/dead-letters/<queue>")
def dead_letters(queue: str = "") -> Response:
    queue = queue if queue in WORK_QUEUES else next(iter(WORK_QUEUES))
    offset = max(0, request.args.get("offset", 0, type=int))
    state = api_state()
    data = _guarded(lambda: {"page": gather.dead_letter_page(state, queue, 50, offset)})
    return _page("dead_letters.html", f"Dead letters: {queue}", queue=queue, **data)


@bp.get("/scheduled")
def scheduled() -> Response:
    state = api_state()
    return _page("scheduled.html", "Scheduled", **_guarded(lambda: {"items": gather.scheduled_items(state)}))


@bp.get("/workers")
def workers() -> Response:
    state = api_state()
    return _page("workers.html", "Workers", **_guarded(lambda: {"pools": gather.worker_pools(state)}))


@bp.get("/tasks")
def tasks() -> Response:
    state = api_state()
    chosen = request.args.get("state") if request.args.get("state") in STATES else None
    filters = {
        "state": chosen,
        "queue": request.args.get("queue") if request.args.get("queue") in WORK_QUEUES else None,
    }
    data = _guarded(lambda: {"page": gather.recent_tasks(state, limit=min(100, PAGE_MAX), **filters)})
    return _page("tasks.html", "Tasks", states=STATES, filters=filters, **data)


# -- actions -------------------------------------------------------------------


@bp.post("/queues/<queue>/<action>")
def queue_action(queue: str, action: str) -> Response:
    state = api_state()

    def act() -> str:
        if action == "pause":
            gather.pause(state, queue, g.fleet_caller.name)
        elif action == "resume":
            gather.resume(state, queue)
        else:
            raise ApiError(404, "not_found", f"no action {action!r}")
        audit(action, queue=queue, via="console")
        return f"{queue}: {action}d"

    return _act(act, "console.queues")


@bp.post("/dead-letters/<queue>/<action>")
def dead_letter_action(queue: str, action: str) -> Response:
    state = api_state()
    task_ids = request.form.getlist("task_id") or None  # none chosen: the form's "all" buttons

    def act() -> str:
        if action == "replay":
            count = gather.replay(state, queue, task_ids)
        elif action == "delete":
            if task_ids is None and request.form.get("confirm") != queue:
                raise ApiError(422, "validation_error", f"type {queue!r} to delete all its dead letters")
            count = gather.delete(state, queue, task_ids)
        else:
            raise ApiError(404, "not_found", f"no action {action!r}")
        audit(f"{action} dead letters", queue=queue, task_ids=",".join(task_ids or ["all"]), count=count, via="console")
        return f"{action}: {count} dead letter(s) of {queue}"

    return _act(act, "console.dead_letters", queue=queue)


@bp.post("/scheduled/<task_id>/cancel")
def cancel(task_id: str) -> Response:
    state = api_state()

    def act() -> str:
        unparked = gather.cancel(state, task_id)
        audit("cancel scheduled", task_id=task_id, unparked=unparked, via="console")
        return f"cancelled {task_id}"

    return _act(act, "console.scheduled")
