"""The operator console at ``/console``: server-rendered pages over fleet.ops.gather.

No build step, no CDN: Jinja templates, one stylesheet and one small script served from this
package, so it works offline. Log in with an API token (fleet.api.auth); it is kept in an
HttpOnly, SameSite=Strict cookie. Every form carries a CSRF token (double submit: a random
cookie the page repeats in the form), every action asks for confirmation, and pages refresh
their tables in place (the script swaps ``<main>``; no flicker, nothing while a form is in use).
"""

from fleet.console.views import bp

__all__ = ["bp"]
